//! The SyncSource controller: watches, per-object backoff, and the wiring around the reconcile
//! flows in [`reconcile`].

mod cache;
pub mod decide;
pub mod events;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod flows;
pub mod reason;
pub(crate) mod reconcile;
pub mod status;

pub use cache::slim;

use crate::chroma::{ChromaClient, Token};
use crate::crd::SyncSource;
use crate::metrics::Metrics;
use decide::Retry;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
pub use reason::Reason;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// The field manager of every write, and the reporting controller of every Event.
pub const FIELD_MANAGER: &str = "chroma-sync-operator";

/// Secrets that can never hold a Chroma token and may be large (Helm keeps whole releases in
/// Secrets): left out of the cache.
const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Objects per page of an initial list. A page is held whole, managedFields and all, while
/// its objects enter the cache; kube's 500 left about 7 MiB of freed pages behind after a restart
/// at ten thousand objects (45 MiB against 38 with 100), for a relist that takes longer (a
/// restart at 10k: 1.7 s -> 3.2 s). Streamed initial lists (`sendInitialEvents`) needed 35 MiB,
/// but in one of two runs of the apiserver-restart test the operator heard nothing more: the
/// end-of-list bookmark never came.
const LIST_PAGE: u32 = 100;

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

/// Where the default token (for objects without `tokenSecretRef`) comes from.
#[derive(Clone, Default)]
pub struct DefaultToken {
    /// From the environment, read once at start.
    pub value: Option<Token>,
    /// A file, read at each use, so a mounted Secret rotates without a restart.
    pub file: Option<PathBuf>,
}

pub struct Context {
    pub client: Client,
    pub chroma: ChromaClient,
    pub events: events::Events,
    pub metrics: Metrics,
    default_token: DefaultToken,
    secrets: Mutex<Vec<Store<Secret>>>,
    /// Becomes true once every Secret cache has listed. (A `Store`'s own readiness future wakes
    /// only one waiter, so reconciles wait on this instead.)
    secrets_synced: tokio::sync::watch::Sender<bool>,
    failures: Mutex<HashMap<ObjectRef<SyncSource>, u32>>,
    /// SyncSources that need a token from a Secret they reference, by that Secret: a change of
    /// the Secret brings exactly these back. Entered before the Secret is looked up (so a Secret
    /// that appears right after the look-up still wakes the object), left once the object no
    /// longer waits on credentials.
    waiting_for_secret: Mutex<HashMap<ObjectRef<Secret>, HashSet<ObjectRef<SyncSource>>>>,
    stopping: AtomicBool,
}

impl Context {
    pub fn new(
        client: Client,
        chroma: ChromaClient,
        metrics: Metrics,
        default_token: DefaultToken,
        instance: Option<String>,
    ) -> Self {
        let instance = instance.unwrap_or_else(|| FIELD_MANAGER.to_owned());
        Self {
            events: events::Events::start(
                client.clone(),
                FIELD_MANAGER,
                &instance,
                metrics.clone(),
            ),
            client,
            chroma,
            metrics,
            default_token,
            secrets: Mutex::default(),
            secrets_synced: tokio::sync::watch::Sender::new(false),
            failures: Mutex::default(),
            waiting_for_secret: Mutex::default(),
            stopping: AtomicBool::new(false),
        }
    }

