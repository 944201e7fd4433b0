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
