//! The SyncRun flows: apply (wait for the source, create the invocation once, follow it to its
//! end) and cleanup (cancel a pending invocation), with all their IO.
//!
//! The create follows the kernel's crash-safe protocol ([`crate::kernel::create`]): a guarded
//! mark before the call; a mark with no recorded `status.invocationId` resolved by listing the
//! source's invocations (an S3 run: by the newest invocation of its object key) before anything
//! else is created.

use super::decide::{self, Problem, reason_of, refused};
use super::{Next, Reason, Runs};
use crate::chroma::wire::{CreateJobPayload, Job, JobStatus};
use crate::chroma::{Cancelled, ChromaError};
use crate::crd::SyncSource;
use crate::crd::run::{RunPhase, SyncRun, SyncRunStatus};
use crate::kernel::conditions;
use crate::kernel::connections::{Endpoint, Refusal};
use crate::kernel::create::{self, Created, Creation, Recovered, pending_mark};
use crate::kernel::events::Kind;
use crate::kernel::failure::{self, Failure, Retry};
use crate::kernel::kube_io::{api_of, bounded, params, status_patch};
use crate::kernel::{Error, intent};
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use std::time::Duration;
use tracing::{info, warn};

/// The listing a lookup reads: an endpoint (URL and token) and a source id.
pub(super) type Listing = (Endpoint, String);

/// How soon a run that waits for its SyncSource looks again.
const SOURCE_WAIT: Duration = Duration::from_secs(10);

/// Brings the run about. The steps, in order: a finished run is at rest (unless asked to look,
/// or resumed); a run waits for its SyncSource; a recorded invocation is followed; otherwise,
/// once the source is Ready, the invocation is started (its payload and token checked first).
pub async fn apply(run: &SyncRun, ctx: &Runs) -> Result<Next, Error> {
    let previous = run.status.clone().unwrap_or_default();
    if previous.phase.is_some_and(RunPhase::is_final) {
        return finished(ctx, run, &previous).await;
    }
    let name = &run.spec.source_ref.name;
    let Some(source) = source_of(ctx, run).await? else {
        let why = format!("SyncSource {name} does not exist");
        return waiting(ctx, run, &previous, Reason::WaitingForSource, why).await;
    };
    if let Some(id) = &previous.invocation_id {
        return follow(ctx, run, &previous, &source, id).await;
    }
    let Some(source_id) = ready_source_id(&source) else {
        let why = format!("SyncSource {name} is not Ready yet");
        return waiting(ctx, run, &previous, Reason::WaitingForSource, why).await;
    };
    start(ctx, run, &previous, &source, &source_id).await
}

/// A finished run is not looked at again, unless someone asks (reconcile-now) or it comes back
/// from a pause (its status still says paused): then one look at its invocation. A run refused
/// at create has none: a run is one attempt, so nothing is created again, and the status only
/// says the request (or the resume) was seen.
async fn finished(ctx: &Runs, run: &SyncRun, previous: &SyncRunStatus) -> Result<Next, Error> {
    let handled = previous.last_handled_reconcile_at.as_deref();
    let asked = intent::requested(&run.metadata, handled).is_some();
    let was_paused =
        conditions::ready_reason(&previous.conditions) == Some(Reason::Paused.as_str());
    if !asked && !was_paused {
        return Ok(Next::Settled);
    }
    let Some(id) = previous.invocation_id.as_deref() else {
        write_status(ctx, run, previous, previous.clone(), None).await?;
        return Ok(Next::Settled);
    };
    let name = &run.spec.source_ref.name;
    match source_of(ctx, run).await? {
        Some(source) => follow(ctx, run, previous, &source, id).await,
        None => {
            let why = format!("SyncSource {name} does not exist");
            waiting(ctx, run, previous, Reason::WaitingForSource, why).await
        }
    }
}

