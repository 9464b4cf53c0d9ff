//! What an inventory change costs with 50 templates and 10,000 namespaces (each with a
//! default-deny NetworkPolicy): the templates are never touched, so the cost is the new snapshot.
//!
//! `cargo bench --bench inventory`

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use palisade::bundle::Bundle;
use palisade::inventory::{Change, Inventory};
use palisade::manifest::parse_str;
use palisade::policy::EngineOptions;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// 50 copies of the default-deny-required template, each its own kind, with a constraint each.
fn fifty_templates() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(
            Path::new(ROOT)
                .join("policies/zero-trust/default-deny-required")
                .join(f),
        )
        .unwrap()
    };
    let (template, constraint) = (read("template.yaml"), read("constraint.yaml"));
    let mut out = String::new();
    for i in 0..50 {
        let kind = format!("PalisadeRequireDefaultDeny{i}");
        let t = template
            .replace("PalisadeRequireDefaultDeny", &kind)
            .replace("palisaderequiredefaultdeny", &kind.to_lowercase());
        let c = constraint
            .replace("PalisadeRequireDefaultDeny", &kind)
            .replace(
                "workloads-need-default-deny",
                &format!("workloads-need-default-deny-{i}"),
            );
        out.push_str(&format!("{t}\n---\n{c}\n---\n"));
    }
    out
}

fn namespace(i: usize, level: &str) -> serde_json::Value {
    let ns = format!("team-{i:05}");
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns, "security-level": level}}})
}

fn objects(n: usize) -> Vec<serde_json::Value> {
    let mut objects = Vec::with_capacity(2 * n);
    for i in 0..n {
        objects.push(namespace(i, "low"));
        objects.push(
            serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": format!("team-{i:05}")},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        );
    }
    objects
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("inventory-change/50-templates/10000-namespaces");
    g.sample_size(10);
    // The bundle is loaded as it would be served; an inventory change does not involve it, on
    // either engine, which is why there is one set of figures.
    let docs = parse_str(&fifty_templates(), Path::new("gen.yaml")).unwrap();
    let bundle = Bundle::from_documents(docs, &EngineOptions::default()).unwrap();
    assert_eq!(bundle.policies().constraints().len(), 50);
    let engine = "any-engine";
    {
        let objects = objects(10_000);
        let inventory = Inventory::from_objects(objects.iter().cloned());
        // One relabelled namespace: the next snapshot, sharing everything else. The bundle is
        // not involved at all.
        g.bench_function(format!("{engine}/apply-one-change"), |b| {
            let mut k = 0;
            b.iter_batched(
                || {
                    k += 1;
                    Change::Upsert(namespace(
                        k % 10_000,
                        if k % 2 == 0 { "high" } else { "low" },
                    ))
                },
                |change| black_box(inventory.apply([change])),
                BatchSize::SmallInput,
            )
        });
        // A burst of 100 changes applied as one batch.
        g.bench_function(format!("{engine}/apply-100-changes"), |b| {
            b.iter_batched(
                || {
                    (0..100)
                        .map(|i| Change::Upsert(namespace(i * 97, "medium")))
                        .collect::<Vec<_>>()
                },
                |changes| black_box(inventory.apply(changes)),
                BatchSize::SmallInput,
            )
        });
        // What the --inventory files cost when they change: every object read again.
        g.bench_function(format!("{engine}/rebuild-from-all-objects"), |b| {
            b.iter(|| black_box(Inventory::from_objects(objects.iter().cloned())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
