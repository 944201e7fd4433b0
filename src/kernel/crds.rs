//! Deleting a kind's CustomResourceDefinition never deletes data. The apiserver answers a CRD's
//! deletion by deleting every object of the kind (GitOps pruning a CRD does that); the finalizers
//! then hold each object, and its cleanup would delete its source (or cancel its run) in Chroma
//! Sync: every source lost. So before a cleanup that would call the service, the driver asks
//! [`Crds::deletion`] whether the object's own CRD is being deleted (it has a deletionTimestamp,
//! or is gone); if so the finalizer is released with no call, and an Event and a log line say so.
//!
//! The CRD gets its deletionTimestamp before the apiserver deletes the objects, but the CRD watch
//! and the object watch are different streams and may arrive out of order. So:
//! - a watch of each kind's CRD (metadata only, one name) answers when it already saw the CRD
//!   being deleted since before the object was created ([`by_watch`]);
//! - otherwise a GET of the CRD decides ([`by_read`]), one that *started after* the object's
//!   deletion was observed: an object deleted because its CRD is, is deleted after the CRD's
//!   deletionTimestamp was written, and a GET (a quorum read) started after seeing that object's
//!   deletion sees it too. The GETs are shared ([`Coalesced`]): every deletion observed before a
//!   GET starts waits for that GET, so deleting 10,000 objects costs a few GETs, not 10,000.

use super::Error;
use super::kube_io::bounded;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};

/// What the watch last said of a CRD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Seen {
    /// Not listed yet (or the watch cannot list: RBAC, the apiserver away).
    #[default]
    Unknown,
    /// Listed, and not there.
    Absent,
    /// There; being deleted since then, if it is.
    Present {
        deleting_since: Option<jiff::Timestamp>,
    },
}

/// What a GET of a CRD found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Gone,
    Present {
        deleting: bool,
    },
    /// It could not be read (the error, for the log).
    Failed(String),
}

/// What an object's deletion does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The object alone is deleted: its cleanup runs (and deletes its source).
    Cleanup,
    /// Its CRD is being deleted: the finalizer goes with no call to the service.
    Keep,
}

/// The watch's answer for an object created at `created`, if it can give one; `None`: read
/// the CRD. Only "being deleted" is trusted, and only for an object created before that
/// deletion started: a CRD being deleted never stops being deleted, and no object can be created
/// under it, so the object belongs to that CRD (not to one re-created since, which the watch may
/// not have seen yet). Everything else may be stale: the object's deletion may be newer than
/// what the watch has shown.
pub fn by_watch(seen: &Seen, created: Option<jiff::Timestamp>) -> Option<Deletion> {
    match seen {
        Seen::Present {
            deleting_since: Some(since),
        } if created.is_some_and(|c| c < *since) => Some(Deletion::Keep),
        _ => None,
    }
}

/// The answer of a GET that started after the object's deletion was observed. A CRD that cannot
/// be read gives no answer: the deletion waits and is asked again (see [`Crds::deletion`]).
pub fn by_read(read: &Read) -> Result<Deletion, String> {
    match read {
        Read::Gone | Read::Present { deleting: true } => Ok(Deletion::Keep),
        Read::Present { deleting: false } => Ok(Deletion::Cleanup),
        Read::Failed(why) => Err(why.clone()),
    }
}

/// The name of `K`'s CRD: `<plural>.<group>`.
pub fn name_of<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}