/// Starts the run's one invocation on `source_id`: an unrecorded one an earlier attempt made is
/// recovered, or the kernel marks, creates and records a new one.
async fn start(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    source: &SyncSource,
    source_id: &str,
) -> Result<Next, Error> {
    let payload = match decide::payload(&run.spec, &source.spec) {
        Ok(payload) => payload,
        Err(why) => {
            // The spec cannot change, but the source can: look again now and then.
            let reason = Reason::InvalidSpec;
            return stall(ctx, run, previous, reason, &why, Retry::Slow).await;
        }
    };
    let endpoint = match reach(ctx, run, previous, source).await {
        Ok(endpoint) => endpoint,
        Err(next) => return next,
    };
    let kind = decide::kind_of(&source.spec);
    let creation = NewInvocation {
        ctx,
        endpoint: &endpoint,
        source,
        source_id,
        payload: &payload,
    };
    match create::recover(&ctx.client, &creation, run).await? {
        Recovered::Nothing => {}
        Recovered::Found { obj, id } => {
            let note =
                format!("Recovered invocation {id}, created by an attempt whose answer was lost");
            ctx.events
                .publish(&obj, Kind::Normal, Reason::Adopted, note);
            return Ok(Next::LookAgainIn(decide::POLL_FIRST));
        }
        Recovered::Unknown(failure) => return fail(ctx, run, previous, failure, kind).await,
    }
    match create::mark_and_create(ctx, &creation, run).await? {
        Created::Made { stored, .. } => {
            let run = stored?;
            reached(ctx, &run, RunPhase::Pending, kind);
            let first = decide::next_poll(Duration::ZERO, jitter());
            Ok(Next::LookAgainIn(first))
        }
        Created::Failed { obj, failure, .. } => fail(ctx, &obj, previous, failure, kind).await,
    }
}

/// One create of an invocation, as the kernel's protocol makes it.
struct NewInvocation<'a> {
    ctx: &'a Runs,
    endpoint: &'a Endpoint,
    source: &'a SyncSource,
    source_id: &'a str,
    payload: &'a CreateJobPayload,
}

impl Creation for NewInvocation<'_> {
    type Object = SyncRun;

    async fn create(&self) -> Result<String, ChromaError> {
        let Endpoint { chroma, token, .. } = self.endpoint;
        chroma
            .create_invocation(token, self.source_id, self.payload)
            .await
    }

    async fn find_unrecorded(
        &self,
        run: &SyncRun,
        since: jiff::Timestamp,
    ) -> Result<Option<String>, ChromaError> {
        find_unrecorded(self, run, since).await
    }

    /// Pending from now.
    async fn record(&self, run: SyncRun, id: &str) -> Result<SyncRun, Error> {
        let previous = run.status.clone().unwrap_or_default();
        let next = SyncRunStatus {
            invocation_id: Some(id.to_owned()),
            source_id: Some(self.source_id.to_owned()),
            phase: Some(RunPhase::Pending),
            start_time: Some(Time(jiff::Timestamp::now())),
            last_error: None,
            ..previous.clone()
        };
        write_status(self.ctx, &run, &previous, next, None)
            .await
            .map(|written| written.unwrap_or(run))
    }
}

/// A paused run: no call and no write, except the status that says so (once). A paused
/// deletion waits (the finalizer stays) until the run resumes.
pub async fn paused(run: &SyncRun, ctx: &Runs) -> Result<Next, Error> {
    let previous = run.status.clone().unwrap_or_default();
    let said = previous
        .conditions
        .iter()
        .any(|c| c.reason == Reason::Paused.as_str());
    if !said {
        let message = format!(
            "paused ({}): no call to Chroma Sync and no write until the annotation is removed; a deletion waits until then",
            crate::crd::PAUSED_ANNOTATION
        );
        let problem = Problem {
            reason: Reason::Paused,
            message: &message,
            needs_a_person: false,
        };
        write_status(ctx, run, &previous, previous.clone(), Some(problem)).await?;
    }
    Ok(Next::Settled)
}

