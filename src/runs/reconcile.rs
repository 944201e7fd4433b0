//! The SyncRun flows: apply (wait for the source, create the invocation once, follow it to its
//! end) and cleanup (cancel a pending invocation).
//!
//! Crash safety is the SyncSource rule again: every create call is preceded by a successful
//! write, guarded by the object's resourceVersion, of the finalizer and a create-pending mark.
//! A mark with no recorded `status.invocationId` means "an invocation may exist that status does
//! not name", and is resolved by listing the source's invocations before anything else is
//! created.

use super::decide::{self, Failure, reason};
use crate::chroma::wire::CreateJobPayload;
use crate::chroma::{Cancelled, ChromaError, Token};
use crate::controller::decide::Retry;
use crate::controller::events::Kind;
use crate::controller::reconcile::bounded;
use crate::controller::{Context, Error};
use crate::controller::{intent, writes};
use crate::crd::run::{RUN_FINALIZER, RunPhase, SyncRun, SyncRunStatus};
use crate::crd::{CREATE_PENDING_ANNOTATION, SyncSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// An invocation created up to this long before its run's mark still counts as the run's own
/// (clock skew between the operator and the service).
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

/// How soon a run that waits for its SyncSource looks again.
const SOURCE_WAIT: Duration = Duration::from_secs(10);

/// How a reconcile of a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Nothing to do until the object changes (a final phase, or gone).
    Done,
    /// The run is going: look at it again then.
    LookAgainIn(Duration),
    /// Something failed or is missing: try again as `Retry` says.
    Retry(Retry),
}

pub async fn apply(run: &SyncRun, ctx: &Context) -> Result<Next, Error> {
    let previous = run.status.clone().unwrap_or_default();
    // At rest: a finished run is not looked at again, unless someone asks (reconcile-now) or
    // it comes back from a pause (its status still says paused).
    let handled = previous.last_handled_reconcile_at.as_deref();
    let asked = intent::requested(&run.metadata, handled).is_some();
    let was_paused = previous
        .conditions
        .iter()
        .any(|c| c.type_ == crate::controller::status::READY && c.reason == reason::PAUSED);
    if previous.phase.is_some_and(RunPhase::is_final) && !asked && !was_paused {
        return Ok(Next::Done);
    }
    let name = &run.spec.source_ref.name;
    let Some(source) = source_of(ctx, run).await? else {
        let why = format!("SyncSource {name} does not exist");
        return waiting(ctx, run, &previous, reason::WAITING_FOR_SOURCE, why).await;
    };
    if let Some(id) = &previous.invocation_id {
        return follow(ctx, run, &previous, &source, id).await;
    }
    let Some(source_id) = ready_source_id(&source) else {
        let why = format!("SyncSource {name} is not Ready yet");
        return waiting(ctx, run, &previous, reason::WAITING_FOR_SOURCE, why).await;
    };
    let payload = match decide::payload(&run.spec, &source.spec) {
        Ok(payload) => payload,
        Err(why) => {
            // The spec cannot change, but the source can: look again now and then.
            write_problem(ctx, run, &previous, reason::INVALID_SPEC, &why, true, None).await?;
            return Ok(Next::Retry(Retry::Slow));
        }
    };
    let token = match ctx.token_for(&source).await {
        Ok(token) => token,
        Err(why) => {
            let reason = reason::MISSING_CREDENTIALS;
            write_problem(ctx, run, &previous, reason, &why, true, None).await?;
            return Ok(Next::Retry(Retry::Slow));
        }
    };
    let kind = decide::kind_of(&source.spec);

    // An earlier attempt may have created the invocation without recording it.
    if let Some(marked_at) = pending_mark(run) {
        let found = find_unrecorded(ctx, run, &token, &source, &source_id, &payload, marked_at);
        match found.await {
            Ok(Some(id)) => {
                info!(invocation_id = %id, "found the invocation of an unrecorded create; adopting it");
                record(ctx, run, &source_id, &id).await?;
                let note = format!(
                    "Recovered invocation {id}, created by an attempt whose answer was lost"
                );
                ctx.events.publish(run, Kind::Normal, "Adopted", note);
                return Ok(Next::LookAgainIn(decide::POLL_FIRST));
            }
            Ok(None) => {}
            Err(e) => {
                let failure = decide::classify("looking for an unrecorded invocation", &e);
                return fail(ctx, run, &previous, failure, false, kind).await;
            }
        }
    }

    if ctx.is_stopping() {
        return Err(Error::ShuttingDown);
    }
    // The durable mark, guarded by resourceVersion: a stale cache fails here with a conflict
    // instead of starting a second invocation.
    let run = &guarded_metadata_write(ctx, run, true, Some(jiff::Timestamp::now())).await?;
    match ctx
        .chroma
        .create_invocation(&token, &source_id, &payload)
        .await
    {
        Ok(id) => {
            info!(invocation_id = %id, "created Chroma Sync invocation");
            record(ctx, run, &source_id, &id).await?;
            reached(ctx, run, RunPhase::Pending, kind);
            Ok(Next::LookAgainIn(decide::next_poll(
                Duration::ZERO,
                jitter(),
            )))
        }
        Err(e) => {
            let failure = decide::classify("creating the invocation", &e);
            fail(ctx, run, &previous, failure, true, kind).await
        }
    }
}

