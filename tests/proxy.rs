//! HTTPS_PROXY / https_proxy / NO_PROXY: the client reaches the service through a CONNECT proxy
//! when told to, and the proxy sees the token only inside TLS.
//!
//! Proxy variables are process-wide and read when a client is built, so each client runs in a
//! child process (this same binary, `harness = false`, with `CHROMA_PROXY_TEST_CHILD` set) that
//! gets exactly the variables of its case; the parent runs the stand-in, its TLS front and the
//! proxy, and checks what each saw. No other test shares this process.

use chroma_sync_operator::chroma::Token;
use chroma_sync_test_support as support;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::chroma::{client, github_payload};
use support::tls::{TOKEN, TestCa, create_calls, standin, tls_front};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHILD: &str = "CHROMA_PROXY_TEST_CHILD";
const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn main() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(parent());
    println!(
        "proxy tests: ok in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One create with a client built from this process's environment; prints `OK <id>` or
/// `ERR <error>`.
fn child() {
    let url = std::env::var("CHILD_URL").unwrap();
    let ca = std::fs::read(std::env::var("CHILD_CA").unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let payload = github_payload(&format!("acme/{}", std::process::id()));
        client(url, Duration::from_secs(5), Some(ca))
            .create_source(&Token::new(TOKEN).unwrap(), &payload)
            .await
    });
    match result {
        Ok(id) => println!("OK {id}"),
        Err(e) => println!("ERR {e:?}"),
    }
}

/// What the proxy saw: the target of each CONNECT, and every byte clients sent it.
#[derive(Default)]
struct Seen {
    tunnels: Vec<String>,
    from_clients: Vec<u8>,
}

/// A minimal CONNECT proxy on a free loopback port.
async fn connect_proxy() -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(tunnel(client, log.clone()));
        }
    });
    (port, seen)
}

async fn tunnel(mut client: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await.unwrap_or(0);
        if n == 0 || head.len() > 16 * 1024 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
    }
    seen.lock().unwrap().from_clients.extend_from_slice(&head);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let Ok(upstream) = TcpStream::connect(target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    seen.lock().unwrap().tunnels.push(target.to_owned());
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .unwrap();
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut up_rx, mut up_tx) = upstream.into_split();
    // Client to server: recorded, to prove the token is not readable in it.
    let up = async {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
            seen.lock()
                .unwrap()
                .from_clients
                .extend_from_slice(&buf[..n]);
            if up_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = up_tx.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut up_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Runs the child with `vars` as its only proxy settings; its output line.
async fn run_child(url: &str, ca: &TestCa, vars: &[(&str, String)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .env(CHILD, "1")
        .env("CHILD_URL", url)
        .env("CHILD_CA", &ca.ca_pem);
    // The servers run on the runtime's workers while the child runs.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "child {vars:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn parent() {
    let ca = TestCa::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "proxy");
    let (standin, backend) = standin().await;
    let (port, handshakes) = tls_front(&ca, backend).await;
    let (proxy_port, seen) = connect_proxy().await;
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let url = format!("https://localhost:{port}");
    let tunnels = || seen.lock().unwrap().tunnels.clone();
    let target = format!("localhost:{port}");

    // HTTPS_PROXY, then its lowercase spelling: each create goes through one tunnel.
    for (n, var) in ["HTTPS_PROXY", "https_proxy"].into_iter().enumerate() {
        let out = run_child(&url, &ca, &[(var, proxy.clone())]).await;
        assert!(out.starts_with("OK "), "{var}: {out}");
        assert_eq!(tunnels(), vec![target.clone(); n + 1], "{var}");
        assert_eq!(create_calls(&standin), n as u64 + 1, "{var}");
        println!("proxy tests: {var} honoured (tunnels: {})", n + 1);
    }
    // The proxy saw the CONNECT line and TLS records: the token never in the clear.
    {
        let seen = seen.lock().unwrap();
        let head = String::from_utf8_lossy(&seen.from_clients);
        assert!(head.starts_with(&format!("CONNECT {target} ")), "{head}");
        assert!(
            seen.from_clients.len() > 500,
            "the TLS traffic was recorded too"
        );
        let token = TOKEN.as_bytes();
        assert!(
            !seen.from_clients.windows(token.len()).any(|w| w == token),
            "the token crossed the proxy in plaintext"
        );
    }

    // NO_PROXY names the host: straight to the server, no new tunnel.
    for no_proxy in ["NO_PROXY", "no_proxy"] {
        let vars = [
            ("HTTPS_PROXY", proxy.clone()),
            (no_proxy, "example.com,localhost".into()),
        ];
        let out = run_child(&url, &ca, &vars).await;
        assert!(out.starts_with("OK "), "{no_proxy}: {out}");
        assert_eq!(tunnels().len(), 2, "{no_proxy} bypasses the proxy");
        println!("proxy tests: {no_proxy} honoured (no tunnel)");
    }
    assert_eq!(create_calls(&standin), 4);
    assert_eq!(handshakes.ok.load(Ordering::SeqCst), 4);

    // A proxy that is down is a connection failure, not a silent direct connection.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let out = run_child(&url, &ca, &[("HTTPS_PROXY", dead_url)]).await;
    assert!(
        out.starts_with("ERR Transport { kind: Connect"),
        "a dead proxy: {out}"
    );
    assert_eq!(create_calls(&standin), 4);
    println!("proxy tests: a dead proxy fails the call");
}
