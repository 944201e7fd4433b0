//! The operator's /healthz, /readyz and /metrics.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_report_what_happened() {
    let env = Env::start("metrics").await;
    let base = env.metrics_url().await;
    chroma_sync_operator::chroma::install_crypto_provider();
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        }
    };
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    wait_for("/readyz to answer 200", SOON, || async {
        (get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    env.create("m", github("acme/metrics")).await;
    env.wait_reason("m", "SourceReady", SOON).await;
    let (status, text) = get("/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        text.contains(
            r#"chroma_sync_operator_chroma_requests_total{endpoint="create_source",code="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("chroma_sync_operator_reconciles_total"),
        "{text}"
    );
    assert!(
        text.contains("chroma_sync_operator_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "no secret in metrics");
}
