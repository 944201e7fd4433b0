//! The one reconcile driver, generic over the kind: a kind says what its flows are
//! ([`Reconciler`]); the driver dispatches (paused, being deleted, or to apply), re-decides on a
//! fresh read after a conflict, counts and times every reconcile with the kind's label, and turns
//! the outcome into a requeue with a per-object backoff. A deletion that is the kind's CRD's
//! lets the object go with no call to the service ([`crds`](super::crds)).

use super::crds::{self, Deletion};
use super::create::{self, Marked};
use super::events::Kind;
use super::failure::{Retry, backoff};
use super::kube_io::fresh;
use super::{Context, Error, Next, Reason, intent};
use futures::StreamExt;
use kube::Resource;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// Immediate re-reads after a 409 within one reconcile.
const CONFLICT_RETRIES: u32 = 3;

/// A reconcile's outcome in the reasons `R` of its kind.
pub type Outcome<R> = Result<Next<R>, Error>;

/// A resource kind's flows, as the driver runs them.
pub trait Reconciler: Send + Sync + 'static {
    type Object: Marked;
    type Reason: Reason;

    /// The Event of an object let go with its CRD, its creation left in the service.
    const CRD_DELETED: Self::Reason;

    /// The kind's name, in logs and metric labels.
    const KIND: &'static str;

    fn context(&self) -> &Context;

    /// A paused object: no call, no write but the status that says so.
    fn paused(&self, obj: &Self::Object) -> impl Future<Output = Outcome<Self::Reason>> + Send;

    /// An object being deleted.
    fn cleanup(&self, obj: &Self::Object) -> impl Future<Output = Outcome<Self::Reason>> + Send;

    /// Brings what the object declares about.
    fn apply(&self, obj: &Self::Object) -> impl Future<Output = Outcome<Self::Reason>> + Send;

    /// Trims an object read past the cache to what the cache keeps of it.
    fn slim(obj: &mut Self::Object);

    /// After a reconcile that decided (`reason`: what it failed on, if anything).
    fn settle(&self, _obj: &Self::Object, _reason: Option<Self::Reason>) {}
}

/// Runs a kind's reconciles: its flows and the consecutive failures of each object.
pub struct Driver<R: Reconciler> {
    pub flows: R,
    failures: Mutex<HashMap<ObjectRef<R::Object>, u32>>,
}

impl<R: Reconciler> std::ops::Deref for Driver<R> {
    type Target = R;

    fn deref(&self) -> &R {
        &self.flows
    }
}

impl<R: Reconciler> Driver<R> {
    pub fn new(flows: R) -> Arc<Self> {
        Arc::new(Self {
            flows,
            failures: Mutex::default(),
        })
    }

    /// The requeue for an object's outcome, counting its consecutive failures.
    fn requeue(&self, obj: &R::Object, next: Option<Next<R::Reason>>) -> Action {
        let key = ObjectRef::from_obj(obj);
        let mut failures = self.failures.lock().expect("failure counts");
        let retry = match next {
            Some(Next::Settled) => {
                failures.remove(&key);
                return Action::await_change();
            }
            Some(Next::LookAgainIn(after)) => {
                failures.remove(&key);
                return Action::requeue(after);
            }
            Some(Next::Retry { retry, .. }) => retry,
            None => Retry::Soon { not_before: None },
        };
        let attempt = failures.entry(key).or_default();
        *attempt = attempt.saturating_add(1);
        match backoff(retry, *attempt, rand::random_range(0.8..1.2)) {
            Some(delay) => Action::requeue(delay),
            None => Action::await_change(),
        }
    }

    /// The flow the object's state calls for.
    async fn dispatch(&self, obj: &R::Object) -> Outcome<R::Reason> {
        if intent::paused(obj.meta()) {
            self.flows.paused(obj).await
        } else if obj.meta().deletion_timestamp.is_some() {
            match self.deletion(obj).await? {
                Deletion::Cleanup => self.flows.cleanup(obj).await,
                Deletion::Keep => self.keep(obj).await,
            }
        } else {
            self.flows.apply(obj).await
        }
    }

    /// Whether `obj`'s deletion is its own or its CRD's. An object that never started a creation
    /// costs no question: its cleanup calls nothing anyway.
    async fn deletion(&self, obj: &R::Object) -> Result<Deletion, Error> {
        let started = obj.recorded_id().is_some() || create::pending_mark(obj).is_some();
        if !create::has_finalizer(obj) || !started {
            return Ok(Deletion::Cleanup);
        }
        self.flows.context().crds.deletion(obj).await
    }

