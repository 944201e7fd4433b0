//! Test environment: the real control plane that `make test` started (KUBECONFIG), a fresh
//! namespace per test, an in-process Chroma Sync stand-in, and the real operator binary as a
//! child process scoped to that namespace.

use chroma_sync_operator::crd::{self, SyncSource};
use chroma_sync_operator::standin::{StandIn, Tokens};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

pub const TOKEN: &str = "test-admin-token";
pub const VIEWER_TOKEN: &str = "test-viewer-token";
pub const DATABASE: &str = "docs";
pub const TOKEN_SECRET: &str = "chroma-token";
/// The operator's `--chroma-timeout`: a Chroma answer later than this is a timeout.
pub const CHROMA_TIMEOUT: Duration = Duration::from_secs(5);

static CRD_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// The shared control plane's kubeconfig.
pub fn kubeconfig_path() -> PathBuf {
    PathBuf::from(std::env::var_os("KUBECONFIG").expect(
        "KUBECONFIG is not set: run the end-to-end tests with `make test`, which starts the control plane",
    ))
}

pub async fn client() -> Client {
    kubeconfig_path();
    chroma_sync_operator::chroma::install_crypto_provider();
    Client::try_default()
        .await
        .expect("a client for the test control plane")
}

/// Installs the CRD once per test binary, by server-side apply, and waits until Established.
pub async fn install_crd(client: &Client) {
    CRD_INSTALLED.get_or_init(|| apply_crd(client)).await;
}

