//! The ways people install the operator, with the real helm and kubectl against the test
//! apiserver: the chart (lint, values schema, template + server-side dry-run, install, upgrade,
//! uninstall, Pod Security), the rendered install.yaml and its kustomize base, and the GitOps
//! examples. (RBAC under the installed identities: rbac.rs.)

use crate::support::control_plane::kubectl;
use crate::support::helm::helm;
use serde_json::Value;
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

/// The documents of a YAML stream, empty ones left out.
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
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
    let chart: Value = serde_saphyr::from_str(&read("deploy/helm/chroma-sync-operator/Chart.yaml"))
        .expect("Chart.yaml");
    assert_eq!(chart["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    for crd in [
        "syncsources",
        "syncruns",
        "chromasyncconnections",
        "clusterchromasyncconnections",
    ] {
        assert_eq!(
            read(&format!(
                "deploy/helm/chroma-sync-operator/files/crds/{crd}.chromasync.dev.yaml"
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
            "crds.enable=false",
            "additional properties 'enable' not allowed",
        ),
        ("crds.keep=no", "at '/crds/keep'"),
        (
            "logFormat=xml",
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        ("concurrency=0", "at '/concurrency': minimum: got 0, want 1"),
        ("chroma.url=sync.trychroma.com", "at '/chroma/url'"),
        ("chroma.timeout=30", "at '/chroma/timeout'"),
        ("chroma.callsPerSecond=-1", "at '/chroma/callsPerSecond'"),
        ("chroma.callsInFlight=0", "at '/chroma/callsInFlight'"),
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
        (
            "extraEnv[0].value=x",
            "at '/extraEnv/0': missing property 'name'",
        ),
        (
            "extraEnvFrom[0].secretRef.optional=true",
            "at '/extraEnvFrom/0/secretRef': missing property 'name'",
        ),
        ("nameOverride=Bad_Name", "at '/nameOverride'"),
        ("fullnameOverride=a.b", "at '/fullnameOverride'"),
        (
            "podSecurityContext.runAsUser=-1",
            "at '/podSecurityContext/runAsUser': minimum: got -1, want 0",
        ),
        (
            "topologySpreadConstraints[0].maxSkew=0",
            "at '/topologySpreadConstraints/0/maxSkew': minimum: got 0, want 1",
        ),
        (
            "metrics.serviceMonitor.interval=5min",
            "at '/metrics/serviceMonitor/interval'",
        ),
        (
            "metrics.serviceMonitor.relabelings[0].action=explode",
            "at '/metrics/serviceMonitor/relabelings/0/action'",
        ),
        (
            "prometheusRule.labels.release=prometheus",
            "additional properties 'labels' not allowed",
        ),
        (
            "grafanaDashboard.enable=true",
            "additional properties 'enable' not allowed",
        ),
        (
            "grafanaDashboard.labels.grafana_dashboard=1",
            "at '/grafanaDashboard/labels/grafana_dashboard'",
        ),
        ("driftInterval=1d", "at '/driftInterval'"),
        ("eventsAddr=notification-controller", "at '/eventsAddr'"),
        ("chroma.timeout=30", "at '/chroma/timeout'"),
        (
            "leaderElection.leaseDuration=1500ms",
            "at '/leaderElection/leaseDuration'",
        ),
        ("extraArgs[0]=concurrency=4", "at '/extraArgs/0'"),
        ("strategy.type=Blue", "at '/strategy/type'"),
        (
            "livenessProbe.periodSeconds=0",
            "at '/livenessProbe/periodSeconds'",
        ),
    ] {
        let (ok, out) = helm(&["template", "x", CHART, "--set", value]);
        assert!(!ok, "--set {value} was accepted");
        assert!(out.contains(expect), "--set {value}: {out}");
    }
}

/// Every chart value that is not the default: the options the platform engineer reaches for, all
/// at once. (`watchNamespaces` is set per test, to its fresh namespace.)
const FULL_VALUES: &str = r#"
crds: {keep: false}
fullnameOverride: op-full
nameOverride: sync
replicas: 3
defaultToken: {secretName: chroma-token}
chroma:
  caBundle: {configMapName: corp-ca}
networkPolicy:
  enabled: true
  metricsFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
podAnnotations: {team: search}
podLabels: {tier: control}
nodeSelector: {pool: system}
tolerations: [{operator: Exists}]
imagePullSecrets: [{name: regcred}]
metrics:
  port: 9090
  service:
    annotations: {prometheus.io/scrape: "true"}
  serviceMonitor:
    enabled: true
    interval: 15s
    labels: {release: prometheus}
    relabelings:
      - {sourceLabels: [__meta_kubernetes_pod_node_name], targetLabel: node, action: replace}
    metricRelabelings:
      - {sourceLabels: [__name__], regex: "go_.*", action: drop}
prometheusRule:
  enabled: true
  additionalLabels: {release: prometheus}
grafanaDashboard:
  enabled: true
  labels: {grafana_dashboard: "1", team: search}
  annotations: {grafana_folder: Chroma}
extraEnv:
  - {name: HTTPS_PROXY, value: "http://proxy.corp:3128"}
  - name: NO_PROXY
    valueFrom: {configMapKeyRef: {name: proxy, key: no_proxy}}
extraEnvFrom:
  - configMapRef: {name: proxy-env}
  - {secretRef: {name: proxy-auth, optional: true}, prefix: PROXY_}
podSecurityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
clusterConnection:
  create: true
  name: platform-full
  tokenSecretRef: {name: platform-token}
  namespaceSelector: {matchLabels: {chromasync.dev/tenant: platform}}
  namespaces: [search]
  limits: {callsPerSecond: 20, burst: 40, callsInFlight: 8}
  timeout: 1m
leaderElection: {enabled: true, leaseDuration: 1m, renewDeadline: 40s, retryPeriod: 5s}
strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
revisionHistoryLimit: 3
driftInterval: 1h30m
eventsAddr: http://notification-controller.flux-system.svc.cluster.local./
extraArgs: ["--concurrency=4", "--connection-check-interval=1h"]
extraVolumes:
  - {name: corp-token, csi: {driver: secrets-store.csi.k8s.io, readOnly: true}}
extraVolumeMounts:
  - {name: corp-token, mountPath: /var/run/corp, readOnly: true}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 30
  failureThreshold: 5
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  initialDelaySeconds: 2
  periodSeconds: 10
  failureThreshold: 4
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: DoNotSchedule
    labelSelector: {matchLabels: {tier: control}}
"#;

/// Renders the chart with `values` (YAML) and `--set` pairs into namespace `ns`.
fn render(ns: &str, name: &str, values: &str, set: &[&str]) -> String {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-values.yaml"));
    std::fs::write(&file, values).unwrap();
    let mut args = vec![
        "template",
        name,
        CHART,
        "-n",
        ns,
        "-f",
        file.to_str().unwrap(),
    ];
    for pair in set {
        args.extend(["--set", pair]);
    }
    let (ok, rendered) = helm(&args);
    assert!(ok, "{rendered}");
    rendered
}

/// Server-side dry-run of `docs` in `ns`: the apiserver checks each object against its schema
/// (labels included) and, in a restricted namespace, against Pod Security.
fn dry_run(name: &str, docs: &[&Value]) {
    let yaml: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_saphyr::to_string(d).unwrap()))
        .collect();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{name}: {out}");
    assert!(!out.contains("would violate PodSecurity"), "{name}: {out}");
}

/// A ServiceMonitor or PrometheusRule: the Prometheus Operator's kinds.
fn needs_prometheus_operator(doc: &Value) -> bool {
    doc["apiVersion"].as_str() == Some("monitoring.coreos.com/v1")
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

/// A label value Kubernetes accepts: at most 63 characters, alphanumerics, `-`, `_`, `.`, and
/// alphanumeric at both ends (so no `+`).
fn valid_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    v.is_empty()
        || (v.len() <= 63
            && alnum(v.chars().next())
            && alnum(v.chars().last())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// Every optional part on, rendered and dry-run on the apiserver (which validates each object
/// against its real schema), in a namespace that enforces the restricted Pod Security Standard;
/// then the same with the UIDs unset, as OpenShift's restricted SCC needs.
#[test]
fn every_chart_option_renders_objects_the_apiserver_accepts() {
    // The dry-run's ClusterChromaSyncConnection needs its CRD (the dry-run creates none).
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &format!("{ROOT}/crds/"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/clusterchromasyncconnections.chromasync.dev",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}");
    let ns = fresh_namespace("chart-dry-run", true);
    let watch = format!("watchNamespaces={{{ns},default}}");
    let rendered = render(&ns, "full", FULL_VALUES, &[&watch]);
    // Cluster-scoped RBAC in namespaced mode: the tenant roles (tenants.rs) and the operator's
    // reads of cluster connections and namespaces' labels.
    let expected = "ClusterChromaSyncConnection ClusterRole ClusterRoleBinding ConfigMap \
                    CustomResourceDefinition Deployment NetworkPolicy Pod PodDisruptionBudget \
                    PrometheusRule Role RoleBinding Service ServiceAccount ServiceMonitor";
    assert_eq!(kinds(&rendered), words(expected));
    for token_leak in ["stringData", "kind: Secret"] {
        assert!(
            !rendered.contains(token_leak),
            "the chart renders {token_leak}"
        );
    }
    let docs = documents(&rendered);
    // The one ConfigMap is the Grafana dashboard (tests/gitops.rs checks what it shows).
    let maps: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        .collect();
    assert_eq!(maps.len(), 1);
    let data = maps[0]["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["chroma-sync-operator.json"]
    );
    for doc in &docs {
        for (key, value) in doc["metadata"]["labels"].as_object().into_iter().flatten() {
            let value = value.as_str().unwrap();
            assert!(valid_label_value(value), "label {key:?}: {value:?}");
        }
    }
    let values = yaml(FULL_VALUES);

    // crds.keep=false: the CRDs without Helm's keep (uninstall deletes them), still with Flux's
    // and Argo CD's.
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("CustomResourceDefinition"))
        .collect();
    assert_eq!(crds.len(), 4);
    for crd in crds {
        let annotations = &crd["metadata"]["annotations"];
        assert!(annotations["helm.sh/resource-policy"].is_null(), "{crd:?}");
        assert_eq!(
            annotations["kustomize.toolkit.fluxcd.io/prune"].as_str(),
            Some("disabled")
        );
    }

    // The platform's connection, as the values say, its Secret in the release's namespace.
    let connection = find(&docs, "ClusterChromaSyncConnection");
    assert_eq!(
        connection["metadata"]["name"].as_str(),
        Some("platform-full")
    );
    let spec = &connection["spec"];
    assert_eq!(
        spec["tokenSecretRef"]["namespace"].as_str(),
        Some(ns.as_str())
    );
    assert_eq!(spec["tokenSecretRef"]["key"].as_str(), Some("token"));
    assert_eq!(spec["limits"], values["clusterConnection"]["limits"]);
    assert_eq!(
        spec["namespaceSelector"],
        values["clusterConnection"]["namespaceSelector"]
    );
    assert_eq!(spec["timeout"].as_str(), Some("1m"));

    // Names and labels follow fullnameOverride and nameOverride.
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"].as_str(), Some("op-full"));
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/name"].as_str(), Some("sync"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // extraEnv after the chart's own variables, extraEnvFrom as given.
    let env = container["env"].as_array().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "RUST_LOG",
            "POD_NAME",
            "POD_NAMESPACE",
            "HTTPS_PROXY",
            "NO_PROXY"
        ]
    );
    assert_eq!(env[3], values["extraEnv"][0]);
    assert_eq!(env[4], values["extraEnv"][1]);
    assert_eq!(container["envFrom"], values["extraEnvFrom"]);

    // Lease timings and extraArgs become flags, extraArgs last (the binary takes a repeated
    // flag's last value: src/main.rs); strategy, history, probes and volumes as given.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in [
        "--leader-election-lease-duration=1m",
        "--leader-election-renew-deadline=40s",
        "--leader-election-retry-period=5s",
        "--drift-interval=1h30m",
        "--events-addr=http://notification-controller.flux-system.svc.cluster.local./",
    ] {
        assert!(args.contains(&flag), "{flag} not in {args:?}");
    }
    assert_eq!(
        args[args.len() - 2..],
        ["--concurrency=4", "--connection-check-interval=1h"]
    );
    let spec = &deployment["spec"];
    assert_eq!(spec["strategy"], values["strategy"]);
    assert_eq!(spec["revisionHistoryLimit"].as_u64(), Some(3));
    assert_eq!(container["livenessProbe"], values["livenessProbe"]);
    assert_eq!(container["readinessProbe"], values["readinessProbe"]);
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes.last().unwrap(), &values["extraVolumes"][0]);
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts.last().unwrap(), &values["extraVolumeMounts"][0]);

    // Security contexts exactly as given.
    assert_eq!(pod["securityContext"], values["podSecurityContext"]);
    assert_eq!(container["securityContext"], values["securityContext"]);

    // A spread constraint without a labelSelector gets the pods' selector labels; one with a
    // selector keeps it.
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread[0]["labelSelector"]["matchLabels"], *selector);
    assert_eq!(
        spread[0]["topologyKey"].as_str(),
        Some("topology.kubernetes.io/zone")
    );
    assert_eq!(spread[1], values["topologySpreadConstraints"][1]);

    // The ServiceMonitor scrapes at the interval, with both relabeling lists.
    let monitor = find(&docs, "ServiceMonitor");
    let endpoint = &monitor["spec"]["endpoints"][0];
    let wanted = &values["metrics"]["serviceMonitor"];
    assert_eq!(endpoint["interval"].as_str(), Some("15s"));
    assert_eq!(endpoint["relabelings"], wanted["relabelings"]);
    assert_eq!(endpoint["metricRelabelings"], wanted["metricRelabelings"]);
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );

    // The helm test pod probes /readyz through the rendered Service, is not selected by it, and
    // the NetworkPolicy lets it in next to metricsFrom.
    let service = find(&docs, "Service");
    assert_eq!(
        service["metadata"]["annotations"],
        values["metrics"]["service"]["annotations"]
    );
    let test_pod = find(&docs, "Pod");
    assert_eq!(
        test_pod["metadata"]["annotations"]["helm.sh/hook"].as_str(),
        Some("test")
    );
    let url = format!(
        "http://{}.{ns}.svc:{}/readyz",
        service["metadata"]["name"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"].as_u64().unwrap()
    );
    assert!(url.ends_with(":9090/readyz"), "{url}");
    let command = &test_pod["spec"]["containers"][0]["command"];
    assert_eq!(
        *command,
        yaml(&format!("[/chroma-sync-operator, probe, {url:?}]"))
    );
    let service_selector = service["spec"]["selector"].as_object().unwrap();
    let test_labels = test_pod["metadata"]["labels"].as_object().unwrap();
    assert!(
        !service_selector
            .iter()
            .all(|(k, v)| test_labels.get(k) == Some(v)),
        "the Service selects the helm test pod"
    );
    let from = &find(&docs, "NetworkPolicy")["spec"]["ingress"][0]["from"];
    assert_eq!(from[0], values["networkPolicy"]["metricsFrom"][0]);
    assert_eq!(
        from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        test_labels["app.kubernetes.io/component"]
    );

    // The ServiceMonitor and the PrometheusRule need the Prometheus Operator's CRDs, absent
    // here: checked above (and in tests/gitops.rs) only.
    let applicable: Vec<&Value> = docs
        .iter()
        .filter(|d| !needs_prometheus_operator(d))
        .collect();
    dry_run("chart-full", &applicable);

    // OpenShift's restricted SCC assigns the UID: with the IDs unset the pods still meet the
    // restricted Pod Security Standard.
    let unset = "podSecurityContext.runAsUser=null,podSecurityContext.runAsGroup=null";
    let rendered = render(&ns, "full", FULL_VALUES, &[&watch, unset]);
    let docs = documents(&rendered);
    for kind in ["Deployment", "Pod"] {
        let doc = find(&docs, kind);
        let spec = if kind == "Pod" {
            &doc["spec"]
        } else {
            &doc["spec"]["template"]["spec"]
        };
        let context = &spec["securityContext"];
        assert!(
            context["runAsUser"].is_null() && context["runAsGroup"].is_null(),
            "{kind}: {context:?}"
        );
        assert_eq!(context["runAsNonRoot"].as_bool(), Some(true));
    }
    let applicable: Vec<&Value> = docs
        .iter()
        .filter(|d| !needs_prometheus_operator(d))
        .collect();
    dry_run("chart-openshift", &applicable);

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
}

