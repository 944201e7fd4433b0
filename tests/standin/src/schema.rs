//! The create payload's rules, from the seed document's OpenAPI (JSON Schema 2020-12).
//!
//! The whole payload is checked against `CreateSourcePayload`. Because that schema is a `oneOf`,
//! its own errors name no field; so the parts are checked first against their own schemas, and
//! the first failure is reported with the path of the field that broke it.

use crate::SEED_OPENAPI as SEED;
use jsonschema::Validator;
use serde_json::Value;

pub struct Schemas {
    payload: Validator,
    parts: Vec<(&'static str, Validator)>,
}

impl Schemas {
    pub fn load() -> Self {
        let doc: Value = serde_saphyr::from_str(SEED).expect("the seed OpenAPI document parses");
        let compile = |pointer: &str| {
            let mut root = doc.clone();
            root["$ref"] = Value::String(format!("#/components/schemas/{pointer}"));
            jsonschema::draft202012::new(&root).expect("the seed schema compiles")
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

    /// `Err` with a message naming the offending field, as the service's 400 would.
    pub fn check_create(&self, body: &Value) -> Result<(), String> {
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
        match self.payload.iter_errors(body).next() {
            Some(e) => Err(format!("body: {e}")),
            None => Ok(()),
        }
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
