//! Continuous sync: `SyncSource.spec.sync` turned into SyncRuns. The operator starts a run
//! (a SyncRun owned by the SyncSource) when the source is first created or replaced, when the
//! sync settings change, and at each schedule tick; never two at once; ticks missed while it was
//! down start one run. [`plan`] decides, as a pure function of the time, the settings and what
//! status recorded; [`ensure`] does the IO.
//!
//! What a run was started for, and the latest tick handled, live in the SyncSource's status
//! (`syncState`), written only when a run starts or a tick is skipped: nothing at rest. A run's
//! name is derived from what started it, so a create repeated after a crash finds it
//! (AlreadyExists) instead of starting a second one.

use crate::crd::run::{RunPhase, SyncRun};
use crate::crd::{LastSync, SyncPolicy, SyncSource, SyncState};
use crate::kernel::kube_io::{bounded, params};
use crate::kernel::{Context, Error};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tracing::{info, warn};

/// The label that ties a SyncRun to the SyncSource whose `spec.sync` started it.
pub const SYNC_SOURCE_LABEL: &str = "chromasync.dev/sync-source";

/// While a run it started is going, the SyncSource looks at it this often (a Kubernetes read,
/// no Chroma call) to summarize it and to start what waits for it.
const ACTIVE_RUN_CHECK: Duration = Duration::from_secs(10);

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first run for these settings (first create, a replaced source, changed settings).
    Settings { fingerprint: String },
    /// A schedule tick (the latest one due, when several were missed).
    Tick { at: jiff::Timestamp },
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub start: Option<Start>,
    /// A tick that found a run going: recorded as handled, not run.
    pub skipped: Option<jiff::Timestamp>,
    /// When to look again: the next tick.
    pub wake_at: Option<jiff::Timestamp>,
}

/// The fingerprint of what a run syncs: the source and the settings that reach the run (not
/// the schedule or the history limits).
pub fn fingerprint(source_id: &str, policy: &SyncPolicy) -> String {
    let settings = json!([source_id, policy.target_collection_name, policy.git_ref]);
    let digest = Sha256::digest(settings.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Decides what `spec.sync` asks for now. `anchor` is when ticks start counting (the
/// SyncSource's creation) unless a tick was handled since; `active` says a run it started is
/// still going.
pub fn plan(
    now: jiff::Timestamp,
    policy: &SyncPolicy,
    schedule: Option<&croner::Cron>,
    source_id: &str,
    state: &SyncState,
    anchor: jiff::Timestamp,
    active: bool,
) -> Plan {
    let wanted = fingerprint(source_id, policy);
    let last_tick = state.last_schedule_time.as_ref().map_or(anchor, |t| t.0);
    let utc = |t: jiff::Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC);
    // The latest tick after the last one handled and not after now, if any.
    let due = schedule.and_then(|cron| {
        let latest = cron.find_previous_occurrence(&utc(now), true).ok()?;
        (latest.timestamp() > last_tick).then(|| latest.timestamp())
    });
    let wake_at = schedule.and_then(|cron| {
        let next = cron.find_next_occurrence(&utc(now), false).ok()?;
        Some(next.timestamp())
    });
    let mut plan = Plan {
        wake_at,
        ..Default::default()
    };
    if active {
        // Never two at once: settings wait for the run to end, a tick is skipped.
        plan.skipped = due;
        return plan;
    }
    if state.started_for.as_deref() != Some(wanted.as_str()) {
        plan.start = Some(Start::Settings {
            fingerprint: wanted,
        });
        // A tick due now is served by this run.
        plan.skipped = due;
    } else if let Some(at) = due {
        plan.start = Some(Start::Tick { at });
    }
    plan
}

/// What tells a start's run and collection apart: the settings' fingerprint, or `t` and the
/// tick in unix minutes.
fn suffix(start: &Start) -> String {
    match start {
        Start::Settings { fingerprint } => fingerprint.clone(),
        Start::Tick { at } => format!("t{}", at.as_second() / 60),
    }
}

/// The SyncRun name for a start, `<source>-<suffix>`, within the 253 characters a name may
/// have.
pub fn run_name(source: &str, start: &Start) -> String {
    let suffix = suffix(start);
    let keep = source.len().min(252 - suffix.len());
    format!("{}-{suffix}", source[..keep].trim_end_matches(['-', '.']))
}

/// The collection a start's run writes: `<targetCollectionName>-<suffix>`. Chroma Sync refuses
/// a second finished sync into one collection (409), so each run writes its own; for GitHub the
/// service forks it copy-on-write from the previous one and processes only the diff.
pub fn collection_name(policy: &SyncPolicy, start: &Start) -> String {
    format!("{}-{}", policy.target_collection_name, suffix(start))
}

/// Which finished runs to delete: beyond the newest `keep_complete` complete ones and the
/// newest `keep_failed` failed or cancelled ones. `runs` come newest first.
pub fn beyond_history(runs: &[SyncRun], keep_complete: usize, keep_failed: usize) -> Vec<&SyncRun> {
    let phase = |r: &SyncRun| r.status.as_ref().and_then(|s| s.phase);
    let complete = runs.iter().filter(|r| phase(r) == Some(RunPhase::Complete));
    let failed = runs
        .iter()
        .filter(|r| matches!(phase(r), Some(RunPhase::Failed | RunPhase::Cancelled)));
    complete
        .skip(keep_complete)
        .chain(failed.skip(keep_failed))
        .collect()
}

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
    let plan = plan(
        now,
        policy,
        schedule.as_ref(),
        source_id,
        &state,
        anchor,
        active,
    );

    let mut next_state = state.clone();
    if let Some(start) = &plan.start {
        let name = run_name(&obj.name_any(), start);
        create_run(&api, obj, policy, &name, start).await?;
        info!(run = %name, ?start, "started a sync run");
        match start {
            Start::Settings { fingerprint } => next_state.started_for = Some(fingerprint.clone()),
            Start::Tick { at } => next_state.last_schedule_time = Some(Time(*at)),
        }
    }
    if let Some(at) = plan.skipped {
        if plan.start.is_none() {
            info!(tick = %at, "a schedule tick found a run going; skipped");
            ctx.metrics.sync_tick_skipped();
        }
        next_state.last_schedule_time = Some(Time(at));
    }
    let last_sync = runs.first().map(summary).or(status.last_sync.clone());
    if next_state != state || last_sync != status.last_sync {
        write_state(ctx, obj, &next_state, last_sync).await?;
    }
    prune(&api, policy, &runs).await;

    let started_or_active = active || plan.start.is_some();
    let until_tick = plan
        .wake_at
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok());
    Ok(match (started_or_active, until_tick) {
        (true, Some(tick)) => Some(tick.min(ACTIVE_RUN_CHECK)),
        (true, None) => Some(ACTIVE_RUN_CHECK),
        (false, tick) => tick,
    })
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

fn finished(run: &SyncRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_final)
}

