//! The create payload's rules, from the published OpenAPI document (JSON Schema 2020-12), which
//! supersedes the seed one (S3's `auto_sync` and inline AWS keys; the operator's bodies satisfy
//! both, `tests/contract.rs` checks).
//!
//! The whole payload is checked against `CreateSourcePayload`. Because that schema is a `oneOf`,
//! its own errors name no field; so the parts are checked first against their own schemas, and
//! the first failure is reported with the path of the field that broke it. Then the rules the
//! document states in words only: an S3 source's credentials.

use crate::PUBLISHED_OPENAPI as PUBLISHED;
use jsonschema::Validator;
use serde_json::Value;

pub struct Schemas {
    payload: Validator,
    parts: Vec<(&'static str, Validator)>,
}

impl Schemas {
    pub fn load() -> Self {
        let doc: Value =
            serde_saphyr::from_str(PUBLISHED).expect("the published OpenAPI document parses");
        let compile = |pointer: &str| {
            let mut root = doc.clone();
            root["$ref"] = Value::String(format!("#/components/schemas/{pointer}"));
            jsonschema::draft202012::new(&root).expect("the published schema compiles")
        };
        Self {
            payload: compile("CreateSourcePayload"),
            parts: vec![
                ("github", compile("SourceType/oneOf/0/properties/github")),
                (
                    "web_scrape",
                    compile("SourceType/oneOf/1/properties/web_scrape"),
                ),
                ("s3", compile("SourceType/oneOf/2/properties/s3")),
                ("chunking", compile("SourceChunkingConfig")),
                ("embedding", compile("SourceEmbeddingConfig")),
                ("embedding_model", compile("DenseEmbeddingModel")),
            ],
        }
    }

    /// `Err` with a message naming the offending field, as the service's 400 would, and never
    /// repeating an inline AWS key (a validator's message may quote the whole body).
    pub fn check_create(&self, body: &Value) -> Result<(), String> {
        self.check(body).map_err(|message| {
            let mut secrets = Vec::new();
            for k in ["aws_access_key_id", "aws_secret_access_key"] {
                strings_in(&body["s3"][k], &mut secrets);
            }
            secrets
                .into_iter()
                .filter(|v| !v.is_empty())
                .fold(message, |m, value| m.replace(value, "<redacted>"))
        })
    }

    fn check(&self, body: &Value) -> Result<(), String> {
        let Some(obj) = body.as_object() else {
            return Err("body must be a JSON object".into());
        };
        if !obj.get("database_name").is_some_and(Value::is_string) {
            return Err("database_name: required string is missing".into());
        }
        let kinds: Vec<&str> = ["github", "web_scrape", "s3"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if kinds.len() != 1 {
            return Err(format!(
                "exactly one of github, web_scrape, s3 is required (found {})",
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(", ")
                }
            ));
        }
        for (field, validator) in &self.parts {
            let Some(value) = obj.get(*field) else {
                continue;
            };
            if let Some(e) = validator.iter_errors(value).next() {
                let path = e.instance_path().to_string();
                let path = path.trim_start_matches('/').replace('/', ".");
                let at = if path.is_empty() {
                    field.to_string()
                } else {
                    format!("{field}.{path}")
                };
                return Err(format!("{at}: {e}"));
            }
        }
        if let Some(e) = self.payload.iter_errors(body).next() {
            return Err(format!("body: {e}"));
        }
        obj.get("s3").map_or(Ok(()), s3_credentials)
    }
}

/// Every string within `value` (a key sent as a list is still a key).
fn strings_in<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => found.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, found)),
        Value::Object(map) => map.values().for_each(|v| strings_in(v, found)),
        _ => {}
    }
}

