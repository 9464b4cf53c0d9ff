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

pub use palisade_core::{
    admission, audit, breakglass, bundle, config, decide, expansion, inventory, manifest, matcher,
    mutation, netpol, object, podpaths, policy, suite, webhooks, zero_trust,
};

pub mod cli;
pub mod cluster;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;

use std::process::ExitCode;

/// Runs one command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    cli.run()
}
