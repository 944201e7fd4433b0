//! The operator binary as a child process: started with its output in a log file, stopped by
//! SIGTERM (the graceful way) or SIGKILL (a crash), and waited for. Its methods are named as
//! `std::process::Child`'s where they do the same.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The operator binary of this checkout, as a `&'static str` path. A macro, not a constant:
/// Cargo tells only the operator package's own test and bench targets where it built the binary
/// (`CARGO_BIN_EXE_chroma-sync-operator`), so it is read where the macro is used, in one of them.
#[macro_export]
macro_rules! operator_binary {
    () => {
        env!("CARGO_BIN_EXE_chroma-sync-operator")
    };
}

/// A running operator process. Dropping it kills it, so a failed test leaves none behind.
pub struct OperatorProcess {
    child: Child,
}

impl OperatorProcess {
    /// Starts `command` (the operator binary with its arguments and environment), with stdin
    /// closed and stdout and stderr appended to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the operator log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the operator log"))
            .stderr(log)
            .spawn()
            .expect("start the operator");
        Self { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for it to exit, however long that takes.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// SIGTERM: the operator finishes the reconciles in flight, hands its Lease back and exits.
    pub fn terminate(&self) {
        let pid = Pid::from_raw(self.id().try_into().expect("a pid fits in pid_t"));
        kill(pid, Signal::SIGTERM).expect("send SIGTERM to the operator");
    }

    /// SIGKILL: no chance to finish anything. (`wait` reaps it.)
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Waits up to `timeout` for it to exit; its exit status, or `None` while it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait().expect("poll the operator") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        // Kills and reaps it if it still runs; after an exit that was waited for, both are
        // no-ops.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
