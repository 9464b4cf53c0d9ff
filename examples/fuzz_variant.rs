//! Prints the review a `review_variant` fuzz input stands for: the reproducer of a finding.
//! `cargo run --example fuzz_variant -- fuzz/regressions/review_variant/<file>`
fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fuzz_variant <input file>"))?;
    let harness = palisade_core::fuzzing::Harness::from_repository(std::path::Path::new(env!(
        "CARGO_MANIFEST_DIR"
    )))?;
    let data = std::fs::read(&path)?;
    match harness.variant(&data) {
        Some(review) => println!("{}", serde_json::to_string_pretty(&review)?),
        None => eprintln!("{path}: empty or too large, no review"),
    }
    Ok(())
}
