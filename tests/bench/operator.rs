//! `make bench`: the operator against the physical floor, on the real control plane and the local
//! stand-in, with the release build authenticating as its least-privilege ServiceAccount (so API
//! Priority and Fairness treats it as in a cluster). Prints one table and writes the same figures
//! to target/bench/results-N.json.
//!
//! BENCH_N (objects, default 1000), BENCH_RUNS (SyncRuns, default 100, at most N),
//! BENCH_REST_SECS (default 120), BENCH_CONCURRENCY (default 16), BENCH_OPERATOR (the operator
//! binary; default the release build of this checkout), BENCH_DRIFT_SECS (the drift phase's
//! interval, default 30), BENCH_SECRETS (unrelated Secrets for the memory phase, default 10000;
//! 0 skips it), BENCH_SECRETS_BASELINE (an older operator binary measured the same way there),
//! BENCH_NAMESPACES (spread the operator's objects over this many namespaces, each with its own
//! token Secret, the operator watching all namespaces; default 1: the namespace `bench`),
//! BENCH_UNRELATED (Secrets and ConfigMaps of other software, this many of each over 100 other
//! namespaces, present for the whole run; default 0), BENCH_LIMITED_N (objects of each limited
//! phase: the stand-in at a rate limit or a latency; default 2000, 0 skips them),
//! BENCH_LIMITED_ONLY (1: the limited phases only).

use chroma_sync_operator::crd::run::{RunPhase, SyncRun};
use chroma_sync_operator::crd::{self, SyncSource};
use chroma_sync_operator::kernel::FIELD_MANAGER;
use chroma_sync_operator::run::decide::POLL_FIRST;
use chroma_sync_operator::source::status::{self, Recorded, State};
use chroma_sync_standin::{RunPlan, StandIn};
use chroma_sync_test_support as support;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::control_plane::{
    apply_crd, client_for, kubeconfig_path, kubectl, service_account_kubeconfig,
};
use support::objects::{TOKEN_SECRET, github, namespace, sync_source, token_secret};
use support::operator::OperatorProcess;
use support::settings::setting;

/// The series of SyncSource reconciles (the benchmark's objects are SyncSources).
const SOURCE_RECONCILES: &str = r#"chroma_sync_operator_reconciles_total{kind="SyncSource"}"#;

/// The operator binary of this checkout (its release build under `cargo bench`).
const BINARY: &str = support::operator_binary!();
const TOKEN: &str = "bench-token";
const SA_USER: &str = "system:serviceaccount:chroma-sync-system:chroma-sync-operator";
const NS: &str = "bench";
const NULL_NS: &str = "bench-null";
/// The fair floor's namespace: the null operator's writes with the operator's watches open.
const WATCHED_NULL_NS: &str = "bench-null-watched";
/// A first, unreported null run: the apiserver's and etcd's first writes of the run are slower,
/// and would make whichever floor came first look lower.
const WARMUP_NS: &str = "bench-warmup";
/// The field manager of the benchmark's server-side applies.
const MANAGER: &str = "bench";
/// Namespaces of other software's Secrets and ConfigMaps (BENCH_UNRELATED).
const NOISE_NAMESPACES: usize = 100;

/// Where the operator's objects live: the namespace `bench`, or spread over many (BENCH_NAMESPACES),
/// each with its own token Secret; the operator then watches all namespaces, as it would there.
struct Layout {
    namespaces: Vec<String>,
}

impl Layout {
    fn new(spread: usize) -> Self {
        let namespaces = if spread <= 1 {
            vec![NS.to_owned()]
        } else {
            (0..spread).map(|k| format!("spread-{k:04}")).collect()
        };
        Self { namespaces }
    }

    fn spread(&self) -> bool {
        self.namespaces.len() > 1
    }

    /// The namespace of the `i`-th object (round robin).
    fn ns(&self, i: usize) -> &str {
        &self.namespaces[i % self.namespaces.len()]
    }

    fn holds(&self, ns: &str) -> bool {
        if self.spread() {
            ns.starts_with("spread-")
        } else {
            ns == NS
        }
    }

    /// The operator's `--namespaces`: none (all) when spread.
    fn watch_flag(&self) -> Option<&str> {
        (!self.spread()).then(|| self.namespaces[0].as_str())
    }
}

struct Report {
    rows: Vec<(String, String)>,
    json: BTreeMap<String, Value>,
}

impl Report {
    fn add(&mut self, key: &str, label: &str, value: Value, shown: String) {
        println!("  {label:<58} {shown}");
        self.rows.push((label.to_owned(), shown));
        self.json.insert(key.to_owned(), value);
    }
}

/// Counts the bytes this process has asked for and not given back: what one cached object costs
/// on the heap, as the operator's cache holds it (the allocator's own rounding aside).
struct Counting;
static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; the count is a side effect.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `layout` are `System.alloc`'s.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HELD.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above, that is from `System`, with this `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes per cached SyncSource: a Ready GitHub source with a token Secret, slimmed as the
/// operator's cache slims it, 10,000 of them behind Arcs (as a reflector store holds them).
fn heap_per_cached_object() -> usize {
    let n = 10_000;
    let values: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncSource",
                "metadata": {"name": format!("bench-{i:05}"), "namespace": NS,
                    "uid": uuid::Uuid::new_v4().to_string(), "resourceVersion": format!("{}", 100_000 + i),
                    "generation": 1, "creationTimestamp": "2026-12-02T10:00:00Z",
                    "finalizers": [crd::FINALIZER]},
                "spec": {"databaseName": "docs", "github": {"repository": format!("acme/repo-{i}")},
                    "tokenSecretRef": {"name": TOKEN_SECRET, "key": "token"}},
                "status": {"observedGeneration": 1, "sourceId": uuid::Uuid::new_v4().to_string(),
                    "payloadHash": "0123456789abcdef", "conditions": [{"type": "Ready", "status": "True",
                    "reason": "SourceReady", "message": format!("Chroma source {} matches the spec", uuid::Uuid::new_v4()),
                    "lastTransitionTime": "2026-12-02T10:00:01Z", "observedGeneration": 1}]}
            })
        })
        .collect();
    let before = HELD.load(std::sync::atomic::Ordering::Relaxed);
    let cached: Vec<Arc<SyncSource>> = values
        .iter()
        .map(|v| Arc::new(serde_json::from_value(v.clone()).expect("a SyncSource")))
        .collect();
    let held = HELD.load(std::sync::atomic::Ordering::Relaxed) - before;
    drop(cached);
    held / n
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chroma_sync_operator::chroma::install_crypto_provider();
    let mut bench = Bench::set_up().await?;
    if !bench.limited_only {
        bench.heap();
        let floors = bench.floors().await?;
        let idle = bench.idle_memory().await?;
        let (op, tracker) = bench.catch_up(&floors).await?;
        bench.responsiveness(&tracker).await?;
        bench.runs().await?;
        bench.continuous_sync().await?;
        bench.at_rest(&op).await;
        let op = bench.restart(op).await?;
        let op = bench.drift_check(op).await?;
        bench.delete_all(op).await?;
        bench.among_secrets(idle).await?;
    }
    bench.limited().await?;
    bench.write()
}

/// What every phase shares: the settings, the clients, the stand-in and the report.
struct Bench {
    n: usize,
    rest: Duration,
    concurrency: usize,
    drift: Duration,
    layout: Layout,
    unrelated: usize,
    audit: AuditLog,
    admin: Client,
    sa: Client,
    sa_kubeconfig: std::path::PathBuf,
    standin: StandIn,
    chroma_url: String,
    report: Report,
    /// Objects of each limited phase (BENCH_LIMITED_N; 0: none).
    limited_n: usize,
    /// BENCH_LIMITED_ONLY: only the limited phases.
    limited_only: bool,
}

