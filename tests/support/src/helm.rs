//! helm (built from Go modules by tests/helm/build.sh; its path in HELM, set by tests/run.sh),
//! run against the control plane as admin.

use crate::control_plane::{kubeconfig_path, run};
use std::process::Command;

/// Runs helm with `args`; returns success and stdout followed by stderr.
pub fn helm(args: &[&str]) -> (bool, String) {
    let helm = std::env::var_os("HELM").expect("HELM: run through tests/run.sh");
    run(Command::new(helm)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("helm-config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("helm-data")))
}
