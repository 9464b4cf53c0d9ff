//! K8sNativeValidation: ConstraintTemplates written in CEL, run with Gatekeeper's semantics.
//!
//! The engine is cel-rust's interpreter with the Kubernetes CEL libraries ([`k8s`]).

pub(crate) mod k8s;
