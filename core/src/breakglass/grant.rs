//! Break-glass grants: what an allow-listed person approved, sealed so that nobody else can
//! change it and keep the approval.
//!
//! When an allow-listed person's request is honoured, /mutate stamps
//! `palisade.dev/break-glass-grant: v1.<approver>.<tag>` beside the break-glass annotations. The
//! tag is an HMAC-SHA256 over the kind approved, the namespace, the approver, the reason, the
//! expiry and what was approved: for a kind that carries a pod spec, that pod spec and the pod's annotations and
//! labels; for any other kind, the object without its metadata and status, plus its labels and
//! annotations. A later request by anyone else is honoured only if the tag still verifies, so a
//! change to the spec voids it; the pods a controller copies from an approved template carry the
//! grant and verify against their own spec.
//!
//! A controller's pod is not its template byte for byte: Kubernetes adds to pods what no
//! template holds. Those fields are left out of what a grant covers, and only those (see
//! [`approved_pod_spec`]); none of them is one that the Pod Security Standards judge.
//!
//! The key is derived (HKDF-SHA256) from the serving certificate's private key, which every
//! replica mounts from the Secret that only Palisade reads, so it is shared without another
//! secret to distribute and rotates with the certificates. The previous key still verifies after
//! a rotation, so grants survive one; a grant older than that has to be approved again.
//!
//! [`GrantKeys`] holds the keys and makes and verifies grants over a [`Sealed`]; [`Invalid`] says
//! why a grant does not hold.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hkdf, hmac};
use serde_json::{Map, Value};

/// The annotation /mutate stamps with the grant, beside [`crate::breakglass::REASON`].
pub const GRANT: &str = "palisade.dev/break-glass-grant";
const VERSION: &str = "v1";
const CONTEXT: &[u8] = b"palisade.dev/break-glass-grant v1";

/// The keys grants are made and checked with: the newest first, then the one before it.
#[derive(Default)]
pub struct GrantKeys {
    keys: ArcSwap<Vec<Key>>,
}

impl std::fmt::Debug for GrantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrantKeys({} keys)", self.keys.load().len())
    }
}

struct Key {
    /// SHA-256 of the secret it was derived from: tells a new secret from a reload.
    source: digest::Digest,
    key: hmac::Key,
}

struct HmacLen;

impl hkdf::KeyType for HmacLen {
    fn len(&self) -> usize {
        digest::SHA256_OUTPUT_LEN
    }
}

impl GrantKeys {
    /// No key: no grant is made and none verifies (the CLI, which has no requesters anyway).
    pub fn none() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Keys from one secret (tests, benchmarks).
    pub fn from_secret(secret: &[u8]) -> Arc<Self> {
        let keys = Self::default();
        keys.install(secret);
        Arc::new(keys)
    }

    /// Makes the key derived from `secret` the newest; the newest before it stays for checking.
    /// The same secret again changes nothing.
    pub fn install(&self, secret: &[u8]) {
        let source = digest::digest(&digest::SHA256, secret);
        let current = self.keys.load();
        if current
            .first()
            .is_some_and(|k| k.source.as_ref() == source.as_ref())
        {
            return;
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, CONTEXT).extract(secret);
        let mut bytes = [0u8; digest::SHA256_OUTPUT_LEN];
        // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 blocks).
        if prk
            .expand(&[b"hmac-sha256"], HmacLen)
            .and_then(|okm| okm.fill(&mut bytes))
            .is_err()
        {
            return;
        }
        let key = Key {
            source,
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        };
        let mut next = vec![key];
        if let Some(previous) = current.first() {
            next.push(Key {
                source: previous.source,
                key: previous.key.clone(),
            });
        }
        self.keys.store(Arc::new(next));
    }

