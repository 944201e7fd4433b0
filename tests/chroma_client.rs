//! The Chroma client against the stand-in's faults, over real HTTP: each kind of failure is
//! sorted the way the reconciler relies on. Also drives the stand-in's control endpoints.

use chroma_sync_operator::chroma::wire::{CreateSourcePayload, GithubConfig, SourceConfig};
use chroma_sync_operator::chroma::{
    ChromaClient, ChromaError, ClientConfig, Deleted, Token, TransportKind,
};
use chroma_sync_operator::metrics::Metrics;
use chroma_sync_operator::standin::{StandIn, Tokens};
use serde_json::{Value, json};
use std::time::Duration;

async fn standin() -> (String, ChromaClient, reqwest::Client) {
    let s = StandIn::new(
        ["docs".to_owned()],
        Tokens {
            admin: ["t".to_owned()].into(),
            viewer: Default::default(),
        },
    );
    let base = s.start_local().await.unwrap();
    let config = ClientConfig {
        base_url: base.clone(),
        timeout: Duration::from_millis(800),
        extra_ca_pem: None,
    };
    let client = ChromaClient::new(&config, Metrics::new()).unwrap();
    (base, client, reqwest::Client::new())
}

fn payload(repo: &str) -> CreateSourcePayload {
    CreateSourcePayload {
        database_name: "docs".into(),
        source: SourceConfig::Github(GithubConfig {
            repository: repo.into(),
            app_id: None,
            include_globs: None,
        }),
        chunking: None,
        embedding: None,
        embedding_model: None,
    }
}

async fn faults(http: &reqwest::Client, base: &str, faults: Value) {
    let r = http
        .put(format!("{base}/_standin/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn failures_are_sorted_for_the_reconciler() {
    let (base, client, http) = standin().await;
    let token = Token::new("t").unwrap();

    faults(&http, &base, json!({"fail_next": 1, "error_status": 502})).await;
    let e = client
        .create_source(&token, &payload("a/1"))
        .await
        .unwrap_err();
    assert!(matches!(e, ChromaError::Api { status: 502, .. }), "{e:?}");

    faults(
        &http,
        &base,
        json!({"rate_limit_next": 1, "retry_after_secs": 7}),
    )
    .await;
    let e = client
        .create_source(&token, &payload("a/1"))
        .await
        .unwrap_err();
    let ChromaError::Api {
        status: 429,
        retry_after,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_secs(7)));

    // Cut mid-answer, after the source was committed: not an API error, and not "nothing created".
    faults(&http, &base, json!({"drop_next": 1})).await;
    let e = client
        .create_source(&token, &payload("a/dropped"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChromaError::Transport {
                kind: TransportKind::Other,
                ..
            } | ChromaError::Decode { .. }
        ),
        "{e:?}"
    );

    faults(&http, &base, json!({"latency_ms": 2000})).await;
    let e = client
        .create_source(&token, &payload("a/slow"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChromaError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
    faults(&http, &base, json!({})).await;

    let e = client
        .create_source(&Token::new("nope").unwrap(), &payload("a/2"))
        .await
        .unwrap_err();
    assert!(matches!(e, ChromaError::Api { status: 401, .. }), "{e:?}");

    let id = client.create_source(&token, &payload("a/2")).await.unwrap();
    let e = client
        .create_source(&token, &payload("a/2"))
        .await
        .unwrap_err();
    let ChromaError::Api {
        status: 409,
        message,
        error,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (message.as_str(), error.as_deref()),
        ("Source exists", Some("Conflict"))
    );

    let listed = client
        .list_sources_while(&token, "docs", |_| true)
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the dropped create was committed, the slow one was not"
    );
    assert_eq!(listed[0].id, id, "newest first");
    assert_eq!(
        client.delete_source(&token, &id).await.unwrap(),
        Deleted::Now
    );
    assert_eq!(
        client.delete_source(&token, &id).await.unwrap(),
        Deleted::AlreadyGone
    );

    let counters: Value = http
        .get(format!("{base}/_standin/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["answered"]["delete_source"],
        json!({"204": 1, "404": 1})
    );
    assert_eq!(counters["received"]["create_source"], json!(7));
    assert_eq!(counters["sources"], json!(1));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = ClientConfig {
        base_url: base,
        timeout: Duration::from_secs(2),
        extra_ca_pem: None,
    };
    let client = ChromaClient::new(&config, Metrics::new()).unwrap();
    let e = client
        .create_source(&Token::new("t").unwrap(), &payload("a/b"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChromaError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn listing_pages_until_told_to_stop() {
    let (_, client, _) = standin().await;
    let token = Token::new("t").unwrap();
    for i in 0..250 {
        client
            .create_source(&token, &payload(&format!("a/{i}")))
            .await
            .unwrap();
    }
    let all = client
        .list_sources_while(&token, "docs", |_| true)
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    let first_page = client
        .list_sources_while(&token, "docs", |_| false)
        .await
        .unwrap();
    assert_eq!(first_page.len(), 100);
}

/// An answer larger than the client reads (not the service's: a proxy's, say) is an unreadable
/// answer, without reading it whole; a small one from the same server decodes.
#[tokio::test]
async fn an_oversized_answer_is_refused_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for padding in [64 << 20, 0] {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let body = format!(
                "{{\"source_id\": \"s-1\", \"padding\": \"{}\"}}",
                "x".repeat(padding)
            );
            let head = format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    let config = ClientConfig {
        base_url: base,
        timeout: Duration::from_secs(20),
        extra_ca_pem: None,
    };
    let client = ChromaClient::new(&config, Metrics::new()).unwrap();
    let token = Token::new("t").unwrap();
    let e = client
        .create_source(&token, &payload("a/b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ChromaError::Decode { status: 201, message } if message.contains("larger than")),
        "{e:?}"
    );
    let id = client.create_source(&token, &payload("a/b")).await.unwrap();
    assert_eq!(id, "s-1");
}
