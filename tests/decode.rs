//! Fuzzing of every answer the Chroma client decodes (`chroma::decode`): a created source, a
//! page of the listing, an error body, a `Retry-After` header. Over arbitrary bytes and over
//! valid answers with random mutations, decoding never panics, and it returns either a value or
//! the typed error the reconciler sorts on (`Decode` for a success it cannot read, `Api` for an
//! error status), carrying the status it was given.

use chroma_sync_operator::chroma::ChromaError;
use chroma_sync_operator::chroma::decode::{self, MAX_MESSAGE_BYTES};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Checks every decoder on one body; panics (a failed case) on a broken invariant.
fn decode_everything(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    match decode::created(status, body) {
        Ok(id) => prop_assert!(!id.trim().is_empty(), "an empty id decoded"),
        Err(ChromaError::Decode { status: s, message }) => {
            prop_assert_eq!(s, status);
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "created: unexpected error kind {:?}", other),
    }
    match decode::listed(status, body) {
        Ok(items) => prop_assert!(items.iter().all(|s| !s.id.trim().is_empty())),
        Err(ChromaError::Decode { status: s, message }) => {
            prop_assert_eq!(s, status);
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "listed: unexpected error kind {:?}", other),
    }
    let retry_after = decode::retry_after(body);
    match decode::error(status, retry_after, body) {
        ChromaError::Api {
            status: s,
            error,
            message,
            retry_after: r,
        } => {
            prop_assert_eq!(s, status);
            prop_assert_eq!(r, retry_after);
            prop_assert!(!message.is_empty() || error.is_some());
            prop_assert!(
                message.len() <= MAX_MESSAGE_BYTES,
                "{} bytes",
                message.len()
            );
            prop_assert!(error.is_none_or(|e| e.len() <= MAX_MESSAGE_BYTES));
        }
        other => prop_assert!(false, "error: unexpected kind {:?}", other),
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    // Mostly plain, sometimes any Unicode (escapes, multi-byte characters to cut through).
    prop_oneof![3 => "[a-z0-9/._-]{1,24}", 1 => any::<String>()]
}

fn timestamp() -> impl Strategy<Value = String> {
    (0i64..4_102_444_800).prop_map(|s| jiff::Timestamp::from_second(s).unwrap().to_string())
}

/// One listed source as the service spells it: any of the kinds, extra fields included.
fn listed_source() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        text().prop_map(|r| json!({"github": {"repository": r, "app_id": null}})),
        text().prop_map(|u| json!({"web_scrape": {"starting_url": u, "max_depth": 2}})),
        (text(), text()).prop_map(|(b, c)| json!({"s3": {"bucket_name": b, "region": "r",
                                                         "collection_name": c}})),
        Just(json!({"file_upload": {}})),
    ];
    ("[a-f0-9-]{1,36}", of(timestamp()), kind).prop_map(|(id, created_at, kind)| {
        let mut item = json!({"id": id, "database_name": "docs", "unknown_field": [1, {}]});
        if let Some(t) = created_at {
            item["created_at"] = json!(t);
        }
        for (k, v) in kind.as_object().unwrap() {
            item[k] = v.clone();
        }
        item
    })
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Created,
    Page,
    Error,
    RetryAfter,
}

/// A valid answer of each shape, and the status it comes with.
fn valid_answer() -> impl Strategy<Value = (Shape, u16, Vec<u8>)> {
    let bytes = |v: Value| v.to_string().into_bytes();
    prop_oneof![
        "[a-f0-9-]{1,36}".prop_map(move |id| (
            Shape::Created,
            201,
            bytes(json!({"source_id": id}))
        )),
        vec(listed_source(), 0..6).prop_map(move |page| (Shape::Page, 200, bytes(page.into()))),
        (400u16..600, text(), any::<String>()).prop_map(move |(status, error, message)| {
            let body = json!({"error": error, "message": message});
            (Shape::Error, status, bytes(body))
        }),
        (0u64..1_000_000).prop_map(|s| (Shape::RetryAfter, 429, format!(" {s}").into_bytes())),
    ]
}

