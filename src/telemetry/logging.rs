//! Log output: human-readable text by default, one JSON object per line with `--log-format json`.
//! Text is coloured only when stderr is a terminal: a file or a pipe gets plain text.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts logging at `level` (a level, or EnvFilter directives) in `format`, to standard error.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    // A bare level is about Palisade (the target `palisade` is a prefix of `palisade_core`'s
    // too); libraries stay at warn unless named.
    let directives = if level.contains(['=', ',']) {
        level.to_owned()
    } else {
        format!("warn,palisade={level}")
    };
    let filter = EnvFilter::try_new(&directives).with_context(|| {
        format!(
            "invalid --log-level {:?}: use a level such as info or debug, or directives like palisade=debug",
            level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already initialised (tests run several servers in one process): keep the first.
    let _ = result;
    Ok(())
}
