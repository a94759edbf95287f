//! Issue 6, "Done when": TLS everywhere, hostile input, slowloris, isolation
//! against hand-built requests, login back-off and timing, user reloads, and
//! where passwords must never show up; and (issue 10) the certificate's
//! names, TLS 1.2 refused, a clean stop on SIGTERM. Test names say which item
//! they pin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use ringdfs::client::{no_progress, Client};
use ringdfs::config::{ClientConfig, Limits};
use ringdfs::error::ErrorKind;
use ringdfs::protocol::{Checksum, Manifest, Member, Request, Response, Version, PROTOCOL_VERSION};
use ringdfs::server::RunningServer;
use ringdfs::tls::{self, ServerIdentity};
use ringdfs::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::util::{
    random_file, raw_connection, raw_login, server_config, tls_stream, tree, Cluster, USERS,
};

// ---------------------------------------------------------------------------
// Helpers: frames by hand, TLS streams by hand, a server as a child process.

/// One frame carrying `msg`, exactly as the protocol lays it out.
fn frame<M: serde::Serialize>(msg: &M) -> Vec<u8> {
    let body = ringdfs::codec::encode(msg).unwrap();
    raw_frame(0, &body)
}

fn raw_frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(tag);
    out.extend_from_slice(body);
    out
}

/// The next frame's message, or `None` once the server has closed the connection.
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Response> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.ok()?;
    ringdfs::codec::decode(&body[1..]).ok()
}

/// Whether the peer closes the connection within `limit` (reading and
/// discarding whatever it sends until then).
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut sink = vec![0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A TLS stream to `addr` from the source address `from` (any 127.x address is loopback).
async fn tls_from(from: &str, addr: SocketAddr, ca: &Path) -> tls::ClientStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let config = tls::client_config_for_user(ca).unwrap();
    tls::connect(&config, &addr.to_string(), stream)
        .await
        .unwrap()
}

/// Hello, then one login attempt, on a fresh connection from `from`.
async fn try_login(from: &str, addr: SocketAddr, ca: &Path, user: &str, password: &str) -> bool {
    let mut stream = tls_from(from, addr, ca).await;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    stream.write_all(&frame(&hello)).await.unwrap();
    assert!(matches!(
        read_reply(&mut stream).await,
        Some(Response::Hello { .. })
    ));
    let login = Request::Login {
        user: user.into(),
        password: password.into(),
    };
    stream.write_all(&frame(&login)).await.unwrap();
    match read_reply(&mut stream).await {
        Some(Response::LoggedIn { .. }) => true,
        Some(Response::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Unauthorized, "{}", e.message);
            assert_eq!(
                e.message, "login failed: unknown user or wrong password",
                "the same generic answer every time"
            );
            false
        }
        other => panic!("unexpected reply to a login: {other:?}"),
    }
}

async fn hello_and_login<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, user: &str) {
    let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    stream.write_all(&frame(&hello)).await.unwrap();
    assert!(matches!(
        read_reply(stream).await,
        Some(Response::Hello { .. })
    ));
    let login = Request::Login {
        user: user.into(),
        password: password.into(),
    };
    stream.write_all(&frame(&login)).await.unwrap();
    assert!(matches!(
        read_reply(stream).await,
        Some(Response::LoggedIn { .. })
    ));
}

/// A `dfs-server` process serving a one-server ring from a temp folder, for
/// what only a separate process shows: its memory, its log output, how it
/// stops on a signal.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    rust_log: String,
}

impl ChildServer {
    async fn spawn(limits: &str, rust_log: &str) -> ChildServer {
        let dir = tempfile::tempdir().unwrap();
        let cheap = argon2::Params::new(256, 1, 1, None).unwrap();
        let mut users = String::from("[users]\n");
        for (user, password) in USERS {
            let hash = ringdfs::auth::hash_password(password, &cheap).unwrap();
            users.push_str(&format!("{user} = \"{hash}\"\n"));
        }
        std::fs::write(dir.path().join("users.toml"), users).unwrap();
        // A port picked free is released before the server binds it, so
        // another process may take it in between: then pick another.
        for _ in 0..5 {
            let port = {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap().port()
            };
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let config = format!(
                "name = \"dfs1\"\nlisten = \"{addr}\"\ndata_dir = \"data/dfs1\"\n\
                 users = \"users.toml\"\ntls_dir = \"tls\"\n\n[limits]\n{limits}\n\n\
                 [[ring]]\nname = \"dfs1\"\naddr = \"{addr}\"\n"
            );
            std::fs::write(dir.path().join("dfs1.toml"), config).unwrap();
            let (mut child, log_from) = ChildServer::launch(dir.path(), rust_log);
            if serving(&mut child, addr, dir.path(), log_from).await {
                return ChildServer {
                    child,
                    addr,
                    dir,
                    rust_log: rust_log.to_string(),
                };
            }
            eprintln!("port {port} was taken before dfs-server bound it; trying another");
        }
        panic!("dfs-server found no free port in 5 tries");
    }

    /// Starts `dfs-server` on the configuration in `dir`, appending to
    /// `server.log`; returns the child and where its part of the log begins.
    fn launch(dir: &Path, rust_log: &str) -> (Child, usize) {
        let log_from = std::fs::metadata(dir.join("server.log")).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .arg("--config")
            .arg(dir.join("dfs1.toml"))
            .env("RUST_LOG", rust_log)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        (child, log_from)
    }

