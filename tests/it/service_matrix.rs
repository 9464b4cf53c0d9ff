//! A service's full communication matrix, written as the zero-trust guides write it
//! (`tests/data/guides/service-matrix/`): the checkout service reaches PostgreSQL on 5432-5433,
//! Redis on 6379-6380, RabbitMQ on 5671/5672, the OpenTelemetry collector on 4317/4318, DNS on 53,
//! the internet on HTTPS (RFC 1918 and the metadata address excepted), and its own peers on 4369
//! and 9100-9200, and nothing else. The model must allow every flow of the matrix and refuse
//! every neighbour of one: the next port, the other protocol, the same app in another namespace,
//! another app in the same one, a private or metadata address, a pod that is not a peer. The
//! default bundle must admit the guide's policies as written.

use palisade::netpol::{Protocol, World};

use crate::common::guides::{self, allowed};

const GUIDE: &str = "tests/data/guides/service-matrix";
const CLUSTER: &str = "tests/data/netpol/service-matrix-cluster.yaml";

fn world() -> World {
    guides::world(GUIDE, CLUSTER)
}

/// The matrix: every flow the checkout service needs, at both ends of each port range.
const MATRIX: &[(&str, u16, Protocol)] = &[
    ("data/postgres", 5432, Protocol::Tcp),
    ("data/postgres", 5433, Protocol::Tcp),
    ("data/redis", 6379, Protocol::Tcp),
    ("data/redis", 6380, Protocol::Tcp),
    ("messaging/rabbitmq", 5671, Protocol::Tcp),
    ("messaging/rabbitmq", 5672, Protocol::Tcp),
    ("observability/otel-collector", 4317, Protocol::Tcp),
    ("observability/otel-collector", 4318, Protocol::Tcp),
    ("kube-system/coredns", 53, Protocol::Udp),
    ("kube-system/coredns", 53, Protocol::Tcp),
    ("93.184.216.34", 443, Protocol::Tcp),
    ("2606:2800:220:1::1", 443, Protocol::Tcp),
    ("shop/checkout-1", 4369, Protocol::Tcp),
    ("shop/checkout-1", 9100, Protocol::Tcp),
    ("shop/checkout-1", 9150, Protocol::Tcp),
    ("shop/checkout-1", 9200, Protocol::Tcp),
];

/// What the matrix forbids, each next to a flow it allows.
const FORBIDDEN: &[(&str, u16, Protocol)] = &[
    // The port just outside each range, and another protocol on an allowed port.
    ("data/postgres", 5431, Protocol::Tcp),
    ("data/postgres", 5434, Protocol::Tcp),
    ("data/postgres", 5432, Protocol::Udp),
    ("data/redis", 6381, Protocol::Tcp),
    ("messaging/rabbitmq", 5673, Protocol::Tcp),
    ("messaging/rabbitmq", 15672, Protocol::Tcp),
    ("observability/otel-collector", 4319, Protocol::Tcp),
    ("kube-system/coredns", 54, Protocol::Udp),
    ("shop/checkout-1", 9099, Protocol::Tcp),
    ("shop/checkout-1", 9201, Protocol::Tcp),
    ("shop/checkout-1", 4370, Protocol::Tcp),
    // A port of one service on another.
    ("data/redis", 5432, Protocol::Tcp),
    ("data/postgres", 6379, Protocol::Tcp),
    // The same app in another namespace, another app in the same namespace.
    ("observability/postgres", 5432, Protocol::Tcp),
    ("data/mysql", 5432, Protocol::Tcp),
    // A pod of the same namespace that is not a peer (its ingress is default-deny too).
    ("shop/web", 9100, Protocol::Tcp),
    // The internet on another port; private ranges and the metadata address on 443, including
    // pods' own addresses, which an ipBlock must not reach.
    ("93.184.216.34", 80, Protocol::Tcp),
    ("10.2.0.10", 443, Protocol::Tcp),
    ("172.16.5.4", 443, Protocol::Tcp),
    ("192.168.1.1", 443, Protocol::Tcp),
    ("169.254.169.254", 443, Protocol::Tcp),
    ("fd00:ec2::254", 443, Protocol::Tcp),
    ("fe80::1", 443, Protocol::Tcp),
    ("::ffff:10.2.0.10", 443, Protocol::Tcp),
    ("::ffff:169.254.169.254", 443, Protocol::Tcp),
];

#[test]
fn the_guides_policies_allow_every_flow_of_the_matrix() {
    let world = world();
    let missing: Vec<String> = MATRIX
        .iter()
        .filter(|(to, port, protocol)| !allowed(&world, "shop/checkout-0", to, *port, *protocol))
        .map(|(to, port, protocol)| format!("{to} {port}/{}", protocol.name()))
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
        .map(|(to, port, protocol)| format!("{to} {port}/{}", protocol.name()))
        .collect();
    assert!(
        open.is_empty(),
        "flows outside the matrix allowed: {open:?}"
    );
    // Nothing else in shop talks to checkout's peer ports, and checkout takes nothing else in.
    assert!(!allowed(
        &world,
        "shop/web",
        "shop/checkout-0",
        4369,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &world,
        "shop/web",
        "shop/checkout-0",
        443,
        Protocol::Tcp
    ));
    // Other pods of shop have DNS only.
    assert!(allowed(
        &world,
        "shop/web",
        "kube-system/coredns",
        53,
        Protocol::Udp
    ));
    assert!(!allowed(
        &world,
        "shop/web",
        "data/postgres",
        5432,
        Protocol::Tcp
    ));
    assert!(!allowed(
        &world,
        "shop/web",
        "93.184.216.34",
        443,
        Protocol::Tcp
    ));
}

#[test]
fn the_default_bundle_admits_the_guides_policies_as_written() {
    guides::assert_admitted_as_written(GUIDE, 4);
}
