//! Pure decisions of the SyncRun flows: what a run sends for its source, what the service's
//! answers mean for its status, which listed invocation is a run's own after a lost answer, and
//! when to look at a run again.

use super::Reason;
use crate::chroma::shared::Reader;
use crate::chroma::wire::{CreateJobPayload, GitRef, Job, JobStatus};
use crate::crd::SyncSourceSpec;
use crate::crd::run::{RunPhase, SyncRunSpec};
use crate::kernel::conditions::{self, READY, RECONCILING, STALLED};
use crate::kernel::failure::Class;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::ops::ControlFlow;
use std::time::Duration;

/// The create-invocation payload of a run on `source`, or what is wrong with the run for that
/// kind of source (every problem, each naming its field). Rules that need no other object are
/// enforced at admission; these need the source.
pub fn payload(run: &SyncRunSpec, source: &SyncSourceSpec) -> Result<CreateJobPayload, String> {
    let (kind, takes_ref, takes_object) = if source.github.is_some() {
        ("a GitHub", true, false)
    } else if source.web_scrape.is_some() {
        ("a web", false, false)
    } else {
        ("an S3", false, true)
    };
    let required = [
        (
            "spec.targetCollectionName",
            run.target_collection_name.is_some() || takes_object,
        ),
        (
            "spec.ref (a branch or sha)",
            run.git_ref.is_some() || !takes_ref,
        ),
        ("spec.objectKey", run.object_key.is_some() || !takes_object),
    ];
    let mut problems: Vec<String> = required
        .iter()
        .filter(|(_, present)| !present)
        .map(|(field, _)| format!("{field} is required for {kind} source"))
        .collect();
    let refused = [
        ("ref", run.git_ref.is_some() && !takes_ref),
        ("objectKey", run.object_key.is_some() && !takes_object),
        ("customId", run.custom_id.is_some() && !takes_object),
        ("metadata", run.metadata.is_some() && !takes_object),
    ];
    for (field, _) in refused.iter().filter(|(_, refused)| *refused) {
        problems.push(format!("spec.{field} is not allowed for {kind} source"));
    }
    let prefix = source.s3.as_ref().and_then(|s3| s3.path_prefix.as_deref());
    if let (Some(key), Some(prefix)) = (&run.object_key, prefix)
        && !key.starts_with(prefix)
    {
        problems.push(format!(
            "spec.objectKey must start with the source's pathPrefix {prefix:?}"
        ));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(CreateJobPayload {
        target_collection_name: run.target_collection_name.clone(),
        ref_identifier: run.git_ref.as_ref().map(|r| match (&r.sha, &r.branch) {
            (Some(sha), _) => GitRef::Sha(sha.clone()),
            (None, branch) => GitRef::Branch(branch.clone().unwrap_or_default()),
        }),
        object_key: run.object_key.clone(),
        custom_id: run.custom_id.clone(),
        metadata: run.metadata.clone(),
    })
}

/// The source's kind, as the service names it (a metric label).
pub fn kind_of(source: &SyncSourceSpec) -> &'static str {
    if source.github.is_some() {
        "github"
    } else if source.web_scrape.is_some() {
        "web_scrape"
    } else {
        "s3"
    }
}

/// The phase a service status means; `None` for a status this operator does not know (the run
/// is left as it was, and looked at again).
pub fn phase_of(status: &JobStatus) -> Option<RunPhase> {
    Some(match status {
        JobStatus::Pending => RunPhase::Pending,
        JobStatus::Processing => RunPhase::Processing,
        JobStatus::Complete { .. } => RunPhase::Complete,
        JobStatus::Failed { .. } => RunPhase::Failed,
        JobStatus::Cancelled => RunPhase::Cancelled,
        JobStatus::Unknown(_) => return None,
    })
}

/// The first look at a run comes this soon after it starts; each later look waits as long as the
/// run has been going, up to [`POLL_MAX`]. A run of duration D costs about log2(D / POLL_FIRST)
/// + 2 looks.
pub const POLL_FIRST: Duration = Duration::from_secs(2);
pub const POLL_MAX: Duration = Duration::from_secs(60);

