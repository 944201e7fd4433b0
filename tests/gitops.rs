//! GitOps: the examples as written (last section), and health on the statuses the operator's own
//! status code writes (SyncSource and SyncRun):
//! - the real kstatus library (Flux health checks, Helm 4 --wait), via tests/kstatus;
//! - deploy/argocd/health.lua in a real Lua 5.1 interpreter (Argo CD runs gopher-lua, 5.1), and
//!   the argocd-cm snippet installs exactly that script;
//! - the Argo CD and Flux examples and README's overlay, built as written (image, token, what is
//!   applied);
//! - the chart's PrometheusRule and Grafana dashboard, which must use only metrics (and labels)
//!   the operator exports.

use chroma_sync_operator::crd::run::{RunPhase, SyncRunStatus};
use chroma_sync_operator::crd::{LastError, SyncSourceStatus};
use chroma_sync_operator::metrics::{Metrics, ObjectCondition};
use chroma_sync_operator::run::{self, decide::Problem};
use chroma_sync_operator::source::Reason;
use chroma_sync_operator::source::status::{self, Recorded, State};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    problem: Option<Problem>,
    deleting: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let status = SyncRunStatus {
        observed_generation: Some(1),
        phase,
        message: failure.map(Into::into),
        conditions: run::decide::conditions(&[], 1, phase, failure, problem, now),
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
    let problem = |reason, message, needs_a_person| {
        Some(Problem {
            reason,
            message,
            needs_a_person,
        })
    };
    let waiting = problem(run::Reason::WaitingForSource, "not Ready", false);
    let exists = problem(run::Reason::InvocationExists, "409", true);
    let invalid = problem(run::Reason::InvalidSpec, "spec.ref", true);
    let paused_run = problem(run::Reason::Paused, "paused", false);
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
        (
            "run paused while processing",
            {
                let mut run = run_object(processing, None, paused_run, false);
                run["metadata"]["annotations"] = json!({"chromasync.dev/paused": "true"});
                run
            },
            "Suspended",
            "InProgress",
        ),
    ]);
    cases.extend(connection_cases());
    cases
}

/// Connections (both kinds) with the status a check writes for each kind of outcome.
fn connection_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    use chroma_sync_operator::connection::Reason;
    use chroma_sync_operator::connection::check::{Outcome, outcome_of, status_of};
    let connection = |kind: &str, outcome: Option<Outcome>| {
        let status = match outcome {
            Some(o) => serde_json::to_value(status_of(
                &Default::default(),
                1,
                &o,
                jiff::Timestamp::now(),
            ))
            .unwrap(),
            None => json!({"observedGeneration": -1}),
        };
        json!({"apiVersion": "chromasync.dev/v1alpha1", "kind": kind,
               "metadata": {"name": "c", "generation": 1}, "status": status})
    };
    let url = "https://sync.example";
    let refused = chroma_sync_operator::chroma::ChromaError::Api {
        status: 401,
        error: None,
        message: "no".into(),
        retry_after: None,
    };
    let down = chroma_sync_operator::chroma::ChromaError::Transport {
        kind: chroma_sync_operator::chroma::TransportKind::Connect,
        message: "connection refused".into(),
    };
    let (namespaced, cluster) = ("ChromaSyncConnection", "ClusterChromaSyncConnection");
    vec![
        (
            "connection new (schema default)",
            connection(namespaced, None),
            "Progressing",
            "InProgress",
        ),
        (
            "connection connected",
            connection(namespaced, Some(outcome_of(url, Ok(())))),
            "Healthy",
            "Current",
        ),
        (
            "cluster connection connected",
            connection(cluster, Some(outcome_of(url, Ok(())))),
            "Healthy",
            "Current",
        ),
        (
            "connection with a refused token",
            connection(namespaced, Some(outcome_of(url, Err(refused)))),
            "Degraded",
            "Failed",
        ),
        (
            "cluster connection unreachable",
            connection(cluster, Some(outcome_of(url, Err(down)))),
            "Progressing",
            "InProgress",
        ),
        (
            "connection without its Secret",
            connection(
                namespaced,
                Some(Outcome::stalled(Reason::MissingCredentials, "no".into())),
            ),
            "Degraded",
            "Failed",
        ),
    ]
}

