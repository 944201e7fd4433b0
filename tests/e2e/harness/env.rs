//! A test's environment: its namespace on a control plane, a stand-in, the token Secret, and its
//! SyncSources, with their waits, Events and audit entries. (Its operator processes:
//! operator.rs.)

use super::{
    MANAGER, PrivateCluster, SOON, TOKEN, VIEWER_TOKEN, client, install_crd, on_creates, ready,
    wait_for,
};
use crate::support::audit::AuditLog;
use crate::support::control_plane::{apply_crd, client_for, kubeconfig_path, wait_listable};
use crate::support::objects::{TOKEN_SECRET, github, namespace, sync_source, token_secret};
use crate::support::operator::OperatorProcess;
use crate::support::standin::{self, DATABASE};
use chroma_sync_operator::crd::SyncSource;
use chroma_sync_standin::{Faults, StandIn};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

pub struct Env {
    pub client: Client,
    pub ns: String,
    pub standin: StandIn,
    pub chroma_url: String,
    pub(super) operator: Option<OperatorProcess>,
    pub(super) log_path: PathBuf,
    /// `RUST_LOG` of the operators this environment starts.
    pub log_filter: String,
    /// Credentials and Lease namespace for the operators, when not the admin's and the test's.
    pub operator_kubeconfig: Option<PathBuf>,
    pub lease_namespace: Option<String>,
    /// The apiserver's audit log.
    pub audit_log: AuditLog,
    /// Run the operators over all namespaces (only on a private cluster: it would take other
    /// tests' objects).
    pub watch_all_namespaces: bool,
    /// Run the operators with leader election (the default, as the chart does).
    pub leader_election: bool,
    /// More flags for the operators this environment starts.
    pub extra_args: Vec<String>,
    pub(super) restarts: u32,
    /// Objects made by `create_github` alternate between the connections `default` and
    /// `second` (see `spread_over_two_connections`).
    pub spread: bool,
    /// The operator binary the environment starts: this checkout's, or a previous release's.
    pub operator_binary: PathBuf,
}

impl Env {
    /// A namespace, a stand-in with database `docs` and the admin and viewer tokens, a Secret
    /// `chroma-token` with the admin token, and the operator running.
    pub async fn start(test: &str) -> Self {
        let env = Self::without_operator(test).await;
        env.with_operator()
    }

    pub async fn without_operator(test: &str) -> Self {
        let client = client().await;
        install_crd(&client).await;
        Self::prepare(test, client, AuditLog::of(&kubeconfig_path())).await
    }

    /// An environment on a control plane of its own (for tests that restart it).
    pub async fn on_private_cluster(test: &str, cluster: &PrivateCluster) -> Self {
        let client = client_for(&cluster.kubeconfig()).await;
        apply_crd(&client, MANAGER).await;
        let mut env = Self::prepare(test, client, AuditLog::of(&cluster.kubeconfig())).await;
        env.operator_kubeconfig = Some(cluster.kubeconfig());
        env
    }

    /// An environment on a control plane of its own whose CRDs are already installed (by a
    /// release's chart, say): they stay as they are.
    pub async fn on_installed_cluster(test: &str, cluster: &PrivateCluster) -> Self {
        let client = client_for(&cluster.kubeconfig()).await;
        wait_listable(&client).await;
        let mut env = Self::prepare(test, client, AuditLog::of(&cluster.kubeconfig())).await;
        env.operator_kubeconfig = Some(cluster.kubeconfig());
        env
    }

    async fn prepare(test: &str, client: Client, audit_log: AuditLog) -> Self {
        let ns = format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(&PostParams::default(), &namespace(&ns))
            .await
            .expect("create the test namespace");

        let (standin, chroma_url) = standin::start(TOKEN, &[VIEWER_TOKEN]).await;
        let env = Self {
            client,
            log_path: super::operator::log_dir().join(format!("{ns}.log")),
            ns,
            standin,
            chroma_url,
            operator: None,
            restarts: 0,
            log_filter: "info,chroma_sync_operator=debug".into(),
            operator_kubeconfig: None,
            lease_namespace: None,
            watch_all_namespaces: false,
            leader_election: true,
            extra_args: Vec::new(),
            spread: false,
            operator_binary: PathBuf::from(super::operator::BINARY),
            audit_log,
        };
        env.put_token_secret(TOKEN).await;
        env
    }

    pub fn api(&self) -> Api<SyncSource> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn put_token_secret(&self, token: &str) {
        self.put_secret(TOKEN_SECRET, token).await;
    }