/// One look at a recorded invocation; a status write only when its phase changed.
async fn follow(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    source: &SyncSource,
    id: &str,
) -> Result<Next, Error> {
    let kind = decide::kind_of(&source.spec);
    let endpoint = match reach(ctx, run, previous, source).await {
        Ok(endpoint) => endpoint,
        Err(next) => return next,
    };
    let job = match look_at(ctx, run, previous, &endpoint, id).await {
        Ok(job) => job,
        Err(ChromaError::Api { status: 404, .. }) => {
            let gone = format!("invocation {id} no longer exists in Chroma Sync");
            let mut next = previous.clone();
            next.phase = Some(RunPhase::Failed);
            next.completion_time = Some(Time(jiff::Timestamp::now()));
            next.message = Some(gone.clone());
            let stored = write_status(ctx, run, previous, next, None).await?;
            // A failed run looked at again on request is no new failure.
            if let Some(stored) = newly_failed(previous, stored) {
                reached(ctx, run, RunPhase::Failed, kind);
                announce_failure(ctx, &stored, Reason::RunFailed, gone);
            }
            return Ok(Next::Settled);
        }
        Err(e) => {
            let failure = failure::classify("looking at the invocation", &e);
            return fail(ctx, run, previous, failure, kind).await;
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
    let stored = write_status(ctx, run, previous, next, None).await?;
    // Counted and announced once, when the run reaches the phase; a later write (a look on
    // request, a resume) is no new failure.
    let newly = stored.filter(|_| previous.phase != Some(phase));
    if newly.is_some() {
        reached(ctx, run, phase, kind);
    }
    if let Some(stored) = newly
        && phase == RunPhase::Failed
    {
        let note = format!("invocation {id} failed: {}", failure_text(&job.status));
        announce_failure(ctx, &stored, Reason::RunFailed, note);
    }
    if phase.is_final() {
        return Ok(Next::Settled);
    }
    let started = previous.start_time.as_ref().map_or(now, |t| t.0);
    let elapsed = Duration::try_from(now.duration_since(started)).unwrap_or_default();
    Ok(Next::LookAgainIn(decide::next_poll(elapsed, jitter())))
}

/// The run's invocation as the service reports it now: from its source's listing when other
/// runs of the source look at the same time (see [`decide::InvocationRefresh`]), else by a GET
/// of its own. A listing that cannot serve (the source gone from the service, a page that does
/// not decode) leaves the answer to the GET, whose errors are the run's as before; another
/// error of the listing is the run's own.
async fn look_at(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    endpoint: &Endpoint,
    id: &str,
) -> Result<Job, ChromaError> {
    if let Some(source_id) = &previous.source_id {
        let start = previous.start_time.as_ref().map(|t| t.0);
        let refresh = decide::InvocationRefresh {
            id: id.to_owned(),
            since: start
                .or_else(|| pending_mark(run))
                .map(create::lookup_since),
        };
        let listing = (endpoint.clone(), source_id.clone());
        match ctx
            .refreshes
            .look(listing.clone(), refresh, pager(listing))
            .await
        {
            Ok(Some(job)) => return Ok(job),
            Ok(None) => {}
            Err(ChromaError::Api { status: 404, .. } | ChromaError::Decode { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    endpoint.chroma.get_invocation(&endpoint.token, id).await
}

/// Lists page `n` of the source's invocations, newest first.
fn pager(listing: Listing) -> impl FnMut(usize) -> BoxFuture<'static, Listed> + Send + 'static {
    move |n| {
        let (endpoint, id) = listing.clone();
        Box::pin(async move {
            let Endpoint { chroma, token, .. } = &endpoint;
            chroma.list_invocations_page(token, &id, n).await
        })
    }
}

type Listed = Result<Vec<Job>, ChromaError>;

fn failure_text(status: &JobStatus) -> String {
    match status {
        JobStatus::Failed { error } => error.clone(),
        other => format!("{other:?}"),
    }
}

pub async fn cleanup(run: &SyncRun, ctx: &Runs) -> Result<Next, Error> {
    if !create::has_finalizer(run) {
        return Ok(Next::Settled);
    }
    let status = run.status.clone().unwrap_or_default();
    let unfinished = !status.phase.is_some_and(RunPhase::is_final);
    let started = status.invocation_id.is_some() || pending_mark(run).is_some();
    if unfinished && started {
        // A source that cannot be read now is read again later (the error): only a source
        // that is gone makes a cancel impossible.
        let source = source_of(ctx, run).await?;
        match cancel(ctx, run, &status, source).await {
            Ok(()) => {}
            Err(CancelError::Transient(failure)) => {
                return fail(ctx, run, &status, failure, "unknown").await;
            }
            Err(CancelError::Impossible(why)) => {
                warn!(%why, "cannot cancel the run's invocation; letting the object go");
                ctx.events
                    .publish(run, Kind::Warning, Reason::NotCancelled, why);
            }
        }
    }
    create::release_finalizer(&ctx.client, run).await?;
    Ok(Next::Settled)
}

enum CancelError {
    /// Worth another try (the service is away or busy).
    Transient(Failure),
    /// Never possible: no source, no credentials.
    Impossible(String),
}

/// Cancels the run's invocation if it is still pending; a processing one cannot be cancelled by
/// the API, which an Event says.
async fn cancel(
    ctx: &Runs,
    run: &SyncRun,
    status: &SyncRunStatus,
    source: Option<SyncSource>,
) -> Result<(), CancelError> {
    let name = &run.spec.source_ref.name;
    let Some(source) = source else {
        return Err(CancelError::Impossible(format!(
            "SyncSource {name} is gone, so its credentials are: the invocation, if pending, is not cancelled"
        )));
    };
    let endpoint = match ctx.reach(&source).await {
        Ok(endpoint) => endpoint,
        Err(Ok(blocked)) => return Err(CancelError::Impossible(blocked.message)),
        Err(Err(why)) => return Err(CancelError::Impossible(why)),
    };
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
            let creation = NewInvocation {
                ctx,
                endpoint: &endpoint,
                source: &source,
                source_id: &source_id,
                payload: &payload,
            };
            let since = create::lookup_since(marked_at);
            match find_unrecorded(&creation, run, since).await {
                Ok(Some(id)) => id,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let failure = failure::classify("looking for an unrecorded invocation", &e);
                    return Err(CancelError::Transient(failure));
                }
            }
        }
        _ => return Ok(()),
    };
    match endpoint
        .chroma
        .cancel_invocation(&endpoint.token, &id)
        .await
    {
        Ok(Cancelled::Now) => {
            info!(invocation_id = %id, "cancelled the pending invocation");
            Ok(())
        }
        Ok(Cancelled::AlreadyGone) => Ok(()),
        Ok(Cancelled::NotPending) => {
            let note = format!(
                "invocation {id} has already started; Chroma Sync cannot cancel a started run, so it runs to its end"
            );
            ctx.events
                .publish(run, Kind::Normal, Reason::NotCancelled, note);
            Ok(())
        }
        Err(e) => Err(CancelError::Transient(failure::classify(
            "cancelling the invocation",
            &e,
        ))),
    }
}

/// Lists the source's invocations, newest first, for the run's own made no earlier than
/// `since` (see [`decide::own_invocation`]); invocations other SyncRuns record are never taken.
/// An S3 run asks for the newest invocation of its object key first (`latest-by-keys`, one
/// call), and lists only when that newest is someone else's made since the mark
/// ([`decide::newest_of_key`]).
async fn find_unrecorded(
    creation: &NewInvocation<'_>,
    run: &SyncRun,
    since: jiff::Timestamp,
) -> Result<Option<String>, ChromaError> {
    let NewInvocation {
        ctx,
        endpoint,
        source,
        source_id,
        payload,
    } = *creation;
    // An S3 run without a target writes the source's own collection.
    let default_collection = source.spec.s3.as_ref().map(|s| s.collection_name.as_str());
    // Invocation ids other runs record, read at most once.
    let mut claims = None;
    if let Some(key) = &payload.object_key {
        // An S3 run: the newest invocation of its key, one call whatever the source's history.
        let Endpoint { chroma, token, .. } = endpoint;
        let newest = match chroma
            .latest_by_keys(token, source_id, std::slice::from_ref(key))
            .await
        {
            Ok(mut by_key) => by_key.remove(key),
            Err(ChromaError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The claims are read only when something was made since the mark.
        if newest
            .as_ref()
            .is_none_or(|job| !decide::made_since(job, since))
        {
            return Ok(None);
        }
        let claimed = claims.insert(claimed_ids(ctx, run, source_id).await);
        let is_claimed = |id: &str| claimed.contains(id);
        match decide::newest_of_key(
            newest.as_ref(),
            payload,
            default_collection,
            since,
            &is_claimed,
        ) {
            decide::KeyAnswer::Nothing => return Ok(None),
            decide::KeyAnswer::Own(job) => return Ok(Some(job.id.clone())),
            decide::KeyAnswer::List => {} // the listing below decides
        }
    }
    let lookup = decide::InvocationLookup {
        since,
        seen: Vec::new(),
    };
    // Shared with the other runs of the source that look meanwhile (after a restart, all).
    let listing = (endpoint.clone(), source_id.to_owned());
    let listed = match ctx
        .lookups
        .look(listing.clone(), lookup, pager(listing))
        .await
    {
        Ok(listed) if listed.is_empty() => return Ok(None), // no need to read the claims
        Ok(listed) => listed,
        Err(ChromaError::Api { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let claimed = match claims {
        Some(claimed) => claimed,
        None => claimed_ids(ctx, run, source_id).await,
    };
    let own = decide::own_invocation(&listed, payload, default_collection, since, &|id| {
        claimed.contains(id)
    });
    Ok(own.map(|job| job.id.clone()))
}

/// Invocation ids that SyncRuns of `run`'s namespace record on `source_id`. (Read only when a
/// lookup is needed: after a lost answer or a kill.)
async fn claimed_ids(
    ctx: &Runs,
    run: &SyncRun,
    source_id: &str,
) -> std::collections::HashSet<String> {
    let listed = bounded(api_of(&ctx.client, run).list(&Default::default())).await;
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
fn reached(ctx: &Runs, run: &SyncRun, phase: RunPhase, kind: &'static str) {
    let since_created = phase.is_final().then(|| {
        let created = run.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let elapsed = created.map(|c| jiff::Timestamp::now().duration_since(c));
        elapsed
            .and_then(|e| Duration::try_from(e).ok())
            .unwrap_or_default()
    });
    ctx.metrics.run_phase(phase.as_str(), kind, since_created);
}

/// The run as stored, if the write that stored it moved the phase to Failed (rather than
/// rewrote a run already Failed).
fn newly_failed(previous: &SyncRunStatus, stored: Option<SyncRun>) -> Option<SyncRun> {
    stored.filter(|_| previous.phase != Some(RunPhase::Failed))
}

/// Announces a run that this reconcile's status write has just made Failed: a Warning Event,
/// and a notification to `--events-addr` (Flux's event, severity `error`).
///
/// Once per failed run, across restarts, decided from status: only the write that moves the
/// phase to Failed announces, and that write is guarded by resourceVersion, so one reconcile
/// makes it. A failed run reconciled again (a restart lists it, a reconcile request) finds its
/// phase final and announces nothing. The price: a crash between the write and the post loses
/// the notification, as it loses the Kubernetes Event (announced at most once; sending on
/// restart instead would take a second status write per failed run to record the post, and
/// could still announce twice).
fn announce_failure(ctx: &Runs, run: &SyncRun, reason: Reason, note: String) {
    let mut metadata = std::collections::BTreeMap::new();
    let group = "chromasync.dev";
    metadata.insert(format!("{group}/source"), run.spec.source_ref.name.clone());
    if let Some(id) = run.status.as_ref().and_then(|s| s.invocation_id.clone()) {
        metadata.insert(format!("{group}/invocation"), id);
    }
    let severity = crate::kernel::notify::Severity::Error;
    ctx.notifier
        .notify(run, severity, reason.as_str(), &note, metadata);
    ctx.events.publish(run, Kind::Warning, reason, note);
}

/// Records a failed call. (A create's mark is the kernel's to clear.)
async fn fail(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    failure: Failure,
    kind: &'static str,
) -> Result<Next, Error> {
    let reason = reason_of(failure.class);
    warn!(%reason, "{}", failure.message);
    if refused(failure.class) {
        // The service said no for good: the run has failed.
        let mut next = previous.clone();
        next.phase = Some(RunPhase::Failed);
        next.completion_time = Some(Time(jiff::Timestamp::now()));
        next.message = Some(failure.message.clone());
        next.last_error = Some(failure.error.clone());
        let problem = Problem {
            reason,
            message: &failure.message,
            needs_a_person: true,
        };
        let stored = write_status(ctx, run, previous, next, Some(problem)).await?;
        if let Some(stored) = newly_failed(previous, stored) {
            reached(ctx, run, RunPhase::Failed, kind);
            announce_failure(ctx, &stored, reason, failure.message.clone());
        }
        return Ok(Next::Settled);
    }
    let problem = Problem {
        reason,
        message: &failure.message,
        needs_a_person: failure.class.needs_a_person(),
    };
    write_problem(ctx, run, previous, problem, Some(failure.error.clone())).await?;
    Ok(Next::Retry {
        retry: failure.retry,
        reason,
    })
}

/// Stalls with `reason` (a person must act), and tries again as `retry` says.
/// The endpoint of the run's source (its connection and token), or the status that says why
/// there is none now: a connection missing or not Ready waits, one not permitted or a missing
/// token needs a person.
async fn reach(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    source: &SyncSource,
) -> Result<Endpoint, Result<Next, Error>> {
    let (reason, why, retry) = match ctx.reach(source).await {
        Ok(endpoint) => return Ok(endpoint),
        Err(Ok(blocked)) => match blocked.refusal {
            Refusal::NotFound | Refusal::NotReady => {
                let reason = Reason::ConnectionNotReady;
                return Err(waiting(ctx, run, previous, reason, blocked.message).await);
            }
            Refusal::NotPermitted => (Reason::ConnectionNotPermitted, blocked.message, Retry::Slow),
            Refusal::Changed => (Reason::ConnectionChanged, blocked.message, Retry::Slow),
        },
        Err(Err(why)) => (Reason::MissingCredentials, why, Retry::Slow),
    };
    Err(stall(ctx, run, previous, reason, &why, retry).await)
}

async fn stall(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    reason: Reason,
    why: &str,
    retry: Retry,
) -> Result<Next, Error> {
    let problem = Problem {
        reason,
        message: why,
        needs_a_person: true,
    };
    write_problem(ctx, run, previous, problem, None).await?;
    Ok(Next::Retry { retry, reason })
}

async fn waiting(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    reason: Reason,
    why: String,
) -> Result<Next, Error> {
    let problem = Problem {
        reason,
        message: &why,
        needs_a_person: false,
    };
    write_problem(ctx, run, previous, problem, None).await?;
    Ok(Next::LookAgainIn(SOURCE_WAIT))
}

/// Writes the run's phase as it is, with a problem shown in its conditions.
async fn write_problem(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    problem: Problem<'_>,
    error: Option<crate::crd::LastError>,
) -> Result<(), Error> {
    let mut next = previous.clone();
    next.last_error = error;
    write_status(ctx, run, previous, next, Some(problem)).await?;
    Ok(())
}

/// Writes `next` (with its conditions derived here) unless the stored status already equals
/// it; the object as stored when it wrote.
async fn write_status(
    ctx: &Runs,
    run: &SyncRun,
    previous: &SyncRunStatus,
    mut next: SyncRunStatus,
    problem: Option<Problem<'_>>,
) -> Result<Option<SyncRun>, Error> {
    let generation = run.metadata.generation.unwrap_or_default();
    next.observed_generation = Some(generation);
    let paused = problem.is_some_and(|p| p.reason == Reason::Paused);
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
    // Guarded: a status decided on a stale copy must not erase an invocationId it never saw.
    let Some(patch) = status_patch(previous, &next, run.resource_version()) else {
        return Ok(None);
    };
    let api = api_of(&ctx.client, run);
    let stored =
        bounded(api.patch_status(&run.name_any(), &params(), &Patch::Merge(patch))).await?;
    Ok(Some(stored))
}

/// The run's SyncSource: as cached once it is Ready there (a run looks at its source at every
/// poll; a read each cost the apiserver about four GETs per run), else as stored now, so a run
/// made with its source does not wait for the cache to hear of it.
async fn source_of(ctx: &Runs, run: &SyncRun) -> Result<Option<SyncSource>, Error> {
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
    let ready = conditions::is_ready(&status.conditions);
    ready.then(|| status.source_id.clone()).flatten()
}

fn jitter() -> f64 {
    rand::random_range(0.9..1.1)
}
