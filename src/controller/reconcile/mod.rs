//! The reconcile flows: apply (create, replace, recover) and cleanup (delete or retain).
//!
//! Crash safety rests on one rule: every create call is preceded by a successful write, guarded
//! by the object's resourceVersion, that puts the finalizer and a create-pending mark on the
//! object. A mark with no recorded `status.sourceId` means "a source may exist that status does
//! not name", and is resolved by listing the database's sources before anything else is created
//! or the finalizer is removed. The README's design section walks through every crash point.

mod outside;

use super::decide::{self, Failure, Retry};
use super::events::Kind;
use super::lookup::SourceLookup;
use super::status::{self, Recorded, State};
use super::{Context, Error, Next, Reason, intent, writes};
use crate::chroma::wire::CreateSourcePayload;
use crate::chroma::{ChromaError, Token};
use crate::crd::{
    CREATE_PENDING_ANNOTATION, ConflictPolicy, DeletionPolicy, FINALIZER, PAUSED_ANNOTATION,
    SyncSource,
};
use crate::payload::{self, NaturalKey};
use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::ops::ControlFlow;
use std::time::Duration;
use tracing::{info, warn};

/// A source created up to this long before its object's create-pending mark still counts as the
/// object's own: it allows for clock skew between the operator and the service.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

/// The longest wait for one Kubernetes write. kube's client has no read timeout by default, so
/// a request sent on a connection that died without a reset would hold its reconcile, and so
/// the object, forever (seen in `cut_apiserver_connections_lose_nothing_and_duplicate_nothing`).
/// Giving up is safe at any point: it is a lost answer, which the guarded mark already covers.
const KUBE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn bounded<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(KUBE_WRITE_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(Error::KubeTimeout(KUBE_WRITE_TIMEOUT)),
    }
}

/// The source the spec asks for.
struct Desired {
    payload: CreateSourcePayload,
    /// The payload's fingerprint, recorded with the source's id.
    hash: String,
}

impl Desired {
    /// Was `rec` created from this very payload?
    fn made(&self, rec: &Recorded) -> bool {
        rec.payload_hash.as_deref() == Some(self.hash.as_str())
    }

    fn recorded(&self, id: String) -> Recorded {
        Recorded {
            id,
            payload_hash: Some(self.hash.clone()),
        }
    }
}

/// A step of a flow either ends the reconcile with its outcome (`Break`) or hands on the object
/// as stored after its writes (`Continue`).
type Step = Result<ControlFlow<Next, SyncSource>, Error>;

/// Brings the source in line with the spec. The steps, in order: a spec that cannot become a
/// payload stalls; a source made from this payload is at rest; a source named by
/// `spec.sourceId` is adopted; otherwise, with a token, a recorded source is replaced, or an
/// unrecorded one left by a lost answer is recovered; and only then is a new source marked and
/// created.
pub async fn apply(obj: &SyncSource, ctx: &Context) -> Result<Next, Error> {
    let recorded = obj.status.as_ref().and_then(Recorded::of);
    let payload = match payload::build(&obj.spec) {
        Ok(payload) => payload,
        Err(invalid) => return invalid_spec(ctx, obj, recorded.as_ref(), invalid).await,
    };
    let desired = Desired {
        hash: payload::fingerprint(&payload),
        payload,
    };
    let pinned = obj.spec.source_id.as_deref();
    if let Some(rec) = recorded
        .as_ref()
        .filter(|rec| desired.made(rec) && pinned.is_none_or(|id| id == rec.id))
    {
        return at_rest(ctx, obj, rec, &desired).await;
    }
    let token = match ctx.credentials.token_for(obj).await {
        Ok(token) => token,
        Err(why) => return missing_credentials(ctx, obj, recorded.as_ref(), why).await,
    };
    if let Some(id) = pinned {
        return outside::adopt_named(ctx, obj, &token, &desired, recorded.as_ref(), id).await;
    }
    let step = match &recorded {
        Some(old) => replace(ctx, obj, old, &token).await?,
        None => recover(ctx, obj, &token, &desired).await?,
    };
    match step {
        ControlFlow::Break(next) => Ok(next),
        ControlFlow::Continue(obj) => {
            let why = match recorded {
                Some(old) => Because::Replacing(old.id),
                None => Because::New,
            };
            mark_and_create(ctx, obj, &token, &desired, why).await
        }
    }
}

