//! The crash-safe create, written once for every kind whose create call is not idempotent (a
//! SyncSource's source, a SyncRun's invocation: the service takes no client-chosen id and no
//! idempotency key).
//!
//! The protocol:
//! 1. **Mark, then call.** Before the create call the finalizer and the create-pending mark go on
//!    the object in one write guarded by its resourceVersion: a stale cache fails there with a
//!    conflict, so two workers can never both create.
//! 2. **Call, then record.** The id the call returns goes into status ([`record`]); a recorded
//!    id supersedes the mark.
//! 3. **A definite "no" clears the mark** (the call certainly created nothing), so no later
//!    recovery can mistake someone else's creation for the object's own.
//! 4. **An ambiguous answer keeps the mark**, and before anything else is created (or the
//!    finalizer released) the creation is looked for: made no earlier than the mark, less
//!    [`CLOCK_SKEW_ALLOWANCE`] ([`recover`]).
//!
//! A kind implements [`Marked`] (its finalizer, its recorded id) and, per create, [`Creation`]
//! (the call, the lookup, the status write); [`mark_and_create`] and [`recover`] do the rest.

use super::failure::{self, Failure};
use super::kube_io::{api_of, bounded, params};
use super::{Context, Error};
use crate::chroma::ChromaError;
use crate::crd::CREATE_PENDING_ANNOTATION;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Patch;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::time::Duration;
use tracing::info;

/// A creation made up to this long before its object's create-pending mark still counts as the
/// object's own: it allows for clock skew between the operator and the service.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

/// How long the first lookup for an unrecorded create waits for others of its listing before
/// their pass lists. After a restart the reconciles of the marked objects start within it, so
/// they share one pass instead of a listing each; later lookups wait only for the pass that is
/// listing (see [`crate::chroma::shared`]). A lone lookup pays only this wait.
pub const LOOKUP_GATHER: Duration = Duration::from_millis(100);

/// Conflicts a recording write, or the finalizer's release, meets before it gives up and leaves
/// the outcome to the next reconcile.
const CONFLICT_REWRITES: u32 = 10;

/// An object whose create call the protocol guards.
pub trait Marked:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The finalizer that keeps the object until its creation is dealt with.
    const FINALIZER: &'static str;

    /// What a message calls the creation ("source", "invocation").
    const WHAT: &'static str;

    /// The id of the creation status records, if any.
    fn recorded_id(&self) -> Option<&str>;
}

/// One create, as a kind makes it.
pub trait Creation: Sync {
    type Object: Marked;

    /// The create call; the id it made.
    fn create(&self) -> impl Future<Output = Result<String, ChromaError>> + Send;

    /// The creation an unrecorded create of `obj` made no earlier than `since`, if any.
    fn find_unrecorded(
        &self,
        obj: &Self::Object,
        since: jiff::Timestamp,
    ) -> impl Future<Output = Result<Option<String>, ChromaError>> + Send;

    /// Writes `id` into `obj`'s status; the object as stored after it.
    fn record(
        &self,
        obj: Self::Object,
        id: &str,
    ) -> impl Future<Output = Result<Self::Object, Error>> + Send;
}

/// What [`recover`] found.
pub enum Recovered<K> {
    /// No mark, or nothing made since it: go on and create.
    Nothing,
    /// The creation an earlier attempt made, now recorded; `obj` as stored.
    Found { obj: K, id: String },
    /// The lookup failed: nothing may be created until it succeeds.
    Unknown(Failure),
}

/// An earlier attempt may have created without recording it: a mark and no recorded id. Such a
/// creation is looked for and, if found, recorded.
pub async fn recover<C: Creation>(
    client: &Client,
    creation: &C,
    obj: &C::Object,
) -> Result<Recovered<C::Object>, Error> {
    let Some(marked_at) = pending_mark(obj) else {
        return Ok(Recovered::Nothing);
    };
    match creation.find_unrecorded(obj, lookup_since(marked_at)).await {
        Ok(Some(id)) => {
            info!(id = %id, "found the {} of an unrecorded create; adopting it", <C::Object as Marked>::WHAT);
            let obj = record(client, obj, |current| creation.record(current, &id)).await?;
            Ok(Recovered::Found { obj, id })
        }
        Ok(None) => Ok(Recovered::Nothing),
        Err(e) => {
            let action = format!("looking for an unrecorded {}", <C::Object as Marked>::WHAT);
            Ok(Recovered::Unknown(failure::classify(&action, &e)))
        }
    }
}

/// What [`mark_and_create`] made of the call.
pub enum Created<K> {
    /// The call made `id`; `stored` is the object after the write that records it (or why that
    /// write failed: the object may be gone, with the creation made for it).
    Made {
        id: String,
        stored: Result<K, Error>,
    },
    /// The call failed; `obj` is as stored, its mark gone if the failure created nothing.
    Failed {
        obj: K,
        error: ChromaError,
        failure: Failure,
    },
}

/// The durable mark, then the one create call, then its id in status.
pub async fn mark_and_create<C: Creation>(
    ctx: &Context,
    creation: &C,
    obj: &C::Object,
) -> Result<Created<C::Object>, Error> {
    if ctx.is_stopping() {
        return Err(Error::ShuttingDown);
    }
    let now = jiff::Timestamp::now();
    let obj = metadata_write(&ctx.client, obj, Finalizer::Keep, Some(now)).await?;
    match creation.create().await {
        Ok(id) => {
            info!(id = %id, "created the {}", <C::Object as Marked>::WHAT);
            let stored = record(&ctx.client, &obj, |current| creation.record(current, &id)).await;
            Ok(Created::Made { id, stored })
        }
        Err(error) => {
            let failure = failure::classify(
                &format!("creating the {}", <C::Object as Marked>::WHAT),
                &error,
            );
            let obj = if failure.nothing_created {
                clear_mark(&ctx.client, &obj).await?
            } else {
                obj
            };
            Ok(Created::Failed {
                obj,
                error,
                failure,
            })
        }
    }
}