fn source_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let now = jiff::Timestamp::now();
    let rec = Recorded {
        id: "4d81586e".into(),
        payload_hash: Some("h".into()),
        connection: None,
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
        reason: Reason::ServerError,
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
    let paused = |mut obj: Value| {
        obj["metadata"]["annotations"] = json!({"chromasync.dev/paused": "true"});
        obj
    };
    let pause = State::Paused {
        message: "paused".into(),
    };
    let paused_ready = status::next(&ready, 1, Some(&rec), &pause, now);
    let recreating = State::Reconciling {
        reason: Reason::SourceMissing,
        message: "gone; creating it again".into(),
        error: None,
    };
    let no_db = State::Reconciling {
        reason: Reason::DatabaseNotFound,
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
            object(1, Some(&at(1, &stalled(Reason::SourceExists), None)), false),
            "Degraded",
            "Failed",
        ),
        (
            "400 InvalidSpec",
            object(2, Some(&at(2, &stalled(Reason::InvalidSpec), None)), false),
            "Degraded",
            "Failed",
        ),
        (
            "401 Unauthorized",
            object(1, Some(&at(1, &stalled(Reason::Unauthorized), None)), false),
            "Degraded",
            "Failed",
        ),
        (
            "MissingCredentials",
            object(
                1,
                Some(&at(1, &stalled(Reason::MissingCredentials), None)),
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
        (
            "paused when Ready",
            paused(object(1, Some(&paused_ready), false)),
            "Suspended",
            "Current",
        ),
        (
            "paused when not Ready",
            paused(object(1, Some(&at(1, &pause, None)), false)),
            "Suspended",
            "InProgress",
        ),
        (
            "paused, then its spec changed",
            paused(object(2, Some(&paused_ready), false)),
            "Suspended",
            "InProgress",
        ),
        (
            "SourceMismatch",
            object(
                1,
                Some(&at(1, &stalled(Reason::SourceMismatch), None)),
                false,
            ),
            "Degraded",
            "Failed",
        ),
        (
            "SourceMissing, reported",
            object(
                1,
                Some(&at(1, &stalled(Reason::SourceMissing), Some(&rec))),
                false,
            ),
            "Degraded",
            "Failed",
        ),
        (
            "SourceMissing, recreating",
            object(1, Some(&at(1, &recreating, None)), false),
            "Progressing",
            "InProgress",
        ),
    ]
}

#[test]
fn kstatus_reads_every_state_the_operator_writes() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
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
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
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

/// Both ways to install the check, the argocd-cm patch and the argo-cd chart's values
/// (`configs.cm`, for a Helm-installed Argo CD), hold exactly health.lua for every kind.
#[test]
fn the_argocd_cm_snippet_installs_exactly_health_lua() {
    let cm: Value =
        serde_saphyr::from_str(include_str!("../deploy/argocd/argocd-cm.yaml")).unwrap();
    let values: Value =
        serde_saphyr::from_str(include_str!("../deploy/argocd/argocd-helm-values.yaml")).unwrap();
    let kinds = [
        "SyncSource",
        "SyncRun",
        "ChromaSyncConnection",
        "ClusterChromaSyncConnection",
    ];
    for kind in kinds {
        let key = format!("resource.customizations.health.chromasync.dev_{kind}");
        assert_eq!(cm["data"][&key].as_str(), Some(HEALTH), "{key}");
        assert_eq!(
            values["configs"]["cm"][&key].as_str(),
            Some(HEALTH),
            "argocd-helm-values.yaml: {key}"
        );
    }
}

/// deploy/argocd/notifications-cm.yaml: its trigger fires on the health status health.lua gives
/// a failed SyncSource, SyncRun or connection (Degraded, checked in Lua above), for the
/// operator's group, and sends templates the same ConfigMap defines.
#[test]
fn the_argo_cd_notification_trigger_fires_on_what_health_lua_says_of_a_failure() {
    let cm: Value =
        serde_saphyr::from_str(include_str!("../deploy/argocd/notifications-cm.yaml")).unwrap();
    assert_eq!(cm["metadata"]["name"], "argocd-notifications-cm");
    let data = cm["data"].as_object().unwrap();
    // What health.lua calls a failure, for both kinds (the cases run in real Lua above).
    let degraded: BTreeSet<String> = cases()
        .into_iter()
        .filter(|c| c.2 == "Degraded")
        .map(|c| c.1["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(degraded.contains("SyncSource") && degraded.contains("SyncRun"));
    assert!(HEALTH.contains(r#"hs.status = "Degraded""#));
    let triggers: Vec<_> = data.keys().filter(|k| k.starts_with("trigger.")).collect();
    assert_eq!(triggers.len(), 1, "{triggers:?}");
    let conditions: Vec<Value> =
        serde_saphyr::from_str(data[triggers[0]].as_str().unwrap()).unwrap();
    for condition in &conditions {
        let when = condition["when"].as_str().unwrap();
        assert!(when.contains(".health.status == 'Degraded'"), "{when}");
        assert!(when.contains(".group == 'chromasync.dev'"), "{when}");
        // Every kind health.lua can call Degraded (SyncSource, SyncRun, the connections).
        let named = |kind: &String| when.contains(&format!(".kind == '{kind}'"));
        assert!(
            !when.contains(".kind") || degraded.iter().all(named),
            "{when}"
        );
        for template in condition["send"].as_array().unwrap() {
            let key = format!("template.{}", template.as_str().unwrap());
            let body: Value = serde_saphyr::from_str(data[&key].as_str().unwrap()).unwrap();
            assert!(
                body["message"].as_str().unwrap().contains("Degraded"),
                "{key}"
            );
        }
    }
}

/// deploy/flux/notifications: the Alert, Provider and Receiver fit notification-controller's
/// API (the facts below are its CRDs' as of Flux 2.7: api/v1/reference_types.go and
/// api/v1beta3; the files were validated once against those CRDs with the patch applied); the
/// Alert names the kind and severity the operator posts, which the Alert CRD accepts only with
/// the patch; the Receiver triggers the GitRepository deploy/flux declares; no secret inline.
#[test]
fn the_flux_notification_examples_fit_notification_controllers_api() {
    use kube::Resource;
    const FLUX_KINDS: [&str; 12] = [
        "Bucket",
        "GitRepository",
        "Kustomization",
        "HelmRelease",
        "HelmChart",
        "HelmRepository",
        "ImageRepository",
        "ImagePolicy",
        "ImageUpdateAutomation",
        "OCIRepository",
        "ArtifactGenerator",
        "ExternalArtifact",
    ];
    const RECEIVER_TYPES: [&str; 13] = [
        "generic",
        "generic-hmac",
        "generic-oidc",
        "github",
        "gitlab",
        "bitbucket",
        "harbor",
        "dockerhub",
        "quay",
        "gcr",
        "nexus",
        "acr",
        "cdevents",
    ];
    let sync_run = chroma_sync_operator::crd::run::SyncRun::kind(&()).into_owned();
    let group = "notification.toolkit.fluxcd.io";
    let docs = documents(&read("deploy/flux/notifications/alert.yaml"));
    let provider = the(&docs, "Provider");
    let alert = the(&docs, "Alert");
    assert_eq!(provider["apiVersion"], format!("{group}/v1beta3"));
    assert_eq!(alert["apiVersion"], format!("{group}/v1beta3"));
    assert!(provider["spec"]["type"].is_string());
    // The webhook address is a secret: only by reference.
    assert!(provider["spec"].get("address").is_none());
    assert!(provider["spec"]["secretRef"]["name"].is_string());
    assert_eq!(
        alert["metadata"]["namespace"],
        provider["metadata"]["namespace"]
    );
    assert_eq!(
        alert["spec"]["providerRef"]["name"],
        provider["metadata"]["name"]
    );
    // The operator posts severity `error` for a failed SyncRun (src/kernel/notify.rs).
    assert_eq!(alert["spec"]["eventSeverity"], "error");
    let sources = alert["spec"]["eventSources"].as_array().unwrap();
    assert!(!sources.is_empty());
    for source in sources {
        assert_eq!(source["kind"].as_str(), Some(sync_run.as_str()));
        assert!(source["name"].is_string());
        assert!(!FLUX_KINDS.contains(&source["kind"].as_str().unwrap()));
    }
    // ...so the Alert CRD must accept it: the patch adds exactly that kind to its enum.
    assert_adds_kind("alert-crd-patch.yaml", "eventSources", &sync_run);

    let receiver = &documents(&read("deploy/flux/notifications/receiver.yaml"))[0];
    assert_eq!(receiver["apiVersion"], format!("{group}/v1"));
    assert_eq!(receiver["kind"], "Receiver");
    let spec = &receiver["spec"];
    assert!(RECEIVER_TYPES.contains(&spec["type"].as_str().unwrap()));
    assert!(spec["secretRef"]["name"].is_string());
    let repository = &documents(&read("deploy/flux/gitrepository.yaml"))[0];
    for target in spec["resources"].as_array().unwrap() {
        let kind = target["kind"].as_str().unwrap();
        assert!(
            FLUX_KINDS.contains(&kind),
            "a Receiver cannot trigger {kind}"
        );
        assert_eq!(target["kind"], repository["kind"]);
        assert_eq!(target["apiVersion"], repository["apiVersion"]);
        assert_eq!(target["name"], repository["metadata"]["name"]);
        assert_eq!(
            receiver["metadata"]["namespace"],
            repository["metadata"]["namespace"]
        );
    }
}

/// deploy/flux/notifications/`file` is one JSON patch op that adds `kind` to the enum of kinds
/// a Flux CRD accepts in the list `field` of its spec (its first version's schema).
fn assert_adds_kind(file: &str, field: &str, kind: &str) {
    let patch: Vec<Value> =
        serde_saphyr::from_str(&read(&format!("deploy/flux/notifications/{file}"))).unwrap();
    assert_eq!(patch.len(), 1, "{file}");
    assert_eq!(patch[0]["op"], "add", "{file}");
    assert_eq!(
        patch[0]["path"],
        format!(
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/{field}/items/properties/kind/enum/-"
        ),
        "{file}"
    );
    assert_eq!(patch[0]["value"].as_str(), Some(kind), "{file}");
}

/// deploy/flux/notifications/sync-on-push.yaml: a Receiver that names a SyncSource (by its
/// served apiVersion, in its own namespace), accepted by the Receiver CRD only with the patch
/// beside it (v1 is that CRD's first version as of Flux 2.7: config/crd/bases of
/// notification-controller), and the access notification-controller needs to annotate it: get,
/// list and patch on SyncSources, nothing more, bound per namespace to its ServiceAccount, and an
/// admission policy on that account's SyncSource updates.
/// (The e2e `publish::a_flux_receiver_push_starts_one_run_and_may_do_nothing_else` applies the
/// RBAC to the real apiserver and makes the Receiver's request under it.)
#[test]
fn the_flux_push_receiver_names_a_syncsource_and_brings_its_crd_patch_and_access() {
    use chroma_sync_operator::crd::SyncSource;
    use kube::Resource;
    let receiver = &documents(&read("deploy/flux/notifications/sync-on-push.yaml"))[0];
    assert_eq!(receiver["apiVersion"], "notification.toolkit.fluxcd.io/v1");
    assert_eq!(receiver["kind"], "Receiver");
    assert_eq!(receiver["spec"]["type"], "github");
    assert_eq!(receiver["spec"]["events"], json!(["push"]));
    assert!(receiver["spec"]["secretRef"]["name"].is_string());
    let targets = receiver["spec"]["resources"].as_array().unwrap();
    assert_eq!(targets.len(), 1);
    let kind = SyncSource::kind(&()).into_owned();
    assert_eq!(targets[0]["kind"].as_str(), Some(kind.as_str()));
    assert_eq!(
        targets[0]["apiVersion"].as_str(),
        Some(SyncSource::api_version(&()).as_ref())
    );
    // Same namespace (Flux's --no-cross-namespace-refs lockdown refuses another).
    assert!(targets[0].get("namespace").is_none());

    assert_adds_kind("receiver-crd-patch.yaml", "resources", &kind);

    let access = documents(&read("deploy/flux/notifications/receiver-access.yaml"));
    assert_eq!(access.len(), 4);
    let role = the(&access, "ClusterRole");
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": [SyncSource::group(&())],
            "resources": [SyncSource::plural(&())],
            "verbs": ["get", "list", "patch"],
        }])
    );
    let binding = the(&access, "RoleBinding");
    // No namespace: applied with -n into each namespace it is meant for.
    assert!(binding["metadata"].get("namespace").is_none());
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{
            "kind": "ServiceAccount",
            "name": "notification-controller",
            "namespace": "flux-system",
        }])
    );
    let account = "system:serviceaccount:flux-system:notification-controller";
    let policy = the(&access, "ValidatingAdmissionPolicy");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"];
    assert_eq!(rules[0]["resources"], json!([SyncSource::plural(&())]));
    assert_eq!(rules[0]["operations"], json!(["UPDATE"]));
    let condition = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(condition.contains(&format!("\"{account}\"")), "{condition}");
    let rule = policy["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap();
    // What the e2e test changes and sees denied, each compared before and after.
    assert!(rule.contains("object.spec == oldObject.spec"), "{rule}");
    for kept in ["labels", "finalizers", "ownerReferences"] {
        assert!(
            rule.contains(&format!("oldObject.metadata.{kept}")),
            "{kept}: {rule}"
        );
    }
    let annotation = chroma_sync_operator::crd::FLUX_REQUEST_ANNOTATION;
    assert!(rule.contains(&format!("\"{annotation}\"")), "{rule}");
    let policy_binding = the(&access, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        policy_binding["spec"]["policyName"],
        policy["metadata"]["name"]
    );
    assert_eq!(policy_binding["spec"]["validationActions"], json!(["Deny"]));
}

