//! The operator binary: `chroma-sync-operator` runs the controller; `chroma-sync-operator crd`
//! prints the CustomResourceDefinition.

// `make heap-profile` builds with the system allocator, the one heaptrack sees.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start (`_RJEM_MALLOC_CONF` in the environment overrides).
/// A background thread returns freed pages to the system while the operator is at rest;
/// without it pages are returned only as a side effect of later allocations, which an operator
/// at rest hardly makes (the RSS after a restart, with and without: tests/bench/HISTORY.md).
#[cfg(not(feature = "system-allocator"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 23] = b"background_thread:true\0";

use chroma_sync_operator::chroma::{
    self, ChromaClient, ClientConfig, Limits, Token, check_base_url,
};
use chroma_sync_operator::crd::{self, SyncSource};
use chroma_sync_operator::kernel::notify::Notifier;
use chroma_sync_operator::kernel::{DefaultToken, FIELD_MANAGER};
use chroma_sync_operator::metrics::{ConditionScope, Metrics};
use chroma_sync_operator::source::{Controller, Parts, Settings};
use chroma_sync_operator::{connection, leader, run, server};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{error, info};

#[derive(Parser)]
// A flag given twice takes its last value, so that flags appended after a chart's own (the
// chart's `extraArgs`) win, as with kubectl and the Go controllers.
#[command(
    version,
    about = "Manages Chroma Sync sources declared as SyncSource resources",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the operator's CustomResourceDefinitions as YAML (all, or the one named by its
    /// plural: syncsources, syncruns, chromasyncconnections, clusterchromasyncconnections).
    Crd { name: Option<String> },
    /// GET an http:// URL (such as the operator's /readyz) and exit 0 on a 2xx answer, 1
    /// otherwise: a health check for images without a shell (the chart's `helm test` hook).
    Probe {
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Base URL of the Chroma Sync API.
    #[arg(
        long,
        env = "CHROMA_SYNC_URL",
        default_value = "https://sync.trychroma.com"
    )]
    chroma_url: String,
    /// Base URL of the Chroma API (collections): where `spec.sync.keepCollections` deletes old
    /// collections, with the same token (a connection's `apiUrl` overrides it).
    #[arg(long, env = "CHROMA_API_URL", default_value = chroma::DEFAULT_API_URL)]
    chroma_api_url: String,
    /// Allow a plain http:// Chroma URL (only for a local stand-in).
    #[arg(long, env = "CHROMA_SYNC_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Extra CA certificates (PEM bundle) to trust for the Chroma URL, e.g. a corporate proxy's.
    #[arg(long, env = "CHROMA_SYNC_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Timeout of one call to Chroma Sync.
    #[arg(long, env = "CHROMA_SYNC_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    chroma_timeout: Duration,
    /// Calls per second to Chroma Sync, at most (shared by all calls); unset: unlimited until the
    /// service answers 429, then the rate of successful calls seen, adapted to later 429s.
    #[arg(long, env = "CHROMA_SYNC_CALLS_PER_SECOND", value_parser = parse_rate)]
    chroma_calls_per_second: Option<f64>,
    /// Calls to Chroma Sync that may go at once above that rate (keep it below the service's own
    /// burst, so that network jitter cannot push calls over its limit).
    #[arg(long, env = "CHROMA_SYNC_BURST", default_value_t = chroma::limit::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    chroma_burst: u32,
    /// Calls to Chroma Sync sent and not yet answered, at most (apart from --concurrency).
    #[arg(long, env = "CHROMA_SYNC_CALLS_IN_FLIGHT", default_value_t = chroma::limit::DEFAULT_IN_FLIGHT, value_parser = parse_in_flight)]
    chroma_calls_in_flight: usize,
    /// Token for SyncSources without tokenSecretRef.
    #[arg(long, env = "CHROMA_SYNC_TOKEN", hide_env_values = true)]
    default_token: Option<String>,
    /// File holding the default token, read at each use (a mounted Secret rotates in place).
    #[arg(long, env = "CHROMA_SYNC_TOKEN_FILE")]
    default_token_file: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; all when empty.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Reconciles running at once (per watched namespace).
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Watch only the Secrets with these labels (a label selector, e.g.
    /// `chromasync.dev/token=true`): a SyncSource's tokenSecretRef must then name such a Secret.
    /// Unset: every Secret (metadata only; the data only of the Secrets SyncSources reference).
    #[arg(long, env = "SECRET_LABEL_SELECTOR")]
    secret_label_selector: Option<String>,
    /// How often every recorded source is checked to still exist in Chroma (one paged list per
    /// database and token, spread over the interval; jittered). 0 turns the check off.
    #[arg(long, env = "DRIFT_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    drift_interval: Duration,
    /// How often a Ready ChromaSyncConnection or ClusterChromaSyncConnection is checked again
    /// with an authenticated call (at once when its spec or token Secret changes).
    #[arg(long, env = "CONNECTION_CHECK_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    connection_check_interval: Duration,
    /// Which objects the per-object condition gauge (`chroma_sync_operator_condition`) shows:
    /// `all`, `not-ready` (what the alerts read; a small scrape at 100,000 objects) or `off`.
    #[arg(long, env = "CONDITION_METRICS", value_enum, default_value_t = ConditionMetrics::All)]
    condition_metrics: ConditionMetrics,
    /// Where to POST an event (Flux's event format, e.g. notification-controller's
    /// `http://notification-controller.flux-system.svc.cluster.local./`) when a SyncRun fails;
    /// unset: none is posted.
    #[arg(long, env = "EVENTS_ADDR", hide_env_values = true)]
    events_addr: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Name of this replica: the reporting instance of Events and the leader-election identity.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Elect a leader on a Lease, so that several replicas are safe (only the leader reconciles).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_ID",
        default_value = "chroma-sync-operator"
    )]
    leader_election_id: String,
    /// How long the Lease lasts without renewal: a standby takes over this long after the
    /// leader's last renewal (whole seconds; longer than the renew deadline).
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading and exits.
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,
    /// How often a standby (or a failed renewal) tries the Lease again.
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConditionMetrics {
    All,
    NotReady,
    Off,
}

