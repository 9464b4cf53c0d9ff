//! A service's full communication matrix, written as the zero-trust guides write it
//! (`tests/data/guides/service-matrix/`): the checkout service reaches PostgreSQL on 5432-5433,
//! Redis on 6379-6380, RabbitMQ on 5671/5672, the OpenTelemetry collector on 4317/4318, DNS on 53,
//! the internet on HTTPS (RFC 1918 and the metadata address excepted), and its own peers on 4369
//! and 9100-9200, and nothing else. The model must allow every flow of the matrix and refuse
//! every neighbour of one: the next port, the other protocol, the same app in another namespace,
//! another app in the same one, a private or metadata address, a pod that is not a peer. The
//! default bundle must admit the guide's policies as written.

use std::net::IpAddr;

use palisade::cli::test as objects;
use palisade::manifest::{self, Document};
use palisade::netpol::{self, Endpoint, Protocol, World};
use palisade::policy::{Action, EngineOptions};

use crate::common::repo_path;

const GUIDE: &str = "tests/data/guides/service-matrix";
const CLUSTER: &str = "tests/data/netpol/service-matrix-cluster.yaml";

fn guide() -> Vec<Document> {
    manifest::files::read_path(&repo_path(GUIDE)).unwrap()
}

fn world() -> World {
    let mut docs = guide();
    docs.extend(manifest::files::read_path(&repo_path(CLUSTER)).unwrap());
    World::read(&docs).unwrap()
}

