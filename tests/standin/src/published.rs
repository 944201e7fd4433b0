//! The invocation requests' rules, from the published OpenAPI document (JSON Schema 2020-12,
//! [`PUBLISHED_OPENAPI`](crate::PUBLISHED_OPENAPI)). Bodies are checked against the document
//! itself, not against the operator's types, so a mistake in those cannot hide behind a matching
//! mistake here.

use crate::PUBLISHED_OPENAPI as PUBLISHED;
use jsonschema::Validator;
use serde_json::Value;

/// The one place this document's YAML is parsed.
fn parse_yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("the published OpenAPI document parses")
}

pub struct Published {
    job_payload: Validator,
    latest_by_keys: Validator,
}

impl Published {
    pub fn load() -> Self {
        let doc = parse_yaml(PUBLISHED);
        let compile = |name: &str| {
            let mut root = doc.clone();
            root["$ref"] = Value::String(format!("#/components/schemas/{name}"));
            jsonschema::draft202012::new(&root).expect("the published schema compiles")
        };
        Self {
            job_payload: compile("CreateJobPayload"),
            latest_by_keys: compile("LatestByKeysRequest"),
        }
    }

    /// A `create_job` body against `CreateJobPayload`; `Err` names the field, as the service's
    /// 400 would.
    pub fn check_job_payload(&self, body: &Value) -> Result<(), String> {
        first_error(&self.job_payload, body)
    }

    /// A `latest_invocations_by_keys` body against `LatestByKeysRequest`.
    pub fn check_latest_by_keys(&self, body: &Value) -> Result<(), String> {
        first_error(&self.latest_by_keys, body)
    }
}

/// The first error, as `field.path: message` (`body: ..` for the whole body). Both schemas are
/// plain objects, not a `oneOf`, so the validator's own path names the field.
fn first_error(validator: &Validator, body: &Value) -> Result<(), String> {
    match validator.iter_errors(body).next() {
        None => Ok(()),
        Some(e) => {
            let path = e.instance_path().to_string();
            let path = path.trim_start_matches('/').replace('/', ".");
            let at = if path.is_empty() { "body" } else { &path };
            Err(format!("{at}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_field_that_breaks_the_published_schema() {
        let p = Published::load();
        assert_eq!(p.check_job_payload(&json!({})), Ok(()));
        let full = json!({"target_collection_name": "c", "ref_identifier": {"branch": "main"},
            "object_key": "k", "custom_id": "x".repeat(120), "metadata": {"a": [1]}});
        assert_eq!(p.check_job_payload(&full), Ok(()));
        // Nullable fields take null.
        let nulls = json!({"target_collection_name": null, "ref_identifier": null,
            "object_key": null, "custom_id": null, "metadata": null});
        assert_eq!(p.check_job_payload(&nulls), Ok(()));
        for (body, field) in [
            (json!({"custom_id": "x".repeat(121)}), "custom_id:"),
            (json!({"metadata": [1]}), "metadata:"),
            (json!({"ref_identifier": {"tag": "v1"}}), "ref_identifier:"),
            (
                json!({"ref_identifier": {"sha": "a", "branch": "b"}}),
                "ref_identifier:",
            ),
            (json!({"ref_identifier": {"sha": 1}}), "ref_identifier:"),
            (json!({"object_key": 5}), "object_key:"),
            (
                json!({"target_collection_name": false}),
                "target_collection_name:",
            ),
            (json!([]), "body:"),
        ] {
            let message = p.check_job_payload(&body).unwrap_err();
            assert!(message.starts_with(field), "{body}: {message}");
        }
        assert_eq!(
            p.check_latest_by_keys(&json!({"object_keys": ["a", "b"]})),
            Ok(())
        );
        let message = p
            .check_latest_by_keys(&json!({"object_keys": [1]}))
            .unwrap_err();
        assert!(message.starts_with("object_keys.0:"), "{message}");
        let message = p.check_latest_by_keys(&json!({})).unwrap_err();
        assert!(message.starts_with("body:"), "{message}");
    }
}