/// What `status.lastSync` says of a run.
fn summary(run: &SyncRun) -> Box<LastSync> {
    let status = run.status.as_ref();
    Box::new(LastSync {
        name: run.name_any(),
        collection_name: run.spec.target_collection_name.clone(),
        invocation_id: status.and_then(|s| s.invocation_id.clone()),
        phase: status.and_then(|s| s.phase),
        finished_at: status.and_then(|s| s.completion_time.clone()),
    })
}

/// Writes `syncState` and `lastSync`. Guarded like every other status write: a decision made on
/// a stale copy fails with a conflict (and is made again on a fresh read) instead of overwriting
/// a newer `lastSync`.
async fn write_state(
    ctx: &Context,
    obj: &SyncSource,
    state: &SyncState,
    last_sync: Option<Box<LastSync>>,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": { "resourceVersion": obj.resource_version() },
        "status": { "syncState": state, "lastSync": last_sync },
    });
    let sources: Api<SyncSource> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    bounded(sources.patch_status(&obj.name_any(), &params(), &Patch::Merge(patch))).await?;
    Ok(())
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
    let owner = OwnerReference {
        api_version: SyncSource::api_version(&()).into_owned(),
        kind: SyncSource::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let reason = match start {
        Start::Settings { .. } => "settings",
        Start::Tick { .. } => "schedule",
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

fn owned_by(run: &SyncRun, obj: &SyncSource) -> bool {
    run.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == obj.uid().as_ref() && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schedule: Option<&str>) -> SyncPolicy {
        serde_json::from_value(json!({
            "targetCollectionName": "docs",
            "ref": {"branch": "main"},
            "schedule": schedule,
        }))
        .unwrap()
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_source_starts_one_run_and_nothing_more_until_something_changes() {
        let p = policy(None);
        let now = at("2026-11-30T10:00:00Z");
        let first = plan(now, &p, None, "src-1", &SyncState::default(), now, false);
        let Some(Start::Settings {
            fingerprint: started,
        }) = first.start.clone()
        else {
            panic!("{first:?}");
        };
        assert_eq!(first.wake_at, None);
        let state = SyncState {
            started_for: Some(started),
            last_schedule_time: None,
        };
        assert_eq!(
            plan(now, &p, None, "src-1", &state, now, false),
            Plan::default()
        );
        // A replaced source (a new id) and a new ref each start a run.
        assert!(
            plan(now, &p, None, "src-2", &state, now, false)
                .start
                .is_some()
        );
        let mut bumped = p.clone();
        bumped.git_ref = serde_json::from_value(json!({"sha": "0a1b2c"})).unwrap();
        assert!(
            plan(now, &bumped, None, "src-1", &state, now, false)
                .start
                .is_some()
        );
        // The schedule and the history limits are not what a run syncs.
        let mut rescheduled = policy(Some("0 * * * *"));
        rescheduled.successful_runs_history_limit = Some(9);
        assert_eq!(fingerprint("src-1", &rescheduled), fingerprint("src-1", &p));
        // Never two at once: the change waits for the run going.
        assert_eq!(
            plan(now, &bumped, None, "src-1", &state, now, true).start,
            None
        );
    }

    #[test]
    fn ticks_run_once_each_collapse_when_missed_and_skip_when_a_run_is_going() {
        let p = policy(Some("0 * * * *"));
        let cron: croner::Cron = "0 * * * *".parse().unwrap();
        let created = at("2026-11-30T09:30:00Z");
        let state = SyncState {
            started_for: Some(fingerprint("src", &p)),
            last_schedule_time: None,
        };
        // Before the first tick: nothing, wake at 10:00.
        let early = plan(
            at("2026-11-30T09:45:00Z"),
            &p,
            Some(&cron),
            "src",
            &state,
            created,
            false,
        );
        assert_eq!(early.start, None);
        assert_eq!(early.wake_at, Some(at("2026-11-30T10:00:00Z")));
        // Down from 09:45 to 13:20: 10:00 .. 13:00 were missed; one run, for 13:00.
        let late = plan(
            at("2026-11-30T13:20:00Z"),
            &p,
            Some(&cron),
            "src",
            &state,
            created,
            false,
        );
        assert_eq!(
            late.start,
            Some(Start::Tick {
                at: at("2026-11-30T13:00:00Z")
            })
        );
        assert_eq!(late.wake_at, Some(at("2026-11-30T14:00:00Z")));
        let handled = SyncState {
            last_schedule_time: Some(Time(at("2026-11-30T13:00:00Z"))),
            ..state.clone()
        };
        let again = plan(
            at("2026-11-30T13:21:00Z"),
            &p,
            Some(&cron),
            "src",
            &handled,
            created,
            false,
        );
        assert_eq!(again.start, None, "a tick runs once");
        // A tick that finds a run going is skipped, and recorded as handled.
        let busy = plan(
            at("2026-11-30T14:00:05Z"),
            &p,
            Some(&cron),
            "src",
            &handled,
            created,
            true,
        );
        assert_eq!(busy.start, None);
        assert_eq!(busy.skipped, Some(at("2026-11-30T14:00:00Z")));
        // A settings change due with a tick: one run, the tick counted as handled.
        let fresh = SyncState::default();
        let both = plan(
            at("2026-11-30T14:00:05Z"),
            &p,
            Some(&cron),
            "src",
            &fresh,
            created,
            false,
        );
        assert!(matches!(both.start, Some(Start::Settings { .. })));
        assert_eq!(both.skipped, Some(at("2026-11-30T14:00:00Z")));
    }

    #[test]
    fn run_names_are_valid_and_tell_their_start() {
        let tick = Start::Tick {
            at: at("2026-11-30T13:00:00Z"),
        };
        assert_eq!(
            run_name("docs", &tick),
            format!("docs-t{}", at("2026-11-30T13:00:00Z").as_second() / 60)
        );
        let settings = Start::Settings {
            fingerprint: "0123abcd".into(),
        };
        assert_eq!(run_name("docs", &settings), "docs-0123abcd");
        let long = run_name(&"a".repeat(253), &settings);
        assert_eq!(long.len(), 253);
        let p = policy(None);
        assert_eq!(collection_name(&p, &settings), "docs-0123abcd");
    }

    #[test]
    fn history_keeps_the_newest_finished_runs_of_each_kind() {
        let run = |name: &str, phase: Option<RunPhase>| -> SyncRun {
            serde_json::from_value(json!({
                "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
                "metadata": {"name": name},
                "spec": {"sourceRef": {"name": "docs"}},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        use RunPhase::*;
        let runs = [
            run("going", Some(Processing)),
            run("c4", Some(Complete)),
            run("f2", Some(Failed)),
            run("c3", Some(Complete)),
            run("x1", Some(Cancelled)),
            run("c2", Some(Complete)),
            run("c1", Some(Complete)),
        ];
        let names: Vec<String> = beyond_history(&runs, 3, 1)
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(names, ["c1", "x1"]);
        assert!(beyond_history(&runs, 10, 10).is_empty());
    }
}
