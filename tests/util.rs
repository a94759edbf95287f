//! Test clusters: real servers on 127.0.0.1 port 0, each in its own temp
//! folder (certificates included), so tests run in parallel and leave
//! nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use ringdfs::auth::hash_password;
use ringdfs::client::Client;
use ringdfs::config::{ClientConfig, Limits, ServerConfig};
use ringdfs::placement::{even_ring, Placement, DEFAULT_COPIES};
use ringdfs::protocol::{Connection, Member, Request, Response, Version, PROTOCOL_VERSION};
use ringdfs::ring::Id;
use ringdfs::server::RunningServer;
use ringdfs::tls::{self, ClientStream};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};

/// A client's connection to a server, as the tests build it by hand.
pub type RawConn = Connection<ClientStream<TcpStream>>;

pub const USERS: [(&str, &str); 2] = [("alice", "wonderland"), ("bob", "builder")];

pub struct Cluster {
    pub dir: TempDir,
    configs: Vec<ServerConfig>,
    servers: Vec<Option<RunningServer>>,
}

impl Cluster {
    /// Starts `n` servers, dfs1..dfsN, in ring order.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, Limits::default(), None).await
    }

    /// Starts `n` servers with the given limits and password hash parameters
    /// (cheap ones when `None`: tests log in often; the format is the real one).
    pub async fn start_with(n: usize, limits: Limits, params: Option<argon2::Params>) -> Cluster {
        Cluster::start_configured(n, params, |c| c.limits = limits.clone()).await
    }

    /// Starts `n` servers like [`Cluster::start`], each configuration first
    /// passed through `tune` (e.g. a long heal interval).
    pub async fn start_tuned(n: usize, tune: impl Fn(&mut ServerConfig)) -> Cluster {
        Cluster::start_configured(n, None, tune).await
    }

    async fn start_configured(
        n: usize,
        params: Option<argon2::Params>,
        tune: impl Fn(&mut ServerConfig),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        write_users(dir.path(), params);

        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let ring: Vec<Member> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Member {
                name: format!("dfs{}", i + 1),
                addr: l.local_addr().unwrap().to_string(),
                // Evenly spaced ids keep dfs1..dfsN in ring order.
                id: Some(Id::evenly_spaced(i as u32, n as u32).to_string()),
            })
            .collect();
        let configs: Vec<ServerConfig> = ring
            .iter()
            .map(|m| {
                let mut c = server_config(dir.path(), &m.name, &m.addr, Limits::default());
                c.ring = ring.clone();
                tune(&mut c);
                c
            })
            .collect();
        let cluster = Cluster::launch(dir, configs, listeners);
        cluster.wait_ring_formed().await;
        cluster
    }

    /// Waits until each server's successor is the next in dfs1..dfsN order
    /// (at start a server may briefly be its own successor, and STATUS
    /// rightly calls it alone).
    pub async fn wait_ring_formed(&self) {
        let names: Vec<String> = self.configs.iter().map(|c| c.name.clone()).collect();
        wait_until(10, "the ring to form", || async {
            self.servers.iter().enumerate().all(|(i, s)| {
                s.as_ref()
                    .is_some_and(|s| s.successor() == names[(i + 1) % names.len()])
            })
        })
        .await;
    }

    /// Creates the servers' certificates and starts them on their listeners.
    /// A server whose `http_listen` is set gets its HTTP endpoints too (on
    /// a port of its own when it says port 0; its configuration then
    /// records the port, for a restart).
    fn launch(
        dir: TempDir,
        mut configs: Vec<ServerConfig>,
        listeners: Vec<TcpListener>,
    ) -> Cluster {
        let ids: Vec<_> = configs.iter().map(ServerConfig::identity).collect();
        tls::ensure_certs(&dir.path().join("tls"), &ids).unwrap();
        let servers = configs
            .iter_mut()
            .zip(listeners)
            .map(|(c, l)| Some(start_server(c, l)))
            .collect();
        Cluster {
            dir,
            configs,
            servers,
        }
    }

    /// Starts `n` servers that each know only one other: dfs`i` joins through
    /// dfs`i+1` (and the last through dfs1), with ids in dfs1..dfsN order.
    pub async fn start_joined(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        write_users(dir.path(), None);
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let configs: Vec<ServerConfig> = (0..n)
            .map(|i| {
                let name = format!("dfs{}", i + 1);
                let mut c = server_config(dir.path(), &name, &addrs[i], Limits::default());
                c.id = Some(Id::evenly_spaced(i as u32, n as u32).to_string());
                c.join = Some(addrs[(i + 1) % n].clone());
                c
            })
            .collect();
        Cluster::launch(dir, configs, listeners)
    }

    /// Starts one more server, `name`, knowing only `join` (an address of the
    /// ring); it takes the midpoint of the ring's largest gap as its id.
    /// Returns its number (1-based).
    pub async fn add_server(&mut self, name: &str, join: &str) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = server_config(self.dir.path(), name, &addr, Limits::default());
        config.join = Some(join.to_string());
        tls::ensure_certs(&self.dir.path().join("tls"), &[config.identity()]).unwrap();
        ringdfs::peer::settle_id(&mut config).await.unwrap();
        self.servers
            .push(Some(RunningServer::start(&config, listener).unwrap()));
        self.configs.push(config);
        self.configs.len()
    }

    /// `dfs-server leave` for server `i`: returns once it has handed its data
    /// over and stopped.
    pub async fn leave(&mut self, i: usize) {
        ringdfs::peer::request_leave(&self.configs[i - 1], std::time::Duration::from_secs(120))
            .await
            .unwrap();
        if let Some(server) = self.servers[i - 1].take() {
            server.stop().await;
        }
    }

    /// A client configuration that knows only server `i`.
    pub fn client_config_for(&self, i: usize) -> ClientConfig {
        let mut config = self.client_config();
        config.servers = vec![self.configs[i - 1].listen.clone()];
        config
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config =
            ClientConfig::for_servers(self.configs.iter().map(|c| c.listen.clone()).collect());
        config.download_dir = self.dir.path().join("downloads");
        config.ca = self.ca();
        config
    }

    /// Writes a client configuration file for the `dfs` binary (download
    /// folder `downloads/` beside it) and returns its path.
    pub fn write_client_config(&self) -> PathBuf {
        let servers: Vec<String> = self
            .configs
            .iter()
            .map(|c| format!("{:?}", c.listen))
            .collect();
        let path = self.dir.path().join("client.toml");
        let text = format!(
            "servers = [{}]\ndownload_dir = \"downloads\"\ntimeout_secs = 5\nca = {:?}\n",
            servers.join(", "),
            self.ca().display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The cluster authority's certificate.
    pub fn ca(&self) -> PathBuf {
        tls::ca_cert_path(&self.dir.path().join("tls"))
    }

    pub async fn login(&self, user: &str) -> Client {
        let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
        Client::login(&self.client_config(), user, password)
            .await
            .unwrap()
    }

    /// Server `i` (1-based, as in dfs1..dfsN).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.configs[i - 1].listen.parse().unwrap()
    }

    /// Server `i`, while it runs.
    pub fn server(&self, i: usize) -> Option<&RunningServer> {
        self.servers[i - 1].as_ref()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.configs[i - 1].data_dir.clone()
    }

    /// Stops server `i`: it closes its listener and every connection.
    pub async fn stop(&mut self, i: usize) {
        if let Some(server) = self.servers[i - 1].take() {
            server.stop().await;
        }
    }

    /// Changes server `i`'s configuration for its next start.
    pub fn reconfigure(&mut self, i: usize, change: impl FnOnce(&mut ServerConfig)) {
        change(&mut self.configs[i - 1]);
    }

    /// Starts server `i` again, on the same address and data folder. The
    /// address was free while the server ran; once released, another test's
    /// socket may hold it for a moment, so binding is retried for a while.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.servers[i - 1].is_none(), "dfs{i} is running");
        let config = &self.configs[i - 1];
        let listener = bind_again(&config.listen, &config.name).await;
        let http = match &config.http_listen {
            Some(addr) => Some(bind_again(addr, &config.name).await),
            None => None,
        };
        let server = RunningServer::start_with_http(config, listener, http).unwrap();
        self.servers[i - 1] = Some(server);
    }

    /// Where server `i`'s HTTP endpoints listen (the cluster was started
    /// with `http_listen` set).
    pub fn http_addr(&self, i: usize) -> SocketAddr {
        self.configs[i - 1]
            .http_listen
            .as_ref()
            .expect("the cluster was started with HTTP endpoints")
            .parse()
            .unwrap()
    }
}

