//! The admission wire format (`admission.k8s.io/v1` AdmissionReview in and out) and the one
//! request model that the webhook, the CLI and the audit all decide on.
//!
//! [`decode`] reads an AdmissionReview body into a [`Review`] (a bare object from a file or the
//! cluster becomes one through [`Review::from_object`]); a [`Response`] is the answer, and
//! [`Response::encode`] puts it on the wire. [`DecodeError`] says why a body cannot be answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::object::ObjectRef;

/// The only AdmissionReview version Palisade reads and writes (`admissionReviewVersions: ["v1"]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The `kind` of an AdmissionReview, in and out.
pub const KIND: &str = "AdmissionReview";

/// Which webhook endpoint a review came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Endpoint {
    /// The validating webhook (`/validate`): constraints judge the object.
    Validate,
    /// The mutating webhook (`/mutate`): mutators patch the object.
    Mutate,
}

impl Endpoint {
    /// The endpoint's name in logs and metrics: `validate` or `mutate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// What the API server is doing to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// The object is being created.
    Create,
    /// The object is being changed: `oldObject` is what it was.
    Update,
    /// The object is being deleted: the API server sends it as `oldObject` only.
    Delete,
    /// A connection to a subresource (`pods/exec`, `pods/attach`, `pods/portforward`, a proxy): no
    /// object, only the options as `object`, if any.
    Connect,
}

impl Operation {
    /// The operation as the AdmissionRequest spells it: `CREATE`, `UPDATE`, `DELETE`, `CONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Where the object under review comes from, as Gatekeeper's `match.source` tells them apart:
/// the object itself, or a resultant that an ExpansionTemplate made of a workload
/// ([`crate::expansion`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Source {
    /// The object as it was sent or read.
    #[default]
    Original,
    /// A resultant of an ExpansionTemplate (a workload's pod, for instance).
    Generated,
}

/// Who sent the request, as the API server authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UserInfo {
    /// The authenticated user's name (`system:serviceaccount:<namespace>:<name>` for a service
    /// account).
    pub username: String,
    /// The groups the user is in, as the API server resolved them (`system:authenticated`, …).
    pub groups: Vec<String>,
}

/// Why a body is not an AdmissionReview we can answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body does not parse as JSON.
    #[error("body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The request does not read as an AdmissionRequest: the deserialiser's message, with the
    /// values it would quote left out.
    #[error("request is not a valid admission.k8s.io/v1 AdmissionRequest: {0}")]
    Request(String),
    /// Another `apiVersion` than `admission.k8s.io/v1` (the found one).
    #[error(
        "apiVersion is {0:?}, expected \"admission.k8s.io/v1\": set admissionReviewVersions: [\"v1\"] in the webhook configuration"
    )]
    ApiVersion(String),
    /// Another `kind` than `AdmissionReview` (the found one).
    #[error("kind is {0:?}, expected \"AdmissionReview\"")]
    Kind(String),
    /// `request` is missing or null.
    #[error("AdmissionReview has no request: the API server always sends one")]
    NoRequest,
    /// `request.uid` is empty.
    #[error("AdmissionReview request.uid is empty: the response must echo it")]
    EmptyUid,
    /// A hand-written test request with neither `object` nor `oldObject`.
    #[error(
        "AdmissionRequest has neither object nor oldObject: give the object under review as request.object (request.oldObject on DELETE)"
    )]
    NoObject,
    /// `object` or `oldObject` is not a mapping (`object` may be absent only on CONNECT).
    #[error(
        "AdmissionReview request.{field} is {found}, expected the object under review (a mapping): the API server sends request.object on CREATE and UPDATE, request.oldObject on DELETE"
    )]
    NotAnObject {
        /// `object` or `oldObject`.
        field: &'static str,
        /// The JSON type found instead (`string`, `array`, …).
        found: &'static str,
    },
}

/// The typed part of an AdmissionRequest. Read from the JSON without copying the objects, which
/// stay JSON for the policies.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    uid: String,
    kind: Gvk,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    kind: String,
}

/// One object under review: an API server's AdmissionRequest, or a bare object from a file or
/// the cluster (no operation, no user). Policies see its JSON as `input.review`.
#[derive(Debug, Clone)]
pub struct Review {
    uid: String,
    object_ref: ObjectRef,
    operation: Option<Operation>,
    dry_run: bool,
    user: UserInfo,
    json: Value,
    source: Source,
}