/// Why a source is being created.
enum Because {
    New,
    /// The spec changed: this one replaces the source with that id.
    Replacing(String),
    /// The source with that id is gone from Chroma (drift): this one takes its place.
    Missing(String),
}

/// A paused object: no call and no write, except the status that says so. A paused deletion
/// waits (the finalizer stays) and goes on, as `deletionPolicy` says, once the object resumes.
pub async fn paused(obj: &SyncSource, ctx: &Context) -> Result<Next, Error> {
    if status::ready_reason(obj.status.as_ref()) == Some(Reason::Paused.as_str()) {
        return Ok(Next::Settled); // said so already; nothing more is written while paused
    }
    let recorded = obj.status.as_ref().and_then(Recorded::of);
    let message = format!(
        "paused ({PAUSED_ANNOTATION}): no call to Chroma Sync and no write until the annotation is removed; a deletion waits until then"
    );
    write_status(
        ctx,
        obj,
        recorded.as_ref(),
        &State::Paused { message },
        false,
    )
    .await?;
    Ok(Next::Settled)
}

/// The spec cannot become a payload (admission would refuse it now; it was stored before).
async fn invalid_spec(
    ctx: &Context,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    invalid: payload::InvalidSpec,
) -> Result<Next, Error> {
    let state = State::Stalled {
        reason: Reason::InvalidSpec,
        message: invalid.to_string(),
        error: None,
    };
    set_status(ctx, obj, recorded, &state).await?;
    Ok(Next::Retry {
        retry: Retry::OnChange,
        reason: Reason::InvalidSpec,
    })
}

/// The recorded source was made from this very payload. No call, and no write unless the
/// status lags (a spec change that does not reach the payload) or the finalizer went missing.
/// The source is looked at (one GET) only when someone asked (reconcile-now), the drift check
/// did not find it, or the object comes back from a pause or a reported loss.
async fn at_rest(
    ctx: &Context,
    obj: &SyncSource,
    rec: &Recorded,
    desired: &Desired,
) -> Result<Next, Error> {
    let obj = with_finalizer(ctx, obj).await?;
    let status = obj.status.as_ref();
    let handled = status.and_then(|s| s.last_handled_reconcile_at.as_deref());
    let asked = intent::requested(&obj.metadata, handled).is_some();
    let suspected = ctx.take_suspect(&obj);
    let unsure = matches!(
        status::ready_reason(status),
        Some(r) if r == Reason::Paused.as_str() || r == Reason::SourceMissing.as_str()
    );
    if asked || suspected || unsure {
        let token = match ctx.credentials.token_for(&obj).await {
            Ok(token) => token,
            Err(why) => return missing_credentials(ctx, &obj, Some(rec), why).await,
        };
        match ctx.chroma.get_source(&token, &rec.id).await {
            Ok(Some(_)) => {}
            Ok(None) => return outside::missing(ctx, obj, rec, &token, desired).await,
            Err(e) => {
                let failure = decide::classify("looking at the source", &e);
                return fail(ctx, &obj, Some(rec), failure, false).await;
            }
        }
    }
    set_status(ctx, &obj, Some(rec), &State::Ready).await?;
    settled(ctx, &obj, &rec.id).await
}

