//! Contract tests against the Chroma Sync OpenAPI documents (verbatim copies of
//! ../shared/reference): every request body the operator builds must satisfy both the seed
//! document's `CreateSourcePayload` and the published one; every answer of the local stand-in
//! must satisfy the published response schemas. No cluster needed.

use chroma_sync_operator::crd::SyncSource;
use chroma_sync_operator::payload;
use chroma_sync_operator::standin::{StandIn, Tokens};
use jsonschema::Validator;
use serde_json::{Value, json};

const SEED: &str = include_str!("../src/standin/create-source.openapi.yaml");
const PUBLISHED: &str = include_str!("contract/chroma-sync-openapi.yaml");

/// A validator for `#/<pointer>` of an OpenAPI 3.1 document (its schemas are JSON Schema 2020-12).
fn schema(doc: &str, pointer: &str) -> Validator {
    let mut root: Value = serde_yaml::from_str(doc).expect("the OpenAPI document parses");
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

fn examples() -> Vec<(String, SyncSource)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy/examples exists") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
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

#[test]
fn every_request_body_satisfies_the_seed_and_published_schemas() {
    let seed = schema(SEED, "components/schemas/CreateSourcePayload");
    let published = schema(PUBLISHED, "components/schemas/CreateSourcePayload");
    let mut bodies = Vec::new();
    let examples = examples();
    assert_eq!(examples.len(), 3, "one example per source type");
    for (path, obj) in examples {
        bodies.push((path, payload::build(&obj.spec).expect("example builds")));
    }
    for (i, spec) in exhaustive_specs().into_iter().enumerate() {
        let spec = serde_json::from_value(spec).expect("spec decodes");
        bodies.push((
            format!("exhaustive spec {i}"),
            payload::build(&spec).unwrap(),
        ));
    }
    for (what, body) in bodies {
        let body = serde_json::to_value(body).unwrap();
        assert_valid(&seed, &body, &what);
        assert_valid(&published, &body, &what);
    }
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
    let standin = StandIn::new(
        ["docs".to_owned()],
        Tokens {
            admin: ["t".to_owned()].into(),
            viewer: Default::default(),
        },
    );
    let base = standin.start_local().await.unwrap();
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
        let body = payload::build(&obj.spec).unwrap();
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
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["id"], json!(ids[2]), "newest first");

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
        (
            (text(1, 255), text(1, 64), text(1, 512)),
            any::<i32>(),
            of(text(0, 64)),
            of(prop::sample::select(vec!["none", "direct", "metadata"])),
        )
            .prop_map(|((bucket, region, collection), credential, prefix, mode)| {
                json!({"s3": {"bucketName": bucket, "region": region,
                    "collectionName": collection, "awsCredentialId": credential,
                    "pathPrefix": prefix, "triggerMode": mode}})
            })
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
            let body = serde_json::to_value(body.unwrap()).unwrap();
            for (name, validator) in [("seed", &*SEED_PAYLOAD), ("published", &*PUBLISHED_PAYLOAD)] {
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