impl Review {
    /// Reads an AdmissionRequest's JSON. On DELETE, `object` becomes the old object, as
    /// Gatekeeper presents it to policies.
    pub fn from_request_json(json: Value) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_path_to_error::deserialize(&json)
            .map_err(|e| DecodeError::Request(without_values(&e.to_string())))?;
        if envelope.uid.is_empty() {
            return Err(DecodeError::EmptyUid);
        }
        Self::with_envelope(envelope, json)
    }

    /// Reads an AdmissionRequest written by hand for a test, as gator reads one: `uid` may be
    /// missing or empty (nothing echoes it), and `kind` may be missing, in which case the
    /// object's own `apiVersion` and `kind` say what it is (Gatekeeper matches on those) while
    /// policies see the request's zero-valued `kind`, as gator gives them. The request still
    /// needs an `object` or `oldObject` and an `operation`. The webhook never reads requests
    /// this way: the API server always sends both fields.
    pub fn from_test_request_json(mut json: Value) -> Result<Self, DecodeError> {
        let Some(request) = json.as_object_mut() else {
            return Err(DecodeError::Request(format!(
                "expected a mapping, found {}",
                crate::object::json_type(&json)
            )));
        };
        if request.get("uid").is_none_or(Value::is_null) {
            request.insert("uid".into(), Value::from(""));
        }
        let given_kind = request.get("kind").is_some_and(|k| !k.is_null());
        if !given_kind {
            request.insert(
                "kind".into(),
                serde_json::json!({"group": "", "version": "", "kind": ""}),
            );
        }
        let mut envelope: Envelope = serde_path_to_error::deserialize(&json)
            .map_err(|e| DecodeError::Request(without_values(&e.to_string())))?;
        if !given_kind {
            let of = if json["object"].is_object() {
                &json["object"]
            } else {
                &json["oldObject"]
            };
            let described = ObjectRef::of(of);
            envelope.kind = Gvk {
                group: described.group,
                version: described.version,
                kind: described.kind,
            };
        }
        if json["object"].is_null() && json["oldObject"].is_null() {
            return Err(DecodeError::NoObject);
        }
        Self::with_envelope(envelope, json)
    }

    fn with_envelope(envelope: Envelope, mut json: Value) -> Result<Self, DecodeError> {
        if envelope.operation == Operation::Delete && json["object"].is_null() {
            json["object"] = json["oldObject"].clone();
        }
        // Policies read these as objects; anything else would read as "no field set", which
        // lets the object in. CONNECT carries an options object, or none.
        for field in ["object", "oldObject"] {
            let value = &json[field];
            let required = field == "object" && envelope.operation != Operation::Connect;
            if !(value.is_object() || (value.is_null() && !required)) {
                return Err(DecodeError::NotAnObject {
                    field,
                    found: crate::object::json_type(value),
                });
            }
        }
        let object = &json["object"];
        let or_object = |given: Option<String>, field: &str| match given {
            Some(s) if !s.is_empty() => s,
            _ => object["metadata"][field]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let object_ref = ObjectRef {
            group: envelope.kind.group,
            version: envelope.kind.version,
            kind: envelope.kind.kind,
            name: or_object(envelope.name, "name"),
            namespace: or_object(envelope.namespace, "namespace"),
        };
        Ok(Self {
            uid: envelope.uid,
            object_ref,
            operation: Some(envelope.operation),
            dry_run: envelope.dry_run.unwrap_or(false),
            user: envelope.user_info,
            json,
            source: Source::Original,
        })
    }

    /// A review of a bare object (CLI, audit): no operation and no userInfo.
    pub fn from_object(object: Value) -> Self {
        let object_ref = ObjectRef::of(&object);
        let json = serde_json::json!({
            "kind": {"group": object_ref.group, "version": object_ref.version, "kind": object["kind"].clone()},
            "name": object["metadata"]["name"].clone(),
            "namespace": object["metadata"]["namespace"].clone(),
            "object": object,
        });
        Self {
            uid: String::new(),
            object_ref,
            operation: None,
            dry_run: false,
            user: UserInfo::default(),
            json,
            source: Source::Original,
        }
    }

    /// A resultant of workload expansion, reviewed as Gatekeeper reviews one: the bare object
    /// with the parent's operation (on DELETE as the old object too), no userInfo, source
    /// `Generated`.
    pub fn resultant(object: Value, operation: Option<Operation>) -> Self {
        let mut review = Self::from_object(object);
        review.source = Source::Generated;
        if let Some(op) = operation {
            review.operation = Some(op);
            review.json["operation"] = Value::from(op.as_str());
            if op == Operation::Delete {
                review.json["oldObject"] = review.json["object"].clone();
            }
        }
        review
    }

    /// Whether the object is the one under review or a resultant of expansion.
    pub fn source(&self) -> Source {
        self.source
    }

    /// A bare object presented as if it were being created (the offline audit): operation
    /// CREATE, still no userInfo.
    pub fn as_created(object: Value) -> Self {
        let mut review = Self::from_object(object);
        review.operation = Some(Operation::Create);
        review.json["operation"] = Value::from(Operation::Create.as_str());
        review
    }

    /// What policies see as `input.review`.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The request's `uid`, which the answer echoes; empty for a bare object.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Group, version, kind, namespace and name of the object under review.
    pub fn object_ref(&self) -> &ObjectRef {
        &self.object_ref
    }

    /// `None` for a bare object.
    pub fn operation(&self) -> Option<Operation> {
        self.operation
    }

    /// The request's `dryRun`: the API server will not persist the change. False for a bare object.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Who sent the request; empty for a bare object and a resultant.
    pub fn user(&self) -> &UserInfo {
        &self.user
    }

    /// The object under review (the old object on DELETE).
    pub fn object(&self) -> &Value {
        &self.json["object"]
    }

    /// `oldObject`: the object before an UPDATE, and the object itself on DELETE. `Null` where
    /// there is none (CREATE, a bare object).
    pub fn old_object(&self) -> &Value {
        &self.json["oldObject"]
    }

    /// The object under review, to change in place (the mutators' working copy of a review).
    pub(crate) fn object_mut(&mut self) -> &mut Value {
        &mut self.json["object"]
    }

    /// The object under review, taken out of it.
    pub(crate) fn into_object(mut self) -> Value {
        self.json["object"].take()
    }

    /// The subresource under review (`ephemeralcontainers` for `pods/ephemeralcontainers`);
    /// empty for the resource itself.
    pub fn sub_resource(&self) -> &str {
        self.json["subResource"].as_str().unwrap_or_default()
    }

    /// The Namespace object the API server sent with the review, if any.
    pub fn namespace_object(&self) -> Option<&Value> {
        Some(&self.json["namespaceObject"]).filter(|v| v.is_object())
    }

    /// Sets the old object (tests of UPDATE matching).
    #[cfg(test)]
    pub(crate) fn set_old_object(&mut self, old: Value) {
        self.json["oldObject"] = old;
    }
}

