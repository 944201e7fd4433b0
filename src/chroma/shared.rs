//! Lookups that read the same newest-first listing share one paged pass over it.
//!
//! After a restart, every object left with a create-pending mark looks for its unrecorded
//! create; alone, each would list the database (or the source's invocations) itself. Here the
//! lookups of one listing share passes, like a group commit: the first pass lists a short
//! moment after the first lookup; lookups asked while a pass lists wait for it to end and go
//! together in the next. Each pass pages until each of its lookups has its answer, unless its
//! reader says another page does not pay ([`Reader::worth_page`]: the looks of followed runs,
//! which otherwise make a GET each).
//!
//! The rule that keeps this correct: the pass a lookup joins starts listing after the lookup
//! was asked, so it sees everything created before the ask (the create being recovered was an
//! earlier attempt's). A lookup therefore joins only a pass that has not started listing.

use super::{ChromaError, LIST_PAGE, TransportKind};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::debug;

/// One lookup's reading of a newest-first listing.
pub trait Reader: Send + 'static {
    type Item: Send;
    type Answer: Send + 'static;
    /// Reads the next page: `Break` with the answer once it needs no further page.
    fn read(&mut self, page: &[Self::Item]) -> ControlFlow<Self::Answer>;
    /// The answer when the listing ended before `read` had one, or when the pass stopped
    /// listing because another page was not worth its call ([`Reader::worth_page`]).
    fn end(self) -> Self::Answer;
    /// Whether a pass reads page `n` (from 0) for the `reading` lookups still reading, `found`
    /// of the others having been answered by the pages before ([`Reader::found`]). Otherwise
    /// the pass ends, and every lookup still reading gets [`Reader::end`]. By default a pass
    /// reads until each lookup has its answer (a recovery lookup must know).
    fn worth_page(_n: usize, _reading: usize, _found: usize) -> bool {
        true
    }
    /// Whether `answer` is one the listing gave (the lookup needs no call of its own).
    fn found(_answer: &Self::Answer) -> bool {
        true
    }
}

type Reply<R> = oneshot::Sender<Result<<R as Reader>::Answer, ChromaError>>;

type Member<R> = (R, Reply<R>);

/// The lookups waiting for each listing's next pass (shared with the listings' tasks).
type Waiting<K, R> = Arc<Mutex<Gathering<K, Member<R>>>>;

/// Per listing that has a task, the members of its next pass (one that has not started
/// listing).
struct Gathering<K, M> {
    next: HashMap<K, Vec<M>>,
}

impl<K: Hash + Eq, M> Gathering<K, M> {
    /// Adds `member` to the next pass of listing `key`: true when the listing had no task (the
    /// caller then starts one).
    fn join(&mut self, key: K, member: M) -> bool {
        match self.next.entry(key) {
            Entry::Occupied(mut next) => {
                next.get_mut().push(member);
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(vec![member]);
                true
            }
        }
    }

    /// The next pass of `key` starts listing: its members, and later lookups wait for the
    /// pass after it. None waiting: the listing's task ends, and a later lookup starts another.
    fn start(&mut self, key: &K) -> Vec<M> {
        match self.next.get_mut(key) {
            Some(members) if !members.is_empty() => std::mem::take(members),
            _ => {
                self.next.remove(key);
                Vec::new()
            }
        }
    }
}

/// What one page did for the readers it was given, each with its tag.
struct Fed<R: Reader, T> {
    still_reading: Vec<(R, T)>,
    answered: Vec<(T, R::Answer)>,
}

/// Gives one page to every reader still reading (`last`: no page follows it).
fn feed<R: Reader, T>(reading: Vec<(R, T)>, page: &[R::Item], last: bool) -> Fed<R, T> {
    let mut fed = Fed {
        still_reading: Vec::new(),
        answered: Vec::new(),
    };
    for (mut reader, tag) in reading {
        match reader.read(page) {
            ControlFlow::Break(answer) => fed.answered.push((tag, answer)),
            ControlFlow::Continue(()) if last => fed.answered.push((tag, reader.end())),
            ControlFlow::Continue(()) => fed.still_reading.push((reader, tag)),
        }
    }
    fed
}

