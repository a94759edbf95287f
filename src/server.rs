//! The chunk server: a listener, one task per connection, and the requests.
//!
//! `run(listener, server, shutdown)` accepts connections until `shutdown` is
//! cancelled; each connection says `Hello`, logs in (or resumes a session), and
//! then sends requests one at a time. Every request acts as the logged-in user:
//! the user's name comes from the session, never from the request, so no
//! request can reach another user's files.
//!
//! Every connection is TLS 1.3 (see `tls`). Until it has logged in, a
//! connection gets small frames (`PRE_LOGIN_FRAME`) and a short deadline
//! (`Limits::handshake_ms`) for the TLS handshake, `Hello` and the login
//! together; after, the idle and per-frame timeouts of [`Limits`] apply. A
//! task polls `users.toml` and applies changes without a restart.
//!
//! Disk work runs on the blocking pool: a chunk upload streams blocks from the
//! socket into a channel drained by a blocking writer, and a download streams
//! blocks from a blocking reader, so the async threads only move bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::{Backoff, Sessions, Throttle, UserTable, MAX_PASSWORD_LEN};
use crate::config::{Limits, ServerConfig};
use crate::error::{Error, Result};
use crate::names::validate_name;
use crate::protocol::{
    Connection, Frame, Manifest, Member, Request, Response, ServerStatus, Token, PROTOCOL_VERSION,
};
use crate::store::{ChunkSpec, Store};
use crate::tls::{self, TlsAcceptor};
use crate::unix_now;

/// Most password verifications running at once (each takes ~19 MiB and tens of ms).
const MAX_LOGINS: usize = 4;
/// Largest frame accepted before login: enough for `Login` with the longest
/// user name and password, and small enough that a stranger's length prefix
/// cannot make the server reserve much.
pub const PRE_LOGIN_FRAME: usize = 4096;
/// A session (token) is valid this long after login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Entries per `Files` page: far below the frame limit even with 255-byte names.
const LIST_PAGE: usize = 1000;
/// Blocks buffered between the socket and the disk, per transfer.
const PIPELINE_DEPTH: usize = 4;

/// One chunk server's shared state.
pub struct Server {
    name: String,
    ring: Vec<Member>,
    store: Arc<Store>,
    users: UserTable,
    sessions: Sessions,
    throttle: Throttle,
    logins: Semaphore,
    tls: TlsAcceptor,
    limits: Limits,
}