/// A paused run: no call and no write, except the status that says so (once). A paused
/// deletion waits (the finalizer stays) until the run resumes.
pub async fn paused(run: &SyncRun, ctx: &Context) -> Result<Next, Error> {
    let previous = run.status.clone().unwrap_or_default();
    let said = previous
        .conditions
        .iter()
        .any(|c| c.reason == reason::PAUSED);
    if !said {
        let message = format!(
            "paused ({}): no call to Chroma Sync and no write until the annotation is removed; a deletion waits until then",
            crate::crd::PAUSED_ANNOTATION
        );
        let problem = Some((reason::PAUSED, message.as_str(), false));
        write_status(ctx, run, &previous, previous.clone(), problem).await?;
    }
    Ok(Next::Done)
}

/// One look at a recorded invocation; a status write only when its phase changed.
async fn follow(
    ctx: &Context,
    run: &SyncRun,
    previous: &SyncRunStatus,
    source: &SyncSource,
    id: &str,
) -> Result<Next, Error> {
    let kind = decide::kind_of(&source.spec);
    let token = match ctx.token_for(source).await {
        Ok(token) => token,
        Err(why) => {
            let reason = reason::MISSING_CREDENTIALS;
            write_problem(ctx, run, previous, reason, &why, true, None).await?;
            return Ok(Next::Retry(Retry::Slow));
        }
    };
    let job = match ctx.chroma.get_invocation(&token, id).await {
        Ok(job) => job,
        Err(ChromaError::Api { status: 404, .. }) => {
            let gone = format!("invocation {id} no longer exists in Chroma Sync");
            let mut next = previous.clone();
            next.phase = Some(RunPhase::Failed);
            next.completion_time = Some(Time(jiff::Timestamp::now()));
            next.message = Some(gone.clone());
            if write_status(ctx, run, previous, next, None).await? {
                reached(ctx, run, RunPhase::Failed, kind);
            }
            ctx.events.publish(run, Kind::Warning, reason::FAILED, gone);
            return Ok(Next::Done);
        }
        Err(e) => {
            let failure = decide::classify("looking at the invocation", &e);
            return fail(ctx, run, previous, failure, false, kind).await;
        }
    };
    let now = jiff::Timestamp::now();
    let Some(phase) = decide::phase_of(&job.status) else {
        warn!(status = ?job.status, "an invocation status this operator does not know; looking again later");
        return Ok(Next::LookAgainIn(decide::POLL_MAX));
    };
    let mut next = previous.clone();
    next.phase = Some(phase);
    next.last_error = None;
    use crate::chroma::wire::JobStatus;
    match &job.status {
        JobStatus::Complete {
            finished_at,
            duration_ms,
        } => {
            next.completion_time = Some(Time(finished_at.unwrap_or(now)));
            next.duration_ms = *duration_ms;
        }
        JobStatus::Failed { error } => {
            next.completion_time = Some(Time(now));
            next.message = Some(error.clone());
        }
        JobStatus::Cancelled => next.completion_time = Some(Time(now)),
        _ => {}
    }
    let changed = write_status(ctx, run, previous, next, None).await?;
    if changed && previous.phase != Some(phase) {
        reached(ctx, run, phase, kind);
    }
    if changed && phase == RunPhase::Failed {
        let note = format!("invocation {id} failed: {}", failure_text(&job.status));
        ctx.events.publish(run, Kind::Warning, reason::FAILED, note);
    }
    if phase.is_final() {
        return Ok(Next::Done);
    }
    let started = previous.start_time.as_ref().map_or(now, |t| t.0);
    let elapsed = Duration::try_from(now.duration_since(started)).unwrap_or_default();
    Ok(Next::LookAgainIn(decide::next_poll(elapsed, jitter())))
}

