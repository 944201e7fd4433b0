//! For the TLS and proxy test targets: a test CA made with the openssl CLI, and a TLS front
//! (rustls) that terminates TLS with a certificate of that CA and forwards to the plain stand-in,
//! counting handshakes.

use chroma_sync_standin::StandIn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The token the stand-in accepts in these tests; distinctive, so it can be searched for in
/// captured bytes.
pub const TOKEN: &str = "tok-3f9c1d-never-in-plaintext";

/// A CA and a server certificate for `localhost` and `127.0.0.1`, in a fresh directory.
pub struct TestCa {
    pub ca_pem: PathBuf,
    pub server_pem: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA named `name` in `dir` (`<name>.pem`, `<name>.key`); its certificate's path.
#[rustfmt::skip]
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", &format!("/CN={name}"),
            "-keyout", &format!("{name}.key"), "-out", &format!("{name}.pem"),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem"))
}

impl TestCa {
    /// Made in a fresh directory `<label>-<pid>` under `parent` (the calling test target's
    /// `CARGO_TARGET_TMPDIR`, which Cargo sets only for it).
    #[rustfmt::skip]
    pub fn new(parent: &Path, label: &str) -> Self {
        let dir = parent.join(format!("{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = make_ca(&dir, "ca");
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr",
            ],
        );
        openssl(
            &dir,
            &[
                "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
            ],
        );
        Self {
            ca_pem,
            server_pem: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A stand-in that accepts [`TOKEN`]; and its plain address.
pub async fn standin() -> (StandIn, SocketAddr) {
    let (s, base) = crate::standin::start(TOKEN, &[]).await;
    let addr = base.trim_start_matches("http://").parse().unwrap();
    (s, addr)
}

/// Counts of the TLS front.
#[derive(Default)]
pub struct Handshakes {
    pub ok: AtomicUsize,
    pub failed: AtomicUsize,
}

/// Serves TLS on a free loopback port with the CA's server certificate, forwarding each
/// connection's plaintext to `backend`. Returns its port and counters.
pub async fn tls_front(ca: &TestCa, backend: SocketAddr) -> (u16, Arc<Handshakes>) {
    chroma_sync_operator::chroma::install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca.server_pem)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&ca.server_key).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Handshakes::default());
    let seen = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        seen.ok.fetch_add(1, Ordering::SeqCst);
                        let mut plain = TcpStream::connect(backend).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                    Err(_) => {
                        seen.failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (port, counts)
}

/// Create calls the stand-in received.
pub fn create_calls(standin: &StandIn) -> u64 {
    standin.calls("create_source", "*")
}
