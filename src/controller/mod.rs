//! The SyncSource controller.
//!
//! - [`wiring`]: the watches, their caches and the per-object reconcile driver.
//! - [`reconcile`]: the flows, apply (create, replace, recover) and cleanup (delete or retain),
//!   and the Kubernetes writes they make.
//! - [`decide`] and [`status`]: the pure decisions, what a failure means and what status says.
//! - [`credentials`]: tokens, from Secrets or the default, and the objects waiting on a Secret.
//! - [`orphans`]: objects the apiserver let go with the finalizer still on.
//! - [`lookup`]: what a lookup for an unrecorded create's source makes of the listing it shares.
//! - [`events`], [`cache`], [`readiness`]: Events off the reconcile path, what the caches keep,
//!   readiness.

mod cache;
mod credentials;
pub mod decide;
mod drift;
pub mod events;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod flows;
pub mod intent;
pub(crate) mod lookup;
mod orphans;
mod readiness;
pub mod reason;
pub(crate) mod reconcile;
pub mod status;
mod wiring;
pub(crate) mod writes;

pub use cache::slim;
pub use credentials::DefaultToken;
pub use reason::Reason;
pub use wiring::{Controller, Parts, Settings};

use crate::chroma::shared::SharedListing;
use crate::chroma::{ChromaClient, Token};
use crate::crd::SyncSource;
use crate::metrics::Metrics;
use credentials::Credentials;
use decide::Retry;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The field manager of every write, and the reporting controller of every Event.
pub const FIELD_MANAGER: &str = "chroma-sync-operator";

/// How long the first lookup for an unrecorded create waits for others of its listing before
/// their pass lists. After a restart the reconciles of the marked objects start within it, so
/// they share one pass instead of a listing each; later lookups wait only for the pass that is
/// listing (see [`crate::chroma::shared`]). A lone lookup pays only this wait.
const LOOKUP_GATHER: Duration = Duration::from_millis(100);

/// The listing a lookup reads: a token, and the database (of sources) or the source id (of
/// invocations).
type Listing = (Token, String);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the operator is shutting down; no new create is started")]
    ShuttingDown,
    #[error("Kubernetes API: no answer within {0:?}")]
    KubeTimeout(std::time::Duration),
}

impl Error {
    /// The metric label of a reconcile that failed on this error.
    fn reason(&self) -> Reason {
        match self {
            e if e.is_conflict() => Reason::KubeConflict,
            Error::Kube(_) => Reason::KubeApi,
            Error::ShuttingDown => Reason::ShuttingDown,
            Error::KubeTimeout(_) => Reason::KubeTimeout,
        }
    }

    /// A 409: a guarded write met a newer object than the one it was decided on.
    pub fn is_conflict(&self) -> bool {
        self.api_code() == Some(409)
    }

    /// A 404: the object is gone.
    pub fn is_not_found(&self) -> bool {
        self.api_code() == Some(404)
    }

    fn api_code(&self) -> Option<u16> {
        match self {
            Error::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }
}

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do until something changes.
    Settled,
    /// Fine, and something is due then (`spec.sync`: a run to follow, the next tick).
    LookAgainIn(std::time::Duration),
    /// The outcome needs attention (`reason`); try again as `retry` says.
    Retry { retry: Retry, reason: Reason },
}

/// What every reconcile shares: the clients, the credentials, the per-object failure counts.
pub struct Context {
    pub client: Client,
    pub chroma: ChromaClient,
    pub events: events::Events,
    pub metrics: Metrics,
    credentials: Credentials,
    failures: Mutex<HashMap<ObjectRef<SyncSource>, u32>>,
    stopping: AtomicBool,
    /// The SyncSource caches, one per watched scope (read by adoption and the drift check).
    sources: Vec<Store<SyncSource>>,
    /// Objects whose source the drift check did not find: their next reconcile looks.
    suspects: Mutex<HashSet<ObjectRef<SyncSource>>>,
    /// Lookups for unrecorded creates' sources, sharing a pass per (token, database).
    source_lookups: SharedListing<Listing, lookup::SourceLookup>,
    /// Lookups for unrecorded runs' invocations, sharing a pass per (token, source id).
    pub(crate) invocation_lookups: SharedListing<Listing, crate::runs::decide::InvocationLookup>,
}

impl Context {
    /// Built by [`Controller::new`], which owns the Secret caches `credentials` reads.
    fn new(
        client: Client,
        chroma: ChromaClient,
        metrics: Metrics,
        credentials: Credentials,
        instance: &str,
        sources: Vec<Store<SyncSource>>,
    ) -> Self {
        Self {
            events: events::Events::start(client.clone(), FIELD_MANAGER, instance, metrics.clone()),
            client,
            chroma,
            metrics,
            credentials,
            failures: Mutex::default(),
            stopping: AtomicBool::new(false),
            sources,
            suspects: Mutex::default(),
            source_lookups: SharedListing::new(LOOKUP_GATHER),
            invocation_lookups: SharedListing::new(LOOKUP_GATHER),
        }
    }

    /// Marks `obj`'s source as possibly gone: its next reconcile looks at it (one GET).
    fn suspect(&self, obj: ObjectRef<SyncSource>) {
        self.suspects.lock().expect("suspects").insert(obj);
    }

    /// Whether the drift check suspected `obj`'s source; forgets it (the caller looks now).
    fn take_suspect(&self, obj: &SyncSource) -> bool {
        let key = ObjectRef::from_obj(obj);
        self.suspects.lock().expect("suspects").remove(&key)
    }

    /// The SyncSource `namespace/name` as cached, if a watched scope holds it.
    pub(crate) fn cached_source(&self, namespace: &str, name: &str) -> Option<Arc<SyncSource>> {
        let key = ObjectRef::new(name).within(namespace);
        self.sources.iter().find_map(|store| store.get(&key))
    }

    /// Another object (`namespace/name`) that records source `id`, if any: a source has one
    /// owner, so it is never adopted a second time.
    fn claimed_by_another(&self, obj: &SyncSource, id: &str) -> Option<String> {
        self.sources.iter().find_map(|store| {
            store.state().iter().find_map(|o| {
                let records = o.status.as_ref()?.source_id.as_deref() == Some(id);
                (records && o.metadata.uid != obj.metadata.uid).then(|| {
                    format!(
                        "{}/{}",
                        o.metadata.namespace.as_deref().unwrap_or_default(),
                        o.name_any()
                    )
                })
            })
        })
    }

    /// From now on no create call is started; reconciles already past that point finish.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until every Secret cache has listed its Secrets (see [`credentials`]).
    pub async fn secrets_synced(&self) {
        self.credentials.synced().await;
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The token for `obj`, or why there is none (see [`credentials`]).
    pub async fn token_for(&self, obj: &SyncSource) -> Result<Token, String> {
        self.credentials.token_for(obj).await
    }

    /// The next requeue for an object's outcome, counting consecutive failures per object.
    fn requeue(&self, obj: &SyncSource, retry: Option<Retry>) -> Action {
        let key = ObjectRef::from_obj(obj);
        let mut failures = self.failures.lock().expect("failure counts");
        let Some(retry) = retry else {
            failures.remove(&key);
            return Action::await_change();
        };
        let attempt = failures.entry(key).or_default();
        *attempt = attempt.saturating_add(1);
        let jitter = rand::random_range(0.8..1.2);
        match decide::backoff(retry, *attempt, jitter) {
            Some(delay) => Action::requeue(delay),
            None => Action::await_change(),
        }
    }
}