/// When to look at a run again that has been going for `elapsed`, scaled by `jitter` (drawn
/// from 0.9..1.1 by the caller, so runs started together do not poll together).
pub fn next_poll(elapsed: Duration, jitter: f64) -> Duration {
    elapsed.clamp(POLL_FIRST, POLL_MAX).mul_f64(jitter)
}

/// Reads a source's invocations, newest first, up to the first page that reaches past `since`
/// (a run's mark, less the skew allowance): the invocations that may be the run's own, for
/// [`own_invocation`]. The lookups of one source and token share the listing (see
/// [`crate::chroma::shared`]); each reads it as if it listed alone.
pub struct InvocationLookup {
    pub since: jiff::Timestamp,
    pub seen: Vec<Job>,
}

impl Reader for InvocationLookup {
    type Item = Job;
    type Answer = Vec<Job>;

    fn read(&mut self, page: &[Job]) -> ControlFlow<Vec<Job>> {
        self.seen.extend_from_slice(page);
        match page.last() {
            Some(oldest) if oldest.created_at.is_none_or(|c| c >= self.since) => {
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(std::mem::take(&mut self.seen)),
        }
    }

    fn end(self) -> Vec<Job> {
        self.seen
    }
}

/// A following run's look for its recorded invocation `id` in its source's listing, newest
/// first: the invocation as listed (the same `Job` a GET answers), or None once a page's oldest
/// invocation was created before `since` (the run's start, less the skew allowance: the
/// invocation cannot be further down) or the listing ends without it; then the run asks for it
/// alone (a GET, which also tells a gone invocation).
///
/// The runs of one source and token that look at about the same time share the listing (after
/// a restart, all its unfinished runs): the first page costs what one GET would, and a lone run
/// lists nothing (its GET costs the same call without a page of others). A page after the
/// first is read only while the pages so far found at least as many invocations as they were:
/// a pass costs at most one call more than a GET per run, and far fewer when the runs are
/// among the source's newest.
pub struct InvocationRefresh {
    pub id: String,
    pub since: Option<jiff::Timestamp>,
}

impl Reader for InvocationRefresh {
    type Item = Job;
    type Answer = Option<Job>;

    fn read(&mut self, page: &[Job]) -> ControlFlow<Option<Job>> {
        if let Some(job) = page.iter().find(|job| job.id == self.id) {
            return ControlFlow::Break(Some(job.clone()));
        }
        let oldest = page.last().and_then(|job| job.created_at);
        match (oldest, self.since) {
            (Some(oldest), Some(since)) if oldest < since => ControlFlow::Break(None),
            _ => ControlFlow::Continue(()),
        }
    }

    fn end(self) -> Option<Job> {
        None
    }

    fn worth_page(n: usize, reading: usize, found: usize) -> bool {
        if n == 0 { reading > 1 } else { n <= found }
    }

    fn found(answer: &Option<Job>) -> bool {
        answer.is_some()
    }
}

/// A listed invocation is a run's own when it was created no earlier than `since` (the run's
/// create-pending mark, less the skew allowance), on the same target, ref, object key and custom id. Among
/// several, the oldest is the run's: a newer one was started by someone after it.
pub fn own_invocation<'a>(
    listed: &'a [Job],
    payload: &CreateJobPayload,
    default_collection: Option<&str>,
    since: jiff::Timestamp,
    claimed: &dyn Fn(&str) -> bool,
) -> Option<&'a Job> {
    let collection = payload
        .target_collection_name
        .as_deref()
        .or(default_collection);
    listed
        .iter()
        .filter(|job| made_since(job, since))
        .filter(|job| !claimed(&job.id))
        .filter(|job| collection.is_none() || job.metadata.collection_name.as_deref() == collection)
        .filter(|job| job.metadata.object_key == payload.object_key)
        .filter(|job| job.metadata.custom_id == payload.custom_id)
        .filter(
            |job| match (&payload.ref_identifier, &job.metadata.git_ref) {
                // The service resolves a branch to a commit, which it may report instead.
                (Some(GitRef::Branch(_)), _) | (None, _) => true,
                (Some(sent), Some(reported)) => sent == reported,
                (Some(_), None) => false,
            },
        )
        .min_by_key(|job| job.created_at)
}

