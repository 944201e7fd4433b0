//! The controller's wiring: per watched scope, a SyncSource watch and a Secret watch, each into
//! its cache; the per-object reconcile driver around the flows; readiness once every watch has
//! listed.

use super::credentials::{Credentials, DefaultToken};
use super::decide::Retry;
use super::orphans::Orphans;
use super::readiness::Countdown;
use super::{Context, Error, FIELD_MANAGER, Next, cache, drift, reconcile};
use crate::chroma::ChromaClient;
use crate::crd::SyncSource;
use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller as Runtime};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{Instrument, info, info_span, warn};

/// Secrets that can never hold a Chroma token and may be large (Helm keeps whole releases in
/// Secrets): left out of the cache.
const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Objects per page of an initial list (kube's default). Each page costs the apiserver time
/// that grows with the objects listed: at 100,000 SyncSources pages of 100 took 37-40 s to list
/// after a restart, pages of 500 16-19 s, for 3-4% more RSS after it (a page is held whole,
/// managedFields and all, while its objects enter the cache; tests/bench/HISTORY.md). Streamed
/// initial lists (`sendInitialEvents`) are not used: in one run of the apiserver-restart test
/// their end-of-list bookmark never came, and the operator heard nothing more.
const LIST_PAGE: u32 = 500;

/// Immediate re-reads after a 409 within one reconcile.
const CONFLICT_RETRIES: u32 = 3;

/// The longest wait for a fresh read of an object.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once (per watched namespace).
    pub concurrency: u16,
    /// Narrows the Secret watch to Secrets with these labels (a label selector); none: every
    /// Secret but Helm releases and service-account tokens.
    pub secret_label_selector: Option<String>,
    /// How often every recorded source is checked to still exist (see [`drift`](super::drift));
    /// zero turns the check off.
    pub drift_interval: Duration,
}

/// What the controller is made of.
pub struct Parts {
    pub client: Client,
    pub chroma: ChromaClient,
    pub metrics: Metrics,
    pub default_token: DefaultToken,
    /// The reporting instance of Events (the pod's name); the field manager when unset.
    pub instance: Option<String>,
    pub settings: Settings,
}

/// The controller, built whole before it runs: its caches, and the context its reconciles share.
pub struct Controller {
    ctx: Arc<Context>,
    scopes: Vec<Scope>,
    concurrency: u16,
    drift_interval: Duration,
    secret_selector: Option<String>,
}

/// One watched namespace (or all of them): its two watches and the caches they fill.
struct Scope {
    sources: Api<SyncSource>,
    secrets: Api<PartialObjectMeta<Secret>>,
    source_cache: Writer<SyncSource>,
    secret_cache: Writer<PartialObjectMeta<Secret>>,
}