/// Applies the CRDs and waits until SyncSources can be listed.
pub async fn apply_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [crd::crd(), crd::run::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("e2e-tests").force(),
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

/// Polls `probe` until it yields a value; panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Env {
    pub client: Client,
    pub ns: String,
    pub standin: StandIn,
    pub chroma_url: String,
    operator: Option<Child>,
    log_path: PathBuf,
    /// `RUST_LOG` of the operators this environment starts.
    pub log_filter: String,
    /// Credentials and Lease namespace for the operators, when not the admin's and the test's.
    pub operator_kubeconfig: Option<PathBuf>,
    pub lease_namespace: Option<String>,
    /// The apiserver's audit log (next to the kubeconfig).
    pub audit_log: PathBuf,
    /// Run the operators over all namespaces (only on a private cluster: it would take other
    /// tests' objects).
    pub watch_all_namespaces: bool,
    /// Run the operators with leader election (the default, as the chart does).
    pub leader_election: bool,
    restarts: u32,
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
        Self::prepare(test, client).await
    }

    /// An environment on a control plane of its own (for tests that restart it).
    pub async fn on_private_cluster(test: &str, cluster: &PrivateCluster) -> Self {
        chroma_sync_operator::chroma::install_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        apply_crd(&client).await;
        let mut env = Self::prepare(test, client).await;
        env.operator_kubeconfig = Some(cluster.kubeconfig());
        env.audit_log = cluster.kubeconfig().with_file_name("audit.log");
        env
    }

    async fn prepare(test: &str, client: Client) -> Self {
        let ns = format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .expect("create the test namespace");

        let standin = StandIn::new(
            [DATABASE.to_owned()],
            Tokens {
                admin: [TOKEN.to_owned()].into(),
                viewer: [VIEWER_TOKEN.to_owned()].into(),
            },
        );
        let chroma_url = standin.start_local().await.expect("start the stand-in");

        let env = Self {
            client,
            log_path: log_dir().join(format!("{ns}.log")),
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
            // (A private cluster's Env replaces it with its own.)
            audit_log: std::env::var_os("KUBECONFIG")
                .map(PathBuf::from)
                .unwrap_or_default()
                .with_file_name("audit.log"),
        };
        env.put_token_secret(TOKEN).await;
        env
    }

    pub fn with_operator(mut self) -> Self {
        self.start_operator();
        self
    }

    /// Starts (or restarts) the operator binary, watching only this test's namespace. A restart
    /// keeps the replica's name, as a container restarted in its pod does.
    pub fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "the operator is already running");
        self.operator = Some(self.spawn_operator("operator-0", &self.log_path));
        self.restarts += 1;
    }

    /// Spawns an operator replica named `replica`, logging to `log_path`. Its leader-election
    /// Lease is in the test's namespace.
    pub fn spawn_operator(&self, replica: &str, log_path: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open the operator log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_chroma-sync-operator"));
        if let Some(kubeconfig) = &self.operator_kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let lease_namespace = self.lease_namespace.as_deref().unwrap_or(&self.ns);
        if !self.watch_all_namespaces {
            command.args(["--namespaces", &self.ns]);
        }
        if !self.leader_election {
            command.arg("--leader-election=false");
        }
        command
            .args(["--leader-election-namespace", lease_namespace])
            .args(["--leader-election-id", &format!("lease-{}", self.ns)])
            .args(["--pod-name", replica])
            .args(["--chroma-url", &self.chroma_url, "--allow-insecure-http"])
            .args(["--metrics-address", "127.0.0.1:0", "--log-format", "text"])
            .args([
                "--chroma-timeout",
                &format!("{}s", CHROMA_TIMEOUT.as_secs()),
            ])
            .env("RUST_LOG", &self.log_filter)
            .env_remove("CHROMA_SYNC_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the operator")
    }

    pub fn log_path(&self, replica: &str) -> PathBuf {
        log_dir().join(format!("{}-{replica}.log", self.ns))
    }

    /// True while the operator process started last is alive.
    pub fn operator_running(&mut self) -> bool {
        self.operator
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("poll the operator").is_none())
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            child.kill().expect("kill the operator");
            child.wait().expect("reap the operator");
        }
    }

    /// Sends SIGTERM to the operator.
    pub fn sigterm_operator(&self) {
        let child = self.operator.as_ref().expect("the operator is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (up to `timeout`) for the operator to exit; its exit status.
    pub async fn wait_operator_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.operator.take().expect("the operator is running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("poll the operator") {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("the operator did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The operator's probe and metrics address, from its log.
    pub async fn metrics_url(&self) -> String {
        wait_for(
            "the operator to log its metrics address",
            Duration::from_secs(10),
            || async {
                let log = self.operator_log();
                let line = log.lines().rev().find(|l| l.contains("serving /healthz"))?;
                let address = line.split("address=").nth(1)?.split_whitespace().next()?;
                Some(format!("http://{address}"))
            },
        )
        .await
    }

    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
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
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"token": token}
        }))
        .unwrap();
        secrets
            .patch(
                name,
                &PatchParams::apply("e2e-tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply the token Secret");
    }

    /// Creates a SyncSource from a spec.
    pub async fn create(&self, name: &str, spec: Value) -> SyncSource {
        let obj: SyncSource = serde_json::from_value(json!({
            "apiVersion": "chromasync.dev/v1alpha1",
            "kind": "SyncSource",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a SyncSource");
        self.api()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create the SyncSource")
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
        // Audit entries are flushed asynchronously; give the last one a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = std::fs::read_to_string(&self.audit_log)
            .expect("the control plane writes an audit log");
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                let o = &e["objectRef"];
                o["resource"] == resource && o["namespace"] == self.ns.as_str()
            })
            .collect()
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

/// `(status, reason, message)` of the Ready condition.
pub fn ready(o: &SyncSource) -> Option<(String, String, String)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn condition(o: &SyncSource, type_: &str) -> Option<String> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// A numeric setting from the environment: `make reliability` scales the fault tests up with
/// these, `make test` runs them at their small defaults.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until every object in `live` is Ready at its generation with a recorded source, and
/// every object in `deleted` is gone; their source ids by name.
pub async fn settle(
    env: &Env,
    live: &BTreeSet<String>,
    deleted: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<String, String> {
    wait_for("every object to settle", timeout, || async {
        let list = env.api().list(&Default::default()).await.ok()?;
        let mut ids = BTreeMap::new();
        for o in &list.items {
            let name = o.name_any();
            if deleted.contains(&name) {
                return None; // still finalizing
            }
            let ready = ready(o).is_some_and(|r| r.0 == "True");
            let current = o.status.as_ref()?.observed_generation == o.metadata.generation;
            if !(ready && current) {
                return None;
            }
            ids.insert(name, o.status.as_ref()?.source_id.clone()?);
        }
        (ids.len() == live.len()).then_some(ids)
    })
    .await
}

/// Exactly one source per live object (the one its status records), none for deleted objects,
/// none without an object. Sources are matched to objects by repository `{prefix}/{name}`.
pub fn assert_one_source_each(
    env: &Env,
    prefix: &str,
    recorded: &BTreeMap<String, String>,
    deleted: &BTreeSet<String>,
) {
    let mut by_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, body) in env.standin.sources(DATABASE) {
        let repo = body["github"]["repository"].as_str().unwrap_or_default();
        if let Some(name) = repo.strip_prefix(&format!("{prefix}/")) {
            by_object.entry(name.to_owned()).or_default().push(id);
        }
    }
    for (name, id) in recorded {
        assert_eq!(
            by_object.get(name),
            Some(&vec![id.clone()]),
            "{name}: exactly one source, the one in its status"
        );
    }
    for name in deleted {
        assert_eq!(
            by_object.get(name),
            None,
            "{name} was deleted; so is its source"
        );
    }
    assert_eq!(
        by_object.len(),
        recorded.len(),
        "no source without an object"
    );
}

/// Chroma calls beyond the floor, as `(floor, extra)`. The floor is one POST per source that
/// was created and one DELETE per source that is gone again (an object deleted before its
/// source was created needs neither); every list and get call is beyond it.
pub fn calls_beyond_floor(standin: &StandIn) -> (u64, i64) {
    let calls = |endpoint| standin.calls(endpoint, "*");
    let all = [
        "create_source",
        "delete_source",
        "list_sources",
        "get_source",
    ]
    .into_iter()
    .map(calls)
    .sum::<u64>();
    let committed = standin.created_total();
    let removed = committed.saturating_sub(standin.sources(DATABASE).len() as u64);
    let floor = committed + removed;
    (floor, all as i64 - floor as i64)
}

/// One run of a fault case for `make reliability`'s table. When `RELIABILITY_REPORT` names a
/// file, one JSON line per run is appended to it: the case's own figures (`set`), the Chroma
/// calls counted by the stand-in, and the outcome. The outcome is "fail" unless `pass` is
/// called, and the line is written on drop too, so a failed assertion is recorded as a failure
/// without changing how the test fails.
pub struct Report {
    fault: &'static str,
    standin: StandIn,
    fields: serde_json::Map<String, Value>,
    started: Instant,
    written: bool,
}

impl Report {
    /// Starts the run's clock; `seed` is the case's seed, if it has one.
    pub fn new(fault: &'static str, seed: Option<u64>, standin: &StandIn) -> Self {
        let mut report = Self {
            fault,
            standin: standin.clone(),
            fields: Default::default(),
            started: Instant::now(),
            written: false,
        };
        report.set("seed", seed);
        report
    }

    /// Records a figure of the case (`objects`, `converge_secs`, `invariant`, ...).
    pub fn set(&mut self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).expect("a JSON value");
        self.fields.insert(key.to_owned(), value);
    }

    /// Every assertion held.
    pub fn pass(mut self) {
        self.write("pass");
    }

    fn write(&mut self, outcome: &str) {
        self.written = true;
        let Some(path) = std::env::var_os("RELIABILITY_REPORT") else {
            return;
        };
        let s = &self.standin;
        let calls = |endpoint| s.calls(endpoint, "*");
        let committed = s.created_total();
        let (floor, extra) = calls_beyond_floor(s);
        let mut line = json!({
            "fault": self.fault,
            "outcome": outcome,
            "at": jiff::Timestamp::now().to_string(),
            "creates": calls("create_source"),
            "committed": committed,
            "deletes": calls("delete_source"),
            "removed": floor - committed,
            "lists": calls("list_sources"),
            "gets": calls("get_source"),
            "floor": floor,
            "extra": extra,
            "injected": s.injected(),
            "total_secs": self.started.elapsed().as_secs_f64(),
        });
        line.as_object_mut()
            .unwrap()
            .extend(std::mem::take(&mut self.fields));
        // One write per line, so runs in parallel append whole lines. No panic here: this may
        // run while a failed assertion unwinds.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot append to {}: {e}", path.display());
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.written {
            self.write("fail");
        }
    }
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
    std::fs::create_dir_all(&dir).expect("create the log directory");
    dir
}

pub fn github(repo: &str) -> Value {
    json!({
        "databaseName": DATABASE,
        "github": {"repository": repo},
        "tokenSecretRef": {"name": TOKEN_SECRET},
    })
}

/// The objects a churning fault test has made so far: the live ones and the deleted ones.
#[derive(Default)]
pub struct Churn {
    pub live: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
}

impl Churn {
    /// Creates `names` (GitHub sources `{repos}/{name}`), then deletes each live object with
    /// probability `p`, some before they are Ready. One random draw per live object, in name
    /// order, so a seed makes the same choices every run.
    pub async fn round(
        &mut self,
        env: &Env,
        names: Vec<String>,
        repos: &str,
        p: f64,
        rng: &mut impl rand::RngExt,
    ) {
        futures::future::join_all(
            names
                .iter()
                .map(|n| env.create(n, github(&format!("{repos}/{n}")))),
        )
        .await;
        self.live.extend(names);
        let doomed: Vec<String> = self
            .live
            .iter()
            .filter(|_| rng.random_bool(p))
            .cloned()
            .collect();
        futures::future::join_all(doomed.iter().map(|n| env.delete(n))).await;
        for n in doomed {
            self.live.remove(&n);
            self.deleted.insert(n);
        }
    }
}

/// A control plane of a test's own, stopped when dropped.
pub struct PrivateCluster {
    dir: PathBuf,
}

impl PrivateCluster {
    pub fn start(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{name}"));
        Self::script(&["up", dir.to_str().unwrap()]);
        Self { dir }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Stops `component` (etcd or kube-apiserver) and starts it again on the same port and data.
    pub fn restart(&self, component: &str) {
        Self::script(&["restart", component, self.dir.to_str().unwrap()]);
    }

    fn script(args: &[&str]) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/controlplane/controlplane.sh"
        );
        let status = Command::new(script)
            .args(args)
            .status()
            .expect("run controlplane.sh");
        assert!(status.success(), "controlplane.sh {args:?} failed");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        Self::script(&["down", self.dir.to_str().unwrap()]);
    }
}
