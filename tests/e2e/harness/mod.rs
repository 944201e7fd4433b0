//! Test environment: the real control plane that `make test` started (KUBECONFIG), a fresh
//! namespace per test, an in-process Chroma Sync stand-in, and the real operator binary as a
//! child process scoped to that namespace. What does not depend on the suite (the operator
//! process, the audit log, the stand-in and object fixtures, settings) is in tests/support/.

mod cluster;
mod conditions;
mod env;
mod faults;
mod operator;
pub mod release;
mod report;

pub use crate::support::control_plane::{apply_crd, kubeconfig_path};
pub use crate::support::objects::{TOKEN_SECRET, github};
pub use crate::support::settings::setting;
pub use crate::support::standin::DATABASE;
pub use crate::support::wait::wait_for;
pub use cluster::{PrivateCluster, client, install_crd};
pub use conditions::{condition, ready};
pub use env::Env;
pub use faults::{Churn, assert_one_source_each, calls_beyond_floor, on_creates, settle};
pub use operator::wait_log;
pub use report::Report;
use std::time::Duration;

pub const TOKEN: &str = "test-admin-token";
pub const VIEWER_TOKEN: &str = "test-viewer-token";
/// The operator's `--chroma-timeout`: a Chroma answer later than this is a timeout.
pub const CHROMA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a single object may take to reach a state, in the tests that are not under load.
pub const SOON: Duration = Duration::from_secs(30);
/// The field manager of the tests' server-side applies.
pub const MANAGER: &str = "e2e-tests";