/// "Provide either `aws_credential_id` [..], or pass `aws_access_key_id` and
/// `aws_secret_access_key` inline", "Mutually exclusive", "Must be provided together": the
/// published description of the S3 source's credentials (a `null` is as good as absent).
fn s3_credentials(s3: &Value) -> Result<(), String> {
    let set = |field: &str| s3.get(field).is_some_and(|v| !v.is_null());
    let id = set("aws_credential_id");
    match (set("aws_access_key_id"), set("aws_secret_access_key")) {
        (true, false) => {
            Err("s3.aws_secret_access_key: must be provided together with aws_access_key_id".into())
        }
        (false, true) => {
            Err("s3.aws_access_key_id: must be provided together with aws_secret_access_key".into())
        }
        (true, true) if id => Err(
            "s3.aws_credential_id: mutually exclusive with aws_access_key_id/aws_secret_access_key"
                .into(),
        ),
        (false, false) if !id => Err(
            "s3: provide either aws_credential_id or aws_access_key_id and aws_secret_access_key"
                .into(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_field_that_breaks_the_schema() {
        let s = Schemas::load();
        let ok = json!({"database_name": "d", "github": {"repository": "a/b"}});
        assert_eq!(s.check_create(&ok), Ok(()));
        let dup = json!({"database_name": "d", "github": {"repository": "a/b", "include_globs": ["x", "x"]}});
        let msg = s.check_create(&dup).unwrap_err();
        assert!(msg.starts_with("github.include_globs"), "{msg}");
        let neg = json!({"database_name": "d", "web_scrape": {"starting_url": "https://x", "max_depth": -1}});
        let msg = s.check_create(&neg).unwrap_err();
        assert!(msg.starts_with("web_scrape.max_depth"), "{msg}");
        let missing = json!({"database_name": "d", "s3": {"bucket_name": "b"}});
        let msg = s.check_create(&missing).unwrap_err();
        assert!(msg.starts_with("s3"), "{msg}");
        // S3 credentials: an id, or both inline keys, never both nor neither.
        let s3 = |extra: Value| {
            let mut body = json!({"database_name": "d", "s3": {"bucket_name": "b",
                "region": "r", "collection_name": "c"}});
            for (k, v) in extra.as_object().unwrap() {
                body["s3"][k] = v.clone();
            }
            s.check_create(&body)
        };
        assert_eq!(
            s3(json!({"aws_credential_id": 1, "auto_sync": "direct"})),
            Ok(())
        );
        let inline = json!({"aws_access_key_id": "AKIA1", "aws_secret_access_key": "wJalr"});
        assert_eq!(s3(inline.clone()), Ok(()));
        let mut with_null_id = inline.clone();
        with_null_id["aws_credential_id"] = Value::Null;
        assert_eq!(s3(with_null_id), Ok(()));
        for (extra, field) in [
            (json!({}), "s3:"),
            (
                json!({"aws_access_key_id": "AKIA1"}),
                "s3.aws_secret_access_key:",
            ),
            (
                json!({"aws_secret_access_key": "wJalr", "aws_credential_id": 1}),
                "s3.aws_access_key_id:",
            ),
            (
                json!({"aws_access_key_id": "AKIA1", "aws_secret_access_key": "wJalr", "aws_credential_id": 1}),
                "s3.aws_credential_id:",
            ),
            (
                json!({"aws_credential_id": 1, "auto_sync": "sometimes"}),
                "s3.auto_sync:",
            ),
            (json!({"aws_credential_id": "1"}), "s3.aws_credential_id:"),
            // A validator's message quotes the value it refuses: never a key.
            (
                json!({"aws_access_key_id": "AKIA1", "aws_secret_access_key": ["wJalr"]}),
                "s3.aws_secret_access_key:",
            ),
        ] {
            let msg = s3(extra.clone()).unwrap_err();
            assert!(msg.starts_with(field), "{extra}: {msg}");
            assert!(!msg.contains("wJalr") && !msg.contains("AKIA1"), "{msg}");
        }
        let two = json!({"database_name": "d", "github": {"repository": "a/b"}, "s3": {}});
        assert!(s.check_create(&two).unwrap_err().contains("exactly one"));
        let model = json!({"database_name": "d", "github": {"repository": "a/b"}, "embedding_model": {"model": "other"}});
        assert!(
            s.check_create(&model)
                .unwrap_err()
                .starts_with("embedding_model")
        );
    }
}
