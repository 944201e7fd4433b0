//! GitOps health, on the statuses the operator's own status code writes (SyncSource and
//! SyncRun):
//! - the real kstatus library (Flux health checks, Helm 4 --wait), via tests/kstatus;
//! - deploy/argocd/health.lua in a real Lua 5.1 interpreter (Argo CD runs gopher-lua, 5.1), and
//!   the argocd-cm snippet installs exactly that script.

use chroma_sync_operator::controller::status::{self, Recorded, State, reason};
use chroma_sync_operator::crd::run::{RunPhase, SyncRunStatus};
use chroma_sync_operator::crd::{LastError, SyncSourceStatus};
use chroma_sync_operator::runs;
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

/// A SyncRun at `generation` whose status has the conditions the run flows derive for `phase`
/// and `problem`.
fn run_object(
    phase: Option<RunPhase>,
    failure: Option<&str>,
    problem: Option<(&str, &str, bool)>,
    deleting: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let status = SyncRunStatus {
        observed_generation: Some(1),
        phase,
        message: failure.map(Into::into),
        conditions: runs::decide::conditions(&[], 1, phase, failure, problem, now),
        ..Default::default()
    };
    let mut obj = object(1, None, deleting);
    obj["kind"] = json!("SyncRun");
    obj["status"] = serde_json::to_value(status).unwrap();
    obj
}

/// `(name, object, what Argo CD should show, what kstatus should compute)`.
fn cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let mut cases = source_cases();
    let mut fresh_run = run_object(None, None, None, false);
    fresh_run["status"] = json!({"observedGeneration": -1});
    let waiting = Some((runs::decide::reason::WAITING_FOR_SOURCE, "not Ready", false));
    let exists = Some((runs::decide::reason::INVOCATION_EXISTS, "409", true));
    let invalid = Some((runs::decide::reason::INVALID_SPEC, "spec.ref", true));
    let (pending, processing, complete, failed) = (
        Some(RunPhase::Pending),
        Some(RunPhase::Processing),
        Some(RunPhase::Complete),
        Some(RunPhase::Failed),
    );
    cases.extend([
        (
            "run new (schema default)",
            fresh_run,
            "Progressing",
            "InProgress",
        ),
        (
            "run waiting for its source",
            run_object(None, None, waiting, false),
            "Progressing",
            "InProgress",
        ),
        (
            "run pending",
            run_object(pending, None, None, false),
            "Progressing",
            "InProgress",
        ),
        (
            "run processing",
            run_object(processing, None, None, false),
            "Progressing",
            "InProgress",
        ),
        (
            "run complete",
            run_object(complete, None, None, false),
            "Healthy",
            "Current",
        ),
        (
            "run failed",
            run_object(failed, Some("no such branch"), None, false),
            "Degraded",
            "Failed",
        ),
        (
            "run refused 409",
            run_object(failed, None, exists, false),
            "Degraded",
            "Failed",
        ),
        (
            "run invalid for its source",
            run_object(None, None, invalid, false),
            "Degraded",
            "Failed",
        ),
        (
            "run deleting",
            run_object(pending, None, None, true),
            "Progressing",
            "Terminating",
        ),
    ]);
    cases
}

fn source_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
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
    let no_db = State::Reconciling {
        reason: reason::DATABASE_NOT_FOUND,
        message: "404".into(),
        error: error(404),
    };
    vec![
        (
            "new (schema default)",
            object(1, Some(&fresh), false),
            "Progressing",
            "InProgress",
        ),
        (
            "created",
            object(1, Some(&ready), false),
            "Healthy",
            "Current",
        ),
        (
            "409 SourceExists",
            object(
                1,
                Some(&at(1, &stalled(reason::SOURCE_EXISTS), None)),
                false,
            ),
            "Degraded",
            "Failed",
        ),
        (
            "400 InvalidSpec",
            object(2, Some(&at(2, &stalled(reason::INVALID_SPEC), None)), false),
            "Degraded",
            "Failed",
        ),
        (
            "401 Unauthorized",
            object(1, Some(&at(1, &stalled(reason::UNAUTHORIZED), None)), false),
            "Degraded",
            "Failed",
        ),
        (
            "MissingCredentials",
            object(
                1,
                Some(&at(1, &stalled(reason::MISSING_CREDENTIALS), None)),
                false,
            ),
            "Degraded",
            "Failed",
        ),
        (
            "retrying a 503",
            object(1, Some(&at(1, &retrying, None)), false),
            "Progressing",
            "InProgress",
        ),
        (
            "DatabaseNotFound",
            object(1, Some(&at(1, &no_db, None)), false),
            "Progressing",
            "InProgress",
        ),
        (
            "spec changed, not yet seen",
            object(2, Some(&ready), false),
            "Progressing",
            "InProgress",
        ),
        (
            "deleting",
            object(1, Some(&ready), true),
            "Progressing",
            "Terminating",
        ),
    ]
}

#[test]
fn kstatus_reads_every_state_the_operator_writes() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bin = dir.join("kstatus");
    let build = Command::new("go")
        .args(["build", "-o", bin.to_str().unwrap(), "."])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kstatus"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod")
        .status()
        .expect("Go builds the kstatus checker");
    assert!(build.success(), "go build of tests/kstatus failed");
    let cases = cases();
    let objects: Vec<Value> = cases
        .iter()
        .map(|(name, obj, _, _)| {
            let mut obj = obj.clone();
            obj["metadata"]["name"] = json!(name.replace([' ', '(', ')', ','], "-"));
            obj
        })
        .collect();
    let mut child = Command::new(&bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_vec(&objects).unwrap().as_slice())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let got: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    let want: Vec<&str> = cases.iter().map(|c| c.3).collect();
    println!("{text}");
    assert_eq!(got, want, "kstatus read:\n{text}");
}

#[test]
fn argo_cd_reads_every_state_the_operator_writes() {
    let cases = cases();
    let cases_lua = format!(
        "return {{\n{}\n}}\n",
        cases
            .iter()
            .map(|(name, obj, want, _)| format!("  {{ {name:?}, {}, {want:?} }},", lua(obj)))
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
    for kind in ["SyncSource", "SyncRun"] {
        let key = format!("resource.customizations.health.chromasync.dev_{kind}");
        assert_eq!(cm["data"][&key].as_str(), Some(HEALTH), "{key}");
    }
}