/// Starts a server from `config` on `listener`, with its HTTP endpoints if
/// it has `http_listen` (port 0: any; `config` then records the port).
fn start_server(config: &mut ServerConfig, listener: TcpListener) -> RunningServer {
    let http = config.http_listen.as_ref().map(|addr| {
        let std = std::net::TcpListener::bind(addr).unwrap();
        std.set_nonblocking(true).unwrap();
        TcpListener::from_std(std).unwrap()
    });
    if let Some(http) = &http {
        config.http_listen = Some(http.local_addr().unwrap().to_string());
    }
    RunningServer::start_with_http(config, listener, http).unwrap()
}

/// How long a restarted server waits for its old address to be free again.
const REBIND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `addr` again for server `name`, retrying while it is in use (another
/// socket took the released port); panics, saying so, after [`REBIND_WAIT`].
async fn bind_again(addr: &str, name: &str) -> TcpListener {
    let start = std::time::Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                assert!(
                    start.elapsed() < REBIND_WAIT,
                    "{name}: {addr} is still in use after {REBIND_WAIT:?} (another socket \
                     took the port while the server was stopped)"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{name}: binding {addr}: {e}"),
        }
    }
}

/// `users.toml` in `dir` with cheap hash parameters.
/// `users.toml` for alice and bob, hashed with `params` (cheap ones when
/// `None`: tests log in often; the format is the real one).
pub fn write_users(dir: &Path, params: Option<argon2::Params>) {
    let cheap = params.unwrap_or_else(|| argon2::Params::new(256, 1, 1, None).unwrap());
    let mut users = String::from("[users]\n");
    for (user, password) in USERS {
        let hash = hash_password(password, &cheap).unwrap();
        users.push_str(&format!("{user} = \"{hash}\"\n"));
    }
    std::fs::write(dir.join("users.toml"), users).unwrap();
}

