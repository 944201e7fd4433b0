//! Pure mapping from a `SyncSource` spec to the service's create payload, the payload's
//! fingerprint, and the natural key that identifies a source within its database.
//!
//! An S3 source's `credentialsSecretRef` is the one part of a payload a spec does not hold: the
//! reconcile reads the Secret and hands its values to [`with_inline_credentials`]. They are part
//! of the fingerprint (a changed key replaces the source, as any changed field does: Chroma Sync
//! has no update call, and a source keeps the key it was created with), which reveals nothing of
//! them (64 bits of a SHA-256); they are never compared with what the service holds (it does not
//! give them back) nor named in a message.

use crate::chroma::wire::{
    self, CreateSourcePayload, InlineAwsCredentials, ListedSource, SourceConfig,
};
use crate::crd::{self, S3AutoSync, SyncSourceSpec};
use sha2::{Digest, Sha256};

/// Why a spec cannot be turned into a payload. Admission rejects all of these first; this is the
/// second line, for objects stored before a stricter CRD was installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// The create-source payload for a spec, field for field.
pub fn build(spec: &SyncSourceSpec) -> Result<CreateSourcePayload, InvalidSpec> {
    let source = match (&spec.github, &spec.web_scrape, &spec.s3) {
        (Some(g), None, None) => SourceConfig::Github(wire::GithubConfig {
            repository: g.repository.clone(),
            app_id: g.app_id.clone(),
            include_globs: g.include_globs.clone(),
        }),
        (None, Some(w), None) => SourceConfig::WebScrape(wire::WebScrapeConfig {
            starting_url: w.starting_url.clone(),
            max_depth: w.max_depth,
            page_limit: w.page_limit,
            include_path_regexes: w.include_path_regexes.clone(),
            exclude_path_regexes: w.exclude_path_regexes.clone(),
        }),
        (None, None, Some(s)) => SourceConfig::S3(wire::S3Config {
            bucket_name: s.bucket_name.clone(),
            region: s.region.clone(),
            collection_name: s.collection_name.clone(),
            aws_credential_id: s.aws_credential_id,
            path_prefix: s.path_prefix.clone(),
            // `triggerMode` is the deprecated name: admission refuses both, and an object
            // stored before that rule has only the old one (`autoSync` is newer than it).
            auto_sync: match s.auto_sync_mode() {
                S3AutoSync::None => None,
                mode => Some(enum_value(&mode)),
            },
            // Filled in from the Secret by `with_inline_credentials`.
            inline_credentials: None,
        }),
        _ => {
            return Err(InvalidSpec(
                "exactly one of github, webScrape or s3 must be set".into(),
            ));
        }
    };
    let chunking = match &spec.chunking {
        None => None,
        Some(c) => Some(match c.kind {
            crd::ChunkingType::TreeSitter if c.max_lines.is_some() => {
                return Err(InvalidSpec(
                    "chunking.maxLines applies only to type lines".into(),
                ));
            }
            crd::ChunkingType::TreeSitter => wire::ChunkingConfig::TreeSitter {
                max_size_bytes: c.max_size_bytes,
            },
            crd::ChunkingType::Lines => wire::ChunkingConfig::Lines {
                max_lines: c.max_lines,
                max_size_bytes: c.max_size_bytes,
            },
        }),
    };
    Ok(CreateSourcePayload {
        database_name: spec.database_name.clone(),
        source,
        chunking,
        embedding: spec.embedding.as_ref().map(|e| wire::EmbeddingConfig {
            dense: e.dense.as_ref().map(dense_model),
            sparse: e.sparse.as_ref().map(|s| wire::SparseEmbeddingConfig {
                key: s.key.clone(),
                model: s.model.map(|m| enum_value(&m)),
            }),
        }),
        embedding_model: spec.embedding_model.as_deref().map(dense_model),
    })
}

/// The S3 payload with the AWS key read from its `credentialsSecretRef`. (Other payloads take
/// no inline credentials and are returned as they are.)
pub fn with_inline_credentials(
    mut payload: CreateSourcePayload,
    keys: InlineAwsCredentials,
) -> CreateSourcePayload {
    if let SourceConfig::S3(s3) = &mut payload.source {
        s3.inline_credentials = Some(keys);
    }
    payload
}

