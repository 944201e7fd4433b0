//! `chroma-sync-operator probe URL`, the shell-less health check the chart's `helm test` hook
//! runs: exit 0 when the operator's /readyz answers 200, non-zero while it answers 503 or nothing.

use chroma_sync_operator::metrics::Metrics;
use chroma_sync_operator::server;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn probe(url: &str) -> bool {
    Command::new(env!("CARGO_BIN_EXE_chroma-sync-operator"))
        .args(["probe", url, "--timeout", "2s"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the probe")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_zero_only_on_a_ready_answer() {
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let app = server::router(ready.clone(), Metrics::new());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let not_ready = url.clone();
    assert!(
        !tokio::task::spawn_blocking(move || probe(&not_ready))
            .await
            .unwrap()
    );
    ready.store(true, Ordering::SeqCst);
    let now_ready = url.clone();
    assert!(
        tokio::task::spawn_blocking(move || probe(&now_ready))
            .await
            .unwrap()
    );
    assert!(
        !tokio::task::spawn_blocking(|| probe("http://127.0.0.1:1/readyz"))
            .await
            .unwrap()
    );
}
