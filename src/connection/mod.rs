//! The connection controller: watches ChromaSyncConnections, ClusterChromaSyncConnections and
//! the namespaces' labels into the caches [`Connections`] routes from, and checks each
//! connection with a real authenticated call (`GET /api/v1/sources?limit=1`: `/health` proves
//! no token), on an interval and at once when its spec or Secret changes. A successful check
//! builds the connection's client (its URL, CA, timeout and limits), which every object routed
//! through it shares.
//!
//! - [`check`]: the pure decision of what a check's outcome means (reason, Stalled or not).
//! - Here: the watches, the check's IO, the status write.

pub mod check;
pub mod reason;

pub use reason::Reason;

use crate::chroma::{ChromaClient, ClientConfig, check_base_url};
use crate::crd::SyncSource;
use crate::crd::connection::{
    ChromaSyncConnection, ClusterChromaSyncConnection, ConnectionStatus, Endpoint,
};
use crate::kernel::Context;
use crate::kernel::conditions::is_ready;
use crate::kernel::connections::{Connections, Via, uses};
use crate::kernel::credentials::TokenFrom;
use crate::kernel::events::Kind;
use crate::kernel::kube_io::{bounded, params, status_patch};
use crate::kernel::readiness::Countdown;
use crate::metrics::Metrics;
use check::Outcome;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, Patch};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller as Runtime};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, info_span, warn};

/// Settings of the connection checks.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces whose ChromaSyncConnections are watched; empty means all.
    pub namespaces: Vec<String>,
    /// How often a Ready connection is checked again.
    pub check_interval: Duration,
    /// Whether `http://` URLs are allowed (a local stand-in).
    pub allow_insecure_http: bool,
    /// The client settings a connection does not set (the operator's flags).
    pub defaults: ClientConfig,
}

/// The watches (built first: the SyncSource controller's context routes from their caches).
pub struct Watches {
    client: Client,
    namespaced: Vec<(Api<ChromaSyncConnection>, Writer<ChromaSyncConnection>)>,
    cluster: Writer<ClusterChromaSyncConnection>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
    settings: Settings,
}

impl Watches {
    pub fn new(client: Client, settings: Settings) -> Self {
        let scopes: Vec<Api<ChromaSyncConnection>> = if settings.namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            let namespaced = |ns: &String| Api::namespaced(client.clone(), ns);
            settings.namespaces.iter().map(namespaced).collect()
        };
        Self {
            namespaced: scopes
                .into_iter()
                .map(|api| (api, Writer::default()))
                .collect(),
            cluster: Writer::default(),
            namespaces: Writer::default(),
            client,
            settings,
        }
    }

    /// The routing the objects of every kind use, over these watches' caches; `operator` is
    /// the client of the operator's own settings.
    pub fn connections(&self, operator: ChromaClient, metrics: &Metrics) -> Arc<Connections> {
        let namespaced: Vec<_> = self.namespaced.iter().map(|(_, w)| w.as_reader()).collect();
        // `/metrics` shows every connection's conditions (for alerts), read at each scrape.
        metrics.show_cached_conditions(namespaced.clone(), |c: &ChromaSyncConnection| {
            c.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
        });
        let cluster = vec![self.cluster.as_reader()];
        metrics.show_cached_conditions(cluster, |c: &ClusterChromaSyncConnection| {
            c.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
        });
        Arc::new(Connections::new(
            operator,
            namespaced,
            self.cluster.as_reader(),
            self.namespaces.as_reader(),
        ))
    }

    /// Runs the watches and the checks until `shutdown`.
    pub async fn run(
        self,
        ctx: Arc<Context>,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        let Self {
            client,
            namespaced,
            cluster,
            namespaces,
            settings,
        } = self;
        let connections = ctx.connections.clone();
        let synced = connections.clone();
        let listed = Countdown::new(namespaced.len() + 2, move || synced.set_synced());
        let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
        let checker = Arc::new(Checker {
            ctx: ctx.clone(),
            settings,
            transient: Default::default(),
        });
        let (rechecks_namespaced, rechecks_cluster) = connections
            .rechecks()
            .expect("the connection controller runs once");
        let mut tasks = Vec::new();

        // Namespaces: metadata only, for cluster connections' selectors.
        let done = listed.once();
        let woken = ctx.clone();
        let namespaces_api = Api::<PartialObjectMeta<Namespace>>::all(client.clone());
        let namespace_stream = watcher(namespaces_api, watcher::Config::default())
            .default_backoff()
            // Labels are what a selector reads: keep them, drop the rest.
            .modify(|ns| {
                ns.metadata.managed_fields = None;
                ns.metadata.annotations = None;
            })
            .reflect(namespaces)
            .for_each(move |event| {
                match &event {
                    Ok(watcher::Event::InitDone) => done(),
                    // A change after the first list: its labels may admit or refuse now.
                    Ok(watcher::Event::Apply(ns)) => {
                        let ns = ns.name_any();
                        wake(&woken, |o| {
                            o.metadata.namespace.as_deref() == Some(&ns)
                                && o.spec.connection_ref.as_ref().is_some_and(|r| {
                                    r.kind == crate::crd::ConnectionKind::ClusterChromaSyncConnection
                                })
                        });
                    }
                    _ => {}
                }
                futures::future::ready(())
            });
        tasks.push(tokio::spawn(namespace_stream));

        let mut rechecks_namespaced = Some(rechecks_namespaced);
        for (api, writer) in namespaced {
            let done = listed.once();
            let woken = ctx.clone();
            let store = writer.as_reader();
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .inspect(move |event| observe(&woken, event, &done, via_of_namespaced));
            let mut runtime = Runtime::for_stream(stream.applied_objects(), store);
            if let Some(rechecks) = rechecks_namespaced.take() {
                runtime = runtime.reconcile_on(rechecks);
            }
            tasks.push(tokio::spawn(run_checks(
                runtime,
                checker.clone(),
                shutdown.clone(),
            )));
        }
        let done = listed.once();
        let woken = ctx.clone();
        let api = Api::<ClusterChromaSyncConnection>::all(client.clone());
        let store = cluster.as_reader();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(cluster)
            .inspect(move |event| observe(&woken, event, &done, via_of_cluster));
        let runtime =
            Runtime::for_stream(stream.applied_objects(), store).reconcile_on(rechecks_cluster);
        tasks.push(tokio::spawn(run_checks(runtime, checker, shutdown.clone())));
        shutdown.await;
        for task in tasks {
            task.abort();
        }
    }
}