fn dense_model(m: &crd::DenseEmbeddingModel) -> wire::DenseEmbeddingModel {
    wire::DenseEmbeddingModel {
        model: enum_value(&m.model),
        task: m.task.as_ref().map(|t| wire::EmbeddingTask {
            task_name: t.task_name.clone(),
            query_prompt: t.query_prompt.clone(),
            document_prompt: t.document_prompt.clone(),
        }),
    }
}

/// The service's spelling of an enum value: the CRD enums serialise to exactly that.
fn enum_value<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("CRD enums serialise to strings"),
    }
}

/// A short, stable fingerprint of a payload: the first 16 hex digits of the SHA-256 of its JSON
/// (struct fields serialise in declaration order, so equal payloads give equal bytes).
pub fn fingerprint(payload: &CreateSourcePayload) -> String {
    let bytes = serde_json::to_vec(payload).expect("payloads serialise");
    let digest = Sha256::digest(&bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A field where a source held by the service differs from the payload a spec asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// The field as the spec names it, e.g. `github.includeGlobs`.
    pub field: String,
    pub spec: serde_json::Value,
    pub chroma: serde_json::Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (field, spec, chroma) = (&self.field, &self.spec, &self.chroma);
        write!(f, "{field} (spec: {spec}, Chroma: {chroma})")
    }
}

/// Where `held` (a source as `GET /api/v1/sources/{id}` returns it) differs from `payload`: the
/// kind, the database and every field the payload sets. A field the payload leaves out is the
/// service's default, which the operator does not know, so it is not compared. Lists are sets
/// (the spec declares them so), compared without regard to order. Inline AWS keys are not
/// compared: the service does not give them back, and a message must not name them.
pub fn differences(payload: &CreateSourcePayload, held: &serde_json::Value) -> Vec<Difference> {
    let mut wanted = serde_json::to_value(payload).expect("payloads serialise");
    if let Some(s3) = wanted
        .get_mut("s3")
        .and_then(serde_json::Value::as_object_mut)
    {
        s3.remove("aws_access_key_id");
        s3.remove("aws_secret_access_key");
    }
    let kind = |v: &serde_json::Value| {
        ["github", "web_scrape", "s3"]
            .into_iter()
            .find(|k| v.get(k).is_some_and(|x| !x.is_null()))
    };
    if kind(&wanted) != kind(held) {
        let name = |k: Option<&str>| serde_json::json!(k.map(camel));
        return vec![Difference {
            field: "kind".into(),
            spec: name(kind(&wanted)),
            chroma: name(kind(held)),
        }];
    }
    let mut found = Vec::new();
    compare("", &wanted, held, &mut found);
    found
}

fn compare(
    path: &str,
    wanted: &serde_json::Value,
    held: &serde_json::Value,
    found: &mut Vec<Difference>,
) {
    use serde_json::Value;
    match (wanted, held) {
        (Value::Object(w), Value::Object(h)) => {
            for (key, value) in w {
                let at = if path.is_empty() {
                    camel(key)
                } else {
                    format!("{path}.{}", camel(key))
                };
                compare(&at, value, h.get(key).unwrap_or(&Value::Null), found);
            }
        }
        (Value::Array(w), Value::Array(h)) if as_set(w) == as_set(h) => {}
        (w, h) if w == h => {}
        (w, h) => found.push(Difference {
            field: path.to_owned(),
            spec: w.clone(),
            chroma: h.clone(),
        }),
    }
}

fn as_set(items: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    items.iter().map(|v| v.to_string()).collect()
}

/// `include_globs` -> `includeGlobs`: the spec's name for a wire field.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// What makes two sources "the same" to the service within one database: the service answers
/// 409 to a second create with the same key. It is not published; this is the source type's
/// identity, and the stand-in enforces exactly this.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NaturalKey {
    Github {
        repository: String,
    },
    WebScrape {
        starting_url: String,
    },
    S3 {
        bucket_name: String,
        collection_name: String,
    },
}

