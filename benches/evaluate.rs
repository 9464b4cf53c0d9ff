//! Per-review costs on the request path: decoding, and evaluating a bundle.
//!
//! `cargo bench --bench evaluate`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::admission::{self, Endpoint, Review};
use palisade::bundle::Bundle;
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::manifest::files::read_path;
use palisade::policy::EngineOptions;

/// What the webhook does per review, minus the transport: the one decision path.
fn evaluate(bundle: &Bundle, inventory: &Inventory, review: &Review) -> usize {
    Decider::without_exemptions()
        .decide(
            bundle,
            inventory,
            Endpoint::Validate,
            review,
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap()
        .violations
        .len()
}

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

fn inventory() -> Inventory {
    let docs =
        read_path(&Path::new(ROOT).join("tests/data/gatekeeper/default-deny/inventory")).unwrap();
    Inventory::from_objects(docs.into_iter().map(|d| d.value))
}

/// The captured pod as the mutating webhook leaves it, with resource limits: the default bundle
/// admits it in `payments`.
fn admitted_pod() -> Review {
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
    admission::decode(&serde_json::to_vec(&review).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let pod = fixture("validate-create-pod.json");
    c.bench_function("decode/pod", |b| {
        b.iter(|| admission::decode(black_box(&pod)).unwrap())
    });

    let review = admission::decode(&pod).unwrap();
    c.bench_function("convert/pod-review-to-regorus/serde", |b| {
        use serde::Deserialize as _;
        b.iter(|| regorus::Value::deserialize(black_box(review.json())).unwrap())
    });
    c.bench_function("convert/pod-review-to-regorus/direct", |b| {
        b.iter(|| palisade::object::to_regorus(black_box(review.json())))
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
        let one = palisade::bundle::load(dir.path(), &EngineOptions::default()).unwrap();
        let inventory = inventory();
        c.bench_function(&format!("evaluate/pod/only-{t}"), |b| {
            b.iter(|| evaluate(&one, &inventory, black_box(&review)))
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
                read_path(&Path::new(ROOT).join(f))
                    .unwrap()
                    .into_iter()
                    .map(|d| d.value),
            );
        }
        Inventory::from_objects(objects)
    };
    for policy in ["default-deny-required", "pod-security", "mutual-tls"] {
        let set = palisade::bundle::load(
            &Path::new(ROOT).join("policies/zero-trust").join(policy),
            &EngineOptions::default(),
        )
        .unwrap();
        assert_eq!(evaluate(&set, &zt_inventory, &admitted), 0, "{policy}");
        c.bench_function(&format!("evaluate/admitted-pod/only-{policy}"), |b| {
            b.iter(|| evaluate(&set, &zt_inventory, black_box(&admitted)))
        });
    }
    let default =
        palisade::bundle::load(&Path::new(ROOT).join("policies"), &EngineOptions::default())
            .unwrap();
    assert_eq!(evaluate(&default, &zt_inventory, &admitted), 0);
    c.bench_function("evaluate/admitted-pod/default-bundle", |b| {
        b.iter(|| evaluate(&default, &zt_inventory, black_box(&admitted)))
    });
    // NetworkPolicy hygiene: the model's facts for the review (over its namespace in the
    // inventory) and the template on the VM, against the whole default bundle on a Pod.
    let hygiene = palisade::bundle::load(
        &Path::new(ROOT).join("policies/zero-trust/networkpolicy-hygiene"),
        &EngineOptions::default(),
    )
    .unwrap();
    let policy = read_path(&Path::new(ROOT).join("tests/data/guides/external-api.yaml"))
        .unwrap()
        .remove(0)
        .value;
    let netpol_review = admission::decode(
        &serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "bench", "operation": "CREATE", "namespace": "payments",
                "name": "allow-external-api", "userInfo": {"username": "bench"},
                "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
                "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
                "object": policy}
        }))
        .unwrap(),
    )
    .unwrap();
    // The external API policy draws three private-range warnings and nothing else.
    assert_eq!(evaluate(&hygiene, &zt_inventory, &netpol_review), 3);
    c.bench_function("evaluate/networkpolicy/only-networkpolicy-hygiene", |b| {
        b.iter(|| evaluate(&hygiene, &zt_inventory, black_box(&netpol_review)))
    });
    let bundle = test_bundle();
    let set = palisade::bundle::load(bundle.path(), &EngineOptions::default()).unwrap();
    let empty = Bundle::default();
    let inventory = inventory();
    c.bench_function("evaluate/pod/empty-bundle", |b| {
        b.iter(|| evaluate(&empty, &inventory, black_box(&review)))
    });
    c.bench_function("evaluate/pod/test-bundle", |b| {
        b.iter(|| evaluate(&set, &inventory, black_box(&review)))
    });

    let decider = Decider::new(vec!["kube-system".into()]);
    c.bench_function("decode+decide/pod/test-bundle", |b| {
        b.iter(|| {
            let review = admission::decode(black_box(&pod)).unwrap();
            decider.decide(
                &set,
                &inventory,
                Endpoint::Validate,
                &review,
                time::OffsetDateTime::now_utc(),
                None,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
