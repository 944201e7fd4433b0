//! The SyncSource flows: apply (create, replace, recover, adopt) and cleanup (delete or retain),
//! with all their Kubernetes and Chroma IO.
//!
//! Creates follow the kernel's crash-safe protocol ([`crate::kernel::create`]): a guarded mark
//! before every create call, the id recorded after it, a mark with no recorded
//! `status.sourceId` resolved by listing the database's sources before anything else is created
//! or the finalizer is removed. CONTRIBUTING's design section walks through every crash point.

mod outside;

use super::decide::state_of;
use super::lookup::SourceLookup;
use super::payload::{self, NaturalKey};
use super::status::{self, Recorded, State};
use super::{Next, Reason, Sources};
use crate::chroma::ChromaError;
use crate::chroma::wire::{CreateSourcePayload, InlineAwsCredentials};
use crate::crd::{ConflictPolicy, DeletionPolicy, PAUSED_ANNOTATION, SyncSource};
use crate::kernel::connections::{Blocked, Endpoint, Refusal, Route, Via};
use crate::kernel::create::{self, Created, Creation, Recovered, pending_mark};
use crate::kernel::events::Kind;
use crate::kernel::failure::{self, Class, Failure, Retry};
use crate::kernel::kube_io::{api_of, bounded, params};
use crate::kernel::{Error, intent};
use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use kube::ResourceExt;
use kube::api::Patch;
use kube::runtime::reflector::ObjectRef;
use std::ops::ControlFlow;
use std::time::Duration;
use tracing::{info, warn};

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

    /// The record of source `id`, made from this payload through `via`.
    fn recorded(&self, id: String, via: &Via) -> Recorded {
        Recorded {
            id,
            payload_hash: Some(self.hash.clone()),
            connection: status::connection_of(via),
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
pub async fn apply(obj: &SyncSource, ctx: &Sources) -> Result<Next, Error> {
    let recorded = obj.status.as_ref().and_then(Recorded::of);
    let payload = match payload::build(&obj.spec) {
        Ok(payload) => payload,
        Err(invalid) => return invalid_spec(ctx, obj, recorded.as_ref(), invalid).await,
    };
    // Before anything else: the key is part of the payload, so of its fingerprint.
    let payload = match inline_credentials(ctx, obj).await {
        Ok(None) => payload,
        Ok(Some(keys)) => payload::with_inline_credentials(payload, keys),
        Err(why) => return missing_credentials(ctx, obj, recorded.as_ref(), why).await,
    };
    let desired = Desired {
        hash: payload::fingerprint(&payload),
        payload,
    };
    let route = match ctx.route(obj).await {
        Ok(route) => route,
        Err(blocked) => return refused(ctx, obj, recorded.as_ref(), blocked).await,
    };
    let pinned = obj.spec.source_id.as_deref();
    if let Some(rec) = recorded
        .as_ref()
        .filter(|rec| desired.made(rec) && pinned.is_none_or(|id| id == rec.id))
    {
        return at_rest(ctx, obj, rec, &desired, route).await;
    }
    let ep = match ctx.endpoint(obj, route).await {
        Ok(ep) => ep,
        Err(why) => return missing_credentials(ctx, obj, recorded.as_ref(), why).await,
    };
    if let Some(id) = pinned {
        return outside::adopt_named(ctx, obj, &ep, &desired, recorded.as_ref(), id).await;
    }
    let step = match &recorded {
        Some(old) => replace(ctx, obj, old, &ep).await?,
        None => recover(ctx, obj, &ep, &desired).await?,
    };
    match step {
        ControlFlow::Break(next) => Ok(next),
        ControlFlow::Continue(obj) => {
            let why = match recorded {
                Some(old) => Because::Replacing(old.id),
                None => Because::New,
            };
            mark_and_create(ctx, &obj, &ep, &desired, why).await
        }
    }
}

/// The AWS key an S3 source's `credentialsSecretRef` names, read from the Secret (the object
/// is woken when that Secret changes); `Ok(None)` when the spec names none. The reason for
/// none never holds a value.
async fn inline_credentials(
    ctx: &Sources,
    obj: &SyncSource,
) -> Result<Option<InlineAwsCredentials>, String> {
    let s3 = obj.spec.s3.as_deref();
    let Some(reference) = s3.and_then(|s3| s3.credentials_secret_ref.as_ref()) else {
        return Ok(None);
    };
    let namespace = obj.namespace().unwrap_or_default();
    let secret = ObjectRef::new(&reference.name).within(&namespace);
    let read = |key| {
        let field = "s3.credentialsSecretRef";
        ctx.credentials.secret_value(&secret, key, field, obj)
    };
    Ok(Some(InlineAwsCredentials {
        aws_access_key_id: read(&reference.access_key_id_key).await?,
        aws_secret_access_key: read(&reference.secret_access_key_key).await?,
    }))
}

/// One create of a source, as the kernel's protocol makes it.
struct NewSource<'a> {
    ctx: &'a Sources,
    ep: &'a Endpoint,
    desired: &'a Desired,
}

impl Creation for NewSource<'_> {
    type Object = SyncSource;

    async fn create(&self) -> Result<String, ChromaError> {
        let payload = &self.desired.payload;
        let Endpoint { chroma, token, .. } = self.ep;
        chroma.create_source(token, payload).await
    }

    async fn find_unrecorded(
        &self,
        _obj: &SyncSource,
        since: jiff::Timestamp,
    ) -> Result<Option<String>, ChromaError> {
        find_unrecorded(self.ctx, self.ep, &self.desired.payload, since).await
    }

    async fn record(&self, obj: SyncSource, id: &str) -> Result<SyncSource, Error> {
        let recorded = self.desired.recorded(id.to_owned(), &self.ep.via);
        set_status(self.ctx, &obj, Some(&recorded), &State::Ready).await
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
pub async fn paused(obj: &SyncSource, ctx: &Sources) -> Result<Next, Error> {
    if status::ready_reason(obj.status.as_ref()) == Some(Reason::Paused.as_str()) {
        return Ok(Next::Settled); // said so already; nothing more is written while paused
    }
    let recorded = obj.status.as_ref().and_then(Recorded::of);
    let message = format!(
        "paused ({PAUSED_ANNOTATION}): no call to Chroma Sync and no write until the annotation is removed; a deletion waits until then"
    );
    let state = State::Paused { message };
    write_status(ctx, obj, recorded.as_ref(), &state, Announce::No).await?;
    Ok(Next::Settled)
}

/// The spec cannot become a payload (admission would refuse it now; it was stored before).
async fn invalid_spec(
    ctx: &Sources,
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
    ctx: &Sources,
    obj: &SyncSource,
    rec: &Recorded,
    desired: &Desired,
    route: Route,
) -> Result<Next, Error> {
    let obj = create::with_finalizer(&ctx.client, obj).await?;
    let status = obj.status.as_ref();
    let handled = status.and_then(|s| s.last_handled_reconcile_at.as_deref());
    let asked = intent::requested(&obj.metadata, handled).is_some();
    let suspected = ctx.take_suspect(&obj);
    let unsure = matches!(
        status::ready_reason(status),
        Some(r) if r == Reason::Paused.as_str() || r == Reason::SourceMissing.as_str()
    );
    if asked || suspected || unsure {
        let ep = match ctx.endpoint(&obj, route).await {
            Ok(ep) => ep,
            Err(why) => return missing_credentials(ctx, &obj, Some(rec), why).await,
        };
        match ep.chroma.get_source(&ep.token, &rec.id).await {
            Ok(Some(_)) => {}
            Ok(None) => return outside::missing(ctx, obj, rec, &ep, desired).await,
            Err(e) => {
                let failure = failure::classify("looking at the source", &e);
                return fail(ctx, &obj, Some(rec), failure).await;
            }
        }
    }
    // spec.sync goes on from the object as stored now: its status write is guarded by this
    // resourceVersion (a reconcile request's echo, written just now, would make it a conflict).
    let obj = set_status(ctx, &obj, Some(rec), &State::Ready).await?;
    settled(ctx, &obj, &rec.id).await
}

/// Stalls with `reason`: the operator needs a person to change something.
pub(super) async fn stall(
    ctx: &Sources,
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
async fn replace(ctx: &Sources, obj: &SyncSource, old: &Recorded, ep: &Endpoint) -> Step {
    if let Err(e) = ep.chroma.delete_source(&ep.token, &old.id).await {
        let failure = failure::classify("deleting the replaced source", &e);
        return fail(ctx, obj, Some(old), failure)
            .await
            .map(ControlFlow::Break);
    }
    let state = State::Reconciling {
        reason: Reason::Replacing,
        message: format!(
            "deleted source {} because {} changed; creating its replacement",
            old.id,
            what_changed(obj)
        ),
        error: None,
    };
    Ok(ControlFlow::Continue(
        set_status(ctx, obj, None, &state).await?,
    ))
}

/// What a replacement follows: a change of the spec, or (for an S3 source that reads its AWS
/// key from a Secret) of that key.
fn what_changed(obj: &SyncSource) -> &'static str {
    let s3 = obj.spec.s3.as_deref();
    if s3.is_some_and(|s3| s3.credentials_secret_ref.is_some()) {
        "the spec or the AWS key in s3.credentialsSecretRef"
    } else {
        "the spec"
    }
}

/// An earlier attempt may have created the source without recording it: a mark with no
/// recorded id. The source is looked up by the mark and the natural key and adopted if found.
async fn recover(ctx: &Sources, obj: &SyncSource, ep: &Endpoint, desired: &Desired) -> Step {
    let creation = NewSource { ctx, ep, desired };
    match create::recover(&ctx.client, &creation, obj).await? {
        Recovered::Nothing => Ok(ControlFlow::Continue(obj.clone())),
        Recovered::Found { obj, id } => {
            let note =
                format!("Recovered source {id}, created by an attempt whose answer was lost");
            publish(ctx, &obj, Kind::Normal, Reason::Adopted, note);
            Ok(ControlFlow::Break(settled(ctx, &obj, &id).await?))
        }
        Recovered::Unknown(failure) => fail(ctx, obj, None, failure).await.map(ControlFlow::Break),
    }
}

/// The kernel's mark, create and record; then what the outcome means for this object. `why`
/// says whose place the new source takes, if any, for its Event.
async fn mark_and_create(
    ctx: &Sources,
    obj: &SyncSource,
    ep: &Endpoint,
    desired: &Desired,
    why: Because,
) -> Result<Next, Error> {
    let creation = NewSource { ctx, ep, desired };
    let payload = &desired.payload;
    match create::mark_and_create(ctx, &creation, obj).await? {
        Created::Made { id, stored } => {
            let obj = match stored {
                Ok(stored) => stored,
                Err(e) if e.is_not_found() || gone(ctx, obj).await => {
                    return vanished(ctx, obj, ep, Some(id), payload).await;
                }
                Err(e) => return Err(e),
            };
            // A first create is in status alone (see `events`); a replacement is news.
            match why {
                Because::New => {}
                Because::Replacing(old) => {
                    let what = what_changed(&obj);
                    let note = format!("Replaced source {old} with {id} because {what} changed");
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
        Created::Failed { obj, failure, .. }
            if failure.class == Class::Conflict
                && obj.spec.on_conflict == ConflictPolicy::Adopt =>
        {
            // The 409 created nothing, and the mark is gone already.
            outside::adopt_existing(ctx, &obj, ep, desired, failure).await
        }
        Created::Failed { obj, failure, .. } => {
            let nothing_created = failure.nothing_created;
            match fail(ctx, &obj, None, failure).await {
                Err(e) if !nothing_created && (e.is_not_found() || gone(ctx, &obj).await) => {
                    vanished(ctx, &obj, ep, None, payload).await
                }
                other => other,
            }
        }
    }
}

/// The source is Ready: what `spec.sync` asks for next (a run, a look at the run going, the
/// next tick).
async fn settled(ctx: &Sources, obj: &SyncSource, source_id: &str) -> Result<Next, Error> {
    Ok(match super::sync::ensure(ctx, obj, source_id).await? {
        Some(after) => Next::LookAgainIn(after),
        None => Next::Settled,
    })
}

/// Whether another live object declares the same source as one the apiserver let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namesake {
    None,
    /// A lookup by the natural key could find that object's source, not the vanished one's.
    Declared,
}

/// Deletes the source of an object the apiserver let go with the operator's finalizer still on
/// (kubernetes/kubernetes#77988; see `orphans.rs`), as its deletion would have done; with
/// `deletionPolicy: Retain` it is left, as deletion would. A recorded id is deleted. Without
/// one, a create-pending mark means a create may have happened that no status records (the
/// operator that made it was killed before its status write): that source is found by the mark
/// and the natural key. Such a lookup could find another object's source when a live object
/// declares the same source (`namesake`): then nothing is deleted, and the log says so.
pub async fn orphaned(ctx: &Sources, obj: &SyncSource, namesake: Namesake) {
    let recorded = obj.status.as_ref().and_then(Recorded::of).map(|r| r.id);
    if recorded.is_none() {
        if pending_mark(obj).is_none() {
            info!("an object with the finalizer vanished before any create; nothing to delete");
            return;
        }
        if namesake == Namesake::Declared {
            warn!(
                "an object vanished while its create was unrecorded; another object declares the same source, so any source it made is left in Chroma"
            );
            return;
        }
    }
    let ep = match ctx.reach(obj).await {
        Ok(ep) => ep,
        Err(Ok(Blocked { message: why, .. }) | Err(why)) => {
            warn!(source_id = ?recorded, %why, "cannot delete the source of a vanished object; it is left in Chroma");
            return;
        }
    };
    let Ok(payload) = payload::build(&obj.spec) else {
        return; // an invalid spec was never sent
    };
    let _ = vanished(ctx, obj, &ep, recorded, &payload).await;
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
    ctx: &Sources,
    obj: &SyncSource,
    ep: &Endpoint,
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
            let since = create::lookup_since(marked_at);
            persistently("looking for the source of a deleted object", || {
                find_unrecorded(ctx, ep, payload, since)
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
        let delete = || ep.chroma.delete_source(&ep.token, &id);
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
async fn gone(ctx: &Sources, obj: &SyncSource) -> bool {
    let (api, name) = (api_of(&ctx.client, obj), obj.name_any());
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

pub async fn cleanup(obj: &SyncSource, ctx: &Sources) -> Result<Next, Error> {
    if !create::has_finalizer(obj) {
        return Ok(Next::Settled);
    }
    let status = obj.status.clone().unwrap_or_default();
    let recorded = Recorded::of(&status);
    let marked = pending_mark(obj);

    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        create::release_finalizer(&ctx.client, obj).await?;
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
        let ep = match ctx.reach(obj).await {
            Ok(ep) => ep,
            Err(Ok(blocked)) => return refused(ctx, obj, recorded.as_ref(), blocked).await,
            Err(Err(why)) => return missing_credentials(ctx, obj, recorded.as_ref(), why).await,
        };
        let target = match (&recorded, marked) {
            (Some(rec), _) => Some(rec.id.clone()),
            (None, Some(marked_at)) => match payload::build(&obj.spec) {
                Ok(payload) => {
                    let since = create::lookup_since(marked_at);
                    match find_unrecorded(ctx, &ep, &payload, since).await {
                        Ok(found) => found,
                        Err(e) => {
                            let action = "looking for an unrecorded source";
                            return fail(ctx, obj, None, failure::classify(action, &e)).await;
                        }
                    }
                }
                // An invalid spec was never sent, so nothing was created from it.
                Err(_) => None,
            },
            (None, None) => None,
        };
        if let Some(id) = target {
            if let Err(e) = ep.chroma.delete_source(&ep.token, &id).await {
                let failure = failure::classify("deleting the source", &e);
                return fail(ctx, obj, recorded.as_ref(), failure).await;
            }
            // No Event: it would be about an object that is about to be gone (see `events`).
            info!(source_id = %id, "deleted Chroma source");
        }
    }
    create::release_finalizer(&ctx.client, obj).await?;
    Ok(Next::Settled)
}

/// Lists the database's sources, newest first, for one created from `payload` no earlier than
/// `since`. The listing is shared with the other lookups of the database asked meanwhile (after
/// a restart, every marked object looks at once).
async fn find_unrecorded(
    ctx: &Sources,
    ep: &Endpoint,
    payload: &CreateSourcePayload,
    since: jiff::Timestamp,
) -> Result<Option<String>, ChromaError> {
    let lookup = SourceLookup {
        key: NaturalKey::of_payload(payload),
        since,
    };
    let listing = (ep.clone(), payload.database_name.clone());
    let page = {
        let (ep, database) = listing.clone();
        move |n| {
            let (ep, database) = (ep.clone(), database.clone());
            async move {
                let Endpoint { chroma, token, .. } = &ep;
                chroma.list_sources_page(token, &database, n).await
            }
        }
    };
    match ctx.lookups.look(listing, lookup, page).await {
        // No database, no sources in it: nothing was created there.
        Err(ChromaError::Api { status: 404, .. }) => Ok(None),
        found => found,
    }
}

/// Records a failed call in status. (A create's mark is the kernel's to clear.)
async fn fail(
    ctx: &Sources,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    failure: Failure,
) -> Result<Next, Error> {
    let retry = failure.retry;
    let state = state_of(failure);
    warn!(reason = %state.reason(), "{}", message_of(&state));
    set_status(ctx, obj, recorded, &state).await?;
    Ok(Next::Retry {
        retry,
        reason: state.reason(),
    })
}

/// The object's connection refuses it now (see [`Refusal`]): it waits for the connection, or a
/// person must act. No call is made; a recorded source is kept.
async fn refused(
    ctx: &Sources,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    blocked: Blocked,
) -> Result<Next, Error> {
    let Blocked {
        refusal, message, ..
    } = blocked;
    let (state, retry) = match refusal {
        Refusal::NotFound | Refusal::NotReady => {
            let reason = Reason::ConnectionNotReady;
            let error = None;
            (
                State::Reconciling {
                    reason,
                    message,
                    error,
                },
                Retry::Slow,
            )
        }
        Refusal::NotPermitted => {
            let reason = Reason::ConnectionNotPermitted;
            let error = None;
            (
                State::Stalled {
                    reason,
                    message,
                    error,
                },
                Retry::Slow,
            )
        }
        Refusal::Changed => {
            let reason = Reason::ConnectionChanged;
            let error = None;
            (
                State::Stalled {
                    reason,
                    message,
                    error,
                },
                Retry::OnChange,
            )
        }
    };
    let reason = state.reason();
    warn!(%reason, "{}", message_of(&state));
    set_status(ctx, obj, recorded, &state).await?;
    // The connection's watch (and the namespace's) wakes the object when what refused it
    // changes; the slow retry is a safety net.
    Ok(Next::Retry { retry, reason })
}

async fn missing_credentials(
    ctx: &Sources,
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
    ctx: &Sources,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    state: &State,
) -> Result<SyncSource, Error> {
    write_status(ctx, obj, recorded, state, Announce::Yes).await
}

/// Whether a changed `Ready` reason gets its Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    Yes,
    No,
}

/// [`set_status`], with the Event of a changed reason only when `announce` says so. The status
/// also records the reconcile-now request this reconcile handled (not a paused one's).
async fn write_status(
    ctx: &Sources,
    obj: &SyncSource,
    recorded: Option<&Recorded>,
    state: &State,
    announce: Announce,
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
    // Guarded like every other write: a status decided on a stale copy (one that has not seen
    // a recorded sourceId yet) must fail with a conflict, not erase what it never saw.
    let Some(patch) = status::patch_if_changed(&previous, &next, obj.resource_version()) else {
        return Ok(obj.clone());
    };
    let api = api_of(&ctx.client, obj);
    let stored =
        bounded(api.patch_status(&obj.name_any(), &params(), &Patch::Merge(patch))).await?;
    if let State::Stalled {
        reason, message, ..
    }
    | State::Reconciling {
        reason, message, ..
    } = state
        && announce == Announce::Yes
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

fn publish(ctx: &Sources, obj: &SyncSource, kind: Kind, reason: Reason, note: String) {
    ctx.events.publish(obj, kind, reason, note);
}