impl NaturalKey {
    pub fn of_payload(payload: &CreateSourcePayload) -> Self {
        match &payload.source {
            SourceConfig::Github(g) => Self::Github {
                repository: g.repository.clone(),
            },
            SourceConfig::WebScrape(w) => Self::WebScrape {
                starting_url: w.starting_url.clone(),
            },
            SourceConfig::S3(s) => Self::S3 {
                bucket_name: s.bucket_name.clone(),
                collection_name: s.collection_name.clone(),
            },
        }
    }

    /// The key of a listed source; `None` for kinds the operator does not create.
    pub fn of_listed(source: &ListedSource) -> Option<Self> {
        if let Some(g) = &source.github {
            return Some(Self::Github {
                repository: g.repository.clone(),
            });
        }
        if let Some(w) = &source.web_scrape {
            return Some(Self::WebScrape {
                starting_url: w.starting_url.clone(),
            });
        }
        source.s3.as_ref().map(|s| Self::S3 {
            bucket_name: s.bucket_name.clone(),
            collection_name: s.collection_name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::*;
    use serde_json::json;

    #[test]
    fn differences_name_each_field_the_spec_sets_that_chroma_holds_otherwise() {
        let payload = build(&spec(json!({
            "databaseName": "docs",
            "github": {"repository": "acme/app", "includeGlobs": ["*.md", "*.rs"]},
            "chunking": {"type": "lines", "maxLines": 40}
        })))
        .unwrap();
        // As the service renders it: defaults filled in, sets in any order.
        let same = json!({
            "id": "s1", "created_at": "2026-12-02T00:00:00Z", "database_name": "docs",
            "github": {"repository": "acme/app", "app_id": null, "include_globs": ["*.rs", "*.md"]},
            "chunking": {"type": "lines", "max_lines": 40},
            "embedding": {"dense": {"model": "Qwen/Qwen3-Embedding-0.6B"}, "sparse": null}
        });
        assert_eq!(differences(&payload, &same), []);

        let mut other = same.clone();
        other["github"]["include_globs"] = json!(["*.md"]);
        other["chunking"]["max_lines"] = json!(80);
        let found: Vec<String> = differences(&payload, &other)
            .iter()
            .map(|d| d.field.clone())
            .collect();
        assert_eq!(found, ["chunking.maxLines", "github.includeGlobs"]);
        assert_eq!(
            differences(&payload, &other)[0].to_string(),
            "chunking.maxLines (spec: 40, Chroma: 80)"
        );

        let web = json!({"id": "s2", "database_name": "docs",
                         "web_scrape": {"starting_url": "https://a.example"}});
        let d = differences(&payload, &web);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].to_string(),
            r#"kind (spec: "github", Chroma: "webScrape")"#
        );

        let mut elsewhere = same;
        elsewhere["database_name"] = json!("other");
        assert_eq!(differences(&payload, &elsewhere)[0].field, "databaseName");
    }

    fn spec(value: serde_json::Value) -> SyncSourceSpec {
        serde_json::from_value(value).expect("valid spec")
    }

    #[test]
    fn github_spec_maps_field_for_field() {
        let s = spec(json!({
            "databaseName": "docs",
            "github": {"repository": "acme/app", "appId": "42", "includeGlobs": ["*.md"]},
            "chunking": {"type": "lines", "maxLines": 40, "maxSizeBytes": 4096},
            "embedding": {
                "dense": {"model": "Qwen/Qwen3-Embedding-0.6B", "task": {"taskName": "search", "queryPrompt": "q:"}},
                "sparse": {"key": "bm25", "model": "Chroma/BM25"}
            },
            "embeddingModel": {"model": "Qwen/Qwen3-Embedding-0.6B"},
            "tokenSecretRef": {"name": "chroma"},
            "deletionPolicy": "Retain"
        }));
        let body = serde_json::to_value(build(&s).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "database_name": "docs",
                "github": {"repository": "acme/app", "app_id": "42", "include_globs": ["*.md"]},
                "chunking": {"type": "lines", "max_lines": 40, "max_size_bytes": 4096},
                "embedding": {
                    "dense": {"model": "Qwen/Qwen3-Embedding-0.6B", "task": {"task_name": "search", "query_prompt": "q:"}},
                    "sparse": {"key": "bm25", "model": "Chroma/BM25"}
                },
                "embedding_model": {"model": "Qwen/Qwen3-Embedding-0.6B"}
            })
        );
    }

    #[test]
    fn s3_trigger_mode_none_is_left_to_the_service() {
        let base = json!({"databaseName": "d", "s3": {
            "bucketName": "b", "region": "eu-west-1", "collectionName": "c", "awsCredentialId": 7,
            "triggerMode": "none"}});
        let body = serde_json::to_value(build(&spec(base.clone())).unwrap()).unwrap();
        assert_eq!(body["s3"].get("trigger_mode"), None);
        assert_eq!(body["s3"].get("auto_sync"), None);
        let mut direct = base;
        direct["s3"]["triggerMode"] = json!("direct");
        let body = serde_json::to_value(build(&spec(direct)).unwrap()).unwrap();
        // The deprecated name is sent as the published one.
        assert_eq!(body["s3"].get("trigger_mode"), None);
        assert_eq!(body["s3"]["auto_sync"], json!("direct"));
        assert_eq!(body["s3"]["aws_credential_id"], json!(7));
    }

    #[test]
    fn s3_auto_sync_is_sent_as_published_and_wins_over_the_deprecated_name() {
        let s3 = |extra: serde_json::Value| {
            let mut s3 = json!({"bucketName": "b", "region": "r", "collectionName": "c",
                                "awsCredentialId": 7});
            for (k, v) in extra.as_object().unwrap() {
                s3[k] = v.clone();
            }
            let body = build(&spec(json!({"databaseName": "d", "s3": s3}))).unwrap();
            serde_json::to_value(body).unwrap()["s3"].clone()
        };
        assert_eq!(
            s3(json!({"autoSync": "metadata"}))["auto_sync"],
            json!("metadata")
        );
        assert_eq!(s3(json!({"autoSync": "none"})).get("auto_sync"), None);
        assert_eq!(s3(json!({})).get("auto_sync"), None);
        // Admission refuses both; an object stored otherwise goes by the published name.
        let both = s3(json!({"autoSync": "none", "triggerMode": "direct"}));
        assert_eq!(both.get("auto_sync"), None);
        // The same mode under either name is the same payload: renaming the field in a spec
        // does not replace its source.
        assert_eq!(
            s3(json!({"autoSync": "direct"})),
            s3(json!({"triggerMode": "direct"}))
        );
    }

    fn keys(id: &str, secret: &str) -> InlineAwsCredentials {
        InlineAwsCredentials {
            aws_access_key_id: id.into(),
            aws_secret_access_key: secret.into(),
        }
    }

    #[test]
    fn s3_inline_credentials_are_sent_but_never_printed_or_compared() {
        let s = spec(json!({"databaseName": "d", "s3": {
            "bucketName": "b", "region": "r", "collectionName": "c", "autoSync": "direct",
            "credentialsSecretRef": {"name": "aws"}}}));
        let bare = build(&s).unwrap();
        let payload = with_inline_credentials(bare.clone(), keys("AKIA-ID-1", "s3cr3t-value-1"));
        let body = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            body,
            json!({"database_name": "d", "s3": {
                "bucket_name": "b", "region": "r", "collection_name": "c", "auto_sync": "direct",
                "aws_access_key_id": "AKIA-ID-1", "aws_secret_access_key": "s3cr3t-value-1"}})
        );
        let printed = format!("{payload:?} {payload:#?}");
        assert!(
            !printed.contains("AKIA-ID-1") && !printed.contains("s3cr3t"),
            "{printed}"
        );
        assert!(printed.contains("<redacted>"));

        // As the service renders it: a credential id allocated, the keys not given back.
        let held = json!({"id": "x", "database_name": "d", "s3": {
            "bucket_name": "b", "region": "r", "collection_name": "c", "auto_sync": "direct",
            "aws_credential_id": 12}});
        assert_eq!(differences(&payload, &held), []);
        let mut other = held.clone();
        other["s3"]["auto_sync"] = json!("none");
        let found = differences(&payload, &other);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "s3.autoSync");
        assert!(!format!("{found:?}").contains("s3cr3t"));

        // A changed key is a changed payload (the source is replaced); the same key is not.
        let again = with_inline_credentials(bare.clone(), keys("AKIA-ID-1", "s3cr3t-value-1"));
        let rotated = with_inline_credentials(bare.clone(), keys("AKIA-ID-1", "s3cr3t-value-2"));
        assert_eq!(fingerprint(&payload), fingerprint(&again));
        assert_ne!(fingerprint(&payload), fingerprint(&rotated));
        assert_ne!(fingerprint(&payload), fingerprint(&bare));
        // Only S3 payloads take them.
        let web = build(&spec(json!({"databaseName": "d",
            "webScrape": {"startingUrl": "https://x.dev"}})))
        .unwrap();
        assert_eq!(with_inline_credentials(web.clone(), keys("a", "b")), web);
    }

    #[test]
    fn the_s3_fingerprint_is_pinned() {
        // As `the_fingerprint_is_pinned`: an S3 source made before autoSync and inline
        // credentials existed keeps its hash (computed by hand from the compact JSON).
        let s = spec(
            json!({"databaseName": "d", "s3": {"bucketName": "b", "region": "r",
            "collectionName": "c", "awsCredentialId": 7, "pathPrefix": "p/",
            "triggerMode": "none"}}),
        );
        assert_eq!(fingerprint(&build(&s).unwrap()), "cadf129a26981e21");
    }

    #[test]
    fn both_or_neither_source_kind_is_invalid() {
        let both = spec(json!({"databaseName": "d", "github": {"repository": "a/b"},
            "webScrape": {"startingUrl": "https://x.dev"}}));
        assert!(build(&both).is_err());
        let neither = spec(json!({"databaseName": "d"}));
        assert!(build(&neither).is_err());
    }

    #[test]
    fn operator_fields_do_not_change_the_fingerprint() {
        let a = spec(json!({"databaseName": "d", "webScrape": {"startingUrl": "https://x.dev"}}));
        let mut b = a.clone();
        b.deletion_policy = DeletionPolicy::Retain;
        b.token_secret_ref = Some(SecretKeyRef {
            name: "t".into(),
            key: "token".into(),
        });
        assert_eq!(
            fingerprint(&build(&a).unwrap()),
            fingerprint(&build(&b).unwrap())
        );
        let mut c = a.clone();
        c.web_scrape.as_mut().unwrap().max_depth = Some(3);
        assert_ne!(
            fingerprint(&build(&a).unwrap()),
            fingerprint(&build(&c).unwrap())
        );
    }

    #[test]
    fn the_fingerprint_is_pinned() {
        // status.payloadHash of every stored object was computed by this function: if this
        // value moves (a field renamed or reordered in wire.rs, another hash), upgrading the
        // operator replaces every source. Change it only on purpose. (It is the first 8 bytes of
        // the SHA-256 of the compact JSON body, field order as declared: checkable by hand.)
        let s = spec(json!({"databaseName": "docs",
            "github": {"repository": "acme/app", "includeGlobs": ["*.md"]},
            "chunking": {"type": "lines", "maxLines": 40}}));
        assert_eq!(fingerprint(&build(&s).unwrap()), "eb0d5a2b65cf4dc1");
    }

    #[test]
    fn natural_keys_of_payload_and_listing_agree() {
        let p = build(&spec(json!({"databaseName": "d", "s3": {
            "bucketName": "b", "region": "r", "collectionName": "c", "awsCredentialId": 1}})))
        .unwrap();
        let listed: ListedSource = serde_json::from_value(json!({
            "id": "x", "database_name": "d", "created_at": "2026-01-01T00:00:00Z",
            "s3": {"bucket_name": "b", "region": "other", "collection_name": "c"}
        }))
        .unwrap();
        assert_eq!(
            NaturalKey::of_listed(&listed),
            Some(NaturalKey::of_payload(&p))
        );
        let upload: ListedSource =
            serde_json::from_value(json!({"id": "y", "file_upload": {}})).unwrap();
        assert_eq!(NaturalKey::of_listed(&upload), None);
    }
}