impl Server {
    /// Opens the server's store and user table from its configuration.
    pub fn open(config: &ServerConfig) -> Result<Server> {
        config.validate()?;
        let tls = tls::server_config(&config.tls_dir, &config.name)?;
        let store = Store::open(&config.data_dir)?;
        let users = UserTable::load(&config.users)?;
        let limits = config.limits.clone();
        let ms = Duration::from_millis;
        Ok(Server {
            name: config.name.clone(),
            ring: config.ring.clone(),
            store: Arc::new(store),
            users,
            sessions: Sessions::new(SESSION_TTL),
            throttle: Throttle::new(Backoff {
                allowed: limits.login_failures_allowed,
                first: ms(limits.login_backoff_ms),
                max: ms(limits.login_backoff_max_ms),
                forget: ms(limits.login_forget_ms),
            }),
            logins: Semaphore::new(MAX_LOGINS),
            tls: TlsAcceptor::from(tls),
            limits,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks a password off the async threads; on success opens a session.
    /// While the account or the address is locked out after failures, the
    /// answer waits for the lock to lift and is a refusal, the password unchecked.
    async fn login(&self, user: String, password: String, addr: IpAddr) -> Result<Token> {
        let now = Instant::now();
        if let Some(until) = self.throttle.locked_until(&user, addr, now) {
            let wait = until.duration_since(now).min(self.throttle.policy().max);
            info!(server = %self.name, user = %user, %addr, wait_ms = wait.as_millis() as u64, "login refused: backing off");
            tokio::time::sleep(wait).await;
            return Err(Error::Unauthorized);
        }
        if password.len() > MAX_PASSWORD_LEN {
            // Refused before hashing: argon2's cost grows with the input.
            self.throttle.failed(&user, addr, Instant::now());
            info!(server = %self.name, user = %user, %addr, "login failed: password too long");
            return Err(Error::Unauthorized);
        }
        let _slot = self.logins.acquire().await.expect("semaphore never closed");
        let users = self.users.current();
        let (ok, user) =
            tokio::task::spawn_blocking(move || (users.verify(&user, &password), user))
                .await
                .map_err(|e| Error::Internal(format!("login task: {e}")))?;
        if !ok {
            self.throttle.failed(&user, addr, Instant::now());
            info!(server = %self.name, user = %user, %addr, "login failed");
            return Err(Error::Unauthorized);
        }
        self.throttle.succeeded(&user);
        Ok(self.sessions.open(&user))
    }

    fn resume(&self, token: &Token) -> Result<String> {
        self.sessions.resume(token).ok_or(Error::Unauthorized)
    }

    /// Applies a changed `users.toml`; called every `users_poll_ms`.
    async fn reload_users(self: &Arc<Self>) {
        let server = Arc::clone(self);
        let reloaded = tokio::task::spawn_blocking(move || server.users.reload_if_changed()).await;
        match reloaded {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(ended))) => {
                self.sessions.end_for(&ended);
                info!(server = %self.name, users = self.users.current().names().count(), sessions_ended = ended.len(), "users.toml reloaded");
            }
            Ok(Err(e)) => {
                warn!(server = %self.name, error = %e, "users.toml changed but cannot be used; keeping the previous users");
            }
            Err(e) => warn!(server = %self.name, error = %e, "reloading users.toml"),
        }
    }

    fn status(&self) -> ServerStatus {
        let stats = self.store.stats();
        ServerStatus {
            name: self.name.clone(),
            ring: self.ring.clone(),
            chunks: stats.chunks,
            bytes: stats.bytes,
            files: stats.files,
        }
    }
}

/// Serves `listener` until `shutdown` is cancelled; then closes every
/// connection and returns.
pub async fn run(listener: TcpListener, server: Arc<Server>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    if let Ok(addr) = listener.local_addr() {
        info!(server = %server.name, %addr, "listening");
    }
    {
        let server = Arc::clone(&server);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut every = tokio::time::interval(server.limits.users_poll());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => server.reload_users().await,
                }
            }
        });
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(server = %server.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(server = %server.name, %peer, "too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = serve_tls(stream, peer, &server) => {
                    if let Err(e) = result {
                        warn!(server = %server.name, %peer, error = %e, "connection closed");
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    info!(server = %server.name, "stopped");
}

/// What the handler does after a request.
enum Next {
    Continue,
    /// The stream is out of step (e.g. a failed upload left data in flight).
    Close,
}

/// The TLS handshake, within the connection's login deadline, then the protocol.
async fn serve_tls(stream: tokio::net::TcpStream, peer: SocketAddr, server: &Server) -> Result<()> {
    let accepted = Instant::now();
    let deadline = server.limits.handshake();
    let stream = tokio::time::timeout(deadline, server.tls.accept(stream))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("{peer}'s TLS handshake"),
            secs: deadline.as_secs(),
        })?
        .map_err(|e| Error::Protocol(format!("TLS handshake failed: {e}")))?;
    let peer_server = tls::peer_server(
        stream.get_ref().1,
        server.ring.iter().map(|m| m.name.as_str()),
    );
    if let Some(name) = &peer_server {
        debug!(server = %server.name, %peer, peer_server = %name, "a ring member connected");
    }
    serve_connection(stream, peer, server, accepted).await
}

/// Serves one connection's protocol. `accepted` starts its login deadline.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    server: &Server,
    accepted: Instant,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &server.limits;
    let mut conn = Connection::new(stream, peer.to_string());
    conn.set_max_frame(PRE_LOGIN_FRAME);
    conn.set_frame_timeout(Some(limits.frame()));
    let login_left = || Some(limits.handshake().saturating_sub(accepted.elapsed()));
    conn.set_timeout(login_left());
    match conn.recv_msg::<Request>().await? {
        Request::Hello { version } if version == PROTOCOL_VERSION => {
            let hello = Response::Hello {
                version,
                server: server.name.clone(),
            };
            conn.send(&hello).await?;
        }
        Request::Hello { version } => {
            let e = Error::BadRequest(format!(
                "protocol version {version} is not supported (this server speaks {PROTOCOL_VERSION})"
            ));
            conn.send(&Response::Error(e.to_wire())).await?;
            return Err(e);
        }
        _ => {
            let e = Error::Protocol("the first message must be Hello".into());
            conn.send(&Response::Error(e.to_wire())).await?;
            return Err(e);
        }
    }
    debug!(server = %server.name, %peer, "hello");

    let mut user: Option<String> = None;
    loop {
        // Until a login succeeds, what is left of the login deadline; after, the idle timeout.
        if user.is_none() {
            conn.set_timeout(login_left());
        } else {
            conn.set_timeout(Some(limits.idle()));
        }
        let Some(frame) = conn.recv::<Request>().await? else {
            break;
        };
        let Frame::Msg(request) = frame else {
            return Err(Error::Protocol("data block outside an upload".into()));
        };
        let was_logged_in = user.is_some();
        let handled = handle(server, &mut conn, &mut user, request, peer.ip()).await;
        match (was_logged_in, user.is_some()) {
            (false, true) => conn.set_max_frame(crate::protocol::MAX_FRAME),
            (true, false) => conn.set_max_frame(PRE_LOGIN_FRAME),
            _ => {}
        }
        let (reply, next) = match handled {
            Ok(None) => continue, // the handler has replied itself
            Ok(Some(reply)) => (reply, Next::Continue),
            Err((e, next)) => {
                debug!(server = %server.name, %peer, error = %e, "request failed");
                (Response::Error(e.to_wire()), next)
            }
        };
        conn.send(&reply).await?;
        if let Next::Close = next {
            return Ok(());
        }
    }
    Ok(())
}