fn via_of_namespaced(c: &ChromaSyncConnection) -> Via {
    Via::Namespaced {
        namespace: c.namespace().unwrap_or_default(),
        name: c.name_any(),
    }
}

fn via_of_cluster(c: &ClusterChromaSyncConnection) -> Via {
    Via::Cluster { name: c.name_any() }
}

/// After the cache took a watch event in: the first list's end; after it, the objects that
/// route through a changed (or deleted) connection are reconciled.
fn observe<K: Clone>(
    ctx: &Context,
    event: &Result<watcher::Event<K>, watcher::Error>,
    listed: &impl Fn(),
    via_of: fn(&K) -> Via,
) {
    let via = match event {
        Ok(watcher::Event::InitDone) => return listed(),
        Ok(watcher::Event::Apply(c)) => via_of(c),
        Ok(watcher::Event::Delete(c)) => {
            let via = via_of(c);
            ctx.connections.forget(&via);
            via
        }
        _ => return,
    };
    wake(ctx, |o| uses(o, &via));
}

/// Reconciles the cached SyncSources `concerned` picks. (A scan: connections and namespaces
/// change seldom, and the first list's events wake nothing.)
fn wake(ctx: &Context, concerned: impl Fn(&SyncSource) -> bool) {
    for store in ctx.source_caches() {
        for obj in store.state() {
            if concerned(&obj) {
                ctx.connections.wake(ObjectRef::from_obj(&*obj));
            }
        }
    }
}

/// What the checks of both kinds share.
struct Checker {
    ctx: Arc<Context>,
    settings: Settings,
    /// Consecutive failures that may pass by themselves, by connection (see
    /// [`check::damped`]).
    transient: std::sync::Mutex<std::collections::HashMap<Via, u32>>,
}

/// A kind of connection, as the check reads and writes it.
trait Connection:
    Resource<DynamicType = ()>
    + Clone
    + Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn endpoint(&self) -> &Endpoint;
    fn via(&self) -> Via;
    fn status(&self) -> Option<&ConnectionStatus>;
    /// The namespace of the Secrets and ConfigMaps it references.
    fn references_namespace(&self) -> String;
    fn api(&self, client: Client) -> Api<Self>;
}

impl Connection for ChromaSyncConnection {
    const KIND: &'static str = "ChromaSyncConnection";

    fn endpoint(&self) -> &Endpoint {
        &self.spec.endpoint
    }

    fn via(&self) -> Via {
        via_of_namespaced(self)
    }

