//! The conditions every kind writes, in the shape kstatus (Flux, Helm 4), Argo CD health scripts
//! and people read: `Ready` always; `Reconciling` and `Stalled` only while true (the
//! "abnormal-true" convention), so an object that is neither reads cleanly.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// One `metav1.Condition` at `(generation, now)`. Its `lastTransitionTime` stays as in
/// `previous` unless its status flips, so an unchanged outcome yields an equal condition.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    (generation, now): (i64, jiff::Timestamp),
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: Some(generation),
        last_transition_time,
    }
}

/// The `Ready` condition's reason, if any.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str())
}

/// Whether `Ready` is `True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}
