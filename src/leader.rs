//! Leader election on a `coordination.k8s.io/v1` Lease, so that several replicas are safe: one
//! reconciles, the others wait.
//!
//! Expiry is judged by the local clock from when this replica last saw the Lease change (as
//! client-go does), so clock skew between replicas does not matter. Every write carries the
//! Lease's resourceVersion, so two candidates cannot both win. The holder renews every
//! `renew_every`; if it cannot renew within `renew_deadline`, leadership is lost and the process
//! must stop reconciling at once (the caller exits).
//!
//! The deadline is kept by this replica's clock alone, whatever the network does: every Lease
//! call is bounded by the time left until it, counted from when the last successful write was
//! *sent* (the others can have seen it no earlier). A path to the apiserver that goes silent
//! (packets dropped, no reset) would otherwise hold a renewal forever, kube's client having no
//! read timeout: the Lease expires for the others while this replica still believes it leads.
//! With `renew_deadline` < `lease_duration` the holder gives up before any standby may take
//! over, as client-go's leader election does; [`Timings::checked`] refuses timings that break it.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{PostParams, ResourceExt};
use std::time::{Duration, Instant};
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub renew_deadline: Duration,
    pub retry_every: Duration,
}

impl Settings {
    pub fn new(namespace: String, name: String, identity: String, timings: Timings) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: timings.lease_duration,
            // Two renewals fit in the deadline: one lost write does not cost leadership.
            renew_every: timings.renew_deadline / 2,
            renew_deadline: timings.renew_deadline,
            retry_every: timings.retry_period,
        }
    }
}

/// The Lease's timings, client-go's names and defaults: how long a Lease lasts without renewal,
/// how long the holder keeps trying to renew before it gives up leading, and how often a
/// standby (or a failed renewal) tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// The bounds that keep one leader at a time, checked at start as client-go checks them: the
    /// holder gives up (renew deadline) before a standby may take over (lease duration), and the
    /// deadline leaves room for retries (1.2 retry periods, client-go's jitter).
    pub fn checked(self) -> Result<Self, String> {
        let Self {
            lease_duration,
            renew_deadline,
            retry_period,
        } = self;
        if lease_duration.subsec_nanos() != 0 || lease_duration < Duration::from_secs(2) {
            return Err(format!(
                "the lease duration is whole seconds, at least 2s (the Lease stores seconds): {lease_duration:?}"
            ));
        }
        if renew_deadline >= lease_duration {
            return Err(format!(
                "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration \
                 ({lease_duration:?}): a leader that cannot renew must stop before a standby may take over"
            ));
        }
        if retry_period.is_zero()
            || renew_deadline.as_secs_f64() <= 1.2 * retry_period.as_secs_f64()
        {
            return Err(format!(
                "the renew deadline ({renew_deadline:?}) must be more than 1.2 retry periods \
                 ({retry_period:?}), and the retry period more than 0"
            ));
        }
        Ok(self)
    }
}

/// A Lease this replica holds.
pub struct Leadership {
    api: Api<Lease>,
    settings: Settings,
    lease: Lease,
    /// When the newest write known to have landed was sent: the Lease is ours until
    /// `renew_deadline` after it, by our own clock.
    confirmed: Instant,
}

enum Renewal {
    Renewed,
    /// The Lease names another holder (an empty name: released or cleared).
    TakenBy(String),
}

/// What this replica last saw of someone else's Lease, and when.
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// Waits until this replica holds the Lease; calls `on_standby` when it first finds another
/// replica leading.
pub async fn acquire(
    client: kube::Client,
    settings: Settings,
    on_standby: impl Fn(),
) -> Result<Leadership, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observed: Option<Observed> = None;
    let mut waiting_logged = false;
    loop {
        let sent = Instant::now();
        let attempt = try_acquire(&api, &settings, &mut observed);
        match tokio::time::timeout(settings.renew_deadline, attempt).await {
            // Unanswered in time: the write may have landed, but a leader must know it leads.
            // The next try finds the Lease ours (and renews it) or someone else's.
            Err(_) => warn!("leader election: no answer from the apiserver in time"),
            Ok(Ok(Some(lease))) => {
                info!(lease = %settings.name, identity = %settings.identity, "acquired leadership");
                return Ok(Leadership {
                    api,
                    settings,
                    lease,
                    confirmed: sent,
                });
            }
            Ok(Ok(None)) => {
                if !waiting_logged {
                    info!(lease = %settings.name, "another replica leads; standing by");
                    on_standby();
                    waiting_logged = true;
                }
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {} // lost a race; look again
            Ok(Err(e)) => warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::time::sleep(settings.retry_every).await;
    }
}

async fn try_acquire(
    api: &Api<Lease>,
    settings: &Settings,
    observed: &mut Option<Observed>,
) -> Result<Option<Lease>, kube::Error> {
    let now = Timestamp::now();
    let Some(current) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                ..Default::default()
            },
            spec: Some(held_spec(settings, now, now, 0)),
        };
        return api.create(&PostParams::default(), &lease).await.map(Some);
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    let mine = holder == Some(settings.identity.as_str());
    if holder.is_some() && !mine {
        // Someone holds it: wait until it has not changed for a whole lease duration.
        let rv = current.resource_version();
        let seen = observed.get_or_insert_with(|| Observed {
            resource_version: rv.clone(),
            at: Instant::now(),
        });
        if seen.resource_version != rv {
            *seen = Observed {
                resource_version: rv,
                at: Instant::now(),
            };
        }
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(settings.lease_duration);
        if seen.at.elapsed() < duration {
            return Ok(None);
        }
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let acquired = if mine {
        spec.acquire_time.map(|t| t.0).unwrap_or(now)
    } else {
        now
    };
    let mut next = current;
    next.spec = Some(held_spec(settings, acquired, now, transitions));
    // `replace` sends the resourceVersion read above: a concurrent change answers 409.
    api.replace(&settings.name, &PostParams::default(), &next)
        .await
        .map(Some)
}

