//! The operator runs under the ServiceAccount of deploy/manifests/rbac.yaml (a token from the
//! TokenRequest API, via `kubectl create token`), does its whole job, and has no permission
//! beyond what it uses.

use crate::harness::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SYSTEM_NS: &str = "chroma-sync-system";
const SA: &str = "system:serviceaccount:chroma-sync-system:chroma-sync-operator";

fn kubectl(args: &[&str]) -> (bool, String) {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").unwrap());
    let out = Command::new(kubeconfig.with_file_name("kubectl"))
        .args(args)
        .output()
        .expect("run kubectl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A kubeconfig for the ServiceAccount: the admin's cluster entry, the SA's bearer token.
fn service_account_kubeconfig(dir: &std::path::Path) -> PathBuf {
    let (ok, token) = kubectl(&[
        "create",
        "token",
        "chroma-sync-operator",
        "-n",
        SYSTEM_NS,
        "--duration",
        "1h",
    ]);
    assert!(ok, "TokenRequest failed: {token}");
    let admin = PathBuf::from(std::env::var_os("KUBECONFIG").unwrap());
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&admin).unwrap()).unwrap();
    config["users"] = serde_yaml::from_str(&format!(
        "[{{name: admin, user: {{token: {}}}}}]",
        token.trim()
    ))
    .unwrap();
    let path = dir.join("service-account.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_is_enough_and_no_more() {
    let _ = kubectl(&["create", "namespace", SYSTEM_NS]);
    let rbac = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests/rbac.yaml");
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", rbac]);
    assert!(ok, "{out}");

    let mut env = Env::without_operator("rbac").await;
    env.operator_kubeconfig = Some(service_account_kubeconfig(std::path::Path::new(env!(
        "CARGO_TARGET_TMPDIR"
    ))));
    env.lease_namespace = Some(SYSTEM_NS.into());
    let env = env.with_operator();

    env.create("r", github("acme/rbac")).await;
    let o = env
        .wait_reason("r", "SourceReady", Duration::from_secs(30))
        .await;
    let id = o.status.unwrap().source_id.unwrap();
    env.wait_event("r", "Created", &[&id]).await;
    env.delete("r").await;
    env.wait_gone("r", Duration::from_secs(30)).await;
    assert!(env.source_ids().is_empty());
    let log = env.operator_log();
    assert!(
        !log.contains("forbidden"),
        "the operator hit a permission it lacks:\n{log}"
    );

    // Nothing beyond what it uses.
    let (_, list) = kubectl(&["auth", "can-i", "--list", "--as", SA, "-n", &env.ns]);
    let granted: Vec<&str> = list
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('['))
        .filter(|l| !l.contains("selfsubject"))
        .collect();
    let mut rules: Vec<String> = granted
        .iter()
        .map(|l| {
            let resource = l.split_whitespace().next().unwrap_or_default();
            let verbs = &l[l.rfind('[').unwrap_or(0)..];
            format!("{resource} {}", verbs.trim())
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            "events.events.k8s.io [create patch]",
            "secrets [list watch]",
            "syncsources.chromasync.dev [get list watch patch]",
            "syncsources.chromasync.dev/status [patch]",
        ],
        "can-i --list:\n{list}"
    );
    for (verb, resource, ns) in [
        ("get", "secrets", env.ns.as_str()),
        ("create", "secrets", env.ns.as_str()),
        ("update", "syncsources.chromasync.dev", env.ns.as_str()),
        ("delete", "syncsources.chromasync.dev", env.ns.as_str()),
        ("create", "syncsources.chromasync.dev", env.ns.as_str()),
        ("update", "leases.coordination.k8s.io", env.ns.as_str()),
        ("delete", "leases.coordination.k8s.io", SYSTEM_NS),
        ("create", "pods", env.ns.as_str()),
    ] {
        let (_, answer) = kubectl(&["auth", "can-i", verb, resource, "--as", SA, "-n", ns]);
        assert_eq!(answer.trim(), "no", "{verb} {resource} in {ns}");
    }
    let (_, answer) = kubectl(&[
        "auth",
        "can-i",
        "update",
        "leases.coordination.k8s.io",
        "--as",
        SA,
        "-n",
        SYSTEM_NS,
    ]);
    assert_eq!(answer.trim(), "yes", "leader election in its own namespace");
}
