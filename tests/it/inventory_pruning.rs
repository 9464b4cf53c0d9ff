//! The inventory keeps of each object only what the bundle's templates read
//! (`inventory::keep`, docs/gatekeeper.md "What the inventory keeps"). Every template of the
//! repository's bundles and gator suites decides the same on pruned objects as on whole ones; a
//! bundle that reads more fails closed on objects pruned for the last one until they are read
//! again. With `PALISADE_GKLIB` naming a checkout of the gatekeeper-library, its suites are
//! compared too (a local check: the tests never need it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade::admission::{Endpoint, Review};
use palisade::bundle::Bundle;
use palisade::decide::Decider;
use palisade::inventory::{Change, Inventory};
use palisade::manifest::files;
use palisade::suite;
use serde_json::{Value, json};

use crate::common::templates::READS_LABELS;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The inventory a server serving `bundle` holds of `objects`.
fn pruned(bundle: &Bundle, objects: &[Value]) -> Inventory {
    Inventory::pruned(Arc::new(bundle.inventory_keep()))
        .apply(objects.iter().cloned().map(Change::Upsert))
}

/// What the decision says, to compare.
fn decision(bundle: &Bundle, inventory: &Inventory, review: &Review) -> String {
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    match Decider::new(Vec::new()).decide(bundle, inventory, Endpoint::Validate, review, now, None)
    {
        Ok(d) => format!("{:?} {:?}", d.response, d.violations),
        Err(e) => format!("error: {e}"),
    }
}

/// Compares every case of every suite under `root`, each against its own inventory and
/// against the union of its test's inventories. Returns (comparisons, of which on a template
/// that reads data.inventory with objects present).
fn compare_suites(root: &Path) -> (usize, usize) {
    let (mut compared, mut reading) = (0, 0);
    for file in suite::find_suites(root).unwrap() {
        let Ok(parsed) = suite::parse_suite(&file) else {
            continue;
        };
        for test in parsed.tests.iter().filter(|t| !t.invalid && !t.skip) {
            let mut docs = Vec::new();
            for path in [&test.template, &test.constraint]
                .into_iter()
                .chain(&test.expansion)
            {
                docs.extend(files::read_file(path).unwrap_or_default());
            }
            let Ok(bundle) = Bundle::from_documents(docs, &Default::default()) else {
                continue;
            };
            let reads = bundle
                .policies()
                .templates()
                .any(|t| !t.inventory_reads().is_empty());
            let cases: Vec<(Review, Vec<Value>)> = test
                .cases
                .iter()
                .filter_map(|c| {
                    let review = suite::review_of_file(&c.object).ok()?;
                    Some((review, files::read_objects(&c.inventory).ok()?))
                })
                .collect();
            let union: Vec<Value> = cases.iter().flat_map(|(_, o)| o.clone()).collect();
            for (review, objects) in &cases {
                for objects in [objects, &union] {
                    let whole = Inventory::from_objects(objects.iter().cloned());
                    assert_eq!(
                        decision(&bundle, &pruned(&bundle, objects), review),
                        decision(&bundle, &whole, review),
                        "{}: test {}: a pruned inventory decides otherwise",
                        file.display(),
                        test.name
                    );
                    compared += 1;
                    reading += usize::from(reads && !objects.is_empty());
                }
            }
        }
    }
    (compared, reading)
}

#[test]
fn every_suite_decides_the_same_on_pruned_objects() {
    let (compared, reading) = compare_suites(&repo("tests/data"));
    assert!(compared > 100, "only {compared} comparisons");
    assert!(reading > 10, "only {reading} read the inventory");
    if let Some(gklib) = std::env::var_os("PALISADE_GKLIB") {
        let (compared, reading) = compare_suites(Path::new(&gklib));
        eprintln!(
            "gatekeeper-library: {compared} decisions compared, {reading} reading data.inventory"
        );
    }
}

/// Objects of every kind the repository's data holds, as a cluster's inventory.
fn repository_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    for dir in [
        "tests/data/guides",
        "tests/data/mutation",
        "tests/data/netpol",
    ] {
        let dir = repo(dir);
        let Ok(paths) = files::manifest_files(&dir) else {
            continue;
        };
        for path in paths {
            objects.extend(files::read_objects(&[path]).unwrap_or_default());
        }
    }
    objects.retain(|o| o["kind"].is_string() && o["metadata"]["name"].is_string());
    objects
}

