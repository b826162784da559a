//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator pods (a rollout, an
//! eviction, a partitioned node) never both run fault schedules and kill pods. kube 5 ships no
//! elector, and the maintained crate that supports kube 5 (kube-lease-manager) reads the wall
//! clock and detects conflicts through server-side-apply field ownership, which the in-memory API
//! servers of the tests cannot emulate; this one is the client-go algorithm, small:
//!
//! - a lease is expired when its `resourceVersion` has not changed for `leaseDurationSeconds` of
//!   the *local monotonic* clock since we first saw that version (no clock comparison between
//!   machines, as client-go does);
//! - acquiring and renewing are writes conditioned on the `resourceVersion` we read (a `409` means
//!   someone else wrote first: we are not the leader);
//! - a leader that has not renewed within `renew_deadline` steps down (the operator then exits and
//!   its pod restarts as a candidate), well before another can take over at `lease_duration`;
//! - on a clean shutdown the leader releases the lease (empty holder), so a successor need not
//!   wait out the duration.
//!
//! [`Decision`] is the sans-IO core; [`Elector::run`] the driver.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() || self.name.is_empty() {
            return Err("lease: name and identity must not be empty".into());
        }
        if !(self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration) {
            return Err(
                "lease: need retry period < renew deadline < lease duration (default 2 s < 10 s < 15 s)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What the last read of the lease showed, and when this process first saw that version.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub holder: Option<String>,
    pub resource_version: String,
    pub duration: Duration,
    pub seen_at: Instant,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// No lease yet: create one holding it.
    Create,
    /// Ours: write a fresh renew time (conditioned on the version read).
    Renew,
    /// Free or expired: take it over (conditioned on the version read).
    Acquire,
    /// Someone else holds it and it has not expired.
    Follow { holder: String },
}

/// The election rule, from the last observation, `me`, and the local clock.
pub fn decide(observed: Option<&Observed>, me: &str, now: Instant) -> Decision {
    let Some(o) = observed else {
        return Decision::Create;
    };
    match o.holder.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) if now.saturating_duration_since(o.seen_at) >= o.duration => Decision::Acquire,
        Some(h) => Decision::Follow {
            holder: h.to_owned(),
        },
    }
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Option<Observed>,
    transitions: i32,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            transitions: 0,
        }
    }

    /// Reads the lease and updates what was observed (a new version restarts its expiry clock).
    async fn observe(&mut self, now: Instant) -> Result<Option<Lease>, kube::Error> {
        let lease = self.api.get_opt(&self.cfg.name).await?;
        self.observed = lease.as_ref().map(|l| {
            let rv = l.metadata.resource_version.clone().unwrap_or_default();
            let spec = l.spec.clone().unwrap_or_default();
            let seen_at = match &self.observed {
                Some(o) if o.resource_version == rv => o.seen_at,
                _ => now,
            };
            self.transitions = spec.lease_transitions.unwrap_or(0);
            Observed {
                holder: spec.holder_identity,
                resource_version: rv,
                duration: Duration::from_secs(
                    spec.lease_duration_seconds.unwrap_or(15).max(1) as u64
                ),
                seen_at,
            }
        });
        Ok(lease)
    }

    fn lease(&self, rv: Option<String>, holder: &str, acquired: bool, transitions: i32) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.cfg.name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                resource_version: rv,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
                acquire_time: acquired.then(|| now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// One round: true when this process holds the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        let now = Instant::now();
        let current = match self.observe(now).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "reading the leader lease failed");
                return false;
            }
        };
        let me = self.cfg.identity.clone();
        let rv = self.observed.as_ref().map(|o| o.resource_version.clone());
        let result = match decide(self.observed.as_ref(), &me, now) {
            Decision::Follow { .. } => return false,
            Decision::Create => {
                let l = self.lease(None, &me, true, 0);
                self.api
                    .create(&PostParams::default(), &l)
                    .await
                    .map(|_| ())
            }
            Decision::Renew => {
                let mut l = current.expect("observed");
                let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
                spec.lease_duration_seconds = Some(self.cfg.lease_duration.as_secs().max(1) as i32);
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &l)
                    .await
                    .map(|_| ())
            }
            Decision::Acquire => {
                let l = self.lease(rv, &me, true, self.transitions + 1);
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &l)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => true,
            Err(kube::Error::Api(s)) if s.code == 409 => false,
            Err(e) => {
                warn!(error = %e, "writing the leader lease failed");
                false
            }
        }
    }

    /// Campaigns until elected, then renews; publishes leadership on `leading`. Returns when
    /// leadership is lost (not renewed within the renew deadline) or `stop` fires (then the
    /// lease is released).
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        mut stop: impl std::future::Future<Output = ()> + Unpin,
    ) {
        let mut last_renew: Option<Instant> = None;
        loop {
            let held = self.try_acquire_or_renew().await;
            let now = Instant::now();
            if held {
                if last_renew.is_none() {
                    info!(identity = %self.cfg.identity, "became the leader");
                    let _ = leading.send(true);
                }
                last_renew = Some(now);
            } else if let Some(t) = last_renew
                && now.saturating_duration_since(t) >= self.cfg.renew_deadline
            {
                warn!("lost the leader lease: stepping down");
                let _ = leading.send(false);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = &mut stop => {
                    if last_renew.is_some() {
                        self.release().await;
                    }
                    let _ = leading.send(false);
                    return;
                }
            }
        }
    }

    /// Gives the lease up (empty holder), so a successor need not wait out its duration.
    async fn release(&mut self) {
        if let Ok(Some(mut l)) = self.api.get_opt(&self.cfg.name).await
            && l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(self.cfg.identity.as_str())
        {
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            match self
                .api
                .replace(&self.cfg.name, &PostParams::default(), &l)
                .await
            {
                Ok(_) => info!("released the leader lease"),
                Err(e) => warn!(error = %e, "releasing the leader lease failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(holder: Option<&str>, seen_at: Instant) -> Observed {
        Observed {
            holder: holder.map(str::to_owned),
            resource_version: "7".into(),
            duration: Duration::from_secs(15),
            seen_at,
        }
    }

    #[test]
    fn the_election_rule() {
        let t0 = Instant::now();
        assert_eq!(decide(None, "a", t0), Decision::Create);
        assert_eq!(decide(Some(&obs(Some("a"), t0)), "a", t0), Decision::Renew);
        assert_eq!(decide(Some(&obs(None, t0)), "a", t0), Decision::Acquire);
        assert_eq!(decide(Some(&obs(Some(""), t0)), "a", t0), Decision::Acquire);
        // Someone else's, seen changing 14 s ago: theirs; 15 s: expired.
        let b = obs(Some("b"), t0);
        assert_eq!(
            decide(Some(&b), "a", t0 + Duration::from_secs(14)),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&b), "a", t0 + Duration::from_secs(15)),
            Decision::Acquire
        );
    }

    #[test]
    fn timings_must_leave_room_to_renew_before_another_takes_over() {
        let ok = LeaseConfig {
            name: "syncnet-operator".into(),
            namespace: "syncnet".into(),
            identity: "pod-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.renew_deadline = Duration::from_secs(15);
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.identity = String::new();
        assert!(bad.validate().is_err());
    }
}
