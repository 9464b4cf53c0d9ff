//! Namespace isolation, written as the zero-trust guides write it
//! (`tests/data/guides/namespace-isolation/`): the pods of team-a talk to each other on the ports
//! they serve (TCP 8080 and 5432), and to nothing else but DNS; nothing outside reaches them.
//! Checked the way a tenant would try to get in: from the same labels in another namespace, from a
//! namespace that carries team-a's name as another label, by the pods' addresses, on other ports
//! and on every protocol.

use palisade::netpol::{Protocol, World};

use crate::common::guides::{self, allowed};

const GUIDE: &str = "tests/data/guides/namespace-isolation";
const CLUSTER: &str = "tests/data/netpol/namespace-isolation-cluster.yaml";

fn world() -> World {
    guides::world(GUIDE, CLUSTER)
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

#[test]
fn team_a_talks_to_itself_on_its_ports_only_and_to_dns() {
    let world = world();
    for (from, to) in [("team-a/api", "team-a/db"), ("team-a/db", "team-a/api")] {
        for protocol in PROTOCOLS {
            for port in [22, 80, 5433, 8081, 65535, 8080, 5432] {
                let want = protocol == Protocol::Tcp && (port == 8080 || port == 5432);
                assert_eq!(
                    allowed(&world, from, to, port, protocol),
                    want,
                    "{from} -> {to} {port}/{}",
                    protocol.name()
                );
            }
        }
    }
    assert!(allowed(
        &world,
        "team-a/api",
        "kube-system/coredns",
        53,
        Protocol::Udp
    ));
    assert!(allowed(
        &world,
        "team-a/api",
        "kube-system/coredns",
        53,
        Protocol::Tcp
    ));
}

#[test]
fn nothing_crosses_team_a_s_boundary_in_either_direction() {
    let world = world();
    let mut open = Vec::new();
    for protocol in PROTOCOLS {
        for port in [53, 80, 5432, 8080] {
            // In: the same labels in another namespace, and a namespace labelled name=team-a.
            for from in ["team-b/api", "team-b/db", "look-alike/api"] {
                for to in ["team-a/api", "team-a/db"] {
                    if allowed(&world, from, to, port, protocol) {
                        open.push(format!("{from} -> {to} {port}/{}", protocol.name()));
                    }
                }
            }
            // Out: other namespaces' pods, by name and by address, and the internet.
            for to in [
                "team-b/api",
                "look-alike/api",
                "10.2.0.10",
                "93.184.216.34",
                "2606:2800:220:1::1",
            ] {
                if allowed(&world, "team-a/api", to, port, protocol) {
                    open.push(format!("team-a/api -> {to} {port}/{}", protocol.name()));
                }
            }
            // DNS is the one way out, and only to the DNS pods on 53.
            if port != 53 && allowed(&world, "team-a/api", "kube-system/coredns", port, protocol) {
                open.push(format!("team-a/api -> coredns {port}/{}", protocol.name()));
            }
        }
    }
    assert!(
        open.is_empty(),
        "flows across the namespace's boundary: {open:?}"
    );
}

#[test]
fn the_default_bundle_admits_the_guides_policies_as_written() {
    guides::assert_admitted_as_written(GUIDE, 3);
}
