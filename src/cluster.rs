//! What talks to the Kubernetes API: the connection, the inventory and policy feeds, leader
//! election, and what the leader runs (the default-deny generator, the audit, the certificate
//! manager, the ValidatingAdmissionPolicy sync; [`leader`] wires them). Nothing here sits on the request path: the feed swaps inventory
//! snapshots, and the leader's work only writes to the cluster.

pub mod auditor;
pub mod cert_manager;
pub mod connection;
pub mod generate;
pub mod inventory_feed;
pub mod leader;
pub mod lease;
pub mod policy_feed;
pub mod vap_sync;

pub use connection::{Connection, Source, connect, pod_namespace};
