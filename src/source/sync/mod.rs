//! Continuous sync: `SyncSource.spec.sync` turned into SyncRuns. The operator starts a run
//! (a SyncRun owned by the SyncSource) when the source is first created or replaced, when the
//! sync settings change, and at each schedule tick; never two at once; ticks missed while it was
//! down start one run. What to do is decided in `decide.rs`, by pure functions of the time, the
//! settings, the runs and what status recorded ([`plan`] first); this module does the IO they
//! ask for ([`ensure`]).
//!
//! What a run was started for, and the latest tick handled, live in the SyncSource's status
//! (`syncState`), written only when a run starts or a tick is skipped: nothing at rest. A run's
//! name is derived from what started it, so a create repeated after a crash finds it
//! (AlreadyExists) instead of starting a second one.
//!
//! With `publishTo`, the newest completed run is also published to a ConfigMap owned by the
//! SyncSource ([`publication`] decides, [`publish`] writes it with server-side apply). What it
//! holds is recorded in `syncState.published` in the same status write that records the run's
//! end, so at rest nothing is read or written for it.
//!
//! With `keepCollections`, the collections of its own finished runs are recorded in
//! `syncState.collections` (in the write that records a run's end, before the run itself can be
//! pruned from the history), and those beyond the newest N completed are deleted through the
//! Chroma API ([`record_collections`] and [`collections_to_prune`] decide, [`prune_collections`]
//! deletes).

mod decide;

pub use decide::{PUBLISHED, fingerprint};

