//! Certificates: made and checked ([`certs`]), and served, reloaded when they change
//! ([`store`]).

pub mod certs;
pub mod store;
