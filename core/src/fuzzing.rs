//! Entry points of the fuzz targets in `fuzz/`, shared with the corpus replay in the tests
//! (`tests/it/fuzz.rs`), so that CI runs every saved input through the same code whether or not
//! the machine can build libFuzzer.
//!
//! Each entry point takes arbitrary bytes, must never panic, hang or allocate without bound, and
//! asserts the properties that hold for every input, so that the fuzzer finds wrong answers as
//! well as crashes:
//! - [`Harness::review`]: AdmissionReview bytes → decode → decide (validate and mutate) →
//!   encode. The encoded answer is a well-formed AdmissionReview echoing the uid; a patch
//!   applies to the object, and the patched object needs no further patch.
//! - [`Harness::review_variant`]: the same, on one of the real reviews changed by the bytes in
//!   ways a hostile or broken client would: fields removed, emptied or given the wrong type,
//!   lists grown, unicode strings, numbers at the edges, labels and annotations added.
//! - [`mutation`]: the location parser (a location prints back to itself) and mutators applied
//!   to arbitrary objects (a second run changes nothing).
//! - [`bundle`]: the bundle loader (YAML documents, template and constraint specs, the Rego
//!   rewriter and compiler), then the bundle's policies on a Pod and a Namespace.
//! - [`matching`]: `match` blocks, label selectors and name globs, the globs checked against a
//!   plain reference implementation.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use crate::admission::{self, Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::Decider;
use crate::inventory::Inventory;
use crate::manifest::{Document, parse_str};
use crate::matcher::{Glob, LabelSelector, Match};
use crate::mutation::location::Location;
use crate::mutation::{Mutator, Mutators};
use crate::object::labels_of;
use crate::policy::EngineOptions;

/// Largest input the entry points look at; the server refuses bodies past its own limit long
/// before they reach this code, and the fuzzer learns nothing from megabytes of noise.
pub const MAX_INPUT: usize = 64 * 1024;

/// What the review targets decide with: a bundle, an inventory and the webhook's exemptions.
pub struct Harness {
    bundle: Bundle,
    inventory: Inventory,
    decider: Decider,
    seeds: Vec<Value>,
}

