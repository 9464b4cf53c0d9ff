//! `serve --manage-certs`: the leader keeps the webhook's certificates, with no other tool.
//!
//! What it keeps, in Palisade's namespace:
//! - the Secret `palisade-ca` (never mounted): `ca.crt` and `ca.key`, the CA that signs, and
//!   `ca-bundle.crt`, every CA the API server must trust now (the current one, and during a
//!   rotation its predecessor). The annotation `palisade.dev/ca-trusted-since` records when both
//!   webhook configurations were first seen holding the current CA;
//! - the Secret `palisade-tls` (`kubernetes.io/tls`, mounted by every replica as a directory):
//!   `tls.crt`, `tls.key` and `ca.crt` (the bundle), with `palisade.dev/issued-at`;
//! - `clientConfig.caBundle` of every webhook of the Validating and Mutating configurations.
//!
//! Each check (at start of leadership, then every `--cert-check-interval`):
//! 1. no CA: make one. A CA with less than a third of its life left is rotated: a new CA joins
//!    the bundle beside the old one, which keeps signing nothing new;
//! 2. the bundle goes into both webhook configurations (read, changed, written back with its
//!    resourceVersion, so a concurrent edit is a 409 and the next check tries again);
//! 3. the serving certificate is issued when missing, unusable, expired or not signed by a
//!    trusted CA (at once: nothing works without it), and when it has less than a third of its
//!    life left or was signed by the previous CA, once the current CA has been trusted for
//!    `--cert-rotation-overlap` (the API servers have it by then);
//! 4. a previous CA leaves the bundle once the serving certificate it no longer signs has been
//!    out for the overlap (every replica has loaded it), or when it expires.
//!
//! So at every moment the certificate any replica serves is signed by a CA in the caBundle the
//! API server uses, and a rotation fails no review. Every write is counted
//! (`palisade_certificate_manager_writes_total`) and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, PostParams};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::telemetry::metrics::Metrics;
use crate::tls::certificates::{self, CertInfo, CertSpec, Pair};

pub const TRUSTED_SINCE: &str = "palisade.dev/ca-trusted-since";
pub const ISSUED_AT: &str = "palisade.dev/issued-at";
const CA_BUNDLE_KEY: &str = "ca-bundle.crt";

/// What the certificate manager keeps, and when.
#[derive(Debug, Clone)]
pub struct CertManagerConfig {
    pub namespace: String,
    pub ca_secret: String,
    pub tls_secret: String,
    /// The name of both webhook configurations.
    pub webhook_configuration: String,
    pub spec: CertSpec,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    pub overlap: Duration,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CertManagerError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error(
        "Secret {namespace}/{name}: {problem}; delete the Secret for the leader to start over with a new CA (replicas keep serving their current certificate meanwhile)"
    )]
    Unusable {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] certificates::CertError),
}

/// The CA Secret, read.
struct CaState {
    current: Pair,
    current_info: CertInfo,
    bundle: Vec<CertInfo>,
    trusted_since: Option<OffsetDateTime>,
    secret: Option<Secret>,
    dirty: bool,
}

/// The serving Secret, read.
struct ServingState {
    info: Option<CertInfo>,
    key_ok: bool,
    bundle_pem: String,
    issued_at: Option<OffsetDateTime>,
    secret: Secret,
}

pub struct CertManager {
    client: kube::Client,
    config: CertManagerConfig,
    metrics: Arc<Metrics>,
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn annotation(secret: &Secret, key: &str) -> Option<OffsetDateTime> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn overlap(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

fn same(a: &CertInfo, b: &CertInfo) -> bool {
    a.der == b.der
}

impl CertManagerConfig {
    /// Refuses timings under which a rotation could fail reviews.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_validity > self.ca_validity {
            return Err(format!(
                "--cert-validity ({}) must not exceed --ca-validity ({}): a certificate cannot outlive its CA",
                humantime::format_duration(self.cert_validity),
                humantime::format_duration(self.ca_validity)
            ));
        }
        // A CA is rotated with a third of its life left; the serving certificate moves to the
        // new CA one overlap later, and the old CA leaves the bundle one overlap after that.
        if self.overlap * 2 >= self.ca_validity / 3 {
            return Err(format!(
                "--cert-rotation-overlap ({}) must be under a sixth of --ca-validity ({}), so that a rotation completes before the old CA expires",
                humantime::format_duration(self.overlap),
                humantime::format_duration(self.ca_validity)
            ));
        }
        if self.interval.is_zero() {
            return Err("--cert-check-interval must be more than 0".into());
        }
        Ok(())
    }
}