/// Whether `job` may have been made by a create marked no earlier than `since` (one without a
/// creation time may).
pub fn made_since(job: &Job, since: jiff::Timestamp) -> bool {
    job.created_at.is_none_or(|c| c >= since)
}

/// What the newest invocation of an S3 run's object key (as `latest-by-keys` answers) tells of
/// the run's unrecorded create, marked no earlier than `since`.
#[derive(Debug, PartialEq)]
pub enum KeyAnswer<'a> {
    /// Nothing was made for the key since the mark, so the run's create made nothing.
    Nothing,
    /// The newest is the run's own, by [`own_invocation`]'s rules.
    Own(&'a Job),
    /// The newest since the mark is not the run's (another run claims it, or it has another
    /// target or custom id): the run's own may lie under it, which only a listing shows.
    List,
}

/// The run's own invocation among `newest` (the newest of its key, if any): one call instead of
/// a listing of every run of the source, decided by the listing's own matcher.
pub fn newest_of_key<'a>(
    newest: Option<&'a Job>,
    payload: &CreateJobPayload,
    default_collection: Option<&str>,
    since: jiff::Timestamp,
    claimed: &dyn Fn(&str) -> bool,
) -> KeyAnswer<'a> {
    let Some(job) = newest.filter(|job| made_since(job, since)) else {
        return KeyAnswer::Nothing;
    };
    let one = std::slice::from_ref(job);
    match own_invocation(one, payload, default_collection, since, claimed) {
        Some(own) => KeyAnswer::Own(own),
        None => KeyAnswer::List,
    }
}

/// The reason a SyncRun gives for each class of failure.
pub fn reason_of(class: Class) -> Reason {
    match class {
        Class::Invalid => Reason::InvalidSpec,
        Class::Unauthorized => Reason::Unauthorized,
        Class::Forbidden => Reason::Forbidden,
        // The source is gone from Chroma Sync: the SyncSource will make it again.
        Class::NotFound => Reason::WaitingForSource,
        Class::Conflict => Reason::InvocationExists,
        Class::RateLimited => Reason::RateLimited,
        Class::ServerError => Reason::ServerError,
        Class::Timeout => Reason::Timeout,
        Class::ConnectionFailed => Reason::ConnectionFailed,
        Class::InvalidResponse => Reason::InvalidResponse,
    }
}

/// The service refused the run for good (its request is wrong, or the collection has had its
/// run): the run has failed, where a source would wait for a new spec.
pub fn refused(class: Class) -> bool {
    matches!(class, Class::Invalid | Class::Conflict)
}

/// What keeps a run from going on, as its conditions show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Problem<'a> {
    pub reason: Reason,
    pub message: &'a str,
    /// Only a person can change it: Stalled (else Reconciling).
    pub needs_a_person: bool,
}