/// A serde error message without the values it quotes (`invalid type: string "…", expected a
/// boolean` becomes `invalid type: string, expected a boolean`): an answer or a log line must not
/// echo what a request carried, which may be a Secret's data.
fn without_values(message: &str) -> String {
    let mut out = message.to_owned();
    for marker in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(at) = out.find(marker) else {
            continue;
        };
        let from = at + marker.len();
        let Some(to) = out.rfind(", expected ").filter(|&to| to >= from) else {
            continue;
        };
        let quoted = &out[from..to];
        let kind = if marker == "unknown variant " {
            ""
        } else {
            [
                "string",
                "integer",
                "floating point",
                "boolean",
                "char",
                "map",
                "sequence",
            ]
            .into_iter()
            .find(|k| quoted.starts_with(k))
            .unwrap_or("value")
        };
        out = format!("{}{}{}", &out[..from], kind, &out[to..]);
        out = out.replace("unknown variant , expected", "unknown variant, expected");
    }
    out
}

/// Parses and checks an AdmissionReview body.
pub fn decode(body: &[u8]) -> Result<Review, DecodeError> {
    let mut root: Value = serde_json::from_slice(body)?;
    let api_version = root["apiVersion"].as_str().unwrap_or_default();
    if api_version != API_VERSION {
        return Err(DecodeError::ApiVersion(api_version.to_owned()));
    }
    let kind = root["kind"].as_str().unwrap_or_default();
    if kind != KIND {
        return Err(DecodeError::Kind(kind.to_owned()));
    }
    let json = root
        .get_mut("request")
        .filter(|r| !r.is_null())
        .map(Value::take)
        .ok_or(DecodeError::NoRequest)?;
    Review::from_request_json(json)
}

/// The answer to one review, before it is put on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Admit the object (with the patch, if any).
    pub allowed: bool,
    /// Shown to the user when denied.
    pub message: String,
    /// HTTP-style status code carried in the response status when denied.
    pub code: u16,
    /// Warnings shown to the user whatever the answer (`kubectl` prints them).
    pub warnings: Vec<String>,
    /// The JSON patch the mutating webhook answers with; `None` where nothing changes.
    pub patch: Option<json_patch::Patch>,
    /// Annotations of the API server's audit event; it prefixes each key with the webhook's name.
    pub audit_annotations: BTreeMap<String, String>,
}

