//! Reading a SyncSource's status conditions.

use chroma_sync_operator::crd::SyncSource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn find<'a>(o: &'a SyncSource, type_: &str) -> Option<&'a Condition> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `(status, reason, message)` of the Ready condition.
pub fn ready(o: &SyncSource) -> Option<(String, String, String)> {
    find(o, "Ready").map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The status of condition `type_`.
pub fn condition(o: &SyncSource, type_: &str) -> Option<String> {
    find(o, type_).map(|c| c.status.clone())
}
