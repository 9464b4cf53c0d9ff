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
pub mod mutation;
pub mod objects;
pub mod policy;
pub mod serve;
pub mod server;
pub mod suite;
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
        Command::Verify(args) => {
            let options = args.eval.options();
            let results = suite::run_path(&args.path, &options)?;
            for r in &results {
                println!("{r}");
            }
            let summary = suite::Summary::of(&results);
            println!("{summary}");
            Ok(if summary.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Test(args) => {
            let options = args.eval.options();
            let set = objects::load_bundle(&args.policies, &options).with_context(|| {
                format!(
                    "cannot load the policy bundle at {}",
                    args.policies.display()
                )
            })?;
            let docs = objects::read_inputs(&args.inputs).map_err(anyhow::Error::msg)?;
            let mut inventory = Vec::new();
            for path in &args.inventory {
                inventory.extend(
                    policy::source::read_path(path)?
                        .into_iter()
                        .map(|d| d.value),
                );
            }
            let reports = objects::check(&set, docs, inventory).map_err(anyhow::Error::msg)?;
            match args.output {
                cli::OutputFormat::Text => print!("{}", objects::render_text(&reports)),
                cli::OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&objects::render_json(&reports))?
                ),
            }
            Ok(if objects::any_denied(&reports) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
