//! What Palisade's tests (`tests/it`) and benchmarks (`benches/`) share. Never published: a
//! dev-dependency of the root package only.
//!
//! - [`apiserver`]: the in-process stand-in for the Kubernetes API server, with its
//!   conformance test beside it (`tests/conformance.rs`);
//! - [`https`]: the HTTPS client that calls Palisade as the API server does, and raw HTTP/1.1
//!   helpers for the health port;
//! - [`harness`]: Palisade's server started in this process on ephemeral ports, and what reads
//!   it (metrics, polling);
//! - [`cluster`]: Palisade against the stand-in, and what a cluster test sets up (namespaces,
//!   the Gatekeeper CRDs, the webhook configurations, a kubelet projecting a Secret);
//! - [`fixtures`]: paths in the repository and the captured AdmissionReviews;
//! - [`volume`]: files laid out as the kubelet lays out a Secret or ConfigMap volume;
//! - [`bench`]: percentiles, CPU time and memory of a process, free ports.

pub mod apiserver;
pub mod bench;
pub mod cluster;
pub mod fixtures;
pub mod harness;
pub mod https;
pub mod volume;