    /// From now on no create call is started; reconciles already past that point finish.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until every Secret cache has listed its Secrets, so a token that exists is never
    /// reported missing just because the operator has only started.
    pub async fn secrets_synced(&self) {
        let _ = self
            .secrets_synced
            .subscribe()
            .wait_for(|synced| *synced)
            .await;
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The token for an object, or why there is none. Never the token's value in the reason.
    pub fn token_for(&self, obj: &SyncSource) -> Result<Token, String> {
        let Some(reference) = &obj.spec.token_secret_ref else {
            return self.default_token();
        };
        let ns = obj.namespace().unwrap_or_default();
        let key = ObjectRef::<Secret>::new(&reference.name).within(&ns);
        self.waiting_for_secret
            .lock()
            .expect("secret waiters")
            .entry(key.clone())
            .or_default()
            .insert(ObjectRef::from_obj(obj));
        let secret = self
            .secrets
            .lock()
            .expect("secret stores")
            .iter()
            .find_map(|s| s.get(&key));
        let Some(secret) = secret else {
            return Err(format!(
                "Secret {ns}/{} (tokenSecretRef) does not exist",
                reference.name
            ));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key).cloned())
            });
        value.and_then(Token::new).ok_or_else(|| {
            format!(
                "Secret {ns}/{} has no non-empty key {:?}",
                reference.name, reference.key
            )
        })
    }

    fn default_token(&self) -> Result<Token, String> {
        if let Some(path) = &self.default_token.file {
            return std::fs::read_to_string(path)
                .ok()
                .and_then(Token::new)
                .ok_or_else(|| {
                    format!(
                        "no tokenSecretRef, and the operator's token file {} is missing or empty",
                        path.display()
                    )
                });
        }
        self.default_token.value.clone().ok_or_else(|| {
            "no tokenSecretRef, and the operator has no default token configured".to_owned()
        })
    }

    /// The objects a change of `secret` may unblock.
    fn waiting_for(&self, secret: &Secret) -> Vec<ObjectRef<SyncSource>> {
        let key = ObjectRef::from_obj(secret);
        let waiting = self.waiting_for_secret.lock().expect("secret waiters");
        waiting
            .get(&key)
            .map(|objects| objects.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets that `obj` waits for a Secret, unless `reason` says it still does.
    fn settle_secret_wait(&self, obj: &SyncSource, reason: Option<Reason>) {
        if reason.is_some_and(Reason::is_about_credentials) {
            return;
        }
        let me = ObjectRef::from_obj(obj);
        let mut waiting = self.waiting_for_secret.lock().expect("secret waiters");
        waiting.retain(|_, objects| {
            objects.remove(&me);
            !objects.is_empty()
        });
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

async fn reconcile(obj: Arc<SyncSource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    async move {
        ctx.secrets_synced().await;
        let started = Instant::now();
        let mut current = obj.clone();
        let mut attempt = 0;
        let result = loop {
            let result = if current.meta().deletion_timestamp.is_some() {
                reconcile::cleanup(&current, &ctx).await
            } else {
                reconcile::apply(&current, &ctx).await
            };
            // A 409 on a guarded write means the cached object was stale. Decide again at once on
            // a fresh read (which is what the guard asks for) instead of waiting on the growing
            // per-object backoff for the cache: while another client keeps writing the object,
            // its cache can stay stale and the object kept waiting for minutes (seen in
            // `conflicts_from_a_busy_writer_cost_no_duplicate_and_no_stuck_object`). A few
            // tries, then the backoff as before.
            let conflict = matches!(&result, Err(e) if e.is_conflict());
            if !conflict || attempt == CONFLICT_RETRIES {
                break result;
            }
            attempt += 1;
            match fresh(&ctx.client, &current).await {
                Some(fresh) => current = Arc::new(fresh),
                None => break result,
            }
        };
        let error_reason = match &result {
            Ok(Next::Settled | Next::LookAgainIn(_)) => None,
            Ok(Next::Retry { reason, .. }) => Some(*reason),
            Err(e) => Some(e.reason()),
        };
        ctx.metrics.reconciled(started.elapsed(), error_reason);
        if !matches!(result, Err(Error::Kube(_) | Error::KubeTimeout(_))) {
            ctx.settle_secret_wait(&obj, error_reason);
        }
        match result? {
            Next::Settled => Ok(ctx.requeue(&obj, None)),
            Next::LookAgainIn(after) => {
                ctx.requeue(&obj, None);
                Ok(Action::requeue(after))
            }
            Next::Retry { retry, .. } => Ok(ctx.requeue(&obj, Some(retry))),
        }
    }
    .instrument(span)
    .await
}

/// Immediate re-reads after a 409 within one reconcile.
const CONFLICT_RETRIES: u32 = 3;

/// The object as stored now (not as cached), or None if it is gone or cannot be read.
async fn fresh(client: &Client, obj: &SyncSource) -> Option<SyncSource> {
    let api: Api<SyncSource> =
        Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let name = obj.name_any();
    let read = api.get_opt(&name);
    let mut fresh = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .ok()?
        .ok()??;
    cache::slim_source(&mut fresh);
    Some(fresh)
}

fn error_policy(obj: Arc<SyncSource>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %error, "reconcile failed; backing off");
    ctx.requeue(&obj, Some(Retry::Soon { not_before: None }))
}

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once (per watched namespace).
    pub concurrency: u16,
}

/// Runs the controller until `shutdown` resolves; then lets reconciles in flight finish. `ready`
/// is set once every watch has listed its objects.
pub async fn run(
    client: Client,
    settings: Settings,
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    // Readiness comes from each watch's first InitDone. (A Store's own readiness future wakes
    // only one waiter, and the Controller already waits on it.)
    let synced_ctx = ctx.clone();
    let secrets_listed = Countdown::new(scopes.len(), move || {
        synced_ctx.secrets_synced.send_replace(true);
    });
    let all_listed = Countdown::new(2 * scopes.len(), move || {
        info!("caches synced; ready");
        ready.store(true, Ordering::SeqCst);
    });
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let mut controllers = Vec::new();
    for scope in scopes {
        let (sources, secrets) = match &scope {
            Some(ns) => (
                Api::<SyncSource>::namespaced(client.clone(), ns),
                Api::<Secret>::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let (source_reader, source_writer) = reflector::store();
        let (secret_reader, secret_writer) = reflector::store();
        let sources_done = all_listed.once();
        let mut orphans = Orphans::new(source_reader.clone(), ctx.clone());
        let mut changes = cache::Changes::default();
        let source_stream = watcher(sources, watcher::Config::default().page_size(LIST_PAGE))
            .default_backoff()
            .modify(cache::slim_source)
            // Before the store takes the event in, while it still holds the last known state.
            .inspect(move |event| {
                if let Ok(event) = event {
                    orphans.observe(event);
                }
            })
            .reflect(source_writer)
            .inspect(move |event| {
                if let Ok(watcher::Event::InitDone) = event {
                    sources_done();
                }
            })
            .filter_map(move |event| {
                futures::future::ready(match event {
                    Ok(event) => changes.news(event).map(Ok),
                    Err(e) => Some(Err(e)),
                })
            });
        let (secrets_done, all_done) = (secrets_listed.once(), all_listed.once());
        let secret_stream = watcher(
            secrets,
            watcher::Config::default().fields(SECRET_FIELD_SELECTOR),
        )
        .default_backoff()
        .modify(cache::slim)
        .reflect(secret_writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                secrets_done();
                all_done();
            }
        })
        .applied_objects();
        ctx.secrets
            .lock()
            .expect("secret stores")
            .push(secret_reader);

        let waiters = ctx.clone();
        let controller = Controller::for_stream(source_stream, source_reader)
            .watches_stream(secret_stream, move |secret: Secret| {
                waiters.waiting_for(&secret)
            })
            .with_config(ControllerConfig::default().concurrency(settings.concurrency))
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| {
                // A watch that cannot list or watch (the CRD deleted, RBAC changed, the apiserver
                // away) retries with backoff; say why, once per try. Reconcile errors are
                // reported by `error_policy`.
                if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                    warn!(error = %e, "watching SyncSources failed; retrying with backoff");
                }
                futures::future::ready(())
            });
        controllers.push(controller);
    }
    futures::future::join_all(controllers).await;
    info!("controller stopped");
}

