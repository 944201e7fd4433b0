//! Continuous sync, the decisions: pure functions of the time, the settings, the runs and
//! what status recorded. [`super`] does the IO they ask for.

use crate::crd::run::{RunPhase, SyncRun};
use crate::crd::{LastSync, OwnCollection, SyncPolicy, SyncSource, SyncState};
use crate::kernel::intent::Requests;
use crate::source::reason::Reason;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The condition `publishTo` sets while it cannot publish (a ConfigMap of that name that is not
/// this object's); absent otherwise.
pub const PUBLISHED: &str = "Published";

/// The ConfigMap keys `publishTo` writes.
pub const KEY_COLLECTION: &str = "collection";
pub const KEY_DATABASE: &str = "database";
pub const KEY_INVOCATION_ID: &str = "invocationId";
pub const KEY_FINISHED_AT: &str = "finishedAt";

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first run for these settings (first create, a replaced source, changed settings).
    Settings { fingerprint: String },
    /// A schedule tick (the latest one due, when several were missed).
    Tick { at: jiff::Timestamp },
    /// A new value of a reconcile-now annotation (a Flux Receiver's push, or a person's):
    /// `token` is a fingerprint of the values, so a create repeated after a crash finds the run.
    Requested { token: String },
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

/// What [`plan`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub now: jiff::Timestamp,
    /// The [`fingerprint`] of the source and the settings.
    pub wanted: &'a str,
    pub schedule: Option<&'a croner::Cron>,
    /// What status recorded.
    pub state: &'a SyncState,
    /// When ticks start counting (the SyncSource's creation) unless a tick was handled since.
    pub anchor: jiff::Timestamp,
    /// A run it started is still going.
    pub active: bool,
    /// The token of a reconcile-now request no run has served yet ([`new_request`]).
    pub requested: Option<&'a str>,
}

/// Decides what `spec.sync` asks for now.
pub fn plan(situation: Situation) -> Plan {
    let Situation {
        now,
        wanted,
        schedule,
        state,
        anchor,
        active,
        requested,
    } = situation;
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
        // Never two at once: settings and a request wait for the run to end (a request is
        // queued: it stays new until a run starts), a tick is skipped.
        plan.skipped = due;
        return plan;
    }
    if state.started_for.as_deref() != Some(wanted) {
        plan.start = Some(Start::Settings {
            fingerprint: wanted.to_owned(),
        });
        // A tick due now, and a request, are served by this run.
        plan.skipped = due;
    } else if let Some(token) = requested {
        plan.start = Some(Start::Requested {
            token: token.to_owned(),
        });
        plan.skipped = due;
    } else if let Some(at) = due {
        plan.start = Some(Start::Tick { at });
    }
    plan
}

/// The token of the reconcile-now requests not yet served by a run, if any: a fingerprint of
/// the annotations' values (what names the run it starts).
pub fn new_request(now: &Requests, state: &SyncState) -> Option<String> {
    let handled = Requests {
        flux: state.handled_requested_at.clone(),
        own: state.handled_reconcile_requested_at.clone(),
    };
    if !now.new_since(&handled) {
        return None;
    }
    let values = json!([now.flux, now.own]);
    let digest = Sha256::digest(values.to_string().as_bytes());
    Some(digest[..4].iter().map(|b| format!("{b:02x}")).collect())
}

/// `state` with the requests `now` recorded as served (a run started); an annotation removed
/// keeps what was served before.
pub(super) fn served(state: &mut SyncState, now: &Requests) {
    if now.flux.is_some() {
        state.handled_requested_at = now.flux.clone();
    }
    if now.own.is_some() {
        state.handled_reconcile_requested_at = now.own.clone();
    }
}