/// A test server's configuration in `dir`: quick heal rounds and ring
/// timing (a neighbour is marked down within 0.2 + 1 s), no ring yet.
pub fn server_config(dir: &Path, name: &str, addr: &str, limits: Limits) -> ServerConfig {
    ServerConfig {
        name: name.to_string(),
        listen: addr.to_string(),
        advertise: None,
        data_dir: dir.join("data").join(name),
        http_listen: None,
        http_plain: false,
        users: dir.join("users.toml"),
        cluster_key: Some(dir.join("cluster.key")),
        heal_interval_secs: 1,
        tls_dir: dir.join("tls"),
        limits,
        id: None,
        join: None,
        copies: ringdfs::placement::DEFAULT_COPIES,
        stabilize_ms: 200,
        failure_timeout_ms: 1000,
        successors: 4,
        ring: Vec::new(),
        store: test_tuning(),
    }
}

/// The tests' store tuning: chunks above 16 KiB (files above 64 KB) are
/// files, so tests can damage them on disk; smaller ones are packed into
/// volumes, small ones so that they fill, seal and get compacted. The scrub
/// runs fast and tombstones go as soon as every server has them, so tests
/// see both within seconds.
pub fn test_tuning() -> ringdfs::store::Tuning {
    ringdfs::store::Tuning {
        inline_max: 16 << 10,
        volume_max: 256 << 10,
        scrub_bytes_per_sec: 256 << 20,
        tombstone_grace_secs: 0,
        ..Default::default()
    }
}

