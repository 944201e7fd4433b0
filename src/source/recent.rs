//! The runs of S3 sources, whoever started them: at the drift interval, one call per S3 source at
//! rest (the newest page of its invocations) puts the newest [`RECENT_RUNS`] in
//! `status.recentRuns`, each with its origin: `operator` when a SyncRun of the namespace records
//! it (or is creating it: a create-pending mark on its key), else `service` (Chroma Sync's own
//! auto-sync, the dashboard, another client). Invocations first seen are counted by origin
//! (`invocations_seen_total`); the status is the memory, so a restart counts nothing twice.
//! Nothing is written when nothing changed. GitHub and web sources cost nothing here: their runs
//! are only ever started by someone's request.

use super::Sources;
use super::drift::{Scope, pace, recorded_at_rest};
use crate::chroma::wire::{Job, JobStatus};
use crate::crd::run::SyncRun;
use crate::crd::{RecentRun, RunOrigin, S3AutoSync, SyncSource};
use crate::kernel::create::{lookup_since, pending_mark};
use crate::kernel::kube_io::{bounded, params};
use crate::run::decide::{made_since, phase_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How many of a source's newest invocations its status shows.
pub const RECENT_RUNS: usize = 5;

/// What the SyncRuns of a source claim: the invocations they record, and the object keys they
/// are creating an invocation for (a mark, no id yet) with the oldest time such a creation may
/// have.
#[derive(Debug, Default)]
pub struct Claims {
    pub recorded: HashSet<String>,
    pub creating: Vec<(Option<String>, jiff::Timestamp)>,
}

impl Claims {
    /// The claims of `runs` on SyncSource `source` (name) and its source `source_id`.
    pub fn of<'a>(
        runs: impl IntoIterator<Item = &'a SyncRun>,
        source: &str,
        source_id: &str,
    ) -> Self {
        let mut claims = Self::default();
        for run in runs {
            let status = run.status.as_ref();
            match status.and_then(|s| s.invocation_id.as_ref()) {
                Some(id) if status.and_then(|s| s.source_id.as_deref()) == Some(source_id) => {
                    claims.recorded.insert(id.clone());
                }
                Some(_) => {}
                None if run.spec.source_ref.name == source => {
                    if let Some(mark) = pending_mark(run) {
                        claims
                            .creating
                            .push((run.spec.object_key.clone(), lookup_since(mark)));
                    }
                }
                None => {}
            }
        }
        claims
    }

    fn origin(&self, job: &Job) -> RunOrigin {
        let creating = self
            .creating
            .iter()
            .any(|(key, since)| *key == job.metadata.object_key && made_since(job, *since));
        if self.recorded.contains(&job.id) || creating {
            RunOrigin::Operator
        } else {
            RunOrigin::Service
        }
    }
}

/// The newest [`RECENT_RUNS`] of `listed` (newest first, as the service lists them), as the
/// status shows them.
pub fn recent_runs(listed: &[Job], claims: &Claims) -> Vec<RecentRun> {
    listed
        .iter()
        .take(RECENT_RUNS)
        .map(|job| RecentRun {
            invocation_id: job.id.clone(),
            phase: phase_of(&job.status),
            object_key: job.metadata.object_key.clone(),
            created_at: job.created_at.map(Time),
            finished_at: match &job.status {
                JobStatus::Complete { finished_at, .. } => finished_at.map(Time),
                _ => None,
            },
            origin: claims.origin(job),
        })
        .collect()
}

/// The origins of the runs in `next` that `previous` did not show.
pub fn newly_seen<'a>(
    previous: &'a [RecentRun],
    next: &'a [RecentRun],
) -> impl Iterator<Item = RunOrigin> + 'a {
    next.iter()
        .filter(|run| {
            !previous
                .iter()
                .any(|p| p.invocation_id == run.invocation_id)
        })
        .map(|run| run.origin)
}

/// One pass over the S3 sources at rest that Chroma Sync also runs by itself (`autoSync` other
/// than `none`: the others' runs are all SyncRuns, which Kubernetes shows already), its calls
/// spread over half of `interval`.
pub(super) async fn sweep(ctx: &Sources, scopes: &[Scope], interval: Duration) {
    let objects: Vec<Arc<SyncSource>> = scopes
        .iter()
        .flat_map(|scope| scope.store.state())
        .filter(|o| {
            let auto = o.spec.s3.as_ref().map(|s| s.auto_sync_mode());
            auto.is_some_and(|mode| mode != S3AutoSync::None) && recorded_at_rest(o).is_some()
        })
        .collect();
    if objects.is_empty() {
        return;
    }
    let gap = pace(interval, objects.len());
    // The SyncRuns of each namespace, read once a pass.
    let mut runs: BTreeMap<String, Vec<SyncRun>> = BTreeMap::new();
    for obj in &objects {
        let ns = obj.namespace().unwrap_or_default();
        if !runs.contains_key(&ns) {
            let api: Api<SyncRun> = Api::namespaced(ctx.client.clone(), &ns);
            match bounded(api.list(&Default::default())).await {
                Ok(list) => {
                    runs.insert(ns.clone(), list.items);
                }
                Err(e) => {
                    warn!(namespace = %ns, error = %e, "cannot read the SyncRuns; recent runs wait for the next interval");
                    continue;
                }
            }
        }
        if let Err(e) = refresh(ctx, obj, &runs[&ns]).await {
            warn!(name = %obj.name_any(), error = %e, "recent runs not refreshed; trying again next interval");
        }
        tokio::time::sleep(gap).await;
    }
    debug!(sources = objects.len(), "recent runs refreshed");
}

