//! One model of Kubernetes' NetworkPolicy semantics, for admission and for `palisade netpol`.
//!
//! - [`model`]: policies, namespaces and pods as the API server validates and defaults them
//!   (policyTypes, ports, named ports, ipBlocks), with the size limits checked first;
//! - [`ip`]: address sets, with IPv4-mapped and NAT64 IPv6 judged as the IPv4 they carry;
//! - [`eval`]: concrete questions (may this pod reach that one on this port, and why);
//! - [`space`]: every way label selectors can select objects together, without the objects;
//! - [`judge`]: what a policy change adds to its namespace's reachability, for admission;
//! - [`explain`]: what each pod or set of pods may receive and send;
//! - [`graph`]: pictures of it (Graphviz DOT and Mermaid), from a model other commands can build;
//! - [`flows`]: effective flows across namespaces, over one refinement of several trees;
//! - [`matrix`]: communication matrices, judged against those flows;
//! - [`diff`]: what a change of policies does to the flows.
//!
//! The truth it is checked against is Kubernetes' own e2e NetworkPolicy tests
//! (`tests/data/netpol/e2e/`).

pub mod diff;
pub mod eval;
pub mod explain;
pub mod flows;
pub mod graph;
pub mod ip;
pub mod judge;
pub mod matrix;
pub mod model;
pub mod space;

pub use eval::{Answer, Endpoint, RuleRef, Side, World, query};
pub use judge::{Analysis, Change, Universe};
pub use model::{Direction, Namespace, Pod, Policy, Protocol};
