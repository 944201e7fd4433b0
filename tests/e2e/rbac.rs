//! The operator runs under the ServiceAccount that the shipped manifests and the Helm chart
//! create (a token from the TokenRequest API), does its whole job, and has no permission beyond
//! what it uses: cluster-wide from deploy/manifests (kustomize), and in the chart's namespaced
//! mode nothing at all outside the watched namespaces.

use crate::harness::*;
use crate::support::control_plane::{kubectl, service_account_kubeconfig};
use crate::support::helm::helm;
use std::time::Duration;

const SYSTEM_NS: &str = "chroma-sync-system";

/// What the operator may do in a namespace it watches: `kubectl auth can-i --list` as `sa`,
/// as sorted "resource [verbs]" lines (the self-review rules every identity has left out).
fn granted(sa: &str, ns: &str) -> Vec<String> {
    let (ok, list) = kubectl(&["auth", "can-i", "--list", "--as", sa, "-n", ns]);
    assert!(ok, "{list}");
    let mut rules: Vec<String> = list
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('['))
        .filter(|l| !l.contains("selfsubject"))
        .map(|l| {
            let resource = l.split_whitespace().next().unwrap_or_default();
            // The columns after the resource: non-resource URLs, resource names, verbs.
            let groups: Vec<&str> = l
                .split('[')
                .skip(1)
                .map(|g| g.split(']').next().unwrap_or_default())
                .collect();
            let verbs = groups.last().copied().unwrap_or_default();
            match groups.len().checked_sub(2).map(|i| groups[i]) {
                Some(names) if !names.is_empty() => format!("{resource} [{names}] [{verbs}]"),
                _ => format!("{resource} [{verbs}]"),
            }
        })
        .collect();
    rules.sort();
    rules
}

/// What the operator may do in a namespace it watches (cluster-scoped reads included: they
/// show in every namespace).
const OPERATOR_RULES: [&str; 14] = [
    "chromasyncconnections.chromasync.dev [get list watch]",
    "chromasyncconnections.chromasync.dev/status [patch]",
    "clusterchromasyncconnections.chromasync.dev [get list watch]",
    "clusterchromasyncconnections.chromasync.dev/status [patch]",
    "configmaps [list create patch]",
    "customresourcedefinitions.apiextensions.k8s.io [syncruns.chromasync.dev] [get list watch]",
    "customresourcedefinitions.apiextensions.k8s.io [syncsources.chromasync.dev] [get list watch]",
    "events.events.k8s.io [create]",
    "namespaces [list watch]",
    "secrets [list watch]",
    "syncruns.chromasync.dev [get list watch create patch delete]",
    "syncruns.chromasync.dev/status [patch]",
    "syncsources.chromasync.dev [get list watch patch]",
    "syncsources.chromasync.dev/status [patch]",
];

/// The cluster-scoped reads the operator has even in namespaced mode: cluster connections, the
/// namespaces' labels their selectors read, and its own two CRDs (by name: see below).
const CLUSTER_RULES: [&str; 5] = [
    "clusterchromasyncconnections.chromasync.dev [get list watch]",
    "clusterchromasyncconnections.chromasync.dev/status [patch]",
    "customresourcedefinitions.apiextensions.k8s.io [syncruns.chromasync.dev] [get list watch]",
    "customresourcedefinitions.apiextensions.k8s.io [syncsources.chromasync.dev] [get list watch]",
    "namespaces [list watch]",
];

fn can_i(sa: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let (_, answer) = kubectl(&["auth", "can-i", verb, resource, "--as", sa, "-n", ns]);
    answer.trim() == "yes"
}