    /// Creates or updates the Secret `name` with `token` under the key `token`.
    pub async fn put_secret(&self, name: &str, token: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        secrets
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&token_secret(name, token)),
            )
            .await
            .expect("apply the token Secret");
    }

    /// Creates a SyncSource from a spec.
    pub async fn create(&self, name: &str, spec: Value) -> SyncSource {
        self.api()
            .create(&PostParams::default(), &sync_source(name, spec))
            .await
            .expect("create the SyncSource")
    }

    /// Creates `names` at once, GitHub sources of repositories `{repos}/{name}` (spread over
    /// two connections, every other one naming `second`, when the environment says so).
    pub async fn create_github(&self, names: &[String], repos: &str) {
        futures::future::join_all(names.iter().enumerate().map(|(i, n)| {
            let mut spec = github(&format!("{repos}/{n}"));
            if self.spread && i % 2 == 1 {
                spec["connectionRef"] = json!({"name": "second"});
            }
            self.create(n, spec)
        }))
        .await;
    }

    /// Two ChromaSyncConnections to the stand-in, `default` (used by objects naming none) and
    /// `second`, each its own client and limiter in the operator; `create_github` then spreads
    /// its objects over both.
    pub async fn spread_over_two_connections(&mut self) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("chromasync.dev", "v1alpha1", "ChromaSyncConnection"),
                "chromasyncconnections",
            ),
        );
        for name in ["default", "second"] {
            let connection = json!({
                "apiVersion": "chromasync.dev/v1alpha1", "kind": "ChromaSyncConnection",
                "metadata": {"name": name},
                "spec": {"url": self.chroma_url, "tokenSecretRef": {"name": TOKEN_SECRET}},
            });
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&connection),
            )
            .await
            .expect("apply a connection");
        }
        self.spread = true;
    }

    pub async fn get(&self, name: &str) -> SyncSource {
        self.api().get(name).await.expect("get the SyncSource")
    }

    pub async fn delete(&self, name: &str) {
        self.api()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete the SyncSource");
    }

    pub async fn merge_spec(&self, name: &str, spec: Value) -> SyncSource {
        self.api()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("patch the spec")
    }

    /// Sets annotation `key` on `name` to `value`, or removes it (None).
    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) -> SyncSource {
        self.api()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
            )
            .await
            .expect("annotate the SyncSource")
    }

    /// Waits until the object's `Ready` condition has `reason` at its current generation.
    pub async fn wait_reason(&self, name: &str, reason: &str, timeout: Duration) -> SyncSource {
        let what = format!("{}/{name} to reach reason {reason}", self.ns);
        wait_for(&what, timeout, || async {
            let o = self.api().get(name).await.ok()?;
            let s = o.status.as_ref()?;
            let current = s.observed_generation == o.metadata.generation;
            let matches = ready(&o).is_some_and(|c| c.1 == reason);
            (current && matches).then_some(o)
        })
        .await
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let what = format!("{}/{name} to be gone", self.ns);
        wait_for(&what, timeout, || async {
            match self.api().get_opt(name).await {
                Ok(None) => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// Events about `name`, as (reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    /// Waits for an Event with `reason` about `name` whose note contains every one of `words`.
    pub async fn wait_event(&self, name: &str, reason: &str, words: &[&str]) {
        let what = format!("an event {reason} about {name} naming {words:?}");
        wait_for(&what, Duration::from_secs(10), || async {
            let events = self.events(name).await;
            events
                .iter()
                .any(|(r, n)| r == reason && words.iter().all(|w| n.contains(w)))
                .then_some(())
        })
        .await
    }

    /// Requests the apiserver audited on SyncSource `name` (and its status), as
    /// `(verb, subresource)`, in order. The audit log is the apiserver's own record, so this
    /// counts every write whoever made it.
    pub async fn audited(&self, name: &str) -> Vec<(String, String)> {
        self.audit("syncsources")
            .await
            .into_iter()
            .filter(|e| e["objectRef"]["name"] == name)
            .map(|e| {
                let sub = e["objectRef"]["subresource"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                (e["verb"].as_str().unwrap_or("").to_owned(), sub)
            })
            .collect()
    }

    /// Every audit entry (verb, user, `responseStatus.code`, ...) on `resource` in the test's
    /// namespace, in order.
    pub async fn audit(&self, resource: &str) -> Vec<Value> {
        // Entries reach the log in batches; give the last one a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.audit_log
            .entries()
            .into_iter()
            .filter(|e| {
                let o = &e["objectRef"];
                o["resource"] == resource && o["namespace"] == self.ns.as_str()
            })
            .collect()
    }

    /// Creates `name` with the stand-in holding each create's answer for `hold` after it
    /// commits the source (the window a crash can fall into), and waits until its source is
    /// committed: the answer is still held.
    pub async fn create_and_hold_answer(&self, name: &str, spec: Value, hold: Duration) {
        let committed = self.source_ids().len() + 1;
        self.standin.set_faults(on_creates(Faults {
            create_commit_delay_ms: hold.as_millis() as u64,
            ..Default::default()
        }));
        self.create(name, spec).await;
        let what = format!("the source of {name} to be committed");
        wait_for(&what, SOON, || async {
            (self.source_ids().len() == committed).then_some(())
        })
        .await
    }

    pub fn source_ids(&self) -> Vec<String> {
        self.standin
            .sources(DATABASE)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_operator();
        if std::thread::panicking() {
            eprintln!(
                "operator log of {} ({} starts): {}",
                self.ns,
                self.restarts,
                self.log_path.display()
            );
            eprintln!("{}", self.operator_log());
        }
    }
}
