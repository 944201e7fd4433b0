//! Faults and what they leave: Chroma faults on creates alone; objects created and deleted while
//! a fault acts (the fault tests: chaos, chroma_faults, kube_faults), waiting for them to settle,
//! and the end state and Chroma cost checked after.

use super::{DATABASE, Env, ready, wait_for};
use chroma_sync_standin::{Faults, StandIn};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `faults` on create calls alone; the other endpoints answer normally.
pub fn on_creates(faults: Faults) -> Faults {
    Faults {
        endpoints: vec!["create_source".into()],
        ..faults
    }
}

/// The objects a churning fault test has made so far: the live ones and the deleted ones.
#[derive(Default)]
pub struct Churn {
    pub live: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
}

impl Churn {
    /// Creates `names` (GitHub sources `{repos}/{name}`), then deletes each live object with
    /// probability `p`, some before they are Ready. One random draw per live object, in name
    /// order, so a seed makes the same choices every run.
    pub async fn round(
        &mut self,
        env: &Env,
        names: Vec<String>,
        repos: &str,
        p: f64,
        rng: &mut impl rand::RngExt,
    ) {
        env.create_github(&names, repos).await;
        self.live.extend(names);
        let doomed: Vec<String> = self
            .live
            .iter()
            .filter(|_| rng.random_bool(p))
            .cloned()
            .collect();
        futures::future::join_all(doomed.iter().map(|n| env.delete(n))).await;
        for n in doomed {
            self.live.remove(&n);
            self.deleted.insert(n);
        }
    }
}

/// Waits until every object in `live` is Ready at its generation with a recorded source, and
/// every object in `deleted` is gone; their source ids by name.
pub async fn settle(
    env: &Env,
    live: &BTreeSet<String>,
    deleted: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<String, String> {
    wait_for("every object to settle", timeout, || async {
        let list = env.api().list(&Default::default()).await.ok()?;
        let mut ids = BTreeMap::new();
        for o in &list.items {
            let name = o.name_any();
            if deleted.contains(&name) {
                return None; // still finalizing
            }
            let ready = ready(o).is_some_and(|r| r.0 == "True");
            let current = o.status.as_ref()?.observed_generation == o.metadata.generation;
            if !(ready && current) {
                return None;
            }
            ids.insert(name, o.status.as_ref()?.source_id.clone()?);
        }
        (ids.len() == live.len()).then_some(ids)
    })
    .await
}

/// Exactly one source per live object (the one its status records), none for deleted objects,
/// none without an object. Sources are matched to objects by repository `{prefix}/{name}`.
pub fn assert_one_source_each(
    env: &Env,
    prefix: &str,
    recorded: &BTreeMap<String, String>,
    deleted: &BTreeSet<String>,
) {
    let mut by_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, body) in env.standin.sources(DATABASE) {
        let repo = body["github"]["repository"].as_str().unwrap_or_default();
        if let Some(name) = repo.strip_prefix(&format!("{prefix}/")) {
            by_object.entry(name.to_owned()).or_default().push(id);
        }
    }
    for (name, id) in recorded {
        assert_eq!(
            by_object.get(name),
            Some(&vec![id.clone()]),
            "{name}: exactly one source, the one in its status"
        );
    }
    for name in deleted {
        assert_eq!(
            by_object.get(name),
            None,
            "{name} was deleted; so is its source"
        );
    }
    assert_eq!(
        by_object.len(),
        recorded.len(),
        "no source without an object"
    );
}

/// Chroma calls beyond the floor, as `(floor, extra)`. The floor is one POST per source that
/// was created and one DELETE per source that is gone again (an object deleted before its
/// source was created needs neither); every list and get call is beyond it.
pub fn calls_beyond_floor(standin: &StandIn) -> (u64, i64) {
    let calls = |endpoint| standin.calls(endpoint, "*");
    let all = [
        "create_source",
        "delete_source",
        "list_sources",
        "get_source",
    ]
    .into_iter()
    .map(calls)
    .sum::<u64>();
    let committed = standin.created_total();
    let removed = committed.saturating_sub(standin.sources(DATABASE).len() as u64);
    let floor = committed + removed;
    (floor, all as i64 - floor as i64)
}
