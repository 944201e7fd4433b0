//! Pure status decisions: what a reconcile's outcome looks like in `status`, in the shape
//! kstatus (Flux, Helm 4), Argo CD health scripts and people read.
//!
//! `Ready` is always present. `Reconciling` and `Stalled` appear only while true (the
//! "abnormal-true" convention), so an object that is neither reads cleanly.

use super::Reason;
use crate::crd::{LastError, SyncSourceStatus};
use crate::kernel::connections::Via;
use serde_json::Value;

pub use crate::kernel::conditions::{READY, RECONCILING, STALLED, condition};

/// Where an object stands after a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The source exists and matches the spec.
    Ready,
    /// Work, or a retryable error, is in progress; the operator will try again by itself.
    Reconciling {
        reason: Reason,
        message: String,
        error: Option<LastError>,
    },
    /// The operator cannot go on until a person changes something.
    Stalled {
        reason: Reason,
        message: String,
        error: Option<LastError>,
    },
    /// A person paused the object: nothing is called or written until they resume it. `Ready`
    /// keeps its status, with reason `Paused`.
    Paused { message: String },
}

impl State {
    pub fn reason(&self) -> Reason {
        match self {
            State::Ready => Reason::SourceReady,
            State::Paused { .. } => Reason::Paused,
            State::Reconciling { reason, .. } | State::Stalled { reason, .. } => *reason,
        }
    }
}

/// The recorded source: its id, the fingerprint of the payload it was created from, and the
/// connection it was made through (`None`: the operator's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: String,
    pub payload_hash: Option<String>,
    pub connection: Option<String>,
}

impl Recorded {
    pub fn of(status: &SyncSourceStatus) -> Option<Self> {
        status.source_id.as_ref().map(|id| Self {
            id: id.clone(),
            payload_hash: status.payload_hash.clone(),
            connection: status.connection.clone(),
        })
    }
}

/// What `status.connection` records for a source made through `via`: nothing for the operator's
/// own settings (so that objects made before connections existed read the same).
pub fn connection_of(via: &Via) -> Option<String> {
    (*via != Via::Operator).then(|| via.to_string())
}

/// The status to write for `state` at `generation`. Conditions keep their
/// `lastTransitionTime` unless their status flips, so an unchanged outcome yields a status equal
/// to `previous`, and the caller writes nothing.
pub fn next(
    previous: &SyncSourceStatus,
    generation: i64,
    source: Option<&Recorded>,
    state: &State,
    now: jiff::Timestamp,
) -> SyncSourceStatus {
    let condition = |type_: &str, status: bool, reason: Reason, message: &str| {
        let (reason, at) = (reason.as_str(), (generation, now));
        condition(&previous.conditions, type_, status, reason, message, at)
    };
    let (conditions, last_error) = match state {
        State::Ready => {
            let id = source.map(|s| s.id.as_str()).unwrap_or_default();
            let message = format!("Chroma source {id} matches the spec");
            (
                vec![condition(READY, true, Reason::SourceReady, &message)],
                None,
            )
        }
        // Neither Reconciling (nothing is in progress) nor Stalled (nothing failed), and Ready
        // as it was: a paused Ready object stays Current to kstatus (a GitOps health check does
        // not wait on it), a paused broken one does not. Argo CD reads the annotation
        // (Suspended). The last error stays as it was.
        State::Paused { message } => {
            let was_ready = previous
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True");
            (
                vec![condition(READY, was_ready, Reason::Paused, message)],
                previous.last_error.clone(),
            )
        }
        State::Reconciling {
            reason,
            message,
            error,
        }
        | State::Stalled {
            reason,
            message,
            error,
        } => {
            let abnormal = if matches!(state, State::Stalled { .. }) {
                STALLED
            } else {
                RECONCILING
            };
            (
                vec![
                    condition(READY, false, *reason, message),
                    condition(abnormal, true, *reason, message),
                ],
                error.clone().map(Box::new),
            )
        }
    };
    // spec.sync.publishTo's condition is its own (written with spec.sync's patch): kept.
    let mut conditions = conditions;
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ == crate::source::sync::PUBLISHED)
            .cloned(),
    );
    SyncSourceStatus {
        observed_generation: Some(generation),
        source_id: source.map(|s| s.id.clone()),
        payload_hash: source.and_then(|s| s.payload_hash.clone()),
        connection: source.and_then(|s| s.connection.clone()),
        conditions,
        last_error,
        // spec.sync's own fields, written by its own patch (runs::sync).
        last_sync: previous.last_sync.clone(),
        sync_state: previous.sync_state.clone(),
        // Set by the caller, which knows what the reconcile did.
        last_handled_reconcile_at: previous.last_handled_reconcile_at.clone(),
        // The recent-runs pass's own field (see `source::recent`), kept while the source is the
        // same one.
        recent_runs: if previous.source_id == source.map(|s| s.id.clone()) {
            previous.recent_runs.clone()
        } else {
            Vec::new()
        },
    }
}

