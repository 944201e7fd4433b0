//! Contract tests against the Chroma Sync OpenAPI documents (verbatim copies of
//! ../shared/reference): every request body the operator builds must satisfy both the seed
//! document's `CreateSourcePayload` and the published one; every answer of the local stand-in
//! must satisfy the published response schemas. No cluster needed.

use chroma_sync_operator::chroma::wire::{CreateSourcePayload, InlineAwsCredentials};
use chroma_sync_operator::crd::{SyncSource, SyncSourceSpec};
use chroma_sync_operator::source::payload;
use chroma_sync_test_support as support;
use jsonschema::Validator;
use serde_json::{Value, json};

/// The documents' one copy, in the stand-in's crate (tests/standin/openapi/), which checks
/// requests against them too.
const SEED: &str = chroma_sync_standin::SEED_OPENAPI;
const PUBLISHED: &str = chroma_sync_standin::PUBLISHED_OPENAPI;

/// A validator for `#/<pointer>` of an OpenAPI 3.1 document (its schemas are JSON Schema 2020-12).
fn schema(doc: &str, pointer: &str) -> Validator {
    let mut root: Value = serde_saphyr::from_str(doc).expect("the OpenAPI document parses");
    root["$ref"] = json!(format!("#/{pointer}"));
    jsonschema::draft202012::new(&root).expect("the schema compiles")
}

fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} breaks the contract: {errors:?}\n{instance:#}"
    );
}

/// The body the operator sends for `spec`: its payload, with the AWS key a
/// `credentialsSecretRef` names read from the Secret (made-up values here).
fn operator_body(spec: &SyncSourceSpec) -> CreateSourcePayload {
    let built = payload::build(spec).expect("the spec builds");
    let reads_a_secret = spec
        .s3
        .as_ref()
        .is_some_and(|s3| s3.credentials_secret_ref.is_some());
    if !reads_a_secret {
        return built;
    }
    let keys = InlineAwsCredentials {
        aws_access_key_id: "AKIAEXAMPLEKEY000001".into(),
        aws_secret_access_key: "example/secret/access/key/0000000000001".into(),
    };
    payload::with_inline_credentials(built, keys)
}

/// Whether the seed document knows every field of `body`. The published one supersedes it for
/// S3 sources (`auto_sync` renames `trigger_mode`, the credential id became optional, inline
/// AWS keys are new); a body without those satisfies both.
fn the_seed_knows(body: &Value) -> bool {
    let s3 = &body["s3"];
    s3.is_null()
        || (s3.get("auto_sync").is_none()
            && s3.get("aws_access_key_id").is_none()
            && s3.get("aws_credential_id").is_some())
}