/// The tenant ClusterRoles (tests/e2e/tenants.rs shows what they grant): rendered by default in
/// both modes, aggregated into the built-in roles by label, bound to nobody; off with
/// `rbac.aggregateToDefaultRoles=false` or `rbac.create=false`.
#[test]
fn the_chart_renders_the_tenant_roles_unless_told_not_to() {
    let tenant_roles = |set: &[&str]| -> Vec<(String, Vec<String>)> {
        let rendered = render("tenant-roles", "t", "{}", set);
        documents(&rendered)
            .iter()
            .filter(|d| {
                d["kind"].as_str() == Some("ClusterRole")
                    && d["metadata"]["labels"]
                        .as_object()
                        .is_some_and(|l| l.keys().any(|k| k.contains("aggregate-to-")))
            })
            .map(|d| {
                let mut labels: Vec<String> = d["metadata"]["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/"))
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                    .collect();
                labels.sort();
                (d["metadata"]["name"].as_str().unwrap().to_owned(), labels)
            })
            .collect()
    };
    let expected = vec![
        (
            "t-chroma-sync-operator-view".to_owned(),
            vec![
                "rbac.authorization.k8s.io/aggregate-to-admin=true".to_owned(),
                "rbac.authorization.k8s.io/aggregate-to-edit=true".to_owned(),
                "rbac.authorization.k8s.io/aggregate-to-view=true".to_owned(),
            ],
        ),
        (
            "t-chroma-sync-operator-edit".to_owned(),
            vec![
                "rbac.authorization.k8s.io/aggregate-to-admin=true".to_owned(),
                "rbac.authorization.k8s.io/aggregate-to-edit=true".to_owned(),
            ],
        ),
    ];
    assert_eq!(tenant_roles(&[]), expected);
    assert_eq!(tenant_roles(&["watchNamespaces={team-a}"]), expected);
    assert_eq!(
        tenant_roles(&["rbac.aggregateToDefaultRoles=false"]),
        vec![]
    );
    assert_eq!(tenant_roles(&["rbac.create=false"]), vec![]);
    // Nothing binds them: a RoleBinding to the built-in view or edit is what grants.
    let rendered = render("tenant-roles", "t", "{}", &[]);
    for doc in documents(&rendered) {
        let role = doc["roleRef"]["name"].as_str().unwrap_or_default();
        assert!(
            !role.ends_with("-view") && !role.ends_with("-edit"),
            "{doc:?}"
        );
    }
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_operator() {
    let ns = fresh_namespace("helm", true);
    // The shared control plane's CRDs are the harness's (crds/, server-side applied), as on a
    // cluster where another release or kubectl owns them: this release leaves them alone.
    // (crds.rs installs, upgrades and uninstalls the chart's CRDs on a control plane of its own.)
    let (ok, out) = helm(&[
        "install",
        "op",
        CHART,
        "-n",
        &ns,
        "--set",
        "crds.enabled=false",
    ]);
    assert!(ok && out.contains("STATUS: deployed"), "{out}");
    assert!(out.contains("will watch all namespaces"), "NOTES: {out}");
    // The chart's default image is named by tag: NOTES say what to do if it cannot be pulled.
    assert!(out.contains("ImagePullBackOff"), "NOTES: {out}");
    assert!(
        out.contains("rollout status deploy/op-chroma-sync-operator"),
        "NOTES: {out}"
    );
    assert!(
        out.contains(&format!("helm test op -n {ns}")),
        "NOTES: {out}"
    );

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
    let args = deployment(&format!("{container}.args}}"));
    assert!(args.contains("--concurrency=16"), "{args}");
    assert!(args.contains("--chroma-calls-in-flight=16"), "{args}");
    assert!(!args.contains("--chroma-calls-per-second"), "{args}");
    for role in ["", "-view", "-edit"] {
        let (ok, out) = kubectl(&[
            "get",
            "clusterrole",
            &format!("op-chroma-sync-operator{role}"),
        ]);
        assert!(ok, "{out}");
    }

    let (ok, out) = helm(&[
        "upgrade",
        "op",
        CHART,
        "-n",
        &ns,
        "--reuse-values",
        "--set",
        "concurrency=8,logLevel=debug,chroma.callsPerSecond=20,chroma.burst=2",
    ]);
    assert!(ok && out.contains("REVISION: 2"), "{out}");
    let args = deployment(&format!("{container}.args}}"));
    assert!(args.contains("--concurrency=8"), "{args}");
    assert!(args.contains("--chroma-calls-per-second=20"), "{args}");
    assert!(args.contains("--chroma-burst=2"), "{args}");
    assert_eq!(deployment(&format!("{container}.env[0].value}}")), "debug");

    // `helm test` creates its pod on the real apiserver (restricted namespace) with the probe
    // command. This control plane has no kubelet, so the pod never runs: the test times out.
    let (ok, out) = helm(&["test", "op", "-n", &ns, "--timeout", "5s"]);
    assert!(!ok, "helm test passed without a kubelet: {out}");
    let (ok, command) = kubectl(&[
        "get",
        "pod",
        "op-chroma-sync-operator-test-readyz",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.containers[0].command}",
    ]);
    assert!(ok, "{command}");
    assert_eq!(
        command,
        format!(
            r#"["/chroma-sync-operator","probe","http://op-chroma-sync-operator-metrics.{ns}.svc:8080/readyz"]"#
        )
    );

    let (ok, out) = helm(&["uninstall", "op", "-n", &ns]);
    assert!(ok, "{out}");
    let (ok, _) = kubectl(&["get", "deployment", "op-chroma-sync-operator", "-n", &ns]);
    assert!(!ok, "the Deployment outlived helm uninstall");
    for role in ["", "-view", "-edit"] {
        let role = format!("op-chroma-sync-operator{role}");
        let (ok, _) = kubectl(&["get", "clusterrole", &role]);
        assert!(!ok, "the ClusterRole {role} outlived helm uninstall");
    }
    // A release with crds.enabled=false leaves the CRDs (and every SyncSource) where they were.
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
    for check in flux[0]["spec"]["healthChecks"].as_array().unwrap() {
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
        serde_saphyr::to_string(&release["spec"]["values"]).unwrap(),
    )
    .unwrap();
    let (ok, out) = helm(&["template", "x", CHART, "-f", values.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("replicas: 2") && out.contains("secretName: chroma-sync-token"),
        "{out}"
    );
    let source = &documents(&read("deploy/flux/gitrepository.yaml"))[0];
    assert_eq!(
        release["spec"]["chart"]["spec"]["sourceRef"]["name"],
        source["metadata"]["name"]
    );
}