use crate::crd::run::SyncRun;
use crate::crd::{DeletionPolicy, LastSync, SyncPolicy, SyncSource, SyncState};
use crate::kernel::events::Kind;
use crate::kernel::intent;
use crate::kernel::kube_io::{bounded, params};
use crate::kernel::{Context, Error, FIELD_MANAGER};
use crate::source::reason::Reason;
use decide::{
    Publication, Published, Situation, Start, beyond_history, collection_name,
    collections_to_prune, finished, holds_newer, new_request, owned_by, plan, publication,
    record_collections, run_name, served, summary, with_publish_condition,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// The label that ties a SyncRun to the SyncSource whose `spec.sync` started it.
pub const SYNC_SOURCE_LABEL: &str = "chromasync.dev/sync-source";

/// While a run it started is going, the SyncSource looks at it this often (a Kubernetes read,
/// no Chroma call) to summarize it and to start what waits for it.
const ACTIVE_RUN_CHECK: Duration = Duration::from_secs(10);

/// While `publishTo` is refused, the SyncSource looks again this often (one list of one name).
const PUBLISH_CONFLICT_CHECK: Duration = Duration::from_secs(60);

/// Brings `spec.sync` about for a Ready SyncSource whose source is `source_id`: starts the run
/// it asks for, summarizes the newest run in `status.lastSync`, prunes the history. Returns
/// when to look again, if anything is due later. Costs no write when nothing changed.
pub async fn ensure(
    ctx: &Context,
    obj: &SyncSource,
    source_id: &str,
) -> Result<Option<Duration>, Error> {
    let Some(policy) = obj.spec.sync.as_deref() else {
        return Ok(None);
    };
    let api: Api<SyncRun> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let runs = owned_runs(&api, obj).await?;
    let status = obj.status.clone().unwrap_or_default();
    let state = status.sync_state.clone().unwrap_or_default();
    let active = runs.iter().any(|r| !finished(r));
    let now = jiff::Timestamp::now();
    let anchor = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let schedule = schedule_of(policy);
    let requests = intent::requests(&obj.metadata);
    let request = new_request(&requests, &state);
    let plan = plan(Situation {
        now,
        wanted: &fingerprint(source_id, policy),
        schedule: schedule.as_ref(),
        state: &state,
        anchor,
        active,
        requested: request.as_deref(),
    });
    if active && request.is_some() {
        info!("a reconcile request found a run going; queued until it ends");
    }

    let mut next_state = state.clone();
    if let Some(start) = &plan.start {
        let name = run_name(&obj.name_any(), start);
        create_run(&api, obj, policy, &name, start).await?;
        info!(run = %name, ?start, "started a sync run");
        match start {
            Start::Settings { fingerprint } => next_state.started_for = Some(fingerprint.clone()),
            Start::Tick { at } => next_state.last_schedule_time = Some(Time(*at)),
            Start::Requested { .. } => {}
        }
        // Every start serves the requests standing, in the same write that records it.
        served(&mut next_state, &requests);
    }
    if let Some(at) = plan.skipped {
        if plan.start.is_none() {
            info!(tick = %at, "a schedule tick found a run going; skipped");
            ctx.metrics.sync_tick_skipped();
        }
        next_state.last_schedule_time = Some(Time(at));
    }
    let last_sync = runs.first().map(summary).or(status.last_sync.clone());
    let mut refused = None;
    if let Some(p) = publication(policy, &obj.spec.database_name, &runs, &state) {
        match publish(ctx, obj, &p).await? {
            Published::Done => next_state.published = Some(p.marker),
            Published::Conflict(message) => refused = Some(message),
        }
    } else if policy.publish_to.is_none() {
        next_state.published = None;
    }
    next_state.collections = policy
        .keep_collections
        .map(|_| record_collections(state.collections.as_deref().unwrap_or_default(), &runs));
    let was_refused = status.conditions.iter().any(|c| c.type_ == PUBLISHED);
    if let Some(message) = &refused
        && !was_refused
    {
        ctx.events
            .publish(obj, Kind::Warning, Reason::PublishConflict, message.clone());
    }
    let generation = obj.metadata.generation.unwrap_or_default();
    let conditions =
        with_publish_condition(&status.conditions, refused.as_deref(), (generation, now));
    let conditions = (conditions != status.conditions).then_some(conditions);
    let mut stored = std::borrow::Cow::Borrowed(obj);
    if next_state != state || last_sync != status.last_sync || conditions.is_some() {
        let written = write_state(ctx, obj, &next_state, last_sync, conditions).await?;
        stored = std::borrow::Cow::Owned(written);
    }
    // The record of their collections is stored (above) before runs leave the history.
    prune(&api, policy, &runs).await;
    let going = active || plan.start.is_some();
    let collections_left = match policy.keep_collections {
        Some(keep) if !going && obj.spec.deletion_policy != DeletionPolicy::Retain => {
            prune_collections(ctx, &stored, keep.max(1) as usize, &next_state, &runs).await?
        }
        _ => true,
    };

    let started_or_active = active || plan.start.is_some();
    let until_tick = plan
        .wake_at
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok());
    let next = match (started_or_active, until_tick) {
        (true, Some(tick)) => Some(tick.min(ACTIVE_RUN_CHECK)),
        (true, None) => Some(ACTIVE_RUN_CHECK),
        (false, tick) => tick,
    };
    let look_again = refused.is_some() || !collections_left;
    Ok(match (next, look_again) {
        (Some(next), true) => Some(next.min(PUBLISH_CONFLICT_CHECK)),
        (None, true) => Some(PUBLISH_CONFLICT_CHECK),
        (next, false) => next,
    })
}

