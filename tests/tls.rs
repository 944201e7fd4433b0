//! The Chroma client over real TLS: a certificate from a CA made in the test is refused unless
//! `--ca-file` names that CA, and a refused handshake sends no request. Also the start-up check
//! of `--chroma-url` in the real binary: plain http only with `--allow-insecure-http`.
//! (Proxies are in `tests/proxy.rs`: they need environment variables, so their own process.)

use chroma_sync_operator::chroma::{ChromaError, Token, TransportKind};
use chroma_sync_test_support as support;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::chroma::{client, github_payload};
use support::tls::{TOKEN, TestCa, create_calls, make_ca, standin, tls_front};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_server_is_trusted_only_with_its_ca_configured() {
    let ca = TestCa::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "tls");
    let (standin, backend) = standin().await;
    let (port, handshakes) = tls_front(&ca, backend).await;
    let token = Token::new(TOKEN).unwrap();
    let payload = github_payload("acme/tls");

    // Without --ca-file: the system roots do not know the test CA.
    for base in [
        format!("https://localhost:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let e = client(base.clone(), TIMEOUT, None)
            .create_source(&token, &payload)
            .await
            .unwrap_err();
        let ChromaError::Transport { kind, message } = &e else {
            panic!("{base}: {e:?}")
        };
        // A failed handshake is a connection that was never made: nothing can have been created.
        assert_eq!(*kind, TransportKind::Connect, "{base}: {e:?}");
        assert!(message.contains("certificate"), "{base}: {message}");
    }
    // A bundle holding only an unrelated CA is no better.
    let other = make_ca(ca.ca_pem.parent().unwrap(), "other-ca");
    let other = std::fs::read(other).unwrap();
    let localhost = format!("https://localhost:{port}");
    let e = client(localhost.clone(), TIMEOUT, Some(other.clone()))
        .create_source(&token, &payload)
        .await
        .unwrap_err();
    assert!(matches!(e, ChromaError::Transport { .. }), "{e:?}");
    // The server side of a refused handshake ends just after the client's error: wait for it.
    for _ in 0..200 {
        if handshakes.failed.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handshakes.failed.load(Ordering::SeqCst), 3);
    assert_eq!(handshakes.ok.load(Ordering::SeqCst), 0);
    assert_eq!(create_calls(&standin), 0, "no request reached the service");

    // With a bundle that holds the test CA (after the unrelated one): it works, by name and IP.
    let mut bundle = other;
    bundle.extend(std::fs::read(&ca.ca_pem).unwrap());
    let id = client(localhost, TIMEOUT, Some(bundle.clone()))
        .create_source(&token, &payload)
        .await
        .unwrap();
    assert_eq!(standin.sources("docs")[0].0, id);
    let listed = client(format!("https://127.0.0.1:{port}/"), TIMEOUT, Some(bundle))
        .list_sources_while(&token, "docs", |_| true)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(handshakes.ok.load(Ordering::SeqCst), 2);
    assert_eq!(create_calls(&standin), 1);
}

/// Runs the operator binary up to its start-up checks; no cluster is reachable, so a run that
/// passes them stops at the Kubernetes client.
fn operator(args: &[&str]) -> (bool, String) {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_chroma-sync-operator"))
        .args(args)
        .args(["--metrics-address", "127.0.0.1:0", "--log-format", "text"])
        .env_clear()
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("absent"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plain_http_is_refused_at_start_up_unless_allowed() {
    for url in ["http://127.0.0.1:1", "HTTP://127.0.0.1:1"] {
        let (ok, stderr) = operator(&["--chroma-url", url]);
        assert!(!ok);
        assert!(stderr.contains("refusing plain http"), "{url}: {stderr}");
        let (ok, stderr) = operator(&["--chroma-url", url, "--allow-insecure-http"]);
        assert!(!ok, "no cluster, so it still stops");
        assert!(!stderr.contains("refusing"), "{url}: {stderr}");
        assert!(stderr.to_lowercase().contains("kube"), "{url}: {stderr}");
    }
    let (ok, stderr) = operator(&["--chroma-url", "ftp://x.dev", "--allow-insecure-http"]);
    assert!(!ok && stderr.contains("must be https"), "{stderr}");
}
