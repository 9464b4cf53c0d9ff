//! Leader election on a Lease: one replica leads and generates, another takes over when its
//! renewals fail, and a replica that stops releases the Lease.

use std::time::Duration;

use palisade_testkit::apiserver::{ApiServer, LEASES};
use palisade_testkit::cluster::{namespace, palisade};

use super::{policies_in, zero_trust_labels};
use crate::common::*;

async fn leads(server: &TestServer) -> bool {
    metric(&server.metrics().await, "palisade_leader") == Some(1.0)
}

async fn applied(server: &TestServer) -> f64 {
    let m = server.metrics().await;
    metric(
        &m,
        "palisade_default_deny_applied_total{reason=\"created\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over() {
    let api = ApiServer::start().await;
    let a = palisade(&api, "replica-a", &[]).await;
    assert!(eventually(Duration::from_secs(3), || leads(&a)).await);
    let b = palisade(&api, "replica-b", &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!leads(&b).await, "two leaders");
    let lease = api
        .get(&LEASES, "palisade-system", "palisade-leader")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    api.create(namespace("one", zero_trust_labels())).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "one").await.len() == 2
        })
        .await
    );
    assert_eq!(applied(&a).await, 2.0);
    assert_eq!(applied(&b).await, 0.0, "the follower generated");

    // A's renewals fail: it stops within its renew deadline, B takes over within the lease
    // duration (2 s) of A's last renewal.
    api.fail_token("replica-a", true);
    let start = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || async { !leads(&a).await }).await,
        "A kept leading"
    );
    assert!(
        eventually(Duration::from_secs(3), || leads(&b)).await,
        "B did not take over"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    api.create(namespace("two", zero_trust_labels())).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            policies_in(&api, "two").await.len() == 2
        })
        .await
    );
    assert_eq!(applied(&b).await, 2.0);
    let lease = api
        .get(&LEASES, "palisade-system", "palisade-leader")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // B stops: it releases the Lease, and A (healthy again) takes over at its next try.
    api.fail_token("replica-a", false);
    assert!(b.stop().await);
    let lease = api
        .get(&LEASES, "palisade-system", "palisade-leader")
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert!(
        eventually(Duration::from_secs(1), || leads(&a)).await,
        "A did not take over after the release"
    );
    let m = a.metrics().await;
    assert!(
        metric(&m, "palisade_leader_transitions_total").unwrap() >= 3.0,
        "{m}"
    );
}