/// Deletes the collections `keepCollections` lets go ([`collections_to_prune`] of `state`'s
/// record) through the Chroma API, then records them as deleted, with the count, in one status
/// write. Returns false when some could not be deleted (looked at again later).
///
/// Crash-safe without a write per delete: the decision is a pure function of the stored record,
/// which changes only after the deletes, so a restart between two deletes decides the same list
/// and deletes it again; the ones already gone answer 404, which counts as deleted. Nothing is
/// lost (the record is written only after), nothing is deleted twice in effect, and the record
/// of a kept collection is never touched.
async fn prune_collections(
    ctx: &Context,
    obj: &SyncSource,
    keep: usize,
    state: &SyncState,
    runs: &[SyncRun],
) -> Result<bool, Error> {
    let record = state.collections.clone().unwrap_or_default();
    let published_run = state
        .published
        .as_deref()
        .and_then(|p| p.split_once('/'))
        .map(|(_, run)| run);
    let doomed = collections_to_prune(&record, keep, published_run);
    if doomed.is_empty() {
        return Ok(true);
    }
    let ep = match ctx.reach(obj).await {
        Ok(ep) => ep,
        Err(_) => {
            warn!("keepCollections: no endpoint or token now; old collections kept for now");
            return Ok(false);
        }
    };
    let database = &obj.spec.database_name;
    let tenant = match ctx.tenant(&ep).await {
        Ok(tenant) => tenant,
        Err(e) => {
            pruning_failed(
                ctx,
                obj,
                &format!("could not learn the token's tenant: {e}"),
            );
            return Ok(false);
        }
    };
    let mut deleted = Vec::new();
    let mut failure = None;
    for name in &doomed {
        match ep
            .chroma
            .delete_collection(&ep.token, &tenant, database, name)
            .await
        {
            Ok(_) => deleted.push(name.clone()),
            Err(e) => {
                failure = Some(format!("could not delete collection {name}: {e}"));
                break;
            }
        }
    }
    if !deleted.is_empty() {
        let mut next = state.clone();
        let mut record = record.clone();
        for c in &mut record {
            if deleted.contains(&c.name) {
                c.deleted = true;
            }
        }
        // Those whose run is gone already are forgotten now, not in a write of their own.
        next.collections = Some(record_collections(&record, runs));
        next.pruned_collections =
            Some(state.pruned_collections.unwrap_or_default() + deleted.len() as i64);
        let last_sync = obj.status.as_ref().and_then(|s| s.last_sync.clone());
        write_state(ctx, obj, &next, last_sync, None).await?;
        info!(collections = ?deleted, "keepCollections: deleted old collections");
        let note = format!(
            "Deleted {} old collection(s) beyond keepCollections={keep}: {}",
            deleted.len(),
            deleted.join(", ")
        );
        ctx.events
            .publish(obj, Kind::Normal, Reason::CollectionsPruned, note);
    }
    if let Some(message) = failure {
        pruning_failed(ctx, obj, &message);
        return Ok(false);
    }
    Ok(true)
}

fn pruning_failed(ctx: &Context, obj: &SyncSource, message: &str) {
    warn!(error = %message, "keepCollections: old collections kept for now");
    ctx.events.publish(
        obj,
        Kind::Warning,
        Reason::CollectionPruneFailed,
        format!("{message}; tried again within a minute"),
    );
}

/// Makes `p.config_map` hold `p.data`: read with a list of its one name (the operator's role
/// lists ConfigMaps and gets none), written with server-side apply under the operator's field
/// manager only when the data differ, with the SyncSource as its controller (so it goes with
/// it). One that exists and is not controlled by this SyncSource is never written. An update
/// carries the resourceVersion it was read at: one changed meanwhile fails with a conflict and
/// is decided again.
pub async fn publish(ctx: &Context, obj: &SyncSource, p: &Publication) -> Result<Published, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let by_name = ListParams::default().fields(&format!("metadata.name={}", p.config_map));
    let stored = bounded(api.list(&by_name)).await?.items.into_iter().next();
    let mut resource_version = None;
    if let Some(cm) = &stored {
        let ours = cm
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == obj.uid().as_ref() && o.controller == Some(true));
        if !ours {
            return Ok(Published::Conflict(format!(
                "ConfigMap {namespace}/{} exists and is not owned by this SyncSource; spec.sync.publishTo left it unchanged",
                p.config_map
            )));
        }
        let data = cm.data.clone().unwrap_or_default();
        if data == p.data || holds_newer(&data, &p.data) {
            return Ok(Published::Done);
        }
        resource_version = cm.resource_version();
    }
    let applied = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": p.config_map,
            "namespace": namespace,
            "resourceVersion": resource_version,
            "labels": { SYNC_SOURCE_LABEL: obj.name_any() },
            "ownerReferences": [owner(obj)],
        },
        "data": p.data,
    });
    // Forced only over a ConfigMap already ours. Unforced, a first write that meets one someone
    // created since the read (their manager owns the keys) is refused, not taken over.
    let params = PatchParams::apply(FIELD_MANAGER);
    let params = if stored.is_some() {
        params.force()
    } else {
        params
    };
    match bounded(api.patch(&p.config_map, &params, &Patch::Apply(applied))).await {
        Err(e) if stored.is_none() && e.is_conflict() => {
            return Ok(Published::Conflict(format!(
                "ConfigMap {namespace}/{} was created by someone else while the operator wrote it; spec.sync.publishTo left it unchanged",
                p.config_map
            )));
        }
        answer => answer?,
    };
    info!(config_map = %p.config_map, run = %p.marker, "published the newest completed sync run");
    Ok(Published::Done)
}