/// Stalls with `reason`: the operator needs a person to change something.
pub(super) async fn stall(
    ctx: &Context,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    reason: Reason,
    message: String,
) -> Result<Next, Error> {
    warn!(%reason, "{message}");
    let state = State::Stalled {
        reason,
        message,
        error: None,
    };
    set_status(ctx, obj, recorded, &state).await?;
    Ok(Next::Retry {
        retry: Retry::OnChange,
        reason,
    })
}

/// No update call exists: a changed payload replaces the source. The old one is deleted, and
/// that recorded, before anything new is created, so there is never more than one.
async fn replace(ctx: &Context, obj: &SyncSource, old: &Recorded, token: &Token) -> Step {
    if let Err(e) = ctx.chroma.delete_source(token, &old.id).await {
        let failure = decide::classify("deleting the replaced source", &e);
        return fail(ctx, obj, Some(old), failure, false)
            .await
            .map(ControlFlow::Break);
    }
    let state = State::Reconciling {
        reason: Reason::Replacing,
        message: format!(
            "deleted source {} because the spec changed; creating its replacement",
            old.id
        ),
        error: None,
    };
    Ok(ControlFlow::Continue(
        set_status(ctx, obj, None, &state).await?,
    ))
}

/// An earlier attempt may have created the source without recording it: a mark with no
/// recorded id. The source is looked up by the mark and the natural key and adopted if found.
async fn recover(ctx: &Context, obj: &SyncSource, token: &Token, desired: &Desired) -> Step {
    let Some(marked_at) = pending_mark(obj) else {
        return Ok(ControlFlow::Continue(obj.clone()));
    };
    match find_unrecorded(ctx, token, &desired.payload, marked_at).await {
        Ok(Some(id)) => {
            info!(source_id = %id, "found the source of an unrecorded create; adopting it");
            let obj = record(ctx, obj, &desired.recorded(id.clone())).await?;
            let note =
                format!("Recovered source {id}, created by an attempt whose answer was lost");
            publish(ctx, &obj, Kind::Normal, Reason::Adopted, note);
            Ok(ControlFlow::Break(settled(ctx, &obj, &id).await?))
        }
        Ok(None) => Ok(ControlFlow::Continue(obj.clone())),
        Err(e) => {
            let failure = decide::classify("looking for an unrecorded source", &e);
            fail(ctx, obj, None, failure, false)
                .await
                .map(ControlFlow::Break)
        }
    }
}

/// The durable mark, then the one create call, then its id in status. The mark is guarded by
/// resourceVersion: a stale cache fails here with a conflict instead of starting a second
/// create. `why` says whose place the new source takes, if any, for its Event.
async fn mark_and_create(
    ctx: &Context,
    obj: SyncSource,
    token: &Token,
    desired: &Desired,
    why: Because,
) -> Result<Next, Error> {
    if ctx.is_stopping() {
        return Err(Error::ShuttingDown);
    }
    let obj = guarded_metadata_write(ctx, &obj, true, Some(jiff::Timestamp::now())).await?;
    let payload = &desired.payload;
    match ctx.chroma.create_source(token, payload).await {
        Ok(id) => {
            info!(source_id = %id, "created Chroma source");
            let obj = match record(ctx, &obj, &desired.recorded(id.clone())).await {
                Ok(stored) => stored,
                Err(e) if e.is_not_found() || gone(ctx, &obj).await => {
                    return vanished(ctx, &obj, token, Some(id), payload).await;
                }
                Err(e) => return Err(e),
            };
            // A first create is in status alone (see `events`); a replacement is news.
            match why {
                Because::New => {}
                Because::Replacing(old) => {
                    let note = format!("Replaced source {old} with {id} after a spec change");
                    publish(ctx, &obj, Kind::Normal, Reason::Replaced, note);
                }
                Because::Missing(old) => {
                    let note = format!(
                        "Source {old} no longer existed in Chroma (deleted outside the operator); created {id} in its place"
                    );
                    publish(ctx, &obj, Kind::Warning, Reason::Recreated, note);
                }
            }
            settled(ctx, &obj, &id).await
        }
        Err(e) => {
            let failure = decide::classify("creating the source", &e);
            let conflict = matches!(e, ChromaError::Api { status: 409, .. });
            if conflict && obj.spec.on_conflict == ConflictPolicy::Adopt {
                // A 409 created nothing: the mark goes before anything else is decided.
                let obj = clear_mark(ctx, &obj).await?;
                return outside::adopt_existing(ctx, &obj, token, desired, failure).await;
            }
            let nothing_created = failure.nothing_created;
            match fail(ctx, &obj, None, failure, true).await {
                Err(e) if !nothing_created && (e.is_not_found() || gone(ctx, &obj).await) => {
                    vanished(ctx, &obj, token, None, payload).await
                }
                other => other,
            }
        }
    }
}

