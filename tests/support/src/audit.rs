//! The apiserver's audit log: its own record of every request on SyncSources, Secrets, Events
//! and Leases (tests/controlplane/audit-policy.yaml), whoever made it. Entries reach the file
//! in batches, a moment after the request.

use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct AuditLog(PathBuf);

impl AuditLog {
    /// The audit log of the control plane whose kubeconfig is `kubeconfig`
    /// (tests/controlplane/controlplane.sh writes both into one directory).
    pub fn of(kubeconfig: &Path) -> Self {
        Self(kubeconfig.with_file_name("audit.log"))
    }

    /// Every entry written so far, in order.
    pub fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.0)
            .expect("the control plane writes an audit log")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