impl CertManager {
    pub fn new(client: kube::Client, config: CertManagerConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            config,
            metrics,
        }
    }

    /// Checks at once, then every interval, until dropped (when leadership ends).
    pub async fn run(self) {
        tracing::info!(ca = %self.secret_name(&self.config.ca_secret),
            serving = %self.secret_name(&self.config.tls_secret),
            webhooks = %self.config.webhook_configuration,
            "certificate manager started (this replica leads)");
        loop {
            match self.reconcile().await {
                Ok(_) => {}
                Err(CertManagerError::Api(kube::Error::Api(e))) if e.code == 409 => {
                    tracing::info!(reason = %e.message, "a certificate object changed during the check; checking again at the next one");
                }
                Err(error) => {
                    tracing::error!(%error, "certificate check failed; trying again at the next check");
                }
            }
            tokio::time::sleep(self.config.interval).await;
        }
    }

    fn secret_name(&self, name: &str) -> String {
        format!("{}/{name}", self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// One check: the CA, the caBundles, the serving certificate. Returns what it wrote.
    pub async fn reconcile(&self) -> Result<Vec<&'static str>, CertManagerError> {
        let now = OffsetDateTime::now_utc();
        let mut wrote = Vec::new();
        let mut ca = self.read_ca().await?;
        let serving = self.read_serving().await?;

        // 1. Rotate a CA that has less than a third of its life left.
        if ca.current_info.due_for_renewal(now) {
            let next = certificates::generate_ca(&self.config.spec, self.config.ca_validity)?;
            let info = first_cert(&next.cert_pem, &self.config.ca_secret, "ca.crt", self)?;
            tracing::warn!(old = %ca.current_info.subject, new = %info.subject,
                expires = %rfc3339(ca.current_info.not_after),
                "CA rotation: the new CA joins the caBundle now and signs once the API servers trust it");
            ca.bundle.push(info.clone());
            ca.current = next;
            ca.current_info = info;
            ca.trusted_since = None;
            ca.dirty = true;
            self.metrics.certificate_written("ca");
            wrote.push("ca");
        }
        // 4. Drop the previous CA once nothing served depends on it, and any expired one.
        let before = ca.bundle.len();
        let switched = serving.as_ref().is_some_and(|s| {
            s.info
                .as_ref()
                .is_some_and(|i| s.key_ok && i.signed_by(&ca.current_info))
                && s.issued_at
                    .is_some_and(|t| t + overlap(self.config.overlap) <= now)
        });
        let current = ca.current_info.clone();
        ca.bundle
            .retain(|c| same(c, &current) || (!switched && c.not_after > now));
        if ca.bundle.len() != before {
            tracing::info!(
                removed = before - ca.bundle.len(),
                "previous CA removed from the caBundle: the serving certificate no longer depends on it"
            );
            ca.dirty = true;
        }
        if ca.dirty {
            self.write_ca(&mut ca).await?;
        }

        // 2. Publish the bundle.
        let bundle_refs: Vec<&CertInfo> = ca.bundle.iter().collect();
        let bundle_pem = certificates::pem_of(&bundle_refs);
        if self.publish(&bundle_pem).await? {
            wrote.push("ca_bundle");
        }
        if ca.trusted_since.is_none() {
            ca.trusted_since = Some(now);
            self.write_ca(&mut ca).await?;
        }

        // 3. The serving certificate.
        let trusted_long_enough = ca
            .trusted_since
            .is_some_and(|t| t + overlap(self.config.overlap) <= now);
        let reason = match &serving {
            None => Some("no serving certificate yet"),
            Some(s) => match &s.info {
                None => Some("the serving certificate does not parse"),
                Some(_) if !s.key_ok => Some("the serving key does not match its certificate"),
                Some(i) if i.remaining(now).is_negative() => {
                    Some("the serving certificate expired")
                }
                Some(i) if !ca.bundle.iter().any(|c| i.signed_by(c)) => {
                    Some("the serving certificate is not signed by a trusted CA")
                }
                Some(i) if trusted_long_enough && !i.signed_by(&ca.current_info) => {
                    Some("the serving certificate is signed by the previous CA")
                }
                Some(i) if trusted_long_enough && i.due_for_renewal(now) => {
                    Some("the serving certificate has less than a third of its life left")
                }
                Some(i) if i.due_for_renewal(now) => {
                    tracing::info!(
                        "serving certificate due for renewal; waiting until the new CA is trusted long enough"
                    );
                    None
                }
                Some(_) => None,
            },
        };
        let serving_secret = serving.map(|s| (s.secret, s.bundle_pem));
        match reason {
            Some(reason) => {
                let pair =
                    certificates::issue(&self.config.spec, &ca.current, self.config.cert_validity)?;
                self.write_serving(serving_secret.map(|(s, _)| s), &pair, &bundle_pem, now)
                    .await?;
                tracing::info!(%reason, secret = %self.secret_name(&self.config.tls_secret),
                    ca = %ca.current_info.subject, "serving certificate issued");
                self.metrics.certificate_written("serving");
                wrote.push("serving");
            }
            None => {
                if let Some((secret, old_bundle)) = serving_secret
                    && old_bundle != bundle_pem
                {
                    self.write_serving_bundle(secret, &bundle_pem).await?;
                }
            }
        }
        Ok(wrote)
    }

    async fn read_ca(&self) -> Result<CaState, CertManagerError> {
        let name = &self.config.ca_secret;
        let Some(secret) = self.secrets().get_opt(name).await? else {
            let pair = certificates::generate_ca(&self.config.spec, self.config.ca_validity)?;
            let info = first_cert(&pair.cert_pem, name, "ca.crt", self)?;
            tracing::info!(secret = %self.secret_name(name), ca = %info.subject,
                expires = %rfc3339(info.not_after), "no CA yet: created one");
            self.metrics.certificate_written("ca");
            return Ok(CaState {
                current: pair,
                bundle: vec![info.clone()],
                current_info: info,
                trusted_since: None,
                secret: None,
                dirty: true,
            });
        };
        let unusable = |problem: String| CertManagerError::Unusable {
            namespace: self.config.namespace.clone(),
            name: name.clone(),
            problem,
        };
        let (Some(cert_pem), Some(key_pem)) = (data(&secret, "ca.crt"), data(&secret, "ca.key"))
        else {
            return Err(unusable("has no ca.crt or no ca.key".into()));
        };
        let current_info = first_cert(&cert_pem, name, "ca.crt", self)?;
        if !current_info.is_ca {
            return Err(unusable("ca.crt is not a CA certificate".into()));
        }
        if !certificates::key_matches(&current_info, &key_pem) {
            return Err(unusable("ca.key does not belong to ca.crt".into()));
        }
        let mut bundle = match data(&secret, CA_BUNDLE_KEY) {
            Some(pem) => certificates::parse_pem(&pem)
                .map_err(|e| unusable(format!("{CA_BUNDLE_KEY}: {e}")))?,
            None => Vec::new(),
        };
        let mut dirty = false;
        if !bundle.iter().any(|c| same(c, &current_info)) {
            bundle.push(current_info.clone());
            dirty = true;
        }
        Ok(CaState {
            current: Pair { cert_pem, key_pem },
            current_info,
            bundle,
            trusted_since: annotation(&secret, TRUSTED_SINCE),
            secret: Some(secret),
            dirty,
        })
    }

    async fn read_serving(&self) -> Result<Option<ServingState>, CertManagerError> {
        let Some(secret) = self.secrets().get_opt(&self.config.tls_secret).await? else {
            return Ok(None);
        };
        let info = data(&secret, "tls.crt")
            .and_then(|pem| certificates::parse_pem(&pem).ok())
            .and_then(|c| c.into_iter().next());
        let key_ok = match (&info, data(&secret, "tls.key")) {
            (Some(info), Some(key)) => certificates::key_matches(info, &key),
            _ => false,
        };
        Ok(Some(ServingState {
            info,
            key_ok,
            bundle_pem: data(&secret, "ca.crt").unwrap_or_default(),
            issued_at: annotation(&secret, ISSUED_AT),
            secret,
        }))
    }

    /// Creates or replaces the CA Secret (with its resourceVersion: a concurrent change is a
    /// 409, and the next check starts again from what is stored).
    async fn write_ca(&self, ca: &mut CaState) -> Result<(), CertManagerError> {
        let bundle: Vec<&CertInfo> = ca.bundle.iter().collect();
        let mut annotations = BTreeMap::new();
        if let Some(t) = ca.trusted_since {
            annotations.insert(TRUSTED_SINCE.to_owned(), rfc3339(t));
        }
        let data = BTreeMap::from([
            (
                "ca.crt".to_owned(),
                ByteString(ca.current.cert_pem.clone().into_bytes()),
            ),
            (
                "ca.key".to_owned(),
                ByteString(ca.current.key_pem.clone().into_bytes()),
            ),
            (
                CA_BUNDLE_KEY.to_owned(),
                ByteString(certificates::pem_of(&bundle).into_bytes()),
            ),
        ]);
        let mut secret = ca.secret.clone().unwrap_or_default();
        secret.metadata = ObjectMeta {
            name: Some(self.config.ca_secret.clone()),
            namespace: Some(self.config.namespace.clone()),
            labels: Some(labels()),
            annotations: Some(annotations),
            resource_version: secret.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        };
        secret.type_ = Some("Opaque".into());
        secret.data = Some(data);
        secret.string_data = None;
        let written = match &ca.secret {
            None => {
                self.secrets()
                    .create(&PostParams::default(), &secret)
                    .await?
            }
            Some(_) => {
                self.secrets()
                    .replace(&self.config.ca_secret, &PostParams::default(), &secret)
                    .await?
            }
        };
        ca.secret = Some(written);
        ca.dirty = false;
        Ok(())
    }

    async fn write_serving(
        &self,
        existing: Option<Secret>,
        pair: &Pair,
        bundle_pem: &str,
        now: OffsetDateTime,
    ) -> Result<(), CertManagerError> {
        let mut secret = existing.clone().unwrap_or_default();
        secret.metadata = ObjectMeta {
            name: Some(self.config.tls_secret.clone()),
            namespace: Some(self.config.namespace.clone()),
            labels: Some(labels()),
            annotations: Some(BTreeMap::from([(ISSUED_AT.to_owned(), rfc3339(now))])),
            resource_version: secret.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        };
        secret.type_ = Some("kubernetes.io/tls".into());
        secret.data = Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(pair.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(pair.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_owned(),
                ByteString(bundle_pem.as_bytes().to_vec()),
            ),
        ]));
        secret.string_data = None;
        match existing {
            None => {
                self.secrets()
                    .create(&PostParams::default(), &secret)
                    .await?;
            }
            Some(_) => {
                self.secrets()
                    .replace(&self.config.tls_secret, &PostParams::default(), &secret)
                    .await?;
            }
        }
        Ok(())
    }

    async fn write_serving_bundle(
        &self,
        mut secret: Secret,
        bundle_pem: &str,
    ) -> Result<(), CertManagerError> {
        secret
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("ca.crt".into(), ByteString(bundle_pem.as_bytes().to_vec()));
        self.secrets()
            .replace(&self.config.tls_secret, &PostParams::default(), &secret)
            .await?;
        Ok(())
    }

    /// Writes the bundle into every webhook of both configurations where it differs. Returns
    /// whether it wrote. A configuration that does not exist is skipped with a warning: there
    /// is nothing to keep trusted.
    async fn publish(&self, bundle_pem: &str) -> Result<bool, CertManagerError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bundle_pem.as_bytes());
        let mut wrote = false;
        for kind in [
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ] {
            let resource = ApiResource {
                group: "admissionregistration.k8s.io".into(),
                version: "v1".into(),
                api_version: "admissionregistration.k8s.io/v1".into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_lowercase()),
            };
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            let name = &self.config.webhook_configuration;
            let Some(mut object) = api.get_opt(name).await? else {
                tracing::warn!(%kind, %name, "webhook configuration not found: its caBundle cannot be kept (apply manifests/)");
                continue;
            };
            let mut changed = false;
            if let Some(hooks) = object
                .data
                .get_mut("webhooks")
                .and_then(|w| w.as_array_mut())
            {
                for hook in hooks {
                    if hook["clientConfig"]["caBundle"] != encoded.as_str() {
                        hook["clientConfig"]["caBundle"] = serde_json::Value::from(encoded.clone());
                        changed = true;
                    }
                }
            }
            if changed {
                api.replace(name, &PostParams::default(), &object).await?;
                tracing::info!(%kind, %name, "caBundle written");
                self.metrics.certificate_written("ca_bundle");
                wrote = true;
            }
        }
        Ok(wrote)
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "palisade".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "palisade".to_owned(),
        ),
    ])
}

fn first_cert(
    pem: &str,
    secret: &str,
    key: &str,
    manager: &CertManager,
) -> Result<CertInfo, CertManagerError> {
    certificates::parse_pem(pem)
        .map_err(|e| CertManagerError::Unusable {
            namespace: manager.config.namespace.clone(),
            name: secret.to_owned(),
            problem: format!("{key}: {e}"),
        })
        .map(|mut c| c.remove(0))
}
