//! The control plane that tests/run.sh started, as the tests and the benchmark reach it: its
//! admin kubeconfig (KUBECONFIG), Kubernetes clients, its kubectl, a kubeconfig that acts as a
//! ServiceAccount, and the operator's CRDs installed on it.

use crate::wait::wait_for;
use chroma_sync_operator::crd::{self, SyncSource};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The admin kubeconfig of the control plane that tests/run.sh started.
pub fn kubeconfig_path() -> PathBuf {
    PathBuf::from(std::env::var_os("KUBECONFIG").expect(
        "KUBECONFIG is not set: run through tests/run.sh (`make test`, `make bench`), which \
         starts the control plane",
    ))
}

/// A client that authenticates with `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Client {
    chroma_sync_operator::chroma::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a client configuration from the kubeconfig");
    Client::try_from(config).expect("a client for the control plane")
}

/// Applies the CRDs by server-side apply as `manager`, and waits until SyncSources can be
/// listed.
pub async fn apply_crd(client: &Client, manager: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        crd::crd(),
        crd::run::crd(),
        crd::connection::crd(),
        crd::connection::cluster_crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply the CRD");
        wait_for(
            &format!("the CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let c = api.get(&name).await.ok()?;
                let established = c
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await;
    }
    // Established can precede discovery by a moment.
    wait_listable(client).await;
}

/// Waits until SyncSources can be listed: their CRD is installed and served.
pub async fn wait_listable(client: &Client) {
    let sources: Api<SyncSource> = Api::all(client.clone());
    wait_for(
        "SyncSources to be listable",
        Duration::from_secs(30),
        || async {
            sources
                .list(&ListParams::default().limit(1))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// Runs the control plane's kubectl (next to its kubeconfig) as admin; returns success and
/// stdout followed by stderr.
pub fn kubectl(args: &[&str]) -> (bool, String) {
    run(Command::new(kubeconfig_path().with_file_name("kubectl")).args(args))
}

/// Runs a command-line tool; returns success and stdout followed by stderr.
pub(crate) fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("run a command-line tool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Writes `out`, a kubeconfig for ServiceAccount `namespace/name`: the admin's cluster entry and
/// a two-hour token from the TokenRequest API.
pub fn service_account_kubeconfig(namespace: &str, name: &str, out: &Path) -> Result<(), String> {
    let (ok, token) = kubectl(&["create", "token", name, "-n", namespace, "--duration", "2h"]);
    if !ok {
        return Err(format!(
            "TokenRequest for {namespace}/{name} failed: {token}"
        ));
    }
    let admin = std::fs::read_to_string(kubeconfig_path()).map_err(|e| e.to_string())?;
    let mut config: serde_json::Value =
        serde_saphyr::from_str(&admin).map_err(|e| e.to_string())?;
    config["users"] = serde_json::json!([{"name": "admin", "user": {"token": token.trim()}}]);
    let yaml = serde_saphyr::to_string(&config).map_err(|e| e.to_string())?;
    std::fs::write(out, yaml).map_err(|e| e.to_string())
}