/// The limit of the limited phases' stand-in (calls per second per token) and its latency.
const LIMITED_RATE: f64 = 20.0;
const LIMITED_LATENCY_MS: u64 = 100;
/// The latency of the phase without a limit, and the operator's calls in flight (its default).
const SLOW_LATENCY_MS: u64 = 250;
const IN_FLIGHT: usize = 16;

/// One limited phase: how the stand-in answers and how the operator is configured.
struct LimitedPhase {
    key: &'static str,
    label: String,
    /// The stand-in's limit (0: none) and latency.
    rate: f64,
    latency_ms: u64,
    /// The operator's extra flags.
    flags: Vec<String>,
    concurrency: usize,
    /// The time the limit allows for N objects (one create each).
    bound_secs: f64,
    bound: &'static str,
}

/// What a limited phase measured.
struct LimitedRun {
    /// From the operator's start to its readiness.
    startup: f64,
    /// From its readiness to every object Ready.
    secs: f64,
    calls: u64,
    refused: u64,
    max_in_flight: u64,
    /// The operator's rate at the end (0: unlimited).
    rate: f64,
}

/// The two floors a catch-up is compared with.
struct Floors {
    null_rate: f64,
    fair_rate: f64,
    floor_cost: Cost,
    fair_cost: Cost,
}

impl Bench {
    /// Reads the settings, makes the namespaces, the operator's identity and the stand-in.
    async fn set_up() -> anyhow::Result<Self> {
        let n = setting("BENCH_N", 1000) as usize;
        let concurrency = setting("BENCH_CONCURRENCY", 16) as usize;
        let layout = Layout::new(setting("BENCH_NAMESPACES", 1) as usize);
        let unrelated = setting("BENCH_UNRELATED", 0) as usize;
        let kubeconfig = kubeconfig_path();
        let admin = client_for(&kubeconfig).await;
        let limited_n = setting("BENCH_LIMITED_N", 2000) as usize;
        let limited_only = setting("BENCH_LIMITED_ONLY", 0) != 0;
        println!(
            "chroma-sync-operator benchmark: N = {n} in {} namespace(s), {unrelated} unrelated Secrets and ConfigMaps each, concurrency {concurrency}, {} cores; limited phases: N = {limited_n}{}",
            layout.namespaces.len(),
            num_cpus(),
            if limited_only { " (only those)" } else { "" }
        );
        setup(&admin, &layout).await?;
        if unrelated > 0 {
            create_unrelated(&admin, unrelated).await?;
        }
        let sa_kubeconfig = kubeconfig.with_file_name("bench-operator.kubeconfig");
        service_account_kubeconfig("chroma-sync-system", "chroma-sync-operator", &sa_kubeconfig)
            .map_err(anyhow::Error::msg)?;
        let sa = client_for(&sa_kubeconfig).await;
        let (standin, chroma_url) = support::standin::start(TOKEN, &[]).await;
        Ok(Self {
            limited_n,
            limited_only,
            n,
            rest: Duration::from_secs(setting("BENCH_REST_SECS", 120)),
            concurrency,
            drift: Duration::from_secs(setting("BENCH_DRIFT_SECS", 30)),
            layout,
            unrelated,
            audit: AuditLog::of(&kubeconfig),
            admin,
            sa,
            sa_kubeconfig,
            standin,
            chroma_url,
            report: Report {
                rows: Vec::new(),
                json: BTreeMap::new(),
            },
        })
    }

    /// The operator as every phase starts it; `drift` is its --drift-interval (zero: off).
    fn start_operator(&self, drift: Duration) -> anyhow::Result<Operator> {
        Operator::start(
            &self.layout,
            &self.sa_kubeconfig,
            &self.chroma_url,
            self.concurrency,
            drift,
        )
    }

    fn mark(&self) -> Snapshot {
        Snapshot::take(&self.audit, &self.standin)
    }

    fn cost_since(&self, mark: Snapshot) -> Cost {
        mark.diff(&self.audit, &self.standin)
    }

    fn heap(&mut self) {
        let heap = heap_per_cached_object();
        self.report.add(
            "heap_per_cached_object",
            "heap per cached SyncSource (bytes; a Ready GitHub source, as the cache holds it)",
            json!(heap),
            format!("{heap}"),
        );
    }

    /// The floor: a null operator making the same two writes per object, as the same identity;
    /// and the fair floor: the same writes while a watch of SyncSources (and of Secrets'
    /// metadata) is open, as the operator keeps them: the apiserver serves those watch events
    /// too, so this is what a zero-cost operator could reach.
    async fn floors(&mut self) -> anyhow::Result<Floors> {
        let (n, concurrency) = (self.n, self.concurrency);
        let (admin, sa) = (self.admin.clone(), self.sa.clone());
        create_objects(&admin, WARMUP_NS, n.min(500), 0).await?;
        null_operator(&sa, WARMUP_NS, concurrency).await?;

        create_objects(&admin, NULL_NS, n, 0).await?;
        let mark = self.mark();
        let started = Instant::now();
        null_operator(&sa, NULL_NS, concurrency).await?;
        let null_secs = started.elapsed().as_secs_f64();
        let floor_cost = self.cost_since(mark);
        let null_rate = n as f64 / null_secs;
        self.report.add(
            "null_rate",
            "floor: null operator, 2 writes/object (objects/s)",
            json!(null_rate),
            format!("{null_rate:.0}/s ({null_secs:.1} s)"),
        );

        create_objects(&admin, WATCHED_NULL_NS, n, 0).await?;
        let watches =
            WatchesOnly::start(&sa, self.layout.watch_flag().map(|_| WATCHED_NULL_NS)).await;
        let mark = self.mark();
        let started = Instant::now();
        null_operator(&sa, WATCHED_NULL_NS, concurrency).await?;
        let fair_secs = started.elapsed().as_secs_f64();
        let seen = watches.stop().await;
        let fair_cost = self.cost_since(mark);
        let fair_rate = n as f64 / fair_secs;
        self.report.add(
            "fair_rate",
            "fair floor: null operator with the watches open (objects/s; events seen)",
            json!({"rate": fair_rate, "events": seen}),
            format!("{fair_rate:.0}/s ({fair_secs:.1} s; {seen} watch events)"),
        );

        // Spread, the operator watches every namespace: the floors' objects go first (their
        // null finalizers with them), or it would take them for its own.
        if self.layout.spread() {
            for ns in [WARMUP_NS, NULL_NS, WATCHED_NULL_NS] {
                clear(&admin, ns).await?;
            }
        }
        Ok(Floors {
            null_rate,
            fair_rate,
            floor_cost,
            fair_cost,
        })
    }

    /// Memory at idle, N = 0.
    async fn idle_memory(&mut self) -> anyhow::Result<u64> {
        let op = self.start_operator(Duration::ZERO)?;
        op.wait_ready().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = op.rss_kib();
        self.report.add(
            "rss_idle_kib",
            "RSS at idle, N = 0 (MiB)",
            json!(idle),
            mib(idle),
        );
        op.terminate().await;
        Ok(idle)
    }