/// The lookups of each listing (keyed by `K`: token and database, or token and source),
/// gathered into shared passes.
pub struct SharedListing<K, R: Reader> {
    waiting: Waiting<K, R>,
    /// How long the first pass of a listing waits for more lookups before it lists.
    gather: Duration,
}

impl<K, R> SharedListing<K, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    R: Reader,
{
    pub fn new(gather: Duration) -> Self {
        Self {
            waiting: Arc::new(Mutex::new(Gathering {
                next: HashMap::new(),
            })),
            gather,
        }
    }

    /// `reader`'s answer from a pass over listing `key`, shared with the lookups asked around
    /// the same time. `page(n)` lists page `n` (from 0), [`LIST_PAGE`] to a page; only the
    /// pager of the lookup that starts the listing's task is used. An error fails every lookup
    /// of the pass still reading when it happens.
    pub async fn look<P, F>(&self, key: K, reader: R, page: P) -> Result<R::Answer, ChromaError>
    where
        P: FnMut(usize) -> F + Send + 'static,
        F: Future<Output = Result<Vec<R::Item>, ChromaError>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let first = self
            .waiting
            .lock()
            .expect("waiting lookups")
            .join(key.clone(), (reader, reply));
        if first {
            // Its own task: it answers the others even if this lookup is dropped.
            tokio::spawn(passes(self.waiting.clone(), key, self.gather, page));
        }
        answer.await.unwrap_or_else(|_| {
            Err(ChromaError::Transport {
                kind: TransportKind::Other,
                message: "the shared listing ended without an answer".into(),
            })
        })
    }
}

/// The passes of one listing, one after another while lookups keep coming: the first after
/// `gather`, each next one as soon as the one before has ended.
async fn passes<K, R, P, F>(waiting: Waiting<K, R>, key: K, gather: Duration, mut page: P)
where
    K: Hash + Eq + Clone,
    R: Reader,
    P: FnMut(usize) -> F,
    F: Future<Output = Result<Vec<R::Item>, ChromaError>>,
{
    let mut unwinding = Unwinding {
        waiting: waiting.clone(),
        key: Some(key.clone()),
    };
    tokio::time::sleep(gather).await;
    loop {
        let members = waiting.lock().expect("waiting lookups").start(&key);
        if members.is_empty() {
            unwinding.key = None;
            return;
        }
        pass(members, &mut page).await;
    }
}

/// Should a listing's task end early (a panic, the runtime shutting down), its waiting
/// lookups fail instead of waiting for ever, and the next lookup starts a new task.
struct Unwinding<K: Hash + Eq, R: Reader> {
    waiting: Waiting<K, R>,
    /// None once the task has ended as it should.
    key: Option<K>,
}

impl<K: Hash + Eq, R: Reader> Drop for Unwinding<K, R> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut waiting)) = (self.key.take(), self.waiting.lock()) {
            waiting.next.remove(&key);
        }
    }
}