/// What tells a start's run and collection apart: the settings' fingerprint, or `t` and the
/// tick in unix minutes.
fn suffix(start: &Start) -> String {
    match start {
        Start::Settings { fingerprint } => fingerprint.clone(),
        Start::Tick { at } => format!("t{}", at.as_second() / 60),
        Start::Requested { token } => format!("r{token}"),
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

/// The collections record after this look: `recorded` plus the collections of the finished
/// runs in `runs` it lacks (a run is known by its name and end), newest first by end; a deleted
/// one is forgotten once its run is gone (nothing can bring it back into the record then).
pub fn record_collections(recorded: &[OwnCollection], runs: &[SyncRun]) -> Vec<OwnCollection> {
    let ended = |r: &SyncRun| r.status.as_ref().and_then(|s| s.completion_time.clone());
    let mut record: Vec<OwnCollection> = recorded
        .iter()
        .filter(|c| !c.deleted || runs.iter().any(|r| r.name_any() == c.run))
        .cloned()
        .collect();
    for run in runs.iter().filter(|r| finished(r)) {
        let Some(name) = run.spec.target_collection_name.clone() else {
            continue;
        };
        let finished_at = ended(run);
        if record
            .iter()
            .any(|c| c.run == run.name_any() && c.finished_at == finished_at)
        {
            continue;
        }
        let phase = run.status.as_ref().and_then(|s| s.phase);
        record.push(OwnCollection {
            name,
            run: run.name_any(),
            complete: phase == Some(RunPhase::Complete),
            finished_at,
            deleted: false,
        });
    }
    // Newest first; a run without an end (none should lack one) last.
    record.sort_by(|a, b| b.finished_at.cmp(&a.finished_at));
    record
}

/// The collections `keepCollections: keep` deletes now, from the record (newest first): every
/// live one but the newest `keep` completed ones and the published run's (`published_run`).
/// A name one of those also has (a run refused into a collection an earlier run finished) is
/// never deleted. The caller asks only when no run is going (a GitHub run forks the previous
/// collection) and never under `deletionPolicy: Retain`.
pub fn collections_to_prune(
    record: &[OwnCollection],
    keep: usize,
    published_run: Option<&str>,
) -> Vec<String> {
    let live = || record.iter().filter(|c| !c.deleted);
    let kept: Vec<&OwnCollection> = live()
        .filter(|c| c.complete)
        .take(keep)
        .chain(live().filter(|c| Some(c.run.as_str()) == published_run))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for c in live() {
        let protected = kept.iter().any(|k| k.name == c.name);
        if !protected && !names.contains(&c.name) {
            names.push(c.name.clone());
        }
    }
    names
}

/// What `publishTo` should be made to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub config_map: String,
    /// `<configMapName>/<run name>`, recorded in `syncState.published` once written.
    pub marker: String,
    pub data: BTreeMap<String, String>,
}

/// What `publishTo` asks for now: the newest completed run of `runs` (newest first), unless
/// `state` records it as published already. Failed, cancelled and going runs never publish.
pub fn publication(
    policy: &SyncPolicy,
    database: &str,
    runs: &[SyncRun],
    state: &SyncState,
) -> Option<Publication> {
    let to = policy.publish_to.as_ref()?;
    let run = runs
        .iter()
        .find(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Complete))?;
    let marker = format!("{}/{}", to.config_map_name, run.name_any());
    if state.published.as_deref() == Some(marker.as_str()) {
        return None;
    }
    let status = run.status.as_ref();
    let finished_at = status
        .and_then(|s| s.completion_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    let data = [
        (KEY_COLLECTION, run.spec.target_collection_name.clone()),
        (KEY_DATABASE, Some(database.to_owned())),
        (
            KEY_INVOCATION_ID,
            status.and_then(|s| s.invocation_id.clone()),
        ),
        (KEY_FINISHED_AT, finished_at),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
    .collect();
    Some(Publication {
        config_map: to.config_map_name.clone(),
        marker,
        data,
    })
}

/// Whether `stored` (a published ConfigMap's data) names a run that finished after `wanted`'s:
/// then it is kept (never rolled back to an older run, say after the newest was deleted).
pub fn holds_newer(stored: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    let at = |d: &BTreeMap<String, String>| {
        d.get(KEY_FINISHED_AT)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    matches!((at(stored), at(wanted)), (Some(s), Some(w)) if s > w)
}

/// What became of a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The ConfigMap holds it (written now, or already).
    Done,
    /// A ConfigMap of that name exists and is not this object's: left alone.
    Conflict(String),
}

/// `conditions` with the `Published` condition set to `refused` (a message) or removed.
pub fn with_publish_condition(
    conditions: &[Condition],
    refused: Option<&str>,
    (generation, now): (i64, jiff::Timestamp),
) -> Vec<Condition> {
    let mut next: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != PUBLISHED)
        .cloned()
        .collect();
    if let Some(message) = refused {
        next.push(crate::kernel::conditions::condition(
            conditions,
            PUBLISHED,
            false,
            Reason::PublishConflict.as_str(),
            message,
            (generation, now),
        ));
    }
    next
}

/// Whether a run has ended (complete, failed or cancelled).
pub(super) fn finished(run: &SyncRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_final)
}

/// What `status.lastSync` says of a run.
pub(super) fn summary(run: &SyncRun) -> Box<LastSync> {
    let status = run.status.as_ref();
    Box::new(LastSync {
        name: run.name_any(),
        collection_name: run.spec.target_collection_name.clone(),
        invocation_id: status.and_then(|s| s.invocation_id.clone()),
        phase: status.and_then(|s| s.phase),
        finished_at: status.and_then(|s| s.completion_time.clone()),
    })
}