    /// Whether there is no key: grants are neither made nor verified.
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// The grant for `sealed`, with the newest key.
    pub fn grant(&self, sealed: &Sealed<'_>) -> Option<String> {
        let keys = self.keys.load();
        let key = keys.first()?;
        let tag = hmac::sign(&key.key, &sealed.message());
        Some(format!(
            "{VERSION}.{}.{}",
            URL_SAFE_NO_PAD.encode(sealed.approver),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    /// The approver a grant names, if it is a grant for what `sealed` holds (its approver is
    /// taken from the grant).
    pub fn verify(&self, grant: &str, sealed: &Sealed<'_>) -> Result<String, Invalid> {
        let mut parts = grant.split('.');
        let (Some(VERSION), Some(approver), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        let approver = URL_SAFE_NO_PAD
            .decode(approver)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|a| !a.is_empty())
            .ok_or(Invalid::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Invalid::Malformed)?;
        let keys = self.keys.load();
        if keys.is_empty() {
            return Err(Invalid::NoKey);
        }
        let message = Sealed {
            approver: &approver,
            ..*sealed
        }
        .message();
        if keys
            .iter()
            .any(|k| hmac::verify(&k.key, &message, &tag).is_ok())
        {
            Ok(approver)
        } else {
            Err(Invalid::Mismatch)
        }
    }
}

/// Why a grant does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The object carries no grant.
    Missing,
    /// Not `v1.<approver>.<tag>` with both parts in unpadded URL-safe base64 and a non-empty
    /// approver.
    Malformed,
    /// No key is installed to check it with.
    NoKey,
    /// Made for another spec, reason, expiry, namespace, approver or kind, or with a key older
    /// than the previous one.
    Mismatch,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::Missing => "it carries no break-glass grant (an allow-listed person must apply it)",
            Invalid::Malformed => "its break-glass grant is malformed",
            Invalid::NoKey => "this Palisade has no key to check break-glass grants with",
            Invalid::Mismatch => {
                "its break-glass grant does not match: the spec, reason or expiry changed since an allow-listed person approved it"
            }
        })
    }
}

/// What a grant seals.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    /// The kind of the object approved, `group/Kind` (`/Pod`): an approval of one kind is not
    /// one of another (a debug Pod's is no DaemonSet's), but for the kinds whose controllers
    /// copy it ([`crate::breakglass`]).
    pub kind: &'a str,
    /// The namespace of the object.
    pub namespace: &'a str,
    /// The allow-listed user who approved it.
    pub approver: &'a str,
    /// The reason annotation, as written.
    pub reason: &'a str,
    /// The expiry annotation, as written.
    pub expires: &'a str,
    /// [`approved_content`] of the object.
    pub content: &'a Value,
}

impl Sealed<'_> {
    fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(CONTEXT);
        let mut content = Vec::new();
        canonical(self.content, &mut content);
        for field in [
            self.kind.as_bytes(),
            self.namespace.as_bytes(),
            self.approver.as_bytes(),
            self.reason.as_bytes(),
            self.expires.as_bytes(),
            &content,
        ] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// Annotations a pod's approval does not cover: break-glass's own, and those Kubernetes writes
/// on pods or templates by itself (`kubectl rollout restart`, an indexed Job's pod index).
const UNSEALED_ANNOTATIONS: [&str; 5] = [
    super::REASON,
    super::EXPIRES,
    GRANT,
    "kubectl.kubernetes.io/restartedAt",
    "batch.kubernetes.io/job-completion-index",
];

/// What an approval covers: for a kind that carries a pod template (`metadata` and `spec`),
/// the pod spec ([`approved_pod_spec`]), the pod's annotations, which hold settings the Pod
/// Security Standards judge (AppArmor) and mesh opt-outs, and its labels; for another kind, the
/// object without `metadata` and `status`, and its labels and annotations.
pub fn approved_content(object: &Value, pod_template: Option<&Value>) -> Value {
    if let Some(template) = pod_template {
        let mut annotations = template["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        annotations.retain(|k, _| !UNSEALED_ANNOTATIONS.contains(&k.as_str()));
        // The labels decide the mesh (`sidecar.istio.io/inject`), which NetworkPolicies and
        // Services select the pod: sealed, but for those a controller adds.
        let mut labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.retain(|k, _| !CONTROLLER_LABELS.contains(&k.as_str()));
        // A Pod is its own template; what only a pod gets (scheduling results) is left out for
        // pods alone, and sealed in templates, where a tenant could write it.
        let pod = std::ptr::eq(object, template).then_some(object);
        // The DaemonSet controller replaces its pods' required node affinity with the node it
        // runs each on: a DaemonSet template's cannot be checked on its pods.
        let daemon_set = object["kind"] == "DaemonSet" && object["apiVersion"] == "apps/v1";
        return serde_json::json!({
            "spec": normalised(&template["spec"], pod, daemon_set),
            "annotations": annotations,
            "labels": labels,
        });
    }
    let mut rest = object.as_object().cloned().unwrap_or_default();
    rest.remove("metadata");
    rest.remove("status");
    // Annotations configure other kinds too (an Ingress controller's snippets, a cloud load
    // balancer's exposure): sealed, but for break-glass's own and a client's record of what it
    // applied, which configures nothing.
    let mut annotations = object["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| {
        !UNSEALED_ANNOTATIONS.contains(&k.as_str())
            && k != "kubectl.kubernetes.io/last-applied-configuration"
    });
    serde_json::json!({
        "object": rest,
        "labels": object["metadata"]["labels"],
        "annotations": annotations,
    })
}

