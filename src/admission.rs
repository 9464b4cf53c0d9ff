//! AdmissionReview decoding, the `decide` seam and response building.
//!
//! The HTTP server, the CLI and the audit all go through [`Decider::decide`], so they cannot
//! disagree about a decision.

use std::collections::HashMap;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

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
    #[error("body is not a valid admission.k8s.io/v1 AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
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

/// A decoded review, as every decider sees it.
#[derive(Debug, Clone)]
pub struct Review {
    pub request: Request,
}

impl Review {
    /// The object the review is about: `oldObject` on DELETE, as Gatekeeper does.
    pub fn object(&self) -> Option<&DynamicObject> {
        match self.request.operation {
            Operation::Delete => self.request.old_object.as_ref(),
            _ => self
                .request
                .object
                .as_ref()
                .or(self.request.old_object.as_ref()),
        }
    }
}

/// Parses and checks an AdmissionReview body.
pub fn decode(body: &[u8]) -> Result<Review, DecodeError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    if review.types.api_version != META_API_VERSION_V1 {
        return Err(DecodeError::ApiVersion(review.types.api_version));
    }
    if review.types.kind != META_KIND {
        return Err(DecodeError::Kind(review.types.kind));
    }
    let request: Request = review.try_into().map_err(|_| DecodeError::NoRequest)?;
    if request.uid.is_empty() {
        return Err(DecodeError::EmptyUid);
    }
    Ok(Review { request })
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

/// Allows everything and patches nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Decider for AllowAll {
    fn decide(&self, _endpoint: Endpoint, _review: &Review) -> Decision {
        Decision::allow()
    }
}

/// Serialises a response as the AdmissionReview the API server expects.
pub fn encode_response(rsp: AdmissionResponse) -> Vec<u8> {
    let mut review = rsp.into_review();
    review.types.api_version = META_API_VERSION_V1.to_owned();
    review.types.kind = META_KIND.to_owned();
    // Serialising plain data (strings, bools, maps) into a Vec cannot fail.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = include_str!("../tests/fixtures/admission/validate-create-pod.json");

    #[test]
    fn decodes_a_real_review() {
        let review = decode(POD.as_bytes()).unwrap();
        assert_eq!(review.request.operation, Operation::Create);
        assert_eq!(review.request.kind.kind, "Pod");
        assert!(!review.request.uid.is_empty());
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
        let review = decode(POD.as_bytes()).unwrap();
        let rsp = Decision::deny("no").into_response(&review.request);
        assert_eq!(rsp.uid, review.request.uid);
        assert!(!rsp.allowed);
        assert_eq!(rsp.result.code, 403);
        assert_eq!(rsp.result.message, "no");
    }

    #[test]
    fn patch_is_encoded_only_when_not_empty() {
        let review = decode(POD.as_bytes()).unwrap();
        let mut decision = Decision::allow();
        decision.patch = Some(json_patch::Patch(vec![]));
        let rsp = decision.into_response(&review.request);
        assert!(rsp.patch.is_none());
        let encoded: serde_json::Value = serde_json::from_slice(&encode_response(rsp)).unwrap();
        assert_eq!(encoded["apiVersion"], "admission.k8s.io/v1");
        assert!(encoded["response"].get("patchType").is_none());
    }
}