    /// Starts the server again after it stopped, on the same port and data.
    /// Its own port was released when it exited; should another process
    /// have taken it meanwhile, waits for it (up to 20 s) rather than move.
    async fn restart(&mut self) {
        assert!(!self.running(), "dfs-server is still running");
        let start = Instant::now();
        loop {
            let (child, log_from) = ChildServer::launch(self.dir.path(), &self.rust_log);
            self.child = child;
            if serving(&mut self.child, self.addr, self.dir.path(), log_from).await {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} stayed taken",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The data folder of the one server.
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("dfs1")
    }

    fn ca(&self) -> PathBuf {
        tls::ca_cert_path(&self.dir.path().join("tls"))
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::for_servers(vec![self.addr.to_string()]);
        config.ca = self.ca();
        config
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Waits until the `dfs-server` in `child`, configured in `dir` to listen on
/// `addr`, accepts connections (true), or has exited because its port was
/// taken (false); panics on any other failure. Its log starts at `log_from`
/// in `server.log`.
async fn serving(child: &mut Child, addr: SocketAddr, dir: &Path, log_from: usize) -> bool {
    let log = || {
        let all = std::fs::read(dir.join("server.log")).unwrap_or_default();
        String::from_utf8_lossy(all.get(log_from..).unwrap_or_default()).into_owned()
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = log();
            assert!(
                log.contains("cannot listen on"),
                "dfs-server exited ({status}): {log}"
            );
            return false;
        }
        // Connected and still running: it is ours (had another process held
        // the port, ours would have failed to bind it and exited).
        if TcpStream::connect(addr).await.is_ok() && matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "dfs-server did not start: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PUT a random file and GET it back: the server is working for a normal client.
async fn round_trip(config: &ClientConfig, user: &str, size: usize) {
    let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
    let client = Client::login(config, user, password).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "f", size);
    client.put(&path, "check.bin", &no_progress).await.unwrap();
    let out = work.path().join("out");
    client.get("check.bin", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), data);
}

// ---------------------------------------------------------------------------
// 1. TLS: strangers are refused before any application data; no password in clear.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_plaintext_client_is_refused_before_any_application_data() {
    let cluster = Cluster::start(1).await;
    let mut stream = TcpStream::connect(cluster.addr(1)).await.unwrap();
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    stream.write_all(&frame(&hello)).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server keeps a plaintext client open");
    // At most a TLS alert record (content type 21), never a protocol reply.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    assert!(ringdfs::codec::decode::<Response>(got.get(5..).unwrap_or(&[])).is_err());
    round_trip(&cluster.client_config(), "alice", 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_client_trusting_another_authority_is_refused() {
    let cluster = Cluster::start(1).await;
    let other = tempfile::tempdir().unwrap();
    tls::ensure_certs(other.path(), &[]).unwrap();
    let foreign = tls::client_config_for_user(&tls::ca_cert_path(other.path())).unwrap();
    let stream = TcpStream::connect(cluster.addr(1)).await.unwrap();
    let err = tls::connect(&foreign, &cluster.addr(1).to_string(), stream)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");

    // The client library, too, with the other authority in its configuration.
    let mut config = cluster.client_config();
    config.ca = tls::ca_cert_path(other.path());
    let err = Client::login(&config, "alice", "wonderland")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("certificate") && !msg.contains('\n'), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_server_certificate_from_another_authority_is_refused() {
    let cluster = Cluster::start(1).await;
    // A rogue server with a perfectly good certificate for 127.0.0.1 and dfs1,
    // from the wrong authority.
    let rogue_dir = tempfile::tempdir().unwrap();
    let id = ServerIdentity {
        name: "dfs1".into(),
        hosts: vec!["127.0.0.1".into()],
    };
    tls::ensure_certs(rogue_dir.path(), &[id]).unwrap();
    let acceptor = tls::TlsAcceptor::from(tls::server_config(rogue_dir.path(), "dfs1").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = Arc::clone(&received);
    let rogue = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
            });
        }
    });
    let mut config = cluster.client_config();
    config.servers = vec![rogue_addr.to_string()];
    let err = Client::login(&config, "alice", "wonderland")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake failed") && msg.contains("certificate"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        received.lock().unwrap().is_empty(),
        "the client sent application data to a server it does not trust"
    );
    rogue.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_servers_connect_to_each_other_with_mutual_tls() {
    let cluster = Cluster::start(2).await;
    let dir = cluster.dir.path().join("tls");
    // dfs2 connecting to dfs1 as a peer: its certificate is accepted.
    let peer = tls::client_config_for_server(&dir, "dfs2").unwrap();
    let addr = cluster.addr(1);
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = tls::connect(&peer, &addr.to_string(), stream)
        .await
        .unwrap();
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    stream.write_all(&frame(&hello)).await.unwrap();
    assert!(matches!(
        read_reply(&mut stream).await,
        Some(Response::Hello { .. })
    ));

    // A client certificate from another authority is refused by the server.
    let other = tempfile::tempdir().unwrap();
    let id = ServerIdentity {
        name: "dfs2".into(),
        hosts: Vec::new(),
    };
    tls::ensure_certs(other.path(), &[id]).unwrap();
    std::fs::copy(tls::ca_cert_path(&dir), tls::ca_cert_path(other.path())).unwrap();
    let impostor = tls::client_config_for_server(other.path(), "dfs2").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    if let Ok(mut stream) = tls::connect(&impostor, &addr.to_string(), stream).await {
        // In TLS 1.3 the server judges the client's certificate after the
        // client has finished; the refusal arrives as the first read.
        let _ = stream.write_all(&frame(&hello)).await;
        assert!(read_reply(&mut stream).await.is_none());
    }

    // The server side names a peer by its certificate; a user's client has none.
    let acceptor = tls::TlsAcceptor::from(tls::server_config(&dir, "dfs1").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let names = ["dfs1", "dfs2"];
    let accept = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(stream).await.unwrap();
            seen.push(tls::peer_server(tls.get_ref().1, names.into_iter()));
            let _ = tls.write_all(b"x").await;
        }
        seen
    });
    for config in [peer, tls::client_config_for_user(&cluster.ca()).unwrap()] {
        let stream = TcpStream::connect(local).await.unwrap();
        let mut tls = tls::connect(&config, &local.to_string(), stream)
            .await
            .unwrap();
        let mut one = [0u8; 1];
        tls.read_exact(&mut one).await.unwrap();
    }
    assert_eq!(accept.await.unwrap(), [Some("dfs2".to_string()), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_captured_login_never_contains_the_password() {
    let cluster = Cluster::start(1).await;
    let target = cluster.addr(1);
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = Arc::clone(&captured);
    tokio::spawn(async move {
        let (client, _) = proxy.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = {
            let log = Arc::clone(&log);
            async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        };
        let down = async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sr.read(&mut buf).await {
                if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        };
        tokio::join!(up, down);
    });
    let mut stream = {
        let config = tls::client_config_for_user(&cluster.ca()).unwrap();
        let tcp = TcpStream::connect(proxy_addr).await.unwrap();
        tls::connect(&config, &proxy_addr.to_string(), tcp)
            .await
            .unwrap()
    };
    hello_and_login(&mut stream, "alice").await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bytes = captured.lock().unwrap().clone();
    assert!(
        bytes.len() > 500,
        "the proxy saw the handshake and the login"
    );
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(b"wonderland"),
        "the password crossed the wire in clear"
    );
    assert!(
        !contains(b"alice"),
        "the user name crossed the wire in clear"
    );
}

/// Dials `tcp` and completes TLS as a user's client that asked for `name`
/// (a DNS name or an IP address): the name the server's certificate must carry.
async fn handshake_for(
    tcp: SocketAddr,
    name: &str,
    ca: &Path,
) -> ringdfs::Result<tls::ClientStream<TcpStream>> {
    let config = tls::client_config_for_user(ca).unwrap();
    let stream = TcpStream::connect(tcp).await.unwrap();
    let dialled = if name.contains(':') {
        format!("[{name}]:{}", tcp.port())
    } else {
        format!("{name}:{}", tcp.port())
    };
    tls::connect(&config, &dialled, stream).await
}

/// Starts a one-server ring, `name`, on `listener`, in the folder (users,
/// authority) of `cluster`, with its certificate made as `dfs-server` makes it.
fn serve_beside(cluster: &Cluster, name: &str, listener: TcpListener) -> RunningServer {
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = server_config(cluster.dir.path(), name, &addr, Limits::default());
    config.ring = vec![Member {
        name: name.into(),
        addr,
        id: None,
    }];
    tls::ensure_certs(&config.tls_dir, &[config.identity()]).unwrap();
    RunningServer::start(&config, listener).unwrap()
}

/// README, Certificates: a server's certificate is "valid for the server's
/// name, `localhost`, `127.0.0.1`, `::1` and the host it listens on". A
/// client dialling it by each of those names completes TLS and is answered;
/// by a name the certificate does not carry, it is refused before any
/// protocol byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_the_certificate_is_valid_for_each_name_it_promises_and_no_other() {
    let cluster = Cluster::start(1).await;
    let ca = cluster.ca();
    // A server listening on 127.0.0.2, a host none of the fixed names cover.
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let tcp = listener.local_addr().unwrap();
    let server = serve_beside(&cluster, "dfs9", listener);
    let mut answered = 0;
    for name in ["dfs9", "localhost", "127.0.0.1", "::1", "127.0.0.2"] {
        let mut stream = handshake_for(tcp, name, &ca)
            .await
            .unwrap_or_else(|e| panic!("dialled as {name}: {e}"));
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        stream.write_all(&frame(&hello)).await.unwrap();
        match read_reply(&mut stream).await {
            Some(Response::Hello { server, .. }) => assert_eq!(server, "dfs9"),
            other => panic!("dialled as {name}: {other:?}"),
        }
        answered += 1;
    }
    assert_eq!(answered, 5);
    for name in [
        "127.0.0.3",
        "dfs1",
        "example.com",
        "::2",
        "localhost.localdomain",
    ] {
        let err = handshake_for(tcp, name, &ca)
            .await
            .err()
            .unwrap_or_else(|| panic!("a certificate for dfs9 passed as {name}"));
        let msg = err.to_string();
        assert!(
            msg.contains("TLS handshake failed") && msg.contains("certificate"),
            "{name}: {msg}"
        );
    }
    server.stop().await;

    // The IPv6 loopback: a server listening on [::1], dialled as `::1`.
    match TcpListener::bind("[::1]:0").await {
        Ok(listener) => {
            let tcp = listener.local_addr().unwrap();
            let server = serve_beside(&cluster, "dfs6", listener);
            for name in ["::1", "localhost", "dfs6"] {
                handshake_for(tcp, name, &ca)
                    .await
                    .unwrap_or_else(|e| panic!("[::1] dialled as {name}: {e}"));
            }
            assert!(handshake_for(tcp, "127.0.0.2", &ca).await.is_err());
            // A user's client configured with the IPv6 address works end to end.
            let mut config = cluster.client_config();
            config.servers = vec![tcp.to_string()];
            round_trip(&config, "alice", 5000).await;
            server.stop().await;
        }
        Err(e) => eprintln!("SKIPPED the [::1] listener part: no IPv6 loopback here ({e})"),
    }
}