/// Labels Kubernetes' controllers and defaulting add to the templates and pods they make.
const CONTROLLER_LABELS: [&str; 10] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// Where the ServiceAccount admission plugin mounts the token volume.
const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The node-condition taints that DefaultTolerationSeconds and the DaemonSet controller add
/// tolerations for.
const NODE_CONDITION_TAINTS: [&str; 7] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/network-unavailable",
];

/// Whether `volume` is the service account token volume the ServiceAccount admission plugin
/// adds: named `kube-api-access-*`, projected from the token, the cluster's CA and the
/// namespace only. Any other projected volume (a ConfigMap, a Secret, a token for another
/// audience) is the tenant's, and sealed.
fn is_token_volume(volume: &Value) -> bool {
    let name = volume["name"].as_str().unwrap_or_default();
    let Some(sources) = volume["projected"]["sources"].as_array() else {
        return false;
    };
    let only = |v: &Value, keys: &[&str]| {
        v.as_object()
            .is_some_and(|m| m.keys().all(|k| keys.contains(&k.as_str())))
    };
    let source_ok = |s: &Value| {
        if !only(s, &["serviceAccountToken", "configMap", "downwardAPI"])
            || s.as_object().is_none_or(|m| m.len() != 1)
        {
            return false;
        }
        if let Some(token) = s.get("serviceAccountToken") {
            return only(token, &["expirationSeconds", "path"]) && token["path"] == "token";
        }
        if let Some(ca) = s.get("configMap") {
            return only(ca, &["name", "items"])
                && ca["name"] == "kube-root-ca.crt"
                && ca["items"].as_array().is_none_or(|items| {
                    items
                        .iter()
                        .all(|i| i == &serde_json::json!({"key": "ca.crt", "path": "ca.crt"}))
                });
        }
        s["downwardAPI"]["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .all(|i| i["fieldRef"]["fieldPath"] == "metadata.namespace")
        })
    };
    name.starts_with("kube-api-access-")
        && only(volume, &["name", "projected"])
        && only(&volume["projected"], &["sources", "defaultMode"])
        && !sources.is_empty()
        && sources.iter().all(source_ok)
}

/// A pod spec without what Kubernetes itself adds to a pod made from a template, so that a
/// controller's pod and its template compare equal, and nothing else:
/// - the service account token volume (`kube-api-access-*`, projected from the token, the CA
///   and the namespace only) and its mounts at the service account path, where a pod does not
///   turn the token off, and the service account name `default` it fills in;
/// - the node-condition tolerations (`node.kubernetes.io/not-ready` and the others a taint
///   of a node's condition has, with `operator: Exists`) that DefaultTolerationSeconds and the
///   DaemonSet controller add;
/// - scheduling settings admission derives from sealed ones: `priority`, `preemptionPolicy`
///   (the priority class), `overhead` (the runtime class);
/// - the required node affinity a DaemonSet pod is pinned with (one term matching the node's
///   name), on a pod; in a template it is sealed, but for a DaemonSet's, whose pods cannot
///   show it;
/// - for a Pod only (`pod`), never in a template where a tenant could write them: the
///   scheduling result `nodeName`, a StatefulSet pod's `hostname` and `subdomain`, and its
///   claim volumes (`persistentVolumeClaim` named `<volume>-<pod>`), not their mounts, which the
///   template holds;
/// - container `resources` `limits` and `requests` (LimitRanger's defaults, requests copied
///   from limits), not the resource claims a container uses;
/// - a Pod's own defaults: `enableServiceLinks: true`, and `hostPort` equal to the
///   `containerPort` on the host network.
pub fn approved_pod_spec(spec: &Value, pod: Option<&Value>) -> Value {
    normalised(spec, pod, false)
}