/// The project's CRDs as the deletions ask about them: one entry per CRD name.
pub struct Crds {
    client: Client,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

#[derive(Default)]
struct Entry {
    seen: Mutex<Seen>,
    reads: Coalesced<Read>,
    watched: std::sync::atomic::AtomicBool,
}

impl Crds {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            entries: Mutex::default(),
        }
    }

    fn entry(&self, name: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("CRD entries");
        entries.entry(name.to_owned()).or_default().clone()
    }

    /// Starts watching `K`'s CRD (metadata only, by name), unless it is watched already; the
    /// task runs until aborted.
    pub fn watch<K: Resource<DynamicType = ()>>(&self) -> Option<tokio::task::JoinHandle<()>> {
        let name = name_of::<K>();
        let entry = self.entry(&name);
        if entry
            .watched
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return None;
        }
        let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        Some(tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().boxed();
            let mut listed = false;
            while let Some(event) = events.next().await {
                let seen = match event {
                    Ok(watcher::Event::Init) => {
                        listed = false;
                        continue;
                    }
                    Ok(watcher::Event::InitApply(crd) | watcher::Event::Apply(crd)) => {
                        listed = true;
                        Seen::Present {
                            deleting_since: crd.metadata.deletion_timestamp.map(|t| t.0),
                        }
                    }
                    Ok(watcher::Event::InitDone) if listed => continue,
                    Ok(watcher::Event::InitDone | watcher::Event::Delete(_)) => Seen::Absent,
                    Err(e) => {
                        warn!(crd = %name, error = %e, "watching the CRD failed; retrying with backoff");
                        continue;
                    }
                };
                debug!(crd = %name, ?seen, "CRD seen");
                *entry.seen.lock().expect("CRD seen") = seen;
            }
        }))
    }

    /// Sets what the watch of `crd` says (tests: a watch ahead of or behind the objects').
    #[cfg(test)]
    pub fn saw(&self, crd: &str, seen: Seen) {
        *self.entry(crd).seen.lock().expect("CRD seen") = seen;
    }

    /// Whether `obj`, being deleted, goes alone ([`Deletion::Cleanup`]) or with its CRD
    /// ([`Deletion::Keep`]). Called when its deletion is handled, so after it was observed.
    ///
    /// A CRD that cannot be read (403, the network) is an error: the deletion neither calls the
    /// service nor releases the finalizer, and is tried again with backoff. Calling could delete
    /// every source when the CRD's deletion comes with the loss of the operator's RBAC (a GitOps
    /// prune removes both); releasing could leave a plain deletion's source behind. Waiting loses
    /// nothing and the log says why. The chart's RBAC grants the read, so only a hand-made role
    /// without it meets this.
    pub async fn deletion<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
    ) -> Result<Deletion, Error> {
        let name = name_of::<K>();
        let entry = self.entry(&name);
        let seen = entry.seen.lock().expect("CRD seen").clone();
        let created = obj.meta().creation_timestamp.as_ref().map(|t| t.0);
        if let Some(decided) = by_watch(&seen, created) {
            return Ok(decided);
        }
        let (client, crd) = (self.client.clone(), name.clone());
        let read = entry.reads.ask(move || read(client, crd)).await;
        by_read(&read).map_err(|why| Error::CrdUnreadable { crd: name, why })
    }
}

/// One GET of the CRD `name`, metadata only.
async fn read(client: Client, name: String) -> Read {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    match bounded(api.get_metadata_opt(&name)).await {
        Ok(None) => Read::Gone,
        Ok(Some(crd)) => Read::Present {
            deleting: crd.metadata.deletion_timestamp.is_some(),
        },
        Err(e) => Read::Failed(e.to_string()),
    }
}

type Pending<T> = Shared<BoxFuture<'static, T>>;

/// Reads shared like a group commit: each ask is answered by a read that started after it was
/// asked; all asks made while no read is waiting to start share the next one, which starts once
/// the read in flight (if any) has ended. So at most one read is in flight, and a flood of asks
/// costs one read per round trip.
pub struct Coalesced<T: Clone> {
    slots: Arc<Mutex<Slots<T>>>,
}

struct Slots<T: Clone> {
    /// The read that started last (it may have ended).
    started: Option<Pending<T>>,
    /// The read that has not started yet: later asks join it.
    next: Option<Pending<T>>,
}