/// A TLS 1.2 ClientHello, as a client that cannot speak TLS 1.3 sends it:
/// ECDHE suites with AES-GCM and ChaCha20, the usual groups and signature
/// schemes, and (with `versions_extension`) a supported_versions extension
/// that lists TLS 1.2 alone.
fn tls12_client_hello(host: &str, versions_extension: bool) -> Vec<u8> {
    fn u16_be(n: usize) -> [u8; 2] {
        (n as u16).to_be_bytes()
    }
    fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&u16_be(body.len()));
        out.extend_from_slice(body);
    }
    let mut extensions = Vec::new();
    let mut server_name = vec![0u8]; // host_name
    server_name.extend_from_slice(&u16_be(host.len()));
    server_name.extend_from_slice(host.as_bytes());
    let mut list = u16_be(server_name.len()).to_vec();
    list.extend_from_slice(&server_name);
    extension(&mut extensions, 0x0000, &list); // server_name
    extension(&mut extensions, 0x000a, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]); // groups
    extension(&mut extensions, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    let schemes = [4, 3, 5, 3, 8, 4, 8, 5, 4, 1, 5, 1, 8, 7];
    let mut algorithms = u16_be(schemes.len()).to_vec();
    algorithms.extend_from_slice(&schemes);
    extension(&mut extensions, 0x000d, &algorithms); // signature_algorithms
    extension(&mut extensions, 0x0017, &[]); // extended_master_secret
    extension(&mut extensions, 0xff01, &[0]); // renegotiation_info
    if versions_extension {
        extension(&mut extensions, 0x002b, &[2, 3, 3]); // supported_versions: 1.2
    }
    let mut hello = vec![3, 3]; // legacy_version: TLS 1.2
    hello.extend_from_slice(&rand::random::<[u8; 32]>());
    hello.push(0); // no session id
    let suites = [
        0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0xcc, 0xa9, 0xcc, 0xa8,
    ];
    hello.extend_from_slice(&u16_be(suites.len()));
    hello.extend_from_slice(&suites);
    hello.extend_from_slice(&[1, 0]); // compression: null only
    hello.extend_from_slice(&u16_be(extensions.len()));
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 3, 1]; // handshake record, TLS 1.0 record version
    record.extend_from_slice(&u16_be(handshake.len()));
    record.extend_from_slice(&handshake);
    record
}

/// README: "every connection is TLS 1.3". A client offering only TLS 1.2
/// (with or without a supported_versions extension) gets a fatal
/// protocol_version alert, never a ServerHello, and the connection closes;
/// a TLS 1.3 client is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_client_offering_only_tls_1_2_is_refused() {
    let cluster = Cluster::start(1).await;
    for versions_extension in [true, false] {
        let mut stream = TcpStream::connect(cluster.addr(1)).await.unwrap();
        stream
            .write_all(&tls12_client_hello("localhost", versions_extension))
            .await
            .unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply));
        assert!(
            read.await.is_ok(),
            "the server kept a TLS 1.2 client open (sent {reply:x?})"
        );
        // An alert record (21) holding level fatal (2), protocol_version (70).
        assert!(
            reply.len() >= 7 && reply[0] == 21 && reply[5] == 2 && reply[6] == 70,
            "supported_versions extension {versions_extension}: the server answered {:x?}",
            &reply[..reply.len().min(16)]
        );
    }
    round_trip(&cluster.client_config(), "alice", 1000).await;
}