    fn status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }

    fn references_namespace(&self) -> String {
        self.namespace().unwrap_or_default()
    }

    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl Connection for ClusterChromaSyncConnection {
    const KIND: &'static str = "ClusterChromaSyncConnection";

    fn endpoint(&self) -> &Endpoint {
        &self.spec.endpoint
    }

    fn via(&self) -> Via {
        via_of_cluster(self)
    }

    fn status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }

    fn references_namespace(&self) -> String {
        // Admission requires it for this kind.
        self.spec
            .endpoint
            .token_secret_ref
            .namespace
            .clone()
            .unwrap_or_default()
    }

    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
}

async fn run_checks<K: Connection>(
    runtime: Runtime<K>,
    checker: Arc<Checker>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K::DynamicType: Eq + std::hash::Hash + Clone + Debug + Unpin,
{
    runtime
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, checker)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] crate::kernel::Error),
}

fn error_policy<K: Connection>(_obj: Arc<K>, error: &Error, _checker: Arc<Checker>) -> Action {
    warn!(kind = K::KIND, %error, "checking a connection failed; trying again");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile<K: Connection>(obj: Arc<K>, checker: Arc<Checker>) -> Result<Action, Error> {
    let span =
        info_span!("check", kind = K::KIND, name = %obj.name_any(), namespace = ?obj.namespace());
    async move {
        let started = Instant::now();
        let outcome = checker.check(&*obj).await;
        let outcome = checker.damp(&*obj, outcome);
        let result = checker.record(&*obj, &outcome).await;
        checker.ctx.connections.note_checked();
        let reason = (!outcome.ready).then_some(outcome.reason.as_str());
        checker
            .ctx
            .metrics
            .reconciled(K::KIND, started.elapsed(), reason);
        result?;
        Ok(Action::requeue(
            outcome.again_in(checker.settings.check_interval),
        ))
    }
    .instrument(span)
    .await
}

impl Checker {
    /// One check of a connection: its URL, CA bundle, token and one authenticated call.
    async fn check<K: Connection>(&self, obj: &K) -> Outcome {
        let endpoint = obj.endpoint();
        let via = obj.via();
        if let Err(e) = check_base_url(&endpoint.url, self.settings.allow_insecure_http) {
            return Outcome::stalled(Reason::InvalidUrl, e.to_string());
        }
        if let Some(Err(e)) = endpoint
            .api_url
            .as_deref()
            .map(|url| check_base_url(url, self.settings.allow_insecure_http))
        {
            return Outcome::stalled(Reason::InvalidUrl, format!("apiUrl: {e}"));
        }
        let generation = obj.meta().generation;
        let connections = &self.ctx.connections;
        let built = connections.client(&via, generation);
        let first = built.is_none();
        let chroma = match built {
            Some(chroma) => chroma,
            None => match self.build_client(obj).await {
                Ok(chroma) => chroma,
                Err(outcome) => return outcome,
            },
        };
        let from = connections.token_from(&via);
        if from == TokenFrom::Default {
            // The connection is in the cache being checked; its token is always a Secret's.
            return Outcome::waiting(Reason::MissingCredentials, "not cached yet".into());
        }
        // A Secret that exists is never reported missing just because the operator has only
        // started.
        self.ctx.secrets_synced().await;
        let token = match self.ctx.credentials.token(&from, None).await {
            Ok(token) => token,
            Err(why) => return Outcome::stalled(Reason::MissingCredentials, why),
        };
        let outcome = check::outcome_of(&endpoint.url, chroma.check_token(&token).await);
        if outcome.ready {
            connections.set_client(via.clone(), generation, chroma);
            // A status that says Ready already writes nothing: wake its users here, in case
            // they were refused before this process first checked it.
            if first {
                wake(&self.ctx, |o| uses(o, &via));
            }
        }
        outcome
    }

    /// The connection's client from its spec (the operator's flags where it sets nothing).
    async fn build_client<K: Connection>(&self, obj: &K) -> Result<ChromaClient, Outcome> {
        let endpoint = obj.endpoint();
        let mut config = self.settings.defaults.clone();
        config.base_url = endpoint.url.clone();
        if let Some(api_url) = &endpoint.api_url {
            config.api_url = api_url.clone();
        }
        if let Some(timeout) = &endpoint.timeout {
            config.timeout = crate::duration::parse(timeout)
                .map_err(|e| Outcome::stalled(Reason::InvalidSpec, format!("timeout: {e}")))?;
        }
        config.name = obj.via().label();
        if let Some(limits) = &endpoint.limits {
            check::apply_limits(&mut config.limits, limits);
        }
        if let Some(bundle) = &endpoint.ca_bundle {
            let namespace = obj.references_namespace();
            // Added to the operator's own (`--ca-file`: a proxy's CA applies to every endpoint).
            let pem = self.read_ca(&namespace, bundle).await?;
            let mut all = config.extra_ca_pem.take().unwrap_or_default();
            all.extend_from_slice(b"\n");
            all.extend_from_slice(&pem);
            config.extra_ca_pem = Some(all);
        }
        ChromaClient::new(&config, self.ctx.metrics.clone())
            .map_err(|e| Outcome::stalled(Reason::CaBundleInvalid, e.to_string()))
    }

    /// The PEM bundle a connection references (read with a list of that one name: the
    /// operator's role lists Secrets and ConfigMaps, and gets none).
    async fn read_ca(
        &self,
        namespace: &str,
        bundle: &crate::crd::connection::CaBundleRef,
    ) -> Result<Vec<u8>, Outcome> {
        let missing = |what: &str, name: &str| {
            Outcome::stalled(
                Reason::CaBundleInvalid,
                format!("{what} {namespace}/{name} has no key {:?}", bundle.key),
            )
        };
        let failed =
            |e: crate::kernel::Error| Outcome::waiting(Reason::CaBundleInvalid, e.to_string());
        if let Some(name) = &bundle.secret_name {
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
            let params = ListParams::default().fields(&format!("metadata.name={name}"));
            let list = bounded(api.list(&params)).await.map_err(failed)?;
            let data = list.items.into_iter().next().and_then(|s| s.data);
            return data
                .and_then(|mut d| d.remove(&bundle.key))
                .map(|b| b.0)
                .ok_or_else(|| missing("Secret", name));
        }
        let name = bundle.config_map_name.as_deref().unwrap_or_default();
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), namespace);
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        let list = bounded(api.list(&params)).await.map_err(failed)?;
        let data = list.items.into_iter().next().and_then(|c| c.data);
        data.and_then(|mut d| d.remove(&bundle.key))
            .map(String::into_bytes)
            .ok_or_else(|| missing("ConfigMap", name))
    }

    /// A Ready connection keeps its status through a few failures that may pass by themselves
    /// (a 5xx, a timeout): every object using it would wait otherwise.
    fn damp<K: Connection>(&self, obj: &K, outcome: Outcome) -> Outcome {
        let mut transient = self.transient.lock().expect("transient failures");
        let was_ready = obj.status().is_some_and(|s| is_ready(&s.conditions));
        let failures = transient.entry(obj.via()).or_default();
        let (outcome, next) = check::damped(outcome, was_ready, *failures);
        *failures = next;
        outcome
    }

    /// Writes what the check found, if it changed; an Event when Ready flips.
    async fn record<K: Connection>(&self, obj: &K, outcome: &Outcome) -> Result<(), Error> {
        let previous = obj.status().cloned().unwrap_or_default();
        if outcome.keep_status {
            return Ok(());
        }
        let generation = obj.meta().generation.unwrap_or_default();
        let next = check::status_of(&previous, generation, outcome, jiff::Timestamp::now());
        let rv = obj.meta().resource_version.clone();
        let Some(patch) = status_patch(&previous, &next, rv) else {
            return Ok(());
        };
        let api = obj.api(self.ctx.client.clone());
        bounded(api.patch_status(&obj.name_any(), &params(), &Patch::Merge(&patch))).await?;
        if is_ready(&previous.conditions) != outcome.ready {
            let kind = if outcome.ready {
                Kind::Normal
            } else {
                Kind::Warning
            };
            self.ctx
                .events
                .publish(obj, kind, outcome.reason, outcome.message.clone());
        }
        Ok(())
    }
}

/// The connections that read Secret `namespace/name` (their checks run again when it changes).
pub fn reading_secret(
    namespaced: &[Store<ChromaSyncConnection>],
    cluster: &Store<ClusterChromaSyncConnection>,
    namespace: &str,
    name: &str,
) -> (
    Vec<ObjectRef<ChromaSyncConnection>>,
    Vec<ObjectRef<ClusterChromaSyncConnection>>,
) {
    let reads = |e: &Endpoint, ns: &str| e.token_secret_ref.name == name && ns == namespace;
    let own = namespaced
        .iter()
        .flat_map(|s| s.state())
        .filter(|c| reads(&c.spec.endpoint, &c.namespace().unwrap_or_default()))
        .map(|c| ObjectRef::from_obj(&*c))
        .collect();
    let shared = cluster
        .state()
        .into_iter()
        .filter(|c| reads(&c.spec.endpoint, &c.references_namespace()))
        .map(|c| ObjectRef::from_obj(&*c))
        .collect();
    (own, shared)
}