fn failure_text(status: &crate::chroma::wire::JobStatus) -> String {
    match status {
        crate::chroma::wire::JobStatus::Failed { error } => error.clone(),
        other => format!("{other:?}"),
    }
}

pub async fn cleanup(run: &SyncRun, ctx: &Context) -> Result<Next, Error> {
    if !run.finalizers().iter().any(|f| f == RUN_FINALIZER) {
        return Ok(Next::Done);
    }
    let status = run.status.clone().unwrap_or_default();
    let unfinished = !status.phase.is_some_and(RunPhase::is_final);
    let started = status.invocation_id.is_some() || pending_mark(run).is_some();
    if unfinished && started {
        match cancel(ctx, run, &status).await {
            Ok(()) => {}
            Err(CancelError::Transient(failure)) => {
                return fail(ctx, run, &status, failure, false, "unknown").await;
            }
            Err(CancelError::Impossible(why)) => {
                warn!(%why, "cannot cancel the run's invocation; letting the object go");
                ctx.events.publish(run, Kind::Warning, "NotCancelled", why);
            }
        }
    }
    release_finalizer(ctx, run).await?;
    Ok(Next::Done)
}

enum CancelError {
    /// Worth another try (the service is away or busy).
    Transient(Failure),
    /// Never possible: no source, no credentials.
    Impossible(String),
}

/// Cancels the run's invocation if it is still pending; a processing one cannot be cancelled by
/// the API, which an Event says.
async fn cancel(ctx: &Context, run: &SyncRun, status: &SyncRunStatus) -> Result<(), CancelError> {
    let name = &run.spec.source_ref.name;
    let source = match source_of(ctx, run).await {
        Ok(Some(source)) => source,
        Ok(None) => {
            return Err(CancelError::Impossible(format!(
                "SyncSource {name} is gone, so its credentials are: the invocation, if pending, is not cancelled"
            )));
        }
        Err(e) => {
            return Err(CancelError::Impossible(format!(
                "cannot read SyncSource {name} ({e}): the invocation, if pending, is not cancelled"
            )));
        }
    };
    let token = ctx
        .token_for(&source)
        .await
        .map_err(CancelError::Impossible)?;
    let id = match (
        &status.invocation_id,
        pending_mark(run),
        ready_source_id(&source),
    ) {
        (Some(id), _, _) => id.clone(),
        (None, Some(marked_at), Some(source_id)) => {
            let Ok(payload) = decide::payload(&run.spec, &source.spec) else {
                return Ok(()); // an invalid run was never sent
            };
            let found = find_unrecorded(ctx, run, &token, &source, &source_id, &payload, marked_at);
            match found.await {
                Ok(Some(id)) => id,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let failure = decide::classify("looking for an unrecorded invocation", &e);
                    return Err(CancelError::Transient(failure));
                }
            }
        }
        _ => return Ok(()),
    };
    match ctx.chroma.cancel_invocation(&token, &id).await {
        Ok(Cancelled::Now) => {
            info!(invocation_id = %id, "cancelled the pending invocation");
            Ok(())
        }
        Ok(Cancelled::AlreadyGone) => Ok(()),
        Ok(Cancelled::NotPending) => {
            let note = format!(
                "invocation {id} has already started; Chroma Sync cannot cancel a started run, so it runs to its end"
            );
            ctx.events.publish(run, Kind::Normal, "NotCancelled", note);
            Ok(())
        }
        Err(e) => Err(CancelError::Transient(decide::classify(
            "cancelling the invocation",
            &e,
        ))),
    }
}