/// Objects the apiserver let go with the operator's finalizer still on. A delete that read the
/// object before the finalizer was added can remove it after (kubernetes/kubernetes#77988): seen
/// here after a create whose status write had already succeeded, so no reconcile ever learns of
/// it and the source would be left in Chroma. Such an object shows as a watch Delete event whose
/// last state still has the finalizer, or, when the watch was down meanwhile, as an object the
/// relist no longer has. Either way its last known state says which source to delete. (A
/// normal deletion's last state has the finalizer removed by the operator itself, or at least a
/// deletionTimestamp; a staler one costs one DELETE answered 404.)
struct Orphans {
    store: Store<SyncSource>,
    ctx: Arc<Context>,
    /// Uids seen by a relist in progress.
    relisted: Option<HashSet<String>>,
}

impl Orphans {
    fn new(store: Store<SyncSource>, ctx: Arc<Context>) -> Self {
        Self {
            store,
            ctx,
            relisted: None,
        }
    }

    fn observe(&mut self, event: &watcher::Event<SyncSource>) {
        match event {
            watcher::Event::Delete(obj) => self.check(obj),
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some(seen), Some(uid)) = (self.relisted.as_mut(), obj.uid()) {
                    seen.insert(uid);
                }
            }
            watcher::Event::InitDone => {
                let Some(seen) = self.relisted.take() else {
                    return;
                };
                for obj in self.store.state() {
                    if obj.uid().is_some_and(|uid| !seen.contains(&uid)) {
                        self.check(&obj);
                    }
                }
            }
            watcher::Event::Apply(_) => {}
        }
    }

    fn check(&self, obj: &SyncSource) {
        let ours = obj.finalizers().iter().any(|f| f == crate::crd::FINALIZER);
        // A deletion the operator saw begin is its cleanup's to finish; the bypass never has a
        // deletionTimestamp (the object goes at once).
        let bypassed = ours && obj.metadata.deletion_timestamp.is_none();
        if bypassed && obj.spec.deletion_policy != crate::crd::DeletionPolicy::Retain {
            let namesake = self.namesake_of(obj);
            let (ctx, obj) = (self.ctx.clone(), obj.clone());
            let span = info_span!("orphan", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
            tokio::spawn(
                async move { reconcile::orphaned(&ctx, &obj, namesake).await }.instrument(span),
            );
        }
    }

    /// Whether another live object declares the same source (database and natural key), so a
    /// lookup by that key could find its source rather than the vanished object's.
    fn namesake_of(&self, gone: &SyncSource) -> bool {
        let key = |o: &SyncSource| {
            let p = crate::payload::build(&o.spec).ok()?;
            Some((crate::payload::NaturalKey::of_payload(&p), p.database_name))
        };
        let Some(wanted) = key(gone) else {
            return false;
        };
        self.store
            .state()
            .iter()
            .any(|o| o.uid() != gone.uid() && key(o).as_ref() == Some(&wanted))
    }
}

/// Runs `on_zero` once, when `n` distinct parties have each called their `once()` handle
/// (a handle's later calls do not count again: watches re-list after every reconnect).
struct Countdown {
    remaining: Arc<std::sync::atomic::AtomicUsize>,
    on_zero: Arc<dyn Fn() + Send + Sync>,
}

impl Countdown {
    fn new(n: usize, on_zero: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            remaining: Arc::new(std::sync::atomic::AtomicUsize::new(n)),
            on_zero: Arc::new(on_zero),
        }
    }

    fn once(&self) -> impl Fn() + Send + Sync + 'static {
        let (remaining, on_zero) = (self.remaining.clone(), self.on_zero.clone());
        let counted = AtomicBool::new(false);
        move || {
            if !counted.swap(true, Ordering::SeqCst)
                && remaining.fetch_sub(1, Ordering::SeqCst) == 1
            {
                on_zero();
            }
        }
    }
}