/// Records `rec`, the source this object's create made, in status: Ready. A conflict on that
/// write is written again at once on a fresh read ([`writes::record`]), not decided afresh: a
/// fresh decision would look the source up again, a window too wide to ever write in while
/// another client keeps writing the object (seen in
/// `conflicts_from_a_busy_writer_cost_no_duplicate_and_no_stuck_object`).
async fn record(ctx: &Context, obj: &SyncSource, rec: &Recorded) -> Result<SyncSource, Error> {
    let unrecorded = |fresh: &SyncSource| {
        writes::same_create(obj, fresh) && fresh.status.as_ref().and_then(Recorded::of).is_none()
    };
    writes::record(&ctx.api(obj), obj, unrecorded, |current| async move {
        set_status(ctx, &current, Some(rec), &State::Ready).await
    })
    .await
}

/// The source is Ready: what `spec.sync` asks for next (a run, a look at the run going, the
/// next tick).
async fn settled(ctx: &Context, obj: &SyncSource, source_id: &str) -> Result<Next, Error> {
    Ok(
        match crate::runs::sync::ensure(ctx, obj, source_id).await? {
            Some(after) => Next::LookAgainIn(after),
            None => Next::Settled,
        },
    )
}

/// Deletes the source of an object the apiserver let go with the operator's finalizer still on
/// (kubernetes/kubernetes#77988; see `orphans.rs`), as its deletion would have done; with
/// `deletionPolicy: Retain` it is left, as deletion would. A recorded id is deleted. Without
/// one, a create-pending mark means a create may have happened that no status records (the
/// operator that made it was killed before its status write): that source is found by the mark
/// and the natural key. Such a lookup could find another object's source when a live object
/// declares the same source (`namesake`): then nothing is deleted, and the log says so.
pub async fn orphaned(ctx: &Context, obj: &SyncSource, namesake: bool) {
    let recorded = obj.status.as_ref().and_then(Recorded::of).map(|r| r.id);
    if recorded.is_none() {
        if pending_mark(obj).is_none() {
            info!("an object with the finalizer vanished before any create; nothing to delete");
            return;
        }
        if namesake {
            warn!(
                "an object vanished while its create was unrecorded; another object declares the same source, so any source it made is left in Chroma"
            );
            return;
        }
    }
    let token = match ctx.credentials.token_for(obj).await {
        Ok(token) => token,
        Err(why) => {
            warn!(source_id = ?recorded, %why, "cannot delete the source of a vanished object; it is left in Chroma");
            return;
        }
    };
    let Ok(payload) = payload::build(&obj.spec) else {
        return; // an invalid spec was never sent
    };
    let _ = vanished(ctx, obj, &token, recorded, &payload).await;
}

