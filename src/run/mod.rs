//! The SyncRun controller: one Chroma Sync invocation per SyncRun, created once (the kernel's
//! crash-safe create) and followed to its end (see [`reconcile`]), with the pure decisions in
//! [`decide`].
//!
//! It runs beside the SyncSource controller, under the same leadership, on the same kernel
//! [`Context`] (clients, credentials, Events, shutdown, the SyncSource cache it reads its
//! source from).

pub mod decide;
#[cfg(test)]
mod flows;
mod reason;
mod reconcile;

pub use reason::Reason;

use crate::chroma::shared::SharedListing;
use crate::crd::run::{RUN_FINALIZER, SyncRun};
use crate::kernel::create::{LOOKUP_GATHER, Marked};
use crate::kernel::driver::{Driver, Outcome, Reconciler};
use crate::kernel::{Context, cache, intent};
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use std::sync::Arc;

/// How a SyncRun reconcile ended.
pub type Next = crate::kernel::Next<Reason>;

impl Marked for SyncRun {
    const FINALIZER: &'static str = RUN_FINALIZER;
    const WHAT: &'static str = "invocation";

    fn recorded_id(&self) -> Option<&str> {
        self.status.as_ref()?.invocation_id.as_deref()
    }
}

/// The SyncRun kind's flows and what only they keep: the kernel's [`Context`] (reached through
/// `Deref`) and the shared listings: lookups of unrecorded invocations, looks of followed ones.
pub struct Runs {
    ctx: Arc<Context>,
    /// Lookups for unrecorded runs' invocations, sharing a pass per (token, source id).
    lookups: SharedListing<reconcile::Listing, decide::InvocationLookup>,
    /// Following runs' looks at their invocations, sharing a listing per (token, source id)
    /// when several look at once (after a restart, all).
    refreshes: SharedListing<reconcile::Listing, decide::InvocationRefresh>,
}

impl std::ops::Deref for Runs {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Runs {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            lookups: SharedListing::new(LOOKUP_GATHER),
            refreshes: SharedListing::new(LOOKUP_GATHER),
        }
    }
}

impl Reconciler for Runs {
    type Object = SyncRun;
    type Reason = Reason;
    const CRD_DELETED: Reason = Reason::RetainedOnCrdDeletion;
    const KIND: &'static str = "SyncRun";

    fn context(&self) -> &Context {
        &self.ctx
    }

    async fn paused(&self, run: &SyncRun) -> Outcome<Reason> {
        reconcile::paused(run, self).await
    }

    async fn cleanup(&self, run: &SyncRun) -> Outcome<Reason> {
        reconcile::cleanup(run, self).await
    }

    async fn apply(&self, run: &SyncRun) -> Outcome<Reason> {
        reconcile::apply(run, self).await
    }

    fn slim(run: &mut SyncRun) {
        cache::slim(run);
    }
}

/// The change filter's key: the generation and what the annotations ask (see `intent`).
fn generation_or_asked(run: &SyncRun) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    predicates::generation(run).hash(&mut h);
    intent::fingerprint(&run.metadata).hash(&mut h);
    Some(h.finish())
}

/// Runs the SyncRun controller over `namespaces` (all when empty) until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespaces: &[String],
    concurrency: u16,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let driver = Driver::new(Runs::new(ctx));
    let scopes: Vec<Api<SyncRun>> = if namespaces.is_empty() {
        vec![Api::all(client)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let scopes: Vec<_> = scopes
        .into_iter()
        .map(|api| (api, reflector::store()))
        .collect();
    // `/metrics` shows every cached run's conditions (for alerts), read at each scrape.
    let caches = scopes
        .iter()
        .map(|(_, (reader, _))| reader.clone())
        .collect();
    driver
        .flows
        .metrics
        .show_cached_conditions(caches, |r: &SyncRun| {
            r.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
        });
    let controllers = scopes.into_iter().map(|(api, (reader, writer))| {
        // Generation changes (a new run, the start of its deletion) and the pause and
        // reconcile-now annotations only: the operator's own status writes must not cost a look
        // at the service each.
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(cache::slim)
            .reflect(writer)
            .applied_objects()
            .predicate_filter(generation_or_asked, Default::default());
        let controller = Controller::for_stream(stream, reader);
        driver
            .clone()
            .run(controller, concurrency, shutdown.clone())
    });
    futures::future::join_all(controllers).await;
}