/// The names a client's LIST shows, in its order.
pub async fn names(client: &Client) -> Vec<String> {
    client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect()
}

/// A file of `len` random bytes in `dir`.
pub fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// A TLS stream trusting `ca`, for writing bytes by hand.
pub async fn tls_stream(addr: SocketAddr, ca: &Path) -> ClientStream<TcpStream> {
    let config = tls::client_config_for_user(ca).unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    tls::connect(&config, &addr.to_string(), stream)
        .await
        .unwrap()
}

/// A TLS connection trusting `ca`, before any protocol message.
pub async fn tls_connection(addr: SocketAddr, ca: &Path) -> RawConn {
    Connection::new(tls_stream(addr, ca).await, addr.to_string())
}

/// A connection that has said Hello, for hand-built requests.
pub async fn raw_connection(cluster: &Cluster, server: usize) -> RawConn {
    let addr = cluster.addr(server);
    let mut conn = tls_connection(addr, &cluster.ca()).await;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    assert!(matches!(
        conn.call(&hello).await.unwrap(),
        Response::Hello { .. }
    ));
    conn
}

/// A raw connection logged in as `user`.
pub async fn raw_login(cluster: &Cluster, server: usize, user: &str) -> RawConn {
    let mut conn = raw_connection(cluster, server).await;
    let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
    let login = Request::Login {
        user: user.into(),
        password: password.into(),
    };
    assert!(matches!(
        conn.call(&login).await.unwrap(),
        Response::LoggedIn { .. }
    ));
    conn
}

/// Every file below `dir`, relative paths, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// How a version is spelled in chunk file names (`<version>.<chunk>`).
pub fn version_in_file_name(v: Version) -> String {
    format!("{:016x}-{:016x}", v.gen, v.writer)
}

/// The chunk copies of `owner`'s `name` a server's store holds (in its
/// database or as files): the version as a chunk file's name spells it, and
/// the chunk number; sorted. Read from the store itself, beside the server.
pub fn chunk_files(data_dir: &Path, owner: &str, name: &str) -> Vec<(String, u32)> {
    let store = ringdfs::store::Store::inspect(data_dir).unwrap();
    let mut files: Vec<(String, u32)> = store
        .stored(owner, name)
        .unwrap()
        .into_iter()
        .map(|(version, chunk)| (version_in_file_name(version), chunk))
        .collect();
    files.sort();
    files
}

/// Chunk numbers of `owner`'s file `name` a server stores (any version).
pub fn chunks_on_disk(data_dir: &Path, owner: &str, name: &str) -> Vec<u32> {
    let mut chunks: Vec<u32> = chunk_files(data_dir, owner, name)
        .into_iter()
        .map(|(_, chunk)| chunk)
        .collect();
    chunks.sort_unstable();
    chunks
}

