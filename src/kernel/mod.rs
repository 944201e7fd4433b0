//! The kernel every resource kind's controller stands on: what reconciles share ([`Context`]),
//! how a reconcile ends ([`Next`]) and fails ([`Error`]), the one reconcile [`driver`], the
//! crash-safe [`create`] protocol, bounded Kubernetes IO ([`kube_io`]), the classes of service
//! failures ([`failure`]), conditions, intent annotations, Events, caches, credentials and
//! readiness.
//!
//! Nothing here knows a resource's flows: `source/` and `run/` implement the kernel's traits
//! ([`driver::Reconciler`], [`create::Marked`], [`create::Creation`]) and never import each
//! other.

pub mod cache;
pub mod conditions;
pub mod connections;
pub mod crds;
pub mod create;
pub mod credentials;
pub mod driver;
pub mod events;
pub mod failure;
#[cfg(test)]
pub mod fixtures;
pub mod intent;
pub mod kube_io;
pub mod notify;
pub mod readiness;
pub mod reason;

pub use cache::slim;
pub use credentials::DefaultToken;
pub use failure::Retry;
pub use reason::Reason;

use crate::chroma::{ChromaError, Token};
use crate::crd::SyncSource;
use crate::metrics::Metrics;
use connections::{Blocked, Connections, Endpoint, Route, Via};
use credentials::Credentials;
use credentials::TokenFrom;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The field manager of every write, and the reporting controller of every Event.
pub const FIELD_MANAGER: &str = "chroma-sync-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the operator is shutting down; no new create is started")]
    ShuttingDown,
    #[error("Kubernetes API: no answer within {0:?}")]
    KubeTimeout(Duration),
    /// Whether the object's CRD is being deleted is unknown, so its deletion waits (see
    /// [`crds::Crds::deletion`]).
    #[error(
        "cannot read the {crd} CustomResourceDefinition, so the deletion waits (neither a call to Chroma Sync nor the finalizer's release): {why}"
    )]
    CrdUnreadable { crd: String, why: String },
}

impl Error {
    /// The metric label of a reconcile that failed on this error (no status could say so).
    pub fn reason(&self) -> &'static str {
        match self {
            e if e.is_conflict() => "KubeConflict",
            Error::Kube(_) => "KubeApi",
            Error::ShuttingDown => "ShuttingDown",
            Error::KubeTimeout(_) => "KubeTimeout",
            Error::CrdUnreadable { .. } => "CrdUnreadable",
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

/// How a reconcile ended, in the reasons `R` of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<R> {
    /// Nothing more to do until something changes.
    Settled,
    /// Fine, and something is due then (a run to follow, the next tick).
    LookAgainIn(Duration),
    /// The outcome needs attention (`reason`); try again as `retry` says.
    Retry { retry: Retry, reason: R },
}

/// What every reconcile of every kind shares: the clients, the credentials, Events, metrics,
/// the SyncSource caches and the shutdown switch.
pub struct Context {
    pub client: Client,
    /// Which connection each object calls through, and each connection's client.
    pub connections: Arc<Connections>,
    pub events: events::Events,
    /// Events posted to `--events-addr` (Flux's format); disabled without one.
    pub notifier: notify::Notifier,
    pub metrics: Metrics,
    pub credentials: Credentials,
    /// The kinds' own CRDs: whether a deletion is their deletion (see [`crds`]).
    pub crds: crds::Crds,
    stopping: AtomicBool,
    /// The SyncSource caches, one per watched scope (runs read their source here; adoption
    /// and the drift check read every recorded source).
    sources: Vec<Store<SyncSource>>,
    /// The tenant of each token on each Chroma API asked so far (see [`Context::tenant`]).
    tenants: Mutex<HashMap<(String, Token), String>>,
}

/// Tenants remembered at most (rotated tokens leave entries behind; past this, start afresh).
const TENANTS_KEPT: usize = 1024;

impl Context {
    pub fn new(
        client: Client,
        connections: Arc<Connections>,
        metrics: Metrics,
        credentials: Credentials,
        instance: &str,
        sources: Vec<Store<SyncSource>>,
    ) -> Self {
        Self {
            events: events::Events::start(client.clone(), FIELD_MANAGER, instance, metrics.clone()),
            crds: crds::Crds::new(client.clone()),
            notifier: notify::Notifier::disabled(),
            client,
            connections,
            metrics,
            credentials,
            stopping: AtomicBool::new(false),
            sources,
            tenants: Mutex::default(),
        }
    }

