//! The webhook's server: what its handlers share ([`app`]), the routes and how a request is
//! answered ([`http`]), and the listeners and their connections ([`listener`]). Tests drive
//! [`http::router`] directly as well as the bound server.

pub mod app;
pub mod http;
pub mod listener;

pub use app::{App, Limits};
pub use http::{health_router, router};
pub use listener::{Server, ServerOptions};