impl From<ConditionMetrics> for ConditionScope {
    fn from(c: ConditionMetrics) -> Self {
        match c {
            ConditionMetrics::All => ConditionScope::All,
            ConditionMetrics::NotReady => ConditionScope::NotReady,
            ConditionMetrics::Off => ConditionScope::Off,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("not a positive number of calls per second: {s:?}")),
    }
}

fn parse_in_flight(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("not a positive number of calls: {s:?}")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    chroma_sync_operator::duration::parse(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Probe { url, timeout }) => probe(&url, timeout).await,
        Some(Command::Crd { name }) => print_crds(name.as_deref()),
        None => operate(cli.run).await,
    }
}

/// Runs the operator: both controllers under one leadership, until a signal.
async fn operate(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    // Timings that could let two replicas lead are refused before anything starts.
    leader_timings(&args)?;
    chroma::install_crypto_provider();
    let metrics = Metrics::new();
    metrics.set_condition_scope(args.condition_metrics.into());
    let defaults = client_config(&args)?;
    let chroma = ChromaClient::new(&defaults, metrics.clone())?;
    let identity = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("chroma-sync-operator-{}", uuid::Uuid::new_v4().simple()));
    let client = kube_client(&identity).await?;
    crds_installed(&client, &args.namespaces).await?;
    let watches = connection::Watches::new(
        client.clone(),
        connection::Settings {
            namespaces: args.namespaces.clone(),
            check_interval: args.connection_check_interval,
            allow_insecure_http: args.allow_insecure_http,
            defaults,
        },
    );
    let notifier = match args.events_addr.as_deref().filter(|a| !a.is_empty()) {
        Some(address) => {
            let instance = args.pod_name.as_deref().unwrap_or(&identity);
            Notifier::new(address, FIELD_MANAGER, instance, metrics.clone())?
        }
        None => Notifier::disabled(),
    };
    let controller = Controller::new(Parts {
        client: client.clone(),
        connections: watches.connections(chroma, &metrics),
        metrics: metrics.clone(),
        default_token: DefaultToken {
            value: args.default_token.clone().and_then(Token::new),
            file: args.default_token_file.clone(),
        },
        instance: args.pod_name.clone(),
        notifier,
        settings: Settings {
            namespaces: args.namespaces.clone(),
            concurrency: args.concurrency,
            drift_interval: args.drift_interval,
            secret_label_selector: args.secret_label_selector.clone().filter(|s| !s.is_empty()),
        },
    });
    let ctx = controller.context();
    // Ready once the caches have synced; a standby is ready too (it serves, and a rollout may go
    // on), until it becomes the leader and syncs its own caches.
    let ready = Arc::new(AtomicBool::new(false));
    serve_probes(&args.metrics_address, ready.clone(), metrics.clone()).await?;
    let Some(leadership) = lead(&args, &client, identity, &ready, &metrics).await? else {
        return Ok(()); // a signal came while standing by
    };

    let stopper = ctx.clone();
    let shutdown = futures::FutureExt::shared(Box::pin(async move {
        wait_for_signal().await;
        info!("signal received: no new creates; finishing reconciles in flight");
        stopper.stop();
    }));
    info!(chroma_url = %args.chroma_url, namespaces = ?args.namespaces, concurrency = args.concurrency, "starting controller");
    let runs = run::run(
        client,
        &args.namespaces,
        args.concurrency,
        ctx.clone(),
        shutdown.clone(),
    );
    let connections = watches.run(ctx.clone(), shutdown.clone());
    futures::join!(controller.run(ready, shutdown), runs, connections);
    // Events (and notifications) of the last reconciles are still queued; give them a moment (within the pod's
    // grace period), then release the Lease.
    futures::join!(
        ctx.events.flush(Duration::from_secs(3)),
        ctx.notifier.flush(Duration::from_secs(3))
    );
    leadership.release().await;
    Ok(())
}

