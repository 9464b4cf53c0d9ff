//! `palisade verify`: runs gator Suites (test.gatekeeper.sh/v1alpha1) through the same decision
//! path as the webhook, without exempt namespaces, as gator has none.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::EvalArgs;
use crate::suite::{Summary, run_path};

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A Suite file, or a directory searched recursively for Suites.
    pub path: PathBuf,
    #[command(flatten)]
    pub eval: EvalArgs,
}

impl VerifyArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let results = run_path(&self.path, &self.eval.options())?;
        for r in &results {
            println!("{r}");
        }
        let summary = Summary::of(&results);
        println!("{summary}");
        Ok(if summary.failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