/// One S3 source's recent runs: one call, and a status write only when they changed.
async fn refresh(ctx: &Sources, obj: &SyncSource, runs: &[SyncRun]) -> Result<(), String> {
    let (Some(source_id), Some(endpoint)) = (recorded_at_rest(obj), ctx.peek_endpoint(obj)) else {
        return Ok(());
    };
    let listed = endpoint
        .chroma
        .list_invocations_page(&endpoint.token, source_id, 0)
        .await
        .map_err(|e| e.to_string())?;
    let claims = Claims::of(runs, &obj.name_any(), source_id);
    let next = recent_runs(&listed, &claims);
    let previous = obj
        .status
        .as_ref()
        .map(|s| s.recent_runs.as_slice())
        .unwrap_or_default();
    if next == previous {
        return Ok(());
    }
    let api: Api<SyncSource> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = Patch::Merge(json!({"status": {"recentRuns": next}}));
    bounded(api.patch_status(&obj.name_any(), &params(), &patch))
        .await
        .map_err(|e| e.to_string())?;
    for origin in newly_seen(previous, &next) {
        ctx.metrics.invocation_seen(origin.as_str());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::wire::JobMetadata;
    use crate::crd::run::RunPhase;

    fn job(id: &str, at: i64, key: &str, status: JobStatus) -> Job {
        Job {
            id: id.into(),
            status,
            created_at: Some(jiff::Timestamp::from_second(at).unwrap()),
            source_id: Some("src".into()),
            metadata: JobMetadata {
                object_key: Some(key.into()),
                ..Default::default()
            },
        }
    }

    fn run(spec: serde_json::Value, status: serde_json::Value, mark: Option<&str>) -> SyncRun {
        let mut annotations = serde_json::Map::new();
        if let Some(at) = mark {
            annotations.insert(crate::crd::CREATE_PENDING_ANNOTATION.into(), json!(at));
        }
        serde_json::from_value(
            json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
            "metadata": {"name": "r", "namespace": "n", "annotations": annotations},
            "spec": spec, "status": status}),
        )
        .unwrap()
    }

    #[test]
    fn the_newest_runs_are_shown_with_who_started_them() {
        let done = JobStatus::Complete {
            finished_at: Some(jiff::Timestamp::from_second(1_500).unwrap()),
            duration_ms: Some(3),
        };
        let listed: Vec<Job> = (0..7)
            .map(|i| {
                job(
                    &format!("j{i}"),
                    2_000 - i,
                    &format!("k{i}"),
                    JobStatus::Pending,
                )
            })
            .chain([job("done", 1_000, "d", done)])
            .collect();
        let runs = [
            // Records j1 on this source; another source's j2 does not count.
            run(
                json!({"sourceRef": {"name": "files"}, "objectKey": "k1"}),
                json!({"invocationId": "j1", "sourceId": "src"}),
                None,
            ),
            run(
                json!({"sourceRef": {"name": "other"}, "objectKey": "k2"}),
                json!({"invocationId": "j2", "sourceId": "elsewhere"}),
                None,
            ),
            // Creating k3 since before j3 was made: its answer is not recorded yet.
            run(
                json!({"sourceRef": {"name": "files"}, "objectKey": "k3"}),
                json!({}),
                Some("1970-01-01T00:33:00Z"),
            ),
        ];
        let claims = Claims::of(&runs, "files", "src");
        let recent = recent_runs(&listed, &claims);
        let shown: Vec<(&str, RunOrigin)> = recent
            .iter()
            .map(|r| (r.invocation_id.as_str(), r.origin))
            .collect();
        use RunOrigin::{Operator, Service};
        assert_eq!(
            shown,
            [
                ("j0", Service),
                ("j1", Operator),
                ("j2", Service),
                ("j3", Operator),
                ("j4", Service)
            ]
        );
        assert_eq!(recent[0].phase, Some(RunPhase::Pending));
        assert_eq!(recent[0].object_key.as_deref(), Some("k0"));

        let all = recent_runs(&listed[5..], &Claims::default());
        assert_eq!(all[2].invocation_id, "done");
        assert_eq!(all[2].phase, Some(RunPhase::Complete));
        assert_eq!(
            all[2].finished_at.as_ref().map(|t| t.0.as_second()),
            Some(1_500)
        );

        // Only what the previous status did not show is new.
        let later = recent_runs(&listed[..4], &claims);
        let seen: Vec<RunOrigin> = newly_seen(&recent[2..], &later).collect();
        assert_eq!(seen, [Service, Operator]);
    }
}
