use std::process::ExitCode;

use clap::Parser;

// The global allocator is regorus' mimalloc (its `allocator-memory-limits` feature declares
// it): reviews allocate many small, short-lived values, which mimalloc handles markedly faster
// than the system allocator (see BENCHMARKS.md), and its allocation counters are what bound a
// policy's memory (`--eval-memory-limit`, `--memory-limit`).

fn main() -> ExitCode {
    // One process-wide provider, so that every rustls user agrees on the crypto.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match palisade::run(palisade::cli::Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