/// The conditions a run shows for its `phase` (with the service's `failure` message) and its
/// current `problem` (reason, message, stalled), if any: `Ready` always,
/// `Reconciling` or `Stalled` only while true (as SyncSource's). Conditions keep their
/// `lastTransitionTime` unless their status flips, so an unchanged outcome yields an equal
/// status and costs no write.
pub fn conditions(
    previous: &[Condition],
    generation: i64,
    phase: Option<RunPhase>,
    failure: Option<&str>,
    problem: Option<Problem>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let condition = |type_: &str, status: bool, reason: Reason, message: &str| {
        let (reason, at) = (reason.as_str(), (generation, now));
        conditions::condition(previous, type_, status, reason, message, at)
    };
    let failed = failure.unwrap_or("the run failed").to_owned();
    let (reason, message, stalled): (Reason, String, bool) = match (problem, phase) {
        // Neither in progress nor failed, and Ready as it was (see the SyncSource's Paused).
        (
            Some(Problem {
                reason: Reason::Paused,
                message,
                ..
            }),
            _,
        ) => {
            let was_ready = conditions::is_ready(previous);
            return vec![condition(READY, was_ready, Reason::Paused, message)];
        }
        (Some(p), _) => (p.reason, p.message.to_owned(), p.needs_a_person),
        (None, Some(RunPhase::Complete)) => {
            let done = "the run is complete".to_owned();
            return vec![condition(READY, true, Reason::Complete, &done)];
        }
        (None, Some(RunPhase::Failed)) => (Reason::RunFailed, failed, true),
        (None, Some(RunPhase::Cancelled)) => (
            Reason::Cancelled,
            "the run was cancelled before it started".to_owned(),
            true,
        ),
        (None, Some(RunPhase::Processing)) => (
            Reason::Processing,
            "Chroma Sync is running the sync".to_owned(),
            false,
        ),
        (None, Some(RunPhase::Pending) | None) => (
            Reason::Pending,
            "the run waits for Chroma Sync to start it".to_owned(),
            false,
        ),
    };
    let abnormal = if stalled { STALLED } else { RECONCILING };
    vec![
        condition(READY, false, reason, &message),
        condition(abnormal, true, reason, &message),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::ChromaError;
    use crate::chroma::wire::JobMetadata;
    use crate::kernel::failure::classify;
    use serde_json::json;

    fn run(spec: serde_json::Value) -> SyncRunSpec {
        let mut spec = spec;
        spec["sourceRef"] = json!({"name": "docs"});
        serde_json::from_value(spec).unwrap()
    }

    fn source(kind: serde_json::Value) -> SyncSourceSpec {
        let mut spec = kind;
        spec["databaseName"] = json!("docs");
        serde_json::from_value(spec).unwrap()
    }

    fn github() -> SyncSourceSpec {
        source(json!({"github": {"repository": "a/b"}}))
    }
    fn web() -> SyncSourceSpec {
        source(json!({"webScrape": {"startingUrl": "https://docs.example.com"}}))
    }
    fn s3() -> SyncSourceSpec {
        source(json!({"s3": {"bucketName": "b", "region": "eu-west-1",
            "collectionName": "reports", "awsCredentialId": 1, "pathPrefix": "q3/"}}))
    }

    #[test]
    fn each_kind_of_source_gets_the_payload_it_needs() {
        let gh = run(json!({"targetCollectionName": "docs-main", "ref": {"branch": "main"}}));
        let p = payload(&gh, &github()).unwrap();
        assert_eq!(p.target_collection_name.as_deref(), Some("docs-main"));
        assert_eq!(p.ref_identifier, Some(GitRef::Branch("main".into())));
        let by_sha = run(json!({"targetCollectionName": "c", "ref": {"sha": "0123abc"}}));
        assert_eq!(
            payload(&by_sha, &github()).unwrap().ref_identifier,
            Some(GitRef::Sha("0123abc".into()))
        );
        let site = run(json!({"targetCollectionName": "site"}));
        assert_eq!(payload(&site, &web()).unwrap().ref_identifier, None);
        let object = run(json!({"objectKey": "q3/report.pdf", "customId": "r-3",
            "metadata": {"team": "finance"}}));
        let p = payload(&object, &s3()).unwrap();
        assert_eq!(p.object_key.as_deref(), Some("q3/report.pdf"));
        assert_eq!(p.target_collection_name, None, "the service's default");
        assert_eq!(p.metadata.unwrap()["team"], "finance");
    }

    #[test]
    fn a_run_that_does_not_fit_its_source_is_refused_naming_every_field() {
        let bare = run(json!({}));
        let why = payload(&bare, &github()).unwrap_err();
        assert!(
            why.contains("spec.targetCollectionName is required for a GitHub source"),
            "{why}"
        );
        assert!(
            why.contains("spec.ref (a branch or sha) is required"),
            "{why}"
        );
        let why = payload(&bare, &web()).unwrap_err();
        assert_eq!(
            why,
            "spec.targetCollectionName is required for a web source"
        );
        let why = payload(&bare, &s3()).unwrap_err();
        assert_eq!(why, "spec.objectKey is required for an S3 source");

        let s3_fields = run(
            json!({"targetCollectionName": "c", "ref": {"branch": "main"},
            "objectKey": "k", "customId": "x", "metadata": {}}),
        );
        let why = payload(&s3_fields, &github()).unwrap_err();
        for field in ["objectKey", "customId", "metadata"] {
            assert!(
                why.contains(&format!("spec.{field} is not allowed for a GitHub source")),
                "{why}"
            );
        }
        let with_ref = run(json!({"targetCollectionName": "c", "ref": {"sha": "1"}}));
        assert!(
            payload(&with_ref, &web())
                .unwrap_err()
                .contains("spec.ref is not allowed")
        );

        let outside = run(json!({"objectKey": "q4/report.pdf"}));
        assert_eq!(
            payload(&outside, &s3()).unwrap_err(),
            "spec.objectKey must start with the source's pathPrefix \"q3/\""
        );
    }

    #[test]
    fn polls_start_soon_and_double_to_a_cap() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!(next_poll(Duration::ZERO, 1.0), POLL_FIRST);
        assert_eq!(next_poll(secs(8), 1.0), secs(8));
        assert_eq!(next_poll(secs(3600), 1.0), POLL_MAX);
        assert_eq!(next_poll(secs(10), 1.1), Duration::from_millis(11_000));
        // Looks at a run of 120 s: each waits as long as the run has gone.
        let (mut t, mut looks) = (Duration::ZERO, 0);
        while t < secs(120) {
            t += next_poll(t, 1.0);
            looks += 1;
        }
        let bound = (120f64 / POLL_FIRST.as_secs_f64()).log2() + 2.0;
        assert!(f64::from(looks) <= bound, "{looks} looks, bound {bound:.1}");
    }

    fn job(id: &str, at: i64, collection: &str, git: Option<GitRef>, key: Option<&str>) -> Job {
        Job {
            id: id.into(),
            status: JobStatus::Pending,
            created_at: Some(jiff::Timestamp::from_second(at).unwrap()),
            source_id: Some("src".into()),
            metadata: JobMetadata {
                collection_name: Some(collection.into()),
                database_name: Some("docs".into()),
                git_ref: git,
                object_key: key.map(Into::into),
                custom_id: None,
            },
        }
    }

    #[test]
    fn the_own_invocation_is_the_oldest_match_after_the_mark_that_nobody_claims() {
        let mark = jiff::Timestamp::from_second(1_000).unwrap();
        let skew = Duration::from_secs(300);
        let sha = |s: &str| Some(GitRef::Sha(s.into()));
        let sent = CreateJobPayload {
            target_collection_name: Some("docs-main".into()),
            ref_identifier: sha("abc"),
            ..Default::default()
        };
        let listed = vec![
            job("newer", 1_200, "docs-main", sha("abc"), None),
            job("ours", 1_001, "docs-main", sha("abc"), None),
            job("other-collection", 1_001, "other", sha("abc"), None),
            job("other-sha", 1_001, "docs-main", sha("def"), None),
            job("before-the-mark", 600, "docs-main", sha("abc"), None),
        ];
        let nobody = |_: &str| false;
        let own = own_invocation(&listed, &sent, None, mark - skew, &nobody);
        assert_eq!(own.map(|j| j.id.as_str()), Some("ours"));
        let ours_claimed = |id: &str| id == "ours";
        let own = own_invocation(&listed, &sent, None, mark - skew, &ours_claimed);
        assert_eq!(own.map(|j| j.id.as_str()), Some("newer"));
        let later_mark = jiff::Timestamp::from_second(2_000).unwrap();
        assert_eq!(
            own_invocation(&listed, &sent, None, later_mark - skew, &nobody),
            None
        );

        // A branch may come back resolved to a commit; S3 runs default to the source's
        // collection and match by object key.
        let by_branch = CreateJobPayload {
            ref_identifier: Some(GitRef::Branch("main".into())),
            ..sent.clone()
        };
        assert!(own_invocation(&listed, &by_branch, None, mark - skew, &nobody).is_some());
        let object = CreateJobPayload {
            object_key: Some("q3/a.pdf".into()),
            ..Default::default()
        };
        let s3_jobs = vec![
            job("a", 1_010, "reports", None, Some("q3/a.pdf")),
            job("b", 1_005, "reports", None, Some("q3/b.pdf")),
        ];
        let own = own_invocation(&s3_jobs, &object, Some("reports"), mark - skew, &nobody);
        assert_eq!(own.map(|j| j.id.as_str()), Some("a"));
        assert_eq!(
            own_invocation(&s3_jobs, &object, Some("elsewhere"), mark - skew, &nobody),
            None
        );
    }

    #[test]
    fn the_newest_of_a_key_is_adopted_ignored_or_sent_to_the_listing() {
        let mark = jiff::Timestamp::from_second(1_000).unwrap();
        let since = mark - Duration::from_secs(300);
        let sent = CreateJobPayload {
            object_key: Some("q3/a.pdf".into()),
            ..Default::default()
        };
        let nobody = |_: &str| false;
        // The answer, with an adopted invocation by its id.
        let answer = |newest: Option<&Job>, claimed: &dyn Fn(&str) -> bool| match newest_of_key(
            newest,
            &sent,
            Some("reports"),
            since,
            claimed,
        ) {
            KeyAnswer::Own(job) => format!("own {}", job.id),
            other => format!("{other:?}"),
        };
        assert_eq!(answer(None, &nobody), "Nothing", "never synced");
        let old = job("old", 600, "reports", None, Some("q3/a.pdf"));
        assert_eq!(
            answer(Some(&old), &nobody),
            "Nothing",
            "synced before the mark only: the create made nothing"
        );
        let ours = job("ours", 1_001, "reports", None, Some("q3/a.pdf"));
        assert_eq!(answer(Some(&ours), &nobody), "own ours");
        // Another run's, or another target's: ours may be under it.
        let theirs = |id: &str| id == "ours";
        assert_eq!(answer(Some(&ours), &theirs), "List");
        let elsewhere = job("x", 1_001, "other", None, Some("q3/a.pdf"));
        assert_eq!(answer(Some(&elsewhere), &nobody), "List");
        let with_id = CreateJobPayload {
            custom_id: Some("r-1".into()),
            ..sent.clone()
        };
        assert_eq!(
            newest_of_key(Some(&ours), &with_id, Some("reports"), since, &nobody),
            KeyAnswer::List
        );
    }

    #[test]
    fn an_invocation_lookup_keeps_every_page_up_to_the_one_that_reaches_past_its_mark() {
        let at = |second| job(&format!("j{second}"), second, "c", None, None);
        let mut lookup = InvocationLookup {
            since: jiff::Timestamp::from_second(1_000).unwrap(),
            seen: Vec::new(),
        };
        let recent = [at(1_200), at(1_100)];
        assert_eq!(lookup.read(&recent), ControlFlow::Continue(()));
        let past = [at(1_050), at(900)];
        let ids = |jobs: &[Job]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        match lookup.read(&past) {
            ControlFlow::Break(seen) => assert_eq!(ids(&seen), ["j1200", "j1100", "j1050", "j900"]),
            ControlFlow::Continue(()) => panic!("the page reaches past the mark"),
        }
        let mut short = InvocationLookup {
            since: jiff::Timestamp::from_second(1_000).unwrap(),
            seen: Vec::new(),
        };
        assert_eq!(short.read(&recent), ControlFlow::Continue(()));
        assert_eq!(ids(&short.end()), ["j1200", "j1100"], "the listing ended");
    }

    #[test]
    fn an_invocation_refresh_stops_at_its_invocation_or_past_its_start() {
        let at = |second| job(&format!("j{second}"), second, "c", None, None);
        let since = Some(jiff::Timestamp::from_second(1_000).unwrap());
        let mut refresh = InvocationRefresh {
            id: "j1050".into(),
            since,
        };
        assert_eq!(
            refresh.read(&[at(1_200), at(1_100)]),
            ControlFlow::Continue(())
        );
        match refresh.read(&[at(1_060), at(1_050), at(900)]) {
            ControlFlow::Break(Some(found)) => assert_eq!(found, at(1_050), "as listed"),
            other => panic!("{other:?}"),
        }
        let mut gone = InvocationRefresh {
            id: "gone".into(),
            since,
        };
        assert_eq!(
            gone.read(&[at(1_200), at(1_000)]),
            ControlFlow::Continue(())
        );
        assert_eq!(
            gone.read(&[at(999)]),
            ControlFlow::Break(None),
            "past its start"
        );
        let mut no_start = InvocationRefresh {
            id: "gone".into(),
            since: None,
        };
        assert_eq!(no_start.read(&[at(1)]), ControlFlow::Continue(()));
        assert_eq!(no_start.end(), None);

        // A lone run lists nothing; a page after the first is paid for by the finds before it.
        assert!(!InvocationRefresh::worth_page(0, 1, 0));
        assert!(InvocationRefresh::worth_page(0, 2, 0));
        assert!(!InvocationRefresh::worth_page(1, 5, 0));
        assert!(InvocationRefresh::worth_page(1, 1, 1));
        assert!(!InvocationRefresh::worth_page(2, 3, 1));
    }

    #[test]
    fn service_answers_map_to_phases_and_failures() {
        assert_eq!(phase_of(&JobStatus::Processing), Some(RunPhase::Processing));
        assert_eq!(
            phase_of(&JobStatus::Failed { error: "e".into() }),
            Some(RunPhase::Failed)
        );
        assert_eq!(phase_of(&JobStatus::Unknown("paused".into())), None);
        let api = |status| ChromaError::Api {
            status,
            error: None,
            message: "m".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        let exists = classify("create", &api(409));
        assert_eq!(reason_of(exists.class), Reason::InvocationExists);
        assert!(exists.class.needs_a_person() && refused(exists.class));
        let busy = classify("create", &api(429));
        assert_eq!(reason_of(busy.class), Reason::RateLimited);
        assert!(!busy.class.needs_a_person() && !refused(busy.class));
        assert!(refused(classify("create", &api(400)).class));
        assert!(!refused(classify("create", &api(401)).class));
        assert_eq!(
            reason_of(classify("create", &api(404)).class),
            Reason::WaitingForSource
        );
    }

    #[test]
    fn conditions_read_as_kstatus_expects() {
        let now = jiff::Timestamp::from_second(10).unwrap();
        let types = |cs: &[Condition]| {
            cs.iter()
                .map(|c| format!("{}={}:{}", c.type_, c.status, c.reason))
                .collect::<Vec<_>>()
        };
        let pending = conditions(&[], 1, Some(RunPhase::Pending), None, None, now);
        assert_eq!(
            types(&pending),
            ["Ready=False:Pending", "Reconciling=True:Pending"]
        );
        let done = conditions(&pending, 1, Some(RunPhase::Complete), None, None, now);
        assert_eq!(types(&done), ["Ready=True:Complete"]);
        let failed = conditions(
            &pending,
            1,
            Some(RunPhase::Failed),
            Some("no repo"),
            None,
            now,
        );
        assert_eq!(
            types(&failed),
            ["Ready=False:RunFailed", "Stalled=True:RunFailed"]
        );
        assert_eq!(failed[0].message, "no repo");
        let waiting = Problem {
            reason: Reason::WaitingForSource,
            message: "not Ready",
            needs_a_person: false,
        };
        let w = conditions(&[], 1, None, None, Some(waiting), now);
        assert_eq!(
            types(&w),
            [
                "Ready=False:WaitingForSource",
                "Reconciling=True:WaitingForSource"
            ]
        );
        // An unchanged outcome keeps its transition time, so it costs no write.
        let later = jiff::Timestamp::from_second(99).unwrap();
        assert_eq!(
            conditions(&pending, 1, Some(RunPhase::Pending), None, None, later),
            pending
        );
    }
}