// The GitOps examples as written (deploy/argocd, deploy/flux, README's overlay), built with the
// cached kubectl and helm (`kubectl kustomize`, `helm template`): no cluster needed.

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/helm/chroma-sync-operator"
);

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documents of a YAML stream, empty ones left out.
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

/// The last line a build script prints: the cached tool (instant once built; `make test` and
/// tests/run.sh build them before any test).
fn cached(script: &str) -> PathBuf {
    let out = Command::new(Path::new(ROOT).join(script)).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("helm-config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("helm-data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?}: {text}{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn kubectl_kustomize(dir: &Path) -> Vec<Value> {
    let kubectl = cached("tests/controlplane/build.sh").join("kubectl");
    documents(&run(&kubectl, &["kustomize", dir.to_str().unwrap()]))
}

fn helm_template(values: &Value, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let helm = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached("tests/helm/build.sh"));
    let file = fresh_dir("values").join("values.yaml");
    std::fs::write(&file, serde_saphyr::to_string(values).unwrap()).unwrap();
    let mut args = vec!["template", "chroma-sync-operator", CHART, "-n", namespace];
    args.extend(["-f", file.to_str().unwrap()]);
    args.extend(extra);
    documents(&run(&helm, &args))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir` (in this repository) as a path relative to `from`: kustomize takes a base only by a
/// relative path.
fn relative(from: &Path, dir: &str) -> String {
    let up = from.components().count() - 1;
    format!("{}{}/{dir}", "../".repeat(up), ROOT.trim_start_matches('/'))
}

/// Builds an overlay over deploy/manifests with kustomize `images` entries.
fn overlay_with_images(images: Value) -> Vec<Value> {
    let dir = fresh_dir("overlay");
    let kustomization = serde_saphyr::to_string(&json!({
        "resources": [relative(&dir, "deploy/manifests")],
        "images": images,
    }))
    .unwrap();
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    kubectl_kustomize(&dir)
}

fn the<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "{kind}s: {found:?}");
    found[0]
}

fn image_of(docs: &[Value]) -> String {
    the(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The image install.yaml deploys, without its tag: what an `images` entry must name.
fn installed_image_name() -> String {
    let image = image_of(&documents(&read("deploy/manifests/install.yaml")));
    image.rsplit_once(':').unwrap().0.to_owned()
}

/// The Secret the documented steps create: `kubectl -n NS create secret generic NAME`.
fn documented_secret(text: &str, namespace: &str, name: &str) -> bool {
    text.contains(&format!(
        "kubectl -n {namespace} create secret generic {name} --from-literal=token="
    ))
}

#[test]
fn the_argo_cd_applications_set_the_image_where_a_sync_keeps_it() {
    // The kustomize Application: kustomize.images rewrites install.yaml's image.
    let app = &documents(&read("deploy/argocd/application.yaml"))[0];
    let images = app["spec"]["source"]["kustomize"]["images"]
        .as_array()
        .unwrap();
    assert_eq!(images.len(), 1);
    // Argo CD's form: <name>=<new name>:<tag>.
    let (name, new) = images[0].as_str().unwrap().split_once('=').unwrap();
    assert_eq!(
        name,
        installed_image_name(),
        "the entry would match nothing"
    );
    let (new_name, tag) = new.rsplit_once(':').unwrap();
    let built = overlay_with_images(
        serde_saphyr::from_str(&format!(
            "[{{name: {name}, newName: {new_name}, newTag: {tag:?}}}]"
        ))
        .unwrap(),
    );
    assert_eq!(image_of(&built), new);

    // The Helm Application: the image in the values; no test pod synced; the default token's
    // Secret is created by the steps in the file's comment and is optional.
    let text = read("deploy/argocd/application-helm.yaml");
    let app = &documents(&text)[0];
    let source = &app["spec"]["source"];
    assert!(
        Path::new(ROOT)
            .join(source["path"].as_str().unwrap())
            .join("Chart.yaml")
            .exists()
    );
    assert_eq!(source["helm"]["skipTests"].as_bool(), Some(true));
    let values = &source["helm"]["valuesObject"];
    let namespace = app["spec"]["destination"]["namespace"].as_str().unwrap();
    let rendered = helm_template(values, namespace, &["--skip-tests"]);
    assert!(rendered.iter().all(|d| d["kind"].as_str() != Some("Pod")));
    assert_eq!(
        image_of(&rendered),
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().unwrap(),
            values["image"]["tag"].as_str().unwrap()
        )
    );
    let secret = values["defaultToken"]["secretName"].as_str().unwrap();
    assert!(documented_secret(&text, namespace, secret), "{text}");
    assert_token_volume_is_optional(&rendered, secret);
}

fn assert_token_volume_is_optional(rendered: &[Value], secret: &str) {
    let volumes = &the(rendered, "Deployment")["spec"]["template"]["spec"]["volumes"];
    let token = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"].as_str() == Some(secret))
        .expect("the default token volume");
    // A missing Secret must not hold the pod in ContainerCreating.
    assert_eq!(
        token["secret"]["optional"].as_bool(),
        Some(true),
        "{token:?}"
    );
}

#[test]
fn the_flux_helmrelease_sets_the_image_and_documents_its_token() {
    let text = read("deploy/flux/helmrelease.yaml");
    let release = &documents(&text)[0];
    let values = &release["spec"]["values"];
    let namespace = release["spec"]["targetNamespace"].as_str().unwrap();
    let rendered = helm_template(values, namespace, &[]);
    assert_eq!(
        image_of(&rendered),
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().unwrap(),
            values["image"]["tag"].as_str().unwrap()
        )
    );
    let secret = values["defaultToken"]["secretName"].as_str().unwrap();
    assert!(documented_secret(&text, namespace, secret), "{text}");
    assert!(
        documented_secret(&read("README.md"), namespace, secret),
        "README.md does not say how to create {namespace}/{secret}"
    );
    assert_token_volume_is_optional(&rendered, secret);
}

/// The objects Flux applies from `path` (relative to this repository): its kustomization.yaml,
/// or, where it has none, every YAML file under it, as Flux's generator does.
fn flux_build(path: &str, target_namespace: Option<&str>) -> Vec<Value> {
    let dir = Path::new(ROOT).join(path);
    let mut docs = if dir.join("kustomization.yaml").exists() {
        kubectl_kustomize(&dir)
    } else {
        let mut files = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(p);
                }
            }
        }
        files
            .iter()
            .flat_map(|f| documents(&std::fs::read_to_string(f).unwrap()))
            .collect()
    };
    if let Some(ns) = target_namespace {
        for doc in &mut docs {
            doc["metadata"]["namespace"] = ns.into();
        }
    }
    docs
}

#[test]
fn the_flux_kustomizations_apply_the_operator_with_its_image_and_no_token() {
    let text = read("deploy/flux/kustomization.yaml");
    let flux = documents(&text);
    assert_eq!(flux.len(), 2);

    // The operator, with the image from spec.images.
    let operator = &flux[0]["spec"];
    let images = operator["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0]["name"].as_str(),
        Some(installed_image_name().as_str())
    );
    assert_eq!(operator["path"].as_str(), Some("./deploy/manifests"));
    let built = overlay_with_images(operator["images"].clone());
    assert_eq!(
        image_of(&built),
        format!(
            "{}:{}",
            images[0]["newName"].as_str().unwrap(),
            images[0]["newTag"].as_str().unwrap()
        )
    );
    for check in operator["healthChecks"].as_array().unwrap() {
        assert!(
            built.iter().any(|d| d["kind"] == check["kind"]
                && d["metadata"]["name"] == check["name"]
                && d["metadata"]["namespace"] == check["namespace"]),
            "health check on something not applied: {check:?}"
        );
    }

    // The sources: SyncSources and SyncRuns only, never a Secret, and the token they name is
    // created by the steps in the file's comment.
    let sources = &flux[1]["spec"];
    let namespace = sources["targetNamespace"].as_str().unwrap();
    let path = sources["path"].as_str().unwrap().trim_start_matches("./");
    let applied = flux_build(path, Some(namespace));
    let kinds: BTreeSet<&str> = applied
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    // What Flux waits on works as written on a real account: SyncSources only (a SyncRun would
    // hold `wait` until its crawl ends), none that needs more than the token (the S3 example's
    // bucket and AWS key).
    assert_eq!(path, "deploy/examples/minimal");
    assert_eq!(
        kinds,
        BTreeSet::from(["SyncSource"]),
        "{path} applies {kinds:?}"
    );
    for source in &applied {
        assert!(source["spec"]["s3"].is_null(), "{source:?}");
    }
    for source in applied.iter().filter(|d| d["kind"] == "SyncSource") {
        let secret = source["spec"]["tokenSecretRef"]["name"].as_str().unwrap();
        assert!(documented_secret(&text, namespace, secret), "{text}");
        assert!(
            documented_secret(&read("README.md"), namespace, secret),
            "README.md does not say how to create {namespace}/{secret}"
        );
    }
}

/// Each minimal example says at its top what a user edits: every field whose value is the
/// user's own (the database and the token Secret), before the first line of YAML.
#[test]
fn the_minimal_examples_name_what_to_edit_first() {
    let dir = Path::new(ROOT).join("deploy/examples/minimal");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for field in ["Works as written", "databaseName", "tokenSecretRef"] {
            assert!(header.contains(field), "{}: {header}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 2, "{seen} minimal examples");
}

/// `make run` applies its stand-in's token before deploy/examples, and that token is the one the
/// examples name and the stand-in accepts.
#[test]
fn make_run_brings_its_own_development_token() {
    let script = read("deploy/local/run.sh");
    let secret_at = script
        .find("apply -f deploy/local/token-secret.yaml")
        .expect("run.sh applies the development token");
    let examples_at = script.find("apply -R -f deploy/examples/").unwrap();
    assert!(secret_at < examples_at);
    let secret = &documents(&read("deploy/local/token-secret.yaml"))[0];
    let token = secret["stringData"]["token"].as_str().unwrap();
    assert!(script.contains(&format!("--token {token}")));
    let name = secret["metadata"]["name"].as_str().unwrap();
    let sets = ["deploy/examples/minimal", "deploy/examples/showcase"];
    for example in sets.iter().flat_map(|set| flux_build(set, None)) {
        if example["kind"] == "SyncSource" {
            assert_eq!(
                example["spec"]["tokenSecretRef"]["name"].as_str(),
                Some(name)
            );
        }
    }
}

/// README's image advice survives a re-apply: its overlay sets the image in what is applied,
/// and it never suggests patching the live Deployment.
#[test]
fn the_readme_sets_the_image_in_what_is_applied() {
    let readme = read("README.md");
    assert!(
        // `kubectl set image deployment/...`, not Helm's `--set image.repository=...`.
        !readme.contains("set image ") && !readme.contains("set image\\"),
        "README advises `kubectl set image`"
    );
    let start = "cat > my-operator/kustomization.yaml <<'EOF'\n";
    let overlay = readme
        .split_once(start)
        .expect("README's overlay")
        .1
        .split_once("\nEOF\n")
        .unwrap()
        .0;
    assert!(readme.contains("kubectl apply --server-side -k my-operator"));
    let mut overlay: Value = serde_saphyr::from_str(overlay).unwrap();
    assert_eq!(
        overlay["resources"][0].as_str(),
        Some("../deploy/manifests")
    );
    let images = overlay["images"].clone();
    assert_eq!(
        images[0]["name"].as_str(),
        Some(installed_image_name().as_str())
    );
    // Built where README puts it: a folder next to deploy/.
    let dir = fresh_dir("readme-overlay").join("my-operator");
    std::fs::create_dir_all(&dir).unwrap();
    overlay["resources"][0] = relative(&dir, "deploy/manifests").into();
    std::fs::write(
        dir.join("kustomization.yaml"),
        serde_saphyr::to_string(&overlay).unwrap(),
    )
    .unwrap();
    let built = kubectl_kustomize(&dir);
    assert_eq!(
        image_of(&built),
        format!(
            "{}:{}",
            images[0]["newName"].as_str().unwrap(),
            images[0]["newTag"].as_str().unwrap()
        )
    );
}

// The chart's monitoring (prometheusRule, grafanaDashboard), rendered with `helm template`: every
// metric its alerts and dashboard use is one the operator exports, with labels it has.

/// Labels a Prometheus scrape adds to every series (those of a ServiceMonitor's targets
/// included). A series' own label of the same name arrives as `exported_<name>`.
const TARGET_LABELS: [&str; 7] = [
    "namespace",
    "job",
    "instance",
    "pod",
    "service",
    "container",
    "endpoint",
];

/// What `/metrics` exports, each metric family with a series: sample name (`_total` of a
/// counter, `_bucket`, `_sum` and `_count` of a histogram) and its label names.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = Metrics::new();
    let took = Duration::from_millis(20);
    metrics.reconciled("SyncSource", took, Some(Reason::ServerError.as_str()));
    metrics.chroma_call("create_source", "201", took);
    metrics.run_phase("Complete", "github", Some(took));
    metrics.source_missing("recreated");
    metrics.drift_checked("ok");
    metrics.sync_tick_skipped();
    metrics.event_dropped();
    metrics.set_leader(true);
    metrics.show_conditions(
        "SyncSource",
        Box::new(|emit| {
            emit(ObjectCondition {
                namespace: "team-a",
                name: "docs",
                type_: "Ready",
                status: "False",
                reason: "Unauthorized",
            })
        }),
    );
    let text = metrics.render();
    let mut families = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (family, kind) = declared.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                series.insert(format!("{family}{suffix}"), BTreeSet::new());
                families.insert(format!("{family}{suffix}"), family.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap();
            let labels = series
                .get_mut(&line[..end])
                .unwrap_or_else(|| panic!("a sample of no declared family: {line}"));
            if line[end..].starts_with('{') {
                let (names, _) = label_names(&line.chars().collect::<Vec<_>>(), end);
                labels.extend(names);
            }
        }
    }
    for (name, labels) in &series {
        // A family without a series here would have its labels unchecked: exercise it above.
        let family = &families[name];
        assert!(
            text.lines()
                .any(|l| l.starts_with(family.as_str()) && !l.starts_with('#')),
            "{family} has no series: give it one in exported()"
        );
        if name.ends_with("_bucket") {
            assert!(labels.contains("le"), "{name}: {labels:?}");
        }
    }
    series
}

/// The label names of the matchers (or the sample's labels) in the `{...}` at `open`, and the
/// index after its `}`.
fn label_names(chars: &[char], open: usize) -> (Vec<String>, usize) {
    assert_eq!(chars[open], '{');
    let mut names = Vec::new();
    let mut i = open + 1;
    loop {
        while chars[i].is_whitespace() || chars[i] == ',' {
            i += 1;
        }
        if chars[i] == '}' {
            return (names, i + 1);
        }
        let start = i;
        while chars[i].is_ascii_alphanumeric() || chars[i] == '_' {
            i += 1;
        }
        names.push(chars[start..i].iter().collect());
        while chars[i].is_whitespace() || "=!~".contains(chars[i]) {
            i += 1;
        }
        i = after_string(chars, i);
    }
}

/// The index after the string literal at `i`.
fn after_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    assert!("\"'`".contains(quote), "not a string at {i}");
    let mut j = i + 1;
    while chars[j] != quote {
        j += if chars[j] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    j + 1
}

/// The metric selectors of a PromQL expression: each metric name with the label names of its
/// matchers. A small lexer, enough for what the chart writes: it skips strings, ranges and
/// durations, numbers, Grafana variables, functions and aggregations (a name before `(`), and
/// the label lists of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const WITH_LABELS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 8] = [
        "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if "\"'`".contains(c) {
            i = after_string(&chars, i);
        } else if c == '[' {
            i += chars[i..].iter().position(|&c| c == ']').unwrap() + 1;
        } else if c == '$' {
            // $var, $__rate_interval, ${var}
            i += 1;
            if chars.get(i) == Some(&'{') {
                i += chars[i..].iter().position(|&c| c == '}').unwrap() + 1;
            }
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (word_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let (labels, end) = label_names(&chars, i);
            found.push((String::new(), labels));
            i = end;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(i);
            let lower = word.to_lowercase();
            if WITH_LABELS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = next + chars[next..].iter().position(|&c| c == ')').unwrap() + 1;
                }
            } else if AGGREGATIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
                || chars.get(next) == Some(&'(')
            {
                // An aggregation, a keyword or a function.
            } else if chars.get(next) == Some(&'{') {
                let (labels, end) = label_names(&chars, next);
                found.push((word, labels));
                i = end;
            } else {
                found.push((word, Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn the_selector_lexer_finds_metrics_and_matchers_only() {
    let expr = r#"histogram_quantile(0.99, sum by (endpoint, le) (label_replace(
        rate(a_bucket{namespace=~"$namespace", code=~"5..|error"}[$__rate_interval]),
        "endpoint", "$1", "exported_endpoint", "(.+)"))) / on (job) group_left (x)
        max without (pod) (b offset 5m) > bool 1e3 or absent(c{d="}"}) unless {__name__="e"}"#;
    assert_eq!(
        selectors(expr),
        [
            ("a_bucket".into(), vec!["namespace".into(), "code".into()]),
            ("b".into(), vec![]),
            ("c".into(), vec!["d".into()]),
            (String::new(), vec!["__name__".into()]),
        ]
    );
}

/// Checks that each selector of `expr` (from `what`) names an exported series and matches only
/// on labels it has; returns the names.
fn check_expression(
    exported: &BTreeMap<String, BTreeSet<String>>,
    what: &str,
    expr: &str,
) -> BTreeSet<String> {
    let found = selectors(expr);
    assert!(!found.is_empty(), "{what}: no metric in {expr}");
    let mut names = BTreeSet::new();
    for (name, matchers) in found {
        let labels = exported
            .get(&name)
            .unwrap_or_else(|| panic!("{what}: {name:?} is not exported (in {expr})"));
        for matcher in &matchers {
            let own = matcher.strip_prefix("exported_").unwrap_or(matcher);
            assert!(
                labels.contains(own) || TARGET_LABELS.contains(&matcher.as_str()),
                "{what}: {name} has no label {matcher:?} (it has {labels:?}; in {expr})"
            );
        }
        names.insert(name);
    }
    names
}

/// Every string under the key `key`, anywhere in `value`.
fn strings_under<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == key => out.push(s),
                    _ => strings_under(v, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

#[test]
fn the_charts_alerts_and_dashboard_use_only_metrics_the_operator_exports() {
    let exported = exported();
    let none = helm_template(&serde_saphyr::from_str("{}").unwrap(), "ops", &[]);
    for kind in ["PrometheusRule", "ConfigMap"] {
        assert!(
            none.iter().all(|d| d["kind"].as_str() != Some(kind)),
            "{kind} rendered by default"
        );
    }
    let values = serde_saphyr::from_str(
        "{prometheusRule: {enabled: true, additionalLabels: {release: prometheus}},
          grafanaDashboard: {enabled: true, annotations: {grafana_folder: Chroma}}}",
    )
    .unwrap();
    let rendered = helm_template(&values, "ops", &[]);

    // The alerts: each expression on exported metrics, with a duration, a severity and words.
    let rule = the(&rendered, "PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            let name = alert["alert"].as_str().unwrap();
            let expr = alert["expr"].as_str().unwrap();
            used.extend(check_expression(&exported, name, expr));
            assert!(alert["for"].as_str().is_some(), "{name}");
            assert!(alert["labels"]["severity"].as_str().is_some(), "{name}");
            assert!(alert["annotations"]["description"].as_str().is_some());
            alerts.insert(name);
        }
    }
    assert_eq!(
        alerts,
        BTreeSet::from([
            "ChromaSyncChromaErrors",
            "ChromaSyncNoLeader",
            "ChromaSyncObjectNotReady"
        ])
    );
    for name in [
        "chroma_sync_operator_condition",
        "chroma_sync_operator_chroma_requests_total",
        "chroma_sync_operator_leader",
    ] {
        assert!(used.contains(name), "no alert on {name}: {used:?}");
    }
    let not_ready = &rule["spec"]["groups"][0]["rules"][0]["expr"];
    assert!(
        not_ready.as_str().unwrap().contains(&format!(
            r#"reason!~"{}|{}""#,
            Reason::Paused,
            run::Reason::Processing
        )),
        "{not_ready:?}"
    );

    // The dashboard: the ConfigMap Grafana's sidecar picks up, holding the chart's file as is.
    let map = the(&rendered, "ConfigMap");
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    assert_eq!(
        map["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("Chroma")
    );
    let json = map["data"]["chroma-sync-operator.json"].as_str().unwrap();
    assert_eq!(
        json.trim_end(),
        read("deploy/helm/chroma-sync-operator/dashboards/chroma-sync-operator.json").trim_end()
    );
    let dashboard: Value = serde_json::from_str(json).unwrap();
    let mut exprs = Vec::new();
    strings_under(&dashboard["panels"], "expr", &mut exprs);
    let mut used = BTreeSet::new();
    for expr in &exprs {
        used.extend(check_expression(&exported, "dashboard", expr));
    }
    // Template variables: label_values(metric, label).
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let args = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("an unknown variable query: {query}"));
        let (metric, label) = args.split_once(',').unwrap();
        check_expression(
            &exported,
            "dashboard variable",
            &format!("{}{{{}=\"\"}}", metric.trim(), label.trim()),
        );
    }
    for name in [
        "chroma_sync_operator_condition",
        "chroma_sync_operator_reconciles_total",
        "chroma_sync_operator_reconcile_errors_total",
        "chroma_sync_operator_chroma_requests_total",
        "chroma_sync_operator_chroma_request_duration_seconds_bucket",
        "chroma_sync_operator_runs_total",
        "chroma_sync_operator_leader",
    ] {
        assert!(used.contains(name), "no panel on {name}: {used:?}");
    }
    // Panel ids are unique (Grafana keys panels by them).
    let mut ids = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        ids.push(panel["id"].as_u64().unwrap());
    }
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