/// A small edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        // Bytes that matter to JSON more often than chance would pick them.
        (
            at,
            prop_oneof![
                prop::sample::select(b"{}[]\",:\\0-.eE ".to_vec()),
                any::<u8>()
            ]
        )
            .prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (at, 1usize..8).prop_map(|(at, len)| Mutation::Delete { at, len }),
        at.prop_map(|at| Mutation::Truncate { at }),
        (at, 1usize..16).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    let n = body.len();
    let pos = |at: usize| if n == 0 { 0 } else { at % n };
    match *m {
        Mutation::Flip { at, bits } if n > 0 => body[pos(at)] ^= bits,
        Mutation::Insert { at, byte } => body.insert(if n == 0 { 0 } else { at % (n + 1) }, byte),
        Mutation::Delete { at, len } if n > 0 => {
            let start = pos(at);
            body.drain(start..(start + len).min(n));
        }
        Mutation::Truncate { at } => body.truncate(if n == 0 { 0 } else { at % n }),
        Mutation::Duplicate { at, len } if n > 0 => {
            let start = pos(at);
            let slice = body[start..(start + len).min(n)].to_vec();
            body.splice(start..start, slice);
        }
        _ => {}
    }
}

// Case counts keep the whole target at a few seconds on the 2-core machine: 2,000 arbitrary
// bodies, 1,000 valid answers with 1-5 mutations each (every step decoded: about 3,000 bodies).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(status in any::<u16>(), body in vec(any::<u8>(), 0..256)) {
        decode_everything(status, &body)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn valid_answers_decode_and_mutated_ones_never_panic(
        (shape, status, body) in valid_answer(),
        mutations in vec(mutation(), 1..6),
    ) {
        // The starting points are what the service sends: each decodes as its kind.
        match shape {
            Shape::Created => prop_assert!(decode::created(status, &body).is_ok()),
            Shape::Page => prop_assert!(decode::listed(status, &body).is_ok()),
            Shape::RetryAfter => prop_assert!(decode::retry_after(&body).is_some()),
            Shape::Error => {
                let ChromaError::Api { error, .. } = decode::error(status, None, &body) else {
                    unreachable!()
                };
                prop_assert!(error.is_some(), "a valid ErrorResponse decodes");
            }
        }
        let mut body = body;
        for m in &mutations {
            mutate(&mut body, m);
            decode_everything(status, &body)?;
        }
    }
}

#[test]
fn decoded_values_are_the_ones_sent() {
    assert_eq!(
        decode::created(201, br#"{"source_id": "f0e5", "extra": 1}"#),
        Ok("f0e5".to_owned())
    );
    let page = decode::listed(
        200,
        br#"[{"id": "a", "created_at": "2026-01-01T00:00:00Z", "github": {"repository": "o/r"}},
             {"id": "b", "file_upload": {}}]"#,
    )
    .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].github.as_ref().unwrap().repository, "o/r");
    let ChromaError::Api {
        status,
        error,
        message,
        retry_after,
    } = decode::error(
        429,
        Some(Duration::from_secs(3)),
        br#"{"error": "TooMany", "message": "slow down"}"#,
    )
    else {
        unreachable!()
    };
    assert_eq!(
        (status, error.as_deref(), message.as_str(), retry_after),
        (
            429,
            Some("TooMany"),
            "slow down",
            Some(Duration::from_secs(3))
        )
    );
    // A created answer only counts with a success status, whatever the body says.
    assert!(matches!(
        decode::created(202, br#"{"source_id": "x"}"#),
        Err(ChromaError::Decode { status: 202, .. })
    ));
}

// Invocations: the created answer, one `Job`, a page of them. Same invariants as above: never
// a panic; a value with a non-empty id and bounded service texts, or `Decode` with the status.

use chroma_sync_operator::chroma::wire::{GitRef, Job, JobMetadata, JobStatus};