impl Controller {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            client,
            chroma,
            metrics,
            default_token,
            instance,
            settings,
        } = parts;
        let namespaces: Vec<Option<&str>> = if settings.namespaces.is_empty() {
            vec![None]
        } else {
            settings
                .namespaces
                .iter()
                .map(|ns| Some(ns.as_str()))
                .collect()
        };
        let scopes: Vec<Scope> = namespaces
            .into_iter()
            .map(|ns| Scope {
                sources: match ns {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                },
                secrets: match ns {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                },
                source_cache: Writer::default(),
                secret_cache: Writer::default(),
            })
            .collect();
        let secret_caches = scopes.iter().map(|s| s.secret_cache.as_reader()).collect();
        let credentials = Credentials::new(
            client.clone(),
            default_token,
            secret_caches,
            settings.secret_label_selector.clone(),
        );
        let instance = instance.as_deref().unwrap_or(FIELD_MANAGER);
        let source_caches: Vec<_> = scopes.iter().map(|s| s.source_cache.as_reader()).collect();
        // `/metrics` shows every cached object's conditions (for alerts), read at each scrape.
        metrics.show_cached_conditions(source_caches.clone(), |s: &SyncSource| {
            s.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
        });
        let ctx = Context::new(
            client,
            chroma,
            metrics,
            credentials,
            instance,
            source_caches,
        );
        Self {
            ctx: Arc::new(ctx),
            scopes,
            concurrency: settings.concurrency,
            drift_interval: settings.drift_interval,
            secret_selector: settings.secret_label_selector,
        }
    }

    /// The context the reconciles share (to stop new creates, to flush Events at the end).
    pub fn context(&self) -> Arc<Context> {
        self.ctx.clone()
    }

    /// Runs until `shutdown` resolves; then lets reconciles in flight finish. `ready` is set
    /// once every watch has listed its objects.
    pub async fn run(
        self,
        ready: Arc<AtomicBool>,
        shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ) {
        let Self {
            ctx,
            scopes,
            concurrency,
            drift_interval,
            secret_selector,
        } = self;
        // Readiness comes from each watch's first InitDone. (A Store's own readiness future
        // wakes only one waiter, and the Controller already waits on it.)
        let synced_ctx = ctx.clone();
        let secrets_listed = Countdown::new(scopes.len(), move || {
            synced_ctx.credentials.set_synced();
        });
        let all_listed = Countdown::new(2 * scopes.len(), move || {
            info!("caches synced; ready");
            ready.store(true, Ordering::SeqCst);
        });
        let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
        let mut controllers = Vec::new();
        let mut drift_scopes = Vec::new();
        for scope in scopes {
            let source_reader = scope.source_cache.as_reader();
            let (trigger, drifted) = futures::channel::mpsc::unbounded();
            drift_scopes.push(drift::Scope {
                store: source_reader.clone(),
                trigger,
            });
            let sources_done = all_listed.once();
            let mut orphans = Orphans::new(source_reader.clone(), ctx.clone());
            let mut changes = cache::Changes::default();
            let config = watcher::Config::default().page_size(LIST_PAGE);
            let source_stream = watcher(scope.sources, config)
                .default_backoff()
                .modify(cache::slim_source)
                // Before the store takes the event in, while it still holds the last known state.
                .inspect(move |event| {
                    if let Ok(event) = event {
                        orphans.observe(event);
                    }
                })
                .reflect(scope.source_cache)
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
            let mut config = watcher::Config::default().fields(SECRET_FIELD_SELECTOR);
            if let Some(selector) = &secret_selector {
                config = config.labels(selector);
            }
            // Metadata only: which Secrets exist and when they change (see `credentials`).
            let secret_stream = watcher(scope.secrets, config)
                .default_backoff()
                .modify(cache::slim)
                .reflect(scope.secret_cache)
                .inspect(move |event| {
                    if let Ok(watcher::Event::InitDone) = event {
                        secrets_done();
                        all_done();
                    }
                })
                .applied_objects();

            let waiters = ctx.clone();
            let controller = Runtime::for_stream(source_stream, source_reader)
                .watches_stream(secret_stream, move |secret: PartialObjectMeta<Secret>| {
                    waiters.credentials.waiting_for(&secret)
                })
                .reconcile_on(drifted)
                .with_config(ControllerConfig::default().concurrency(concurrency))
                .graceful_shutdown_on(shutdown.clone())
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| {
                    // A watch that cannot list or watch (the CRD deleted, RBAC changed, the
                    // apiserver away) retries with backoff; say why, once per try. Reconcile
                    // errors are reported by `error_policy`.
                    if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                        warn!(error = %e, "watching SyncSources failed; retrying with backoff");
                    }
                    futures::future::ready(())
                });
            controllers.push(controller);
        }
        let drift = (!drift_interval.is_zero())
            .then(|| tokio::spawn(drift::run(ctx.clone(), drift_scopes, drift_interval)));
        futures::future::join_all(controllers).await;
        if let Some(drift) = drift {
            drift.abort();
        }
        info!("controller stopped");
    }
}

/// One reconcile of one object: the flow its state calls for, then the metrics, the Secret
/// waiters and the requeue its outcome calls for.
pub(super) async fn reconcile(obj: Arc<SyncSource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    async move {
        ctx.credentials.synced().await;
        let started = Instant::now();
        let mut current = obj.clone();
        let mut attempt = 0;
        let result = loop {
            let result = if super::intent::paused(current.meta()) {
                reconcile::paused(&current, &ctx).await
            } else if current.meta().deletion_timestamp.is_some() {
                reconcile::cleanup(&current, &ctx).await
            } else {
                reconcile::apply(&current, &ctx).await
            };
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
            ctx.credentials.settle(&obj, error_reason);
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

/// The object as stored now (not as cached), or None if it is gone or cannot be read.
pub(super) async fn fresh(client: &Client, obj: &SyncSource) -> Option<SyncSource> {
    let api: Api<SyncSource> =
        Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let name = obj.name_any();
    let read = api.get_opt(&name);
    let mut fresh = tokio::time::timeout(READ_TIMEOUT, read)
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
