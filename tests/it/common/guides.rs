//! The zero-trust guides' designs checked against the NetworkPolicy model: a guide's policies
//! (`tests/data/guides/<design>/`) read with the cluster they are checked against
//! (`tests/data/netpol/<design>-cluster.yaml`).

use std::net::IpAddr;

use palisade::cli::test as objects;
use palisade::manifest::{self, Document};
use palisade::netpol::{self, Endpoint, Protocol, World};
use palisade::policy::{Action, EngineOptions};

use super::repo_path;

/// The guide's policies as written.
pub fn guide(dir: &str) -> Vec<Document> {
    manifest::files::read_path(&repo_path(dir)).unwrap()
}

/// The guide's policies in the cluster of `cluster`.
pub fn world(dir: &str, cluster: &str) -> World {
    let mut docs = guide(dir);
    docs.extend(manifest::files::read_path(&repo_path(cluster)).unwrap());
    World::read(&docs).unwrap()
}

/// Whether the pod `from` (`namespace/name`) may reach `to`, a pod or an address, on
/// `port`/`protocol`: both ends' policies, as `palisade netpol query` answers.
pub fn allowed(world: &World, from: &str, to: &str, port: u16, protocol: Protocol) -> bool {
    let source = world.pod(from).unwrap_or_else(|| panic!("no pod {from}"));
    let destination = match to.parse::<IpAddr>() {
        Ok(address) => Endpoint::Address(address),
        Err(_) => Endpoint::Pod(world.pod(to).unwrap_or_else(|| panic!("no pod {to}"))),
    };
    netpol::query(world, Endpoint::Pod(source), destination, port, protocol).allowed()
}

/// The default bundle admits each of the guide's `count` policies as written: no deny.
pub fn assert_admitted_as_written(dir: &str, count: usize) {
    let bundle = palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap();
    let reports = objects::check(&bundle, guide(dir), Vec::new()).unwrap();
    assert_eq!(reports.len(), count);
    for r in &reports {
        let denied: Vec<_> = r
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .collect();
        assert!(denied.is_empty(), "{}: {denied:?}", r.document.origin);
    }
}
