//! Releases on a control plane of a test's own: the previous release (tests/previous/: its tree,
//! chart and binary), helm and kubectl against that control plane, and the README's upgrade
//! steps, run as written.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// This tree's chart.
pub const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/helm/chroma-sync-operator"
);
/// The release name and namespace the README's commands use.
pub const RELEASE: &str = "chroma-sync-operator";
pub const RELEASE_NS: &str = "chroma-sync-system";
/// The CRDs, by name.
pub const CRDS: [&str; 4] = [
    "syncsources.chromasync.dev",
    "syncruns.chromasync.dev",
    "chromasyncconnections.chromasync.dev",
    "clusterchromasyncconnections.chromasync.dev",
];

/// The previous release (tests/previous/release): a directory with its binary
/// (`chroma-sync-operator`) and its source tree (`src`). PREVIOUS_RELEASE when tests/run.sh set
/// it, else tests/previous/build.sh builds it (once; cached by commit). With `tree_only`, the
/// binary may be absent (no build).
pub fn previous_release(tree_only: bool) -> PathBuf {
    if let Some(dir) = std::env::var_os("PREVIOUS_RELEASE") {
        return PathBuf::from(dir);
    }
    let mut command = Command::new(Path::new(ROOT).join("tests/previous/build.sh"));
    if tree_only {
        command.arg("--tree");
    }
    let out = command.output().expect("run tests/previous/build.sh");
    assert!(
        out.status.success(),
        "tests/previous/build.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("the release directory").trim())
}

/// The previous release's tag, as tests/previous/release records it.
pub fn previous_tag() -> String {
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/previous/release")).unwrap();
    let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
    line.split_whitespace().next().unwrap().to_owned()
}

/// The previous release's chart.
pub fn previous_chart(release: &Path) -> PathBuf {
    release.join("src/deploy/helm/chroma-sync-operator")
}

/// A tool (helm, kubectl, bash) run as admin of the control plane of `kubeconfig`, with the
/// control plane's kubectl and the tests' helm first on PATH, in `dir`.
pub fn tool(kubeconfig: &Path, program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let helm = PathBuf::from(std::env::var_os("HELM").expect("HELM: run through tests/run.sh"));
    let kubectl_dir = std::fs::canonicalize(kubeconfig.with_file_name("kubectl"))
        .expect("the control plane's kubectl");
    let path = std::env::join_paths(
        [
            kubectl_dir.parent().unwrap().to_path_buf(),
            helm.parent().unwrap().to_path_buf(),
        ]
        .into_iter()
        .chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .unwrap();
    let home = kubeconfig.parent().unwrap().join("helm-home");
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn helm_at(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    tool(kubeconfig, "helm", args, Path::new(ROOT))
}

pub fn kubectl_at(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    tool(kubeconfig, "kubectl", args, Path::new(ROOT))
}

/// The `sh` block of README.md that follows the line starting with `<!-- {marker}`.
pub fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme
        .find(&format!("<!-- {marker}"))
        .unwrap_or_else(|| panic!("README.md has no <!-- {marker} block"));
    let rest = &readme[start..];
    let body = &rest[rest.find("```sh\n").expect("a ```sh block") + 6..];
    body[..body.find("```").unwrap()].to_owned()
}

/// Runs the README's upgrade steps from 0.1.0 as written (bash -euo pipefail) in this tree,
/// against the control plane of `kubeconfig`.
pub fn run_readme_upgrade(kubeconfig: &Path) -> String {
    let block = readme_block("upgrade-from-0.1.0");
    let (ok, out) = tool(
        kubeconfig,
        "bash",
        &["-euo", "pipefail", "-c", &block],
        Path::new(ROOT),
    );
    assert!(ok, "the README's upgrade steps failed:\n{block}\n{out}");
    out
}

/// The annotations of CRD `name` (JSON), as the apiserver has it.
pub fn crd_metadata(kubeconfig: &Path, name: &str) -> serde_json::Value {
    let (ok, out) = kubectl_at(kubeconfig, &["get", "crd", name, "-o", "json"]);
    assert!(ok, "{out}");
    let crd: serde_json::Value = serde_json::from_str(&out).unwrap();
    crd["metadata"].clone()
}