fn check_decoded<T>(
    what: &str,
    status: u16,
    decoded: Result<T, ChromaError>,
    valid: impl Fn(&T) -> bool,
) -> Result<(), TestCaseError> {
    match decoded {
        Ok(value) => prop_assert!(valid(&value), "{}: an invalid value decoded", what),
        Err(ChromaError::Decode { status: s, message }) => {
            prop_assert_eq!(s, status);
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "{}: unexpected error kind {:?}", what, other),
    }
    Ok(())
}

fn job_is_sound(job: &Job) -> bool {
    let bounded = match &job.status {
        JobStatus::Failed { error: text } | JobStatus::Unknown(text) => {
            text.len() <= MAX_MESSAGE_BYTES
        }
        _ => true,
    };
    !job.id.trim().is_empty() && bounded
}

fn decode_invocation_answers(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    check_decoded(
        "invocation_created",
        status,
        decode::invocation_created(status, body),
        |id| !id.trim().is_empty(),
    )?;
    check_decoded("job", status, decode::job(status, body), job_is_sound)?;
    check_decoded("jobs", status, decode::jobs(status, body), |jobs| {
        jobs.iter().all(job_is_sound)
    })?;
    check_decoded(
        "jobs_by_key",
        status,
        decode::jobs_by_key(status, body),
        |jobs| jobs.values().all(job_is_sound),
    )
}

fn job_status() -> impl Strategy<Value = (Value, JobStatus)> {
    prop_oneof![
        Just((json!("pending"), JobStatus::Pending)),
        Just((json!("processing"), JobStatus::Processing)),
        Just((json!("cancelled"), JobStatus::Cancelled)),
        (timestamp(), 0i64..i64::MAX).prop_map(|(at, ms)| (
            json!({"complete": {"finished_at": at, "duration_ms": ms}}),
            JobStatus::Complete {
                finished_at: Some(at.parse().unwrap()),
                duration_ms: Some(ms),
            }
        )),
        any::<String>().prop_map(|e| (
            json!({"failed": {"error": e}}),
            JobStatus::Failed { error: e }
        )),
        "[a-z_]{1,12}"
            .prop_filter("not a known name", |s| {
                !["pending", "processing", "cancelled", "complete", "failed"].contains(&s.as_str())
            })
            .prop_map(|s| (json!(s), JobStatus::Unknown(s))),
    ]
}

fn git_ref() -> impl Strategy<Value = (Value, GitRef)> {
    prop_oneof![
        text().prop_map(|s| (json!({"sha": s}), GitRef::Sha(s))),
        text().prop_map(|b| (json!({"branch": b}), GitRef::Branch(b))),
    ]
}

/// Metadata in each plausible spelling, and what it identifies.
fn job_metadata() -> impl Strategy<Value = (Value, JobMetadata)> {
    let kind =
        prop_oneof![
        (git_ref(), any::<bool>()).prop_map(|((r, expected), nested)| {
            let kind = json!({"github": {"git_ref_identifier": r}});
            let meta = JobMetadata {
                git_ref: Some(expected),
                ..Default::default()
            };
            (if nested { json!({ "kind": kind }) } else { kind }, meta)
        }),
        (text(), of(text())).prop_map(|(key, custom_id)| {
            let kind = json!({"s3": {"bucket_name": "b", "object_key": key, "custom_id": custom_id,
                                     "additional_metadata": {"k": [1]}}});
            let meta = JobMetadata {
                object_key: Some(key),
                custom_id,
                ..Default::default()
            };
            (kind, meta)
        }),
        Just((json!({"web_scrape": null}), JobMetadata::default())),
        Just((json!({"Unknown": null}), JobMetadata::default())),
    ];
    (text(), text(), kind).prop_map(|(db, collection, (kind, mut meta))| {
        let mut value = json!({"database_name": db, "collection_name": collection});
        for (k, v) in kind.as_object().unwrap() {
            value[k] = v.clone();
        }
        meta.database_name = Some(db);
        meta.collection_name = Some(collection);
        (value, meta)
    })
}

