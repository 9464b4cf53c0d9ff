//! Certificates: made and checked ([`certificates`]), and served, reloaded when they change
//! ([`store`]).

pub mod certificates;
pub mod store;