/// Whether a required node affinity is the one the DaemonSet controller pins a pod with: one
/// term, matching the node's name.
fn is_daemon_set_pin(required: &Value) -> bool {
    let terms = &required["nodeSelectorTerms"];
    terms.as_array().is_some_and(|t| t.len() == 1)
        && terms[0].as_object().is_some_and(|t| t.len() == 1)
        && terms[0]["matchFields"].as_array().is_some_and(|f| {
            f.len() == 1
                && f[0]["key"] == "metadata.name"
                && f[0]["operator"] == "In"
                && f[0]["values"].as_array().is_some_and(|v| v.len() == 1)
        })
}

/// [`approved_pod_spec`], for a DaemonSet's template too (`daemon_set`).
fn normalised(spec: &Value, pod: Option<&Value>, daemon_set: bool) -> Value {
    let Some(spec) = spec.as_object() else {
        return spec.clone();
    };
    let mut spec = spec.clone();
    for field in ["priority", "preemptionPolicy", "overhead", "serviceAccount"] {
        spec.remove(field);
    }
    if pod.is_some() {
        for field in ["nodeName", "hostname", "subdomain"] {
            spec.remove(field);
        }
    }
    if spec.get("enableServiceLinks") == Some(&Value::Bool(true)) {
        spec.remove("enableServiceLinks");
    }
    if spec
        .get("serviceAccountName")
        .is_none_or(|n| n.is_null() || n == "")
    {
        spec.insert("serviceAccountName".into(), Value::from("default"));
    }
    retain(&mut spec, "tolerations", |t| {
        let added = t["key"]
            .as_str()
            .is_some_and(|k| NODE_CONDITION_TAINTS.contains(&k))
            && t["operator"] == "Exists"
            && t.get("value").is_none_or(|v| v.is_null() || v == "");
        !added
    });
    let token_automounted = spec.get("automountServiceAccountToken") != Some(&Value::Bool(false));
    let pod_name = pod.and_then(|p| p["metadata"]["name"].as_str());
    let added = |v: &Value| {
        (token_automounted && is_token_volume(v))
            || pod_name.is_some_and(|pod| {
                let name = v["name"].as_str().unwrap_or_default();
                v["persistentVolumeClaim"]["claimName"].as_str()
                    == Some(format!("{name}-{pod}").as_str())
            })
    };
    let tokens: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| token_automounted && is_token_volume(v))
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    retain(&mut spec, "volumes", |v| !added(v));
    if let Some(affinity) = spec.get_mut("affinity").and_then(Value::as_object_mut) {
        if let Some(node) = affinity
            .get_mut("nodeAffinity")
            .and_then(Value::as_object_mut)
        {
            // On a pod only the DaemonSet controller's pin; in a DaemonSet's template all of
            // it (its pods cannot show it); in any other template none, a tenant writes it.
            let left_out = match pod {
                Some(_) => node
                    .get("requiredDuringSchedulingIgnoredDuringExecution")
                    .is_some_and(is_daemon_set_pin),
                None => daemon_set,
            };
            if left_out {
                node.remove("requiredDuringSchedulingIgnoredDuringExecution");
            }
            if node.is_empty() {
                affinity.remove("nodeAffinity");
            }
        }
        if affinity.is_empty() {
            spec.remove("affinity");
        }
    }
    let host_network = spec.get("hostNetwork") == Some(&Value::Bool(true));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            // LimitRanger's defaults; which of the pod's resource claims (devices) a
            // container uses stays sealed.
            if let Some(resources) = container
                .get_mut("resources")
                .and_then(Value::as_object_mut)
            {
                resources.remove("limits");
                resources.remove("requests");
                if resources.is_empty() {
                    container.remove("resources");
                }
            }
            // Only the token's own mount, where the plugin puts it; a mount of that volume
            // anywhere else is the tenant's.
            retain(container, "volumeMounts", |m| {
                let token = m["name"]
                    .as_str()
                    .is_some_and(|n| tokens.iter().any(|t| t == n));
                let keys_ok = m.as_object().is_some_and(|m| {
                    m.keys()
                        .all(|k| ["name", "mountPath", "readOnly"].contains(&k.as_str()))
                });
                !(token && keys_ok && m["mountPath"] == TOKEN_MOUNT_PATH && m["readOnly"] == true)
            });
            if host_network
                && let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut)
            {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    if port.get("hostPort").is_some()
                        && port.get("hostPort") == port.get("containerPort")
                    {
                        port.remove("hostPort");
                    }
                }
            }
        }
    }
    Value::Object(spec)
}