/// Whether `obj` is the controller of `run`.
pub(super) fn owned_by(run: &SyncRun, obj: &SyncSource) -> bool {
    run.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == obj.uid().as_ref() && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

    /// At `now` (also the anchor), with no schedule, no run going and no request.
    fn quiet<'a>(now: jiff::Timestamp, wanted: &'a str, state: &'a SyncState) -> Situation<'a> {
        Situation {
            now,
            wanted,
            schedule: None,
            state,
            anchor: now,
            active: false,
            requested: None,
        }
    }

    #[test]
    fn a_new_source_starts_one_run_and_nothing_more_until_something_changes() {
        let p = policy(None);
        let now = at("2026-11-30T10:00:00Z");
        let wanted = fingerprint("src-1", &p);
        let first = plan(quiet(now, &wanted, &SyncState::default()));
        let Some(Start::Settings {
            fingerprint: started,
        }) = first.start.clone()
        else {
            panic!("{first:?}");
        };
        assert_eq!(first.wake_at, None);
        let state = SyncState {
            started_for: Some(started),
            ..Default::default()
        };
        let at_rest = quiet(now, &wanted, &state);
        assert_eq!(plan(at_rest), Plan::default());
        // A replaced source (a new id) and a new ref each start a run.
        let replaced = fingerprint("src-2", &p);
        let replaced = Situation {
            wanted: &replaced,
            ..at_rest
        };
        assert!(plan(replaced).start.is_some());
        let mut bumped = p.clone();
        bumped.git_ref = serde_json::from_value(json!({"sha": "0a1b2c"})).unwrap();
        let bumped = fingerprint("src-1", &bumped);
        let bumped = Situation {
            wanted: &bumped,
            ..at_rest
        };
        assert!(plan(bumped).start.is_some());
        // The schedule and the history limits are not what a run syncs.
        let mut rescheduled = policy(Some("0 * * * *"));
        rescheduled.successful_runs_history_limit = Some(9);
        assert_eq!(fingerprint("src-1", &rescheduled), fingerprint("src-1", &p));
        // Never two at once: the change waits for the run going.
        let going = Situation {
            active: true,
            ..bumped
        };
        assert_eq!(plan(going).start, None);
    }

    #[test]
    fn ticks_run_once_each_collapse_when_missed_and_skip_when_a_run_is_going() {
        let p = policy(Some("0 * * * *"));
        let cron: croner::Cron = "0 * * * *".parse().unwrap();
        let created = at("2026-11-30T09:30:00Z");
        let wanted = fingerprint("src", &p);
        let state = SyncState {
            started_for: Some(wanted.clone()),
            ..Default::default()
        };
        let scheduled = |now: &str, state| Situation {
            schedule: Some(&cron),
            anchor: created,
            ..quiet(at(now), &wanted, state)
        };
        // Before the first tick: nothing, wake at 10:00.
        let early = plan(scheduled("2026-11-30T09:45:00Z", &state));
        assert_eq!(early.start, None);
        assert_eq!(early.wake_at, Some(at("2026-11-30T10:00:00Z")));
        // Down from 09:45 to 13:20: 10:00 .. 13:00 were missed; one run, for 13:00.
        let late = plan(scheduled("2026-11-30T13:20:00Z", &state));
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
        let again = plan(scheduled("2026-11-30T13:21:00Z", &handled));
        assert_eq!(again.start, None, "a tick runs once");
        // A tick that finds a run going is skipped, and recorded as handled.
        let busy = plan(Situation {
            active: true,
            ..scheduled("2026-11-30T14:00:05Z", &handled)
        });
        assert_eq!(busy.start, None);
        assert_eq!(busy.skipped, Some(at("2026-11-30T14:00:00Z")));
        // A settings change due with a tick: one run, the tick counted as handled.
        let fresh = SyncState::default();
        let both = plan(scheduled("2026-11-30T14:00:05Z", &fresh));
        assert!(matches!(both.start, Some(Start::Settings { .. })));
        assert_eq!(both.skipped, Some(at("2026-11-30T14:00:00Z")));
    }

    #[test]
    fn each_new_request_value_starts_one_run_queued_while_one_is_going() {
        let p = policy(None);
        let now = at("2026-11-30T10:00:00Z");
        let wanted = fingerprint("src", &p);
        let mut state = SyncState {
            started_for: Some(wanted.clone()),
            ..Default::default()
        };
        let push = |flux: &str| Requests {
            flux: Some(flux.into()),
            own: None,
        };
        // No annotation: nothing.
        assert_eq!(new_request(&Requests::default(), &state), None);
        // A Flux Receiver's push: one run, named after the value.
        let token = new_request(&push("push-1"), &state).expect("a new value");
        let first = plan(Situation {
            requested: Some(&token),
            ..quiet(now, &wanted, &state)
        });
        assert_eq!(
            first.start,
            Some(Start::Requested {
                token: token.clone()
            })
        );
        assert_eq!(
            run_name("docs", first.start.as_ref().unwrap()),
            format!("docs-r{token}")
        );
        // Recorded as served in the write that records the start: the same value again (set
        // twice, or seen again after a restart) starts nothing.
        served(&mut state, &push("push-1"));
        assert_eq!(state.handled_requested_at.as_deref(), Some("push-1"));
        assert_eq!(new_request(&push("push-1"), &state), None);
        // A new value: one more, with another name; the project's own annotation likewise.
        let second = new_request(&push("push-2"), &state).unwrap();
        assert_ne!(second, token);
        let own = Requests {
            flux: Some("push-1".into()),
            own: Some("t1".into()),
        };
        assert!(new_request(&own, &state).is_some());
        // While a run is going the request is queued: no start now, still new afterwards.
        let busy = plan(Situation {
            active: true,
            requested: Some(&second),
            ..quiet(now, &wanted, &state)
        });
        assert_eq!(busy.start, None);
        assert_eq!(new_request(&push("push-2"), &state), Some(second.clone()));
        // Changed settings and a request together: one run, for the settings (serving both).
        let mut bumped = p.clone();
        bumped.git_ref = serde_json::from_value(json!({"sha": "0a1b2c"})).unwrap();
        let bumped = fingerprint("src", &bumped);
        let both = plan(Situation {
            requested: Some(&second),
            ..quiet(now, &bumped, &state)
        });
        assert!(matches!(both.start, Some(Start::Settings { .. })));
        // Removing the annotation keeps what was served.
        served(&mut state, &Requests::default());
        assert_eq!(state.handled_requested_at.as_deref(), Some("push-1"));
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
    fn publish_to_follows_the_newest_complete_run_once_and_never_a_failed_one() {
        let run = |name: &str, phase: RunPhase, finished: &str| -> SyncRun {
            serde_json::from_value(json!({
                "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
                "metadata": {"name": name},
                "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": format!("docs-{name}")},
                "status": {"phase": phase, "invocationId": format!("inv-{name}"), "completionTime": finished},
            }))
            .unwrap()
        };
        let mut p = policy(None);
        let state = SyncState::default();
        let c1 = run("c1", RunPhase::Complete, "2026-11-30T10:00:00Z");
        assert_eq!(
            publication(&p, "db", std::slice::from_ref(&c1), &state),
            None,
            "no publishTo"
        );
        p.publish_to = Some(crate::crd::PublishTo {
            config_map_name: "docs-current".into(),
        });
        let first = publication(&p, "db", std::slice::from_ref(&c1), &state).unwrap();
        assert_eq!(first.config_map, "docs-current");
        assert_eq!(first.marker, "docs-current/c1");
        let want: BTreeMap<String, String> = [
            ("collection", "docs-c1"),
            ("database", "db"),
            ("invocationId", "inv-c1"),
            ("finishedAt", "2026-11-30T10:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(first.data, want);
        // Published: nothing more at rest.
        let published = SyncState {
            published: Some(first.marker.clone()),
            ..Default::default()
        };
        assert_eq!(
            publication(&p, "db", std::slice::from_ref(&c1), &published),
            None
        );
        // A newer failed or going run changes nothing; a newer complete one publishes.
        let f2 = run("f2", RunPhase::Failed, "2026-11-30T11:00:00Z");
        let g3 = run("g3", RunPhase::Processing, "2026-11-30T11:00:00Z");
        let runs = [g3, f2, c1.clone()];
        assert_eq!(publication(&p, "db", &runs, &published), None);
        let c4 = run("c4", RunPhase::Complete, "2026-11-30T12:00:00Z");
        let next = publication(&p, "db", &[c4, c1.clone()], &published).unwrap();
        assert_eq!(next.marker, "docs-current/c4");
        assert_eq!(next.data["collection"], "docs-c4");
        // Never back to an older run: stored data that finished later is kept.
        assert!(holds_newer(&next.data, &first.data));
        assert!(!holds_newer(&first.data, &next.data));
        assert!(!holds_newer(&next.data, &next.data));
        // Another ConfigMap name publishes again.
        p.publish_to = Some(crate::crd::PublishTo {
            config_map_name: "other".into(),
        });
        assert_eq!(
            publication(&p, "db", &[c1], &published).unwrap().marker,
            "other/c1"
        );
    }

    #[test]
    fn the_published_condition_is_there_only_while_refused() {
        let at = (4, at("2026-11-30T10:00:00Z"));
        let refused = with_publish_condition(&[], Some("taken"), at);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].type_, PUBLISHED);
        assert_eq!(refused[0].status, "False");
        assert_eq!(refused[0].reason, "PublishConflict");
        // Unchanged when refused again (no write); gone once published.
        assert_eq!(with_publish_condition(&refused, Some("taken"), at), refused);
        assert!(with_publish_condition(&refused, None, at).is_empty());
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

    fn finished_run(name: &str, phase: RunPhase, minute: u32) -> SyncRun {
        serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
            "metadata": {"name": name},
            "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": format!("docs-{name}")},
            "status": {"phase": phase, "completionTime": format!("2026-11-30T10:{minute:02}:00Z")},
        }))
        .unwrap()
    }

    fn names(record: &[OwnCollection]) -> Vec<&str> {
        record.iter().map(|c| c.run.as_str()).collect()
    }

    #[test]
    fn the_record_gains_each_finished_run_once_and_forgets_deleted_ones_whose_run_is_gone() {
        use RunPhase::*;
        let going: SyncRun = serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
            "metadata": {"name": "g5"},
            "spec": {"sourceRef": {"name": "docs"}, "targetCollectionName": "docs-g5"},
            "status": {"phase": "Processing"},
        }))
        .unwrap();
        let runs = [
            going,
            finished_run("c4", Complete, 4),
            finished_run("f3", Failed, 3),
            finished_run("c1", Complete, 1),
        ];
        let record = record_collections(&[], &runs);
        assert_eq!(
            names(&record),
            ["c4", "f3", "c1"],
            "newest first, no going run"
        );
        assert_eq!(record[1].name, "docs-f3");
        assert!(record[0].complete && !record[1].complete);
        // Again: the same record (no write at rest).
        assert_eq!(record_collections(&record, &runs), record);
        // A run pruned from the history stays recorded (its collection may still be there) ...
        let mut marked = record_collections(&record, &runs[..3]);
        assert_eq!(names(&marked), ["c4", "f3", "c1"]);
        // ... until it is deleted and its run is gone.
        marked[2].deleted = true;
        assert_eq!(
            names(&record_collections(&marked, &runs[..3])),
            ["c4", "f3"]
        );
        // A deleted one whose run is still there stays, as deleted (not deleted again).
        marked[1].deleted = true;
        let kept = record_collections(&marked, &runs);
        assert!(kept.iter().find(|c| c.run == "f3").unwrap().deleted);
    }

    #[test]
    fn keep_collections_deletes_all_but_the_newest_completed_and_the_published_one() {
        use RunPhase::*;
        let runs = [
            finished_run("c4", Complete, 4),
            finished_run("f3", Failed, 3),
            finished_run("c2", Complete, 2),
            finished_run("c1", Complete, 1),
        ];
        let record = record_collections(&[], &runs);
        assert_eq!(
            collections_to_prune(&record, 2, Some("c4")),
            ["docs-f3", "docs-c1"]
        );
        assert_eq!(
            collections_to_prune(&record, 1, Some("c4")),
            ["docs-f3", "docs-c2", "docs-c1"]
        );
        // The published run is kept even when older (a publish refused since).
        assert_eq!(
            collections_to_prune(&record, 1, Some("c1")),
            ["docs-f3", "docs-c2"]
        );
        // Enough kept: nothing (a failed run's collection still goes).
        assert_eq!(collections_to_prune(&record, 10, None), ["docs-f3"]);
        // Deleted ones are not deleted again: after the deletes, nothing more.
        let mut after = record.clone();
        for c in &mut after {
            c.deleted = ["docs-f3", "docs-c1"].contains(&c.name.as_str());
        }
        assert!(collections_to_prune(&after, 2, Some("c4")).is_empty());
        // Resumed after a crash between two deletes: the stored record is unchanged, so the
        // same list is decided (the one already gone answers 404: done).
        assert_eq!(
            collections_to_prune(&record, 2, Some("c4")),
            collections_to_prune(&record, 2, Some("c4"))
        );
        // A failed run refused into a kept collection's name never deletes that collection.
        let mut refused = finished_run("f5", Failed, 5);
        refused.spec.target_collection_name = Some("docs-c4".into());
        let record = record_collections(&record, &[refused]);
        assert_eq!(
            collections_to_prune(&record, 2, Some("c4")),
            ["docs-f3", "docs-c1"]
        );
    }
}