/// One pass: pages until each member has its answer.
async fn pass<R, P, F>(mut reading: Vec<Member<R>>, page: &mut P)
where
    R: Reader,
    P: FnMut(usize) -> F,
    F: Future<Output = Result<Vec<R::Item>, ChromaError>>,
{
    let lookups = reading.len();
    let mut found = 0;
    for n in 0.. {
        // A lookup given up on (its reconcile dropped) costs no further page.
        reading.retain(|(_, reply)| !reply.is_closed());
        if reading.is_empty() {
            debug!(lookups, pages = n, "a shared listing pass ended");
            return;
        }
        if !R::worth_page(n, reading.len(), found) {
            debug!(
                lookups,
                pages = n,
                found,
                "a shared listing pass stopped paging"
            );
            for (reader, reply) in reading {
                let _ = reply.send(Ok(reader.end()));
            }
            return;
        }
        let items = match page(n).await {
            Ok(items) => items,
            Err(e) => {
                for (_, reply) in reading {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let fed = feed(reading, &items, items.len() < LIST_PAGE);
        found += fed.answered.iter().filter(|(_, a)| R::found(a)).count();
        for (reply, answer) in fed.answered {
            let _ = reply.send(Ok(answer));
        }
        reading = fed.still_reading;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Reads a listing of numbers, newest (largest) first, for `wanted`; gives up at the first
    /// page that ends below `floor`.
    struct Seek {
        wanted: u32,
        floor: u32,
    }

    impl Reader for Seek {
        type Item = u32;
        type Answer = Option<u32>;
        fn read(&mut self, page: &[u32]) -> ControlFlow<Option<u32>> {
            if page.contains(&self.wanted) {
                return ControlFlow::Break(Some(self.wanted));
            }
            match page.last() {
                Some(&oldest) if oldest >= self.floor => ControlFlow::Continue(()),
                _ => ControlFlow::Break(None),
            }
        }
        fn end(self) -> Option<u32> {
            None
        }
    }

    fn seek(wanted: u32, floor: u32) -> Seek {
        Seek { wanted, floor }
    }

    /// Numbers from `top` down, [`LIST_PAGE`] to a page, down to 0.
    fn page_of(top: u32, n: usize) -> Vec<u32> {
        let start = top as usize - n * LIST_PAGE;
        (0..LIST_PAGE)
            .map_while(|i| start.checked_sub(i))
            .map(|v| v as u32)
            .collect()
    }

    #[test]
    fn a_lookup_joins_the_next_pass_of_its_listing_never_one_that_has_started() {
        let mut gathering = Gathering {
            next: HashMap::new(),
        };
        assert!(
            gathering.join("a", 1),
            "the first lookup starts the listing's task"
        );
        assert!(!gathering.join("a", 2));
        assert!(
            gathering.join("b", 3),
            "another listing has a task of its own"
        );
        assert_eq!(gathering.start(&"a"), vec![1, 2]);
        assert!(
            !gathering.join("a", 4),
            "asked while a pass lists: waits for the next"
        );
        assert_eq!(gathering.start(&"a"), vec![4]);
        assert_eq!(
            gathering.start(&"a"),
            Vec::<i32>::new(),
            "none waiting: the task ends"
        );
        assert!(gathering.join("a", 5), "and the next lookup starts another");
        assert_eq!(gathering.start(&"b"), vec![3]);
    }

    #[test]
    fn each_reader_stops_at_its_own_page_and_the_last_page_ends_the_rest() {
        let reading = vec![
            (seek(950, 0), 'a'),
            (seek(10, 900), 'b'),
            (seek(10, 0), 'c'),
        ];
        let page = page_of(1000, 0); // 1000..=901
        let fed = feed(reading, &page, false);
        assert_eq!(fed.answered, vec![('a', Some(950))]);
        let tags: Vec<char> = fed.still_reading.iter().map(|(_, t)| *t).collect();
        assert_eq!(tags, ['b', 'c']);

        let page = page_of(1000, 1); // 900..=801: past b's floor
        let fed = feed(fed.still_reading, &page, false);
        assert_eq!(fed.answered, vec![('b', None)]);
        assert_eq!(fed.still_reading.len(), 1);

        let fed = feed(fed.still_reading, &[700], true);
        assert_eq!(fed.answered, vec![('c', None)], "the listing ended");
        assert!(fed.still_reading.is_empty());
    }

    /// A pager over numbers from `top` down that counts its calls and fails page `fail_at`.
    fn pager(
        top: u32,
        fail_at: Option<usize>,
        calls: &Arc<AtomicUsize>,
    ) -> impl FnMut(usize) -> std::future::Ready<Result<Vec<u32>, ChromaError>> + Send + 'static
    {
        let calls = calls.clone();
        move |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if Some(n) == fail_at {
                Err(ChromaError::Api {
                    status: 503,
                    error: None,
                    message: "down".into(),
                    retry_after: None,
                })
            } else {
                Ok(page_of(top, n))
            })
        }
    }

    #[tokio::test]
    async fn lookups_asked_together_share_one_pass_that_pages_for_the_oldest() {
        let shared = SharedListing::new(Duration::from_millis(50));
        let calls = Arc::new(AtomicUsize::new(0));
        let look =
            |wanted, floor| shared.look("db", seek(wanted, floor), pager(1000, None, &calls));
        let answers = futures::future::join_all([
            look(990, 0),
            look(850, 0),
            look(5, 700), // not there: reads until a page ends below 700
            look(1, 0),
        ])
        .await;
        let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [Some(990), Some(850), None, Some(1)]);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            10,
            "one pass, to the page that holds 1"
        );
    }

    #[tokio::test]
    async fn a_lone_lookup_lists_as_it_would_alone() {
        let shared = SharedListing::new(Duration::from_millis(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = shared.look("db", seek(990, 0), pager(1000, None, &calls));
        assert_eq!(answer.await.unwrap(), Some(990));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn lookups_asked_while_a_pass_lists_share_the_next_one() {
        let shared = Arc::new(SharedListing::new(Duration::from_millis(10)));
        let calls = Arc::new(AtomicUsize::new(0));
        // A page takes 200 ms, and 8 is created while the first pass lists.
        let slow = {
            let calls = calls.clone();
            move |_| {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(if call == 0 { vec![7] } else { vec![8, 7] })
                }
            }
        };
        let first = tokio::spawn({
            let shared = shared.clone();
            async move { shared.look("db", seek(8, 0), slow).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let unused = Arc::new(AtomicUsize::new(0));
        let (eight, seven) = futures::future::join(
            shared.look("db", seek(8, 0), pager(8, None, &unused)),
            shared.look("db", seek(7, 0), pager(8, None, &unused)),
        )
        .await;
        assert_eq!(first.await.unwrap().unwrap(), None, "8 came after its pass");
        assert_eq!(
            eight.unwrap(),
            Some(8),
            "the next pass listed after the ask"
        );
        assert_eq!(seven.unwrap(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one page per pass");
        assert_eq!(
            unused.load(Ordering::SeqCst),
            0,
            "the listing's first pager serves all"
        );
    }

    #[tokio::test]
    async fn lookups_one_after_another_each_get_a_pass() {
        let shared = SharedListing::new(Duration::from_millis(10));
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let answer = shared.look("db", seek(7, 0), pager(7, None, &calls));
            assert_eq!(answer.await.unwrap(), Some(7));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// [`Seek`] in a pass that lists only when it pays: never for a lone lookup, and a page
    /// after the first only while the pages so far found at least as many as they were.
    struct Frugal(Seek);

    impl Reader for Frugal {
        type Item = u32;
        type Answer = Option<u32>;
        fn read(&mut self, page: &[u32]) -> ControlFlow<Option<u32>> {
            self.0.read(page)
        }
        fn end(self) -> Option<u32> {
            None
        }
        fn worth_page(n: usize, reading: usize, found: usize) -> bool {
            if n == 0 { reading > 1 } else { n <= found }
        }
        fn found(answer: &Option<u32>) -> bool {
            answer.is_some()
        }
    }

    #[tokio::test]
    async fn a_pass_stops_paging_when_its_reader_says_a_page_does_not_pay() {
        let shared = SharedListing::new(Duration::from_millis(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let look = |wanted| shared.look("db", Frugal(seek(wanted, 0)), pager(1000, None, &calls));
        assert_eq!(look(990).await.unwrap(), None, "alone: no listing");
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        // Page 0 finds 990 and pays for page 1, which finds nothing: page 2 is not read.
        let (near, deep) = futures::future::join(look(990), look(5)).await;
        assert_eq!((near.unwrap(), deep.unwrap()), (Some(990), None));
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Three near the top and one on page 2: each page paid for by the finds before it.
        calls.store(0, Ordering::SeqCst);
        let answers = futures::future::join_all([look(999), look(950), look(850), look(750)]).await;
        let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [Some(999), Some(950), Some(850), Some(750)]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_error_fails_the_lookups_still_reading_and_spares_those_answered() {
        let shared = SharedListing::new(Duration::from_millis(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let look = |wanted| shared.look("db", seek(wanted, 0), pager(1000, Some(1), &calls));
        let (answered, failed) = futures::future::join(look(990), look(500)).await;
        assert_eq!(answered.unwrap(), Some(990));
        assert!(matches!(failed, Err(ChromaError::Api { status: 503, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
