//! GitOps health: deploy/argocd/health.lua, run by a real Lua 5.1 interpreter (Argo CD runs
//! gopher-lua, which is 5.1), reads the statuses the operator writes as Argo CD should; and the
//! argocd-cm snippet installs exactly that script.

use chroma_sync_operator::controller::status::{self, Recorded, State, reason};
use chroma_sync_operator::crd::{LastError, SyncSourceStatus};
use serde_json::{Value, json};
use std::process::Command;

const HEALTH: &str = include_str!("../deploy/argocd/health.lua");

/// A JSON value as a Lua table literal.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn object(generation: i64, status: Option<&SyncSourceStatus>, deleting: bool) -> Value {
    let mut metadata = json!({"name": "s", "generation": generation});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-11-28T00:00:00Z");
    }
    json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource", "metadata": metadata,
           "status": status.map(|s| serde_json::to_value(s).unwrap())})
}

#[test]
fn argo_cd_reads_every_state_the_operator_writes() {
    let now = jiff::Timestamp::now();
    let rec = Recorded {
        id: "4d81586e".into(),
        payload_hash: Some("h".into()),
    };
    let error = |code| {
        Some(LastError {
            http_status: Some(code),
            error: None,
            message: "m".into(),
        })
    };
    let stalled = |reason| State::Stalled {
        reason,
        message: "needs a person".into(),
        error: error(409),
    };
    let retrying = State::Reconciling {
        reason: reason::SERVER_ERROR,
        message: "503".into(),
        error: error(503),
    };
    let at = |generation, state: &State, source: Option<&Recorded>| {
        status::next(&SyncSourceStatus::default(), generation, source, state, now)
    };
    let fresh = SyncSourceStatus {
        observed_generation: Some(-1),
        ..Default::default()
    };
    let ready = at(1, &State::Ready, Some(&rec));
    let cases = [
        (
            "new (schema default)",
            object(1, Some(&fresh), false),
            "Progressing",
        ),
        ("created", object(1, Some(&ready), false), "Healthy"),
        (
            "409 SourceExists",
            object(
                1,
                Some(&at(1, &stalled(reason::SOURCE_EXISTS), None)),
                false,
            ),
            "Degraded",
        ),
        (
            "400 InvalidSpec",
            object(2, Some(&at(2, &stalled(reason::INVALID_SPEC), None)), false),
            "Degraded",
        ),
        (
            "401 Unauthorized",
            object(1, Some(&at(1, &stalled(reason::UNAUTHORIZED), None)), false),
            "Degraded",
        ),
        (
            "MissingCredentials",
            object(
                1,
                Some(&at(1, &stalled(reason::MISSING_CREDENTIALS), None)),
                false,
            ),
            "Degraded",
        ),
        (
            "retrying a 503",
            object(1, Some(&at(1, &retrying, None)), false),
            "Progressing",
        ),
        (
            "DatabaseNotFound",
            object(
                1,
                Some(&at(
                    1,
                    &State::Reconciling {
                        reason: reason::DATABASE_NOT_FOUND,
                        message: "404".into(),
                        error: error(404),
                    },
                    None,
                )),
                false,
            ),
            "Progressing",
        ),
        (
            "spec changed, not yet seen",
            object(2, Some(&ready), false),
            "Progressing",
        ),
        ("deleting", object(1, Some(&ready), true), "Progressing"),
    ];
    let cases_lua = format!(
        "return {{\n{}\n}}\n",
        cases
            .iter()
            .map(|(name, obj, want)| format!("  {{ {name:?}, {}, {want:?} }},", lua(obj)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let cases_file = dir.join("health-cases.lua");
    std::fs::write(&cases_file, cases_lua).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("lua5.1")
        .arg(format!("{root}/tests/gitops/health_test.lua"))
        .arg(format!("{root}/deploy/argocd/health.lua"))
        .arg(&cases_file)
        .output()
        .expect("lua5.1 is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "health.lua misread a state:\n{text}");
    assert!(
        text.contains(&format!("{} passed, 0 failed", cases.len())),
        "{text}"
    );
}

#[test]
fn the_argocd_cm_snippet_installs_exactly_health_lua() {
    let cm: Value = serde_yaml::from_str(include_str!("../deploy/argocd/argocd-cm.yaml")).unwrap();
    let script = cm["data"]["resource.customizations.health.chromasync.dev_SyncSource"]
        .as_str()
        .unwrap();
    assert_eq!(script, HEALTH);
}