/// The four CRDs of `docs`, each with the annotations that keep every tool from deleting it.
fn assert_crds_kept(docs: &[Value], path: &str) {
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("CustomResourceDefinition"))
        .collect();
    assert_eq!(crds.len(), 4, "{path}: the CRDs");
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let annotations = &crd["metadata"]["annotations"];
        for (key, value) in chroma_sync_operator::crd::KEEP_ANNOTATIONS {
            assert_eq!(
                annotations[key].as_str(),
                Some(value),
                "{path}: {name} {key}"
            );
        }
    }
}

/// Every GitOps example prunes (or deletes its release) and still keeps the CRDs: Argo CD's
/// Applications (kustomize and Helm), Flux's Kustomization (`prune: true`) and its HelmRelease.
#[test]
fn no_gitops_example_prunes_or_deletes_the_crds() {
    let app = &documents(&read("deploy/argocd/application.yaml"))[0];
    assert_eq!(
        app["spec"]["syncPolicy"]["automated"]["prune"].as_bool(),
        Some(true)
    );
    let path = app["spec"]["source"]["path"].as_str().unwrap();
    assert_crds_kept(&kubectl_kustomize(&Path::new(ROOT).join(path)), path);

    let app = &documents(&read("deploy/argocd/application-helm.yaml"))[0];
    assert_eq!(
        app["spec"]["syncPolicy"]["automated"]["prune"].as_bool(),
        Some(true)
    );
    let source = &app["spec"]["source"];
    let namespace = app["spec"]["destination"]["namespace"].as_str().unwrap();
    let rendered = helm_template(
        &source["helm"]["valuesObject"],
        namespace,
        &["--skip-tests"],
    );
    assert_crds_kept(&rendered, "application-helm.yaml");

    let flux = documents(&read("deploy/flux/kustomization.yaml"));
    let operator = &flux[0]["spec"];
    assert_eq!(operator["prune"].as_bool(), Some(true));
    let path = operator["path"].as_str().unwrap();
    assert_crds_kept(&flux_build(path, None), path);

    let release = &documents(&read("deploy/flux/helmrelease.yaml"))[0];
    let namespace = release["spec"]["targetNamespace"].as_str().unwrap();
    let rendered = helm_template(&release["spec"]["values"], namespace, &[]);
    assert_crds_kept(&rendered, "helmrelease.yaml");
}