impl Response {
    /// Admit, with code 200 and nothing else.
    pub fn allow() -> Self {
        Self {
            allowed: true,
            message: String::new(),
            code: 200,
            warnings: Vec::new(),
            patch: None,
            audit_annotations: BTreeMap::new(),
        }
    }

    /// Refuse with `message`, with code 403 (`Forbidden`).
    pub fn deny(message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            message: message.into(),
            code: 403,
            ..Self::allow()
        }
    }

    /// Whether the answer carries a non-empty patch.
    pub fn is_patched(&self) -> bool {
        self.allowed && self.patch.as_ref().is_some_and(|p| !p.0.is_empty())
    }

    /// The AdmissionReview the API server expects, echoing `uid`. The patch is base64 JSON, as
    /// the API server reads Go's `[]byte`.
    pub fn encode(&self, uid: &str) -> Vec<u8> {
        use base64::Engine as _;
        let status = (!self.allowed).then(|| WireStatus {
            code: self.code,
            message: &self.message,
            reason: if self.code == 403 {
                "Forbidden"
            } else {
                "InternalError"
            },
        });
        let patch = self
            .is_patched()
            .then(|| serde_json::to_vec(&self.patch).unwrap_or_default())
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
        let review = WireReview {
            api_version: API_VERSION,
            kind: KIND,
            response: WireResponse {
                uid,
                allowed: self.allowed,
                status,
                warnings: &self.warnings,
                audit_annotations: &self.audit_annotations,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
            },
        };
        // Strings, booleans and maps of strings always serialise.
        serde_json::to_vec(&review).unwrap_or_default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WireStatus<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

#[derive(Serialize)]
struct WireStatus<'a> {
    code: u16,
    message: &'a str,
    reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = include_str!("../../tests/data/admission/validate-create-pod.json");

    fn encoded(rsp: &Response, uid: &str) -> Value {
        serde_json::from_slice(&rsp.encode(uid)).unwrap()
    }

    /// gator's form of a hand-written request (the gatekeeper-library's update.yaml cases): the
    /// CLI reads it, the webhook's decoder still refuses it.
    #[test]
    fn a_test_request_may_leave_out_uid_and_kind() {
        let request = serde_json::json!({
            "operation": "UPDATE",
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}},
            "oldObject": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}},
        });
        let review = Review::from_test_request_json(request.clone()).unwrap();
        let of = review.object_ref();
        assert_eq!(
            (of.group.as_str(), of.version.as_str(), of.kind.as_str()),
            ("apps", "v1", "Deployment")
        );
        assert_eq!((of.namespace.as_str(), of.name.as_str()), ("shop", "web"));
        assert_eq!(review.operation(), Some(Operation::Update));
        // Policies see what gator gives them: the request's kind, zero-valued.
        assert_eq!(review.json()["kind"]["kind"], "");
        assert_eq!(review.uid(), "");

        for strict in [
            Review::from_request_json(request.clone()),
            Review::from_request_json({
                let mut r = request.clone();
                r["uid"] = "u".into();
                r
            }),
        ] {
            assert!(strict.is_err(), "the webhook's decoder stays strict");
        }
    }

    #[test]
    fn a_test_request_without_kind_is_read_from_the_old_object_on_delete() {
        let review = Review::from_test_request_json(serde_json::json!({
            "operation": "DELETE",
            "oldObject": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"}},
        }))
        .unwrap();
        assert_eq!(review.object_ref().kind, "Pod");
        assert_eq!(review.object()["metadata"]["name"], "p");
        // A given kind is kept, even when the object says otherwise.
        let review = Review::from_test_request_json(serde_json::json!({
            "uid": "x", "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}},
        }))
        .unwrap();
        assert_eq!(review.object_ref().kind, "Pod");
    }

    #[test]
    fn a_test_request_still_needs_an_object_an_operation_and_a_mapping() {
        for (request, says) in [
            (
                serde_json::json!({"operation": "CREATE"}),
                "neither object nor oldObject",
            ),
            (
                serde_json::json!({"object": {"apiVersion": "v1", "kind": "Pod"}}),
                "operation",
            ),
            (
                serde_json::json!({"operation": "CREATE", "object": "Pod"}),
                "request.object is a string",
            ),
            (serde_json::json!(["CREATE"]), "expected a mapping"),
        ] {
            let error = Review::from_test_request_json(request.clone())
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{request}: {error}");
        }
    }

    #[test]
    fn decodes_a_real_review() {
        let review = decode(POD.as_bytes()).unwrap();
        assert_eq!(review.operation(), Some(Operation::Create));
        assert_eq!(review.object_ref().kind, "Pod");
        assert_eq!(review.uid(), "d7a92b16-d0be-465c-943c-d6b9d76ed064");
        assert_eq!(review.object_ref().namespace, "payments");
        assert_eq!(review.object_ref().name, "web");
        assert_eq!(review.user().username, "admin");
    }

    #[test]
    fn delete_reviews_present_the_old_object() {
        let body = include_str!("../../tests/data/admission/validate-delete-networkpolicy.json");
        let review = decode(body.as_bytes()).unwrap();
        assert_eq!(review.object()["metadata"]["name"], "default-deny-all");
        assert_eq!(review.object(), review.old_object());
        assert_eq!(review.object_ref().name, "default-deny-all");
    }

    #[test]
    fn a_namespace_is_its_own_effective_namespace() {
        let body = include_str!("../../tests/data/admission/validate-create-namespace.json");
        let review = decode(body.as_bytes()).unwrap();
        assert!(review.object_ref().is_namespace());
        assert_eq!(review.object_ref().effective_namespace(), "payments");
    }

    #[test]
    fn bare_objects_have_no_operation() {
        let review = Review::from_object(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "shop"}
        }));
        let r = review.object_ref();
        assert_eq!(
            (r.group.as_str(), r.kind.as_str()),
            ("networking.k8s.io", "NetworkPolicy")
        );
        assert_eq!(review.json()["kind"]["version"], "v1");
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "deny"));
        assert_eq!(review.operation(), None);
        assert!(review.json().get("userInfo").is_none());
    }

    #[test]
    fn rejects_v1beta1() {
        let body = POD.replace("admission.k8s.io/v1\"", "admission.k8s.io/v1beta1\"");
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::ApiVersion(ref v) if v == "admission.k8s.io/v1beta1"));
        assert!(err.to_string().contains("admissionReviewVersions"));
    }

    #[test]
    fn a_bad_operation_names_the_field_and_the_values_expected() {
        let body = POD.replace("\"CREATE\"", "\"EXPLODE\"");
        let err = decode(body.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("operation: unknown variant, expected one of")
                && err.contains("CREATE")
                && !err.contains("EXPLODE"),
            "{err}"
        );
    }

    #[test]
    fn denial_carries_uid_code_and_message() {
        let rsp = encoded(&Response::deny("no"), "u-1");
        assert_eq!(rsp["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(rsp["kind"], "AdmissionReview");
        let rsp = &rsp["response"];
        assert_eq!(rsp["uid"], "u-1");
        assert_eq!(rsp["allowed"], false);
        assert_eq!(rsp["status"]["code"], 403);
        assert_eq!(rsp["status"]["reason"], "Forbidden");
        assert_eq!(rsp["status"]["message"], "no");
    }

    #[test]
    fn a_patch_goes_out_as_base64_with_its_type() {
        use base64::Engine as _;
        let mut decision = Response::allow();
        let ops =
            serde_json::json!([{"op": "add", "path": "/metadata/labels/mtls", "value": "strict"}]);
        decision.patch = Some(serde_json::from_value(ops.clone()).unwrap());
        let rsp = &encoded(&decision, "u")["response"];
        assert_eq!(rsp["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(
                rsp["patch"]
                    .as_str()
                    .expect("patch must be a base64 string"),
            )
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            ops
        );
    }

    #[test]
    fn patch_is_encoded_only_when_not_empty() {
        let mut decision = Response::allow();
        decision.patch = Some(json_patch::Patch(vec![]));
        let rsp = &encoded(&decision, "u")["response"];
        assert!(rsp.get("patchType").is_none());
        assert!(rsp.get("patch").is_none());
        assert!(rsp.get("status").is_none());
    }

    #[test]
    fn decode_errors_name_the_field_but_never_echo_its_value() {
        let cases = [
            (
                r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Secret"},"operation":"CREATE","dryRun":"hunter2","object":{}}"#,
                "dryRun: invalid type: string, expected a boolean",
            ),
            (
                r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Secret"},"operation":"hunter2","object":{}}"#,
                "operation: unknown variant, expected one of",
            ),
            (
                r#"{"uid":4242,"kind":{"group":"","version":"v1","kind":"Secret"},"operation":"CREATE","object":{}}"#,
                "uid: invalid type: integer, expected a string",
            ),
        ];
        for (request, expected) in cases {
            let err = Review::from_request_json(serde_json::from_str(request).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("hunter2") && !err.contains("4242"), "{err}");
        }
    }
}
