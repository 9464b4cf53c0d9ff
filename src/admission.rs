//! AdmissionReview decoding, the `decide` seam and response building.
//!
//! The HTTP server, the CLI and the audit all go through [`Decider::decide`], so they cannot
//! disagree about a decision.

use std::collections::HashMap;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use serde::Deserialize;

pub use kube::core::admission::{META_API_VERSION_V1, META_KIND};

pub type Request = AdmissionRequest<DynamicObject>;

/// Which webhook endpoint a review came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// Why a body is not an AdmissionReview we can answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("request is not a valid admission.k8s.io/v1 AdmissionRequest: {0}")]
    Request(serde_json::Error),
    #[error(
        "apiVersion is {0:?}, expected \"admission.k8s.io/v1\": set admissionReviewVersions: [\"v1\"] in the webhook configuration"
    )]
    ApiVersion(String),
    #[error("kind is {0:?}, expected \"AdmissionReview\"")]
    Kind(String),
    #[error("AdmissionReview has no request: the API server always sends one")]
    NoRequest,
    #[error("AdmissionReview request.uid is empty: the response must echo it")]
    EmptyUid,
}

/// A review as every decider sees it: the AdmissionRequest as JSON, which is what policies get
/// as `input.review`. Built from an API server request, or from a bare object by the CLI.
#[derive(Debug, Clone)]
pub struct Review {
    json: serde_json::Value,
}

impl Review {
    /// Wraps an AdmissionRequest's JSON. On DELETE, `object` becomes the old object, as
    /// Gatekeeper presents it to policies.
    pub fn from_request_json(mut json: serde_json::Value) -> Self {
        if json["operation"] == "DELETE" && json["object"].is_null() {
            json["object"] = json["oldObject"].clone();
        }
        Self { json }
    }

    /// A review of a bare object (CLI, audit): no operation and no userInfo.
    pub fn from_object(object: serde_json::Value) -> Self {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let json = serde_json::json!({
            "kind": {"group": group, "version": version, "kind": object["kind"].clone()},
            "name": object["metadata"]["name"].clone(),
            "namespace": object["metadata"]["namespace"].clone(),
            "object": object,
        });
        Self { json }
    }

    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    pub fn json_mut(&mut self) -> &mut serde_json::Value {
        &mut self.json
    }

    pub fn group(&self) -> &str {
        self.json["kind"]["group"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.json["kind"]["kind"].as_str().unwrap_or_default()
    }

    pub fn operation(&self) -> Option<&str> {
        self.json["operation"].as_str()
    }

    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or_default()
    }

    /// The object under review (the old object on DELETE).
    pub fn object(&self) -> &serde_json::Value {
        &self.json["object"]
    }

    pub fn old_object(&self) -> &serde_json::Value {
        &self.json["oldObject"]
    }

    /// Name of the object: the request's, else the object's.
    pub fn name(&self) -> &str {
        match self.json["name"].as_str() {
            Some(n) if !n.is_empty() => n,
            _ => self.object()["metadata"]["name"]
                .as_str()
                .unwrap_or_default(),
        }
    }

    /// The namespace the object lives in ("" for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        match self.json["namespace"].as_str() {
            Some(n) if !n.is_empty() => n,
            _ => self.object()["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default(),
        }
    }

    /// Whether the object is a core/v1 Namespace.
    pub fn is_namespace(&self) -> bool {
        self.kind() == "Namespace" && self.group().is_empty()
    }

    /// The namespace that exemptions and namespace matchers consider: a Namespace's own name.
    pub fn effective_namespace(&self) -> &str {
        if self.is_namespace() {
            self.name()
        } else {
            self.namespace()
        }
    }
}

/// Parses and checks an AdmissionReview body: the typed request envelope (for the response; its
/// `object` and `oldObject` are left empty) and the review policies see.
pub fn decode(body: &[u8]) -> Result<(Request, Review), DecodeError> {
    let mut root: serde_json::Value = serde_json::from_slice(body)?;
    let api_version = root["apiVersion"].as_str().unwrap_or_default();
    if api_version != META_API_VERSION_V1 {
        return Err(DecodeError::ApiVersion(api_version.to_owned()));
    }
    let kind = root["kind"].as_str().unwrap_or_default();
    if kind != META_KIND {
        return Err(DecodeError::Kind(kind.to_owned()));
    }
    let mut json = root
        .get_mut("request")
        .filter(|r| !r.is_null())
        .map(serde_json::Value::take)
        .ok_or(DecodeError::NoRequest)?;
    // The typed request is the envelope the response needs (uid, kind, operation); the objects,
    // the bulk of a review, stay JSON for the policies instead of being copied into it.
    let object = json.get_mut("object").map(serde_json::Value::take);
    let old_object = json.get_mut("oldObject").map(serde_json::Value::take);
    let typed = Request::deserialize(&json);
    if let Some(o) = object {
        json["object"] = o;
    }
    if let Some(o) = old_object {
        json["oldObject"] = o;
    }
    let mut request = typed.map_err(DecodeError::Request)?;
    if request.uid.is_empty() {
        return Err(DecodeError::EmptyUid);
    }
    request.types = kube::core::TypeMeta {
        api_version: META_API_VERSION_V1.to_owned(),
        kind: META_KIND.to_owned(),
    };
    Ok((request, Review::from_request_json(json)))
}

/// The outcome of one review.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Shown to the user when denied.
    pub message: String,
    /// HTTP-style status code carried in the response status when denied.
    pub code: u16,
    pub warnings: Vec<String>,
    pub patch: Option<json_patch::Patch>,
    pub audit_annotations: HashMap<String, String>,
}

