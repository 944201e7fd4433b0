//! The command-line tools the tests and the benchmark drive, shared by both: the control plane's
//! kubectl (next to its kubeconfig), helm (HELM, set by tests/run.sh), and a kubeconfig that acts
//! as a ServiceAccount.

// Each test binary that includes this file uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The admin kubeconfig of the control plane that tests/run.sh started.
pub fn admin_kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os("KUBECONFIG").expect("KUBECONFIG: run through tests/run.sh"))
}

/// Runs the control plane's kubectl as admin; returns success and stdout followed by stderr.
pub fn kubectl(args: &[&str]) -> (bool, String) {
    run(Command::new(admin_kubeconfig().with_file_name("kubectl")).args(args))
}

/// Runs helm (built from Go modules by tests/helm/build.sh) against the control plane as admin.
pub fn helm(args: &[&str]) -> (bool, String) {
    let helm = std::env::var_os("HELM").expect("HELM: run through tests/run.sh");
    run(Command::new(helm)
        .args(args)
        .env("KUBECONFIG", admin_kubeconfig())
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("helm-config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("helm-data")))
}

fn run(command: &mut Command) -> (bool, String) {
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
    let admin = std::fs::read_to_string(admin_kubeconfig()).map_err(|e| e.to_string())?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).map_err(|e| e.to_string())?;
    config["users"] = serde_yaml::from_str(&format!(
        "[{{name: admin, user: {{token: {}}}}}]",
        token.trim()
    ))
    .map_err(|e| e.to_string())?;
    let yaml = serde_yaml::to_string(&config).map_err(|e| e.to_string())?;
    std::fs::write(out, yaml).map_err(|e| e.to_string())
}