/// Creates, waits Ready, changes the spec (a replacement, with its Event), deletes and waits
/// gone: the operator's whole job, under whatever identity `env` runs it with. Then checks it
/// was never refused anything.
async fn does_its_whole_job(env: &Env) {
    env.create("r", github("acme/rbac")).await;
    let o = env
        .wait_reason("r", "SourceReady", Duration::from_secs(30))
        .await;
    let old = o.status.unwrap().source_id.unwrap();
    env.merge_spec(
        "r",
        serde_json::json!({"github": {"repository": "acme/rbac-2"}}),
    )
    .await;
    let new = wait_for("the replacement", Duration::from_secs(30), || async {
        let id = env.get("r").await.status?.source_id?;
        (id != old).then_some(id)
    })
    .await;
    env.wait_event("r", "Replaced", &[&old, &new]).await;
    env.delete("r").await;
    env.wait_gone("r", Duration::from_secs(30)).await;
    assert!(env.source_ids().is_empty());
    let log = env.operator_log();
    assert!(
        !log.contains("forbidden"),
        "the operator hit a permission it lacks:\n{log}"
    );
    // Its watches of its CRDs (one name each, allowed by resourceNames) listed them.
    for crd in ["syncsources.chromasync.dev", "syncruns.chromasync.dev"] {
        assert!(
            log.contains(&format!("CRD seen crd={crd} seen=Present")),
            "the watch of {crd} listed it:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_manifests_grant_enough_and_no_more() {
    // The kubectl path: the kustomize base, applied as a user would.
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests");
    let (ok, out) = kubectl(&["apply", "--server-side", "--force-conflicts", "-k", base]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("would violate PodSecurity"),
        "the Deployment breaks the restricted Pod Security Standard:\n{out}"
    );

    let mut env = Env::without_operator("rbac").await;
    let kubeconfig = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rbac.kubeconfig");
    service_account_kubeconfig(SYSTEM_NS, "chroma-sync-operator", &kubeconfig).unwrap();
    env.operator_kubeconfig = Some(kubeconfig);
    env.lease_namespace = Some(SYSTEM_NS.into());
    let env = env.with_operator();
    does_its_whole_job(&env).await;

    let sa = "system:serviceaccount:chroma-sync-system:chroma-sync-operator";
    assert_eq!(granted(sa, &env.ns), OPERATOR_RULES);
    for (verb, resource, ns) in [
        ("get", "secrets", env.ns.as_str()),
        ("create", "secrets", env.ns.as_str()),
        ("update", "syncsources.chromasync.dev", env.ns.as_str()),
        ("delete", "syncsources.chromasync.dev", env.ns.as_str()),
        ("create", "syncsources.chromasync.dev", env.ns.as_str()),
        ("update", "leases.coordination.k8s.io", env.ns.as_str()),
        ("delete", "leases.coordination.k8s.io", SYSTEM_NS),
        ("create", "pods", env.ns.as_str()),
        // spec.sync.publishTo: a list of one name and an apply, nothing more.
        ("get", "configmaps", env.ns.as_str()),
        ("update", "configmaps", env.ns.as_str()),
        ("delete", "configmaps", env.ns.as_str()),
    ] {
        assert!(!can_i(sa, verb, resource, ns), "{verb} {resource} in {ns}");
    }
    assert!(
        can_i(sa, "update", "leases.coordination.k8s.io", SYSTEM_NS),
        "leader election in its own namespace"
    );
    assert_reads_only_its_crds(sa);
}

/// The CRD reads are limited to the project's two CRDs with finalizers, by name (the watch
/// lists one name with a `metadata.name` field selector, which the apiserver authorizes
/// against resourceNames; `does_its_whole_job` deleted an object, so it read them).
fn assert_reads_only_its_crds(sa: &str) {
    // Cluster-scoped: asked without a namespace.
    let can_i = |verb: &str, resource: &str| {
        let (_, answer) = kubectl(&["auth", "can-i", verb, resource, "--as", sa]);
        answer.lines().next().map(str::trim) == Some("yes")
    };
    for crd in ["syncsources.chromasync.dev", "syncruns.chromasync.dev"] {
        for verb in ["get", "list", "watch"] {
            let resource = format!("customresourcedefinitions/{crd}");
            assert!(can_i(verb, &resource), "{verb} {resource}");
        }
    }
    for (verb, resource) in [
        ("list", "customresourcedefinitions"),
        (
            "get",
            "customresourcedefinitions/chromasyncconnections.chromasync.dev",
        ),
        (
            "delete",
            "customresourcedefinitions/syncsources.chromasync.dev",
        ),
        (
            "update",
            "customresourcedefinitions/syncsources.chromasync.dev",
        ),
    ] {
        assert!(!can_i(verb, resource), "{verb} {resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_in_namespaced_mode_grants_nothing_outside_its_namespaces() {
    let mut env = Env::without_operator("nsmode").await;
    let release_ns = format!("{}-system", env.ns);
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/chroma-sync-operator"
    );
    let watch = format!("watchNamespaces={{{}}}", env.ns);
    // The tenant ClusterRoles are cluster-wide and named after the release: install.rs's release
    // "op" already has them (README, "Tenant access": one release per cluster ships them).
    let (ok, out) = helm(&[
        "install",
        "op",
        chart,
        "-n",
        &release_ns,
        "--create-namespace",
        "--set",
        &watch,
        "--set",
        "rbac.aggregateToDefaultRoles=false",
        // The CRDs are the harness's (one owner per cluster: README, "More than one operator").
        "--set",
        "crds.enabled=false",
    ]);
    assert!(ok, "{out}");

    let kubeconfig = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nsmode.kubeconfig");
    service_account_kubeconfig(&release_ns, "op-chroma-sync-operator", &kubeconfig).unwrap();
    env.operator_kubeconfig = Some(kubeconfig);
    env.lease_namespace = Some(release_ns.clone());
    let env = env.with_operator();
    does_its_whole_job(&env).await;

    let sa = format!("system:serviceaccount:{release_ns}:op-chroma-sync-operator");
    assert_eq!(granted(&sa, &env.ns), OPERATOR_RULES);
    // Elsewhere: nothing of its own but the cluster-scoped reads (another namespace, and the
    // cluster scope).
    assert_eq!(granted(&sa, "default"), CLUSTER_RULES);
    for (verb, resource) in [
        ("list", "secrets"),
        ("list", "syncsources.chromasync.dev"),
        ("list", "chromasyncconnections.chromasync.dev"),
        ("list", "configmaps"),
        ("create", "events.events.k8s.io"),
    ] {
        let (_, answer) = kubectl(&["auth", "can-i", verb, resource, "--as", &sa, "-A"]);
        assert_eq!(answer.trim(), "no", "{verb} {resource} in all namespaces");
    }
    assert_reads_only_its_crds(&sa);
    let (ok, out) = helm(&["uninstall", "op", "-n", &release_ns]);
    assert!(ok, "{out}");
}