/// A `Job` as the service may spell it (either id key, extra fields), and its decoded value.
fn job() -> impl Strategy<Value = (Value, Job)> {
    (
        "[a-f0-9-]{1,36}",
        any::<bool>(),
        job_status(),
        of(timestamp()),
        of("[a-f0-9-]{1,36}"),
        job_metadata(),
    )
        .prop_map(
            |(
                id,
                old_name,
                (status, expected_status),
                created_at,
                source_id,
                (meta, expected_meta),
            )| {
                let mut value = json!({"status": status, "metadata": meta, "source_id": source_id,
                                       "unknown_field": {"a": [1]}});
                value[if old_name { "invocation_id" } else { "id" }] = json!(id);
                if let Some(t) = &created_at {
                    value["created_at"] = json!(t);
                }
                let expected = Job {
                    id,
                    status: expected_status,
                    created_at: created_at.map(|t| t.parse().unwrap()),
                    source_id,
                    metadata: expected_meta,
                };
                (value, expected)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_invocation_decoders(
        status in any::<u16>(),
        body in vec(any::<u8>(), 0..256),
    ) {
        decode_invocation_answers(status, &body)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn valid_jobs_decode_to_what_was_sent_and_mutated_ones_never_panic(
        jobs in vec(job(), 1..4),
        which in 0usize..3,
        mutations in vec(mutation(), 1..6),
    ) {
        let (values, expected): (Vec<Value>, Vec<Job>) = jobs.into_iter().unzip();
        let mut body = match which {
            0 => {
                prop_assert_eq!(&decode::job(200, values[0].to_string().as_bytes()).unwrap(), &expected[0]);
                values[0].to_string().into_bytes()
            }
            1 => {
                let page = Value::from(values).to_string();
                prop_assert_eq!(&decode::jobs(200, page.as_bytes()).unwrap(), &expected);
                page.into_bytes()
            }
            _ => {
                let id = &expected[0].id;
                let body = json!({"invocation_id": id}).to_string();
                prop_assert_eq!(&decode::invocation_created(201, body.as_bytes()).unwrap(), id);
                body.into_bytes()
            }
        };
        for m in &mutations {
            mutate(&mut body, m);
            decode_invocation_answers(200, &body)?;
            decode_invocation_answers(201, &body)?;
        }
    }
}

#[test]
fn decoded_invocations_are_the_ones_sent() {
    let job = decode::job(
        200,
        br#"{"id": "j-1", "created_at": "2026-01-01T00:00:00Z", "source_id": "s-1",
             "status": {"failed": {"error": "clone failed"}},
             "metadata": {"database_name": "d", "collection_name": "c",
                          "github": {"git_ref_identifier": {"sha": "abc"}}}}"#,
    )
    .unwrap();
    assert_eq!(job.id, "j-1");
    assert_eq!(job.source_id.as_deref(), Some("s-1"));
    assert_eq!(
        job.status,
        JobStatus::Failed {
            error: "clone failed".into()
        }
    );
    assert_eq!(job.metadata.git_ref, Some(GitRef::Sha("abc".into())));
    assert_eq!(
        job.created_at,
        Some("2026-01-01T00:00:00Z".parse().unwrap())
    );
    let page = decode::jobs(
        200,
        br#"[{"id": "b", "status": "pending", "metadata": {"database_name": "d",
               "collection_name": "c", "web_scrape": null}},
             {"id": "a", "status": {"complete": {"finished_at": "2026-01-01T00:00:09Z",
                                                 "duration_ms": 9000}}}]"#,
    )
    .unwrap();
    assert_eq!(
        page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert!(page[1].status.is_terminal() && !page[0].status.is_terminal());
    assert_eq!(decode::jobs(200, b"[]"), Ok(vec![]));
    // A bare object is not a page; a page is not one job.
    assert!(matches!(
        decode::jobs(200, br#"{"id": "a", "status": "pending"}"#),
        Err(ChromaError::Decode { .. })
    ));
    assert!(matches!(
        decode::job(200, br#"[{"id": "a", "status": "pending"}]"#),
        Err(ChromaError::Decode { .. })
    ));
}