/// The object of a cleanup in `vanished` is gone, so nothing will bring that cleanup back: it
/// tries a few times, over about half a minute and never sooner than the service's
/// `Retry-After`, before it leaves a source in Chroma (seen in the Chroma fault storm: one 503
/// on that single delete leaked the source).
async fn persistently<T, F, Fut>(what: &str, call: F) -> Result<T, ChromaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ChromaError>>,
{
    const LONGEST: Duration = Duration::from_secs(10);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(LONGEST)
        .with_max_times(5);
    let asked = |e: &ChromaError| match e {
        ChromaError::Api {
            retry_after: Some(r),
            ..
        } => *r,
        _ => Duration::ZERO,
    };
    let mut attempt = 0;
    call.retry(backoff)
        .adjust(|e, delay| delay.map(|d| d.max(asked(e)).min(LONGEST)))
        .notify(|e, delay| {
            attempt += 1;
            warn!(error = %e, attempt, ?delay, "{what} failed; trying again");
        })
        .await
}

/// The object is gone although our finalizer was on it, so no cleanup will ever run for it: the
/// source this reconcile created (`created`), or the one an ambiguous create may have made
/// (found by listing from the mark), is deleted here, as the object's deletion would have done.
async fn vanished(
    ctx: &Context,
    obj: &SyncSource,
    token: &Token,
    created: Option<String>,
    payload: &CreateSourcePayload,
) -> Result<Next, Error> {
    warn!("the object was deleted while its source was being created");
    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Next::Settled);
    }
    let target = match (created, pending_mark(obj)) {
        (Some(id), _) => Some(id),
        (None, Some(marked_at)) => {
            persistently("looking for the source of a deleted object", || {
                find_unrecorded(ctx, token, payload, marked_at)
            })
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot look for the source of a deleted object; it may be left in Chroma");
                None
            })
        }
        (None, None) => None,
    };
    if let Some(id) = target {
        let delete = || ctx.chroma.delete_source(token, &id);
        match persistently("deleting the source of a deleted object", delete).await {
            Ok(_) => info!(source_id = %id, "deleted the source of an object deleted meanwhile"),
            Err(e) => {
                warn!(source_id = %id, error = %e, "cannot delete the source of a deleted object; it is left in Chroma")
            }
        }
    }
    Ok(Next::Settled)
}

/// After a failed write: is the object gone (or replaced by another of the same name)? A
/// requeue would never reach a gone object, so this is the last chance to notice. Asks the
/// apiserver a few times, as the write may have failed on the same broken connection.
async fn gone(ctx: &Context, obj: &SyncSource) -> bool {
    let (api, name) = (ctx.api(obj), obj.name_any());
    let read = || bounded(api.get_opt(&name));
    let tries = ConstantBuilder::default()
        .with_delay(Duration::from_millis(500))
        .with_max_times(2);
    match read.retry(tries).await {
        Ok(None) => true,
        Ok(Some(now)) => now.uid() != obj.uid(),
        Err(_) => false,
    }
}

pub async fn cleanup(obj: &SyncSource, ctx: &Context) -> Result<Next, Error> {
    if !has_finalizer(obj) {
        return Ok(Next::Settled);
    }
    let status = obj.status.clone().unwrap_or_default();
    let recorded = Recorded::of(&status);
    let marked = pending_mark(obj);

    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        release_finalizer(ctx, obj).await?;
        if let Some(rec) = &recorded {
            publish(
                ctx,
                obj,
                Kind::Normal,
                Reason::Retained,
                format!("Left source {} in Chroma (deletionPolicy: Retain)", rec.id),
            );
        }
        return Ok(Next::Settled);
    }

    if recorded.is_some() || marked.is_some() {
        let token = match ctx.credentials.token_for(obj).await {
            Ok(t) => t,
            Err(why) => return missing_credentials(ctx, obj, recorded.as_ref(), why).await,
        };
        let target = match (&recorded, marked) {
            (Some(rec), _) => Some(rec.id.clone()),
            (None, Some(marked_at)) => match payload::build(&obj.spec) {
                Ok(payload) => match find_unrecorded(ctx, &token, &payload, marked_at).await {
                    Ok(found) => found,
                    Err(e) => {
                        let failure = decide::classify("looking for an unrecorded source", &e);
                        return fail(ctx, obj, None, failure, false).await;
                    }
                },
                // An invalid spec was never sent, so nothing was created from it.
                Err(_) => None,
            },
            (None, None) => None,
        };
        if let Some(id) = target {
            if let Err(e) = ctx.chroma.delete_source(&token, &id).await {
                let failure = decide::classify("deleting the source", &e);
                return fail(ctx, obj, recorded.as_ref(), failure, false).await;
            }
            // No Event: it would be about an object that is about to be gone (see `events`).
            info!(source_id = %id, "deleted Chroma source");
        }
    }
    release_finalizer(ctx, obj).await?;
    Ok(Next::Settled)
}