/// The SyncSource as the controller owner of what `spec.sync` makes.
fn owner(obj: &SyncSource) -> OwnerReference {
    OwnerReference {
        api_version: SyncSource::api_version(&()).into_owned(),
        kind: SyncSource::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The schedule, if set and valid. Admission checks the shape; the operator, the values.
fn schedule_of(policy: &SyncPolicy) -> Option<croner::Cron> {
    match policy.schedule.as_deref()?.parse::<croner::Cron>() {
        Ok(cron) => Some(cron),
        Err(e) => {
            warn!(error = %e, "spec.sync.schedule is not a valid cron expression; no scheduled runs");
            None
        }
    }
}

/// The SyncRuns `obj`'s `spec.sync` started, newest first.
async fn owned_runs(api: &Api<SyncRun>, obj: &SyncSource) -> Result<Vec<SyncRun>, Error> {
    let selector = format!("{SYNC_SOURCE_LABEL}={}", obj.name_any());
    let mut runs = bounded(api.list(&ListParams::default().labels(&selector)))
        .await?
        .items;
    runs.retain(|r| owned_by(r, obj));
    runs.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.clone()));
    Ok(runs)
}

/// Writes `syncState` and `lastSync`. Guarded like every other status write: a decision made on
/// a stale copy fails with a conflict (and is made again on a fresh read) instead of overwriting
/// a newer `lastSync`.
async fn write_state(
    ctx: &Context,
    obj: &SyncSource,
    state: &SyncState,
    last_sync: Option<Box<LastSync>>,
    conditions: Option<Vec<Condition>>,
) -> Result<SyncSource, Error> {
    // Fields the new values lack are removed (nulls), not kept: a run just created, with no
    // phase yet, must not show the previous run's phase and invocation.
    let previous = obj.status.clone().unwrap_or_default();
    let before = json!({ "syncState": previous.sync_state, "lastSync": previous.last_sync });
    let after = json!({ "syncState": state, "lastSync": last_sync });
    let mut patch = json!({
        "metadata": { "resourceVersion": obj.resource_version() },
        "status": crate::kernel::kube_io::merge_patch(&before, &after),
    });
    if let Some(conditions) = conditions {
        // A merge patch replaces the list whole: all of them, guarded by the resourceVersion.
        patch["status"]["conditions"] = json!(conditions);
    }
    let sources: Api<SyncSource> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    bounded(sources.patch_status(&obj.name_any(), &params(), &Patch::Merge(patch))).await
}

/// Deletes the finished runs beyond the history limits.
async fn prune(api: &Api<SyncRun>, policy: &SyncPolicy, runs: &[SyncRun]) {
    let keep_complete = policy.successful_runs_history_limit.unwrap_or(3).max(0) as usize;
    let keep_failed = policy.failed_runs_history_limit.unwrap_or(1).max(0) as usize;
    for old in beyond_history(runs, keep_complete, keep_failed) {
        match bounded(api.delete(&old.name_any(), &DeleteParams::background())).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(run = %old.name_any(), error = %e, "could not delete an old sync run"),
        }
    }
}

async fn create_run(
    api: &Api<SyncRun>,
    obj: &SyncSource,
    policy: &SyncPolicy,
    name: &str,
    start: &Start,
) -> Result<(), Error> {
    let owner = owner(obj);
    let reason = match start {
        Start::Settings { .. } => "settings",
        Start::Tick { .. } => "schedule",
        Start::Requested { .. } => "request",
    };
    let run: SyncRun = serde_json::from_value(json!({
        "apiVersion": "chromasync.dev/v1alpha1",
        "kind": "SyncRun",
        "metadata": {
            "name": name,
            "labels": { SYNC_SOURCE_LABEL: obj.name_any() },
            "annotations": { "chromasync.dev/started-by": reason },
            "ownerReferences": [owner],
        },
        "spec": {
            "sourceRef": { "name": obj.name_any() },
            "targetCollectionName": collection_name(policy, start),
            "ref": policy.git_ref,
        },
    }))
    .expect("a SyncRun");
    match bounded(api.create(&PostParams::default(), &run)).await {
        Ok(_) => Ok(()),
        // Created before a crash cut the status write short: it is the same run.
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
