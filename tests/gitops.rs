//! GitOps: the examples as written (last section), and health on the statuses the operator's own
//! status code writes (SyncSource and SyncRun):
//! - the real kstatus library (Flux health checks, Helm 4 --wait), via tests/kstatus;
//! - deploy/argocd/health.lua in a real Lua 5.1 interpreter (Argo CD runs gopher-lua, 5.1), and
//!   the argocd-cm snippet installs exactly that script;
//! - the Argo CD and Flux examples and README's overlay, built as written (image, token, what is
//!   applied).

use chroma_sync_operator::controller::Reason;
use chroma_sync_operator::controller::status::{self, Recorded, State};
use chroma_sync_operator::crd::run::{RunPhase, SyncRunStatus};
use chroma_sync_operator::crd::{LastError, SyncSourceStatus};
use chroma_sync_operator::runs;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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
    let paused_run = Some((runs::decide::reason::PAUSED, "paused", false));
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

fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
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

fn kubectl_kustomize(dir: &Path) -> Vec<serde_yaml::Value> {
    let kubectl = cached("tests/controlplane/build.sh").join("kubectl");
    documents(&run(&kubectl, &["kustomize", dir.to_str().unwrap()]))
}

fn helm_template(
    values: &serde_yaml::Value,
    namespace: &str,
    extra: &[&str],
) -> Vec<serde_yaml::Value> {
    let helm = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached("tests/helm/build.sh"));
    let file = fresh_dir("values").join("values.yaml");
    std::fs::write(&file, serde_yaml::to_string(values).unwrap()).unwrap();
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
fn overlay_with_images(images: serde_yaml::Value) -> Vec<serde_yaml::Value> {
    let dir = fresh_dir("overlay");
    let kustomization = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([
        (
            "resources".into(),
            serde_yaml::Value::Sequence(vec![relative(&dir, "deploy/manifests").into()]),
        ),
        ("images".into(), images),
    ]))
    .unwrap();
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    kubectl_kustomize(&dir)
}

fn the<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "{kind}s: {found:?}");
    found[0]
}

fn image_of(docs: &[serde_yaml::Value]) -> String {
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
        .as_sequence()
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
        serde_yaml::from_str(&format!(
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

fn assert_token_volume_is_optional(rendered: &[serde_yaml::Value], secret: &str) {
    let volumes = &the(rendered, "Deployment")["spec"]["template"]["spec"]["volumes"];
    let token = volumes
        .as_sequence()
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
fn flux_build(path: &str, target_namespace: Option<&str>) -> Vec<serde_yaml::Value> {
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
    let images = operator["images"].as_sequence().unwrap();
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
    for check in operator["healthChecks"].as_sequence().unwrap() {
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
    assert_eq!(
        kinds,
        BTreeSet::from(["SyncRun", "SyncSource"]),
        "{path} applies {kinds:?}"
    );
    for source in applied.iter().filter(|d| d["kind"] == "SyncSource") {
        let secret = source["spec"]["tokenSecretRef"]["name"].as_str().unwrap();
        assert!(documented_secret(&text, namespace, secret), "{text}");
        assert!(
            documented_secret(&read("README.md"), namespace, secret),
            "README.md does not say how to create {namespace}/{secret}"
        );
    }
}

/// `make run` applies its stand-in's token before deploy/examples, and that token is the one the
/// examples name and the stand-in accepts.
#[test]
fn make_run_brings_its_own_development_token() {
    let script = read("deploy/local/run.sh");
    let secret_at = script
        .find("apply -f deploy/local/token-secret.yaml")
        .expect("run.sh applies the development token");
    let examples_at = script.find("apply -f deploy/examples/").unwrap();
    assert!(secret_at < examples_at);
    let secret = &documents(&read("deploy/local/token-secret.yaml"))[0];
    let token = secret["stringData"]["token"].as_str().unwrap();
    assert!(script.contains(&format!("--token {token}")));
    let name = secret["metadata"]["name"].as_str().unwrap();
    for example in flux_build("deploy/examples", None) {
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
    let mut overlay: serde_yaml::Value = serde_yaml::from_str(overlay).unwrap();
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
        serde_yaml::to_string(&overlay).unwrap(),
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