/// Removes the finalizer once the source is dealt with. A conflict (another writer touched the
/// object) re-reads it and tries the write again, instead of failing the reconcile, which would
/// run the whole cleanup again: a second Chroma DELETE and a second Event.
async fn release_finalizer(ctx: &Context, obj: &SyncSource) -> Result<(), Error> {
    let mut current = obj.clone();
    let mut conflicts = 0;
    loop {
        match guarded_metadata_write(ctx, &current, false, None).await {
            Err(e) if e.is_conflict() && conflicts < 10 => {
                conflicts += 1;
                match super::wiring::fresh(&ctx.client, &current).await {
                    Some(fresh) if fresh.uid() == obj.uid() && has_finalizer(&fresh) => {
                        current = fresh
                    }
                    _ => return Ok(()), // gone (or replaced by a namesake), or released already
                }
            }
            Err(e) if e.is_not_found() => return Ok(()),
            result => return result.map(|_| ()),
        }
    }
}

/// Lists the database's sources, newest first, for one created from `payload` no earlier than
/// the mark (less the skew allowance). The listing is shared with the other lookups of the
/// database asked meanwhile (after a restart, every marked object looks at once).
async fn find_unrecorded(
    ctx: &Context,
    token: &Token,
    payload: &CreateSourcePayload,
    marked_at: jiff::Timestamp,
) -> Result<Option<String>, ChromaError> {
    let lookup = SourceLookup {
        key: NaturalKey::of_payload(payload),
        since: marked_at - CLOCK_SKEW_ALLOWANCE,
    };
    let listing = (token.clone(), payload.database_name.clone());
    let page = {
        let (chroma, (token, database)) = (ctx.chroma.clone(), listing.clone());
        move |n| {
            let (chroma, token, database) = (chroma.clone(), token.clone(), database.clone());
            async move { chroma.list_sources_page(&token, &database, n).await }
        }
    };
    match ctx.source_lookups.look(listing, lookup, page).await {
        // No database, no sources in it: nothing was created there.
        Err(ChromaError::Api { status: 404, .. }) => Ok(None),
        found => found,
    }
}

/// Records a failed call. When the call was a create that certainly created nothing, the mark
/// is cleared first, so a later recovery cannot mistake someone else's source for ours.
async fn fail(
    ctx: &Context,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    failure: Failure,
    was_create: bool,
) -> Result<Next, Error> {
    warn!(
        reason = %failure.state.reason(),
        "{}",
        message_of(&failure.state)
    );
    let mut obj = obj.clone();
    if was_create && failure.nothing_created && pending_mark(&obj).is_some() {
        obj = clear_mark(ctx, &obj).await?;
    }
    set_status(ctx, &obj, recorded, &failure.state).await?;
    Ok(Next::Retry {
        retry: failure.retry,
        reason: failure.state.reason(),
    })
}

async fn missing_credentials(
    ctx: &Context,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    why: String,
) -> Result<Next, Error> {
    let state = State::Stalled {
        reason: Reason::MissingCredentials,
        message: why,
        error: None,
    };
    set_status(ctx, obj, recorded, &state).await?;
    // The Secret watch brings the object back as soon as its Secret appears or changes; the
    // slow retry covers the operator's default token, which is not watched.
    Ok(Next::Retry {
        retry: Retry::Slow,
        reason: Reason::MissingCredentials,
    })
}