/// A copy of the chart in a fresh directory, to change or regenerate without touching the tree.
fn chart_copy(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("cp")
        .args(["-r", CHART])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    dir.join("chroma-sync-operator")
}

/// A SemVer build suffix (`+build.7`) is legal in a chart version but not in a label value:
/// `helm.sh/chart` carries it as `_`, and the apiserver accepts every object.
#[test]
fn the_chart_label_survives_a_build_version() {
    let chart = chart_copy("chart-build-version");
    let manifest = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let text = text.replace(
        &format!("\nversion: {version}\n"),
        &format!("\nversion: {version}+build.7\n"),
    );
    assert!(text.contains(&format!("{version}+build.7")));
    std::fs::write(&manifest, text).unwrap();

    let ns = fresh_namespace("chart-label", true);
    let (ok, rendered) = helm(&["template", "x", chart.to_str().unwrap(), "-n", &ns]);
    assert!(ok, "{rendered}");
    let docs = documents(&rendered);
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["helm.sh/chart"].as_str(),
            Some(format!("chroma-sync-operator-{version}_build.7").as_str()),
            "{doc:?}"
        );
    }
    dry_run("chart-build-version", &docs.iter().collect::<Vec<_>>());
}

/// The chart's README.md is what helm-docs makes of README.md.gotmpl and values.yaml now, and its
/// values table describes every value.
#[test]
fn the_chart_readme_is_generated_from_the_current_values() {
    let chart = chart_copy("chart-docs");
    let out = std::process::Command::new(Path::new(ROOT).join("tests/helm/docs.sh"))
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = std::fs::read_to_string(chart.join("README.md")).unwrap();
    let committed = read("deploy/helm/chroma-sync-operator/README.md");
    assert!(
        fresh == committed,
        "deploy/helm/chroma-sync-operator/README.md is stale: run `make chart-docs`"
    );

    let rows: Vec<Vec<&str>> = committed
        .lines()
        .skip_while(|l| !l.starts_with("| Key |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split(" | ").collect())
        .collect();
    let keys: BTreeSet<&str> = rows.iter().map(|r| r[0].trim_start_matches("| ")).collect();
    for row in &rows {
        assert!(
            row.len() >= 4 && row[3].trim_end_matches(" |").len() > 1,
            "{row:?}"
        );
    }
    // Every top-level value appears, itself or through its children.
    let values: Value =
        serde_saphyr::from_str(&read("deploy/helm/chroma-sync-operator/values.yaml")).unwrap();
    for key in values.as_object().unwrap().keys() {
        assert!(
            keys.iter()
                .any(|k| *k == key || k.starts_with(&format!("{key}."))),
            "{key} is not in the chart README's values table"
        );
    }
    for new in [
        "extraEnv",
        "extraEnvFrom",
        "podSecurityContext",
        "securityContext",
        "nameOverride",
        "fullnameOverride",
        "topologySpreadConstraints",
        "metrics.serviceMonitor.relabelings",
        "metrics.serviceMonitor.metricRelabelings",
        "metrics.serviceMonitor.interval",
    ] {
        assert!(keys.contains(new), "{new} missing from {keys:?}");
    }
}

/// Chart.yaml tells Artifact Hub the truth: the CRDs in crds/, the image the chart deploys by
/// default, the crate's license; its CRD examples are valid SyncSource and SyncRun objects.
#[test]
fn the_chart_metadata_matches_its_crds_image_and_license() {
    let chart: Value = serde_saphyr::from_str(&read("deploy/helm/chroma-sync-operator/Chart.yaml"))
        .expect("Chart.yaml");
    let home = chart["home"].as_str().unwrap();
    assert!(home.starts_with("https://"), "{home}");
    assert_eq!(chart["sources"][0].as_str(), Some(home));
    // One home: the crate's `repository`, which is also the image's source label (Makefile).
    assert_eq!(home, env!("CARGO_PKG_REPOSITORY"));
    let annotations = &chart["annotations"];
    assert_eq!(
        annotations["artifacthub.io/license"].as_str(),
        Some(env!("CARGO_PKG_LICENSE"))
    );

    let listed: BTreeSet<(String, String, String)> =
        serde_saphyr::from_str::<Vec<Value>>(annotations["artifacthub.io/crds"].as_str().unwrap())
            .unwrap()
            .iter()
            .map(|c| {
                assert!(c["displayName"].is_string() && c["description"].is_string());
                let field = |f: &str| c[f].as_str().unwrap().to_owned();
                (field("kind"), field("name"), field("version"))
            })
            .collect();
    let mut shipped = BTreeSet::new();
    for entry in std::fs::read_dir(Path::new(CHART).join("files/crds")).unwrap() {
        let crd: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap())
                .unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            shipped.insert((
                crd["spec"]["names"]["kind"].as_str().unwrap().to_owned(),
                crd["metadata"]["name"].as_str().unwrap().to_owned(),
                version["name"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(listed.len(), 4);
    assert_eq!(listed, shipped);

    let images: Vec<Value> =
        serde_saphyr::from_str(annotations["artifacthub.io/images"].as_str().unwrap()).unwrap();
    let values: Value =
        serde_saphyr::from_str(&read("deploy/helm/chroma-sync-operator/values.yaml")).unwrap();
    let default_image = format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        chart["appVersion"].as_str().unwrap()
    );
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["image"].as_str(), Some(default_image.as_str()));
    let install = documents(&read("deploy/manifests/install.yaml"));
    let deployment = install
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(default_image.as_str())
    );

    // The examples Artifact Hub shows are objects the apiserver accepts.
    let examples: Vec<Value> =
        serde_saphyr::from_str(annotations["artifacthub.io/crdsExamples"].as_str().unwrap())
            .unwrap();
    let kinds: BTreeSet<String> = examples
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, words("SyncRun SyncSource"));
    let ns = fresh_namespace("chart-examples", false);
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{ns}.yaml"));
    let yaml: String = examples
        .iter()
        .map(|e| format!("---\n{}", serde_saphyr::to_string(e).unwrap()))
        .collect();
    std::fs::write(&file, yaml).unwrap();
    // The CRDs as crds/ holds them (the other tests' harness installs the same), as the README
    // says to apply them.
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &format!("{ROOT}/crds/"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/syncsources.chromasync.dev",
        "crd/syncruns.chromasync.dev",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        &ns,
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
}

/// The `helm test` hook's command line, run as written with the operator binary against the
/// operator's own /readyz router (only the URL's host changes, from the Service's DNS name to a
/// local port): it fails while the operator is not ready and passes once it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_test_hook_runs_the_operators_probe() {
    use chroma_sync_operator::{metrics::Metrics, server};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (ok, rendered) = helm(&[
        "template",
        "op",
        CHART,
        "-n",
        "ops",
        "--show-only",
        "templates/tests/readyz.yaml",
    ]);
    assert!(ok, "{rendered}");
    let pod = &documents(&rendered)[0];
    let command: Vec<String> = pod["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    // The binary where the image puts it (there is no shell to find it).
    assert!(
        read("deploy/Dockerfile").contains(&format!("COPY chroma-sync-operator {}", command[0]))
    );
    let service_url = "http://op-chroma-sync-operator-metrics.ops.svc:8080/readyz";
    assert_eq!(command[1..], ["probe", service_url]);

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = format!("http://{}/readyz", listener.local_addr().unwrap());
    let app = server::router(ready.clone(), Metrics::new());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| a.replace(service_url, &local))
        .collect();
    let hook = move || {
        let args = args.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::support::operator_binary!())
                .args(&args)
                .output()
                .expect("run the probe")
        })
    };
    let out = hook().await.unwrap();
    assert!(!out.status.success(), "passed while not ready: {out:?}");
    ready.store(true, Ordering::SeqCst);
    let out = hook().await.unwrap();
    assert!(out.status.success(), "failed while ready: {out:?}");
}