    /// Catch-up: N objects created while the operator is stopped, against the floors; then
    /// what it cost ([`Bench::at_n`]).
    async fn catch_up(&mut self, floors: &Floors) -> anyhow::Result<(Operator, ReadyTracker)> {
        let (n, admin) = (self.n, self.admin.clone());
        let (null_rate, fair_rate) = (floors.null_rate, floors.fair_rate);
        let tracker = ReadyTracker::start(admin.clone(), &self.layout);
        create_spread(&admin, &self.layout, n, 0).await?;
        let mark = self.mark();
        let op = self.start_operator(Duration::ZERO)?;
        let started = Instant::now();
        let mut peak = 0;
        while tracker.ready_count() < n {
            peak = peak.max(op.rss_kib());
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                started.elapsed() < Duration::from_secs(600.max(n as u64 / 20)),
                "catch-up did not finish"
            );
        }
        let catchup = started.elapsed().as_secs_f64();
        let cpu = op.cpu_secs();
        let rate = n as f64 / catchup;
        self.report.add(
            "catchup_secs",
            "catch-up: start -> all Ready (s)",
            json!(catchup),
            format!("{catchup:.1} s"),
        );
        self.report.add(
            "catchup_rate",
            "catch-up rate (objects/s; ratio to floor / to fair floor)",
            json!({"rate": rate, "to_floor": rate / null_rate, "to_fair_floor": rate / fair_rate}),
            format!(
                "{rate:.0}/s ({:.2} x floor, {:.2} x fair floor)",
                rate / null_rate,
                rate / fair_rate
            ),
        );
        let cores = num_cpus() as f64;
        self.report.add(
            "catchup_operator_cpu_secs",
            "catch-up: operator CPU (s; share of the machine)",
            json!(cpu),
            format!(
                "{cpu:.1} s ({:.0}% of {cores} cores; {:.2} ms per object)",
                100.0 * cpu / (catchup * cores),
                1000.0 * cpu / n as f64
            ),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cost = self.cost_since(mark);
        self.at_n(&op, &cost, floors, peak).await;
        Ok((op, tracker))
    }

    /// With N objects Ready: what the catch-up cost per object, the condition gauge, where the
    /// time went (the apiserver's own time per write), and memory.
    async fn at_n(&mut self, op: &Operator, cost: &Cost, floors: &Floors, peak: u64) {
        let (n, concurrency) = (self.n, self.concurrency);
        let (floor_cost, fair_cost) = (&floors.floor_cost, &floors.fair_cost);
        let reconciles = op.reconciles().await;
        // The per-object condition gauge at N objects: one scrape's series, size and time, and RSS
        // after it (the series are built from the cache at each scrape, and not kept).
        let before_scrape = op.rss_kib();
        let scraped = Instant::now();
        let text = op.scrape().await;
        let scrape_ms = scraped.elapsed().as_secs_f64() * 1000.0;
        let series = text
            .lines()
            .filter(|l| l.starts_with("chroma_sync_operator_condition{"))
            .count();
        let after_scrape = op.rss_kib();
        self.report.add(
            "condition_gauge",
            "/metrics at N: condition series / bytes / scrape ms / RSS before -> after (MiB)",
            json!({"series": series, "bytes": text.len(), "ms": scrape_ms, "rss_before_kib": before_scrape, "rss_after_kib": after_scrape}),
            format!(
                "{series} / {} / {scrape_ms:.0} / {} -> {}",
                text.len(),
                mib(before_scrape),
                mib(after_scrape)
            ),
        );
        // Where a catch-up's time goes: the apiserver's own time per SyncSource write (its audit
        // timestamps) and how many of the 16 slots were waiting on a write, on average.
        let timing = |c: &Cost| json!({"mean_ms": c.write_ms(), "in_flight": c.writes_in_flight()});
        self.report.add(
            "apiserver_write_time",
            "apiserver time per write: floor / fair floor / catch-up (mean ms; writes in flight)",
            json!({"floor": timing(floor_cost), "fair_floor": timing(fair_cost), "catchup": timing(cost)}),
            format!(
                "{:.1} / {:.1} / {:.1} ms ({:.1} / {:.1} / {:.1} of {concurrency})",
                floor_cost.write_ms(),
                fair_cost.write_ms(),
                cost.write_ms(),
                floor_cost.writes_in_flight(),
                fair_cost.writes_in_flight(),
                cost.writes_in_flight()
            ),
        );
        self.report.add("writes_per_object", "API writes per object: syncsource / status / events", json!({"syncsource": per(cost.patches, n), "status": per(cost.status_patches, n), "events": per(cost.event_writes, n)}),
            format!("{:.2} / {:.2} / {:.2}", per(cost.patches, n), per(cost.status_patches, n), per(cost.event_writes, n)));
        self.report.add(
            "gets_per_object",
            "API GETs per object (syncsources, secrets)",
            json!(per(cost.gets, n)),
            format!("{:.2}", per(cost.gets, n)),
        );
        self.report.add(
            "chroma_per_object",
            "Chroma calls per object (all endpoints)",
            json!(cost.chroma.clone()),
            format!(
                "{:.2} {:?}",
                per(cost.chroma.values().sum(), n),
                cost.chroma
            ),
        );
        self.report.add(
            "reconciles_per_object",
            "reconciles per object",
            json!(per(reconciles, n)),
            format!("{:.2}", per(reconciles, n)),
        );
        let at_n = op.rss_kib();
        self.report.add(
            "rss_at_n_kib",
            "RSS at N, steady (MiB)",
            json!(at_n),
            mib(at_n),
        );
        self.report.add(
            "rss_peak_kib",
            "RSS peak during catch-up (MiB; ratio to steady)",
            json!(peak),
            format!("{} ({:.2} x)", mib(peak), peak as f64 / at_n as f64),
        );
    }