    /// The tenant of `ep`'s token on its Chroma API (`GET /api/v2/auth/identity`), which every
    /// collection path names. A token's tenant never changes, so it is asked once per token, not
    /// at every pruning pass; a failed ask is not remembered.
    pub async fn tenant(&self, ep: &Endpoint) -> Result<String, ChromaError> {
        let key = (ep.chroma.api_base().to_owned(), ep.token.clone());
        let known = || self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tenant) = known().get(&key) {
            return Ok(tenant.clone());
        }
        let tenant = ep.chroma.tenant(&ep.token).await?;
        let mut tenants = known();
        if tenants.len() >= TENANTS_KEPT {
            tenants.clear();
        }
        tenants.insert(key, tenant.clone());
        Ok(tenant)
    }

    /// The context, posting notifications with `notifier`.
    pub fn with_notifier(self, notifier: notify::Notifier) -> Self {
        Self { notifier, ..self }
    }

    /// The SyncSource `namespace/name` as cached, if a watched scope holds it.
    pub fn cached_source(&self, namespace: &str, name: &str) -> Option<Arc<SyncSource>> {
        let key = ObjectRef::new(name).within(namespace);
        self.sources.iter().find_map(|store| store.get(&key))
    }

    /// Every cached SyncSource, scope by scope.
    pub fn source_caches(&self) -> &[Store<SyncSource>] {
        &self.sources
    }

    /// From now on no create call is started; reconciles already past that point finish.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits until every Secret cache has listed its Secrets (see [`credentials`]).
    pub async fn secrets_synced(&self) {
        self.credentials.synced().await;
    }

    /// The connection `source`'s calls go through, if it may use it now: the one its source was
    /// made through, once recorded; else the one it names (or its namespace's `default`, or the
    /// operator's own). Decided from caches: no call.
    pub async fn route(&self, source: &SyncSource) -> Result<Route, Blocked> {
        let namespace = source.metadata.namespace.as_deref().unwrap_or_default();
        let status = source.status.as_ref();
        // A recorded source without a recorded connection was made through the operator's own.
        let recorded = status.filter(|s| s.source_id.is_some()).map(|s| {
            s.connection
                .as_deref()
                .and_then(|r| Via::recorded(namespace, r))
                .unwrap_or(Via::Operator)
        });
        let reference = source.spec.connection_ref.as_ref();
        self.connections
            .route(namespace, reference, recorded.as_ref())
            .await
    }

    /// Where `source`'s token comes from on `via`: its own `tokenSecretRef`, else the
    /// connection's Secret, else the operator's default token.
    pub fn token_from(&self, source: &SyncSource, via: &Via) -> TokenFrom {
        let namespace = source.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(own) = &source.spec.token_secret_ref {
            return TokenFrom::secret(namespace, &own.name, &own.key, "tokenSecretRef");
        }
        self.connections.token_from(via)
    }

    /// The route and the token for `source`'s calls, or why there is no token. `source` is
    /// woken when the Secret it waits for changes.
    pub async fn endpoint(&self, source: &SyncSource, route: Route) -> Result<Endpoint, String> {
        let from = self.token_from(source, &route.via);
        let token = self.credentials.token(&from, Some(source)).await?;
        Ok(Endpoint {
            via: route.via,
            chroma: route.chroma,
            token,
        })
    }

    /// Both steps: the route (a refusal as `Err(Ok(_))`) and the token (`Err(Err(_))`).
    pub async fn reach(&self, source: &SyncSource) -> Result<Endpoint, Result<Blocked, String>> {
        let route = self.route(source).await.map_err(Ok)?;
        self.endpoint(source, route).await.map_err(Err)
    }

    /// The route of a recorded source at rest (the connection it was made through), if it can
    /// be used now; from caches only.
    fn peek_route(&self, source: &SyncSource) -> Option<Route> {
        let namespace = source.metadata.namespace.as_deref().unwrap_or_default();
        let recorded = source.status.as_ref()?.connection.as_deref();
        let via = recorded
            .and_then(|r| Via::recorded(namespace, r))
            .unwrap_or(Via::Operator);
        self.connections.route_to(namespace, via).ok()
    }

    /// Where the token of a recorded source at rest comes from, if its route can be used now
    /// (the drift check reads these before it peeks).
    pub fn peek_token_from(&self, source: &SyncSource) -> Option<TokenFrom> {
        let route = self.peek_route(source)?;
        Some(self.token_from(source, &route.via))
    }

    /// The endpoint of a recorded source at rest, from caches and loaded tokens only (the drift
    /// check); None when it cannot be reached now.
    pub fn peek_endpoint(&self, source: &SyncSource) -> Option<Endpoint> {
        let route = self.peek_route(source)?;
        let token = self
            .credentials
            .peek(&self.token_from(source, &route.via))
            .ok()?;
        Some(Endpoint {
            via: route.via,
            chroma: route.chroma,
            token,
        })
    }
}