fn examples() -> Vec<(String, SyncSource)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut found = Vec::new();
    let paths = ["minimal", "showcase"].into_iter().flat_map(|set| {
        std::fs::read_dir(format!("{root}/{set}"))
            .expect("deploy/examples/{minimal,showcase} exist")
            .map(|entry| entry.unwrap().path())
    });
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        if doc["kind"] == "SyncSource" {
            let obj: SyncSource = serde_json::from_value(doc).expect("example decodes");
            found.push((path.display().to_string(), obj));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Specs that set every field the CRD has, one per source type.
fn exhaustive_specs() -> Vec<Value> {
    let common = json!({
        "chunking": {"type": "lines", "maxLines": 10, "maxSizeBytes": 100},
        "embedding": {
            "dense": {"model": "Qwen/Qwen3-Embedding-0.6B",
                      "task": {"taskName": "t", "queryPrompt": "q", "documentPrompt": "d"}},
            "sparse": {"key": "k", "model": "prithivida/Splade_PP_en_v1"}
        },
        "embeddingModel": {"model": "Qwen/Qwen3-Embedding-0.6B", "task": {"taskName": "t"}},
        "tokenSecretRef": {"name": "s", "key": "k"},
        "deletionPolicy": "Retain"
    });
    let kinds = [
        json!({"github": {"repository": "a/b", "appId": "1", "includeGlobs": ["*.md", "*.rs"]}}),
        json!({"webScrape": {"startingUrl": "https://x.dev", "maxDepth": 0, "pageLimit": 2147483647,
                             "includePathRegexes": ["^/a"], "excludePathRegexes": ["^/b"]}}),
        json!({"s3": {"bucketName": "b", "region": "r", "collectionName": "c",
                      "awsCredentialId": -5, "pathPrefix": "p/", "triggerMode": "metadata"}}),
        json!({"s3": {"bucketName": "b", "region": "r", "collectionName": "c",
                      "awsCredentialId": 3, "autoSync": "direct"}}),
        json!({"s3": {"bucketName": "b", "region": "r", "collectionName": "c", "pathPrefix": "p/",
                      "credentialsSecretRef": {"name": "aws", "accessKeyIdKey": "id",
                                               "secretAccessKeyKey": "secret"},
                      "autoSync": "metadata"}}),
        json!({"github": {"repository": "minimal/one"}, "chunking": {"type": "tree_sitter"}}),
    ];
    kinds
        .into_iter()
        .map(|kind| {
            let mut spec = common.clone();
            spec["databaseName"] = json!("db");
            for (k, v) in kind.as_object().unwrap() {
                spec[k] = v.clone();
            }
            spec
        })
        .collect()
}

/// Every request body satisfies the published document, and the seed one too unless it carries
/// a field only the published one knows ([`the_seed_knows`]).
#[test]
fn every_request_body_satisfies_the_seed_and_published_schemas() {
    let seed = schema(SEED, "components/schemas/CreateSourcePayload");
    let published = schema(PUBLISHED, "components/schemas/CreateSourcePayload");
    let mut bodies = Vec::new();
    let examples = examples();
    assert_eq!(
        examples.len(),
        5,
        "two minimal examples, and one per source type"
    );
    for (path, obj) in examples {
        bodies.push((path, operator_body(&obj.spec)));
    }
    for (i, spec) in exhaustive_specs().into_iter().enumerate() {
        let spec = serde_json::from_value(spec).expect("spec decodes");
        bodies.push((format!("exhaustive spec {i}"), operator_body(&spec)));
    }
    let mut seed_checked = 0;
    for (what, body) in bodies {
        let body = serde_json::to_value(body).unwrap();
        if the_seed_knows(&body) {
            assert_valid(&seed, &body, &what);
            seed_checked += 1;
        }
        assert_valid(&published, &body, &what);
    }
    assert!(seed_checked >= 6, "{seed_checked}");
}

/// The S3 shapes of the published document (Prism-style: the body the operator builds for each
/// validates, and the stand-in, which checks the document's rules, creates it): `auto_sync`
/// under either name, a dashboard credential id, an inline key from a Secret. The source the
/// service holds gives no key back, holds the credential id allocated for it, and matches the
/// spec field for field, so adoption and the drift check see no difference.
#[tokio::test]
async fn the_published_s3_shapes_validate_and_the_stand_in_creates_them() {
    let published = schema(PUBLISHED, "components/schemas/CreateSourcePayload");
    let source = schema(PUBLISHED, "components/schemas/Source");
    let (standin, base) = support::standin::start("t", &[]).await;
    let client = support::chroma::client(base, std::time::Duration::from_secs(5), None);
    let token = chroma_sync_operator::chroma::Token::new("t").unwrap();
    let shapes = [
        (
            json!({"awsCredentialId": 7, "autoSync": "direct"}),
            json!({"aws_credential_id": 7, "auto_sync": "direct"}),
        ),
        (
            json!({"awsCredentialId": 7, "triggerMode": "metadata"}),
            json!({"aws_credential_id": 7, "auto_sync": "metadata"}),
        ),
        (
            json!({"credentialsSecretRef": {"name": "aws"}, "autoSync": "direct"}),
            json!({"auto_sync": "direct", "aws_access_key_id": "AKIAEXAMPLEKEY000001",
                   "aws_secret_access_key": "example/secret/access/key/0000000000001"}),
        ),
        (
            json!({"credentialsSecretRef": {"name": "aws"}, "autoSync": "none"}),
            json!({"aws_access_key_id": "AKIAEXAMPLEKEY000001",
                   "aws_secret_access_key": "example/secret/access/key/0000000000001"}),
        ),
    ];
    for (i, (extra, sent)) in shapes.into_iter().enumerate() {
        let mut s3 = json!({"bucketName": "b", "region": "r", "collectionName": format!("c{i}")});
        for (k, v) in extra.as_object().unwrap() {
            s3[k] = v.clone();
        }
        let spec = serde_json::from_value(json!({"databaseName": "docs", "s3": s3})).unwrap();
        let body = operator_body(&spec);
        let wire = serde_json::to_value(&body).unwrap();
        let mut expected =
            json!({"bucket_name": "b", "region": "r", "collection_name": format!("c{i}")});
        for (k, v) in sent.as_object().unwrap() {
            expected[k] = v.clone();
        }
        assert_eq!(wire["s3"], expected, "{extra}");
        assert_valid(&published, &wire, &format!("{extra}"));
        assert!(!the_seed_knows(&wire), "{extra}: a published-only shape");

        let id = client.create_source(&token, &body).await.unwrap();
        let held = client.get_source(&token, &id).await.unwrap().unwrap();
        assert_valid(&source, &held, "get answer");
        let text = held.to_string();
        assert!(
            !text.contains("AKIAEXAMPLE") && !text.contains("example/secret"),
            "{text}"
        );
        assert!(held["s3"]["aws_credential_id"].is_i64(), "{held}");
        assert_eq!(held["s3"].get("auto_sync"), expected.get("auto_sync"));
        assert_eq!(payload::differences(&body, &held), [], "{extra}");
    }
    // The key was received, and stored once for reuse.
    let stored = standin.aws_credentials();
    assert_eq!(stored.len(), 1, "{}", stored.len());
    assert_eq!(stored[0].access_key_id, "AKIAEXAMPLEKEY000001");
    assert_eq!(
        stored[0].secret_access_key,
        "example/secret/access/key/0000000000001"
    );
}

#[test]
fn the_seed_schema_rejects_what_it_should() {
    // Guards the validator itself: a contract test that accepts everything proves nothing.
    let seed = schema(SEED, "components/schemas/CreateSourcePayload");
    for bad in [
        json!({"github": {"repository": "a/b"}}),
        json!({"database_name": "d"}),
        json!({"database_name": "d", "github": {"repository": "a/b", "include_globs": ["x", "x"]}}),
        json!({"database_name": "d", "web_scrape": {"starting_url": "u", "max_depth": -1}}),
        json!({"database_name": "d", "s3": {"bucket_name": "b", "region": "r", "collection_name": "c"}}),
        json!({"database_name": "d", "github": {"repository": "a/b"}, "chunking": {"type": "words"}}),
    ] {
        assert!(!seed.is_valid(&bad), "accepted {bad}");
    }
}

#[tokio::test]
async fn the_stand_in_answers_in_the_published_shapes() {
    let (_, base) = support::standin::start("t", &[]).await;
    chroma_sync_operator::chroma::install_crypto_provider();
    let http = reqwest::Client::new();
    let created = schema(PUBLISHED, "components/schemas/CreateSourceResponse");
    let source = schema(PUBLISHED, "components/schemas/Source");
    let error = schema(PUBLISHED, "components/schemas/ErrorResponse");
    let list = schema(
        PUBLISHED,
        "paths/~1api~1v1~1sources/get/responses/200/content/application~1json/schema",
    );

    let mut ids = Vec::new();
    for (_, obj) in examples() {
        let body = operator_body(&obj.spec);
        let r = http
            .post(format!("{base}/api/v1/sources"))
            .header("x-chroma-token", "t")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        assert_valid(&created, &v, "create answer");
        ids.push(v["source_id"].as_str().unwrap().to_owned());
    }
    let r = http
        .get(format!("{base}/api/v1/sources?database_name=docs"))
        .header("x-chroma-token", "t")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_valid(&list, &v, "list answer");
    assert_eq!(v.as_array().unwrap().len(), ids.len());
    assert_eq!(v[0]["id"], json!(ids[ids.len() - 1]), "newest first");

    let r = http
        .get(format!("{base}/api/v1/sources/{}", ids[0]))
        .header("x-chroma-token", "t")
        .send()
        .await
        .unwrap();
    assert_valid(&source, &r.json::<Value>().await.unwrap(), "get answer");

    for (request, status) in [
        (http.get(format!("{base}/api/v1/sources")), 401),
        (
            http.post(format!("{base}/api/v1/sources"))
                .header("x-chroma-token", "t")
                .json(&json!({"database_name": "docs"})),
            400,
        ),
        (
            http.post(format!("{base}/api/v1/sources"))
                .header("x-chroma-token", "t")
                .json(&json!({"database_name": "nope", "github": {"repository": "a/b"}})),
            404,
        ),
        (
            http.delete(format!("{base}/api/v1/sources/unknown"))
                .header("x-chroma-token", "t"),
            404,
        ),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_valid(&error, &r.json::<Value>().await.unwrap(), "error answer");
    }
    let r = http
        .delete(format!("{base}/api/v1/sources/{}", ids[0]))
        .header("x-chroma-token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty(), "204 has no body");
}

/// Property tests: for any spec admission accepts, the request body satisfies both documents
/// and its fingerprint is a pure function of the payload.
mod properties {
    use super::*;
    use chroma_sync_operator::crd::{DeletionPolicy, SecretKeyRef, SyncSourceSpec};
    use proptest::collection::btree_set;
    use proptest::option::of;
    use proptest::prelude::*;
    use proptest::string::string_regex;
    use std::sync::LazyLock;

    static SEED_PAYLOAD: LazyLock<Validator> =
        LazyLock::new(|| schema(SEED, "components/schemas/CreateSourcePayload"));
    static PUBLISHED_PAYLOAD: LazyLock<Validator> =
        LazyLock::new(|| schema(PUBLISHED, "components/schemas/CreateSourcePayload"));

    /// A string of `min..=max` characters: mostly plain, sometimes any printable Unicode.
    fn text(min: usize, max: usize) -> BoxedStrategy<String> {
        let re = |pattern: String| string_regex(&pattern).expect("the pattern compiles");
        prop_oneof![
            3 => re(format!("[a-z0-9/._-]{{{min},{}}}", max.min(40))),
            1 => re(format!("\\PC{{{min},{}}}", max.min(40))),
            // The longest value the CRD admits.
            1 => re(format!("[a-z]{{{max}}}")),
        ]
        .boxed()
    }

    /// A set-typed list (the CRD's `x-kubernetes-list-type: set`: items unique).
    fn set_of(item: impl Strategy<Value = String>) -> impl Strategy<Value = Option<Value>> {
        of(btree_set(item, 0..5).prop_map(|s| json!(s.into_iter().collect::<Vec<_>>())))
    }

    fn count() -> impl Strategy<Value = Option<i64>> {
        of(prop_oneof![0i64..100, Just(0), Just(i32::MAX as i64)])
    }

    fn big_count() -> impl Strategy<Value = Option<i64>> {
        of(prop_oneof![0i64..100_000, Just(i64::MAX)])
    }

    fn github() -> impl Strategy<Value = Value> {
        (text(1, 256), of(text(1, 256)), set_of(text(1, 64))).prop_map(|(repo, app, globs)| {
            json!({"github": {"repository": repo, "appId": app, "includeGlobs": globs}})
        })
    }

    fn web_scrape() -> impl Strategy<Value = Value> {
        let url = "https?://[a-z]{1,12}\\.[a-z]{2,5}(:[1-9][0-9]{0,3})?(/[a-z0-9._-]{0,12}){0,3}";
        let regex = "\\^/[a-z]{1,8}(/.*)?\\$?";
        (url, count(), count(), set_of(regex), set_of(regex)).prop_map(
            |(url, depth, limit, include, exclude)| {
                json!({"webScrape": {"startingUrl": url, "maxDepth": depth, "pageLimit": limit,
                    "includePathRegexes": include, "excludePathRegexes": exclude}})
            },
        )
    }

    fn s3() -> impl Strategy<Value = Value> {
        // Exactly one credential, and the mode under one of its names (admission's rules).
        let credential = prop_oneof![
            any::<i32>().prop_map(|id| ("awsCredentialId", json!(id))),
            (text(1, 253), of(text(1, 253)), of(text(1, 253))).prop_map(|(name, id, key)| {
                let reference = json!({"name": name, "accessKeyIdKey": id,
                    "secretAccessKeyKey": key});
                ("credentialsSecretRef", reference)
            }),
        ];
        (
            (text(1, 255), text(1, 64), text(1, 512)),
            credential,
            of(text(0, 64)),
            of(prop::sample::select(vec!["none", "direct", "metadata"])),
            prop::sample::select(vec!["autoSync", "triggerMode"]),
        )
            .prop_map(
                |((bucket, region, collection), (field, credential), prefix, mode, name)| {
                    let mut s3 = json!({"bucketName": bucket, "region": region,
                    "collectionName": collection, "pathPrefix": prefix});
                    s3[field] = credential;
                    s3[name] = json!(mode);
                    // Whole here: other properties add this kind to specs already cleaned.
                    without_nulls(json!({"s3": s3}))
                },
            )
    }

    fn chunking() -> impl Strategy<Value = Option<Value>> {
        of(prop_oneof![
            big_count().prop_map(|size| json!({"type": "tree_sitter", "maxSizeBytes": size})),
            (big_count(), big_count()).prop_map(|(lines, size)| json!({"type": "lines",
                "maxLines": lines, "maxSizeBytes": size})),
        ])
    }

    fn dense() -> impl Strategy<Value = Value> {
        let task = (text(1, 32), of(text(0, 64)), of(text(0, 64))).prop_map(
            |(name, q, d)| json!({"taskName": name, "queryPrompt": q, "documentPrompt": d}),
        );
        of(task).prop_map(|task| json!({"model": "Qwen/Qwen3-Embedding-0.6B", "task": task}))
    }

    fn embedding() -> impl Strategy<Value = Option<Value>> {
        let sparse = (
            of(text(0, 32)),
            of(prop::sample::select(vec![
                "Chroma/BM25",
                "prithivida/Splade_PP_en_v1",
            ])),
        )
            .prop_map(|(key, model)| json!({"key": key, "model": model}));
        of((of(dense()), of(sparse))
            .prop_map(|(dense, sparse)| json!({"dense": dense, "sparse": sparse})))
    }

    /// What the apiserver drops: `null` values (absent optional fields).
    fn without_nulls(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, without_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
            other => other,
        }
    }

    /// Any spec the CRD admits: exactly one source kind, every field within its rules.
    fn valid_spec() -> impl Strategy<Value = Value> {
        (
            text(1, 512),
            prop_oneof![github(), web_scrape(), s3()],
            chunking(),
            embedding(),
            of(dense()),
            of((text(1, 253), of(text(1, 253)))),
            of(prop::sample::select(vec!["Delete", "Retain"])),
        )
            .prop_map(|(db, kind, chunking, embedding, model, secret, policy)| {
                let mut spec = json!({"databaseName": db, "chunking": chunking,
                    "embedding": embedding, "embeddingModel": model, "deletionPolicy": policy,
                    "tokenSecretRef": secret.map(|(name, key)| json!({"name": name, "key": key}))});
                for (k, v) in kind.as_object().unwrap() {
                    spec[k] = v.clone();
                }
                without_nulls(spec)
            })
    }

    fn decode(spec: &Value) -> SyncSourceSpec {
        serde_json::from_value(spec.clone()).expect("a valid spec decodes")
    }

    proptest! {
        // 200 specs per property: a few seconds for the three on the shared 2-core machine.
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_valid_spec_maps_to_a_body_both_documents_accept(spec in valid_spec()) {
            let body = payload::build(&decode(&spec));
            prop_assert!(body.is_ok(), "{:?}", body);
            let body = serde_json::to_value(operator_body(&decode(&spec))).unwrap();
            let documents = if the_seed_knows(&body) {
                vec![("seed", &*SEED_PAYLOAD), ("published", &*PUBLISHED_PAYLOAD)]
            } else {
                vec![("published", &*PUBLISHED_PAYLOAD)]
            };
            for (name, validator) in documents {
                let errors: Vec<String> = validator
                    .iter_errors(&body)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .collect();
                prop_assert!(errors.is_empty(), "{} document: {:?}\n{:#}", name, errors, body);
            }
        }

        #[test]
        fn the_fingerprint_depends_on_the_payload_only(
            spec in valid_spec(),
            policy in prop::sample::select(vec![DeletionPolicy::Delete, DeletionPolicy::Retain]),
            secret in of(("[a-z]{1,20}", "[a-z]{1,20}")),
        ) {
            let spec = decode(&spec);
            let hash = payload::fingerprint(&payload::build(&spec).unwrap());
            prop_assert_eq!(hash.len(), 16);
            prop_assert!(hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            // Read back as the apiserver stores it: the same fingerprint, so no replacement.
            let stored: SyncSourceSpec =
                serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
            prop_assert_eq!(&payload::fingerprint(&payload::build(&stored).unwrap()), &hash);
            // Fields only the operator reads do not reach the payload.
            let mut other = spec.clone();
            other.deletion_policy = policy;
            other.token_secret_ref = secret.map(|(name, key)| SecretKeyRef { name, key });
            prop_assert_eq!(&payload::fingerprint(&payload::build(&other).unwrap()), &hash);
            // A field that does reach it changes it.
            let mut renamed = spec;
            renamed.database_name.push('x');
            prop_assert_ne!(payload::fingerprint(&payload::build(&renamed).unwrap()), hash);
        }

        #[test]
        fn specs_without_exactly_one_kind_are_refused(
            spec in valid_spec(),
            extra in prop::collection::vec(prop_oneof![github(), web_scrape(), s3()], 0..3),
            drop_kind in any::<bool>(),
        ) {
            let mut spec = spec;
            if drop_kind {
                for k in ["github", "webScrape", "s3"] {
                    spec.as_object_mut().unwrap().remove(k);
                }
            }
            for kind in extra {
                for (k, v) in kind.as_object().unwrap() {
                    spec[k] = v.clone();
                }
            }
            let kinds = ["github", "webScrape", "s3"].iter().filter(|k| spec.get(**k).is_some()).count();
            prop_assert_eq!(payload::build(&decode(&spec)).is_ok(), kinds == 1, "{:#}", spec);
        }
    }
}

// Invocations (sync runs): the client's `CreateJobPayload` bodies against the published schema,
// and every answer of the stand-in's invocation endpoints against the published responses.

/// The published `IndexJobMetadataKind` admits no web (or `Unknown`) run at all: its string
/// kinds cannot meet `IndexJobMetadata`'s `allOf` with an object. A web run's answer is checked
/// against the document with that kind added as serde's `flatten` writes it
/// (`"web_scrape": null` beside the names); everything else against the document as published.
fn published_with_flattened_web_kind() -> String {
    let anchor = "    IndexJobMetadataKind:\n      oneOf:\n";
    assert!(PUBLISHED.contains(anchor), "the published document moved");
    let web = "      - type: object\n        required:\n        - web_scrape\n        properties:\n          web_scrape:\n            type: 'null'\n";
    PUBLISHED.replacen(anchor, &format!("{anchor}{web}"), 1)
}

const LIST_JOBS_200: &str =
    "paths/~1api~1v1~1invocations/get/responses/200/content/application~1json/schema";

#[test]
fn the_published_job_schemas_reject_what_they_should() {
    // Guards the validators: a contract test that accepts everything proves nothing.
    let payload = schema(PUBLISHED, "components/schemas/CreateJobPayload");
    for bad in [
        json!({"custom_id": "x".repeat(121)}),
        json!({"ref_identifier": {"tag": "v1"}}),
        json!({"ref_identifier": {"sha": "a", "branch": "b"}}),
        json!({"metadata": "k=v"}),
        json!({"target_collection_name": 1}),
        json!("body"),
    ] {
        assert!(!payload.is_valid(&bad), "accepted {bad}");
    }
    let job = schema(PUBLISHED, "components/schemas/Job");
    let good = json!({"id": "j", "created_at": "2026-01-01T00:00:00Z", "status": "pending",
        "metadata": {"database_name": "d", "collection_name": "c",
                     "github": {"git_ref_identifier": {"sha": "a"}}}});
    assert_valid(&job, &good, "a github job");
    for (pointer, value) in [
        ("/status", json!("complete")),
        (
            "/status",
            json!({"complete": {"finished_at": "2026-01-01T00:00:00Z"}}),
        ),
        ("/status", json!({"failed": {}})),
        ("/metadata/github", json!({"branch": "main"})),
        ("/created_at", Value::Null),
    ] {
        let mut bad = good.clone();
        *bad.pointer_mut(pointer).unwrap() = value.clone();
        assert!(!job.is_valid(&bad), "accepted {pointer} = {value}");
    }
    // The gap worked around above: no web run's metadata passes the published schema.
    let web = |kind: Value| {
        let mut v = good.clone();
        let meta = v["metadata"].as_object_mut().unwrap();
        meta.remove("github");
        for (k, x) in kind.as_object().unwrap() {
            meta.insert(k.clone(), x.clone());
        }
        v
    };
    for kind in [
        json!({"web_scrape": null}),
        json!({"kind": "web_scrape"}),
        json!({}),
    ] {
        assert!(
            !job.is_valid(&web(kind.clone())),
            "published accepts {kind}"
        );
    }
    let patched = schema(
        &published_with_flattened_web_kind(),
        "components/schemas/Job",
    );
    assert_valid(
        &patched,
        &web(json!({"web_scrape": null})),
        "patched web job",
    );
    assert!(
        !patched.is_valid(&web(json!({}))),
        "the patch admits only the web kind"
    );
}

#[tokio::test]
async fn the_stand_in_answers_invocations_in_the_published_shapes() {
    use chroma_sync_standin::RunPlan;
    let (standin, base) = support::standin::start("t", &["v"]).await;
    let github =
        standin.insert_source(json!({"database_name": "docs", "github": {"repository": "o/r"}}));
    let web = standin.insert_source(
        json!({"database_name": "docs", "web_scrape": {"starting_url": "https://x.dev"}}),
    );
    let s3 = standin.insert_source(json!({"database_name": "docs", "s3": {"bucket_name": "b",
        "region": "r", "collection_name": "files", "aws_credential_id": 1, "path_prefix": "p/"}}));
    chroma_sync_operator::chroma::install_crypto_provider();
    let http = reqwest::Client::new();
    let patched = published_with_flattened_web_kind();
    let created = schema(PUBLISHED, "components/schemas/CreateJobResponse");
    let job = schema(PUBLISHED, "components/schemas/Job");
    let web_job = schema(&patched, "components/schemas/Job");
    let list = schema(PUBLISHED, LIST_JOBS_200);
    let web_list = schema(&patched, LIST_JOBS_200);
    let by_keys = schema(PUBLISHED, "components/schemas/HashMap");
    let cancel = schema(PUBLISHED, "components/schemas/CancelJobResponse");
    let error = schema(PUBLISHED, "components/schemas/ErrorResponse");

    let send = async |request: reqwest::RequestBuilder| {
        let r = request.header("x-chroma-token", "t").send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let create = async |source: &str, body: Value| {
        send(
            http.post(format!("{base}/api/v1/sources/{source}/invocations"))
                .json(&body),
        )
        .await
    };

    // One run in each state, of each kind.
    let mut runs = Vec::new();
    for (plan, source, body) in [
        (
            (60_000, 0, None),
            &github,
            json!({"target_collection_name": "a", "ref_identifier": {"branch": "main"}}),
        ),
        (
            (60_000, 0, None),
            &s3,
            json!({"object_key": "p/k", "custom_id": "c-1", "metadata": {"x": [1]}}),
        ),
        (
            (60_000, 0, None),
            &web,
            json!({"target_collection_name": "site"}),
        ),
        (
            (0, 60_000, None),
            &github,
            json!({"target_collection_name": "b", "ref_identifier": {"sha": "abc"}}),
        ),
        (
            (0, 0, None),
            &github,
            json!({"target_collection_name": "c", "ref_identifier": {"sha": "abc"}}),
        ),
        (
            (0, 0, None),
            &web,
            json!({"target_collection_name": "site2"}),
        ),
        ((0, 0, Some("boom")), &s3, json!({"object_key": "p/k"})),
    ] {
        standin.set_run_plan(RunPlan {
            pending_ms: plan.0,
            processing_ms: plan.1,
            fail_with: plan.2.map(str::to_owned),
        });
        let (status, v) = create(source, body).await;
        assert_eq!(status, 201, "{v}");
        assert_valid(&created, &v, "create answer");
        runs.push((
            source.clone(),
            v["invocation_id"].as_str().unwrap().to_owned(),
        ));
    }
    let (status, v) = send(http.put(format!("{base}/api/v1/invocations/{}", runs[0].1))).await;
    assert_eq!(status, 202);
    assert_valid(&cancel, &v, "cancel answer");

    let mut statuses = Vec::new();
    for (source, id) in &runs {
        let (status, v) = send(http.get(format!("{base}/api/v1/invocations/{id}"))).await;
        assert_eq!(status, 200);
        if source == &web {
            assert!(!job.is_valid(&v), "the published schema has no web kind");
            assert_valid(&web_job, &v, "web get answer");
        } else {
            assert_valid(&job, &v, "get answer");
        }
        statuses.push(v["status"].clone());
    }
    let names: Vec<&str> = statuses
        .iter()
        .map(|s| {
            s.as_str()
                .or_else(|| s.as_object()?.keys().next().map(String::as_str))
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "cancelled",
            "pending",
            "pending",
            "processing",
            "complete",
            "complete",
            "failed"
        ]
    );

    for source in [&github, &s3] {
        let (status, v) =
            send(http.get(format!("{base}/api/v1/invocations?source_id={source}"))).await;
        assert_eq!(status, 200);
        assert_valid(&list, &v, "list answer");
    }
    let (status, v) = send(http.get(format!(
        "{base}/api/v1/invocations?database_name=docs&order_by=ASC&limit=50"
    )))
    .await;
    assert_eq!(status, 200);
    assert_valid(&web_list, &v, "list answer with web runs");
    assert_eq!(v.as_array().unwrap().len(), runs.len());
    assert_eq!(v[0]["id"], json!(runs[0].1), "oldest first when asked");

    let (status, v) = send(
        http.post(format!(
            "{base}/api/v1/sources/{s3}/invocations/latest-by-keys"
        ))
        .json(&json!({"object_keys": ["p/k", "p/none"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_valid(&by_keys, &v, "latest-by-keys answer");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert_eq!(
        v["p/k"]["id"],
        json!(runs[6].1),
        "the newest run of the key"
    );

    // Every refusal is an ErrorResponse.
    let unknown = "00000000-0000-0000-0000-000000000000";
    let gh_run = json!({"target_collection_name": "c", "ref_identifier": {"sha": "abc"}});
    for (request, expected) in [
        (
            http.post(format!("{base}/api/v1/sources/{github}/invocations"))
                .body("{"),
            400,
        ),
        (
            http.post(format!("{base}/api/v1/sources/{github}/invocations"))
                .json(&json!({"custom_id": 5})),
            400,
        ),
        (
            http.post(format!("{base}/api/v1/sources/{web}/invocations"))
                .json(&json!({"object_key": "k"})),
            400,
        ),
        (
            http.get(format!(
                "{base}/api/v1/invocations?source_id={github}&database_name=docs"
            )),
            400,
        ),
        (
            http.get(format!("{base}/api/v1/invocations?status=done")),
            400,
        ),
        (
            http.post(format!(
                "{base}/api/v1/sources/{s3}/invocations/latest-by-keys"
            ))
            .json(&json!({})),
            400,
        ),
        (
            http.post(format!("{base}/api/v1/sources/{unknown}/invocations"))
                .json(&gh_run),
            404,
        ),
        (
            http.get(format!("{base}/api/v1/invocations/{unknown}")),
            404,
        ),
        (
            http.put(format!("{base}/api/v1/invocations/{unknown}")),
            404,
        ),
        (
            http.get(format!("{base}/api/v1/invocations?source_id={unknown}")),
            404,
        ),
        (
            http.post(format!(
                "{base}/api/v1/sources/{unknown}/invocations/latest-by-keys"
            ))
            .json(&json!({"object_keys": []})),
            404,
        ),
        (
            http.post(format!("{base}/api/v1/sources/{github}/invocations"))
                .json(&gh_run),
            409,
        ),
        (
            http.put(format!("{base}/api/v1/invocations/{}", runs[3].1)),
            412,
        ),
        (
            http.put(format!("{base}/api/v1/invocations/{}", runs[0].1)),
            412,
        ),
    ] {
        let (status, v) = send(request).await;
        assert_eq!(status, expected, "{v}");
        assert_valid(&error, &v, "error answer");
    }
    for (token, expected) in [(None, 401), (Some("wrong"), 401), (Some("v"), 403)] {
        let mut request = http
            .post(format!("{base}/api/v1/sources/{github}/invocations"))
            .json(&json!({"target_collection_name": "z", "ref_identifier": {"sha": "a"}}));
        if let Some(token) = token {
            request = request.header("x-chroma-token", token);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), expected);
        assert_valid(
            &error,
            &r.json::<Value>().await.unwrap(),
            "auth error answer",
        );
    }
}

/// Property tests: any payload the client can send satisfies the published `CreateJobPayload`;
/// whatever the stand-in answers to a create, valid or not, is in a published shape.
mod invocation_properties {
    use super::*;
    use chroma_sync_operator::chroma::wire::{CreateJobPayload, GitRef};
    use chroma_sync_standin::RunPlan;
    use proptest::collection::{btree_map, vec};
    use proptest::option::of;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    static PAYLOAD: LazyLock<Validator> =
        LazyLock::new(|| schema(PUBLISHED, "components/schemas/CreateJobPayload"));

    fn text(max: usize) -> BoxedStrategy<String> {
        prop_oneof![
            3 => proptest::string::string_regex(&format!("[a-z0-9/._-]{{1,{}}}", max.min(40))).unwrap(),
            1 => proptest::string::string_regex(&format!("\\PC{{0,{}}}", max.min(40))).unwrap(),
            // The longest value allowed.
            1 => proptest::string::string_regex(&format!("\\PC{{{max}}}")).unwrap(),
        ]
        .boxed()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            text(16).prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::from),
                btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn git_ref() -> impl Strategy<Value = GitRef> {
        prop_oneof![
            text(64).prop_map(GitRef::Sha),
            text(255).prop_map(GitRef::Branch),
        ]
    }

    /// Any payload the client's types can hold, with `custom_id` within the SyncRun's limit.
    fn job_payload() -> impl Strategy<Value = CreateJobPayload> {
        (
            of(text(512)),
            of(git_ref()),
            of(text(1024)),
            of(text(120)),
            of(btree_map("[a-z_]{1,12}", json_value(), 0..5)),
        )
            .prop_map(
                |(collection, git_ref, key, custom_id, metadata)| CreateJobPayload {
                    target_collection_name: collection,
                    ref_identifier: git_ref,
                    object_key: key,
                    custom_id,
                    metadata: metadata.map(|m| m.into_iter().collect()),
                },
            )
    }

    struct Live {
        runtime: tokio::runtime::Runtime,
        base: String,
        http: reqwest::Client,
        /// (kind, source id) of one source per kind; the S3 one under `p/`.
        sources: [(&'static str, String); 3],
    }

    /// One stand-in for all cases: runs finish at once, so repeated collections meet 409s.
    static LIVE: LazyLock<Live> = LazyLock::new(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Served on this runtime, which outlives the test that first reads LIVE.
        let (standin, base) = runtime.block_on(support::standin::start("t", &[]));
        standin.set_run_plan(RunPlan {
            pending_ms: 0,
            processing_ms: 0,
            fail_with: None,
        });
        let sources = [
            ("github", json!({"github": {"repository": "o/r"}})),
            (
                "web_scrape",
                json!({"web_scrape": {"starting_url": "https://x.dev"}}),
            ),
            (
                "s3",
                json!({"s3": {"bucket_name": "b", "region": "r", "collection_name": "files",
                                 "aws_credential_id": 1, "path_prefix": "p/"}}),
            ),
        ]
        .map(|(kind, mut body)| {
            body["database_name"] = json!("docs");
            (kind, standin.insert_source(body))
        });
        chroma_sync_operator::chroma::install_crypto_provider();
        Live {
            runtime,
            base,
            http: reqwest::Client::new(),
            sources,
        }
    });

    /// A payload for a source kind: half the time made to follow the kind's rules, otherwise
    /// as generated (mostly breaking them).
    fn run_request() -> impl Strategy<Value = (usize, CreateJobPayload)> {
        (
            0usize..3,
            any::<bool>(),
            job_payload(),
            "[a-e]{1,2}",
            git_ref(),
        )
            .prop_map(|(kind, follow_rules, mut p, collection, git_ref)| {
                if follow_rules {
                    // Few collection names, so that finished ones are met again.
                    p.target_collection_name = Some(collection);
                    if kind == 2 {
                        // S3 runs append: their own collections, or the source's.
                        p.target_collection_name = p
                            .target_collection_name
                            .filter(|c| c.len() == 2)
                            .map(|c| format!("s3-{c}"));
                        p.object_key = Some(format!("p/{}", p.object_key.unwrap_or_default()));
                        p.ref_identifier = None;
                    } else {
                        p.object_key = None;
                        p.custom_id = None;
                        p.metadata = None;
                        p.ref_identifier = (kind == 0).then_some(git_ref);
                    }
                }
                (kind, p)
            })
    }

    fn violations(validator: &Validator, instance: &Value) -> Vec<String> {
        validator
            .iter_errors(instance)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_payload_the_client_sends_satisfies_the_published_schema(payload in job_payload()) {
            let body = serde_json::to_value(&payload).unwrap();
            let errors = violations(&PAYLOAD, &body);
            prop_assert!(errors.is_empty(), "{:?}\n{:#}", errors, body);
            // Unset fields are left out, not sent as null; what is sent reads back the same.
            prop_assert!(body.as_object().unwrap().values().all(|v| !v.is_null()), "{:#}", body);
            prop_assert_eq!(serde_json::from_value::<CreateJobPayload>(body).unwrap(), payload);
        }
    }

    proptest! {
        // Each case is two HTTP calls; 100 keep this at a few seconds.
        #![proptest_config(ProptestConfig::with_cases(100))]

        #[test]
        fn every_answer_to_a_create_is_in_a_published_shape((kind, payload) in run_request()) {
            static SHAPES: LazyLock<[Validator; 4]> = LazyLock::new(|| [
                schema(PUBLISHED, "components/schemas/CreateJobResponse"),
                schema(PUBLISHED, "components/schemas/ErrorResponse"),
                schema(PUBLISHED, "components/schemas/Job"),
                schema(&published_with_flattened_web_kind(), "components/schemas/Job"),
            ]);
            let [created, error, job, web_job] = &*SHAPES;
            let live = &*LIVE;
            let (kind_name, source) = &live.sources[kind];
            live.runtime.block_on(async {
                let r = live.http
                    .post(format!("{}/api/v1/sources/{source}/invocations", live.base))
                    .header("x-chroma-token", "t")
                    .json(&payload)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                if status != 201 {
                    prop_assert!([400, 409].contains(&status), "{} {}", status, v);
                    let errors = violations(error, &v);
                    prop_assert!(errors.is_empty(), "{:?} {}", errors, v);
                    return Ok(());
                }
                let errors = violations(created, &v);
                prop_assert!(errors.is_empty(), "{:?} {}", errors, v);
                let id = v["invocation_id"].as_str().unwrap();
                let r = live.http
                    .get(format!("{}/api/v1/invocations/{id}", live.base))
                    .header("x-chroma-token", "t")
                    .send()
                    .await
                    .unwrap();
                prop_assert_eq!(r.status().as_u16(), 200);
                let v: Value = r.json().await.unwrap();
                let schema = if *kind_name == "web_scrape" { web_job } else { job };
                let errors = violations(schema, &v);
                prop_assert!(errors.is_empty(), "{:?} {:#}", errors, v);
                prop_assert_eq!(
                    v["metadata"]["collection_name"].as_str(),
                    payload.target_collection_name.as_deref().or(Some("files"))
                );
                Ok(())
            })?;
        }
    }
}

/// `get_source` (drift, reconcile-now, adoption): the client asks on the published path, the
/// stand-in answers in the published `Source` shape, and for every example spec the source the
/// service holds (its defaults filled in) shows no difference from the payload it was created
/// from: so adoption of a source made from the same spec always matches. A missing source is
/// `None`, not an error.
#[tokio::test]
async fn get_source_reads_back_what_create_made_without_a_difference() {
    use chroma_sync_operator::chroma::{ChromaClient, ClientConfig, Token};
    let (_, base) = support::standin::start("t", &[]).await;
    let root: Value = serde_saphyr::from_str(PUBLISHED).unwrap();
    let get = &root["paths"]["/api/v1/sources/{source_id}"]["get"];
    assert!(
        get.is_object(),
        "GET /api/v1/sources/{{source_id}} is published"
    );
    assert!(
        get["responses"]["404"].is_object(),
        "and its 404 is published"
    );
    let config = ClientConfig {
        name: "test".into(),
        base_url: base.clone(),
        api_url: base.clone(),
        timeout: std::time::Duration::from_secs(5),
        extra_ca_pem: None,
        limits: Default::default(),
    };
    let client = ChromaClient::new(&config, Default::default()).unwrap();
    let token = Token::new("t").unwrap();
    let source = schema(PUBLISHED, "components/schemas/Source");
    for (name, obj) in examples() {
        let body = operator_body(&obj.spec);
        let id = client.create_source(&token, &body).await.unwrap();
        let held = client.get_source(&token, &id).await.unwrap().unwrap();
        assert_valid(&source, &held, "get answer");
        assert_eq!(held["id"], json!(id));
        assert_eq!(payload::differences(&body, &held), [], "{name}");
    }
    assert_eq!(client.get_source(&token, "no-such-id").await.unwrap(), None);
}

/// The connection check's call (`GET /api/v1/sources?limit=1`, no database: the cheapest the
/// published document offers that proves a token): `limit` is a published parameter and none is
/// required, the stand-in (which checks requests against the document) answers it, and it tells
/// a good token from a refused one.
#[tokio::test]
async fn the_connection_check_is_a_published_call_that_proves_the_token() {
    let (standin, base) = support::standin::start("t", &["v"]).await;
    chroma_sync_operator::chroma::install_crypto_provider();
    let doc: Value = serde_saphyr::from_str(PUBLISHED).unwrap();
    let operation = &doc["paths"]["/api/v1/sources"]["get"];
    let published: Vec<&str> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(published.contains(&"limit"), "{published:?}");
    let required: Vec<&str> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["required"] == json!(true))
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        required.is_empty(),
        "the check sends no database: {required:?}"
    );

    let client = support::chroma::client(base, std::time::Duration::from_secs(5), None);
    let token = |t: &str| chroma_sync_operator::chroma::Token::new(t).unwrap();
    client
        .check_token(&token("t"))
        .await
        .expect("the admin's token passes");
    client
        .check_token(&token("v"))
        .await
        .expect("a viewer's token reads too");
    let refused = client.check_token(&token("wrong")).await.unwrap_err();
    assert!(
        matches!(
            refused,
            chroma_sync_operator::chroma::ChromaError::Api { status: 401, .. }
        ),
        "{refused:?}"
    );
    assert_eq!(standin.calls("list_sources", "200"), 2);
    assert_eq!(standin.calls("list_sources", "401"), 1);
}

/// The Chroma API document (collections), in the stand-in's crate beside the others.
const CHROMA_API: &str = chroma_sync_standin::CHROMA_API_OPENAPI;

/// Whether `path` (no query) is an instance of the published path template `template`.
fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// One request as it reached a recording server: method, path, whether a token header came,
/// and the body.
#[derive(Debug)]
struct Sent {
    method: String,
    path: String,
    token: bool,
    body: Vec<u8>,
}

/// A loopback server that records each request and answers `answer(method, path)` (status,
/// JSON body).
async fn recording_server(
    answer: fn(&str, &str) -> (u16, &'static str),
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Sent>>>) {
    use axum::response::IntoResponse;
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = sent.clone();
    let app = axum::Router::new().fallback(
        move |method: http::Method, uri: http::Uri, headers: http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let path = uri.path_and_query().map_or("", |p| p.as_str()).to_owned();
                let (status, json) = answer(method.as_str(), &path);
                log.lock().unwrap().push(Sent {
                    method: method.to_string(),
                    path,
                    token: headers.contains_key("x-chroma-token"),
                    body: body.into_bytes(),
                });
                (
                    http::StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    json,
                )
                    .into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, sent)
}

/// `spec.sync.keepCollections`' calls to the Chroma API: each request the client sends (the
/// tenant from `GET /api/v2/auth/identity`, then the collection delete) is a published
/// operation (path template and method), carries the published `ApiKeyAuth` header and no
/// body (neither operation publishes one); the stand-in answers both in the published shapes,
/// and a second delete of one collection is its published 404, which the client reads as
/// already gone.
#[tokio::test]
async fn the_collection_delete_is_a_published_chroma_api_call() {
    use chroma_sync_operator::chroma::{ChromaClient, ClientConfig, Deleted, Token};
    let doc: Value = serde_json::from_str(CHROMA_API).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let published = |method: &str, path: &str| -> Option<Value> {
        paths.iter().find_map(|(template, ops)| {
            let op = &ops[method.to_lowercase()];
            (matches_template(template, path) && op.is_object()).then(|| op.clone())
        })
    };
    assert_eq!(
        doc["components"]["securitySchemes"]["ApiKeyAuth"]["name"],
        json!("x-chroma-token"),
        "the same header as Chroma Sync's"
    );

    // What the client sends, recorded.
    chroma_sync_operator::chroma::install_crypto_provider();
    let (recorder, sent) = recording_server(|method, path| match (method, path) {
        ("GET", "/api/v2/auth/identity") => (
            200,
            r#"{"user_id":"u","tenant":"t-1","databases":["my db"]}"#,
        ),
        _ => (200, "{}"),
    })
    .await;
    let client = |base: &str| {
        let config = ClientConfig {
            name: "test".into(),
            base_url: "http://127.0.0.1:9".into(),
            api_url: base.to_owned(),
            timeout: std::time::Duration::from_secs(5),
            extra_ca_pem: None,
            limits: Default::default(),
        };
        ChromaClient::new(&config, Default::default()).unwrap()
    };
    let token = Token::new("t").unwrap();
    let recording = client(&recorder);
    let tenant = recording.tenant(&token).await.unwrap();
    assert_eq!(tenant, "t-1");
    assert_eq!(
        recording
            .delete_collection(&token, &tenant, "my db", "docs-t29401234")
            .await
            .unwrap(),
        Deleted::Now
    );
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent[1].path,
        "/api/v2/tenants/t-1/databases/my%20db/collections/docs-t29401234"
    );
    for request in &sent {
        let op = published(&request.method, &request.path)
            .unwrap_or_else(|| panic!("{} {} is not published", request.method, request.path));
        assert_eq!(op["security"], json!([{"ApiKeyAuth": []}]));
        assert!(request.token, "{request:?} carries the token");
        assert!(
            op["requestBody"].is_null() && request.body.is_empty(),
            "{request:?}"
        );
    }

    // The stand-in answers both in the published shapes.
    let (standin, base) = support::standin::start("t", &[]).await;
    let api = client(&base);
    let sync = support::chroma::client(base.clone(), std::time::Duration::from_secs(5), None);
    let source = sync
        .create_source(&token, &support::chroma::github_payload("acme/keep"))
        .await
        .unwrap();
    let job = chroma_sync_operator::chroma::wire::CreateJobPayload {
        target_collection_name: Some("docs-1".into()),
        ref_identifier: Some(chroma_sync_operator::chroma::wire::GitRef::Branch(
            "main".into(),
        )),
        ..Default::default()
    };
    sync.create_invocation(&token, &source, &job).await.unwrap();
    assert_eq!(
        standin.collections("docs"),
        ["docs-1"],
        "a run makes its collection"
    );
    let http = reqwest::Client::new();
    let identity: Value = http
        .get(format!("{base}/api/v2/auth/identity"))
        .header("x-chroma-token", "t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identity_schema = schema(CHROMA_API, "components/schemas/GetUserIdentityResponse");
    assert_valid(&identity_schema, &identity, "the identity answer");
    let tenant = api.tenant(&token).await.unwrap();
    assert_eq!(tenant, chroma_sync_standin::TENANT);
    let url = format!(
        "{base}{}",
        chroma_sync_operator::chroma::collection_path(&tenant, "docs", "docs-1")
    );
    let deleted = http
        .delete(&url)
        .header("x-chroma-token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    let ok_schema = schema(CHROMA_API, "components/schemas/DeleteCollectionResponse");
    assert_valid(
        &ok_schema,
        &deleted.json().await.unwrap(),
        "the delete answer",
    );
    assert!(standin.collections("docs").is_empty(), "gone");
    let again = http
        .delete(&url)
        .header("x-chroma-token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status().as_u16(),
        404,
        "published: Collection not found"
    );
    let error_schema = schema(CHROMA_API, "components/schemas/ErrorResponse");
    assert_valid(
        &error_schema,
        &again.json().await.unwrap(),
        "the 404 answer",
    );
    assert_eq!(
        api.delete_collection(&token, &tenant, "docs", "docs-1")
            .await
            .unwrap(),
        Deleted::AlreadyGone
    );
    assert_eq!(standin.calls("delete_collection", "404"), 2);
    // Faults apply as to every endpoint: an injected 503 is an error, not "gone".
    standin.set_faults(chroma_sync_standin::Faults {
        endpoints: vec!["delete_collection".into()],
        fail_next: 1,
        ..Default::default()
    });
    let failed = api
        .delete_collection(&token, &tenant, "docs", "docs-1")
        .await;
    assert!(
        matches!(
            failed,
            Err(chroma_sync_operator::chroma::ChromaError::Api { status: 503, .. })
        ),
        "{failed:?}"
    );
}

/// `latest_by_keys` (the recovery of an S3 run's unrecorded create): the body the client sends is
/// the published `LatestByKeysRequest`, on the published path (the stand-in checks the body
/// against the document and answers 400 otherwise), and the published `HashMap` answer decodes
/// to the newest invocation of each key that has one.
#[tokio::test]
async fn latest_by_keys_sends_the_published_body_and_reads_the_published_answer() {
    use chroma_sync_operator::chroma::wire::{CreateJobPayload, LatestByKeysRequest};
    let root: Value = serde_saphyr::from_str(PUBLISHED).unwrap();
    let operation = &root["paths"]["/api/v1/sources/{source_id}/invocations/latest-by-keys"];
    assert_eq!(
        operation["post"]["operationId"], "latest_invocations_by_keys",
        "the published path and method"
    );
    let request = schema(PUBLISHED, "components/schemas/LatestByKeysRequest");
    for keys in [vec![], vec!["p/a".to_owned(), "p/ü b".to_owned()]] {
        let body = serde_json::to_value(LatestByKeysRequest { object_keys: keys }).unwrap();
        assert_valid(&request, &body, "latest-by-keys body");
    }

    let (standin, base) = support::standin::start("t", &[]).await;
    let s3 = standin.insert_source(json!({"database_name": "docs", "s3": {"bucket_name": "b",
        "region": "r", "collection_name": "files", "aws_credential_id": 1, "path_prefix": "p/"}}));
    let client = support::chroma::client(base, std::time::Duration::from_secs(5), None);
    let token = chroma_sync_operator::chroma::Token::new("t").unwrap();
    let mut made = Vec::new();
    for key in ["p/a", "p/a", "p/b"] {
        let payload = CreateJobPayload {
            object_key: Some(key.into()),
            ..Default::default()
        };
        made.push(
            client
                .create_invocation(&token, &s3, &payload)
                .await
                .unwrap(),
        );
    }
    let keys = ["p/a", "p/none"].map(str::to_owned);
    let by_key = client.latest_by_keys(&token, &s3, &keys).await.unwrap();
    assert_eq!(by_key.len(), 1, "{by_key:?}");
    assert_eq!(by_key["p/a"].id, made[1], "the newest of the key");
    assert_eq!(by_key["p/a"].metadata.object_key.as_deref(), Some("p/a"));
    assert_eq!(standin.calls("latest_invocations_by_keys", "200"), 1);
    let unknown = "00000000-0000-0000-0000-000000000000";
    let gone = client.latest_by_keys(&token, unknown, &keys).await;
    assert!(
        matches!(
            gone,
            Err(chroma_sync_operator::chroma::ChromaError::Api { status: 404, .. })
        ),
        "{gone:?}"
    );
}