/// Keeps the entries of the list at `field` that `keep` accepts; an emptied list goes.
fn retain(map: &mut Map<String, Value>, field: &str, keep: impl Fn(&Value) -> bool) {
    let Some(list) = map.get_mut(field).and_then(Value::as_array_mut) else {
        return;
    };
    let before = list.len();
    list.retain(|v| keep(v));
    if list.is_empty() && before > 0 {
        map.remove(field);
    }
}

/// JSON with object keys sorted and no whitespace: one text for one value, whatever order the
/// API server or a client wrote its keys in.
fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(&Value::from(key.as_str()), out);
                out.push(b':');
                canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sealed<'a>(content: &'a Value, reason: &'a str) -> Sealed<'a> {
        Sealed {
            kind: "apps/Deployment",
            namespace: "shop",
            approver: "alice",
            reason,
            expires: "2026-11-22T13:00:00Z",
            content,
        }
    }

    #[test]
    fn a_grant_verifies_for_what_it_sealed_and_nothing_else() {
        let keys = GrantKeys::from_secret(b"serving key one");
        let spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        let grant = keys.grant(&sealed(&spec, "INC-1")).unwrap();
        assert!(grant.starts_with("v1.YWxpY2U."), "{grant}");
        assert_eq!(
            keys.verify(&grant, &sealed(&spec, "INC-1")),
            Ok("alice".into())
        );
        let other = json!({"containers": [{"name": "c", "image": "busybox:evil"}]});
        assert_eq!(
            keys.verify(&grant, &sealed(&other, "INC-1")),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            keys.verify(&grant, &sealed(&spec, "INC-2")),
            Err(Invalid::Mismatch)
        );
        let mut elsewhere = sealed(&spec, "INC-1");
        elsewhere.namespace = "prod";
        assert_eq!(keys.verify(&grant, &elsewhere), Err(Invalid::Mismatch));
        let mut other_kind = sealed(&spec, "INC-1");
        other_kind.kind = "apps/DaemonSet";
        assert_eq!(keys.verify(&grant, &other_kind), Err(Invalid::Mismatch));
        // The approver is sealed: naming someone else in the grant breaks it.
        let forged = grant.replacen("YWxpY2U", &URL_SAFE_NO_PAD.encode("bob"), 1);
        assert_eq!(
            keys.verify(&forged, &sealed(&spec, "INC-1")),
            Err(Invalid::Mismatch)
        );
        for broken in [
            "",
            "v1",
            "v2.YWxpY2U.AAAA",
            "v1.YWxpY2U",
            "v1..AAAA",
            "v1.YWxpY2U.!!",
            "v1.a.b.c",
        ] {
            assert!(
                keys.verify(broken, &sealed(&spec, "INC-1")).is_err(),
                "{broken:?}"
            );
        }
        // Another key (another cluster, or two rotations later) does not verify it.
        let stranger = GrantKeys::from_secret(b"serving key two");
        assert_eq!(
            stranger.verify(&grant, &sealed(&spec, "INC-1")),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            GrantKeys::none().verify(&grant, &sealed(&spec, "INC-1")),
            Err(Invalid::NoKey)
        );
        assert!(GrantKeys::none().grant(&sealed(&spec, "INC-1")).is_none());
    }

    #[test]
    fn key_order_does_not_matter_and_the_previous_key_still_verifies() {
        let keys = GrantKeys::from_secret(b"one");
        let a = json!({"b": 1, "a": [true, null, "x"]});
        let b: Value = serde_json::from_str(r#"{"a":[true,null,"x"],"b":1}"#).unwrap();
        let grant = keys.grant(&sealed(&a, "r")).unwrap();
        assert!(keys.verify(&grant, &sealed(&b, "r")).is_ok());
        keys.install(b"one");
        assert!(
            keys.verify(&grant, &sealed(&a, "r")).is_ok(),
            "a reload is no rotation"
        );
        keys.install(b"two");
        assert!(
            keys.verify(&grant, &sealed(&a, "r")).is_ok(),
            "one rotation back"
        );
        let newer = keys.grant(&sealed(&a, "r")).unwrap();
        assert_ne!(newer, grant);
        keys.install(b"three");
        assert_eq!(
            keys.verify(&grant, &sealed(&a, "r")),
            Err(Invalid::Mismatch)
        );
        assert!(keys.verify(&newer, &sealed(&a, "r")).is_ok());
    }

    /// The token volume as the ServiceAccount admission plugin writes it.
    fn token_volume(name: &str) -> Value {
        json!({"name": name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
    }

    #[test]
    fn a_controllers_pod_compares_equal_to_its_template_and_nothing_else_is_left_out() {
        let template = json!({
            "containers": [{"name": "c", "image": "nginx", "resources": {"limits": {"cpu": "1"}},
                "securityContext": {"privileged": true}}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        });
        let mut pod = template.clone();
        pod["nodeName"] = json!("node-1");
        pod["priority"] = json!(0);
        pod["enableServiceLinks"] = json!(true);
        pod["serviceAccountName"] = json!("default");
        pod["serviceAccount"] = json!("default");
        pod["containers"][0]["resources"]["requests"] = json!({"cpu": "1"});
        pod["containers"][0]["volumeMounts"] = json!([{"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]);
        pod["volumes"]
            .as_array_mut()
            .unwrap()
            .push(token_volume("kube-api-access-x1"));
        pod["tolerations"].as_array_mut().unwrap().push(json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        let object = json!({"metadata": {"name": "web-5d8f-x1"}});
        assert_eq!(
            approved_pod_spec(&pod, Some(&object)),
            approved_pod_spec(&template, None)
        );

        // What the Pod Security Standards judge is never left out.
        for (path, value) in [
            ("/containers/0/securityContext/privileged", json!(false)),
            ("/containers/0/image", json!("nginx:other")),
            (
                "/volumes/0",
                json!({"name": "data", "hostPath": {"path": "/"}}),
            ),
            (
                "/tolerations/0/key",
                json!("node-role.kubernetes.io/control-plane"),
            ),
            ("/serviceAccountName", json!("admin")),
            ("/hostNetwork", json!(true)),
        ] {
            let mut changed = template.clone();
            match changed.pointer_mut(path) {
                Some(slot) => *slot = value,
                None => {
                    changed[path.trim_start_matches('/')] = value;
                }
            }
            assert_ne!(
                approved_pod_spec(&changed, None),
                approved_pod_spec(&template, None),
                "{path}"
            );
        }
        // A container's resource claims (devices) are sealed, its limits and requests not.
        let mut claims = template.clone();
        claims["containers"][0]["resources"]["claims"] = json!([{"name": "gpu"}]);
        assert_ne!(
            approved_pod_spec(&claims, None),
            approved_pod_spec(&template, None)
        );
        // A projected volume named like the token volume is left out only with that name.
        let mut renamed = template.clone();
        renamed["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "tokens", "projected": {"sources": []}}));
        assert_ne!(
            approved_pod_spec(&renamed, None),
            approved_pod_spec(&template, None)
        );
    }

    #[test]
    fn only_a_pods_own_scheduling_results_and_claims_are_left_out() {
        let template = json!({"containers": [{"name": "c", "image": "i",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]});
        let mut pod = template.clone();
        pod["nodeName"] = json!("node-1");
        pod["hostname"] = json!("web-0");
        pod["subdomain"] = json!("web");
        pod["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}]);
        let object = json!({"metadata": {"name": "web-0"}});
        assert_eq!(
            approved_pod_spec(&pod, Some(&object)),
            approved_pod_spec(&template, None)
        );
        // In a template, where a tenant writes them, they are sealed.
        assert_ne!(
            approved_pod_spec(&pod, None),
            approved_pod_spec(&template, None)
        );
        // A claim not named after the pod is the tenant's.
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!("mine");
        assert_ne!(
            approved_pod_spec(&pod, Some(&object)),
            approved_pod_spec(&template, None)
        );
        // The token volume only as the plugin writes it, only at its own path, and not where
        // the pod turns the token off.
        let with_token = |volume: Value, mount_path: &str, spec: &Value| {
            let mut spec = spec.clone();
            spec["volumes"] = json!([volume]);
            spec["containers"][0]["volumeMounts"] = json!([{"name": "kube-api-access-x",
                "mountPath": mount_path, "readOnly": true}]);
            spec
        };
        let bare = json!({"containers": [{"name": "c", "image": "i"}]});
        let token = token_volume("kube-api-access-x");
        assert_eq!(
            approved_pod_spec(&with_token(token.clone(), TOKEN_MOUNT_PATH, &bare), None),
            approved_pod_spec(&bare, None)
        );
        assert_ne!(
            approved_pod_spec(&with_token(token.clone(), "/bin", &bare), None),
            approved_pod_spec(&bare, None)
        );
        let mut secret = token.clone();
        secret["projected"]["sources"]
            .as_array_mut()
            .unwrap()
            .push(json!({"secret": {"name": "db"}}));
        let mut audience = token.clone();
        audience["projected"]["sources"][0]["serviceAccountToken"]["audience"] = json!("vault");
        let mut ca = token;
        ca["projected"]["sources"][1]["configMap"]["items"] =
            json!([{"key": "payload", "path": "ca.crt"}]);
        for volume in [secret, audience, ca] {
            assert_ne!(
                approved_pod_spec(&with_token(volume, TOKEN_MOUNT_PATH, &bare), None),
                approved_pod_spec(&bare, None)
            );
        }
        let mut off = bare.clone();
        off["automountServiceAccountToken"] = json!(false);
        assert_ne!(
            approved_pod_spec(
                &with_token(token_volume("kube-api-access-x"), TOKEN_MOUNT_PATH, &off),
                None
            ),
            approved_pod_spec(&off, None)
        );
    }

    #[test]
    fn a_pods_annotations_are_sealed_but_break_glass_and_kubernetes_own_are_not() {
        let template = json!({"metadata": {"annotations": {"a": "1", "palisade.dev/break-glass": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let sealed = approved_content(&json!({}), Some(&template));
        let mut restarted = template.clone();
        restarted["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = json!("now");
        restarted["metadata"]["annotations"][GRANT] = json!("v1.x.y");
        assert_eq!(approved_content(&json!({}), Some(&restarted)), sealed);
        let mut unconfined = template.clone();
        unconfined["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/c"] =
            json!("unconfined");
        assert_ne!(approved_content(&json!({}), Some(&unconfined)), sealed);
        let mut relabelled = template;
        relabelled["metadata"]["labels"] = json!({"mtls": "off"});
        assert_ne!(
            approved_content(&json!({}), Some(&relabelled)),
            sealed,
            "labels are sealed"
        );
        // But not those the controllers add to what they make.
        let mut hashed = relabelled.clone();
        hashed["metadata"]["labels"]["pod-template-hash"] = json!("5d8f");
        hashed["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = json!("1");
        assert_eq!(
            approved_content(&json!({}), Some(&hashed)),
            approved_content(&json!({}), Some(&relabelled))
        );
    }

    #[test]
    fn other_kinds_seal_everything_but_metadata_and_status_and_their_labels() {
        let ns = json!({"metadata": {"name": "a", "labels": {"x": "1"}, "resourceVersion": "1"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let mut later = ns.clone();
        later["metadata"]["resourceVersion"] = json!("2");
        later["status"]["phase"] = json!("Terminating");
        assert_eq!(approved_content(&ns, None), approved_content(&later, None));
        later["metadata"]["labels"]["x"] = json!("2");
        assert_ne!(approved_content(&ns, None), approved_content(&later, None));
    }
}
