//! Palisade's core: everything that decides, and nothing that serves.
//!
//! This crate has no async runtime, no network, no Kubernetes client, no TLS and no metrics
//! library: its `Cargo.toml` lists none, and `tests/it/layering.rs` keeps it so. What it reads
//! from disk it reads because a caller named the file (a bundle, an inventory, a gator suite).
//! The clock it reads only to bound work by a caller's deadline; the time of a decision is an
//! argument.
//!
//! - The request: [`admission`] (the `AdmissionReview` wire format and the [`admission::Review`]
//!   every caller decides), [`object`] (what an object is called), [`manifest`] (YAML documents
//!   and the files they come from).
//! - The policies: [`policy`] (Gatekeeper templates and constraints on regorus), [`mutation`]
//!   (Assign, AssignMetadata, ModifySet; not AssignImage), [`expansion`] (Gatekeeper's
//!   ExpansionTemplate), [`bundle`] (documents into one checked bundle, and the files ∪ cluster
//!   overlay), [`matcher`] (Gatekeeper's match blocks), [`config`] (the configuration file).
//! - What policies look up: [`inventory`].
//! - The decision: [`decide`], the one path that the webhook, `palisade test`, `verify`, `audit`
//!   and the cluster's audit all take; [`breakglass`] (emergency access and its grants);
//!   [`podpaths`] (every kind that carries a pod).
//! - Zero trust: [`zero_trust`] (the generated NetworkPolicies and who gets them), [`netpol`]
//!   (the NetworkPolicy model: what a set of policies allows), [`webhooks`] (the webhook
//!   configurations Palisade registers).
//! - Reports: [`audit`] (what already runs, judged, and its report formats).
//! - Tests of policies: [`suite`] (gator's Suite model and runner).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod audit;
pub mod breakglass;
pub mod bundle;
pub mod config;
pub mod decide;
pub mod expansion;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod inventory;
pub mod manifest;
pub mod matcher;
pub mod mutation;
pub mod netpol;
pub mod object;
pub mod podpaths;
pub mod policy;
pub mod suite;
pub mod webhooks;
pub mod zero_trust;
