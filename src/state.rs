//! Where the served state lives, and how it changes: each piece (the policy bundle, the
//! inventory, the configuration) is an immutable snapshot in a [`hotswap::HotSwap`], replaced
//! whole when its files or the cluster change; [`readiness`] says when all of it is there.
//! Work that must not slow reviews runs through [`background`]; external data providers are
//! reached through [`external`].

pub mod background;
pub mod bundle_store;
pub mod config_store;
pub mod external;
pub mod hotswap;
pub mod inventory_store;
pub mod readiness;
pub(crate) mod watch;