/// Prints the CRDs (all, or the one whose plural is `name`).
fn print_crds(name: Option<&str>) -> anyhow::Result<()> {
    let all = crd::all_crds_yaml();
    let chosen: Vec<&str> = all
        .iter()
        .filter(|(plural, _)| name.is_none_or(|n| n == *plural))
        .map(|(_, yaml)| yaml.as_str())
        .collect();
    anyhow::ensure!(!chosen.is_empty(), "no CRD named {name:?}");
    print!("{}", chosen.join("---\n"));
    Ok(())
}

/// The client settings of the operator's own route, and the defaults of every connection.
fn client_config(args: &RunArgs) -> anyhow::Result<ClientConfig> {
    check_base_url(&args.chroma_url, args.allow_insecure_http)?;
    check_base_url(&args.chroma_api_url, args.allow_insecure_http)?;
    let extra_ca_pem = args.ca_file.as_ref().map(std::fs::read).transpose()?;
    Ok(ClientConfig {
        name: "operator".into(),
        base_url: args.chroma_url.clone(),
        api_url: args.chroma_api_url.clone(),
        timeout: args.chroma_timeout,
        extra_ca_pem,
        limits: Limits {
            calls_per_second: args.chroma_calls_per_second,
            burst: args.chroma_burst,
            in_flight: args.chroma_calls_in_flight,
        },
    })
}

/// Fails fast, with a clear message, when a CRD or a permission the watches need is missing (a
/// watch that cannot list would retry forever, and the objects would wait for it). In
/// namespaced mode the operator may list only its own namespaces.
async fn crds_installed(client: &kube::Client, namespaces: &[String]) -> anyhow::Result<()> {
    use chroma_sync_operator::crd::{ChromaSyncConnection, ClusterChromaSyncConnection};
    use k8s_openapi::api::core::v1::Namespace;
    let one = ListParams::default().limit(1);
    let scoped = |c: &kube::Client| -> (Api<SyncSource>, Api<ChromaSyncConnection>) {
        match namespaces.first() {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (Api::all(c.clone()), Api::all(c.clone())),
        }
    };
    let (sources, connections) = scoped(client);
    let hint =
        "are the CRDs and the operator's RBAC installed (kubectl apply --server-side -f crds/)?";
    let failed = |what: &str, e: kube::Error| anyhow::anyhow!("cannot list {what} ({e}); {hint}");
    sources
        .list(&one)
        .await
        .map_err(|e| failed("SyncSources", e))?;
    connections
        .list(&one)
        .await
        .map_err(|e| failed("ChromaSyncConnections", e))?;
    Api::<ClusterChromaSyncConnection>::all(client.clone())
        .list(&one)
        .await
        .map_err(|e| failed("ClusterChromaSyncConnections", e))?;
    Api::<kube::core::PartialObjectMeta<Namespace>>::all(client.clone())
        .list_metadata(&one)
        .await
        .map_err(|e| failed("Namespaces", e))?;
    Ok(())
}

