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
