//! Log output: human-readable text by default, one JSON object per line with `--log-format json`.
//! Text is coloured only when stderr is a terminal: a file or a pipe gets plain text.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

pub(crate) fn init(args: &LogArgs) -> anyhow::Result<()> {
    // A bare level is about Palisade; libraries stay at warn unless named.
    let directives = if args.log_level.contains(['=', ',']) {
        args.log_level.clone()
    } else {
        format!("warn,palisade={}", args.log_level)
    };
    let filter = EnvFilter::try_new(&directives).with_context(|| {
        format!(
            "invalid --log-level {:?}: use a level such as info or debug, or directives like palisade=debug",
            args.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already initialised (tests run several servers in one process): keep the first.
    let _ = result;
    Ok(())
}