impl Harness {
    /// The bundle at `policies`, the objects of `inventory` as the inventory, and the review
    /// files (`*.json`) of `seeds` as the reviews [`Harness::review_variant`] starts from.
    pub fn new(policies: &Path, inventory: &[PathBuf], seeds: &Path) -> anyhow::Result<Self> {
        let bundle = crate::bundle::load(policies, &EngineOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let inventory = Inventory::from_objects(crate::manifest::files::read_objects(inventory)?);
        let mut files: Vec<PathBuf> = std::fs::read_dir(seeds)
            .with_context(|| format!("reading {}", seeds.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut reviews = Vec::new();
        for file in files {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let review: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            reviews.push(review);
        }
        anyhow::ensure!(
            !reviews.is_empty(),
            "no *.json reviews in {}",
            seeds.display()
        );
        Ok(Self {
            bundle,
            inventory,
            decider: Decider::new(vec!["kube-system".into(), "palisade-system".into()])
                .with_own_namespace("palisade-system"),
            seeds: reviews,
        })
    }

    /// The harness of the fuzz targets and the corpus replay: the bundled policies in
    /// `policies/`, the test namespaces and their default-deny NetworkPolicies as the inventory,
    /// and the reviews captured from a kube-apiserver in `tests/data/admission/` as seeds.
    pub fn from_repository(root: &Path) -> anyhow::Result<Self> {
        Self::new(
            &root.join("policies"),
            &[
                root.join("tests/data/mutation/namespaces.yaml"),
                root.join("tests/data/guides/default-deny.yaml"),
            ],
            &root.join("tests/data/admission"),
        )
    }

    /// The real reviews the variants start from.
    pub fn seeds(&self) -> &[Value] {
        &self.seeds
    }

    /// Decodes, decides on both endpoints and encodes the answer, checking each step.
    pub fn review(&self, data: &[u8]) {
        if data.len() > MAX_INPUT {
            return;
        }
        let Ok(review) = admission::decode(data) else {
            return;
        };
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            // No deadline: the bundle's policies are bounded by the input, and a hang is a
            // finding (libFuzzer's -timeout reports it).
            let decision = match self.decider.decide(
                &self.bundle,
                &self.inventory,
                endpoint,
                &review,
                time::OffsetDateTime::now_utc(),
                None,
            ) {
                Ok(d) => d,
                Err(e) => unreachable_finding(&format!("out of time without a deadline: {e:?}")),
            };
            let wire: Value = match serde_json::from_slice(&decision.response.encode(review.uid()))
            {
                Ok(v) => v,
                Err(e) => unreachable_finding(&format!("the encoded answer is not JSON: {e}")),
            };
            assert_eq!(
                wire["response"]["uid"],
                json!(review.uid()),
                "uid not echoed"
            );
            assert_eq!(
                wire["response"]["allowed"],
                json!(decision.response.allowed),
                "allowed not encoded"
            );
            if !decision.response.allowed {
                assert!(
                    !decision.response.message.is_empty(),
                    "a denial without a message"
                );
            }
            if endpoint == Endpoint::Mutate && decision.response.is_patched() {
                self.check_patch(&review, &decision.response);
            }
        }
    }

    /// A patch applies to the object it was made for, and the patched object is left alone.
    fn check_patch(&self, review: &Review, response: &admission::Response) {
        let Some(patch) = &response.patch else { return };
        let mut patched = review.object().clone();
        if let Err(e) = json_patch::patch(&mut patched, patch) {
            unreachable_finding(&format!("the patch does not apply to its object: {e}"));
        }
        let mut again = review.clone();
        *again.object_mut() = patched;
        match self.decider.decide(
            &self.bundle,
            &self.inventory,
            Endpoint::Mutate,
            &again,
            time::OffsetDateTime::now_utc(),
            None,
        ) {
            Ok(d) => assert!(
                !d.response.is_patched(),
                "the patched object is patched again: {:?}",
                d.response.patch
            ),
            Err(e) => unreachable_finding(&format!("out of time without a deadline: {e:?}")),
        }
    }

    /// One of the real reviews, changed by `data`, through [`Harness::review`].
    pub fn review_variant(&self, data: &[u8]) {
        if let Some(body) = self
            .variant(data)
            .and_then(|review| serde_json::to_vec(&review).ok())
        {
            self.review(&body);
        }
    }

    /// The review [`Harness::review_variant`] makes of `data`: the reproducer of a finding.
    pub fn variant(&self, data: &[u8]) -> Option<Value> {
        if data.is_empty() || data.len() > MAX_INPUT {
            return None;
        }
        let mut review = self.seeds[usize::from(data[0]) % self.seeds.len()].clone();
        let mut edits = Edits { data: &data[1..] };
        while !edits.data.is_empty() {
            edits.apply(&mut review);
        }
        Some(review)
    }
}

/// Installs a panic hook in front of the one in place (libFuzzer's, which aborts): a panic of
/// regorus while it evaluates a template is caught by Palisade and fails the constraint closed,
/// which is an answer, not a finding (docs/regorus-divergences.md lists the known ones). Any
/// other panic goes on to the previous hook.
pub fn tolerate_policy_engine_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if crate::policy::in_policy_engine() {
            return;
        }
        previous(info);
    }));
}

/// A property that must hold for every input does not: the fuzzer records the input.
#[track_caller]
fn unreachable_finding(what: &str) -> ! {
    #[allow(clippy::panic)]
    {
        panic!("{what}")
    }
}

/// Strings a hostile or careless client sends: look-alikes of exempt names, control and
/// bidirectional characters, a NUL, a long one.
const ODD_STRINGS: &[&str] = &[
    "",
    "kube-system",
    "kube-system ",
    "kube-system\u{0}",
    "kube\u{2010}system",
    "Kube-System",
    "palisade-system",
    "\u{202e}metsys-ebuk",
    "é",
    "e\u{301}",
    "\u{1f512}",
    "\u{feff}",
    "default",
    "*",
    "true",
    "0",
    "-1",
    "1e400",
    "a/b",
    "palisade.dev/break-glass",
    "kubernetes.io/metadata.name",
];

/// Numbers at the edges of JSON, i64, u64 and f64.
fn odd_number(byte: u8) -> Value {
    match byte % 10 {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MAX),
        3 => json!(i64::MIN),
        4 => json!(u64::MAX),
        5 => json!(f64::MAX),
        6 => json!(f64::MIN_POSITIVE),
        7 => json!(-0.0),
        8 => json!(0.5),
        _ => json!(65536),
    }
}

/// Reads edit instructions from fuzzer bytes, each aimed at a node of the review chosen by a
/// walk from the root.
struct Edits<'a> {
    data: &'a [u8],
}

impl Edits<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn string(&mut self) -> String {
        let b = self.byte();
        if b < 128 {
            return ODD_STRINGS[usize::from(b) % ODD_STRINGS.len()].to_owned();
        }
        // Raw bytes taken as text, lossily: whatever the fuzzer wants, always valid UTF-8.
        let len = usize::from(b - 128).min(self.data.len());
        let (raw, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(raw).into_owned()
    }