    /// The object goes with its CRD: the finalizer is released with no call to the service, and
    /// its creation stays there.
    async fn keep(&self, obj: &R::Object) -> Outcome<R::Reason> {
        let ctx = self.flows.context();
        create::release_finalizer(&ctx.client, obj).await?;
        let what = <R::Object as Marked>::WHAT;
        let id = obj.recorded_id().unwrap_or_default();
        let left = match obj.recorded_id() {
            Some(id) => format!("{what} {id} stays in Chroma Sync"),
            None => format!("the {what} of its unfinished create, if any, stays in Chroma Sync"),
        };
        let crd = crds::name_of::<R::Object>();
        info!(kind = R::KIND, %crd, id, "the CRD is being deleted: released the finalizer without calling Chroma Sync; {left}");
        let note = format!(
            "The {crd} CustomResourceDefinition is being deleted, which deletes every {}: released the finalizer without calling Chroma Sync; {left}",
            R::KIND
        );
        ctx.events.publish(obj, Kind::Warning, R::CRD_DELETED, note);
        Ok(Next::Settled)
    }

    /// Runs `controller` (its watches already set) until its shutdown, `concurrency` reconciles at
    /// once.
    pub async fn run(
        self: Arc<Self>,
        controller: Controller<R::Object>,
        concurrency: u16,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        // The kind's CRD, watched while its controller runs (once for all its scopes).
        let crd_watch = self.flows.context().crds.watch::<R::Object>();
        controller
            .with_config(Config::default().concurrency(concurrency))
            .graceful_shutdown_on(shutdown)
            .run(reconcile::<R>, error_policy::<R>, self)
            .for_each(|result| {
                // A watch that cannot list or watch (the CRD deleted, RBAC changed, the apiserver
                // away) retries with backoff; say why, once per try. Reconcile errors are
                // reported by `error_policy`.
                if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                    warn!(kind = R::KIND, error = %e, "watching failed; retrying with backoff");
                }
                futures::future::ready(())
            })
            .await;
        if let Some(task) = crd_watch {
            task.abort();
        }
    }
}

/// One reconcile of one object: the flow its state calls for, then the metrics and the requeue
/// its outcome calls for.
pub async fn reconcile<R: Reconciler>(
    obj: Arc<R::Object>,
    driver: Arc<Driver<R>>,
) -> Result<Action, Error> {
    let span = info_span!("reconcile", kind = R::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    async move {
        let ctx = driver.flows.context();
        // A token that exists must not read as missing just because the operator has started.
        ctx.secrets_synced().await;
        let started = Instant::now();
        let mut current = obj.clone();
        let mut attempt = 0;
        let result = loop {
            let result = driver.dispatch(&current).await;
            // A 409 on a guarded write means the cached object was stale. Decide again at once
            // on a fresh read (which is what the guard asks for) instead of waiting on the
            // growing per-object backoff for the cache: while another client keeps writing the
            // object, its cache can stay stale and the object kept waiting for minutes (seen in
            // `conflicts_from_a_busy_writer_cost_no_duplicate_and_no_stuck_object`). A few
            // tries, then the backoff as before.
            let conflict = matches!(&result, Err(e) if e.is_conflict());
            if !conflict || attempt == CONFLICT_RETRIES {
                break result;
            }
            attempt += 1;
            match fresh(&ctx.client, current.as_ref()).await {
                Some(mut fresh) => {
                    R::slim(&mut fresh);
                    current = Arc::new(fresh);
                }
                None => break result,
            }
        };
        let (failed_on, label) = match &result {
            Ok(Next::Settled | Next::LookAgainIn(_)) => (None, None),
            Ok(Next::Retry { reason, .. }) => (Some(*reason), Some(reason.as_str())),
            Err(e) => (None, Some(e.reason())),
        };
        ctx.metrics.reconciled(R::KIND, started.elapsed(), label);
        if !matches!(
            result,
            Err(Error::Kube(_) | Error::KubeTimeout(_) | Error::CrdUnreadable { .. })
        ) {
            driver.flows.settle(&obj, failed_on);
        }
        Ok(driver.requeue(&obj, Some(result?)))
    }
    .instrument(span)
    .await
}

pub fn error_policy<R: Reconciler>(
    obj: Arc<R::Object>,
    error: &Error,
    driver: Arc<Driver<R>>,
) -> Action {
    warn!(kind = R::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %error, "reconcile failed; backing off");
    driver.requeue(&obj, None)
}