#[test]
fn the_default_bundle_decides_the_same_on_pruned_objects() {
    let bundle = palisade::bundle::load(&repo("policies"), &Default::default()).unwrap();
    assert!(
        !bundle.inventory_keep().keeps_everything(),
        "the default bundle's reads are followed"
    );
    let mut objects = repository_objects();
    assert!(objects.len() > 20, "{}", objects.len());
    for o in &mut objects {
        // As the API server returns them.
        o["metadata"]["uid"] = json!("6f0c8a52-0000-4c1e-9a43-000000000001");
        o["metadata"]["resourceVersion"] = json!("100");
    }
    let whole = Inventory::from_objects(objects.clone());
    let kept = pruned(&bundle, &objects);
    let mut reviews: Vec<Review> = objects.iter().cloned().map(Review::from_object).collect();
    for file in std::fs::read_dir(repo("tests/data/admission")).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(review) = palisade::admission::decode(&std::fs::read(&path).unwrap())
        {
            reviews.push(review);
        }
    }
    for review in &reviews {
        assert_eq!(
            decision(&bundle, &kept, review),
            decision(&bundle, &whole, review),
            "{:?}",
            review.object_ref()
        );
    }
    // And the pruning did something: the NetworkPolicies' uids are not held.
    let policy = objects
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .unwrap();
    let id = palisade::object::ObjectRef::of(policy);
    let held = serde_json::to_value(kept.get(&id).unwrap()).unwrap();
    assert!(held["metadata"].get("uid").is_none(), "{held}");
    assert_eq!(held["metadata"]["name"], policy["metadata"]["name"]);
}

fn reviewed_cluster() -> (Vec<Value>, Review) {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "shop", "labels": {"reviewer": "alice"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
    ];
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    (objects, Review::from_object(pod))
}

fn bundle_of(yaml: &str) -> Bundle {
    let docs = palisade::manifest::parse_str(yaml, Path::new("b.yaml")).unwrap();
    Bundle::from_documents(docs, &Default::default()).unwrap()
}

/// A bundle that reads a field the last one did not (the labels of NetworkPolicies) never
/// decides on objects pruned for the last one: its template fails closed until every object
/// was read again under the new keep, then decides as on whole objects.
#[test]
fn a_template_that_reads_more_fails_closed_on_objects_pruned_for_the_last_bundle() {
    let (objects, review) = reviewed_cluster();
    let before = palisade::bundle::load(&repo("policies"), &Default::default()).unwrap();
    let after = bundle_of(READS_LABELS);
    let old = pruned(&before, &objects);
    let messages = |inventory: &Inventory| -> Vec<String> {
        Decider::new(Vec::new())
            .decide(
                &after,
                inventory,
                Endpoint::Validate,
                &review,
                time::OffsetDateTime::now_utc(),
                None,
            )
            .unwrap()
            .violations
            .into_iter()
            .map(|v| v.message)
            .collect()
    };
    let fails_closed =
        |m: &[String]| m.len() == 1 && m[0].contains(palisade::policy::template::INVENTORY_PRUNED);
    assert!(fails_closed(&messages(&old)), "{:?}", messages(&old));
    // The new keep, and every object listed again, but not yet settled: still closed.
    let relisting = old
        .with_keep(Arc::new(after.inventory_keep()))
        .apply(objects.iter().cloned().map(Change::Upsert));
    assert!(fails_closed(&messages(&relisting)));
    let settled = relisting.settled();
    let whole = Inventory::from_objects(objects.clone());
    assert_eq!(messages(&settled), messages(&whole));
    assert!(
        messages(&settled).contains(&"reviewed by alice".to_owned()),
        "{:?}",
        messages(&settled)
    );
}

/// A template that looks into the objects with a key it computes keeps every key that key may
/// be, and below each what the template reads there.
#[test]
fn a_dynamic_key_keeps_every_key_it_may_take() {
    let yaml = READS_LABELS.replace(
        "          msg := sprintf(\"reviewed by %v\", [policy.metadata.labels.reviewer])",
        "          field := concat(\"\", [\"meta\", \"data\"])\n          msg := sprintf(\"reviewed by %v\", [policy[field].labels.reviewer])",
    );
    assert!(yaml.contains("policy[field]"));
    let bundle = bundle_of(&yaml);
    let (objects, review) = reviewed_cluster();
    let kept = pruned(&bundle, &objects);
    let id = palisade::object::ObjectRef::of(&objects[1]);
    let held = serde_json::to_value(kept.get(&id).unwrap()).unwrap();
    for key in objects[1].as_object().unwrap().keys() {
        assert!(held.get(key).is_some(), "{key}: {held}");
    }
    assert_eq!(held["metadata"]["labels"], json!({"reviewer": "alice"}));
    let whole = Inventory::from_objects(objects.clone());
    assert_eq!(
        decision(&bundle, &kept, &review),
        decision(&bundle, &whole, &review)
    );
    assert!(decision(&bundle, &kept, &review).contains("reviewed by alice"));
}

/// A template that reads `data.inventory` as a whole keeps every object whole.
#[test]
fn reading_all_of_data_inventory_keeps_everything() {
    let yaml = READS_LABELS.replace(
        "        violation[{\"msg\": \"bundle B\"}] { true }",
        "        violation[{\"msg\": \"bundle B\"}] { count(data.inventory) > 0 }",
    );
    let bundle = bundle_of(&yaml);
    assert!(bundle.inventory_keep().keeps_everything());
    let (objects, _) = reviewed_cluster();
    let id = palisade::object::ObjectRef::of(&objects[1]);
    let held = serde_json::to_value(pruned(&bundle, &objects).get(&id).unwrap()).unwrap();
    assert_eq!(held, objects[1]);
}
