//! The live inventory: what the cluster holds decides reviews within a second, listed in pages
//! and watched; an outage keeps the last state and recovers (410 Gone, dropped watches); a
//! broken kubeconfig stops the start.

use std::sync::Arc;
use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, NETWORK_POLICIES};
use palisade_testkit::cluster::{namespace, palisade};
use serde_json::json;

use super::{default_deny, pod_denied_for_default_deny, policies_in};
use crate::common::templates::READS_LABELS;
use crate::common::*;

/// The stand-in holding namespace `shop` and its default-deny, and Palisade on it with
/// generation off.
async fn shop_with_its_default_deny() -> (Arc<ApiServer>, TestServer) {
    let api = ApiServer::start().await;
    api.create(namespace("shop", json!({"security-level": "medium"})))
        .unwrap();
    api.create(default_deny("shop", "deny-everything")).unwrap();
    let server = palisade(&api, "replica-a", &["--generate-default-deny=false"]).await;
    (api, server)
}

#[tokio::test]
async fn the_inventory_follows_the_cluster() {
    let (api, server) = shop_with_its_default_deny().await;

    // Listed at start: the namespace and its default-deny decide the review.
    assert!(!pod_denied_for_default_deny(&server, "shop").await);
    // A namespace created later appears, without a default-deny.
    api.create(namespace("late", json!({"security-level": "medium"})))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || pod_denied_for_default_deny(
            &server, "late"
        ))
        .await
    );
    // Deleting the default-deny flips the decision within a second.
    api.delete(&NETWORK_POLICIES, "shop", "deny-everything")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || pod_denied_for_default_deny(
            &server, "shop"
        ))
        .await,
        "the deletion was not seen within a second"
    );
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "palisade_inventory_synced"), Some(1.0));
    assert_eq!(
        metric(&metrics, "palisade_inventory_stale_seconds"),
        Some(0.0)
    );
    // With generation off, no NetworkPolicy was written.
    assert!(policies_in(&api, "late").await.is_empty());
    // The kube watcher listed in pages and watched from the list's resourceVersion.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces?") && r.contains("limit=500")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn an_outage_keeps_the_last_state_and_recovers() {
    let (api, server) = shop_with_its_default_deny().await;
    assert!(!pod_denied_for_default_deny(&server, "shop").await);

    api.stop();
    // Reviews keep being answered from the last state.
    assert!(!pod_denied_for_default_deny(&server, "shop").await);
    let stale = eventually(Duration::from_secs(5), || async {
        metric(&server.metrics().await, "palisade_inventory_stale_seconds").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(stale, "{}", server.metrics().await);
    assert_eq!(
        http_get(server.health, "/readyz").await.0,
        200,
        "an outage is not unreadiness"
    );
    // A change made while it is down is seen once it is back.
    api.delete(&NETWORK_POLICIES, "shop", "deny-everything")
        .unwrap();
    api.restart().await;
    assert!(
        eventually(Duration::from_secs(8), || pod_denied_for_default_deny(
            &server, "shop"
        ))
        .await,
        "the change made during the outage was not seen"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&server.metrics().await, "palisade_inventory_stale_seconds") == Some(0.0)
        })
        .await
    );

    // Down again, and its history compacted: the watch resumes with 410 Gone and relists; what
    // was deleted meanwhile is gone from the inventory too.
    api.create(default_deny("shop", "deny-again")).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || async {
            !pod_denied_for_default_deny(&server, "shop").await
        })
        .await
    );
    api.stop();
    api.delete(&NETWORK_POLICIES, "shop", "deny-again").unwrap();
    api.compact();
    api.restart().await;
    assert!(
        eventually(Duration::from_secs(8), || pod_denied_for_default_deny(
            &server, "shop"
        ))
        .await,
        "the relist after 410 did not drop the deleted policy"
    );
    // Dropped watches resume too.
    api.drop_watches();
    api.create(default_deny("shop", "deny-third")).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            !pod_denied_for_default_deny(&server, "shop").await
        })
        .await
    );
}

#[tokio::test]
async fn a_named_kubeconfig_that_is_broken_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("kubeconfig");
    std::fs::write(&broken, "apiVersion: v1\nkind: Config\nclusters: [\n").unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let args = [
        "palisade",
        "serve",
        "--kubeconfig",
        broken.to_str().unwrap(),
        "--policies",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    use clap::Parser;
    let palisade::cli::Command::Serve(serve) =
        palisade::cli::Cli::try_parse_from(args).unwrap().command
    else {
        unreachable!()
    };
    let error = format!(
        "{:#}",
        serve
            .load()
            .await
            .err()
            .expect("a broken kubeconfig must stop the start")
    );
    assert!(
        error.contains("cannot read the kubeconfig") && error.contains(broken.to_str().unwrap()),
        "{error}"
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The live inventory holds of each object what the bundle's templates read. A new bundle
/// whose template reads more (the NetworkPolicies' labels) is never evaluated against objects
/// pruned for the old one: it fails closed until every kind is listed again, then decides on
/// the labels.
#[tokio::test]
async fn a_bundle_that_reads_more_is_decided_on_objects_listed_again() {
    let api = ApiServer::start().await;
    api.create(namespace("shop", json!({"security-level": "medium"})))
        .unwrap();
    let mut policy = default_deny("shop", "deny-everything");
    policy["metadata"]["labels"] = json!({"reviewer": "alice"});
    api.create(policy).unwrap();
    let policies = tempfile::tempdir().unwrap();
    copy_tree(&repo_path("policies"), policies.path());
    let server = palisade_testkit::cluster::start_palisade_with(
        &api,
        "replica-a",
        tempfile::tempdir().unwrap(),
        policies.path(),
        &["--generate-default-deny=false"],
    )
    .await;
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(server.health, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready);
    assert!(!pod_denied_for_default_deny(&server, "shop").await);
    let listed = |api: &ApiServer| {
        api.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET /apis/networking.k8s.io/v1/networkpolicies?")
                    && !r.contains("watch=true")
            })
            .count()
    };
    let lists_before = listed(&api);

    std::fs::write(policies.path().join("reviewed.yaml"), READS_LABELS).unwrap();
    let client = server.client();
    let (mut closed, mut decided) = (0, false);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let rsp = create_pod(&client, "shop").await;
        let message = rsp["status"]["message"].as_str().unwrap_or("").to_owned();
        if message.contains("does not hold yet the fields") {
            closed += 1;
        }
        if message.contains("bundle B") {
            assert!(
                message.contains("reviewed by alice"),
                "decided on NetworkPolicies pruned for the old bundle: {message}"
            );
            decided = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(decided, "the new template never decided on the labels");
    assert!(
        listed(&api) > lists_before,
        "the NetworkPolicies were listed again ({closed} reviews failed closed meanwhile)"
    );
}
