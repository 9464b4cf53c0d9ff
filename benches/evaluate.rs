//! Per-review costs on the request path: decoding, and evaluating a bundle.
//!
//! `cargo bench --bench evaluate`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::admission::{self, Decider, Endpoint};
use palisade::enforce::Enforcer;
use palisade::inventory::Inventory;
use palisade::metrics::Metrics;
use palisade::policy::store::PolicyStore;
use palisade::policy::{EngineOptions, PolicySet};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(ROOT).join("tests/data/admission").join(name)).unwrap()
}

/// The templates and constraints of tests/data/gatekeeper in one directory.
fn test_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for t in [
        "required-labels",
        "allowed-repos",
        "default-deny",
        "protect",
        "compat",
    ] {
        for f in ["template.yaml", "constraint.yaml"] {
            std::fs::copy(
                Path::new(ROOT).join(format!("tests/data/gatekeeper/{t}/{f}")),
                dir.path().join(format!("{t}-{f}")),
            )
            .unwrap();
        }
    }
    dir
}

fn inventory() -> Arc<Inventory> {
    let docs = palisade::policy::source::read_path(
        &Path::new(ROOT).join("tests/data/gatekeeper/default-deny/inventory"),
    )
    .unwrap();
    Arc::new(Inventory::from_objects(docs.into_iter().map(|d| d.value)))
}

/// The captured pod as the mutating webhook leaves it, with resource limits: the default bundle
/// admits it in `payments`.
fn admitted_pod() -> palisade::admission::Review {
    let mut review: serde_json::Value =
        serde_json::from_slice(&fixture("validate-create-pod.json")).unwrap();
    let o = &mut review["request"]["object"];
    o["spec"]["containers"][0]["resources"] =
        serde_json::json!({"limits": {"cpu": "250m", "memory": "64Mi"}});
    o["spec"]["containers"][0]["securityContext"] = serde_json::json!(
        {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}});
    o["spec"]["securityContext"] =
        serde_json::json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    o["metadata"]["labels"]["mtls"] = "strict".into();
    o["metadata"]["labels"]["sidecar.istio.io/inject"] = "true".into();
    admission::decode(&serde_json::to_vec(&review).unwrap())
        .unwrap()
        .1
}

fn bench(c: &mut Criterion) {
    let pod = fixture("validate-create-pod.json");
    c.bench_function("decode/pod", |b| {
        b.iter(|| admission::decode(black_box(&pod)).unwrap())
    });

    let (_, review) = admission::decode(&pod).unwrap();
    c.bench_function("convert/pod-review-to-regorus/serde", |b| {
        use serde::Deserialize as _;
        b.iter(|| regorus::Value::deserialize(black_box(review.json())).unwrap())
    });
    c.bench_function("convert/pod-review-to-regorus/direct", |b| {
        b.iter(|| palisade::policy::to_regorus(black_box(review.json())))
    });
    // One constraint at a time, to see what each template costs.
    for t in ["allowed-repos", "default-deny", "protect"] {
        let dir = tempfile::tempdir().unwrap();
        for f in ["template.yaml", "constraint.yaml"] {
            std::fs::copy(
                Path::new(ROOT).join(format!("tests/data/gatekeeper/{t}/{f}")),
                dir.path().join(f),
            )
            .unwrap();
        }
        let one = PolicySet::load(dir.path(), &EngineOptions::default(), inventory()).unwrap();
        c.bench_function(&format!("evaluate/pod/only-{t}"), |b| {
            b.iter(|| one.evaluate(black_box(&review)))
        });
    }
    // Each zero-trust policy alone, on a pod it admits (namespace and default-deny known).
    let admitted = admitted_pod();
    let zt_inventory = {
        let mut objects = Vec::new();
        for f in [
            "tests/data/mutation/namespaces.yaml",
            "tests/data/guides/default-deny.yaml",
        ] {
            objects.extend(
                palisade::policy::source::read_path(&Path::new(ROOT).join(f))
                    .unwrap()
                    .into_iter()
                    .map(|d| d.value),
            );
        }
        Arc::new(Inventory::from_objects(objects))
    };
    for policy in ["default-deny-required", "pod-security", "mutual-tls"] {
        let set = PolicySet::load(
            &Path::new(ROOT).join("policies/zero-trust").join(policy),
            &EngineOptions::default(),
            zt_inventory.clone(),
        )
        .unwrap();
        assert!(set.evaluate(&admitted).is_empty(), "{policy}");
        c.bench_function(&format!("evaluate/admitted-pod/only-{policy}"), |b| {
            b.iter(|| set.evaluate(black_box(&admitted)))
        });
    }
    let default = PolicySet::load(
        &Path::new(ROOT).join("policies"),
        &EngineOptions::default(),
        zt_inventory,
    )
    .unwrap();
    assert!(default.evaluate(&admitted).is_empty());
    c.bench_function("evaluate/admitted-pod/default-bundle", |b| {
        b.iter(|| default.evaluate(black_box(&admitted)))
    });
    let bundle = test_bundle();
    let set = PolicySet::load(bundle.path(), &EngineOptions::default(), inventory()).unwrap();
    let empty = PolicySet::default();
    c.bench_function("evaluate/pod/empty-bundle", |b| {
        b.iter(|| empty.evaluate(black_box(&review)))
    });
    c.bench_function("evaluate/pod/test-bundle", |b| {
        b.iter(|| set.evaluate(black_box(&review)))
    });

    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(
        PolicyStore::load(
            bundle.path(),
            EngineOptions::default(),
            vec![Path::new(ROOT).join("tests/data/gatekeeper/default-deny/inventory")],
            metrics.clone(),
        )
        .unwrap(),
    );
    let enforcer = Enforcer::new(store, vec!["kube-system".into()], metrics);
    c.bench_function("decode+decide/pod/test-bundle", |b| {
        b.iter(|| {
            let (_, review) = admission::decode(black_box(&pod)).unwrap();
            enforcer.decide(Endpoint::Validate, &review)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
