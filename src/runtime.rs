//! What serves: the HTTPS admission server and the health port, TLS, metrics and logging.

pub(crate) mod logging;
pub mod metrics;
pub mod server;
pub mod tls;
