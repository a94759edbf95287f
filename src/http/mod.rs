//! A server's HTTP endpoints: S3 ([`s3`]), the files API for curl
//! ([`files`]) and `GET /health`, on `http_listen` (HTTPS with the server's
//! certificate, or plain HTTP on a loopback address if `http_plain`).
//!
//! The endpoint is a *gateway*: it authenticates the caller itself (a SigV4
//! signature with one of the user's S3 keys, HTTP Basic with the user's
//! password, or a bearer token) and then acts as that user through the
//! ordinary client library ([`Client::for_gateway`]): every member checks
//! the user's requests exactly as it checks `dfs`'s, so isolation, sharing
//! and quotas are enforced by the same code whichever way a file comes in.
//! A body is spooled to a temp file in the data folder (`http/spool/`,
//! emptied at start) and stored by the same PUT as `dfs put`; a GET streams
//! the file's chunks as they arrive, each checked against its checksum
//! ([`Client::read`]).
//!
//! hyper parses HTTP; s3s does S3's routing, XML and signatures. Nothing
//! here parses a request by hand but the files API's paths.

pub mod files;
pub mod s3;
pub mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::client::Client;
use crate::config::{ClientConfig, ServerConfig};
use crate::error::{Error, Result};
use crate::peer::ClusterKey;
use crate::server::Server;

/// Open HTTP connections a server keeps at most; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// A connection must send a request's headers within this (also between
/// requests on a kept-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The TLS handshake's deadline.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a checked password is remembered (keyed by a hash of user and
/// password, and dropped at once when the user's password changes), so a
/// script's many requests with HTTP Basic do not each cost an argon2 check.
const BASIC_CACHE: Duration = Duration::from_secs(300);

/// What the endpoints share: the server, and a client per user acting for them.
pub struct Gateway {
    pub(crate) server: Arc<Server>,
    /// How this server reaches the ring as a client: itself as the seed.
    config: ClientConfig,
    tls: Arc<rustls::ClientConfig>,
    key: ClusterKey,
    clients: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
    /// `http/` in the data folder: `spool/` (request bodies being stored)
    /// and `uploads/` (S3 multipart uploads in progress).
    work: PathBuf,
    /// Passwords checked lately: BLAKE3(user, password) → user, the user's
    /// session epoch then, and when.
    basic: Mutex<HashMap<[u8; 32], (String, u64, Instant)>>,
    /// The key of the web page's CSRF tokens (see [`web`]): new at every start.
    csrf_key: [u8; 32],
}

impl Gateway {
    /// The gateway of `server`, configured by `config`. Needs the cluster
    /// key: it proves to the members that this server acts for a user.
    pub fn new(server: Arc<Server>, config: &ServerConfig) -> Result<Gateway> {
        let key =
            match &config.cluster_key {
                Some(path) => ClusterKey::load_or_create(path)?,
                None => return Err(Error::Config(
                    "http_listen needs cluster_key: the endpoint acts for users through the ring"
                        .into(),
                )),
            };
        let tls = crate::tls::client_config_for_server(&config.tls_dir, &config.name)?;
        let work = config.data_dir.join("http");
        let spool = work.join("spool");
        // Bodies of requests cut off by a stop: nobody will finish them.
        let _ = std::fs::remove_dir_all(&spool);
        for dir in [&spool, &work.join("uploads")] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(Gateway {
            server,
            config: ClientConfig {
                servers: vec![config.addr().to_string()],
                download_dir: PathBuf::from("."),
                timeout_secs: 5,
                ca: config.tls_dir.join("ca.pem"),
            },
            tls,
            key,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            work,
            basic: Mutex::new(HashMap::new()),
            csrf_key: rand::random(),
        })
    }

    /// The client acting for `user` (made at its first request, then kept:
    /// its connections are pooled across requests).
    pub async fn client(&self, user: &str) -> Result<Arc<Client>> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(user) {
            return Ok(Arc::clone(client));
        }
        let client = Client::for_gateway(
            &self.config,
            Arc::clone(&self.tls),
            &self.server.name,
            self.key.clone(),
            user,
        )
        .await?;
        let client = Arc::new(client);
        clients.insert(user.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// A new temp file for a request's body, removed when dropped.
    pub fn spool(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.work.join("spool"))
            .map_err(|e| Error::io("creating a spool file", e))
    }