// ---------------------------------------------------------------------------
// 2. Hostile input: refused or closed, memory bounded, normal clients unaffected.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_memory_stays_bounded_and_clients_keep_working() {
    let mut server = ChildServer::spawn("handshake_ms = 2000", "warn").await;
    let config = server.client_config();
    let ca = server.ca();
    let addr = server.addr;
    // Warm up: a login, a transfer, the allocator's pools.
    round_trip(&config, "alice", 300_000).await;
    let before = server.rss_kib();

    // 1000 connections of random bytes: 800 in clear, 200 inside TLS.
    for batch in 0..10 {
        let attempts = (0..100).map(|_| {
            let ca = ca.clone();
            async move {
                let mut rng = rand::thread_rng();
                let mut junk = vec![0u8; rng.gen_range(1..4096)];
                rng.fill_bytes(&mut junk);
                let closed = if batch < 8 {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    let _ = s.write_all(&junk).await;
                    closed_within(&mut s, Duration::from_secs(30)).await
                } else {
                    let mut s = tls_stream(addr, &ca).await;
                    let _ = s.write_all(&junk).await;
                    closed_within(&mut s, Duration::from_secs(30)).await
                };
                (closed, junk[..junk.len().min(8)].to_vec())
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let open: Vec<_> = results.iter().filter(|r| !r.0).map(|r| &r.1).collect();
        assert!(
            open.is_empty(),
            "batch {batch}: connections left open, starting {open:x?}; server log: {}",
            server.log()
        );
    }

    // Crafted frames inside TLS.
    let giant_prefix = u32::MAX.to_be_bytes().to_vec();
    let garbage_frame = {
        let mut body = vec![0u8; 600];
        rand::thread_rng().fill_bytes(&mut body);
        body[0] = 200; // no such message variant
        raw_frame(0, &body)
    };
    // `Stat { name }` whose name claims 2^62 bytes: variant 6, varint marker 0xfd, u64.
    let huge_inner = {
        let mut body = vec![6u8, 0xfd];
        body.extend_from_slice(&(1u64 << 62).to_le_bytes());
        raw_frame(0, &body)
    };
    let hello = frame(&Request::Hello {
        version: PROTOCOL_VERSION,
    });
    for (what, after_hello, bytes) in [
        ("a 4 GiB length prefix", false, giant_prefix.clone()),
        (
            "a 4 GiB length prefix after Hello",
            true,
            giant_prefix.clone(),
        ),
        ("a valid frame of garbage", false, garbage_frame.clone()),
        ("a valid frame of garbage after Hello", true, garbage_frame),
        ("an inner length of 2^62", false, huge_inner.clone()),
        (
            "an inner length of 2^62 after Hello",
            true,
            huge_inner.clone(),
        ),
        ("a request before Hello", false, frame(&Request::List)),
    ] {
        let mut s = tls_stream(addr, &ca).await;
        if after_hello {
            s.write_all(&hello).await.unwrap();
            assert!(matches!(
                read_reply(&mut s).await,
                Some(Response::Hello { .. })
            ));
        }
        let _ = s.write_all(&bytes).await;
        assert!(
            closed_within(&mut s, Duration::from_secs(10)).await,
            "{what}"
        );
    }
    // After login too: the same crafted frames close the connection.
    for bytes in [giant_prefix, huge_inner] {
        let mut s = tls_stream(addr, &ca).await;
        hello_and_login(&mut s, "alice").await;
        let _ = s.write_all(&bytes).await;
        assert!(closed_within(&mut s, Duration::from_secs(10)).await);
    }
    // A request before login is refused, and the connection stays usable.
    let mut s = tls_stream(addr, &ca).await;
    s.write_all(&hello).await.unwrap();
    read_reply(&mut s).await.unwrap();
    s.write_all(&frame(&Request::List)).await.unwrap();
    match read_reply(&mut s).await {
        Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::NotLoggedIn),
        other => panic!("{other:?}"),
    }

    assert!(server.running(), "the server died: {}", server.log());
    round_trip(&config, "alice", 300_000).await;
    let after = server.rss_kib();
    let grew = after.saturating_sub(before);
    eprintln!("dfs-server RSS: {before} KiB before, {after} KiB after hostile input (+{grew} KiB)");
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB");
}

// ---------------------------------------------------------------------------
// 3. Slowloris: silent and trickling connections are reaped.

/// Regression: before login, a connection that sent part of a length prefix
/// was held for the whole per-frame timeout, not the login deadline. With a
/// 1 s login deadline and a 10-minute frame timeout, each such connection is
/// closed no sooner than the deadline and long before the frame timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_prefix_before_login_is_closed_by_the_login_deadline_not_the_frame_timeout() {
    let limits = Limits {
        handshake_ms: 1000,
        frame_ms: 600_000,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    for junk in [&[0x52u8][..], &[0, 0], &[0, 0, 1]] {
        // The deadline runs from the server's accept, which is after this.
        let dialled = Instant::now();
        let mut s = tls_stream(cluster.addr(1), &cluster.ca()).await;
        s.write_all(junk).await.unwrap();
        s.flush().await.unwrap();
        // 20 s: generous for a 1 s deadline on a loaded machine, and a
        // thirtieth of the frame timeout that held such connections before.
        assert!(
            closed_within(&mut s, Duration::from_secs(20)).await,
            "{junk:?} kept the connection open"
        );
        let took = dialled.elapsed();
        eprintln!("{junk:?}: closed {took:?} after dialling");
        assert!(
            took >= Duration::from_secs(1),
            "{junk:?}: closed after {took:?}, before the login deadline"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_reaped_while_a_get_succeeds() {
    let limits = Limits {
        handshake_ms: 1500,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(4, limits, None).await;
    let client = cluster.login("bob").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "f", 2_000_000);
    client.put(&path, "kept.bin", &no_progress).await.unwrap();

    // 500 connections that go silent: 400 before TLS, 100 after it.
    let mut silent = Vec::new();
    for i in 0..400 {
        silent.push(TcpStream::connect(cluster.addr(1 + i % 4)).await.unwrap());
    }
    let mut silent_tls = Vec::new();
    for i in 0..100 {
        silent_tls.push(tls_stream(cluster.addr(1 + i % 4), &cluster.ca()).await);
    }
    let opened = Instant::now();
    // A normal client meanwhile.
    let out = work.path().join("out");
    client.get("kept.bin", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let reaped = futures_util::future::join_all(
        silent
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(20))),
    )
    .await;
    assert!(
        reaped.iter().all(|&r| r),
        "silent TCP connections left open"
    );
    for s in &mut silent_tls {
        assert!(closed_within(s, Duration::from_secs(20)).await);
    }
    eprintln!(
        "500 silent connections reaped within {:?}",
        opened.elapsed()
    );
    // The pool's connections were logged in, so they were not reaped.
    client.get("kept.bin", &out, &no_progress).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_trickles_in_is_cut_off() {
    let limits = Limits {
        frame_ms: 500,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    let mut s = tls_stream(cluster.addr(1), &cluster.ca()).await;
    hello_and_login(&mut s, "alice").await;
    // A Stat frame of 101 bytes, sent one byte every 100 ms (10 s in all).
    let whole = raw_frame(0, &[7u8; 100]);
    let started = Instant::now();
    let mut cut = false;
    for byte in whole {
        if s.write_all(&[byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut one = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut one)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            _ => {}
        }
    }
    assert!(cut, "the server waited for the whole trickle");
    assert!(started.elapsed() < Duration::from_secs(9));
}

// ---------------------------------------------------------------------------
// 4. Isolation against hand-built requests; indices and sizes that do not fit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_cannot_reach_bobs_files_by_name_path_or_disk_id() {
    let cluster = Cluster::start(4).await;
    let bob = cluster.login("bob").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "plans", 40_000);
    bob.put(&path, "plans.txt", &no_progress).await.unwrap();
    let version = bob.stat("plans.txt").await.unwrap().version;
    let bobs = |i: usize| cluster.data_dir(i).join("users").join("bob");
    let snapshot = || {
        (1..=4)
            .map(|i| {
                tree(&bobs(i))
                    .into_iter()
                    .map(|p| (p.clone(), std::fs::read(bobs(i).join(p)).unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let disk_id = ringdfs::store::file_dir(&cluster.data_dir(1), "bob", "plans.txt")
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    for server in 1..=4 {
        let mut alice = raw_login(&cluster, server, "alice").await;
        // By name, by on-disk id, by bob's folder or the store's: these
        // are names (paths) in alice's own space.
        let own = [
            "plans.txt".to_string(),
            disk_id.clone(),
            "bob/plans.txt".to_string(),
            format!("users/bob/{disk_id}"),
        ];
        for name in &own {
            let name = name.as_str();
            let stat = Request::Stat { name: name.into() };
            assert!(matches!(
                alice.call(&stat).await.unwrap(),
                Response::File { manifest: None, .. }
            ));
            for chunk in 1..=4 {
                let get = Request::GetChunk {
                    name: name.into(),
                    version,
                    chunk,
                };
                assert_eq!(
                    alice.call(&get).await.unwrap_err().kind(),
                    ErrorKind::NotFound
                );
            }
        }
        // By path: refused as names.
        let paths = [
            "../bob/plans.txt".to_string(),
            format!("../bob/{disk_id}"),
            format!("../../users/bob/{disk_id}/manifest"),
            "..".to_string(),
        ];
        for name in &paths {
            for request in [
                Request::Stat { name: name.clone() },
                Request::GetChunk {
                    name: name.clone(),
                    version,
                    chunk: 1,
                },
                Request::Delete {
                    name: name.clone(),
                    version: Version::next(Some(version)),
                },
            ] {
                let err = alice.call(&request).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidName, "{request:?}");
            }
            let commit = Request::Commit {
                missing: Vec::new(),
                manifest: Manifest {
                    name: name.clone(),
                    version: Version::next(Some(version)),
                    size: 0,
                    chunks: 0,
                    checksums: vec![],
                    stored_at: 0,
                    digest: ringdfs::protocol::FileDigest::None,
                    deleted: true,
                    data: None,
                    kept: None,
                    meta: None,
                },
            };
            let err = alice.call(&commit).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName);
        }
        // Deleting "plans.txt" as alice only tombstones alice's own name.
        let delete = Request::Delete {
            name: "plans.txt".into(),
            version: Version {
                gen: u64::MAX,
                writer: u64::MAX,
            },
        };
        alice.call(&delete).await.unwrap();
    }
    assert_eq!(snapshot(), before, "bob's files changed on disk");
    let out = work.path().join("out");
    bob.get("plans.txt", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_indices_and_sizes_that_do_not_fit_are_refused() {
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "f", 10_000);
    alice.put(&path, "f", &no_progress).await.unwrap();
    let version = alice.stat("f").await.unwrap().version;
    let before = tree(cluster.dir.path());

    // Uploads that do not fit: each refused, and the connection closed.
    for (chunk, chunks) in [(0, 4), (5, 4), (1, 0), (u32::MAX, u32::MAX), (1, 1_000_000)] {
        let mut conn = raw_login(&cluster, 1, "alice").await;
        let put = Request::PutChunk {
            name: "g".into(),
            version: Version::next(None),
            chunk,
            chunks,
            size: 100,
        };
        let err = conn.call(&put).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{chunk} of {chunks}");
    }
    // More data than the declared chunk length.
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let put = Request::PutChunk {
        name: "g".into(),
        version: Version::next(None),
        chunk: 1,
        chunks: 4,
        size: 8,
    };
    conn.send(&put).await.unwrap();
    conn.send_data(bytes::Bytes::from_static(b"far more than two bytes"))
        .await
        .unwrap();
    conn.send(&Request::ChunkDone {
        checksum: Checksum([0; 32]),
    })
    .await
    .unwrap();
    assert_eq!(
        conn.reply().await.unwrap_err().kind(),
        ErrorKind::BadRequest
    );

    // Downloads of chunks that do not exist.
    let mut conn = raw_login(&cluster, 1, "alice").await;
    for chunk in [0, 5, u32::MAX] {
        let get = Request::GetChunk {
            name: "f".into(),
            version,
            chunk,
        };
        assert_eq!(
            conn.call(&get).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    // A manifest whose chunk count and checksums disagree.
    for (chunks, sums) in [(4, 3), (0, 0), (5000, 5000)] {
        let commit = Request::Commit {
            missing: Vec::new(),
            manifest: Manifest {
                name: "f".into(),
                version: Version::next(Some(version)),
                size: 10_000,
                chunks,
                checksums: vec![Checksum([0; 32]); sums],
                stored_at: 0,
                digest: ringdfs::protocol::FileDigest::None,
                deleted: false,
                data: None,
                kept: None,
                meta: None,
            },
        };
        assert_eq!(
            conn.call(&commit).await.unwrap_err().kind(),
            ErrorKind::BadRequest,
            "{chunks} chunks, {sums} checksums"
        );
    }
    assert_eq!(tree(cluster.dir.path()), before, "something was written");
    let out = work.path().join("out");
    alice.get("f", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), data);
}

// ---------------------------------------------------------------------------
// 5. Login back-off, and timing that does not tell unknown users apart.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_slowed_down_bob_is_not_and_the_lockout_lifts() {
    let limits = Limits {
        login_failures_allowed: 5,
        login_backoff_ms: 100,
        login_backoff_max_ms: 1000,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    let (addr, ca) = (cluster.addr(1), cluster.ca());
    // The attacker guesses from 127.0.0.2.
    let started = Instant::now();
    for _ in 0..20 {
        assert!(!try_login("127.0.0.2", addr, &ca, "alice", "guess").await);
    }
    let took = started.elapsed();
    // Past the first 5, every other guess waits out a lock-out of 100, 200,
    // 400, 800, then 1000 ms (capped): at least 5.5 s in all.
    assert!(
        took >= Duration::from_secs(4),
        "20 guesses took only {took:?}"
    );

    // Bob, from his own address, is not affected.
    assert!(try_login("127.0.0.1", addr, &ca, "bob", "builder").await);
    cluster.login("bob").await;

    // One more failure locks alice's account (from any address) for 1 s...
    assert!(!try_login("127.0.0.2", addr, &ca, "alice", "guess").await);
    assert!(!try_login("127.0.0.1", addr, &ca, "alice", "wonderland").await);
    // ...and the refusal above waited the lock-out out: it has lifted now.
    assert!(try_login("127.0.0.1", addr, &ca, "alice", "wonderland").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_lock_that_address_out() {
    let limits = Limits {
        login_failures_allowed: 5,
        login_backoff_ms: 3000,
        login_backoff_max_ms: 3000,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    let (addr, ca) = (cluster.addr(1), cluster.ca());
    // Five different made-up accounts from one address...
    for i in 0..5 {
        assert!(!try_login("127.0.0.3", addr, &ca, &format!("user{i}"), "x").await);
    }
    // ...lock the address out, even for a correct password,
    assert!(!try_login("127.0.0.3", addr, &ca, "bob", "builder").await);
    // but not bob from elsewhere,
    assert!(try_login("127.0.0.1", addr, &ca, "bob", "builder").await);
    // and the lock-out lifts.
    assert!(try_login("127.0.0.3", addr, &ca, "bob", "builder").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_take_the_same_time() {
    let limits = Limits {
        login_failures_allowed: u32::MAX,
        handshake_ms: 600_000,
        ..Limits::default()
    };
    // Hashes costly enough that skipping the dummy check would stand out.
    let params = argon2::Params::new(8 * 1024, 1, 1, None).unwrap();
    let cluster = Cluster::start_with(1, limits, Some(params)).await;
    let mut conn = raw_connection(&cluster, 1).await;
    async fn time(conn: &mut crate::util::RawConn, user: &str, password: &str) -> (Duration, bool) {
        let login = Request::Login {
            user: user.into(),
            password: password.into(),
        };
        let start = Instant::now();
        let result = conn.call(&login).await;
        (start.elapsed(), result.is_ok())
    }
    let (mut unknown, mut wrong, mut right) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..100 {
        let (t, ok) = time(&mut conn, &format!("nobody{i}"), "wonderland").await;
        assert!(!ok);
        unknown.push(t);
        let (t, ok) = time(&mut conn, "alice", "wonderlanD").await;
        assert!(!ok);
        wrong.push(t);
        if i % 5 == 0 {
            let (t, ok) = time(&mut conn, "alice", "wonderland").await;
            assert!(ok);
            right.push(t);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (unknown, wrong, right) = (median(&mut unknown), median(&mut wrong), median(&mut right));
    eprintln!("login medians: unknown user {unknown:?}, wrong password {wrong:?}, right password {right:?}");
    let diff = unknown.abs_diff(wrong);
    let tolerance = Duration::from_millis(3) + wrong / 10;
    assert!(
        diff <= tolerance,
        "unknown user {unknown:?} vs wrong password {wrong:?}"
    );
}

// ---------------------------------------------------------------------------
// 5b. User administration reaches running servers.

/// `dfs-server user ACTION NAME --config CONFIG` (or `--users FILE` when
/// `target` ends in `users.toml`), with the password in DFS_PASSWORD.
fn dfs_server_user(target: &Path, action: &str, name: &str, password: &str) {
    let (ok, stderr) = run_dfs_server_user(target, action, name, password);
    assert!(ok, "{stderr}");
}

/// Runs `dfs-server user ACTION NAME` as [`dfs_server_user`] does: whether
/// it succeeded, and its standard error.
fn run_dfs_server_user(target: &Path, action: &str, name: &str, password: &str) -> (bool, String) {
    let flag = if target.ends_with("users.toml") {
        "--users"
    } else {
        "--config"
    };
    let out = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(["user", action, name, flag])
        .arg(target)
        .env("DFS_PASSWORD", password)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `user` can log in with `password` on server `i` alone.
async fn logs_in_on(cluster: &Cluster, i: usize, user: &str, password: &str) -> bool {
    let mut conn = raw_connection(cluster, i).await;
    let login = Request::Login {
        user: user.into(),
        password: password.into(),
    };
    matches!(conn.call(&login).await, Ok(Response::LoggedIn { .. }))
}

/// `dfs-server user` through one running server (dfs1's configuration)
/// adds, changes and removes users on every server, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_through_one_server_reach_every_running_server() {
    let cluster = Cluster::start(2).await;
    let admin = cluster.write_server_config(1);
    let config = cluster.client_config();
    let bob = cluster.login("bob").await;
    bob.list().await.unwrap();

    dfs_server_user(&admin, "add", "carol", "correct horse");
    for server in 1..=2 {
        eventually("carol can log in", || {
            logs_in_on(&cluster, server, "carol", "correct horse")
        })
        .await;
    }

    dfs_server_user(&admin, "passwd", "alice", "new wonderland");
    for server in 1..=2 {
        eventually("alice's new password works", || {
            logs_in_on(&cluster, server, "alice", "new wonderland")
        })
        .await;
    }
    assert!(matches!(
        Client::login(&config, "alice", "wonderland").await,
        Err(Error::Unauthorized)
    ));

    dfs_server_user(&admin, "del", "bob", "");
    // On every server: a client's LIST succeeds if any one server answers,
    // so one server still to notice would keep bob's old client listing.
    for server in 1..=2 {
        eventually("bob is locked out", || async {
            let mut conn = raw_connection(&cluster, server).await;
            let login = Request::Login {
                user: "bob".into(),
                password: "builder".into(),
            };
            matches!(conn.call(&login).await, Err(Error::Unauthorized))
        })
        .await;
    }
    // Bob's client, logged in before, loses its sessions and connections too.
    assert!(bob.list().await.is_err());

    // Changes that cannot be made: one line each, nothing changed.
    for (action, name, why) in [
        ("add", "carol", "user carol exists; use `user passwd carol`"),
        ("passwd", "nobody", "no user nobody"),
        ("del", "bob", "no user bob"),
        ("add", "Not-A-Name", "invalid name"),
    ] {
        let (ok, stderr) = run_dfs_server_user(&admin, action, name, "x");
        assert!(!ok, "user {action} {name} succeeded");
        assert!(stderr.contains(why), "user {action} {name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    assert!(logs_in_on(&cluster, 1, "carol", "correct horse").await);

    // No password is stored anywhere: not in any server's data folder.
    for server in 1..=2 {
        for path in crate::util::tree(&cluster.data_dir(server)) {
            let bytes = std::fs::read(&path).unwrap_or_default();
            let has = |p: &[u8]| bytes.windows(p.len()).any(|w| w == p);
            assert!(
                !has(b"correct horse") && !has(b"new wonderland"),
                "{} holds a password",
                path.display()
            );
        }
    }
}

/// With its server stopped, `dfs-server user add` writes into the server's
/// data folder; once restarted, the server spreads the user to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_while_the_server_is_down_spreads_when_it_starts() {
    let mut cluster = Cluster::start(2).await;
    let admin = cluster.write_server_config(1);
    cluster.stop(1).await;
    dfs_server_user(&admin, "add", "dave", "correct horse");
    assert!(!logs_in_on(&cluster, 2, "dave", "correct horse").await);
    cluster.restart(1).await;
    for server in 1..=2 {
        eventually("dave can log in", || {
            logs_in_on(&cluster, server, "dave", "correct horse")
        })
        .await;
    }
}

/// `dfs-server user add --users FILE` writes the seed file: hashes only,
/// readable by its owner only.
#[test]
fn the_seed_file_holds_hashes_only_and_is_its_owners() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    dfs_server_user(&users, "add", "carol", "correct horse");
    let text = std::fs::read_to_string(&users).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(text.contains("carol = \"$argon2id$"), "{text}");
    assert!(!text.contains("correct horse"));
}

// ---------------------------------------------------------------------------
// 6. Where passwords must never be.

#[test]
fn users_toml_holds_only_argon2id_hashes_with_strong_parameters() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("users.toml");
    let users = ringdfs::auth::Users::load(&path).unwrap();
    let mut n = 0;
    for (user, phc) in users.hashes() {
        n += 1;
        assert!(phc.starts_with("$argon2id$v=19$"), "{user}: {phc}");
        let hash = argon2::password_hash::phc::PasswordHash::new(&phc).unwrap();
        let params = argon2::Params::try_from(&hash).unwrap();
        assert!(params.m_cost() >= 19456, "{user}: m={}", params.m_cost());
        assert!(params.t_cost() >= 2, "{user}: t={}", params.t_cost());
        assert!(params.p_cost() >= 1);
    }
    assert!(n >= 2);
    let text = std::fs::read_to_string(&path).unwrap();
    for (_, password) in USERS {
        assert!(!text.contains(password));
    }
}

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(dir.join(p))
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_appear_in_no_log_line_history_file_or_data() {
    let server = ChildServer::spawn("", "trace").await;
    let home = tempfile::tempdir().unwrap();
    // History goes under $XDG_STATE_HOME when it is set, else under HOME:
    // both point at folders this test then checks.
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let config_path = work.path().join("client.toml");
    std::fs::write(
        &config_path,
        format!(
            "servers = [\"{}\"]\ndownload_dir = \"downloads\"\nca = {:?}\n",
            server.addr,
            server.ca().display().to_string()
        ),
    )
    .unwrap();
    let (file, _) = random_file(work.path(), "doc", 5000);
    let dfs = |password: &str, args: &[&str], stdin: &str| {
        let mut command = crate::util::dfs_as_alice(&config_path, home.path(), password);
        command
            .args(args)
            .env("RUST_LOG", "trace")
            .env("XDG_STATE_HOME", state.path())
            .env("XDG_DATA_HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .current_dir(work.path());
        let out = crate::util::run_with_stdin(command, stdin);
        let mut text = out.stdout;
        text.extend_from_slice(&out.stderr);
        (out.status.success(), text)
    };
    let mut client_output = Vec::new();
    for (password, args, stdin, ok) in [
        ("wonderland", vec!["put", file.to_str().unwrap()], "", true),
        ("wonderland", vec!["list"], "", true),
        ("wonderland", vec![], "get doc\nlist\nstatus\n", true),
        ("not-the-password-42", vec!["list"], "", false),
    ] {
        let (success, text) = dfs(password, &args, stdin);
        assert_eq!(success, ok, "{}", String::from_utf8_lossy(&text));
        client_output.extend_from_slice(&text);
    }
    let log = server.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the server did not log at trace level"
    );
    for secret in ["wonderland", "not-the-password-42"] {
        assert!(!log.contains(secret), "the server logged {secret}");
        assert!(
            !String::from_utf8_lossy(&client_output).contains(secret),
            "the client printed or logged {secret}"
        );
        for dir in [home.path(), state.path(), work.path(), server.dir.path()] {
            let found = files_containing(dir, secret.as_bytes());
            assert!(found.is_empty(), "{secret} found in {found:?}");
        }
    }
    // Commands from a pipe keep no history at all.
    for dir in [home.path(), state.path()] {
        assert!(
            tree(dir).is_empty(),
            "the client wrote {:?} in {} (a history file?)",
            tree(dir),
            dir.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Clean stop on SIGTERM.

impl ChildServer {
    /// Sends SIGTERM and waits (up to `limit`) for the process to exit.
    async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "dfs-server still running {limit:?} after SIGTERM: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many times the log says the server stopped (its one info line
    /// with that word; the log may be coloured, so match words only).
    fn stops_logged(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("INFO") && l.contains("stopped"))
            .count()
    }

    /// Files left under the data folder's `tmp/` (writes that never finished).
    fn temp_files(&self) -> Vec<PathBuf> {
        tree(&self.data_dir().join("tmp"))
    }
}

/// README: "Stop a server with Ctrl-C (or SIGTERM)". SIGTERM, whether the
/// server is idle or receiving a PUT, makes it log its stop and exit with
/// status 0 within 20 s, with no temp file left in its data folder; started
/// again on the same data, it serves every file it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_idle_or_mid_transfer_and_it_restarts_with_every_acknowledged_file(
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut server = ChildServer::spawn("", "info").await;
    let config = server.client_config();
    let work = tempfile::tempdir().unwrap();
    let login = || Client::login(&config, "alice", "wonderland");
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    let client = login().await.unwrap();
    for i in 0..3 {
        let (path, data) = random_file(work.path(), "src", 100_000 + i * 7777);
        let name = format!("idle-{i}.bin");
        client.put(&path, &name, &no_progress).await.unwrap();
        acknowledged.push((name, data));
    }
    drop(client);
    let every_file_is_served = |acknowledged: Vec<(String, Vec<u8>)>| {
        let config = config.clone();
        async move {
            let client = Client::login(&config, "alice", "wonderland").await.unwrap();
            let out = tempfile::tempdir().unwrap();
            for (name, data) in &acknowledged {
                let path = out.path().join(name);
                client.get(name, &path, &no_progress).await.unwrap();
                assert!(std::fs::read(&path).unwrap() == *data, "{name} changed");
            }
            acknowledged.len()
        }
    };

    // Idle.
    let status = server.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "idle: {status}; log: {}", server.log());
    assert_eq!(server.stops_logged(), 1, "{}", server.log());
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    server.restart().await;
    assert_eq!(every_file_is_served(acknowledged.clone()).await, 3);

    // Mid-transfer: a 256 MiB PUT, signalled once 16 MiB have been sent.
    let (big, big_data) = random_file(work.path(), "big", 256 << 20);
    let sent = Arc::new(AtomicU64::new(0));
    let client = login().await.unwrap();
    let put = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            let progress = move |n: i64| {
                sent.fetch_add(n as u64, Ordering::Relaxed);
            };
            client.put(&big, "big.bin", &progress).await
        }
    });
    let start = Instant::now();
    while sent.load(Ordering::Relaxed) < 16 << 20 {
        assert!(!put.is_finished(), "the PUT ended before 16 MiB were sent");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the PUT did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = server.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "mid-transfer: {status}; log: {}",
        server.log()
    );
    assert_eq!(server.stops_logged(), 2, "{}", server.log());
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    match put.await.unwrap() {
        // Acknowledged just before the signal took effect: it must be kept.
        Ok(_) => acknowledged.push(("big.bin".into(), big_data)),
        Err(e) => eprintln!("the PUT under way failed, as it may: {e}"),
    }
    server.restart().await;
    let served = every_file_is_served(acknowledged.clone()).await;
    assert!(served >= 3, "{served}");
}

// ---------------------------------------------------------------------------
// Certificates are made by one command, once.

#[test]
fn the_certs_command_creates_an_authority_once_and_the_clients_trust() {
    let root = tempfile::tempdir().unwrap();
    let servers = root.path().join("servers");
    let client = root.path().join("client");
    std::fs::create_dir_all(&servers).unwrap();
    std::fs::create_dir_all(&client).unwrap();
    for i in 1..=2 {
        std::fs::write(
            servers.join(format!("dfs{i}.toml")),
            format!(
                "name = \"dfs{i}\"\nlisten = \"127.0.0.1:710{i}\"\ndata_dir = \"../data/dfs{i}\"\n\
                 users = \"../users.toml\"\ntls_dir = \"../data/tls\"\n\n[[ring]]\nname = \"dfs{i}\"\n\
                 addr = \"127.0.0.1:710{i}\"\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        client.join("config.toml"),
        "servers = [\"127.0.0.1:7101\"]\n",
    )
    .unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .arg("certs")
            .arg("--servers")
            .arg(&servers)
            .arg("--client")
            .arg(client.join("config.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(
        first.contains("created the certificate authority"),
        "{first}"
    );
    let tls_dir = root.path().join("data/tls");
    for file in [
        "ca.pem", "ca.key", "dfs1.pem", "dfs1.key", "dfs2.pem", "dfs2.key",
    ] {
        assert!(tls_dir.join(file).exists(), "{file}");
    }
    assert_eq!(
        std::fs::read(client.join("ca.pem")).unwrap(),
        std::fs::read(tls_dir.join("ca.pem")).unwrap()
    );
    let ca = std::fs::read(tls_dir.join("ca.pem")).unwrap();
    let second = run();
    assert!(second.contains("already has a certificate"), "{second}");
    assert_eq!(std::fs::read(tls_dir.join("ca.pem")).unwrap(), ca);
}

// ---------------------------------------------------------------------------
// 7. The frame fuzz target's properties, as proptests that run with every
// test run (the names target's are `ringdfs::names` unit tests).

mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};
    use ringdfs::protocol::Frame;
    use std::cell::Cell;

    /// Feeds `bytes` to a connection as if a peer had sent them, decoding
    /// frames as `M` until the stream ends or fails. Must never panic.
    fn decode_all<M: serde::de::DeserializeOwned>(bytes: &[u8], max_frame: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stream = tokio::io::join(bytes, tokio::io::sink());
            let mut conn = ringdfs::protocol::Connection::new(stream, "fuzz");
            conn.set_max_frame(max_frame);
            while let Ok(Some(_)) = conn.recv::<M>().await {}
        });
    }

    fn any_request() -> impl Strategy<Value = Request> {
        let name = "\\PC{0,40}";
        let version =
            (any::<u64>(), any::<u64>()).prop_map(|(gen, writer)| Version { gen, writer });
        prop_oneof![
            any::<u32>().prop_map(|version| Request::Hello { version }),
            (name, name).prop_map(|(user, password)| Request::Login {
                user,
                password: password.into(),
            }),
            any::<[u8; 32]>().prop_map(|t| Request::Resume {
                token: ringdfs::protocol::Token(t)
            }),
            Just(Request::List),
            name.prop_map(|name| Request::Stat { name }),
            (
                name,
                version.clone(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(|(name, version, chunk, chunks, size)| Request::PutChunk {
                    name,
                    version,
                    chunk,
                    chunks,
                    size
                }),
            (name, version.clone(), any::<u32>()).prop_map(|(name, version, chunk)| {
                Request::GetChunk {
                    name,
                    version,
                    chunk,
                }
            }),
            (
                name,
                version,
                any::<u64>(),
                proptest::collection::vec(any::<[u8; 32]>(), 0..8)
            )
                .prop_map(|(name, version, size, sums)| Request::Commit {
                    missing: Vec::new(),
                    manifest: Manifest {
                        name,
                        version,
                        size,
                        chunks: sums.len() as u32,
                        checksums: sums.into_iter().map(Checksum).collect(),
                        stored_at: size / 2,
                        digest: ringdfs::protocol::FileDigest::None,
                        deleted: size % 2 == 0,
                        data: None,
                        kept: None,
                        meta: None,
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            decode_all::<Request>(&bytes, ringdfs::protocol::MAX_FRAME);
            decode_all::<Response>(&bytes, 4096);
        }

        #[test]
        fn decoding_random_frame_bodies_never_panics(
            tag in 0u8..3,
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let bytes = raw_frame(tag, &body);
            decode_all::<Request>(&bytes, 4096);
            decode_all::<Response>(&bytes, ringdfs::protocol::MAX_FRAME);
        }

        #[test]
        fn requests_round_trip_through_frames(request in any_request()) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let again: Request = runtime.block_on(async {
                let (a, b) = tokio::io::duplex(1 << 16);
                let mut a = ringdfs::protocol::Connection::new(a, "a");
                let mut b = ringdfs::protocol::Connection::new(b, "b");
                a.send(&request).await.unwrap();
                b.recv_msg().await.unwrap()
            });
            prop_assert_eq!(
                ringdfs::codec::encode(&again).unwrap(),
                ringdfs::codec::encode(&request).unwrap()
            );
        }
    }

    /// A runner of `cases` cases with a printed seed (PROPTEST_RNG_SEED when
    /// set, else a random one), so a failure reproduces.
    fn seeded_runner(test: &str, cases: u32) -> TestRunner {
        let seed = std::env::var("PROPTEST_RNG_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        eprintln!("{test}: seed {seed} (PROPTEST_RNG_SEED={seed} repeats it)");
        TestRunner::new(ProptestConfig {
            cases,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            ..ProptestConfig::default()
        })
    }

    /// A frame body that gets past the decoder's first bytes: a real
    /// request's encoding with a few bytes changed, maybe cut short, maybe
    /// with bytes appended (now and then unchanged).
    fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
        (
            any_request(),
            proptest::collection::vec((any::<Index>(), any::<u8>()), 0..3),
            proptest::option::of(any::<Index>()),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(request, changes, cut, tail)| {
                let mut body = ringdfs::codec::encode(&request).unwrap();
                for (at, byte) in changes {
                    let i = at.index(body.len());
                    body[i] = byte;
                }
                if let Some(cut) = cut {
                    body.truncate(cut.index(body.len()));
                }
                body.extend(tail);
                body
            })
    }

    /// Frames whose length prefix fits the bytes that follow, so the body is
    /// decoded: a message frame (tag 0) of a mutated request, a data frame
    /// (tag 1) of the same bytes, or an unknown tag. Each frame reads back as
    /// the codec decodes its body alone (the same request, or an error), never
    /// panics, and the frame after it still arrives whole (after an unknown
    /// tag, which ends the stream, nothing does). Every outcome must occur
    /// often, or the property checked nothing.
    #[test]
    fn well_framed_mutated_requests_decode_as_the_codec_says_and_framing_stays_in_step() {
        let cases = 2000;
        let (decoded, refused, data) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
        let strategy = (
            prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => 2u8..=255],
            mutated_request(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let next = frame(&Request::Stat {
            name: "the next frame".into(),
        });
        let result = seeded_runner("frames", cases).run(&strategy, |(tag, body)| {
            let mut bytes = raw_frame(tag, &body);
            bytes.extend_from_slice(&next);
            runtime.block_on(async {
                let stream = tokio::io::join(&bytes[..], tokio::io::sink());
                let mut conn = ringdfs::protocol::Connection::new(stream, "fuzz");
                let first = conn.recv::<Request>().await;
                let expected = ringdfs::codec::decode::<Request>(&body);
                match (tag, first, expected) {
                    (0, Ok(Some(Frame::Msg(got))), Ok(want)) => {
                        prop_assert_eq!(
                            ringdfs::codec::encode(&got).unwrap(),
                            ringdfs::codec::encode(&want).unwrap()
                        );
                        decoded.set(decoded.get() + 1);
                    }
                    (0, Err(_), Err(_)) | (2.., Err(_), _) => refused.set(refused.get() + 1),
                    (1, Ok(Some(Frame::Data(got))), _) => {
                        prop_assert_eq!(&got[..], &body[..]);
                        data.set(data.get() + 1);
                    }
                    (tag, first, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "tag {tag}: the connection read {first:?}, the codec alone {expected:?}"
                        )))
                    }
                }
                let after = conn.recv::<Request>().await;
                if tag >= 2 {
                    // An unknown tag ends the stream: nothing more is read.
                    prop_assert!(!matches!(after, Ok(Some(_))), "read on: {:?}", after);
                    return Ok(());
                }
                // The length prefix delimited the body: the next frame is whole.
                match after {
                    Ok(Some(Frame::Msg(Request::Stat { name }))) => {
                        prop_assert_eq!(name, "the next frame");
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "the frame after it read as {other:?}"
                        )))
                    }
                }
                Ok(())
            })
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let (decoded, refused, data) = (decoded.get(), refused.get(), data.get());
        eprintln!("{cases} frames: {decoded} decoded, {refused} refused, {data} data");
        assert!(decoded >= cases / 50, "only {decoded} bodies decoded");
        assert!(refused >= cases / 50, "only {refused} bodies refused");
        assert!(data >= cases / 50, "only {data} data frames");
    }
}