/// Where a flow goes: a pod (`namespace/name`) or an address.
enum To {
    Pod(&'static str),
    Address(&'static str),
}

fn allowed(world: &World, from: &str, to: &To, port: u16, protocol: Protocol) -> bool {
    let source = world.pod(from).unwrap_or_else(|| panic!("no pod {from}"));
    let destination = match to {
        To::Pod(id) => Endpoint::Pod(world.pod(id).unwrap_or_else(|| panic!("no pod {id}"))),
        To::Address(a) => Endpoint::Address(a.parse::<IpAddr>().unwrap()),
    };
    netpol::query(world, Endpoint::Pod(source), destination, port, protocol).allowed()
}

fn describe(to: &To) -> &'static str {
    match to {
        To::Pod(id) | To::Address(id) => id,
    }
}

/// The matrix: every flow the checkout service needs, at both ends of each port range.
const MATRIX: &[(To, u16, Protocol)] = &[
    (To::Pod("data/postgres"), 5432, Protocol::Tcp),
    (To::Pod("data/postgres"), 5433, Protocol::Tcp),
    (To::Pod("data/redis"), 6379, Protocol::Tcp),
    (To::Pod("data/redis"), 6380, Protocol::Tcp),
    (To::Pod("messaging/rabbitmq"), 5671, Protocol::Tcp),
    (To::Pod("messaging/rabbitmq"), 5672, Protocol::Tcp),
    (To::Pod("observability/otel-collector"), 4317, Protocol::Tcp),
    (To::Pod("observability/otel-collector"), 4318, Protocol::Tcp),
    (To::Pod("kube-system/coredns"), 53, Protocol::Udp),
    (To::Pod("kube-system/coredns"), 53, Protocol::Tcp),
    (To::Address("93.184.216.34"), 443, Protocol::Tcp),
    (To::Address("2606:2800:220:1::1"), 443, Protocol::Tcp),
    (To::Pod("shop/checkout-1"), 4369, Protocol::Tcp),
    (To::Pod("shop/checkout-1"), 9100, Protocol::Tcp),
    (To::Pod("shop/checkout-1"), 9150, Protocol::Tcp),
    (To::Pod("shop/checkout-1"), 9200, Protocol::Tcp),
];

/// What the matrix forbids, each next to a flow it allows.
const FORBIDDEN: &[(To, u16, Protocol)] = &[
    // The port just outside each range, and another protocol on an allowed port.
    (To::Pod("data/postgres"), 5431, Protocol::Tcp),
    (To::Pod("data/postgres"), 5434, Protocol::Tcp),
    (To::Pod("data/postgres"), 5432, Protocol::Udp),
    (To::Pod("data/redis"), 6381, Protocol::Tcp),
    (To::Pod("messaging/rabbitmq"), 5673, Protocol::Tcp),
    (To::Pod("messaging/rabbitmq"), 15672, Protocol::Tcp),
    (To::Pod("observability/otel-collector"), 4319, Protocol::Tcp),
    (To::Pod("kube-system/coredns"), 54, Protocol::Udp),
    (To::Pod("shop/checkout-1"), 9099, Protocol::Tcp),
    (To::Pod("shop/checkout-1"), 9201, Protocol::Tcp),
    (To::Pod("shop/checkout-1"), 4370, Protocol::Tcp),
    // A port of one service on another.
    (To::Pod("data/redis"), 5432, Protocol::Tcp),
    (To::Pod("data/postgres"), 6379, Protocol::Tcp),
    // The same app in another namespace, another app in the same namespace.
    (To::Pod("observability/postgres"), 5432, Protocol::Tcp),
    (To::Pod("data/mysql"), 5432, Protocol::Tcp),
    // A pod of the same namespace that is not a peer (its ingress is default-deny too).
    (To::Pod("shop/web"), 9100, Protocol::Tcp),
    // The internet on another port; private ranges and the metadata address on 443, including
    // pods' own addresses, which an ipBlock must not reach.
    (To::Address("93.184.216.34"), 80, Protocol::Tcp),
    (To::Address("10.2.0.10"), 443, Protocol::Tcp),
    (To::Address("172.16.5.4"), 443, Protocol::Tcp),
    (To::Address("192.168.1.1"), 443, Protocol::Tcp),
    (To::Address("169.254.169.254"), 443, Protocol::Tcp),
    (To::Address("fd00:ec2::254"), 443, Protocol::Tcp),
    (To::Address("fe80::1"), 443, Protocol::Tcp),
    (To::Address("::ffff:10.2.0.10"), 443, Protocol::Tcp),
    (To::Address("::ffff:169.254.169.254"), 443, Protocol::Tcp),
];

#[test]
fn the_guides_policies_allow_every_flow_of_the_matrix() {
    let world = world();
    let missing: Vec<String> = MATRIX
        .iter()
        .filter(|(to, port, protocol)| !allowed(&world, "shop/checkout-0", to, *port, *protocol))
        .map(|(to, port, protocol)| format!("{} {port}/{}", describe(to), protocol.name()))
        .collect();
    assert!(
        missing.is_empty(),
        "the matrix's flows refused: {missing:?}"
    );
}

#[test]
fn the_guides_policies_allow_nothing_the_matrix_does_not() {
    let world = world();
    let open: Vec<String> = FORBIDDEN
        .iter()
        .filter(|(to, port, protocol)| allowed(&world, "shop/checkout-0", to, *port, *protocol))
        .map(|(to, port, protocol)| format!("{} {port}/{}", describe(to), protocol.name()))
        .collect();
    assert!(
        open.is_empty(),
        "flows outside the matrix allowed: {open:?}"
    );
    // Nothing else in shop talks to checkout's peer ports, and checkout takes nothing else in.
    assert!(!allowed(
        &world,
        "shop/web",
        &To::Pod("shop/checkout-0"),
        4369,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &world,
        "shop/web",
        &To::Pod("shop/checkout-0"),
        443,
        Protocol::Tcp
    ));
    // Other pods of shop have DNS only.
    assert!(allowed(
        &world,
        "shop/web",
        &To::Pod("kube-system/coredns"),
        53,
        Protocol::Udp
    ));
    assert!(!allowed(
        &world,
        "shop/web",
        &To::Pod("data/postgres"),
        5432,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &world,
        "shop/web",
        &To::Address("93.184.216.34"),
        443,
        Protocol::Tcp
    ));
}

#[test]
fn the_default_bundle_admits_the_guides_policies_as_written() {
    let bundle = palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap();
    let reports = objects::check(&bundle, guide(), Vec::new()).unwrap();
    assert_eq!(reports.len(), 4);
    for r in &reports {
        let denied: Vec<_> = r
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .collect();
        assert!(denied.is_empty(), "{}: {denied:?}", r.document.origin);
    }
}
