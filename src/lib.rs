//! Palisade: a zero-trust Kubernetes admission webhook that runs Gatekeeper policy bundles.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod enforce;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod serve;
pub mod server;
pub mod tls;
pub mod watch;

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{CertsCommand, Cli, Command};

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            logging::init(&args.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(args.run())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Generate(args)) => {
            let spec = certs::CertSpec {
                service: args.service,
                namespace: args.namespace,
                extra_sans: args.extra_sans,
                ca_days: args.ca_days,
                cert_days: args.cert_days,
            };
            let bundle = certs::generate_into(&args.out, &spec, args.force)?;
            eprintln!(
                "wrote {dir}/ca.crt, {dir}/ca.key, {dir}/tls.crt and {dir}/tls.key for {sans}",
                dir = args.out.display(),
                sans = spec.sans().join(", ")
            );
            eprintln!("caBundle for the webhook configurations:");
            println!("{}", bundle.ca_bundle());
            Ok(ExitCode::SUCCESS)
        }
    }
}