    /// Walks from `root` into `request` and on, one byte per step, and applies one edit.
    fn apply(&mut self, root: &mut Value) {
        let op = self.byte() % 12;
        if op == 8 || op == 9 {
            return self.add_metadata(root, if op == 8 { "labels" } else { "annotations" });
        }
        let depth = self.byte() % 8;
        let mut pointer = String::new();
        let mut at = match root.get("request") {
            Some(r) => {
                pointer.push_str("/request");
                r
            }
            None => &*root,
        };
        for _ in 0..depth {
            let pick = usize::from(self.byte());
            let next = match at {
                Value::Object(map) if !map.is_empty() => map
                    .iter()
                    .nth(pick % map.len())
                    .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v)),
                Value::Array(list) if !list.is_empty() => {
                    let i = pick % list.len();
                    Some((i.to_string(), &list[i]))
                }
                _ => None,
            };
            match next {
                Some((step, n)) => {
                    pointer.push('/');
                    pointer.push_str(&step);
                    at = n;
                }
                None => break,
            }
        }
        let Some(node) = root.pointer_mut(&pointer) else {
            return;
        };
        match op {
            // Remove a field (or element).
            0 => match node {
                Value::Object(map) if !map.is_empty() => {
                    let pick = usize::from(self.byte()) % map.len();
                    if let Some(k) = map.keys().nth(pick).cloned() {
                        map.remove(&k);
                    }
                }
                Value::Array(list) if !list.is_empty() => {
                    let pick = usize::from(self.byte()) % list.len();
                    list.remove(pick);
                }
                _ => {}
            },
            1 => *node = Value::Null,
            // Emptied, keeping the type.
            2 => {
                *node = match node {
                    Value::Object(_) => json!({}),
                    Value::Array(_) => json!([]),
                    Value::String(_) => json!(""),
                    Value::Number(_) => json!(0),
                    Value::Bool(_) => json!(false),
                    Value::Null => Value::Null,
                }
            }
            // The wrong type.
            3 => {
                *node = match node {
                    Value::Object(_) => json!([]),
                    Value::Array(_) => json!({}),
                    Value::String(_) => json!(1),
                    Value::Number(_) => json!("1"),
                    Value::Bool(_) => json!("true"),
                    Value::Null => json!({}),
                }
            }
            4 => *node = Value::String(self.string()),
            5 => *node = odd_number(self.byte()),
            // A list grown by copies of its elements.
            6 => {
                if let Value::Array(list) = node
                    && let Some(first) = list.first().cloned()
                {
                    let n = usize::from(self.byte() % 64) + 1;
                    list.extend(std::iter::repeat_n(first, n));
                }
            }
            // A field added, or renamed by a look-alike.
            7 => {
                if let Value::Object(map) = node {
                    let key = self.string();
                    let value = Value::String(self.string());
                    map.insert(key, value);
                }
            }
            // Nested one level deeper.
            10 => {
                let inner = node.take();
                *node = json!({ "x": inner });
            }
            // A string field given a longer value.
            _ => {
                if let Value::String(s) = node {
                    let n = usize::from(self.byte()) * 64;
                    s.push_str(&"a".repeat(n));
                }
            }
        }
    }

    /// A label or annotation added on the object or the old object.
    fn add_metadata(&mut self, root: &mut Value, field: &str) {
        let which = if self.byte().is_multiple_of(2) {
            "object"
        } else {
            "oldObject"
        };
        let key = self.string();
        let value = self.string();
        if let Some(Value::Object(obj)) = root.get_mut("request").and_then(|r| r.get_mut(which)) {
            let meta = obj.entry("metadata").or_insert_with(|| json!({}));
            if let Value::Object(meta) = meta {
                let map = meta.entry(field).or_insert_with(|| json!({}));
                if let Value::Object(map) = map {
                    map.insert(key, Value::String(value));
                }
            }
        }
    }
}

/// The input as text, when it is UTF-8 and within [`MAX_INPUT`].
fn text(data: &[u8]) -> Option<&str> {
    (data.len() <= MAX_INPUT)
        .then(|| std::str::from_utf8(data).ok())
        .flatten()
}

