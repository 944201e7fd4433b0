//! Sources made or lost outside the operator: adopted (`spec.sourceId`, `onConflict: Adopt`)
//! after a read and a field-by-field comparison with the spec, or found gone from Chroma (drift,
//! reconcile-now) and created again or reported.

use super::{
    Announce, Because, Desired, Recorded, State, fail, mark_and_create, publish, set_status,
    settled, stall, write_status,
};
use crate::chroma::wire::ListedSource;
use crate::crd::{MissingPolicy, SyncSource};
use crate::kernel::Error;
use crate::kernel::connections::Endpoint;
use crate::kernel::create;
use crate::kernel::events::Kind;
use crate::kernel::failure::{self, Failure, Retry};
use crate::source::payload::{self, NaturalKey};
use crate::source::{Next, Reason, Sources};
use tracing::{info, warn};

/// The recorded source is gone from Chroma (deleted outside the operator). It is created again
/// unless the spec says to report it (`onSourceMissing: Report`) or names it (`sourceId`). The
/// recorded id is cleared first, so that a crash after the create leaves a mark and no stale id,
/// and recovery finds the new source as it would any other.
pub(super) async fn missing(
    ctx: &Sources,
    obj: SyncSource,
    rec: &Recorded,
    ep: &Endpoint,
    desired: &Desired,
) -> Result<Next, Error> {
    let gone = &rec.id;
    let kept = if obj.spec.source_id.is_some() {
        Some(
            "spec.sourceId names it, so it is not created again; remove sourceId to let the operator create a new source, or delete this object",
        )
    } else if obj.spec.on_source_missing == MissingPolicy::Report {
        Some(
            "onSourceMissing: Report leaves it so; set onSourceMissing: Recreate to create it again, or delete this object",
        )
    } else {
        None
    };
    if let Some(what_to_do) = kept {
        ctx.metrics.source_missing("reported");
        let state = State::Stalled {
            reason: Reason::SourceMissing,
            message: format!(
                "source {gone} no longer exists in Chroma (deleted outside the operator); {what_to_do}"
            ),
            error: None,
        };
        set_status(ctx, &obj, Some(rec), &state).await?;
        return Ok(Next::Retry {
            retry: Retry::OnChange,
            reason: Reason::SourceMissing,
        });
    }
    ctx.metrics.source_missing("recreated");
    warn!(source_id = %gone, "the source no longer exists in Chroma; creating it again");
    let state = State::Reconciling {
        reason: Reason::SourceMissing,
        message: format!("source {gone} no longer exists in Chroma; creating it again"),
        error: None,
    };
    // No Event here: the one Event of a recreate names both ids, once the new one exists.
    let obj = write_status(ctx, &obj, None, &state, Announce::No).await?;
    mark_and_create(ctx, &obj, ep, desired, Because::Missing(gone.clone())).await
}

/// `spec.sourceId` names the source to manage: it is read, compared with the spec, and recorded
/// if it matches. Nothing that changes a source is ever called for it here.
pub(super) async fn adopt_named(
    ctx: &Sources,
    obj: &SyncSource,
    ep: &Endpoint,
    desired: &Desired,
    recorded: Option<&Recorded>,
    id: &str,
) -> Result<Next, Error> {
    if let Some(rec) = recorded.filter(|rec| rec.id != id) {
        let other = &rec.id;
        let message = format!(
            "status records source {other}, but spec.sourceId names {id}: remove spec.sourceId to keep managing {other}, or delete this object (its deletionPolicy applies to {other}) and declare {id} in a new one"
        );
        return stall(ctx, obj, recorded, Reason::SourceMismatch, message).await;
    }
    adopt(ctx, obj, ep, desired, recorded, id, "spec.sourceId").await
}

/// Reads source `id`, and records it when it matches the spec and no other object manages it;
/// otherwise stalls, naming what differs. `how` says where the id came from, for messages.
async fn adopt(
    ctx: &Sources,
    obj: &SyncSource,
    ep: &Endpoint,
    desired: &Desired,
    recorded: Option<&Recorded>,
    id: &str,
    how: &str,
) -> Result<Next, Error> {
    if let Some(owner) = ctx.claimed_by_another(obj, id) {
        let message = format!(
            "source {id} ({how}) is already managed by SyncSource {owner}; a source has one owner"
        );
        return stall(ctx, obj, recorded, Reason::SourceExists, message).await;
    }
    let held = match ep.chroma.get_source(&ep.token, id).await {
        Ok(Some(held)) => held,
        Ok(None) => {
            let message = format!("source {id} ({how}) does not exist in Chroma");
            return stall(ctx, obj, recorded, Reason::SourceMissing, message).await;
        }
        Err(e) => {
            let failure = failure::classify("reading the source to adopt", &e);
            return fail(ctx, obj, recorded, failure).await;
        }
    };
    let differences = payload::differences(&desired.payload, &held);
    if !differences.is_empty() {
        let listed: Vec<String> = differences.iter().map(ToString::to_string).collect();
        let message = format!(
            "source {id} ({how}) differs from the spec in {}; nothing was changed in Chroma: make the spec match the source",
            listed.join("; ")
        );
        return stall(ctx, obj, recorded, Reason::SourceMismatch, message).await;
    }
    // The finalizer before the record: a recorded source is always deleted (or retained) with
    // its object.
    let obj = create::with_finalizer(&ctx.client, obj).await?;
    info!(source_id = %id, how, "adopted an existing source");
    let obj = set_status(
        ctx,
        &obj,
        Some(&desired.recorded(id.to_owned(), &ep.via)),
        &State::Ready,
    )
    .await?;
    publish(
        ctx,
        &obj,
        Kind::Normal,
        Reason::Adopted,
        format!("Adopted existing source {id} ({how})"),
    );
    settled(ctx, &obj, id).await
}

/// After a 409 with `onConflict: Adopt`: the existing source with the spec's natural key is
/// found by listing the database, then adopted as [`adopt`] says.
pub(super) async fn adopt_existing(
    ctx: &Sources,
    obj: &SyncSource,
    ep: &Endpoint,
    desired: &Desired,
    conflict: Failure,
) -> Result<Next, Error> {
    let key = NaturalKey::of_payload(&desired.payload);
    let ours = |s: &ListedSource| NaturalKey::of_listed(s).as_ref() == Some(&key);
    let database = &desired.payload.database_name;
    let found = ep
        .chroma
        .list_sources_while(&ep.token, database, |page| !page.iter().any(ours))
        .await;
    match found.map(|listed| listed.into_iter().find(ours)) {
        Ok(Some(existing)) => {
            adopt(
                ctx,
                obj,
                ep,
                desired,
                None,
                &existing.id,
                "onConflict: Adopt",
            )
            .await
        }
        // Gone again meanwhile, or not listed: report the conflict as it was.
        Ok(None) => fail(ctx, obj, None, conflict).await,
        Err(e) => {
            let failure = failure::classify("looking for the existing source to adopt", &e);
            fail(ctx, obj, None, failure).await
        }
    }
}