fn held_spec(
    settings: &Settings,
    acquired: Timestamp,
    renewed: Timestamp,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.lease_duration.as_secs() as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(renewed)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

impl Leadership {
    /// Renews until it cannot; returns when leadership is lost: another replica holds the
    /// Lease, or no renewal was confirmed within `renew_deadline` of the last one.
    pub async fn hold(&mut self) {
        loop {
            tokio::time::sleep(self.settings.renew_every).await;
            loop {
                let Some(left) = self.time_left() else {
                    warn!("could not renew the Lease before the deadline; leadership lost");
                    return;
                };
                let sent = Instant::now();
                match tokio::time::timeout(left, self.renew()).await {
                    Ok(Ok(Renewal::Renewed)) => {
                        self.confirmed = sent;
                        break;
                    }
                    Ok(Ok(Renewal::TakenBy(holder))) => {
                        warn!(%holder, "another replica holds the Lease; leadership lost");
                        return;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "could not renew the Lease; retrying");
                        tokio::time::sleep(self.settings.retry_every.min(left)).await;
                    }
                    Err(_) => {
                        warn!(
                            "no answer to the Lease renewal before the deadline; leadership lost"
                        );
                        return;
                    }
                }
            }
        }
    }

    /// Time left before the renew deadline, if any.
    fn time_left(&self) -> Option<Duration> {
        self.settings
            .renew_deadline
            .checked_sub(self.confirmed.elapsed())
            .filter(|left| !left.is_zero())
    }

    /// One renewal: a write guarded by the resourceVersion of our own last write, so it fails
    /// if anyone has touched the Lease since. That anyone may be ourselves: a renewal that
    /// landed but whose answer was lost leaves us with an old resourceVersion. So a conflict
    /// re-reads the Lease: still ours, the next try goes on from it; someone else's, we lost.
    async fn renew(&mut self) -> Result<Renewal, kube::Error> {
        let mut conflicts = 0;
        loop {
            let mut next = self.lease.clone();
            if let Some(spec) = next.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            match self
                .api
                .replace(&self.settings.name, &PostParams::default(), &next)
                .await
            {
                Ok(lease) => {
                    self.lease = lease;
                    return Ok(Renewal::Renewed);
                }
                Err(kube::Error::Api(conflict)) if conflict.code == 409 => {
                    let current = self.api.get(&self.settings.name).await?;
                    let holder = current
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default();
                    if holder != self.settings.identity {
                        return Ok(Renewal::TakenBy(holder));
                    }
                    self.lease = current;
                    conflicts += 1;
                    if conflicts == 3 {
                        return Err(kube::Error::Api(conflict));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives the Lease up (on a graceful stop) so a standby takes over at once.
    pub async fn release(mut self) {
        if let Some(spec) = self.lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        }
        let params = PostParams::default();
        let release = self.api.replace(&self.settings.name, &params, &self.lease);
        match tokio::time::timeout(self.settings.renew_deadline, release).await {
            Ok(Ok(_)) => info!("released leadership"),
            Ok(Err(e)) => warn!(error = %e, "could not release the Lease; it will expire"),
            Err(_) => warn!("no answer to the Lease release in time; it will expire"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(lease: u64, deadline: u64, retry: u64) -> Result<Timings, String> {
        Timings {
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(deadline),
            retry_period: Duration::from_millis(retry),
        }
        .checked()
    }

    #[test]
    fn timings_that_keep_one_leader_pass_and_the_others_say_why_not() {
        assert_eq!(Timings::default().checked(), Ok(Timings::default()));
        assert!(timings(60_000, 40_000, 5_000).is_ok());
        let err = |r: Result<Timings, String>| r.unwrap_err();
        assert!(err(timings(10_000, 10_000, 2_000)).contains("shorter than the lease duration"));
        assert!(err(timings(10_000, 12_000, 2_000)).contains("shorter than the lease duration"));
        assert!(err(timings(15_000, 2_400, 2_000)).contains("1.2 retry periods"));
        assert!(err(timings(15_000, 10_000, 0)).contains("more than 0"));
        assert!(err(timings(15_500, 10_000, 2_000)).contains("whole seconds"));
        assert!(err(timings(1_000, 500, 100)).contains("at least 2s"));
    }

    #[test]
    fn the_holder_renews_twice_within_its_deadline() {
        let settings = Settings::new("ns".into(), "l".into(), "me".into(), Timings::default());
        assert_eq!(settings.renew_every, Duration::from_secs(5));
        assert_eq!(settings.retry_every, Duration::from_secs(2));
        assert_eq!(settings.lease_duration, Duration::from_secs(15));
    }
}
