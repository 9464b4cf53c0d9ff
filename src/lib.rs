//! Palisade: a zero-trust Kubernetes admission webhook that runs Gatekeeper policy bundles.
//!
//! The layout follows the architecture:
//! - a pure core that never touches the runtime or the file system: [`admission`] (the request
//!   model and the wire format), [`policy`] (templates and constraints), [`mutation`],
//!   [`bundle`] (documents into a checked bundle), [`inventory`] (the snapshot policies look
//!   up) and [`decide`], the one decision path every caller goes through;
//! - the runtime: the HTTPS server, TLS, metrics and logging ([`runtime`]);
//! - the sources of state, swapped in whole when they change ([`sources`]): files now;
//! - one module per command under [`cli`].
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod audit;
pub mod breakglass;
pub mod bundle;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod decide;
pub mod expansion;
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
pub mod runtime;
pub mod sources;
pub mod webhooks;

use std::process::ExitCode;

/// Runs one command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    cli.run()
}
