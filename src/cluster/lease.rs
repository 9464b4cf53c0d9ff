//! Leader election on a `coordination.k8s.io/v1` Lease, with the algorithm of client-go's
//! `leaderelection` package, on kube's typed API:
//!
//! - a candidate reads the Lease. It takes it when it does not exist (create), when it has no
//!   holder, or when the holder's record has not changed for `leaseDurationSeconds` *as observed
//!   on this replica's clock* (so clock skew between nodes does not matter);
//! - every write is an update that carries the resourceVersion just read, so of two replicas
//!   racing for the Lease exactly one succeeds and the other gets 409 Conflict;
//! - the leader renews every retry period. A leader that has not renewed within the renew
//!   deadline (shorter than the lease duration) stops leading at once, before any other replica
//!   may take over; so does a leader that finds another holder;
//! - on shutdown the leader releases the Lease (no holder, duration 1 s), so the next replica
//!   takes over at its next try instead of after the lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::telemetry::metrics::ClusterMetrics;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica: its pod name, else its host name.
    pub identity: String,
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Checks the timing: renewals must fit in the deadline, and the deadline in the lease.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration.as_secs() < 1 {
            return Err("--lease-duration must be at least 1s".into());
        }
        if self.renew_deadline >= self.duration {
            return Err(format!(
                "--lease-renew-deadline ({:?}) must be shorter than --lease-duration ({:?}), so that a leader stops before another may start",
                self.renew_deadline, self.duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--lease-retry-period ({:?}) must be shorter than --lease-renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// The identity of this replica: its pod name (`--pod-name`, `POD_NAME` from the downward API),
/// else the host name.
pub fn identity(pod_name: Option<&str>) -> String {
    if let Some(name) = pod_name
        && !name.is_empty()
    {
        return name.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "palisade".to_owned())
}

/// The Lease as last read, and when this replica saw it change.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    duration: Duration,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    /// Another replica holds a Lease that has not expired, or won the race.
    Follower(Option<String>),
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Runs the election until the future is dropped, publishing whether this replica leads.
    /// Call [`Elector::release`] afterwards on shutdown.
    pub async fn run(&mut self, leading: watch::Sender<bool>, metrics: &ClusterMetrics) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let is_leader = *leading.borrow();
            // An attempt that hangs must not keep a leader leading past its deadline.
            let budget = match (is_leader, last_renewal) {
                (true, Some(t)) => self
                    .config
                    .renew_deadline
                    .saturating_sub(t.elapsed())
                    .max(Duration::from_millis(1)),
                _ => self.config.renew_deadline,
            };
            let attempt = match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(Ok(attempt)) => Ok(attempt),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {budget:?}")),
            };
            match attempt {
                Ok(Attempt::Leading) => {
                    last_renewal = Some(Instant::now());
                    if !is_leader {
                        tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became the leader; starting the background work");
                        set(&leading, true, metrics);
                    }
                }
                Ok(Attempt::Follower(holder)) => {
                    if is_leader {
                        tracing::warn!(identity = %self.config.identity, holder = holder.as_deref().unwrap_or(""), "lost the Lease to another replica; stopping the background work");
                        set(&leading, false, metrics);
                    }
                }
                Err(error) => {
                    let expired =
                        last_renewal.is_none_or(|t| t.elapsed() >= self.config.renew_deadline);
                    if is_leader && expired {
                        tracing::warn!(identity = %self.config.identity, %error, deadline = ?self.config.renew_deadline, "could not renew the Lease in time; stopping the background work");
                        set(&leading, false, metrics);
                    } else {
                        tracing::debug!(%error, "Lease attempt failed; retrying");
                    }
                }
            }
            // A leader whose renewals hang stops when its deadline passes, not when they return.
            let wait = tokio::time::sleep(self.config.retry_period);
            if *leading.borrow() {
                let deadline =
                    last_renewal.map_or(Instant::now(), |t| t + self.config.renew_deadline);
                tokio::select! {
                    () = wait => {}
                    () = tokio::time::sleep_until(deadline.into()) => {}
                }
            } else {
                wait.await;
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let me = self.config.identity.clone();
        let current = match self.api.get_opt(&self.config.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(&created);
                        Ok(Attempt::Leading)
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Follower(None)),
                    Err(e) => Err(e),
                };
            }
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if let (Some(other), false) = (&holder, held_by_me) {
            let observed = self.observed.as_ref();
            let expired = observed.is_some_and(|o| o.at.elapsed() >= o.duration);
            if !expired {
                return Ok(Attempt::Follower(Some(other.clone())));
            }
        }
        let mut next = current.clone();
        let transitions = spec.lease_transitions.unwrap_or(0);
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if held_by_me {
                spec.acquire_time.clone().or(Some(now.clone()))
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if held_by_me {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        });
        // The resourceVersion read above makes this a compare-and-swap.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Follower(holder)),
            Err(e) => Err(e),
        }
    }

    /// Records the Lease, restarting the expiry clock when its holder or renewal changed.
    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        )
        .max(Duration::from_secs(1));
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew_time != spec.renew_time);
        if changed {
            self.observed = Some(Observed {
                holder,
                renew_time: spec.renew_time,
                duration,
                at: Instant::now(),
            });
        }
    }

    /// What releases the Lease on shutdown, after the election loop is stopped.
    pub fn releaser(&self) -> Releaser {
        Releaser {
            api: self.api.clone(),
            config: self.config.clone(),
        }
    }
}

pub struct Releaser {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Releaser {
    /// Gives the Lease up if this replica holds it, so that another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(identity = %self.config.identity, "released the Lease"),
            Err(error) => {
                tracing::warn!(%error, "could not release the Lease; another replica takes over when it expires")
            }
        }
    }
}

fn set(leading: &watch::Sender<bool>, value: bool, metrics: &ClusterMetrics) {
    leading.send_replace(value);
    metrics.leader.set(i64::from(value));
    metrics.leader_transitions.inc();
}