/// Everything the library logs (at info and above), for tests that check a
/// log line. One subscriber for the whole test binary; tests look for lines
/// naming their own files.
pub fn captured_logs() -> String {
    use std::sync::{Mutex, OnceLock};
    static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    let buffer = BUFFER.get_or_init(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                BUFFER
                    .get()
                    .expect("initialised")
                    .lock()
                    .unwrap()
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("ringdfs=info")
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
        Mutex::new(Vec::new())
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

/// Polls `check` every 100 ms until it holds or `secs` pass; returns how long
/// it took, or panics naming `what`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "after {secs} s still not: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The file holding chunk `chunk` of `owner`'s `name` on a server (any
/// version); `None` for a chunk kept in the database (16 KiB or less).
pub fn chunk_file(data_dir: &Path, owner: &str, name: &str, chunk: u32) -> Option<PathBuf> {
    let dir = ringdfs::store::file_dir(data_dir, owner, name);
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().and_then(|x| x.to_str()) == Some(&chunk.to_string()))
}

/// A cluster of real `dfs-server` processes, for faults only a process has:
/// SIGKILL at any moment, SIGSTOP. Ports are picked free (bind to port 0,
/// note it, release it) because every server's config lists the whole ring;
/// a port another socket takes in between is detected (the child says so in
/// its log and exits) and handled: at first start by starting over on new
/// ports, at a restart by waiting for the port to be free again.
pub struct ProcCluster {
    pub dir: TempDir,
    addrs: Vec<String>,
    children: Vec<Option<std::process::Child>>,
}

/// A start of a server, made by [`ProcCluster::launch`]: where its log lines begin.
pub struct Launched {
    from: usize,
    at: std::time::Instant,
}

impl Launched {
    /// Time since the server was started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.at.elapsed()
    }
}

/// Why a `dfs-server` child did not come up.
enum StartFailure {
    /// Its address was in use: another socket took the port.
    PortTaken(String),
}

impl ProcCluster {
    pub async fn start(n: usize) -> ProcCluster {
        ProcCluster::start_tuned(n, None).await
    }