    /// Where S3 multipart uploads in progress are kept.
    pub fn uploads_dir(&self) -> PathBuf {
        self.work.join("uploads")
    }

    /// Checks `user`'s password as a login does (the same back-off after
    /// failures); a password checked in the last minutes is not hashed again.
    pub async fn check_password(&self, user: &str, password: &str, addr: SocketAddr) -> Result<()> {
        let mut h = blake3::Hasher::new();
        h.update(&(user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        let id = *h.finalize().as_bytes();
        let epoch = self.server.accounts.sessions.epoch(user);
        {
            let mut cache = self.basic.lock().expect("basic cache lock");
            cache.retain(|_, (_, _, at)| at.elapsed() < BASIC_CACHE);
            if let Some((who, seen, _)) = cache.get(&id) {
                if who == user && *seen == epoch {
                    return Ok(());
                }
            }
        }
        let (_, epoch) = self
            .server
            .login(user.to_string(), password.to_string(), addr.ip())
            .await?;
        let mut cache = self.basic.lock().expect("basic cache lock");
        cache.insert(id, (user.to_string(), epoch, Instant::now()));
        Ok(())
    }

    /// The CSRF token of the web page's session `token`.
    pub fn csrf(&self, token: &crate::protocol::Token) -> String {
        self.csrf_hash(token).to_hex().to_string()
    }

    fn csrf_hash(&self, token: &crate::protocol::Token) -> blake3::Hash {
        blake3::keyed_hash(&self.csrf_key, &token.0)
    }

    /// A bearer token's user (a session token, as `POST /login` hands out).
    pub fn check_token(&self, token: &str) -> Result<String> {
        let token = crate::protocol::Token::from_hex(token).ok_or(Error::Unauthorized)?;
        self.server.resume(&token).map(|(user, _)| user)
    }
}

/// Serves the HTTP endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(server = %gateway.server.name, url = %format!("{scheme}://{addr}/"), "HTTP endpoints (S3, files API, health)");
    }
    let s3 = s3::service(Arc::clone(&gateway));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "HTTP connection refused: too many open");
            continue; // dropping the stream closes it
        };
        let _ = stream.set_nodelay(true);
        let (gateway, s3, tls, stop) = (
            Arc::clone(&gateway),
            s3.clone(),
            tls.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, gateway, s3, stop).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => debug!(%peer, "HTTPS handshake timed out"),
                    }
                }
                None => serve_connection(stream, peer, gateway, s3, stop).await,
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// One connection: HTTP/1.1 (HTTP/2 only as h2c prior knowledge on plain
/// HTTP; ALPN offers HTTP/1.1), each request
/// routed by [`route`].
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    s3: s3s::service::S3Service,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (gateway, s3) = (Arc::clone(&gateway), s3.clone());
        async move { Ok::<_, std::convert::Infallible>(route(&gateway, &s3, peer, request).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}

/// A signed S3 request goes to S3 whatever its path (a bucket may be named
/// `files`, `login`, `health` or `web`); of the others, `/health`, `/login`,
/// `/files/…` and the web page's (`/`, `/web/…`) are ours, and everything
/// else is S3's (which refuses it).
async fn route(
    gateway: &Arc<Gateway>,
    s3: &s3s::service::S3Service,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path();
    if !signed_for_s3(&request) {
        if path == "/health" {
            return health(gateway, request.method());
        }
        let files = path == files::PREFIX || path.starts_with(&format!("{}/", files::PREFIX));
        if path == "/login" || files {
            return files::handle(gateway, peer, request).await;
        }
        if web::is_web(path) {
            return web::handle(gateway, peer, request).await;
        }
    }
    match s3.call(request.map(Body::from)).await {
        Ok(response) => response,
        Err(e) => {
            warn!(error = ?e, "S3 request failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// Whether a request carries an S3 signature: an `AWS4-HMAC-SHA256` or
/// `AWS` (V2) authorization header, or a presigned URL's query.
fn signed_for_s3<B>(request: &Request<B>) -> bool {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-") || v.starts_with("AWS "));
    let query = request.uri().query().is_some_and(|q| {
        q.split('&').any(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            matches!(
                key,
                "X-Amz-Signature" | "X-Amz-Credential" | "AWSAccessKeyId" | "Signature"
            )
        })
    });
    header || query
}

/// `GET /health`: this server, its view of the ring and its heal state, as
/// JSON, without login (what a load balancer or a person checks).
fn health(gateway: &Gateway, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /health\n");
    }
    let status = gateway.server.status();
    match serde_json::to_vec_pretty(&status) {
        Ok(json) => with_type(StatusCode::OK, "application/json", Bytes::from(json)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

/// A response of `status` with a plain-text body.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

/// A response of `status` with `body` as (pretty) JSON.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_default();
    text.push(b'\n');
    with_type(status, "application/json", Bytes::from(text))
}

/// A response of `status` with no body.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// A response of `status` with `body` of type `content_type`.
pub(crate) fn with_type(status: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Where a server's spool files live (for tests that count them).
pub fn spool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("http").join("spool")
}

/// A request body written to a spool file.
pub struct Spooled {
    /// Removed when dropped: a failed or refused store leaves nothing.
    pub file: tempfile::NamedTempFile,
    pub size: u64,
    /// MD5 of the bytes (an S3 ETag, and the PUT's receipt).
    pub md5: [u8; 16],
}

/// Writes a request body to a new spool file, hashing it as it goes (on a
/// blocking thread, so the connection's task only moves blocks). A body
/// that breaks off (the client went away, or sent less than its
/// Content-Length) is an error and leaves no file.
pub async fn spool<S, E>(gateway: &Gateway, mut body: S) -> Result<Spooled>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    use md5::Digest;
    use std::io::Write;

    let file = gateway.spool()?;
    let mut out = file
        .as_file()
        .try_clone()
        .map_err(|e| Error::io("opening a spool file", e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let mut md5 = md5::Md5::new();
        let mut size = 0u64;
        let mut buffered = std::io::BufWriter::with_capacity(1 << 20, &mut out);
        while let Some(block) = rx.blocking_recv() {
            md5.update(&block);
            size += block.len() as u64;
            buffered
                .write_all(&block)
                .map_err(|e| Error::io("writing a spool file", e))?;
        }
        buffered
            .flush()
            .map_err(|e| Error::io("writing a spool file", e))?;
        Ok::<_, Error>((size, <[u8; 16]>::from(md5.finalize())))
    });
    let mut broken = None;
    while let Some(block) = body.next().await {
        match block {
            Ok(block) => {
                if tx.send(block).await.is_err() {
                    break; // the writer failed: its error is below
                }
            }
            Err(e) => {
                broken = Some(Error::BadRequest(format!(
                    "the request body broke off: {e}"
                )));
                break;
            }
        }
    }
    drop(tx);
    let (size, md5) = writer
        .await
        .map_err(|e| Error::Internal(format!("spool writer: {e}")))??;
    match broken {
        Some(e) => Err(e),
        None => Ok(Spooled { file, size, md5 }),
    }
}

/// The listener of `config`'s `http_listen`, if it has one: bound before
/// the server opens, so a port already taken fails the start, not a request.
pub async fn bind(config: &ServerConfig) -> Result<Option<TcpListener>> {
    let Some(addr) = &config.http_listen else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| Error::io(format!("cannot listen on {addr} (http_listen)"), e))
}

/// Starts the HTTP endpoints of `server` on `listener` (bound to its
/// `http_listen`): HTTPS unless the configuration asks for plain HTTP.
pub fn start(
    server: Arc<Server>,
    config: &ServerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let gateway = Arc::new(Gateway::new(server, config)?);
    let tls = match config.http_plain {
        true => None,
        false => Some(TlsAcceptor::from(crate::tls::http_server_config(
            &config.tls_dir,
            &config.name,
        )?)),
    };
    Ok(tokio::spawn(serve(listener, gateway, tls, shutdown)))
}