/// The patch that takes the stored status `previous` to `next` (see
/// [`crate::kernel::kube_io::status_patch`]), or `None` when they are equal: an unchanged outcome
/// costs no write (and so no watch event, no reconcile of our own). The caller names the
/// resourceVersion `previous` was read at.
pub fn patch_if_changed(
    previous: &SyncSourceStatus,
    next: &SyncSourceStatus,
    resource_version: Option<String>,
) -> Option<Value> {
    crate::kernel::kube_io::status_patch(previous, next, resource_version)
}

/// The `Ready` condition's reason, if any.
pub fn ready_reason(status: Option<&SyncSourceStatus>) -> Option<&str> {
    crate::kernel::conditions::ready_reason(&status?.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn stalled() -> State {
        State::Stalled {
            reason: Reason::SourceExists,
            message: "Source exists".into(),
            error: Some(LastError {
                http_status: Some(409),
                error: Some("Conflict".into()),
                message: "Source exists".into(),
            }),
        }
    }

    #[test]
    fn ready_has_only_a_true_ready_condition_and_no_error() {
        let rec = Recorded {
            id: "abc".into(),
            payload_hash: Some("h".into()),
            connection: Some("ClusterChromaSyncConnection/platform".into()),
        };
        let s = next(&Default::default(), 3, Some(&rec), &State::Ready, t(10));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.source_id.as_deref(), Some("abc"));
        assert_eq!(s.payload_hash.as_deref(), Some("h"));
        let connection = s.connection.as_deref();
        assert_eq!(connection, Some("ClusterChromaSyncConnection/platform"));
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].type_, READY);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].observed_generation, Some(3));
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn stalled_sets_ready_false_and_stalled_true_with_the_error() {
        let s = next(&Default::default(), 1, None, &stalled(), t(10));
        let types: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("Ready", "False", "SourceExists"),
                ("Stalled", "True", "SourceExists")
            ]
        );
        assert_eq!(s.last_error.unwrap().http_status, Some(409));
    }

    #[test]
    fn an_unchanged_outcome_is_idempotent() {
        let first = next(&Default::default(), 1, None, &stalled(), t(10));
        let again = next(&first, 1, None, &stalled(), t(99));
        assert_eq!(first, again, "same outcome later must not produce a write");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = next(&Default::default(), 1, None, &stalled(), t(10));
        let rec = Recorded {
            id: "x".into(),
            payload_hash: None,
            connection: None,
        };
        let ready = next(&first, 2, Some(&rec), &State::Ready, t(20));
        assert_eq!(ready.conditions[0].last_transition_time, Time(t(20)));
        let retry = State::Reconciling {
            reason: Reason::ServerError,
            message: "boom".into(),
            error: None,
        };
        let a = next(&first, 1, None, &retry, t(30));
        // Ready stayed False: its transition time is kept even though the reason changed.
        assert_eq!(a.conditions[0].last_transition_time, Time(t(10)));
        assert_eq!(a.conditions[0].reason, Reason::ServerError.as_str());
    }

    #[test]
    fn the_status_patch_nulls_what_the_new_status_no_longer_has() {
        // A 409 and then a timeout: the stored lastError must not keep the 409's code.
        let conflict = next(&Default::default(), 1, None, &stalled(), t(1));
        let timeout = State::Reconciling {
            reason: Reason::Timeout,
            message: "slow".into(),
            error: Some(LastError {
                http_status: None,
                error: None,
                message: "slow".into(),
            }),
        };
        let s = next(&conflict, 2, None, &timeout, t(2));
        let p = patch_if_changed(&conflict, &s, None).expect("a change");
        assert_eq!(
            p["status"]["lastError"],
            json!({"httpStatus": null, "error": null, "message": "slow"})
        );
        // A recorded source given up (a replacement): its id and hash are removed.
        let rec = Recorded {
            id: "abc".into(),
            payload_hash: Some("h".into()),
            connection: None,
        };
        let ready = next(&Default::default(), 1, Some(&rec), &State::Ready, t(1));
        let p = patch_if_changed(&ready, &conflict, None).expect("a change");
        assert_eq!(p["status"]["sourceId"], Value::Null);
        assert_eq!(p["status"]["payloadHash"], Value::Null);
        assert!(p["status"].as_object().unwrap().contains_key("sourceId"));
        assert_eq!(p["status"]["lastError"]["httpStatus"], json!(409));
    }
}

/// Properties over arbitrary stored statuses and outcomes: the status a reconcile computes is a
/// fixed point, both in memory and after the apiserver has applied its merge patch and read it
/// back, so a repeated outcome never writes.
#[cfg(test)]
mod properties {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;
    use serde_json::json;

