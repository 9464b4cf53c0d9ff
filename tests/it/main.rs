//! All integration tests, in one binary: one link of the library instead of eight.

mod abuse;
mod apiserver;
mod audit;
mod bench;
mod certmanager;
mod cluster;
mod common;
mod connections;
mod core;
mod deploy;
mod differential;
mod engine;
mod fuzz;
mod hostile;
mod mutation;
mod netpol;
mod netpol_attacks;
mod netpol_e2e;
mod netpol_props;
mod process;
mod rollout;
mod server;
mod tls;
mod validate;
mod verify;
mod zero_trust;
