use std::process::ExitCode;

use clap::Parser;

// Reviews allocate many small, short-lived values (JSON and policy-engine trees); mimalloc
// handles that pattern markedly faster than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