/// Writes what a create made with `write`. The write is guarded by resourceVersion, so a client
/// that keeps writing the object (labels, say) can fail it again and again; each conflict reads
/// the object afresh and writes again at once while the fresh copy is still the object whose
/// create was made and records nothing. Deciding afresh instead would look the creation up again,
/// a window too wide to ever write in under such a writer (seen in
/// `conflicts_from_a_busy_writer_cost_no_duplicate_and_no_stuck_object`). Anything else is the
/// full decision's to make: the conflict is the answer.
pub async fn record<K, T, W>(
    client: &Client,
    obj: &K,
    mut write: impl FnMut(K) -> W,
) -> Result<T, Error>
where
    K: Marked,
    W: Future<Output = Result<T, Error>>,
{
    let api = api_of(client, obj);
    let name = obj.name_any();
    let mut current = obj.clone();
    let mut attempt = 0;
    loop {
        match write(current).await {
            Err(e) if e.is_conflict() && attempt < CONFLICT_REWRITES => {
                attempt += 1;
                match bounded(api.get_opt(&name)).await {
                    Ok(Some(fresh))
                        if same_create(obj, &fresh) && fresh.recorded_id().is_none() =>
                    {
                        current = fresh
                    }
                    _ => return Err(e),
                }
            }
            written => return written,
        }
    }
}

/// Is `fresh` still the object whose create `decided` made: the same object at the same
/// generation with the same create-pending mark, not being deleted?
fn same_create<K: Resource>(decided: &K, fresh: &K) -> bool {
    let mark = |o: &K| o.annotations().get(CREATE_PENDING_ANNOTATION).cloned();
    fresh.uid() == decided.uid()
        && fresh.meta().generation == decided.meta().generation
        && fresh.meta().deletion_timestamp.is_none()
        && mark(fresh).is_some()
        && mark(fresh) == mark(decided)
}

/// Removes the finalizer once the creation is dealt with. A conflict (another writer touched the
/// object) re-reads it and writes again, instead of failing the reconcile, which would run the
/// whole cleanup again: a second delete or cancel call and a second Event.
pub async fn release_finalizer<K: Marked>(client: &Client, obj: &K) -> Result<(), Error> {
    let api = api_of(client, obj);
    let mut current = obj.clone();
    let mut conflicts = 0;
    loop {
        match metadata_write(client, &current, Finalizer::Release, None).await {
            Err(e) if e.is_conflict() && conflicts < CONFLICT_REWRITES => {
                conflicts += 1;
                match bounded(api.get_opt(&obj.name_any())).await {
                    Ok(Some(fresh)) if fresh.uid() == obj.uid() && has_finalizer(&fresh) => {
                        current = fresh
                    }
                    Ok(_) => return Ok(()), // gone (or a namesake), or released already
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.is_not_found() => return Ok(()),
            result => return result.map(|_| ()),
        }
    }
}

/// The object with the finalizer on: as it is, or after the guarded write that adds it.
pub async fn with_finalizer<K: Marked>(client: &Client, obj: &K) -> Result<K, Error> {
    if has_finalizer(obj) {
        return Ok(obj.clone());
    }
    metadata_write(client, obj, Finalizer::Keep, None).await
}

/// Removes the create-pending mark: nothing is left for a lookup to find.
pub async fn clear_mark<K: Marked>(client: &Client, obj: &K) -> Result<K, Error> {
    let patch = json!({ "metadata": { "annotations": { CREATE_PENDING_ANNOTATION: null } } });
    let api = api_of(client, obj);
    bounded(api.patch(&obj.name_any(), &params(), &Patch::Merge(patch))).await
}

pub fn has_finalizer<K: Marked>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == K::FINALIZER)
}

/// The time of the create-pending mark, if there is one.
pub fn pending_mark<K: Resource>(obj: &K) -> Option<jiff::Timestamp> {
    obj.annotations()
        .get(CREATE_PENDING_ANNOTATION)
        .and_then(|v| v.parse().ok())
}

/// The oldest creation a lookup for a create marked at `marked_at` may take as its own.
pub fn lookup_since(marked_at: jiff::Timestamp) -> jiff::Timestamp {
    marked_at - CLOCK_SKEW_ALLOWANCE
}

/// What a metadata write does with the kind's finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finalizer {
    Keep,
    Release,
}

/// Sets or removes the finalizer, and sets the create-pending mark to `mark`, in one write that
/// fails with a conflict if the object changed since it was read. The answer is the whole stored
/// object, status included: the newest view to go on from.
async fn metadata_write<K: Marked>(
    client: &Client,
    obj: &K,
    finalizer: Finalizer,
    mark: Option<jiff::Timestamp>,
) -> Result<K, Error> {
    let mut finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != K::FINALIZER)
        .cloned()
        .collect();
    if finalizer == Finalizer::Keep {
        finalizers.push(K::FINALIZER.to_owned());
    }
    let mut metadata = json!({
        "resourceVersion": obj.resource_version(),
        "finalizers": finalizers,
    });
    if let Some(at) = mark {
        metadata["annotations"] = json!({ CREATE_PENDING_ANNOTATION: at.to_string() });
    }
    let patch = Patch::Merge(json!({ "metadata": metadata }));
    let api = api_of(client, obj);
    bounded(api.patch(&obj.name_any(), &params(), &patch)).await
}
