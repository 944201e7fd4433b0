//! The SyncSource controller: one Chroma Sync source per SyncSource, created once (the kernel's
//! crash-safe create), kept as declared, deleted or retained with its object; and its
//! `spec.sync`, which starts SyncRuns.
//!
//! - [`reconcile`]: the flows, apply (create, replace, recover, adopt) and cleanup, and their IO.
//! - [`status`], [`decide`], [`payload`]: the pure decisions: what status says, what a failure
//!   means for a source, the create payload.
//! - [`sync`]: `spec.sync`, the runs it starts and when.
//! - [`drift`], [`orphans`], [`lookup`]: the drift check, objects the apiserver let go with the
//!   finalizer on, the shared lookups of unrecorded creates.
//! - Here: the watches per scope, their caches, and [`Sources`], the kind's [`Reconciler`].

pub mod decide;
mod drift;
#[cfg(test)]
mod flows;
pub(crate) mod lookup;
mod orphans;
pub mod payload;
pub mod reason;
mod recent;
pub(crate) mod reconcile;
pub mod status;
pub mod sync;

pub use reason::Reason;

/// How a SyncSource reconcile ended.
pub type Next = crate::kernel::Next<Reason>;

use crate::chroma::shared::SharedListing;
use crate::crd::SyncSource;
use crate::kernel::connections::Connections;
use crate::kernel::create::{LOOKUP_GATHER, Marked};
use crate::kernel::credentials::{Credentials, DefaultToken};
use crate::kernel::driver::{Driver, Outcome, Reconciler};
use crate::kernel::readiness::Countdown;
use crate::kernel::{Context, FIELD_MANAGER, cache};
use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller as Runtime;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use orphans::Orphans;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;

/// Secrets that can never hold a Chroma token and may be large (Helm keeps whole releases in
/// Secrets): left out of the cache.
const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Objects per page of an initial list (kube's default). Each page costs the apiserver time that
/// grows with the objects listed, so at scale the page count, not the page size, sets a
/// restart's time (figures in tests/bench/HISTORY.md). Streamed initial lists
/// (`sendInitialEvents`) are not used: in one run of the apiserver-restart test their
/// end-of-list bookmark never came, and the operator heard nothing more.
const LIST_PAGE: u32 = 500;

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
    /// The routing of calls to connections (see [`crate::connection`]).
    pub connections: Arc<Connections>,
    pub metrics: Metrics,
    pub default_token: DefaultToken,
    /// The reporting instance of Events (the pod's name); the field manager when unset.
    pub instance: Option<String>,
    /// Where events go (`--events-addr`), if anywhere.
    pub notifier: crate::kernel::notify::Notifier,
    pub settings: Settings,
}

/// The controller, built whole before it runs: its caches, and the context its reconciles share.
pub struct Controller {
    driver: Arc<Driver<Sources>>,
    scopes: Vec<Scope>,
    concurrency: u16,
    drift_interval: Duration,
    secret_selector: Option<String>,
}

/// One watched namespace (or all of them): its two watches and the caches they fill.
struct Scope {
    /// The namespace watched; None: all.
    namespace: Option<String>,
    sources: Api<SyncSource>,
    secrets: Api<PartialObjectMeta<Secret>>,
    source_cache: Writer<SyncSource>,
    secret_cache: Writer<PartialObjectMeta<Secret>>,
}

impl Controller {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            client,
            connections,
            metrics,
            default_token,
            instance,
            notifier,
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
                namespace: ns.map(str::to_owned),
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
            connections,
            metrics,
            credentials,
            instance,
            source_caches,
        )
        .with_notifier(notifier);
        Self {
            driver: Driver::new(Sources::new(Arc::new(ctx))),
            scopes,
            concurrency: settings.concurrency,
            drift_interval: settings.drift_interval,
            secret_selector: settings.secret_label_selector,
        }
    }

    /// The context the reconciles share (to stop new creates, to flush Events at the end).
    pub fn context(&self) -> Arc<Context> {
        self.driver.flows.ctx.clone()
    }

    /// Runs until `shutdown` resolves; then lets reconciles in flight finish. `ready` is set
    /// once every watch has listed its objects.
    pub async fn run(
        self,
        ready: Arc<AtomicBool>,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        let Self {
            driver,
            scopes,
            concurrency,
            drift_interval,
            secret_selector,
        } = self;
        // Readiness comes from each watch's first InitDone. (A Store's own readiness future
        // wakes only one waiter, and the Controller already waits on it.)
        let synced_ctx = driver.flows.ctx.clone();
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
        let mut triggers = Vec::new();
        for scope in scopes {
            let source_reader = scope.source_cache.as_reader();
            let (trigger, drifted) = futures::channel::mpsc::unbounded();
            triggers.push((scope.namespace.clone(), trigger.clone()));
            drift_scopes.push(drift::Scope {
                store: source_reader.clone(),
                trigger,
            });
            let sources_done = all_listed.once();
            let mut orphans = Orphans::new(source_reader.clone(), driver.clone());
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

            let waiters = driver.flows.ctx.clone();
            let referrers = source_reader.clone();
            let controller = Runtime::for_stream(source_stream, source_reader)
                .watches_stream(secret_stream, move |secret: PartialObjectMeta<Secret>| {
                    let namespace = secret.namespace().unwrap_or_default();
                    waiters
                        .connections
                        .secret_changed(&namespace, &secret.name_any());
                    let mut woken = waiters.credentials.waiting_for(&secret);
                    woken.extend(aws_key_readers(&referrers, &namespace, &secret.name_any()));
                    woken
                })
                .reconcile_on(drifted);
            controllers.push(
                driver
                    .clone()
                    .run(controller, concurrency, shutdown.clone()),
            );
        }
        // Objects refused by a connection, woken when it (or their namespace's labels) changes,
        // go to the controller of their scope.
        let woken = driver.flows.ctx.connections.woken().map(|woken| {
            tokio::spawn(woken.for_each(move |obj| {
                let mine = |ns: &Option<String>| ns.is_none() || *ns == obj.namespace;
                if let Some((_, trigger)) = triggers.iter().find(|(ns, _)| mine(ns)) {
                    let _ = trigger.unbounded_send(obj);
                }
                futures::future::ready(())
            }))
        });
        let drift = (!drift_interval.is_zero())
            .then(|| tokio::spawn(drift::run(driver.clone(), drift_scopes, drift_interval)));
        futures::future::join_all(controllers).await;
        for task in drift.into_iter().chain(woken) {
            task.abort();
        }
        info!("controller stopped");
    }
}

