//! The SyncRun controller: one Chroma Sync invocation per SyncRun, created once and followed
//! to its end (see [`reconcile`]), with the pure decisions in [`decide`].
//!
//! It runs beside the SyncSource controller, under the same leadership, and shares its
//! [`Context`] (clients, credentials, Events, shutdown).

pub mod decide;
mod reconcile;
pub mod sync;

use crate::controller::decide::{Retry, backoff};
use crate::controller::{Context, Error};
use crate::crd::run::SyncRun;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use reconcile::Next;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{Instrument, info_span, warn};

struct Runs {
    ctx: Arc<Context>,
    /// Consecutive failures per run, for its backoff.
    failures: Mutex<HashMap<ObjectRef<SyncRun>, u32>>,
}

impl Runs {
    fn requeue(&self, run: &SyncRun, next: Next) -> Action {
        let key = ObjectRef::from_obj(run);
        let mut failures = self.failures.lock().expect("failure counts");
        match next {
            Next::Done => {
                failures.remove(&key);
                Action::await_change()
            }
            Next::LookAgainIn(after) => {
                failures.remove(&key);
                Action::requeue(after)
            }
            Next::Retry(retry) => {
                let attempt = failures.entry(key).or_default();
                *attempt = attempt.saturating_add(1);
                match backoff(retry, *attempt, rand::random_range(0.8..1.2)) {
                    Some(delay) => Action::requeue(delay),
                    None => Action::await_change(),
                }
            }
        }
    }
}

async fn reconcile(run: Arc<SyncRun>, runs: Arc<Runs>) -> Result<Action, Error> {
    let span =
        info_span!("run", namespace = %run.namespace().unwrap_or_default(), name = %run.name_any());
    async {
        // A token that exists must not read as missing just because the operator has started.
        runs.ctx.secrets_synced().await;
        let next = if crate::controller::intent::paused(&run.metadata) {
            reconcile::paused(&run, &runs.ctx).await?
        } else if run.metadata.deletion_timestamp.is_some() {
            reconcile::cleanup(&run, &runs.ctx).await?
        } else {
            reconcile::apply(&run, &runs.ctx).await?
        };
        Ok(runs.requeue(&run, next))
    }
    .instrument(span)
    .await
}

/// The change filter's key: the generation and what the annotations ask (see `intent`).
fn generation_or_asked(run: &SyncRun) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    predicates::generation(run).hash(&mut h);
    crate::controller::intent::fingerprint(&run.metadata).hash(&mut h);
    Some(h.finish())
}

fn error_policy(run: Arc<SyncRun>, error: &Error, runs: Arc<Runs>) -> Action {
    warn!(namespace = %run.namespace().unwrap_or_default(), name = %run.name_any(), error = %error, "reconciling a SyncRun failed; backing off");
    runs.requeue(&run, Next::Retry(Retry::Soon { not_before: None }))
}

/// Runs the SyncRun controller over `namespaces` (all when empty) until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespaces: &[String],
    concurrency: u16,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let runs = Arc::new(Runs {
        ctx,
        failures: Mutex::default(),
    });
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
    runs.ctx
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
            .modify(crate::controller::slim)
            .reflect(writer)
            .applied_objects()
            .predicate_filter(generation_or_asked, Default::default());
        Controller::for_stream(stream, reader)
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, runs.clone())
            .for_each(|result| {
                if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                    warn!(error = %e, "watching SyncRuns failed; retrying with backoff");
                }
                futures::future::ready(())
            })
    });
    futures::future::join_all(controllers).await;
}
