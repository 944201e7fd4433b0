//! The operator processes of a test's environment: the binary run against its namespace, as one
//! replica that can be restarted, stopped and killed, or as several replicas of its own.

use super::{CHROMA_TIMEOUT, Env, SOON, wait_for};
use crate::support::operator::OperatorProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// The operator binary of this checkout.
pub(super) const BINARY: &str = crate::support::operator_binary!();

impl Env {
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
    pub fn spawn_operator(&self, replica: &str, log_path: &Path) -> OperatorProcess {
        let mut command = Command::new(&self.operator_binary);
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
            // The stand-in serves the Chroma API (collections) too; an environment variable,
            // which the previous release (tests/e2e/upgrade.rs) ignores, not a flag it refuses.
            .env("CHROMA_API_URL", &self.chroma_url)
            .args(["--metrics-address", "127.0.0.1:0", "--log-format", "text"])
            .args([
                "--chroma-timeout",
                &format!("{}s", CHROMA_TIMEOUT.as_secs()),
            ])
            .args(&self.extra_args)
            .env("RUST_LOG", &self.log_filter)
            .env_remove("CHROMA_SYNC_TOKEN");
        OperatorProcess::spawn(&mut command, log_path)
    }

    /// The log file of replica `replica` (one that `spawn_operator` starts).
    pub fn log_path(&self, replica: &str) -> PathBuf {
        log_dir().join(format!("{}-{replica}.log", self.ns))
    }

    /// True while the operator process started last is alive.
    pub fn operator_running(&mut self) -> bool {
        self.operator
            .as_mut()
            .is_some_and(|o| o.try_wait().expect("poll the operator").is_none())
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            operator.kill().expect("kill the operator");
            operator.wait().expect("reap the operator");
        }
    }

    /// Sends SIGTERM to the operator.
    pub fn sigterm_operator(&self) {
        self.operator
            .as_ref()
            .expect("the operator is running")
            .terminate();
    }

    /// Waits (up to `timeout`) for the operator to exit; its exit status.
    pub async fn wait_operator_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut operator = self.operator.take().expect("the operator is running");
        match operator.wait_exit(timeout).await {
            Some(status) => status,
            // Dropping it kills it.
            None => panic!("the operator did not exit within {timeout:?}"),
        }
    }

    /// The operator's probe and metrics address, from its log.
    /// The operator's `/metrics` text, scraped now.
    pub async fn scrape_metrics(&self) -> String {
        let url = format!("{}/metrics", self.metrics_url().await);
        let response = reqwest::get(url).await.expect("scrape /metrics");
        response.text().await.expect("the /metrics text")
    }

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
}

/// Waits until the log at `log_path` (a replica's, from `spawn_operator`) contains `line`.
pub async fn wait_log(log_path: &Path, what: &str, line: &str) {
    wait_for(what, SOON, || async {
        std::fs::read_to_string(log_path)
            .ok()?
            .contains(line)
            .then_some(())
    })
    .await
}

/// Where the operators' logs go (target/tmp/operator-logs/), printed when a test fails.
pub(super) fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
    std::fs::create_dir_all(&dir).expect("create the log directory");
    dir
}