impl<T: Clone> Default for Coalesced<T> {
    fn default() -> Self {
        Self {
            slots: Arc::new(Mutex::new(Slots {
                started: None,
                next: None,
            })),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalesced<T> {
    /// The answer of a `read` that starts after this call (this one's, or one already waiting to
    /// start).
    pub async fn ask<F, R>(&self, read: F) -> T
    where
        F: FnOnce() -> R + Send + 'static,
        R: Future<Output = T> + Send + 'static,
    {
        let answer = {
            let mut slots = self.slots.lock().expect("reads");
            match &slots.next {
                Some(next) => next.clone(),
                None => {
                    let in_flight = slots.started.clone().filter(|s| s.peek().is_none());
                    let shared = self.slots.clone();
                    let next = async move {
                        if let Some(in_flight) = in_flight {
                            in_flight.await;
                        }
                        {
                            // Starting now: asks from here on wait for the read after this one.
                            let mut slots = shared.lock().expect("reads");
                            slots.started = slots.next.take();
                        }
                        read().await
                    }
                    .boxed()
                    .shared();
                    slots.next = Some(next.clone());
                    next
                }
            }
        };
        answer.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn the_watch_decides_only_a_crd_deleted_since_before_the_object_was_made() {
        let deleting = Seen::Present {
            deleting_since: Some(at(100)),
        };
        assert_eq!(by_watch(&deleting, Some(at(99))), Some(Deletion::Keep));
        // Made in the same second or later: possibly under a CRD made again since.
        assert_eq!(by_watch(&deleting, Some(at(100))), None);
        assert_eq!(by_watch(&deleting, Some(at(101))), None);
        assert_eq!(by_watch(&deleting, None), None);
        // Anything else may be older than the object's deletion: read the CRD.
        let fine = Seen::Present {
            deleting_since: None,
        };
        for seen in [Seen::Unknown, Seen::Absent, fine] {
            assert_eq!(by_watch(&seen, Some(at(1))), None, "{seen:?}");
        }
    }

    #[test]
    fn a_read_keeps_the_data_of_a_crd_deleted_or_gone_and_gives_no_answer_when_it_failed() {
        assert_eq!(by_read(&Read::Gone), Ok(Deletion::Keep));
        assert_eq!(
            by_read(&Read::Present { deleting: true }),
            Ok(Deletion::Keep)
        );
        assert_eq!(
            by_read(&Read::Present { deleting: false }),
            Ok(Deletion::Cleanup)
        );
        assert_eq!(
            by_read(&Read::Failed("forbidden".into())),
            Err("forbidden".into())
        );
    }

    #[test]
    fn a_crd_is_named_plural_dot_group() {
        assert_eq!(
            name_of::<crate::crd::SyncSource>(),
            "syncsources.chromasync.dev"
        );
        assert_eq!(
            name_of::<crate::crd::run::SyncRun>(),
            "syncruns.chromasync.dev"
        );
    }

    /// A read that counts itself, says which read it was, and takes `slow` to answer.
    fn counted(
        reads: &Arc<AtomicUsize>,
        slow: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, usize> + Send + 'static {
        let reads = reads.clone();
        move || {
            async move {
                let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(slow).await;
                n
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn asks_made_while_a_read_is_in_flight_share_the_next_read() {
        let coalesced = Arc::new(Coalesced::<usize>::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let asks = |n: usize| -> Vec<tokio::task::JoinHandle<usize>> {
            (0..n)
                .map(|_| {
                    let (c, r) = (coalesced.clone(), reads.clone());
                    tokio::spawn(async move { c.ask(counted(&r, Duration::from_millis(50))).await })
                })
                .collect()
        };
        // A lone ask: its read starts at once (0-50 ms).
        let first = asks(1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read in flight");
        // 1,000 asks while it is in flight: it started before them, so none may use it; they
        // share the next read, which starts when it ends (50-100 ms).
        let second = asks(1000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2, "still one read in flight");
        // 1,000 more while that one is in flight: one more read (100-150 ms).
        let third = asks(1000);
        let answers = |tasks: Vec<tokio::task::JoinHandle<usize>>| async move {
            let mut seen = std::collections::BTreeSet::new();
            for task in tasks {
                seen.insert(task.await.unwrap());
            }
            seen
        };
        assert_eq!(answers(first).await, [1].into());
        assert_eq!(answers(second).await, [2].into());
        assert_eq!(answers(third).await, [3].into());
        assert_eq!(reads.load(Ordering::SeqCst), 3, "3 reads for 2,001 asks");
        // Asked after every read ended: a new read, never an old answer.
        let last = coalesced
            .ask(counted(&reads, Duration::from_millis(50)))
            .await;
        assert_eq!(last, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ask_whose_waiters_gave_up_is_still_answered_by_a_later_ask() {
        let coalesced = Arc::new(Coalesced::<usize>::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let c = coalesced.clone();
        let r = reads.clone();
        let abandoned =
            tokio::spawn(async move { c.ask(counted(&r, Duration::from_secs(60))).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        abandoned.abort();
        // The abandoned read started before this ask: this one gets a read of its own.
        let answer = tokio::time::timeout(
            Duration::from_secs(120),
            coalesced.ask(counted(&reads, Duration::from_millis(50))),
        )
        .await
        .expect("answered");
        assert_eq!(answer, 2);
    }
}