/// Serves /healthz, /readyz and /metrics in the background.
async fn serve_probes(
    address: &str,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");
    let app = server::router(ready, metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "probe server failed");
        }
    });
    Ok(())
}

/// This replica's right to run the controllers: held in a task until released, or lost (then
/// the process exits at once).
struct Leadership {
    held: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Leadership {
    /// Hands the Lease back, so that a standby takes over at once.
    async fn release(self) {
        if let Some((task, release)) = self.held {
            let _ = release.send(());
            let _ = task.await;
        }
    }
}

fn leader_timings(args: &RunArgs) -> anyhow::Result<leader::Timings> {
    leader::Timings {
        lease_duration: args.leader_election_lease_duration,
        renew_deadline: args.leader_election_renew_deadline,
        retry_period: args.leader_election_retry_period,
    }
    .checked()
    .map_err(|e| anyhow::anyhow!("leader election: {e}"))
}

/// With leader election, waits (a ready standby) until this replica leads; `None` when a signal
/// comes first. Without, this replica leads.
async fn lead(
    args: &RunArgs,
    client: &kube::Client,
    identity: String,
    ready: &Arc<AtomicBool>,
    metrics: &Metrics,
) -> anyhow::Result<Option<Leadership>> {
    if !args.leader_election {
        metrics.set_leader(true);
        return Ok(Some(Leadership { held: None }));
    }
    let settings = leader::Settings::new(
        args.leader_election_namespace.clone(),
        args.leader_election_id.clone(),
        identity,
        leader_timings(args)?,
    );
    let standby = ready.clone();
    let on_standby = move || standby.store(true, Ordering::SeqCst);
    let mut lease = tokio::select! {
        held = leader::acquire(client.clone(), settings, on_standby) => held?,
        _ = wait_for_signal() => {
            info!("signal received while standing by; exiting");
            return Ok(None);
        }
    };
    ready.store(false, Ordering::SeqCst);
    metrics.set_leader(true);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let leads = metrics.clone();
    let task = tokio::spawn(async move {
        let lost = tokio::select! {
            _ = lease.hold() => true,
            _ = released => false,
        };
        leads.set_leader(false);
        if lost {
            // Another replica may lead already: stop at once. Crash safety covers any create
            // this cuts short.
            error!("leadership lost; exiting");
            std::process::exit(1);
        }
        lease.release().await;
    });
    Ok(Some(Leadership {
        held: Some((task, release)),
    }))
}

async fn probe(url: &str, timeout: Duration) -> anyhow::Result<()> {
    chroma::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let status = client.get(url).send().await?.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    println!("{url} answered {status}");
    Ok(())
}

/// A client that names this replica in its User-Agent, so the apiserver's audit log tells the
/// replicas' requests apart (as client-go's `<binary>/<version> (...)` agent does).
async fn kube_client(identity: &str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    let agent = format!(
        "chroma-sync-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    );
    config.headers.push((
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_str(&agent)?,
    ));
    Ok(kube::Client::try_from(config)?)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_given_again_takes_the_last_value_so_extra_args_win() {
        let cli = Cli::try_parse_from([
            "chroma-sync-operator",
            "--concurrency=16",
            "--drift-interval=10m",
            "--concurrency=4",
            "--drift-interval=1h",
        ])
        .unwrap();
        assert_eq!(cli.run.concurrency, 4);
        assert_eq!(cli.run.drift_interval, Duration::from_secs(3600));
    }

    #[test]
    fn leader_timings_that_could_elect_two_leaders_are_refused() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["chroma-sync-operator"].iter().chain(args)).unwrap();
            leader_timings(&cli.run).map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]), Ok(leader::Timings::default()));
        let refused = parse(&["--leader-election-lease-duration=10s"]).unwrap_err();
        assert!(
            refused.contains("shorter than the lease duration"),
            "{refused}"
        );
        assert!(
            parse(&[
                "--leader-election-lease-duration=1m",
                "--leader-election-renew-deadline=40s"
            ])
            .is_ok()
        );
    }
}
