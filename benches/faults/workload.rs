//! The workload and its expected answers: the captured reviews in both namespaces of the
//! inventory, each decided in this process as `palisade serve` would decide it.

use std::path::Path;

use bytes::Bytes;
use palisade::admission::Endpoint;
use palisade::decide::Decider;
use palisade::inventory::Inventory;
use palisade::policy::EngineOptions;
use palisade_testkit::fixtures::{fixture, in_namespace, repo_path};
use serde_json::Value;

/// One review of the workload and the `response` the good bundle gives it.
pub struct Case {
    pub name: String,
    pub path: &'static str,
    pub body: Bytes,
    pub expected: Value,
}

/// The captured reviews, in both namespaces of the inventory (payments has its default-deny and
/// requires mutual TLS; shop has neither), with distinct uids.
fn workload_reviews() -> Vec<(String, &'static str, Value)> {
    let mut out = Vec::new();
    let cases: [(&str, &str, &'static str); 6] = [
        ("admitted pod", "bench/admitted-pod.json", "/validate"),
        (
            "captured pod",
            "admission/validate-create-pod.json",
            "/validate",
        ),
        (
            "pod mutation",
            "admission/mutate-create-pod.json",
            "/mutate",
        ),
        (
            "five-container mutation",
            "bench/mutate-pod-5-containers.json",
            "/mutate",
        ),
        (
            "networkpolicy",
            "admission/validate-create-networkpolicy.json",
            "/validate",
        ),
        (
            "namespace",
            "admission/validate-create-namespace.json",
            "/validate",
        ),
    ];
    for (i, (label, file, path)) in cases.into_iter().enumerate() {
        for ns in ["payments", "shop"] {
            let mut review: Value = serde_json::from_slice(&fixture(file)).unwrap();
            if review["request"]["kind"]["kind"] != "Namespace" {
                in_namespace(&mut review, ns);
            } else if ns == "shop" {
                continue;
            }
            review["request"]["uid"] =
                format!("00000000-0000-4000-8000-{i:06}{:06}", out.len()).into();
            out.push((format!("{label} in {ns}"), path, review));
        }
    }
    out
}

/// Decides each review in this process, as `palisade serve` would with `bundle` and `objects`.
pub fn expected_cases(bundle_dir: &Path, objects: Vec<Value>) -> Vec<Case> {
    let bundle = palisade::bundle::load(bundle_dir, &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", bundle_dir.display()));
    let inventory = Inventory::from_objects(objects);
    let decider = Decider::without_exemptions();
    workload_reviews()
        .into_iter()
        .map(|(name, path, review)| {
            let body = serde_json::to_vec(&review).unwrap();
            let decoded = palisade::admission::decode(&body).unwrap();
            let endpoint = if path == "/mutate" {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            let decision = decider
                .decide(
                    &bundle,
                    &inventory,
                    endpoint,
                    &decoded,
                    time::OffsetDateTime::now_utc(),
                    None,
                )
                .unwrap_or_else(|_| panic!("{name}: out of time"));
            let encoded: Value =
                serde_json::from_slice(&decision.response.encode(decoded.uid())).unwrap();
            Case {
                name,
                path,
                body: Bytes::from(body),
                expected: encoded["response"].clone(),
            }
        })
        .collect()
}

pub fn describe(cases: &[Case]) -> String {
    let allowed = cases.iter().filter(|c| c.expected["allowed"] == true);
    let patched = cases
        .iter()
        .filter(|c| c.expected.get("patch").is_some())
        .count();
    let allowed = allowed.count();
    format!(
        "{} reviews: {allowed} allowed ({patched} of them patched), {} denied",
        cases.len(),
        cases.len() - allowed
    )
}

pub fn file_inventory() -> Vec<Value> {
    palisade::manifest::files::read_objects(&[
        repo_path("tests/data/mutation/namespaces.yaml"),
        repo_path("tests/data/guides/default-deny.yaml"),
    ])
    .unwrap()
}