    /// Responsiveness with N present: new objects at 10/s for 10 s.
    async fn responsiveness(&mut self, tracker: &ReadyTracker) -> anyhow::Result<()> {
        let (n, admin, layout) = (self.n, &self.admin, &self.layout);
        let mut latencies = Vec::new();
        let mut created_at = HashMap::new();
        for i in 0..100 {
            let (ns, name) = (layout.ns(n + i), format!("late-{i:03}"));
            create_one(admin, ns, &name, n + i).await?;
            created_at.insert(format!("{ns}/{name}"), Instant::now());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while tracker.ready_count() < n + 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (name, at) in &created_at {
            latencies.push(
                tracker
                    .ready_at(name)
                    .unwrap()
                    .saturating_duration_since(*at)
                    .as_secs_f64()
                    * 1000.0,
            );
        }
        latencies.sort_by(f64::total_cmp);
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
        self.report.add(
            "ready_latency_ms",
            "create -> Ready with N present: p50 / p99 / max (ms)",
            json!({"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}),
            format!("{:.0} / {:.0} / {:.0}", pct(0.5), pct(0.99), pct(1.0)),
        );

        Ok(())
    }

    /// Sync runs: BENCH_RUNS runs of 8 s at once, one on each of as many Ready sources, and
    /// what following them to Complete costs.
    async fn runs(&mut self) -> anyhow::Result<()> {
        let (admin, standin) = (self.admin.clone(), &self.standin);
        let runs_n = (setting("BENCH_RUNS", 100) as usize).min(self.n);
        let run_secs = 8.0;
        standin.set_run_plan(RunPlan {
            pending_ms: 1_000,
            processing_ms: 7_000,
            fail_with: None,
        });
        let mark = self.mark();
        let started = Instant::now();
        stream::iter(0..runs_n)
            .map(|i| {
                let runs: Api<SyncRun> = Api::namespaced(admin.clone(), self.layout.ns(i));
                async move {
                    let run: SyncRun = serde_json::from_value(json!({
                        "apiVersion": "chromasync.dev/v1alpha1", "kind": "SyncRun",
                        "metadata": {"name": format!("run-{i:05}")},
                        "spec": {"sourceRef": {"name": format!("s{i:05}")},
                                 "targetCollectionName": format!("bench-{i}"),
                                 "ref": {"branch": "main"}},
                    }))
                    .expect("a SyncRun");
                    runs.create(&PostParams::default(), &run).await.map(|_| ())
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        loop {
            let complete = Api::<SyncRun>::all(admin.clone())
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Complete))
                .count();
            if complete == runs_n {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "{complete} of {runs_n} runs complete after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let all_complete = started.elapsed().as_secs_f64();
        let run_cost = self.cost_since(mark);
        let calls = |endpoint: &str| run_cost.chroma.get(endpoint).copied().unwrap_or(0);
        let bound = (run_secs / POLL_FIRST.as_secs_f64()).log2() + 2.0;
        self.report.add(
            "runs",
            &format!("{runs_n} runs of {run_secs:.0} s at once: all Complete after (s)"),
            json!({"runs": runs_n, "secs": all_complete}),
            format!("{all_complete:.1} s"),
        );
        self.report.add(
            "run_cost",
            "per run: POST / looks (bound) / lists / run writes / source GETs",
            json!({"create_invocation": per(calls("create_invocation"), runs_n),
                   "get_invocation": per(calls("get_invocation"), runs_n),
                   "poll_bound": bound,
                   "list_invocations": per(calls("list_invocations"), runs_n),
                   "run_writes": per(run_cost.run_writes, runs_n),
                   "gets": per(run_cost.gets, runs_n)}),
            format!(
                "{:.2} / {:.2} ({bound:.1}) / {:.2} / {:.2} / {:.2}",
                per(calls("create_invocation"), runs_n),
                per(calls("get_invocation"), runs_n),
                per(calls("list_invocations"), runs_n),
                per(run_cost.run_writes, runs_n),
                per(run_cost.gets, runs_n)
            ),
        );

        Ok(())
    }

    /// Continuous sync as people run it: BENCH_SYNC_SOURCES SyncSources with `spec.sync`,
    /// `publishTo` and `keepCollections: 2`, each run four times (the first on create, three on
    /// a reconcile request, each after the previous completed), and what each run costs: Chroma
    /// calls (POST, looks, lists, collection deletes, identity) and Kubernetes writes (runs,
    /// status, ConfigMaps). The SyncSources are deleted afterwards, so later phases see N.
    async fn continuous_sync(&mut self) -> anyhow::Result<()> {
        const KEEP: usize = 2;
        const RUNS_EACH: usize = 4;
        let k = (setting("BENCH_SYNC_SOURCES", 20) as usize).min(self.n);
        if k == 0 {
            return Ok(());
        }
        self.standin.set_run_plan(RunPlan {
            pending_ms: 200,
            processing_ms: 800,
            fail_with: None,
        });
        let admin = self.admin.clone();
        let api = |i: usize| Api::<SyncSource>::namespaced(admin.clone(), self.layout.ns(i));
        let name = |i: usize| format!("sync-{i:04}");
        let mark = self.mark();
        let started = Instant::now();
        stream::iter(0..k)
            .map(|i| {
                let mut spec = github(&format!("bench/sync-{i}"));
                spec["sync"] = json!({"targetCollectionName": format!("c{i}"),
                                      "ref": {"branch": "main"},
                                      "keepCollections": KEEP,
                                      "publishTo": {"configMapName": format!("c{i}-current")}});
                let (api, obj) = (api(i), sync_source(&name(i), spec));
                async move { api.create(&PostParams::default(), &obj).await.map(|_| ()) }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        // Each SyncSource's runs done so far (complete, as lastSync shows them), one request
        // for a run after each.
        let mut done = vec![0usize; k];
        let mut last_run: Vec<Option<String>> = vec![None; k];
        loop {
            for i in 0..k {
                let obj = api(i).get(&name(i)).await?;
                let status = obj.status.unwrap_or_default();
                let Some(last) = status
                    .last_sync
                    .filter(|l| l.phase == Some(RunPhase::Complete))
                else {
                    continue;
                };
                if last_run[i].as_deref() == Some(last.name.as_str()) {
                    continue;
                }
                last_run[i] = Some(last.name.clone());
                done[i] += 1;
                if done[i] < RUNS_EACH {
                    let patch = json!({"metadata": {"annotations": {
                        "chromasync.dev/reconcile-requested-at": format!("bench-{}", done[i])}}});
                    api(i)
                        .patch(&name(i), &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                }
            }
            let pruned = |i: usize| async move {
                let obj = api(i).get(&name(i)).await.ok()?;
                obj.status?.sync_state?.pruned_collections
            };
            if done.iter().all(|&d| d >= RUNS_EACH) {
                let mut all_pruned = true;
                for i in 0..k {
                    all_pruned &= pruned(i).await == Some((RUNS_EACH - KEEP) as i64);
                }
                if all_pruned {
                    break;
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "continuous sync: runs done {done:?} after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let cost = self.cost_since(mark);
        let runs_n = k * RUNS_EACH;
        let calls = |endpoint: &str| per(cost.chroma.get(endpoint).copied().unwrap_or(0), runs_n);
        let ours = |c: &String| (0..k).any(|i| c.starts_with(&format!("c{i}-")));
        let left = self
            .standin
            .collections(support::standin::DATABASE)
            .iter()
            .filter(|c| ours(c))
            .count();
        anyhow::ensure!(
            left == k * KEEP,
            "continuous sync: {left} collections left, {} expected",
            k * KEEP
        );
        self.report.add(
            "continuous_sync",
            &format!("{k} SyncSources x {RUNS_EACH} runs (publishTo, keepCollections {KEEP}): all done after (s)"),
            json!({"sources": k, "runs": runs_n, "secs": secs, "collections_left": left}),
            format!("{secs:.1} s, {left} collections left"),
        );
        self.report.add(
            "sync_run_cost",
            "per sync run: POST / looks / lists / collection deletes / identity | run writes / status writes / other writes (ConfigMaps, Events excluded)",
            json!({"create_invocation": calls("create_invocation"),
                   "get_invocation": calls("get_invocation"),
                   "list_invocations": calls("list_invocations"),
                   "delete_collection": calls("delete_collection"),
                   "get_identity": calls("get_identity"),
                   "run_writes": per(cost.run_writes, runs_n),
                   "status_writes": per(cost.status_patches, runs_n),
                   "other_writes": per(cost.other_writes, runs_n)}),
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2}",
                calls("create_invocation"),
                calls("get_invocation"),
                calls("list_invocations"),
                calls("delete_collection"),
                calls("get_identity"),
                per(cost.run_writes, runs_n),
                per(cost.status_patches, runs_n),
                per(cost.other_writes, runs_n)
            ),
        );
        // Gone again (their sources deleted at Chroma), so later phases count N objects.
        for i in 0..k {
            api(i).delete(&name(i), &DeleteParams::default()).await?;
        }
        let gone = Instant::now();
        for i in 0..k {
            while api(i).get_opt(&name(i)).await?.is_some() {
                anyhow::ensure!(
                    gone.elapsed() < Duration::from_secs(120),
                    "sync sources not gone"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    /// At rest (the finished runs included), and what the operator keeps once freed pages have
    /// gone back to the system (jemalloc's background thread returns them at rest).
    async fn at_rest(&mut self, op: &Operator) {
        let rest = self.rest;
        let mark = self.mark();
        let reconciles_before = op.reconciles().await;
        tokio::time::sleep(rest).await;
        let idle_cost = self.cost_since(mark);
        let idle_reconciles = op.reconciles().await - reconciles_before;
        self.report.add("at_rest", &format!("at rest for {} s: writes / Chroma calls / reconciles", rest.as_secs()),
            json!({"writes": idle_cost.writes(), "chroma": idle_cost.chroma.values().sum::<u64>(), "reconciles": idle_reconciles, "lease_renewals": idle_cost.lease_writes}),
            format!("{} / {} / {} (+{} Lease renewals)", idle_cost.writes(), idle_cost.chroma.values().sum::<u64>(), idle_reconciles, idle_cost.lease_writes));
        let at_rest = op.rss_kib();
        self.report.add(
            "rss_at_rest_kib",
            &format!("RSS at N after {} s at rest (MiB)", rest.as_secs()),
            json!(at_rest),
            mib(at_rest),
        );
    }

    /// Restart: kill -9 at rest; every object is new to a restarted operator: one reconcile
    /// each, which finds it Ready.
    async fn restart(&mut self, op: Operator) -> anyhow::Result<Operator> {
        let (n, rest) = (self.n, self.rest);
        op.kill();
        let mark = self.mark();
        let op = self.start_operator(Duration::ZERO)?;
        let started = Instant::now();
        op.wait_ready().await;
        let seen = started.elapsed().as_secs_f64();
        let total = (n + 100) as u64;
        let reconciled = op
            .wait_counter(SOURCE_RECONCILES, total, Duration::from_secs(600))
            .await;
        let looked = started.elapsed().as_secs_f64();
        let after_reconciled = op.rss_kib();
        tokio::time::sleep(rest).await;
        let restart_cost = self.cost_since(mark);
        let after_restart = op.rss_kib();
        self.report.add("restart", "restart after kill -9: all seen / all reconciled (s) / writes / Chroma calls",
            json!({"secs": seen, "reconciled_secs": looked, "reconciles": reconciled, "writes": restart_cost.writes(), "chroma": restart_cost.chroma.values().sum::<u64>()}),
            format!("{seen:.1} / {looked:.1} s / {} / {}", restart_cost.writes(), restart_cost.chroma.values().sum::<u64>()));
        self.report.add(
            "rss_restart_kib",
            &format!(
                "RSS after the restart: all reconciled / then {} s at rest (MiB)",
                rest.as_secs()
            ),
            json!({"reconciled": after_reconciled, "at_rest": after_restart}),
            format!("{} / {}", mib(after_reconciled), mib(after_restart)),
        );

        Ok(op)
    }

    /// The drift check at rest: the operator restarted with a short interval; the window runs
    /// from the end of one check to the end of the second check after it, so it holds exactly
    /// two whole checks (the next starts an interval later).
    async fn drift_check(&mut self, op: Operator) -> anyhow::Result<Operator> {
        let (n, drift) = (self.n, self.drift);
        op.kill();
        let op = self.start_operator(drift)?;
        op.wait_ready().await;
        let checked = "chroma_sync_operator_drift_checks_total{result=\"ok\"}";
        let first = op.wait_counter(checked, 1, drift * 3).await;
        let mark = self.mark();
        let last = op.wait_counter(checked, first + 2, drift * 4).await;
        let drift_cost = self.cost_since(mark);
        let checks = last - first;
        let chroma = |endpoint: &str| drift_cost.chroma.get(endpoint).copied().unwrap_or(0);
        let lists = chroma("list_sources");
        let others = drift_cost.chroma.values().sum::<u64>() - lists;
        let per_check = if checks == 0 {
            f64::NAN
        } else {
            lists as f64 / checks as f64
        };
        self.report.add(
            "drift",
            &format!("drift check every {} s, {} objects in 1 database: list calls per check / checks / other Chroma calls / writes", drift.as_secs(), n + 100),
            json!({"interval_secs": drift.as_secs(), "objects": n + 100, "lists_per_check": per_check, "checks": checks, "other_chroma": others, "writes": drift_cost.writes()}),
            format!("{per_check:.0} / {checks} / {others} / {}", drift_cost.writes()),
        );

        Ok(op)
    }

    /// Deletion of everything, as people delete: one object at a time, 32 at once (a 10k
    /// deletecollection outlives the client's connection).
    async fn delete_all(&mut self, op: Operator) -> anyhow::Result<()> {
        let (admin, layout) = (self.admin.clone(), &self.layout);
        let total = self.n + 100;
        let mark = self.mark();
        let names: Vec<(String, String)> = all_metadata(&Api::<SyncSource>::all(admin.clone()))
            .await?
            .into_iter()
            .filter(|o| layout.holds(&o.namespace().unwrap_or_default()))
            .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
            .collect();
        let started = Instant::now();
        stream::iter(names)
            .map(|(ns, name)| {
                let api: Api<SyncSource> = Api::namespaced(admin.clone(), &ns);
                async move {
                    api.delete(&name, &DeleteParams::default())
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        let api: Api<SyncSource> = Api::all(admin.clone());
        loop {
            let left = all_metadata(&api)
                .await?
                .iter()
                .filter(|o| layout.holds(&o.namespace().unwrap_or_default()))
                .count();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deletion = started.elapsed().as_secs_f64();
        let del_cost = self.cost_since(mark);
        self.report.add("delete", "delete all: time (s) / operator writes per object / Chroma DELETEs per object",
            json!({"secs": deletion, "writes_per_object": per(del_cost.patches, total), "chroma_deletes_per_object": per(*del_cost.chroma.get("delete_source").unwrap_or(&0), total)}),
            format!("{deletion:.1} s / {:.2} / {:.2}", per(del_cost.patches, total), per(*del_cost.chroma.get("delete_source").unwrap_or(&0), total)));
        op.terminate().await;

        Ok(())
    }

    /// Memory with many Secrets that are not the operator's: N unrelated 8 KiB Secrets in the
    /// watched namespace, the operator started idle among them.
    async fn among_secrets(&mut self, idle: u64) -> anyhow::Result<()> {
        let admin = self.admin.clone();
        let secrets_n = setting("BENCH_SECRETS", 10_000) as usize;
        if secrets_n > 0 {
            create_unrelated_secrets(&admin, self.layout.ns(0), secrets_n).await?;
            let op = self.start_operator(Duration::ZERO)?;
            op.wait_ready().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let with_secrets = op.rss_kib();
            self.report.add(
                "rss_secrets_kib",
                &format!(
                    "RSS at idle among {secrets_n} unrelated 8 KiB Secrets (MiB; idle without: {})",
                    mib(idle)
                ),
                json!({"secrets": secrets_n, "rss_kib": with_secrets, "idle_kib": idle}),
                mib(with_secrets),
            );
            op.terminate().await;
            // BENCH_SECRETS_BASELINE: an older build of the operator, measured the same way.
            if let Ok(baseline) = std::env::var("BENCH_SECRETS_BASELINE") {
                let old = Operator::start_binary(
                    &baseline,
                    &self.layout,
                    &self.sa_kubeconfig,
                    &self.chroma_url,
                    self.concurrency,
                    Duration::ZERO,
                    &[],
                )?;
                old.wait_ready().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let before = old.rss_kib();
                self.report.add(
                    "rss_secrets_baseline_kib",
                    &format!("the same with the baseline build {baseline} (MiB)"),
                    json!({"binary": baseline, "rss_kib": before}),
                    mib(before),
                );
                old.terminate().await;
            }
            let secrets: Api<Secret> = Api::namespaced(admin.clone(), self.layout.ns(0));
            let unrelated = ListParams::default().labels("bench=unrelated");
            secrets
                .delete_collection(&DeleteParams::default(), &unrelated)
                .await?;
        }

        Ok(())
    }

    /// The stand-in limited as the service limits (20 calls/s per token + 100 ms a call), with
    /// the operator told that rate and with it at its defaults (it learns the rate from 429s);
    /// and a slow service without a limit (250 ms a call), where the calls in flight (16) are
    /// the bound. Each on BENCH_LIMITED_N new objects in a namespace of its own, against a
    /// stand-in of its own, timed from the operator's start to all Ready.
    async fn limited(&mut self) -> anyhow::Result<()> {
        let n = self.limited_n;
        if n == 0 {
            return Ok(());
        }
        let rate_bound = n as f64 / LIMITED_RATE;
        let phases = [
            LimitedPhase {
                key: "limited_configured",
                label: format!(
                    "limited {LIMITED_RATE:.0} calls/s + {LIMITED_LATENCY_MS} ms, operator at {LIMITED_RATE:.0} calls/s"
                ),
                rate: LIMITED_RATE,
                latency_ms: LIMITED_LATENCY_MS,
                flags: vec![
                    "--chroma-calls-per-second".into(),
                    format!("{LIMITED_RATE}"),
                ],
                concurrency: self.concurrency,
                bound_secs: rate_bound,
                bound: "N/20 s",
            },
            LimitedPhase {
                key: "latency_250ms",
                label: format!(
                    "{SLOW_LATENCY_MS} ms a call, no limit, {IN_FLIGHT} in flight (concurrency {})",
                    2 * IN_FLIGHT
                ),
                rate: 0.0,
                latency_ms: SLOW_LATENCY_MS,
                flags: vec!["--chroma-calls-in-flight".into(), IN_FLIGHT.to_string()],
                // More reconciles than calls in flight, so that the calls in flight are the bound.
                concurrency: 2 * IN_FLIGHT,
                bound_secs: n as f64 * SLOW_LATENCY_MS as f64 / 1000.0 / IN_FLIGHT as f64,
                bound: "N x 0.25 / 16 s",
            },
            LimitedPhase {
                key: "limited_defaults",
                label: format!(
                    "limited {LIMITED_RATE:.0} calls/s + {LIMITED_LATENCY_MS} ms, operator at its defaults (no rate)"
                ),
                rate: LIMITED_RATE,
                latency_ms: LIMITED_LATENCY_MS,
                flags: vec![],
                concurrency: self.concurrency,
                bound_secs: rate_bound,
                bound: "N/20 s",
            },
        ];
        for (k, phase) in phases.iter().enumerate() {
            let run = self.limited_phase(&format!("limited-{k}"), phase).await?;
            let ratio = run.secs / phase.bound_secs;
            let share = run.refused as f64 / run.calls.max(1) as f64;
            self.report.add(
                phase.key,
                &format!(
                    "{}: ready -> {n} Ready (s; x {}) / 429 share",
                    phase.label, phase.bound
                ),
                json!({"n": n, "secs": run.secs, "startup_secs": run.startup, "bound_secs": phase.bound_secs, "ratio": ratio,
                       "calls": run.calls, "refused": run.refused, "share_429": share,
                       "max_in_flight": run.max_in_flight, "rate_at_end": run.rate}),
                format!(
                    "{:.1} s ({ratio:.2} x {:.0} s; start-up {:.1} s before) / {:.2}% ({} of {} calls; {} in flight at most; rate at the end {:.1}/s)",
                    run.secs,
                    phase.bound_secs,
                    run.startup,
                    100.0 * share,
                    run.refused,
                    run.calls,
                    run.max_in_flight,
                    run.rate
                ),
            );
        }
        Ok(())
    }

    async fn limited_phase(&self, ns: &str, phase: &LimitedPhase) -> anyhow::Result<LimitedRun> {
        let (n, admin) = (self.limited_n, self.admin.clone());
        prepare_namespace(&admin, ns).await?;
        let layout = Layout {
            namespaces: vec![ns.to_owned()],
        };
        let tracker = ReadyTracker::start(admin.clone(), &layout);
        create_spread(&admin, &layout, n, 0).await?;
        let (standin, chroma_url) = support::standin::start(TOKEN, &[]).await;
        standin.set_faults(chroma_sync_standin::Faults {
            calls_per_second: phase.rate,
            latency_ms: phase.latency_ms,
            ..Default::default()
        });
        let op = Operator::start_binary(
            &std::env::var("BENCH_OPERATOR").unwrap_or_else(|_| BINARY.to_owned()),
            &layout,
            &self.sa_kubeconfig,
            &chroma_url,
            phase.concurrency,
            Duration::ZERO,
            &phase.flags,
        )?;
        let spawned = Instant::now();
        // Timed from the operator's readiness (its caches synced, the Lease held): its start-up
        // is not the limit's concern (it is reported beside).
        op.wait_ready().await;
        let started = Instant::now();
        let startup = (started - spawned).as_secs_f64();
        let limit = Duration::from_secs_f64(120.0 + 3.0 * phase.bound_secs);
        while tracker.ready_count() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
            anyhow::ensure!(
                started.elapsed() < limit,
                "{}: {} of {n} Ready after {limit:?}",
                phase.key,
                tracker.ready_count()
            );
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = op
            .gauge(r#"chroma_sync_operator_chroma_rate_limit{connection="operator"}"#)
            .await;
        op.terminate().await;
        let calls = standin.all_calls().values().sum();
        let refused = standin
            .all_calls()
            .keys()
            .map(|endpoint| standin.calls(endpoint, "429"))
            .sum();
        clear(&admin, ns).await?;
        Ok(LimitedRun {
            startup,
            secs,
            calls,
            refused,
            max_in_flight: standin.max_in_flight(),
            rate,
        })
    }

    /// Writes the figures to target/bench/results-*.json.
    fn write(self) -> anyhow::Result<()> {
        let (n, layout) = (self.n, &self.layout);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let file = if self.limited_only {
            dir.join(format!("results-limited-{}.json", self.limited_n))
        } else if layout.spread() {
            dir.join(format!(
                "results-{n}-spread-{}.json",
                layout.namespaces.len()
            ))
        } else {
            dir.join(format!("results-{n}.json"))
        };
        let mut json = self.report.json;
        json.insert("n".into(), json!(n));
        json.insert("limited_n".into(), json!(self.limited_n));
        json.insert("namespaces".into(), json!(layout.namespaces.len()));
        json.insert("unrelated".into(), json!(self.unrelated));
        json.insert("date".into(), json!(jiff::Timestamp::now().to_string()));
        json.insert("cores".into(), json!(num_cpus()));
        std::fs::write(&file, serde_json::to_string_pretty(&json)?)?;
        println!("figures written to {}", file.display());
        Ok(())
    }
}

fn per(count: u64, n: usize) -> f64 {
    count as f64 / n as f64
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

async fn setup(admin: &Client, layout: &Layout) -> anyhow::Result<()> {
    apply_crd(admin, MANAGER).await;
    let apply = PatchParams::apply(MANAGER);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in [NULL_NS, WATCHED_NULL_NS, WARMUP_NS, "chroma-sync-system"] {
        namespaces
            .patch(ns, &apply, &Patch::Apply(namespace(ns)))
            .await?;
    }
    // Each of the operator's namespaces with its own token Secret.
    stream::iter(&layout.namespaces)
        .map(|ns| {
            let (namespaces, apply) = (namespaces.clone(), apply.clone());
            let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
            async move {
                namespaces
                    .patch(ns, &apply, &Patch::Apply(namespace(ns)))
                    .await?;
                let secret = token_secret(TOKEN_SECRET, TOKEN);
                secrets
                    .patch(TOKEN_SECRET, &apply, &Patch::Apply(secret))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    // The operator's identity as the shipped manifests (kustomize base) create it.
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests");
    let (ok, out) = kubectl(&["apply", "--server-side", "--force-conflicts", "-k", base]);
    anyhow::ensure!(ok, "applying deploy/manifests failed: {out}");
    Ok(())
}

/// Namespace `ns` with the token Secret.
async fn prepare_namespace(admin: &Client, ns: &str) -> anyhow::Result<()> {
    let apply = PatchParams::apply(MANAGER);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .patch(ns, &apply, &Patch::Apply(namespace(ns)))
        .await?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    secrets
        .patch(
            TOKEN_SECRET,
            &apply,
            &Patch::Apply(token_secret(TOKEN_SECRET, TOKEN)),
        )
        .await?;
    Ok(())
}

/// `n` Secrets of 8 KiB each in the watched namespace `ns` that no SyncSource references (as other
/// software's Secrets are), labelled `bench=unrelated`.
async fn create_unrelated_secrets(admin: &Client, ns: &str, n: usize) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let filler = "x".repeat(8 * 1024);
    stream::iter(0..n)
        .map(|i| {
            let secrets = secrets.clone();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("unrelated-{i}"), "labels": {"bench": "unrelated"}},
                "stringData": {"payload": filler},
            }))
            .expect("a Secret");
            async move {
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Other software's objects: `n` Secrets and `n` ConfigMaps of 2 KiB over [`NOISE_NAMESPACES`]
/// namespaces, there for the whole run.
async fn create_unrelated(admin: &Client, n: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let started = Instant::now();
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let apply = PatchParams::apply(MANAGER);
    for k in 0..NOISE_NAMESPACES {
        let ns = format!("noise-{k:02}");
        namespaces
            .patch(&ns, &apply, &Patch::Apply(namespace(&ns)))
            .await?;
    }
    let filler = "x".repeat(2 * 1024);
    stream::iter(0..n)
        .map(|i| {
            let ns = format!("noise-{:02}", i % NOISE_NAMESPACES);
            let body =
                json!({"metadata": {"name": format!("other-{i}")}, "data": {"payload": filler}});
            let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
            let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
            async move {
                let mut secret = body.clone();
                secret["stringData"] = secret["data"].take();
                let secret: Secret = serde_json::from_value(secret).expect("a Secret");
                let map: ConfigMap = serde_json::from_value(body).expect("a ConfigMap");
                secrets.create(&PostParams::default(), &secret).await?;
                maps.create(&PostParams::default(), &map).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "  (created {n} Secrets and {n} ConfigMaps in {NOISE_NAMESPACES} other namespaces in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every object's metadata, a page of 500 at a time (a single list of 100,000 objects outlives
/// the client's timeout).
async fn all_metadata<K>(api: &Api<K>) -> anyhow::Result<Vec<kube::core::PartialObjectMeta<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list_metadata(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}

/// Removes a floor's objects: their null finalizer first, then the objects.
async fn clear(admin: &Client, ns: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let api: Api<SyncSource> = Api::namespaced(admin.clone(), ns);
    let objects = all_metadata(&api).await?;
    let count = objects.len();
    stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move {
                let patch = json!({"metadata": {"finalizers": null}});
                api.patch(&o.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    println!(
        "  (removed the {count} objects of {ns} in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `n` objects over the layout's namespaces, the `i`-th named `s{i}` in `layout.ns(i)`.
async fn create_spread(
    admin: &Client,
    layout: &Layout,
    n: usize,
    offset: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let i = i + offset;
            async move { create_one(admin, layout.ns(i), &format!("s{i:05}"), i).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "  (created {n} objects in {} namespace(s) in {:.1} s)",
        layout.namespaces.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_one(admin: &Client, ns: &str, name: &str, i: usize) -> anyhow::Result<()> {
    let api: Api<SyncSource> = Api::namespaced(admin.clone(), ns);
    let obj = sync_source(name, github(&format!("bench/repo-{i}")));
    api.create(&PostParams::default(), &obj).await?;
    Ok(())
}

async fn create_objects(admin: &Client, ns: &str, n: usize, offset: usize) -> anyhow::Result<()> {
    let layout = Layout {
        namespaces: vec![ns.to_owned()],
    };
    create_spread(admin, &layout, n, offset).await
}

/// The floor: what any operator must do per object here, and nothing else: the operator's two
/// writes as it makes them, under its field manager: one guarded metadata patch (finalizer and
/// mark) and one guarded status patch with the same fields (the operator's own `status::next`
/// builds it: conditions, source id, payload hash). A smaller status would make a cheaper write
/// for the apiserver and an unfair floor.
async fn null_operator(sa: &Client, ns: &str, concurrency: usize) -> anyhow::Result<()> {
    let api: Api<SyncSource> = Api::namespaced(sa.clone(), ns);
    let objects = all_metadata(&api).await?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    stream::iter(objects)
        .map(|o| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let name = o.name_any();
                let mark = jiff::Timestamp::now().to_string();
                let meta = json!({"metadata": {"resourceVersion": o.resource_version(),
                    "finalizers": [crd::FINALIZER], "annotations": {crd::CREATE_PENDING_ANNOTATION: mark}}});
                let stored = api.patch(&name, &params, &Patch::Merge(meta)).await?;
                let rec = Recorded {
                    id: uuid::Uuid::new_v4().to_string(),
                    payload_hash: Some(format!("{:064x}", o.metadata.generation.unwrap_or(0))),
                    connection: None,
                };
                let generation = o.metadata.generation.unwrap_or_default();
                let ready = status::next(&Default::default(), generation, Some(&rec), &State::Ready, jiff::Timestamp::now());
                let mut patch = status::patch_if_changed(&Default::default(), &ready, None).expect("a new status");
                patch["metadata"] = json!({"resourceVersion": stored.resource_version()});
                api.patch_status(&name, &params, &Patch::Merge(patch)).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The watches the operator keeps, without the operator: SyncSources (whole objects, into a
/// store) and Secrets (metadata) of one namespace, as the ServiceAccount; counts the events.
struct WatchesOnly {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: Arc<std::sync::atomic::AtomicU64>,
}

impl WatchesOnly {
    /// Starts both watches, of namespace `ns` or of all, and waits until both have listed.
    async fn start(sa: &Client, ns: Option<&str>) -> Self {
        use kube::core::PartialObjectMeta;
        use std::sync::atomic::AtomicU64;
        let events = Arc::new(AtomicU64::new(0));
        let (listed_tx, mut listed_rx) = tokio::sync::mpsc::channel(2);
        let (sources, secrets): (Api<SyncSource>, Api<PartialObjectMeta<Secret>>) = match ns {
            Some(ns) => (
                Api::namespaced(sa.clone(), ns),
                Api::namespaced(sa.clone(), ns),
            ),
            None => (Api::all(sa.clone()), Api::all(sa.clone())),
        };
        let (_reader, writer) = kube::runtime::reflector::store();
        let sources = watcher(sources, watcher::Config::default().page_size(100))
            .default_backoff()
            .reflect(writer);
        let secrets = watcher(secrets, watcher::Config::default()).default_backoff();
        let sources = tokio::spawn(count(sources, events.clone(), listed_tx.clone()));
        let secrets = tokio::spawn(count(secrets, events.clone(), listed_tx));
        for _ in 0..2 {
            listed_rx.recv().await;
        }
        Self {
            tasks: vec![sources, secrets],
            events,
        }
    }

    /// Stops the watches once the last write's events have arrived; the events seen.
    async fn stop(self) -> u64 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for task in &self.tasks {
            task.abort();
        }
        self.events.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts a watch's Apply events into `counted`; says on `listed` when its first list is done.
async fn count<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    counted: Arc<std::sync::atomic::AtomicU64>,
    listed: tokio::sync::mpsc::Sender<()>,
) {
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                let _ = listed.send(()).await;
            }
            Ok(watcher::Event::Apply(_)) => {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// The release operator binary, as the ServiceAccount.
struct Operator {
    process: OperatorProcess,
    metrics: String,
}

impl Operator {
    /// The operator with `--drift-interval drift` (zero: off, so that only the drift phase
    /// counts the check's list calls).
    fn start(
        layout: &Layout,
        kubeconfig: &Path,
        chroma_url: &str,
        concurrency: usize,
        drift: Duration,
    ) -> anyhow::Result<Self> {
        // BENCH_OPERATOR measures another build, e.g. the image's static musl binary.
        let binary = std::env::var("BENCH_OPERATOR").unwrap_or_else(|_| BINARY.to_owned());
        Self::start_binary(
            &binary,
            layout,
            kubeconfig,
            chroma_url,
            concurrency,
            drift,
            &[],
        )
    }

    /// [`Operator::start`] with another binary (an older build, for a before/after figure:
    /// with `drift` zero it gets no flag an older build would not know).
    fn start_binary(
        binary: &str,
        layout: &Layout,
        kubeconfig: &Path,
        chroma_url: &str,
        concurrency: usize,
        drift: Duration,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new(binary);
        command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .args(["--leader-election-namespace", "chroma-sync-system"])
            .args([
                "--pod-name",
                "bench-operator",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args(["--chroma-url", chroma_url, "--allow-insecure-http"])
            // The Chroma API (keepCollections) is the stand-in too; an env var, which an
            // older build that lacks it ignores.
            .env("CHROMA_API_URL", chroma_url)
            .args(["--metrics-address", &format!("127.0.0.1:{port}")])
            .args(extra);
        if let Some(ns) = layout.watch_flag() {
            command.args(["--namespaces", ns]);
        }
        if !drift.is_zero() {
            command.args(["--drift-interval", &format!("{}ms", drift.as_millis())]);
        } else if binary == BINARY {
            command.args(["--drift-interval", "0"]);
        }
        let log = kubeconfig.with_file_name("bench-operator.log");
        Ok(Self {
            process: OperatorProcess::spawn(&mut command, &log),
            metrics: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        loop {
            // The operator leads at once here (the Lease names it), so ready means synced.
            if let Ok(r) = http.get(format!("{}/readyz", self.metrics)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU time the operator has used (user + system), from /proc: where the time of a
    /// catch-up goes, when the operator and the apiserver share the cores.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.id()))
            .unwrap_or_default();
        // Fields after the command name (which is in parentheses and may hold spaces): utime
        // and stime are the 12th and 13th, in clock ticks (100 per second on Linux).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let field = |i: usize| -> f64 {
            rest.split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        (field(11) + field(12)) / 100.0
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the counter `series` reaches `at_least` (or `timeout` passes); its value.
    async fn wait_counter(&self, series: &str, at_least: u64, timeout: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let value = self.counter(series).await;
            if value >= at_least || started.elapsed() > timeout {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The /metrics text.
    async fn scrape(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the series `series` (name and labels as rendered) on /metrics; 0 if absent.
    async fn counter(&self, series: &str) -> u64 {
        self.scrape()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    /// The value of a gauge (as rendered) on /metrics; 0 if absent.
    async fn gauge(&self, series: &str) -> f64 {
        self.scrape()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    async fn reconciles(&self) -> u64 {
        self.counter(SOURCE_RECONCILES).await
    }

    fn kill(mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
    }

    /// SIGTERM, and up to 10 s to exit; then it is killed (on drop).
    async fn terminate(mut self) {
        self.process.terminate();
        self.process.wait_exit(Duration::from_secs(10)).await;
    }
}

/// When each of the operator's SyncSources was first seen Ready (by `namespace/name`), from a
/// watch.
#[derive(Clone)]
struct ReadyTracker(Arc<Mutex<HashMap<String, Instant>>>);

impl ReadyTracker {
    fn start(client: Client, layout: &Layout) -> Self {
        let seen = Self(Arc::default());
        let map = seen.0.clone();
        let (api, spread): (Api<SyncSource>, bool) = match layout.watch_flag() {
            Some(ns) => (Api::namespaced(client, ns), false),
            None => (Api::all(client), true),
        };
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(o)) = events.next().await {
                let ready = o.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                let ns = o.namespace().unwrap_or_default();
                let ours = !spread || ns.starts_with("spread-");
                if ready && ours {
                    map.lock()
                        .unwrap()
                        .entry(format!("{ns}/{}", o.name_any()))
                        .or_insert_with(Instant::now);
                }
            }
        });
        seen
    }

    fn ready_count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn ready_at(&self, name: &str) -> Option<Instant> {
        self.0.lock().unwrap().get(name).copied()
    }
}

/// The apiserver's audit log (tests/support/audit.rs), read from where a snapshot left it: at
/// 100,000 objects the whole file is a gigabyte.
struct AuditLog(std::path::PathBuf);

impl AuditLog {
    fn of(kubeconfig: &Path) -> Self {
        Self(kubeconfig.with_file_name("audit.log"))
    }

    fn len(&self) -> u64 {
        std::fs::metadata(&self.0).map(|m| m.len()).unwrap_or(0)
    }

    /// The entries written after byte `offset`.
    fn entries_from(&self, offset: u64) -> impl Iterator<Item = Value> {
        use std::io::{BufRead, Seek};
        let mut file = std::fs::File::open(&self.0).expect("the control plane writes an audit log");
        file.seek(std::io::SeekFrom::Start(offset)).expect("seek");
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
    }
}

struct Snapshot {
    audit_offset: u64,
    chroma: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Cost {
    patches: u64,
    status_patches: u64,
    /// Writes to SyncRuns (finalizer and mark, status).
    run_writes: u64,
    event_writes: u64,
    other_writes: u64,
    gets: u64,
    lease_writes: u64,
    chroma: BTreeMap<String, u64>,
    /// The apiserver's time on the SyncSource patches (received -> response complete), in
    /// seconds, and the span from the first one's arrival to the last one's end.
    write_secs: f64,
    write_span: Option<(f64, f64)>,
}

impl Cost {
    /// Writes to SyncSources and Events (Lease renewals are reported apart).
    fn writes(&self) -> u64 {
        self.patches + self.status_patches + self.run_writes + self.event_writes + self.other_writes
    }

    /// Mean apiserver time of a SyncSource patch (ms).
    fn write_ms(&self) -> f64 {
        1000.0 * self.write_secs / (self.patches + self.status_patches).max(1) as f64
    }

    /// SyncSource patches in the apiserver at once, on average over their span.
    fn writes_in_flight(&self) -> f64 {
        self.write_span.map_or(0.0, |(first, last)| {
            self.write_secs / (last - first).max(1e-9)
        })
    }
}

impl Snapshot {
    fn take(audit: &AuditLog, standin: &StandIn) -> Self {
        Self {
            audit_offset: audit.len(),
            chroma: standin.all_calls(),
        }
    }

    /// What the operator's identity did since the snapshot.
    fn diff(&self, audit: &AuditLog, standin: &StandIn) -> Cost {
        std::thread::sleep(Duration::from_millis(1500)); // audit batches flush
        let mut cost = Cost::default();
        for e in audit.entries_from(self.audit_offset) {
            if e["user"]["username"] != SA_USER || e["stage"] != "ResponseComplete" {
                continue;
            }
            let (verb, resource) = (
                e["verb"].as_str().unwrap_or(""),
                e["objectRef"]["resource"].as_str().unwrap_or(""),
            );
            let sub = e["objectRef"]["subresource"].as_str().unwrap_or("");
            if (resource, verb) == ("syncsources", "patch") {
                let at = |key: &str| {
                    e[key]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map_or(0.0, |t| t.as_nanosecond() as f64 / 1e9)
                };
                let (received, done) = (at("requestReceivedTimestamp"), at("stageTimestamp"));
                cost.write_secs += done - received;
                let (first, last) = cost.write_span.get_or_insert((received, done));
                *first = first.min(received);
                *last = last.max(done);
            }
            match (resource, verb, sub) {
                ("leases", "update" | "create", _) => cost.lease_writes += 1,
                ("leases", _, _) => {}
                ("syncsources", "patch", "status") => cost.status_patches += 1,
                ("syncsources", "patch", _) => cost.patches += 1,
                ("syncruns", "patch", _) => cost.run_writes += 1,
                ("events", "create" | "patch", _) => cost.event_writes += 1,
                (_, "get", _) => cost.gets += 1,
                (_, "create" | "update" | "patch" | "delete" | "deletecollection", _) => {
                    cost.other_writes += 1
                }
                _ => {}
            }
        }
        for (endpoint, count) in standin.all_calls() {
            let before = self.chroma.get(&endpoint).copied().unwrap_or(0);
            if count > before {
                cost.chroma.insert(endpoint, count - before);
            }
        }
        cost
    }
}
