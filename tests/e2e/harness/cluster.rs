//! The control planes the tests run on: the shared one that tests/run.sh started, with the CRDs
//! installed once per test binary, and private ones for tests that restart or break theirs.

use super::MANAGER;
use crate::support::control_plane::{apply_crd, client_for, kubeconfig_path};
use kube::Client;
use std::path::PathBuf;
use std::process::Command;
use tokio::sync::OnceCell;

static CRD_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// An admin client of the shared control plane.
pub async fn client() -> Client {
    client_for(&kubeconfig_path()).await
}

/// Installs the CRDs on the shared control plane once per test binary.
pub async fn install_crd(client: &Client) {
    CRD_INSTALLED
        .get_or_init(|| apply_crd(client, MANAGER))
        .await;
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