/// The S3 sources whose `credentialsSecretRef` names Secret `namespace/name`, at rest or not: a
/// changed key reaches their payload (and replaces their source), so each change wakes them.
fn aws_key_readers(
    sources: &Store<SyncSource>,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<SyncSource>> {
    let reads = |o: &SyncSource| {
        o.metadata.namespace.as_deref() == Some(namespace)
            && o.spec
                .s3
                .as_ref()
                .and_then(|s3| s3.credentials_secret_ref.as_ref())
                .is_some_and(|r| r.name == name)
    };
    sources
        .state()
        .iter()
        .filter(|o| reads(o))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// The SyncSource kind's flows and what only they keep: the kernel's [`Context`] (reached
/// through `Deref`), the drift check's suspects and the shared lookups of unrecorded creates.
pub struct Sources {
    ctx: Arc<Context>,
    /// Objects whose source the drift check did not find: their next reconcile looks.
    suspects: Mutex<HashSet<ObjectRef<SyncSource>>>,
    /// Lookups for unrecorded creates' sources, sharing a pass per (token, database).
    lookups: SharedListing<lookup::Listing, lookup::SourceLookup>,
}

impl std::ops::Deref for Sources {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Sources {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            suspects: Mutex::default(),
            lookups: SharedListing::new(LOOKUP_GATHER),
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

    /// Another object (`namespace/name`) that records source `id`, if any: a source has one
    /// owner, so it is never adopted a second time.
    fn claimed_by_another(&self, obj: &SyncSource, id: &str) -> Option<String> {
        self.source_caches().iter().find_map(|store| {
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
}

impl Marked for SyncSource {
    const FINALIZER: &'static str = crate::crd::FINALIZER;
    const WHAT: &'static str = "source";

    fn recorded_id(&self) -> Option<&str> {
        self.status.as_ref()?.source_id.as_deref()
    }
}

impl Reconciler for Sources {
    type Object = SyncSource;
    type Reason = Reason;
    const CRD_DELETED: Reason = Reason::RetainedOnCrdDeletion;
    const KIND: &'static str = "SyncSource";

    fn context(&self) -> &Context {
        &self.ctx
    }

    async fn paused(&self, obj: &SyncSource) -> Outcome<Reason> {
        reconcile::paused(obj, self).await
    }

    async fn cleanup(&self, obj: &SyncSource) -> Outcome<Reason> {
        reconcile::cleanup(obj, self).await
    }

    async fn apply(&self, obj: &SyncSource) -> Outcome<Reason> {
        reconcile::apply(obj, self).await
    }

    fn slim(obj: &mut SyncSource) {
        cache::slim_source(obj);
    }

    /// An object no longer failing on credentials stops waiting for its Secret.
    fn settle(&self, obj: &SyncSource, reason: Option<Reason>) {
        self.credentials.settle(obj, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_secret_wakes_the_s3_sources_that_read_their_aws_key_from_it() {
        let (reader, mut writer) = kube::runtime::reflector::store::<SyncSource>();
        let object = |ns: &str, name: &str, s3: serde_json::Value| -> SyncSource {
            serde_json::from_value(json!({
                "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"databaseName": "d", "s3": s3}
            }))
            .unwrap()
        };
        let s3 = |reference: &str| {
            json!({"bucketName": "b", "region": "r", "collectionName": "c",
                   "credentialsSecretRef": {"name": reference}})
        };
        let by_id = json!({"bucketName": "b", "region": "r", "collectionName": "c",
                           "awsCredentialId": 1});
        for o in [
            object("a", "reads", s3("aws")),
            object("a", "reads-another", s3("other")),
            object("b", "elsewhere", s3("aws")),
            object("a", "by-id", by_id),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(o));
        }
        let names = |ns: &str, secret: &str| -> Vec<String> {
            aws_key_readers(&reader, ns, secret)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("a", "aws"), ["reads"]);
        assert_eq!(names("b", "aws"), ["elsewhere"]);
        assert!(names("a", "chroma-sync-token").is_empty());
    }
}