impl Decision {
    pub fn allow() -> Self {
        Self {
            allowed: true,
            message: String::new(),
            code: 200,
            warnings: Vec::new(),
            patch: None,
            audit_annotations: HashMap::new(),
        }
    }

    pub fn deny(message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            message: message.into(),
            code: 403,
            ..Self::allow()
        }
    }

    /// Turns the decision into the response for `request`, which carries its uid.
    pub fn into_response(self, request: &Request) -> AdmissionResponse {
        let mut rsp = AdmissionResponse::from(request);
        rsp.allowed = self.allowed;
        if !self.allowed {
            rsp.result.code = self.code;
            rsp.result.message = self.message;
            rsp.result.reason = if self.code == 403 {
                "Forbidden".to_owned()
            } else {
                "InternalError".to_owned()
            };
        }
        if !self.warnings.is_empty() {
            rsp.warnings = Some(self.warnings);
        }
        rsp.audit_annotations = self.audit_annotations;
        match self.patch {
            Some(patch) if self.allowed && !patch.0.is_empty() => {
                match rsp.clone().with_patch(patch) {
                    Ok(patched) => patched,
                    // A patch of JSON values always serialises; if it ever did not, fail closed.
                    Err(error) => AdmissionResponse::from(request)
                        .deny(format!("palisade could not encode its patch: {error}")),
                }
            }
            _ => rsp,
        }
    }
}

/// The seam the policy engine fills: one decoded review in, one decision out.
pub trait Decider: Send + Sync + 'static {
    fn decide(&self, endpoint: Endpoint, review: &Review) -> Decision;
}

/// Serialises a response as the AdmissionReview the API server expects.
///
/// kube-core serialises `patch` (a `Vec<u8>`) as a JSON array of numbers; the API server reads
/// it as Go's `[]byte`, a base64 string. So the patch is written here, base64-encoded.
pub fn encode_response(mut rsp: AdmissionResponse) -> Vec<u8> {
    use base64::Engine as _;
    let patch = rsp.patch.take();
    let mut review = rsp.into_review();
    review.types.api_version = META_API_VERSION_V1.to_owned();
    review.types.kind = META_KIND.to_owned();
    // Serialising plain data (strings, bools, maps) cannot fail.
    let mut json = serde_json::to_value(&review).unwrap_or_default();
    if let Some(patch) = patch {
        json["response"]["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    serde_json::to_vec(&json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = include_str!("../tests/fixtures/admission/validate-create-pod.json");

    #[test]
    fn decodes_a_real_review() {
        let (request, review) = decode(POD.as_bytes()).unwrap();
        assert_eq!(request.operation, kube::core::admission::Operation::Create);
        assert_eq!(review.kind(), "Pod");
        assert_eq!(review.uid(), request.uid);
        assert_eq!(review.namespace(), "payments");
        assert_eq!(review.name(), "web");
        assert_eq!(review.operation(), Some("CREATE"));
    }

    #[test]
    fn delete_reviews_present_the_old_object() {
        let body = include_str!("../tests/fixtures/admission/validate-delete-networkpolicy.json");
        let (_, review) = decode(body.as_bytes()).unwrap();
        assert_eq!(review.object()["metadata"]["name"], "default-deny-all");
        assert_eq!(review.object(), review.old_object());
    }

    #[test]
    fn a_namespace_is_its_own_effective_namespace() {
        let body = include_str!("../tests/fixtures/admission/validate-create-namespace.json");
        let (_, review) = decode(body.as_bytes()).unwrap();
        assert!(review.is_namespace());
        assert_eq!(review.effective_namespace(), "payments");
    }

    #[test]
    fn bare_objects_have_no_operation() {
        let review = Review::from_object(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "shop"}
        }));
        assert_eq!(
            (review.group(), review.kind()),
            ("networking.k8s.io", "NetworkPolicy")
        );
        assert_eq!(review.json()["kind"]["version"], "v1");
        assert_eq!((review.namespace(), review.name()), ("shop", "deny"));
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
    fn denial_carries_uid_code_and_message() {
        let (request, _) = decode(POD.as_bytes()).unwrap();
        let rsp = Decision::deny("no").into_response(&request);
        assert_eq!(rsp.uid, request.uid);
        assert!(!rsp.allowed);
        assert_eq!(rsp.result.code, 403);
        assert_eq!(rsp.result.message, "no");
    }

    #[test]
    fn a_patch_goes_out_as_base64_with_its_type() {
        use base64::Engine as _;
        let (request, _) = decode(POD.as_bytes()).unwrap();
        let mut decision = Decision::allow();
        let ops =
            serde_json::json!([{"op": "add", "path": "/metadata/labels/mtls", "value": "strict"}]);
        decision.patch = Some(serde_json::from_value(ops.clone()).unwrap());
        let encoded: serde_json::Value =
            serde_json::from_slice(&encode_response(decision.into_response(&request))).unwrap();
        let rsp = &encoded["response"];
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
        let (request, _) = decode(POD.as_bytes()).unwrap();
        let mut decision = Decision::allow();
        decision.patch = Some(json_patch::Patch(vec![]));
        let rsp = decision.into_response(&request);
        assert!(rsp.patch.is_none());
        let encoded: serde_json::Value = serde_json::from_slice(&encode_response(rsp)).unwrap();
        assert_eq!(encoded["apiVersion"], "admission.k8s.io/v1");
        assert!(encoded["response"].get("patchType").is_none());
    }
}
