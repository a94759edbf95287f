//! The chunk server: a listener, one task per connection, and the requests.
//!
//! `run(listener, server, shutdown)` accepts connections until `shutdown` is
//! cancelled; each connection says `Hello`, logs in (or resumes a session), and
//! then sends requests one at a time. Every request acts as the logged-in user:
//! the user's name comes from the session, never from the request, so no
//! request can reach another user's files.
//!
//! Disk work runs on the blocking pool: a chunk upload streams blocks from the
//! socket into a channel drained by a blocking writer, and a download streams
//! blocks from a blocking reader, so the async threads only move bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Users;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::names::validate_name;
use crate::protocol::{
    Connection, Frame, Manifest, Member, Request, Response, ServerStatus, Token, PROTOCOL_VERSION,
};
use crate::store::{ChunkSpec, Store};
use crate::unix_now;

/// Most connections served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 1024;
/// Most password verifications running at once (each takes ~19 MiB and tens of ms).
const MAX_LOGINS: usize = 4;
/// A connection silent this long between frames is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
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
    users: RwLock<Arc<Users>>,
    sessions: Mutex<HashMap<Token, Session>>,
    logins: Semaphore,
}

struct Session {
    user: String,
    expires: Instant,
}

impl Server {
    /// Opens the server's store and user table from its configuration.
    pub fn open(config: &ServerConfig) -> Result<Server> {
        config.validate()?;
        let store = Store::open(&config.data_dir)?;
        let users = Users::load(&config.users)?;
        Ok(Server {
            name: config.name.clone(),
            ring: config.ring.clone(),
            store: Arc::new(store),
            users: RwLock::new(Arc::new(users)),
            sessions: Mutex::new(HashMap::new()),
            logins: Semaphore::new(MAX_LOGINS),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks a password off the async threads; on success opens a session.
    async fn login(&self, user: String, password: String) -> Result<Token> {
        let _slot = self.logins.acquire().await.expect("semaphore never closed");
        let users = Arc::clone(&self.users.read().expect("users lock"));
        let (ok, user) =
            tokio::task::spawn_blocking(move || (users.verify(&user, &password), user))
                .await
                .map_err(|e| Error::Internal(format!("login task: {e}")))?;
        if !ok {
            info!(server = %self.name, user = %user, "login failed");
            return Err(Error::Unauthorized);
        }
        let token = Token(rand::random());
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            token,
            Session {
                user,
                expires: now + SESSION_TTL,
            },
        );
        Ok(token)
    }

    fn resume(&self, token: &Token) -> Result<String> {
        let sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(token) {
            Some(s) if s.expires > Instant::now() => Ok(s.user.clone()),
            _ => Err(Error::Unauthorized),
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(server = %server.name, %addr, "listening");
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
                result = serve_connection(stream, peer, &server) => {
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

async fn serve_connection<S>(stream: S, peer: SocketAddr, server: &Server) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(stream, peer.to_string());
    conn.set_timeout(Some(IDLE_TIMEOUT));
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
    while let Some(frame) = conn.recv::<Request>().await? {
        let Frame::Msg(request) = frame else {
            return Err(Error::Protocol("data block outside an upload".into()));
        };
        let (reply, next) = match handle(server, &mut conn, &mut user, request).await {
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
            let token = server.login(name.clone(), password).await.map_err(soft)?;
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
            let (manifest, held) = store.file(&owner, &name);
            Ok(Some(Response::File { manifest, held }))
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
                md5: [0; 16],
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