fn message_of(state: &State) -> &str {
    match state {
        State::Ready => "ready",
        State::Paused { message }
        | State::Reconciling { message, .. }
        | State::Stalled { message, .. } => message,
    }
}

/// Writes the status for `state` unless it is already so; emits an Event when the `Ready`
/// reason changes. Returns the object as stored.
async fn set_status(
    ctx: &Context,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    state: &State,
) -> Result<SyncSource, Error> {
    write_status(ctx, obj, recorded, state, true).await
}

/// [`set_status`], with the Event of a changed reason only when `announce` says so. The status
/// also records the reconcile-now request this reconcile handled (not a paused one's).
async fn write_status(
    ctx: &Context,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    state: &State,
    announce: bool,
) -> Result<SyncSource, Error> {
    let previous = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation.unwrap_or_default();
    let mut next = status::next(
        &previous,
        generation,
        recorded,
        state,
        jiff::Timestamp::now(),
    );
    if !matches!(state, State::Paused { .. }) {
        let before = previous.last_handled_reconcile_at.as_ref();
        next.last_handled_reconcile_at = intent::handled(&obj.metadata, before);
    }
    let Some(mut patch) = status::patch_if_changed(&previous, &next) else {
        return Ok(obj.clone());
    };
    // Guarded like every other write: a status decided on a stale copy (one that has not seen
    // a recorded sourceId yet) must fail with a conflict, not erase what it never saw.
    patch["metadata"] = json!({ "resourceVersion": obj.resource_version() });
    let api = ctx.api(obj);
    let stored =
        bounded(api.patch_status(&obj.name_any(), &ctx.patch_params(), &Patch::Merge(patch)))
            .await?;
    if let State::Stalled {
        reason, message, ..
    }
    | State::Reconciling {
        reason, message, ..
    } = state
        && announce
        && status::ready_reason(Some(&previous)) != Some(reason.as_str())
    {
        let kind = if matches!(state, State::Stalled { .. }) {
            Kind::Warning
        } else {
            Kind::Normal
        };
        publish(ctx, obj, kind, *reason, message.clone());
    }
    Ok(stored)
}

async fn guarded_metadata_write(
    ctx: &Context,
    obj: &SyncSource,
    keep: bool,
    mark: Option<jiff::Timestamp>,
) -> Result<SyncSource, Error> {
    writes::guarded_metadata_write(&ctx.api(obj), obj, FINALIZER, keep, mark).await
}

async fn clear_mark(ctx: &Context, obj: &SyncSource) -> Result<SyncSource, Error> {
    writes::clear_mark(&ctx.api(obj), obj).await
}

/// The object with the finalizer on: as it is, or after the guarded write that adds it.
async fn with_finalizer(ctx: &Context, obj: &SyncSource) -> Result<SyncSource, Error> {
    if has_finalizer(obj) {
        return Ok(obj.clone());
    }
    guarded_metadata_write(ctx, obj, true, None).await
}

fn has_finalizer(obj: &SyncSource) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// The time of the create-pending mark, if there is one.
pub fn pending_mark(obj: &SyncSource) -> Option<jiff::Timestamp> {
    obj.annotations()
        .get(CREATE_PENDING_ANNOTATION)
        .and_then(|v| v.parse().ok())
}

fn publish(ctx: &Context, obj: &SyncSource, kind: Kind, reason: Reason, note: String) {
    ctx.events.publish(obj, kind, reason.as_str(), note);
}

impl Context {
    fn api(&self, obj: &SyncSource) -> Api<SyncSource> {
        Api::namespaced(
            self.client.clone(),
            obj.namespace().as_deref().unwrap_or("default"),
        )
    }

    fn patch_params(&self) -> PatchParams {
        writes::params()
    }
}
