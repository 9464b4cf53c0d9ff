//! What talks to the Kubernetes API: the connection, the inventory and policy feeds, leader
//! election, and what the leader runs (the default-deny generator, the audit, the certificate
//! manager; [`leader`] wires them). Nothing here sits on the request path: the feed swaps inventory
//! snapshots, and the leader's work only writes to the cluster.

pub mod audit;
pub mod certs;
pub mod connection;
pub mod generate;
pub mod inventory;
pub mod leader;
pub mod lease;
pub mod policies;

pub use connection::{Connection, Source, connect, pod_namespace};