type Handled = std::result::Result<Option<Response>, (Error, Next)>;

/// Serves one request. `Ok(None)`: the reply has already been sent (streams).
async fn handle<S>(
    server: &Server,
    conn: &mut Connection<S>,
    user: &mut Option<String>,
    request: Request,
    addr: IpAddr,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let soft = |e: Error| (e, Next::Continue);
    // Requests that need no login.
    let request = match request {
        Request::Login {
            user: name,
            password,
        } => {
            *user = None;
            let token = server
                .login(name.clone(), password, addr)
                .await
                .map_err(soft)?;
            *user = Some(name);
            return Ok(Some(Response::LoggedIn { token }));
        }
        Request::Resume { token } => {
            *user = Some(server.resume(&token).map_err(soft)?);
            return Ok(Some(Response::Ok));
        }
        Request::Ring => {
            return Ok(Some(Response::Ring {
                members: server.ring.clone(),
            }))
        }
        Request::Hello { .. } | Request::ChunkDone { .. } => {
            return Err((Error::Protocol("unexpected message".into()), Next::Close))
        }
        other => other,
    };
    let Some(owner) = user.clone() else {
        // A client that streams after an unauthorised PutChunk would leave data
        // in flight, so close rather than guess.
        let next = match request {
            Request::PutChunk { .. } => Next::Close,
            _ => Next::Continue,
        };
        return Err((Error::NotLoggedIn, next));
    };
    if !server.users.current().contains(&owner) {
        // Removed from users.toml since this connection logged in.
        *user = None;
        return Err((Error::NotLoggedIn, Next::Close));
    }
    let store = &server.store;
    match request {
        Request::Status => Ok(Some(Response::Status(server.status()))),
        Request::List => {
            let files = store.list(&owner);
            let pages = files.chunks(LIST_PAGE).count().max(1);
            for page in 0..pages - 1 {
                let slice = &files[page * LIST_PAGE..(page + 1) * LIST_PAGE];
                let reply = Response::Files {
                    files: slice.to_vec(),
                    more: true,
                };
                conn.send(&reply).await.map_err(|e| (e, Next::Close))?;
            }
            let last = files[(pages - 1) * LIST_PAGE..].to_vec();
            Ok(Some(Response::Files {
                files: last,
                more: false,
            }))
        }
        Request::Stat { name } => {
            validate_name(&name).map_err(soft)?;
            Ok(Some(Response::Manifest(store.manifest(&owner, &name))))
        }
        Request::Commit { manifest } => {
            commit(server, owner, manifest).await.map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::Delete { name, version } => {
            validate_name(&name).map_err(soft)?;
            let tombstone = Manifest {
                name,
                version,
                size: 0,
                chunks: 0,
                checksums: Vec::new(),
                stored_at: unix_now(),
                deleted: true,
            };
            commit(server, owner, tombstone).await.map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::PutChunk {
            name,
            version,
            chunk,
            chunks,
            size,
        } => {
            let spec = ChunkSpec {
                owner,
                name,
                version,
                chunk,
                chunks,
                size,
            };
            // Any failure here leaves the client mid-stream: reply and close.
            receive_chunk(server, conn, spec)
                .await
                .map_err(|e| (e, Next::Close))?;
            Ok(Some(Response::Ok))
        }
        Request::GetChunk {
            name,
            version,
            chunk,
        } => send_chunk(server, conn, owner, name, version, chunk).await,
        Request::Hello { .. }
        | Request::ChunkDone { .. }
        | Request::Login { .. }
        | Request::Resume { .. }
        | Request::Ring => unreachable!("handled above"),
    }
}

async fn commit(server: &Server, owner: String, manifest: Manifest) -> Result<()> {
    let store = Arc::clone(&server.store);
    let name = manifest.name.clone();
    let applied = tokio::task::spawn_blocking(move || store.commit(&owner, manifest))
        .await
        .map_err(|e| Error::Internal(format!("commit task: {e}")))??;
    debug!(server = %server.name, file = %name, applied, "commit");
    Ok(())
}

/// Receives one chunk's data blocks and `ChunkDone`, storing them durably.
async fn receive_chunk<S>(server: &Server, conn: &mut Connection<S>, spec: ChunkSpec) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut writer = server.store.begin_chunk(spec)?;
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(PIPELINE_DEPTH);
    // The blocking side writes and hashes; it hands the writer back when the
    // channel closes, or the first error.
    let disk = tokio::task::spawn_blocking(move || {
        while let Some(block) = rx.blocking_recv() {
            writer.write(&block)?;
        }
        Ok::<_, Error>(writer)
    });
    let checksum = loop {
        match conn.recv::<Request>().await {
            Ok(Some(Frame::Data(block))) => {
                if tx.send(block).await.is_err() {
                    break None; // the writer failed; its error is reported below
                }
            }
            Ok(Some(Frame::Msg(Request::ChunkDone { checksum }))) => break Some(checksum),
            Ok(Some(Frame::Msg(_))) => {
                drop(tx);
                let _ = disk.await;
                return Err(Error::Protocol("a message inside an upload".into()));
            }
            Ok(None) => {
                drop(tx);
                let _ = disk.await;
                return Err(Error::Protocol("connection closed inside an upload".into()));
            }
            Err(e) => {
                drop(tx);
                let _ = disk.await;
                return Err(e);
            }
        }
    };
    drop(tx);
    let writer = disk
        .await
        .map_err(|e| Error::Internal(format!("chunk writer: {e}")))??;
    let Some(checksum) = checksum else {
        return Err(Error::Internal("chunk writer stopped".into()));
    };
    tokio::task::spawn_blocking(move || writer.finish(checksum))
        .await
        .map_err(|e| Error::Internal(format!("chunk writer: {e}")))?
}

/// Streams one stored chunk: `Chunk{len}`, data blocks, `ChunkDone`. The reader
/// verifies the checksum as it goes; a mismatch ends the stream with an error.
async fn send_chunk<S>(
    server: &Server,
    conn: &mut Connection<S>,
    owner: String,
    name: String,
    version: crate::protocol::Version,
    chunk: u32,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let store = Arc::clone(&server.store);
    let file = name.clone();
    let opened =
        tokio::task::spawn_blocking(move || store.open_chunk(&owner, &name, version, chunk))
            .await
            .map_err(|e| {
                (
                    Error::Internal(format!("chunk reader: {e}")),
                    Next::Continue,
                )
            })?;
    let mut reader = match opened {
        Ok(r) => r,
        Err(e) => {
            if let Error::Corrupt { .. } = e {
                warn!(server = %server.name, file = %file, chunk, error = %e, "corrupt chunk");
            }
            return Err((e, Next::Continue));
        }
    };
    let checksum = reader.checksum();
    let header = Response::Chunk { len: reader.len() };
    conn.send(&header).await.map_err(|e| (e, Next::Close))?;

    let (tx, mut rx) = mpsc::channel::<Result<bytes::Bytes>>(PIPELINE_DEPTH);
    tokio::task::spawn_blocking(move || loop {
        let block = reader.next_block().transpose();
        let last = !matches!(block, Some(Ok(_)));
        if let Some(item) = block {
            if tx.blocking_send(item).is_err() {
                return;
            }
        }
        if last {
            return;
        }
    });
    while let Some(item) = rx.recv().await {
        match item {
            Ok(block) => conn.send_data(block).await.map_err(|e| (e, Next::Close))?,
            Err(e) => {
                warn!(server = %server.name, file = %file, chunk, error = %e, "chunk failed while sending");
                return Err((e, Next::Close));
            }
        }
    }
    Ok(Some(Response::ChunkDone { checksum }))
}

/// A running server, for `dfs local` and tests: started on its own listener,
/// stopped by [`RunningServer::stop`] (which waits until it has closed).
pub struct RunningServer {
    pub name: String,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Starts a server from `config` on an already-bound `listener`.
    pub fn start(config: &ServerConfig, listener: TcpListener) -> Result<RunningServer> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let server = Arc::new(Server::open(config)?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, server, shutdown.clone()));
        Ok(RunningServer {
            name: config.name.clone(),
            addr,
            shutdown,
            task,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