/// The location parser and mutators on arbitrary objects. The input is text: a location on
/// the first line, the mutator's kind on the second (`Assign`, `AssignMetadata`, `ModifySet`),
/// its `spec.parameters` as JSON on the third, and the object as JSON after them.
pub fn mutation(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let location = lines.next().unwrap_or_default();
    if let Ok(parsed) = Location::parse(location) {
        let printed = parsed.to_string();
        match Location::parse(&printed) {
            Ok(again) => assert_eq!(again, parsed, "{location:?} printed as {printed:?}"),
            Err(e) => unreachable_finding(&format!(
                "{location:?} printed as {printed:?}, which fails: {e}"
            )),
        }
    }
    let kind = lines.next().unwrap_or_default().trim();
    let Ok(parameters) = serde_json::from_str::<Value>(lines.next().unwrap_or_default()) else {
        return;
    };
    let Ok(object) = serde_json::from_str::<Value>(lines.next().unwrap_or_default()) else {
        return;
    };
    if !object.is_object() {
        return;
    }
    let doc = Document::from_cluster(json!({
        "apiVersion": "mutations.gatekeeper.sh/v1",
        "kind": kind,
        "metadata": {"name": "fuzz"},
        "spec": {
            "applyTo": [{"groups": ["*"], "kinds": ["*"], "versions": ["*"]}],
            "match": {"kinds": [{"apiGroups": ["*"], "kinds": ["*"]}]},
            "location": location,
            "parameters": parameters,
        },
    }));
    let Ok(mutator) = Mutator::parse(&doc) else {
        return;
    };
    let mutators = Mutators::new(vec![mutator]);
    let review = Review::from_object(object);
    if let Ok(Some(changed)) = mutators.mutate(&review, None) {
        let again = Review::from_object(changed);
        if let Ok(result) = mutators.mutate(&again, None) {
            assert!(
                result.is_none(),
                "a mutator changed its own result again: {result:?}"
            );
        }
    }
}

/// The bundle loader on arbitrary YAML, then the bundle's policies on a Pod and a Namespace.
pub fn bundle(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(docs) = parse_str(text, Path::new("fuzz.yaml")) else {
        return;
    };
    let options = EngineOptions::default();
    let Ok(bundle) = Bundle::from_documents(docs, &options) else {
        return;
    };
    let inventory = Inventory::default();
    let reviews = [
        Review::as_created(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "team", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
        Review::as_created(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team", "labels": {"kubernetes.io/metadata.name": "team"}}})),
    ];
    let deadline = || Some(std::time::Instant::now() + options.eval_timeout);
    for review in &reviews {
        // A policy may run out of its time; that is an answer, not a finding.
        let _ = bundle.policies().evaluate(
            crate::policy::Point::Validation,
            review,
            None,
            &inventory,
            deadline(),
        );
        let _ = bundle.mutators().mutate(review, None);
    }
}

/// `match` blocks and globs. The input is text: a glob on the first line and a name on the
/// second (checked against [`reference_glob`]), then a YAML mapping with `match` (a constraint's
/// `spec.match`), `selector` (a label selector), `object` and `namespace`.
pub fn matching(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let pattern = lines.next().unwrap_or_default();
    let name = lines.next().unwrap_or_default();
    assert_eq!(
        Glob::new(pattern).matches(name),
        reference_glob(pattern, name),
        "glob {pattern:?} on {name:?}"
    );
    let Ok(docs) = parse_str(lines.next().unwrap_or_default(), Path::new("fuzz.yaml")) else {
        return;
    };
    let Some(doc) = docs.into_iter().next() else {
        return;
    };
    let spec = &doc.value;
    let object = match &spec["object"] {
        Value::Object(o) => Value::Object(o.clone()),
        _ => Value::Object(Map::new()),
    };
    let namespace = spec.get("namespace").filter(|n| n.is_object());
    let review = Review::from_object(object);
    if let Ok(m) = Match::parse(&spec["match"], "spec.match") {
        let _ = m.matches(&review, namespace);
    }
    if let Ok(selector) = LabelSelector::parse(&spec["selector"], "selector") {
        let labels = labels_of(review.object());
        let _ = selector.matches(&labels);
    }
}

/// Gatekeeper's name globs, written as plainly as possible: `*` alone matches everything; one
/// `*` at either end or both matches the rest of the name as prefix, suffix or infix; any other
/// pattern is an exact name.
pub fn reference_glob(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let starts = pattern.starts_with('*');
    let ends = pattern.len() > 1 && pattern.ends_with('*');
    let inner = &pattern[usize::from(starts)..pattern.len() - usize::from(ends)];
    match (starts, ends) {
        (true, true) => name.contains(inner),
        (true, false) => name.ends_with(inner),
        (false, true) => name.starts_with(inner),
        (false, false) => name == pattern,
    }
}
