//! The ways people install the operator, with the real helm and kubectl against the test
//! apiserver: the chart (lint, values schema, template + server-side dry-run, install, upgrade,
//! uninstall, Pod Security), the rendered install.yaml and its kustomize base, and the GitOps
//! examples. (RBAC under the installed identities: rbac.rs.)

use crate::cli::{helm, kubectl};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;

const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/helm/chroma-sync-operator"
);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// (kind, namespace/name) of every object in a YAML stream.
fn object_keys(yaml: &str) -> BTreeSet<(String, String)> {
    documents(yaml)
        .iter()
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
            (
                d["kind"].as_str().unwrap().to_owned(),
                format!("{ns}/{name}"),
            )
        })
        .collect()
}

fn kinds(yaml: &str) -> BTreeSet<String> {
    object_keys(yaml)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect()
}

fn words(list: &str) -> BTreeSet<String> {
    list.split_whitespace().map(String::from).collect()
}

fn fresh_namespace(prefix: &str, restricted: bool) -> String {
    let ns = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let (ok, out) = kubectl(&["create", "namespace", &ns]);
    assert!(ok, "{out}");
    if restricted {
        let (ok, out) = kubectl(&[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ]);
        assert!(ok, "{out}");
    }
    ns
}

#[test]
fn the_chart_follows_the_crate_and_carries_the_crd() {
    let chart: Value = serde_yaml::from_str(&read("deploy/helm/chroma-sync-operator/Chart.yaml"))
        .expect("Chart.yaml");
    assert_eq!(chart["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    for crd in ["syncsources", "syncruns"] {
        assert_eq!(
            read(&format!(
                "deploy/helm/chroma-sync-operator/crds/{crd}.chromasync.dev.yaml"
            )),
            read(&format!("crds/{crd}.chromasync.dev.yaml")),
            "the chart's {crd} CRD is stale: run `make crd`"
        );
    }
}

#[test]
fn helm_lint_passes_and_the_values_schema_refuses_typos() {
    let (ok, out) = helm(&["lint", "--strict", CHART]);
    assert!(ok && out.contains("0 chart(s) failed"), "{out}");

    // Each bad value fails at install time with a message that names it.
    for (value, expect) in [
        ("replica=2", "additional properties 'replica' not allowed"),
        (
            "logFormat=xml",
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        ("concurrency=0", "at '/concurrency': minimum: got 0, want 1"),
        ("chroma.url=sync.trychroma.com", "at '/chroma/url'"),
        ("chroma.timeout=30", "at '/chroma/timeout'"),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        (
            "defaultToken.secret=tok",
            "additional properties 'secret' not allowed",
        ),
        ("metrics.port=70000", "at '/metrics/port'"),
        (
            "chroma.url=http://standin:8080",
            "chroma.url is plain http://, which would send the token unencrypted",
        ),
        (
            "replicas=2,leaderElection.enabled=false",
            "replicas > 1 needs leaderElection.enabled=true",
        ),
    ] {
        let (ok, out) = helm(&["template", "x", CHART, "--set", value]);
        assert!(!ok, "--set {value} was accepted");
        assert!(out.contains(expect), "--set {value}: {out}");
    }
}

/// Every optional part on, rendered and dry-run on the apiserver (which validates each object
/// against its real schema), in a namespace that enforces the restricted Pod Security Standard.
#[test]
fn every_chart_option_renders_objects_the_apiserver_accepts() {
    let ns = fresh_namespace("chart-dry-run", true);
    let (ok, rendered) = helm(&[
        "template",
        "full",
        CHART,
        "-n",
        &ns,
        "--set",
        &format!("watchNamespaces={{{ns},default}}"),
        "--set",
        "defaultToken.secretName=chroma-token,chroma.caBundle.configMapName=corp-ca",
        "--set",
        "networkPolicy.enabled=true,replicas=3,podAnnotations.team=search",
        "--set",
        "nodeSelector.pool=system,tolerations[0].operator=Exists",
    ]);
    assert!(ok, "{rendered}");
    let expected =
        "Deployment NetworkPolicy PodDisruptionBudget Role RoleBinding Service ServiceAccount";
    assert_eq!(kinds(&rendered), words(expected));
    for token_leak in ["stringData", "kind: Secret", "kind: ConfigMap"] {
        assert!(
            !rendered.contains(token_leak),
            "the chart renders {token_leak}"
        );
    }
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-full.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(!out.contains("would violate PodSecurity"), "{out}");

    // The check above is live: a privileged pod template in the same namespace is flagged.
    let (_, out) = kubectl(&[
        "create",
        "deployment",
        "privileged",
        "--image=busybox",
        "-n",
        &ns,
        "--dry-run=server",
    ]);
    assert!(out.contains("would violate PodSecurity"), "{out}");

    // The ServiceMonitor needs the Prometheus Operator's CRD, absent here: rendered only.
    let (ok, out) = helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ]);
    assert!(ok && out.contains("kind: ServiceMonitor"), "{out}");
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_operator() {
    let ns = fresh_namespace("helm", true);
    let (ok, out) = helm(&["install", "op", CHART, "-n", &ns]);
    assert!(ok && out.contains("STATUS: deployed"), "{out}");
    assert!(out.contains("watches all namespaces"), "NOTES: {out}");

    let deployment = |field: &str| {
        let (ok, out) = kubectl(&[
            "get",
            "deployment",
            "op-chroma-sync-operator",
            "-n",
            &ns,
            "-o",
            &format!("jsonpath={field}"),
        ]);
        assert!(ok, "{out}");
        out
    };
    let container = "{.spec.template.spec.containers[0]";
    assert_eq!(
        deployment(&format!(
            "{container}.securityContext.readOnlyRootFilesystem}}"
        )),
        "true"
    );
    assert_eq!(
        deployment("{.spec.template.spec.securityContext.seccompProfile.type}"),
        "RuntimeDefault"
    );
    assert_eq!(
        deployment(&format!("{container}.readinessProbe.httpGet.path}}")),
        "/readyz"
    );
    assert!(deployment(&format!("{container}.args}}")).contains("--concurrency=16"));
    let (ok, out) = kubectl(&["get", "clusterrole", "op-chroma-sync-operator"]);
    assert!(ok, "{out}");

    let (ok, out) = helm(&[
        "upgrade",
        "op",
        CHART,
        "-n",
        &ns,
        "--reuse-values",
        "--set",
        "concurrency=8,logLevel=debug",
    ]);
    assert!(ok && out.contains("REVISION: 2"), "{out}");
    let args = deployment(&format!("{container}.args}}"));
    assert!(args.contains("--concurrency=8"), "{args}");
    assert_eq!(deployment(&format!("{container}.env[0].value}}")), "debug");

    let (ok, out) = helm(&["uninstall", "op", "-n", &ns]);
    assert!(ok, "{out}");
    let (ok, _) = kubectl(&["get", "deployment", "op-chroma-sync-operator", "-n", &ns]);
    assert!(!ok, "the Deployment outlived helm uninstall");
    let (ok, _) = kubectl(&["get", "clusterrole", "op-chroma-sync-operator"]);
    assert!(!ok, "the ClusterRole outlived helm uninstall");
    // Helm never deletes what it installed from crds/: SyncSources (and their sources) stay.
    let (ok, out) = kubectl(&["get", "crd", "syncsources.chromasync.dev"]);
    assert!(ok, "{out}");
}

#[test]
fn install_yaml_is_rendered_from_the_current_chart_and_is_the_kustomize_base() {
    let fresh = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install.yaml");
    let helm_bin = std::env::var("HELM").unwrap();
    let status = std::process::Command::new(Path::new(ROOT).join("deploy/render-install.sh"))
        .args([helm_bin.as_str(), fresh.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let committed = read("deploy/manifests/install.yaml");
    assert!(
        std::fs::read_to_string(&fresh).unwrap() == committed,
        "deploy/manifests/install.yaml is stale: run `make manifests`"
    );
    let expected = "ClusterRole ClusterRoleBinding CustomResourceDefinition Deployment Namespace \
                    PodDisruptionBudget Role RoleBinding Service ServiceAccount";
    assert_eq!(kinds(&committed), words(expected));
    let (ok, built) = kubectl(&["kustomize", &format!("{ROOT}/deploy/manifests")]);
    assert!(ok, "{built}");
    assert_eq!(object_keys(&built), object_keys(&committed));
}

/// The Argo CD and Flux examples point at paths that exist and hold what they expect; the
/// HelmRelease's values pass the chart's schema.
#[test]
fn the_gitops_examples_point_at_what_this_repository_holds() {
    let installed = object_keys(&read("deploy/manifests/install.yaml"));

    let app = &documents(&read("deploy/argocd/application.yaml"))[0];
    let path = app["spec"]["source"]["path"].as_str().unwrap();
    assert!(
        Path::new(ROOT)
            .join(path)
            .join("kustomization.yaml")
            .exists()
    );
    assert_eq!(
        app["spec"]["destination"]["namespace"].as_str(),
        Some("chroma-sync-system")
    );

    let flux = documents(&read("deploy/flux/kustomization.yaml"));
    assert_eq!(flux.len(), 2);
    for kustomization in &flux {
        let path = kustomization["spec"]["path"].as_str().unwrap();
        let (ok, out) = kubectl(&["kustomize", &format!("{ROOT}/{path}")]);
        // Flux generates a kustomization.yaml where a folder has none (deploy/examples).
        assert!(ok || out.contains("unable to find one of"), "{path}: {out}");
        assert!(Path::new(ROOT).join(path).is_dir());
    }
    for check in flux[0]["spec"]["healthChecks"].as_sequence().unwrap() {
        let ns = check["namespace"].as_str().unwrap_or_default();
        let key = (
            check["kind"].as_str().unwrap().to_owned(),
            format!("{ns}/{}", check["name"].as_str().unwrap()),
        );
        assert!(installed.contains(&key), "health check on {key:?}");
    }
    assert_eq!(flux[1]["spec"]["wait"].as_bool(), Some(true));

    let release = &documents(&read("deploy/flux/helmrelease.yaml"))[0];
    let chart = release["spec"]["chart"]["spec"]["chart"].as_str().unwrap();
    assert!(Path::new(ROOT).join(chart).join("Chart.yaml").exists());
    let values = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helmrelease-values.yaml");
    std::fs::write(
        &values,
        serde_yaml::to_string(&release["spec"]["values"]).unwrap(),
    )
    .unwrap();
    let (ok, out) = helm(&["template", "x", CHART, "-f", values.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("replicas: 2") && out.contains("secretName: chroma-token"),
        "{out}"
    );
    let source = &documents(&read("deploy/flux/gitrepository.yaml"))[0];
    assert_eq!(
        release["spec"]["chart"]["spec"]["sourceRef"]["name"],
        source["metadata"]["name"]
    );
}