    /// Starts `n` servers like [`ProcCluster::start`], with `store` as their
    /// `[store]` tuning (the default tuning when `None`).
    pub async fn start_tuned(n: usize, store: Option<&ringdfs::store::Tuning>) -> ProcCluster {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match ProcCluster::try_start(n, store).await {
                Ok(cluster) => return cluster,
                Err(StartFailure::PortTaken(why)) if attempt < ATTEMPTS => {
                    eprintln!("ProcCluster: {why}; starting again on new ports");
                    attempt += 1;
                }
                Err(StartFailure::PortTaken(why)) => {
                    panic!("ProcCluster: {why}, {ATTEMPTS} times in a row")
                }
            }
        }
    }

    /// One attempt at starting `n` servers on freshly picked ports, in a
    /// fresh folder. Dropping a failed attempt kills what it started.
    async fn try_start(
        n: usize,
        store: Option<&ringdfs::store::Tuning>,
    ) -> Result<ProcCluster, StartFailure> {
        let mut cluster = ProcCluster::configure(n, store);
        for i in 1..=n {
            cluster.spawn(i).await?;
        }
        Ok(cluster)
    }

    /// A cluster of `n` servers on freshly picked ports, in a fresh folder,
    /// configured (users, one configuration file each) but not started: a
    /// test may fill their data folders first, then start them with
    /// [`ProcCluster::launch`] or [`ProcCluster::restart`]. A port another
    /// socket takes before a server starts is not retried here (see
    /// [`ProcCluster::start`]).
    pub fn configure(n: usize, store: Option<&ringdfs::store::Tuning>) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        write_users(dir.path(), None);
        let mut addrs = Vec::new();
        for _ in 0..n {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(probe.local_addr().unwrap().to_string());
        }
        let ring: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "[[ring]]\nname = \"dfs{}\"\naddr = \"{a}\"\nid = \"{}\"\n\n",
                    i + 1,
                    Id::evenly_spaced(i as u32, n as u32)
                )
            })
            .collect();
        let store = match store {
            Some(tuning) => format!("[store]\n{}\n", toml::to_string(tuning).unwrap()),
            None => String::new(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let config = format!(
                "name = \"dfs{n}\"\nlisten = \"{addr}\"\ndata_dir = \"data/dfs{n}\"\n\
                 users = \"users.toml\"\ncluster_key = \"cluster.key\"\nheal_interval_secs = 1\n\
                 tls_dir = \"tls\"\n\n{store}{ring}",
                n = i + 1
            );
            std::fs::write(dir.path().join(format!("dfs{}.toml", i + 1)), config).unwrap();
        }
        ProcCluster {
            dir,
            addrs,
            children: (0..n).map(|_| None).collect(),
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::for_servers(self.addrs.clone());
        config.timeout_secs = 3;
        config.ca = ringdfs::tls::ca_cert_path(&self.dir.path().join("tls"));
        config
    }

    pub async fn login(&self, user: &str) -> Client {
        let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
        Client::login(&self.client_config(), user, password)
            .await
            .unwrap()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("data").join(format!("dfs{i}"))
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.children[i - 1].as_ref().expect("running").id()
    }

    /// Starts server `i` again (after [`ProcCluster::kill`]) and waits until
    /// it listens. Its port was free while it ran; if another socket holds it
    /// now, this waits for it to be released (up to [`REBIND_WAIT`]).
    pub async fn restart(&mut self, i: usize) {
        let start = std::time::Instant::now();
        loop {
            match self.spawn(i).await {
                Ok(()) => return,
                Err(StartFailure::PortTaken(why)) => {
                    assert!(
                        start.elapsed() < REBIND_WAIT,
                        "{why}, still after {REBIND_WAIT:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Starts server `i` and waits until its log says it listens. A child
    /// that exits instead is a `PortTaken` failure if its log says the
    /// address is in use, and a panic showing its log otherwise.
    async fn spawn(&mut self, i: usize) -> Result<(), StartFailure> {
        let launched = self.launch(i);
        self.listening(i, &launched).await
    }

    /// Starts server `i` and returns at once, without waiting for it to
    /// listen (it may still be opening, or migrating, its data folder).
    pub fn launch(&mut self, i: usize) -> Launched {
        self.launch_via(i, &[])
    }

    /// What server `i` has logged since `launched`.
    pub fn said_since(&self, i: usize, launched: &Launched) -> String {
        let all = std::fs::read(self.log_path(i)).unwrap_or_default();
        String::from_utf8_lossy(all.get(launched.from..).unwrap_or_default()).into_owned()
    }

    /// Whether server `i`, started, has exited (it is then reaped).
    pub fn exited(&mut self, i: usize) -> bool {
        let Some(child) = self.children[i - 1].as_mut() else {
            return true;
        };
        if child.try_wait().unwrap().is_some() {
            self.children[i - 1] = None;
            return true;
        }
        false
    }

    /// Waits until server `i`, started as `launched`, logs that it listens.
    async fn listening(&mut self, i: usize, launched: &Launched) -> Result<(), StartFailure> {
        let addr = &self.addrs[i - 1];
        loop {
            // The server logs "listening" once its listener is bound: then
            // the port is its own, not another process's.
            if self.said_since(i, launched).contains("listening") {
                return Ok(());
            }
            let exited = self.children[i - 1]
                .as_mut()
                .expect("just spawned")
                .try_wait()
                .unwrap();
            if let Some(status) = exited {
                self.children[i - 1] = None;
                let said = self.said_since(i, launched);
                if said.contains("Address already in use") {
                    return Err(StartFailure::PortTaken(format!(
                        "dfs{i} could not listen on {addr}: the port is taken ({})",
                        said.trim()
                    )));
                }
                panic!("dfs{i} exited at start ({status}); its log:\n{said}");
            }
            assert!(
                launched.at.elapsed() < std::time::Duration::from_secs(20),
                "dfs{i} did not start listening within 20 s; its log:\n{}",
                self.said_since(i, launched)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits until server `i`, started as `launched`, listens; if its port
    /// was taken meanwhile, starts it again as [`ProcCluster::restart`] does.
    pub async fn wait_listening(&mut self, i: usize, launched: &Launched) {
        if let Err(StartFailure::PortTaken(why)) = self.listening(i, launched).await {
            eprintln!("{why}; starting it again");
            self.restart(i).await;
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("dfs{i}.log"))
    }

    /// SIGTERM, and waits until it has exited (SIGKILL after 20 s): its
    /// store closes as a stopped server's does.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.children[i - 1].take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs `check` on every server's own store, read from its folder: a
    /// running server has its store to itself, so the running ones are
    /// stopped for the look ([`ProcCluster::stop`]) and started again after.
    pub async fn check_stores<T>(
        &mut self,
        check: impl Fn(usize, &ringdfs::store::Store) -> T,
    ) -> Vec<T> {
        let running: Vec<usize> = (1..=self.children.len())
            .filter(|&i| self.children[i - 1].is_some())
            .collect();
        for &i in &running {
            self.stop(i);
        }
        let out = (1..=self.children.len())
            .map(|i| {
                check(
                    i,
                    &ringdfs::store::Store::inspect(&self.data_dir(i)).unwrap(),
                )
            })
            .collect();
        for i in running {
            self.restart(i).await;
        }
        out
    }

    /// Waits (up to `secs`) until `check` holds of every server's store,
    /// looked at as [`ProcCluster::check_stores`] does, a second apart.
    pub async fn wait_for_stores(
        &mut self,
        secs: u64,
        what: &str,
        check: impl Fn(usize, &ringdfs::store::Store) -> bool,
    ) -> std::time::Duration {
        let start = std::time::Instant::now();
        loop {
            if self.check_stores(&check).await.into_iter().all(|ok| ok) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(secs),
                "timed out after {secs} s waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`) to server `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(i).to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 1..=self.children.len() {
            if self.children[i - 1].is_some() {
                let _ = self.signal_quietly(i);
            }
            self.kill(i);
        }
    }
}

impl ProcCluster {
    /// A stopped process cannot die of SIGKILL until continued on some
    /// systems' bookkeeping; continue it first, ignoring failures.
    fn signal_quietly(&self, i: usize) -> std::io::Result<std::process::ExitStatus> {
        std::process::Command::new("kill")
            .arg("-CONT")
            .arg(self.pid(i).to_string())
            .status()
    }
}

// ---------------------------------------------------------------------------
// Server configurations, for `dfs-server` subcommands.

impl Cluster {
    /// Server `i`'s configuration.
    pub fn config(&self, i: usize) -> &ServerConfig {
        &self.configs[i - 1]
    }

    /// Writes server `i`'s configuration where `dfs-server dfsN` looks for
    /// it, `servers/dfsN.toml` under the cluster's folder (run the binary
    /// there), and returns the file's path.
    pub fn write_server_config(&self, i: usize) -> PathBuf {
        let config = &self.configs[i - 1];
        let dir = self.dir.path().join("servers");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", config.name));
        std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------
// The `dfs` binary, run by the tests as a script would run it.

/// `dfs --config CONFIG --user alice` with `password` in `DFS_PASSWORD`, its
/// HOME at `home` and its state folder (history) at `home/state`: never the
/// folders of whoever runs the tests. Callers add arguments and streams.
pub fn dfs_as_alice(config: &Path, home: &Path, password: &str) -> std::process::Command {
    dfs_as("alice", config, home, password)
}

/// [`dfs_as_alice`] for any user.
pub fn dfs_as(user: &str, config: &Path, home: &Path, password: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dfs"));
    command
        .arg("--config")
        .arg(config)
        .args(["--user", user])
        .env("DFS_PASSWORD", password)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("NO_COLOR", "1")
        .env_remove("DFS_USER")
        .env_remove("RUST_LOG");
    command
}

/// Runs `command` with `stdin` piped in, and waits for its output.
pub fn run_with_stdin(mut command: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------
// Seeded randomness, for the tests that inject faults (crash.rs,
// durability.rs): a failing run is repeated with `CHAOS_SEED`.

/// The seed of a randomized test: `CHAOS_SEED` if set, else a fresh one.
/// Printed first, so a failing run can be repeated.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => s.parse().expect("CHAOS_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (CHAOS_SEED={seed} repeats it)");
    seed
}

/// A file of `len` bytes from `rng` in `dir`.
pub fn seeded_file(
    rng: &mut rand::rngs::StdRng,
    dir: &Path,
    name: &str,
    len: usize,
) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// The checksums of `data` stored by `owner` as `name` at `version`, cut
/// into `chunks` chunks (index 0 = chunk 1), as a writing client computes them.
pub fn chunk_checksums(
    owner: &str,
    name: &str,
    version: Version,
    chunks: u32,
    data: &[u8],
) -> Vec<ringdfs::protocol::Checksum> {
    (1..=chunks)
        .map(|chunk| {
            let (start, end) = ringdfs::placement::chunk_range(data.len() as u64, chunks, chunk);
            ringdfs::protocol::ChunkId {
                owner,
                name,
                version,
                chunk,
                len: end - start,
            }
            .checksum(&data[start as usize..end as usize])
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Servers started through another program (issue 12, tests/faults.rs).

impl ProcCluster {
    /// Starts server `i` like [`ProcCluster::launch`], but as the last
    /// arguments of `wrapper` (a program and its arguments, e.g. `env -u
    /// NO_COLOR`, or `unshare` mounting a small disk first), which must end
    /// by exec'ing them so the child's pid is the server's. An empty
    /// `wrapper` starts the server directly.
    pub fn launch_via(&mut self, i: usize, wrapper: &[&str]) -> Launched {
        assert!(self.children[i - 1].is_none(), "dfs{i} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        // Only what this start writes counts: the log is kept across restarts.
        let from = log.metadata().unwrap().len() as usize;
        let server = env!("CARGO_BIN_EXE_dfs-server");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(server);
                c
            }
            None => std::process::Command::new(server),
        };
        let child = command
            .arg("--config")
            .arg(self.dir.path().join(format!("dfs{i}.toml")))
            .env("RUST_LOG", "ringdfs=info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i - 1] = Some(child);
        Launched {
            from,
            at: std::time::Instant::now(),
        }
    }
}

// ---------------------------------------------------------------------------
// Placement on the test clusters' rings (evenly spaced ids, dfs1..dfsN in
// ring order, so a ring position is a server number), two copies.

/// The servers (1-based numbers) holding chunk `chunk` of `owner`'s `name`,
/// an `n`-chunk file on `n` servers: the one a GET reads first, first.
pub fn holders(owner: &str, name: &str, chunk: u32, n: u32) -> Vec<usize> {
    Placement::of(owner, name)
        .holders(&even_ring(n), chunk, n, DEFAULT_COPIES)
        .into_iter()
        .map(|pos| pos as usize)
        .collect()
}

/// The chunks (ascending) server `server` holds of `owner`'s `name`, an
/// `n`-chunk file on `n` servers.
pub fn held(owner: &str, name: &str, server: usize, n: u32) -> Vec<u32> {
    Placement::of(owner, name).chunks_held(&even_ring(n), server as u32, n, DEFAULT_COPIES)
}

/// The one chunk of alice's 4-chunk `name` that neighbours `a` and `b` (of
/// four servers) both hold.
pub fn shared_chunk(name: &str, a: usize, b: usize) -> u32 {
    let theirs = held("alice", name, b, 4);
    let both: Vec<u32> = held("alice", name, a, 4)
        .into_iter()
        .filter(|c| theirs.contains(c))
        .collect();
    assert_eq!(both.len(), 1, "dfs{a} and dfs{b} share one chunk of {name}");
    both[0]
}

/// `dfs-server user ARGS... --config servers/dfsN.toml` (through server
/// `via`), with alice's password in DFS_PASSWORD: success, stdout, stderr.
pub fn dfs_server_user(cluster: &Cluster, via: usize, args: &[&str]) -> (bool, String, String) {
    let config = cluster.write_server_config(via);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("DFS_PASSWORD", "wonderland")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
