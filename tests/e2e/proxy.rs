//! A byte-forwarding TCP proxy between the operator and the kube-apiserver, able to cut every
//! open connection at once. TLS passes through untouched (the apiserver's serving certificate
//! names 127.0.0.1, which is where the proxy listens), so the operator sees exactly what a
//! broken network path between it and the apiserver looks like: reset (`cut_all`), or silent
//! (`silence`: packets dropped, connections kept open, no reset ever).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accepted: Arc<AtomicU64>,
    silent: Arc<AtomicBool>,
    acceptor: AbortHandle,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let silent = Arc::new(AtomicBool::new(false));
        let (conns, count, quiet) = (connections.clone(), accepted.clone(), silent.clone());
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let quiet = quiet.clone();
                let task = tokio::spawn(async move {
                    if quiet.load(Ordering::SeqCst) {
                        // A silent path: the connection opens, and nothing ever comes back.
                        let (client_rx, _client_tx) = client.into_split();
                        drain(client_rx).await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // SO_LINGER 0: dropping a socket sends RST, not a polite FIN, so a cut
                    // is as abrupt as a broken network path or a dead middlebox.
                    for s in [&client, &server] {
                        let _ = s.set_zero_linger();
                        let _ = s.set_nodelay(true);
                    }
                    let (client_rx, client_tx) = client.into_split();
                    let (server_rx, server_tx) = server.into_split();
                    // Either direction ending ends the connection (and drops both sockets).
                    tokio::select! {
                        _ = pump(client_rx, server_tx, &quiet) => {}
                        _ = pump(server_rx, client_tx, &quiet) => {}
                    }
                });
                let mut open = conns.lock().unwrap();
                open.retain(|h| !h.is_finished());
                open.push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            connections,
            accepted,
            silent,
            acceptor,
        }
    }

    /// While silent, nothing gets through, either way, on open connections and new ones alike;
    /// bytes are read and dropped, so no sender blocks and no connection is ever reset: what a
    /// path that loses every packet looks like to both ends. Connections opened while silent
    /// stay dead; new ones after it work again.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Resets every open connection (both sides); returns how many there were. New connections
    /// are accepted again at once.
    pub fn cut_all(&self) -> usize {
        let open: Vec<AbortHandle> = std::mem::take(&mut *self.connections.lock().unwrap());
        let live = open.iter().filter(|h| !h.is_finished()).count();
        for h in open {
            h.abort();
        }
        live
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        let open = self.connections.lock().unwrap();
        open.iter().filter(|h| !h.is_finished()).count()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Writes a copy of `kubeconfig` whose server is this proxy, next to `dir`.
    pub fn kubeconfig(&self, kubeconfig: &Path, dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
        let upstream = server_addr(kubeconfig);
        let rewritten = text.replace(
            &format!("server: https://{upstream}"),
            &format!("server: https://{}", self.addr),
        );
        assert_ne!(rewritten, text, "the kubeconfig names its server");
        let path = dir.join(format!("kubeconfig-proxy-{}", self.addr.port()));
        std::fs::write(&path, rewritten).expect("write the proxy kubeconfig");
        path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut_all();
    }
}

/// Copies `from` to `to` until either side ends; while `silent`, drops what it reads instead.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads and drops until the peer closes.
async fn drain(mut from: tokio::net::tcp::OwnedReadHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(1..) = from.read(&mut buf).await {}
}

/// The apiserver address (`server: https://HOST:PORT`) of a kubeconfig.
pub fn server_addr(kubeconfig: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
        .expect("a server: https://IP:PORT line in the kubeconfig")
}