    const REASONS: &[Reason] = &[
        Reason::SourceReady,
        Reason::SourceExists,
        Reason::InvalidSpec,
        Reason::Unauthorized,
        Reason::ServerError,
        Reason::Timeout,
        Reason::Replacing,
    ];

    // Seconds from 1970 to 2100, with nanoseconds: `now` in the operator has them, storage not.
    fn timestamp() -> impl Strategy<Value = jiff::Timestamp> {
        (0i64..4_102_444_800, 0i32..1_000_000_000)
            .prop_map(|(s, n)| jiff::Timestamp::new(s, n).unwrap())
    }

    fn last_error() -> impl Strategy<Value = LastError> {
        (of(100u16..600), of("[A-Za-z]{0,8}"), ".{0,16}").prop_map(
            |(http_status, error, message)| LastError {
                http_status,
                error,
                message,
            },
        )
    }

    fn condition() -> impl Strategy<Value = Condition> {
        (
            prop::sample::select(vec![READY, RECONCILING, STALLED, "Other"]),
            prop::sample::select(vec!["True", "False", "Unknown"]),
            prop::sample::select(REASONS),
            ".{0,12}",
            of(any::<i64>()),
            timestamp(),
        )
            .prop_map(|(type_, status, reason, message, gen_, t)| Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.as_str().to_owned(),
                message,
                observed_generation: gen_,
                last_transition_time: Time(t),
            })
    }

    /// Any status the apiserver may hold: older versions' writes, hand edits, anything.
    fn stored_status() -> impl Strategy<Value = SyncSourceStatus> {
        (
            of(any::<i64>()),
            of("[a-f0-9-]{1,36}"),
            of("[a-f0-9]{16}"),
            vec(condition(), 0..4),
            of(last_error()),
        )
            .prop_map(
                |(observed_generation, source_id, payload_hash, conditions, last_error)| {
                    SyncSourceStatus {
                        observed_generation,
                        source_id,
                        payload_hash,
                        conditions,
                        last_error: last_error.map(Box::new),
                        ..Default::default()
                    }
                },
            )
    }

    fn state() -> impl Strategy<Value = State> {
        let detail = || (prop::sample::select(REASONS), ".{0,16}", of(last_error()));
        prop_oneof![
            Just(State::Ready),
            detail().prop_map(|(reason, message, error)| State::Reconciling {
                reason,
                message,
                error
            }),
            detail().prop_map(|(reason, message, error)| State::Stalled {
                reason,
                message,
                error
            }),
        ]
    }

    fn recorded() -> impl Strategy<Value = Option<Recorded>> {
        of(
            ("[a-f0-9-]{1,36}", of("[a-f0-9]{16}")).prop_map(|(id, payload_hash)| Recorded {
                id,
                payload_hash,
                connection: None,
            }),
        )
    }

    /// RFC 7386, as the apiserver applies `Patch::Merge`: objects merge key by key, `null`
    /// removes, anything else (arrays included) replaces.
    fn apply_merge_patch(target: &mut Value, patch: &Value) {
        let Value::Object(patch) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let target = target.as_object_mut().unwrap();
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                apply_merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_computed_status_is_a_fixed_point(
            previous in stored_status(),
            generation in any::<i64>(),
            source in recorded(),
            state in state(),
            t1 in timestamp(),
            later in 0i64..10_000_000,
        ) {
            let t2 = t1 + jiff::SignedDuration::from_secs(later);
            let first = next(&previous, generation, source.as_ref(), &state, t1);
            let again = next(&first, generation, source.as_ref(), &state, t2);
            prop_assert_eq!(&again, &first);
            prop_assert_eq!(patch_if_changed(&first, &again, None), None);
        }

        #[test]
        fn the_stored_status_is_a_fixed_point(
            previous in stored_status(),
            generation in any::<i64>(),
            source in recorded(),
            state in state(),
            t1 in timestamp(),
            later in 0i64..10_000_000,
        ) {
            let first = next(&previous, generation, source.as_ref(), &state, t1);
            let Some(patch) = patch_if_changed(&previous, &first, None) else {
                // Nothing to write: the stored status already is the outcome.
                prop_assert_eq!(&first, &previous);
                return Ok(());
            };
            // What the apiserver stores and the next reconcile reads back.
            let mut stored = json!({ "status": previous });
            apply_merge_patch(&mut stored, &patch);
            let stored: SyncSourceStatus = serde_json::from_value(stored["status"].take()).unwrap();
            // The patch says everything: nothing of `previous` survives that `first` lacks.
            prop_assert_eq!(
                serde_json::to_value(&stored).unwrap(),
                serde_json::to_value(&first).unwrap()
            );
            let t2 = t1 + jiff::SignedDuration::from_secs(later);
            let again = next(&stored, generation, source.as_ref(), &state, t2);
            prop_assert_eq!(patch_if_changed(&stored, &again, None), None, "a second write");
        }
    }
}