/// Lists the source's invocations, newest first, for the run's own (see
/// [`decide::own_invocation`]); invocations other SyncRuns record are never taken.
async fn find_unrecorded(
    ctx: &Context,
    run: &SyncRun,
    token: &Token,
    source: &SyncSource,
    source_id: &str,
    payload: &CreateJobPayload,
    marked_at: jiff::Timestamp,
) -> Result<Option<String>, ChromaError> {
    // An S3 run without a target writes the source's own collection.
    let default_collection = source.spec.s3.as_ref().map(|s| s.collection_name.as_str());
    let lookup = decide::InvocationLookup {
        since: marked_at - CLOCK_SKEW_ALLOWANCE,
        seen: Vec::new(),
    };
    // Shared with the other runs of the source that look meanwhile (after a restart, all).
    let listing = (token.clone(), source_id.to_owned());
    let page = {
        let (chroma, (token, id)) = (ctx.chroma.clone(), listing.clone());
        move |n| {
            let (chroma, token, id) = (chroma.clone(), token.clone(), id.clone());
            async move { chroma.list_invocations_page(&token, &id, n).await }
        }
    };
    let listed = match ctx.invocation_lookups.look(listing, lookup, page).await {
        Ok(listed) => listed,
        Err(ChromaError::Api { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let claimed = claimed_ids(ctx, run, source_id).await;
    let own = decide::own_invocation(
        &listed,
        payload,
        default_collection,
        marked_at,
        CLOCK_SKEW_ALLOWANCE,
        &|id| claimed.contains(id),
    );
    Ok(own.map(|job| job.id.clone()))
}

/// Invocation ids that SyncRuns of `run`'s namespace record on `source_id`. (Read only when a
/// lookup is needed: after a lost answer or a kill.)
async fn claimed_ids(
    ctx: &Context,
    run: &SyncRun,
    source_id: &str,
) -> std::collections::HashSet<String> {
    let listed = bounded(api(ctx, run).list(&Default::default())).await;
    listed
        .map(|list| {
            list.items
                .into_iter()
                .filter_map(|r| r.status)
                .filter(|s| s.source_id.as_deref() == Some(source_id))
                .filter_map(|s| s.invocation_id)
                .collect()
        })
        .unwrap_or_default()
}

/// Counts a run reaching `phase`, and for a final one the time since the object was created.
fn reached(ctx: &Context, run: &SyncRun, phase: RunPhase, kind: &'static str) {
    let since_created = phase.is_final().then(|| {
        let created = run.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let elapsed = created.map(|c| jiff::Timestamp::now().duration_since(c));
        elapsed
            .and_then(|e| Duration::try_from(e).ok())
            .unwrap_or_default()
    });
    ctx.metrics.run_phase(phase.as_str(), kind, since_created);
}

/// Records a failed call. When a create certainly created nothing, the mark goes first.
async fn fail(
    ctx: &Context,
    run: &SyncRun,
    previous: &SyncRunStatus,
    failure: Failure,
    was_create: bool,
    kind: &'static str,
) -> Result<Next, Error> {
    warn!(reason = failure.reason, "{}", failure.message);
    let mut run = run.clone();
    if was_create && failure.nothing_created && pending_mark(&run).is_some() {
        run = clear_mark(ctx, &run).await?;
    }
    let (reason, message) = (failure.reason, failure.message.as_str());
    if failure.refused {
        // The service said no for good: the run has failed.
        let mut next = previous.clone();
        next.phase = Some(RunPhase::Failed);
        next.completion_time = Some(Time(jiff::Timestamp::now()));
        next.message = Some(failure.message.clone());
        next.last_error = Some(failure.error.clone());
        let problem = (reason, message, true);
        if write_status(ctx, &run, previous, next, Some(problem)).await? {
            reached(ctx, &run, RunPhase::Failed, kind);
            ctx.events
                .publish(&run, Kind::Warning, reason, failure.message.clone());
        }
        return Ok(Next::Done);
    }
    let error = Some(failure.error.clone());
    write_problem(ctx, &run, previous, reason, message, failure.stalled, error).await?;
    Ok(Next::Retry(failure.retry))
}

async fn waiting(
    ctx: &Context,
    run: &SyncRun,
    previous: &SyncRunStatus,
    reason: &'static str,
    why: String,
) -> Result<Next, Error> {
    write_problem(ctx, run, previous, reason, &why, false, None).await?;
    Ok(Next::LookAgainIn(SOURCE_WAIT))
}

/// Writes the run's phase as it is, with a problem shown in its conditions.
async fn write_problem(
    ctx: &Context,
    run: &SyncRun,
    previous: &SyncRunStatus,
    reason: &str,
    message: &str,
    stalled: bool,
    error: Option<crate::crd::LastError>,
) -> Result<bool, Error> {
    let mut next = previous.clone();
    next.last_error = error;
    write_status(ctx, run, previous, next, Some((reason, message, stalled))).await
}

/// Records a new (or recovered) invocation: Pending from now. A conflict is written again at
/// once on a fresh read while no invocation is recorded ([`writes::record`]): deciding afresh
/// would look the invocation up again, too wide a window while another client keeps writing
/// the run.
async fn record(ctx: &Context, run: &SyncRun, source_id: &str, id: &str) -> Result<bool, Error> {
    let unrecorded = |fresh: &SyncRun| {
        writes::same_create(run, fresh)
            && fresh
                .status
                .as_ref()
                .is_none_or(|s| s.invocation_id.is_none())
    };
    writes::record(&api(ctx, run), run, unrecorded, |current| async move {
        let previous = current.status.clone().unwrap_or_default();
        let next = SyncRunStatus {
            invocation_id: Some(id.to_owned()),
            source_id: Some(source_id.to_owned()),
            phase: Some(RunPhase::Pending),
            start_time: Some(Time(jiff::Timestamp::now())),
            last_error: None,
            ..previous.clone()
        };
        write_status(ctx, &current, &previous, next, None).await
    })
    .await
}

/// Writes `next` (with its conditions derived here) unless the stored status already equals
/// it; true when it wrote.
async fn write_status(
    ctx: &Context,
    run: &SyncRun,
    previous: &SyncRunStatus,
    mut next: SyncRunStatus,
    problem: Option<(&str, &str, bool)>,
) -> Result<bool, Error> {
    let generation = run.metadata.generation.unwrap_or_default();
    next.observed_generation = Some(generation);
    let paused = problem.is_some_and(|(r, _, _)| r == reason::PAUSED);
    if !paused {
        let before = previous.last_handled_reconcile_at.as_ref();
        next.last_handled_reconcile_at = intent::handled(&run.metadata, before);
    }
    next.conditions = decide::conditions(
        &previous.conditions,
        generation,
        next.phase,
        next.message.as_deref(),
        problem,
        jiff::Timestamp::now(),
    );
    if &next == previous {
        return Ok(false);
    }
    // Guarded: a status decided on a stale copy must not erase an invocationId it never saw.
    let patch = json!({ "metadata": { "resourceVersion": run.resource_version() }, "status": {
        "observedGeneration": next.observed_generation,
        "invocationId": next.invocation_id,
        "sourceId": next.source_id,
        "phase": next.phase,
        "startTime": next.start_time,
        "completionTime": next.completion_time,
        "durationMs": next.duration_ms,
        "message": next.message,
        "conditions": next.conditions,
        "lastError": next.last_error.as_ref().map(|e| json!({
            "httpStatus": e.http_status, "error": e.error, "message": e.message,
        })),
        "lastHandledReconcileAt": next.last_handled_reconcile_at,
    }});
    bounded(api(ctx, run).patch_status(&run.name_any(), &writes::params(), &Patch::Merge(patch)))
        .await?;
    Ok(true)
}

async fn guarded_metadata_write(
    ctx: &Context,
    run: &SyncRun,
    keep: bool,
    mark: Option<jiff::Timestamp>,
) -> Result<SyncRun, Error> {
    writes::guarded_metadata_write(&api(ctx, run), run, RUN_FINALIZER, keep, mark).await
}

async fn release_finalizer(ctx: &Context, run: &SyncRun) -> Result<(), Error> {
    match guarded_metadata_write(ctx, run, false, None).await {
        Err(e) if e.is_not_found() => Ok(()),
        result => result.map(|_| ()),
    }
}

async fn clear_mark(ctx: &Context, run: &SyncRun) -> Result<SyncRun, Error> {
    writes::clear_mark(&api(ctx, run), run).await
}

/// The run's SyncSource: as cached once it is Ready there (a run looks at its source at every
/// poll; a read each cost the apiserver about four GETs per run), else as stored now, so a run
/// made with its source does not wait for the cache to hear of it.
async fn source_of(ctx: &Context, run: &SyncRun) -> Result<Option<SyncSource>, Error> {
    let ns = run.namespace().unwrap_or_default();
    let name = &run.spec.source_ref.name;
    if let Some(cached) = ctx.cached_source(&ns, name)
        && ready_source_id(&cached).is_some()
    {
        return Ok(Some(SyncSource::clone(&cached)));
    }
    let sources: Api<SyncSource> = Api::namespaced(ctx.client.clone(), &ns);
    bounded(sources.get_opt(name)).await
}

/// The source's id, once the SyncSource is Ready.
fn ready_source_id(source: &SyncSource) -> Option<String> {
    let status = source.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == crate::controller::status::READY && c.status == "True");
    ready.then(|| status.source_id.clone()).flatten()
}

fn pending_mark(run: &SyncRun) -> Option<jiff::Timestamp> {
    run.annotations()
        .get(CREATE_PENDING_ANNOTATION)
        .and_then(|v| v.parse().ok())
}

fn api(ctx: &Context, run: &SyncRun) -> Api<SyncRun> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

fn jitter() -> f64 {
    rand::random_range(0.9..1.1)
}
