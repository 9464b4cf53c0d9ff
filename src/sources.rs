//! Where state comes from, and how it is swapped in: manifests on disk (the policy bundle, the
//! inventory, the certificates), each served as an immutable snapshot that is replaced whole.

pub mod bundle;
pub mod config;
pub mod external;
pub mod hotswap;
pub mod inventory;
pub(crate) mod watch;
