//! Configuration files: `servers/dfsN.toml` and `client/config.toml`.
//!
//! Relative paths inside a file are taken relative to the folder that file is
//! in, so `cargo run` works from any directory and a cluster can live anywhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::Member;
use crate::ring::{Id, Node};

/// One chunk server.
///
/// ```toml
/// name = "dfs1"
/// listen = "127.0.0.1:7101"
/// data_dir = "../data/dfs1"
/// users = "../users.toml"
/// tls_dir = "../data/tls"   # ca.pem, dfs1.pem, dfs1.key (see `tls`)
///
/// [limits]            # optional; every field has a default (see `Limits`)
/// max_connections = 1024
/// max_connections_per_address = 256
///
/// id = "1"           # optional: ring identifier, leading hex digits (else SHA-1 of name)
/// join = "127.0.0.1:7102"   # optional: any running server, to join its ring
///
/// [[ring]]            # optional: the ring's first members (seeds), with ids
/// name = "dfs1"
/// addr = "127.0.0.1:7101"
/// id = "1"
/// ```
///
/// A server needs to know one other: `join`, or a `[[ring]]` list. Members
/// listed in `[[ring]]` are members from the start (so `n` is right before
/// the ring has formed); a server that only has `join` becomes a member when
/// it joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: String,
    pub listen: String,
    /// The address other servers and clients dial (`10.0.0.5:7101`), when it
    /// is not `listen` (which may be `0.0.0.0:7101`).
    #[serde(default)]
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Where the HTTP endpoints listen (S3, the files API, `/health`; see
    /// `http`): HTTPS with this server's certificate. None: no endpoint.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Plain HTTP instead of HTTPS on `http_listen`: allowed only on a
    /// loopback address (a proxy in front, or trying things out).
    #[serde(default)]
    pub http_plain: bool,
    pub users: PathBuf,
    /// The secret every server of the ring shares, to prove to each other who
    /// they are; created (32 random bytes) if missing. Without it a server
    /// neither heals nor answers peers.
    #[serde(default)]
    pub cluster_key: Option<PathBuf>,
    /// Seconds between heal rounds (a round also runs at start, and when a
    /// bad copy is found).
    #[serde(default = "default_heal_interval")]
    pub heal_interval_secs: u64,
    /// The cluster's certificates: `ca.pem`, and `NAME.pem`/`NAME.key` for this server.
    #[serde(default = "default_tls_dir")]
    pub tls_dir: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    /// This server's ring identifier (1 to 40 hex digits, the leading ones);
    /// default: its `[[ring]]` entry's `id`; else, for a server that joins,
    /// the midpoint of the ring's largest gap chosen at its first start
    /// (`peer::settle_id`); else SHA-1 of its name.
    #[serde(default)]
    pub id: Option<String>,
    /// Address of any server of the ring to join.
    #[serde(default)]
    pub join: Option<String>,
    /// Copies `k` of every chunk (SPEC §5): a cluster setting, the same on
    /// every server. Changed (on every server, restarted one by one), the
    /// servers heal to the new count.
    #[serde(default = "default_copies")]
    pub copies: u32,
    /// Chord timing: stabilize, check the predecessor and fix fingers this often.
    #[serde(default = "default_stabilize_ms")]
    pub stabilize_ms: u64,
    /// A neighbour that does not answer a ring message within this is marked
    /// down: a dead or hung server is noticed within `stabilize_ms +
    /// failure_timeout_ms` (2.5 s by default).
    #[serde(default = "default_failure_timeout_ms")]
    pub failure_timeout_ms: u64,
    /// Length of the successor list (how many failures in a row the ring survives).
    #[serde(default = "default_successors")]
    pub successors: usize,
    /// The ring's first members, with their ids (see above).
    #[serde(default)]
    pub ring: Vec<Member>,
    /// The metadata store: which chunks live in the database, its cache,
    /// the scrub's pace, how long tombstones are kept (see `store::Tuning`).
    #[serde(default)]
    pub store: crate::store::Tuning,
}

fn default_stabilize_ms() -> u64 {
    500
}

fn default_failure_timeout_ms() -> u64 {
    2000
}

fn default_successors() -> usize {
    4
}

fn default_heal_interval() -> u64 {
    5
}

fn default_tls_dir() -> PathBuf {
    PathBuf::from("../data/tls")
}

/// What one server allows a connection, with defaults for a real deployment.
/// Tests shrink the timeouts and back-off so they run in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// Connections served at once from one address (an IPv6 address by its
    /// /64); more from there are closed on arrival, so one host cannot take
    /// every place of `max_connections`.
    pub max_connections_per_address: usize,
    /// From accepting a connection to a successful login (TLS, `Hello`,
    /// `Login`/`Resume`): a connection that takes longer is closed.
    pub handshake_ms: u64,
    /// Silence allowed between frames after login.
    pub idle_ms: u64,
    /// Once a frame has started to arrive, all of it must arrive within this.
    pub frame_ms: u64,
    /// Failed logins (per account, and per address) before back-off starts.
    pub login_failures_allowed: u32,
    /// The first back-off; it doubles with each further failure...
    pub login_backoff_ms: u64,
    /// ...up to this.
    pub login_backoff_max_ms: u64,
    /// Failures older than this are forgotten.
    pub login_forget_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_address: 256,
            handshake_ms: 10_000,
            idle_ms: 300_000,
            frame_ms: 60_000,
            login_failures_allowed: 5,
            login_backoff_ms: 1_000,
            login_backoff_max_ms: 300_000,
            login_forget_ms: 900_000,
        }
    }
}

impl Limits {
    pub fn handshake(&self) -> Duration {
        Duration::from_millis(self.handshake_ms.max(1))
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.max(1))
    }

    pub fn frame(&self) -> Duration {
        Duration::from_millis(self.frame_ms.max(1))
    }
}

impl ServerConfig {
    /// The configuration in `path`, with the environment's `DFS_*` settings
    /// over it (see [`apply_env`]).
    pub fn load(path: &Path) -> Result<ServerConfig> {
        let mut table: toml::Table = load_toml(path)?;
        apply_env(&mut table, std::env::vars())?;
        let mut config: ServerConfig = table.try_into().map_err(|e: toml::de::Error| {
            Error::Config(format!("{}: {}", path.display(), e.message()))
        })?;
        let base = base_dir(path);
        config.data_dir = base.join(&config.data_dir);
        config.users = base.join(&config.users);
        config.cluster_key = config.cluster_key.map(|k| base.join(k));
        config.tls_dir = base.join(&config.tls_dir);
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if !self.ring.is_empty() && !self.ring.iter().any(|m| m.name == self.name) {
            return Err(Error::Config(format!(
                "server {} is not in its own [[ring]] list",
                self.name
            )));
        }
        if self.copies == 0 {
            return Err(Error::Config("copies must be at least 1".into()));
        }
        self.node()?;
        for member in &self.ring {
            member_id(member)?;
        }
        if let Some(http) = &self.http_listen {
            let addr: std::net::SocketAddr = http.parse().map_err(|_| {
                Error::Config(format!(
                    "http_listen = {http:?}: an address and port, like 127.0.0.1:9101"
                ))
            })?;
            if self.http_plain && !addr.ip().is_loopback() {
                return Err(Error::Config(format!(
                    "http_plain is allowed only on a loopback address, not {http} (use HTTPS)"
                )));
            }
        }
        let mut names: Vec<_> = self.ring.iter().map(|m| &m.name).collect();
        names.sort();
        names.dedup();
        if names.len() != self.ring.len() {
            return Err(Error::Config("[[ring]] names a server twice".into()));
        }
        Ok(())
    }

    /// The address others dial this server at: `advertise`, else `listen`.
    pub fn addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// Who this server is, for its certificate.
    pub fn identity(&self) -> crate::tls::ServerIdentity {
        crate::tls::ServerIdentity {
            name: self.name.clone(),
            hosts: vec![crate::tls::host_of(self.addr()).to_string()],
        }
    }
}

impl ServerConfig {
    pub fn heal_interval(&self) -> Duration {
        Duration::from_secs(self.heal_interval_secs.max(1))
    }

    pub fn stabilize(&self) -> Duration {
        Duration::from_millis(self.stabilize_ms.max(10))
    }

    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms.max(10))
    }

    /// This server on the ring: its id (see `id`), name and listen address.
    pub fn node(&self) -> Result<Node> {
        let own = self.ring.iter().find(|m| m.name == self.name);
        let id = match (&self.id, own.and_then(|m| m.id.as_ref())) {
            (Some(hex), _) | (None, Some(hex)) => parse_id(&self.name, hex)?,
            (None, None) => Id::of_name(&self.name),
        };
        Ok(Node {
            id,
            name: self.name.clone(),
            addr: self.addr().to_string(),
        })
    }

    /// The `[[ring]]` seeds as ring nodes.
    pub fn seeds(&self) -> Result<Vec<Node>> {
        self.ring
            .iter()
            .map(|m| {
                Ok(Node {
                    id: member_id(m)?,
                    name: m.name.clone(),
                    addr: m.addr.clone(),
                })
            })
            .collect()
    }
}

/// A `[[ring]]` member's identifier: its `id`, else SHA-1 of its name.
pub fn member_id(member: &Member) -> Result<Id> {
    match &member.id {
        Some(hex) => parse_id(&member.name, hex),
        None => Ok(Id::of_name(&member.name)),
    }
}

fn default_copies() -> u32 {
    crate::placement::DEFAULT_COPIES
}

fn parse_id(name: &str, hex: &str) -> Result<Id> {
    Id::parse_hex(hex)
        .ok_or_else(|| Error::Config(format!("{name}: id {hex:?} is not 1 to 40 hex digits")))
}

/// The client.
///
/// ```toml
/// servers = ["127.0.0.1:7101", "127.0.0.1:7102"]   # any one reachable is enough
/// download_dir = "files"                           # where GET puts files by default
/// timeout_secs = 5                                 # a silent server costs at most this
/// ca = "ca.pem"                                    # the only authority trusted (see `tls`)
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub servers: Vec<String>,
    #[serde(default = "default_download_dir")]
    pub download_dir: PathBuf,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The cluster authority's certificate; servers must present one it signed.
    #[serde(default = "default_ca")]
    pub ca: PathBuf,
}

fn default_ca() -> PathBuf {
    PathBuf::from("ca.pem")
}

fn default_download_dir() -> PathBuf {
    PathBuf::from(".")
}

fn default_timeout_secs() -> u64 {
    5
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig> {
        let mut config: ClientConfig = load_toml(path)?;
        config.download_dir = base_dir(path).join(&config.download_dir);
        config.ca = base_dir(path).join(&config.ca);
        if config.servers.is_empty() {
            return Err(Error::Config(format!(
                "{}: `servers` lists no server",
                path.display()
            )));
        }
        Ok(config)
    }

    /// A configuration for the given bootstrap servers, with defaults.
    pub fn for_servers(servers: Vec<String>) -> ClientConfig {
        ClientConfig {
            servers,
            download_dir: default_download_dir(),
            timeout_secs: default_timeout_secs(),
            ca: default_ca(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// Server settings from the environment, which wins over the file (for
/// containers and service managers): `DFS_<KEY>` sets a top-level key
/// (`DFS_LISTEN`, `DFS_ADVERTISE`, `DFS_JOIN`, `DFS_DATA_DIR`, `DFS_COPIES`),
/// `DFS_<TABLE>__<KEY>` one in a table (`DFS_LIMITS__MAX_CONNECTIONS`,
/// `DFS_STORE__VOLUME_MAX`). A value is read as TOML (`5`, `true`,
/// `["a", "b"]`), else taken as a string. Relative paths are relative to
/// the configuration file's folder, as in the file. Only the settings a
/// server has are read: `DFS_USER` (the client's) is not one of them.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<()> {
    /// Top-level settings; `true` for those that are strings (an `id` of `4`
    /// is the string "4", not a number).
    const KEYS: &[(&str, bool)] = &[
        ("name", true),
        ("listen", true),
        ("advertise", true),
        ("data_dir", true),
        ("users", true),
        ("cluster_key", true),
        ("tls_dir", true),
        ("id", true),
        ("join", true),
        ("heal_interval_secs", false),
        ("copies", false),
        ("stabilize_ms", false),
        ("failure_timeout_ms", false),
        ("successors", false),
    ];
    const TABLES: &[&str] = &["limits", "store"];
    for (var, text) in vars {
        let Some(key) = var.strip_prefix("DFS_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = || {
            format!("v = {text}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(text.clone()))
        };
        match key.split_once("__") {
            None => {
                if let Some(&(_, string)) = KEYS.iter().find(|(k, _)| *k == key) {
                    let value = if string {
                        toml::Value::String(text.clone())
                    } else {
                        value()
                    };
                    table.insert(key, value);
                }
            }
            Some((outer, inner)) if TABLES.contains(&outer) => {
                let entry = table
                    .entry(outer)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(inner_table) => {
                        inner_table.insert(inner.to_string(), value());
                    }
                    None => return Err(Error::Config(format!("{var}: [{outer}] is not a table"))),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines (it quotes the source); keep the gist.
        let msg = e.message().to_string();
        Error::Config(format!("{}: {msg}", path.display()))
    })
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `rel` (e.g. `servers`) under the current folder if it is there, else
/// under the source tree the binary was built from while it runs from
/// inside it, so `cargo run` works from any folder of the checkout.
pub fn default_path(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    // The checkout the binary was built in, only while the binary is still
    // inside it (`cargo run`, `target/release/dfs`): a copy installed
    // elsewhere never reads a build folder's files behind the user's back.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inside = std::env::current_exe().is_ok_and(|exe| exe.starts_with(checkout));
    let built = checkout.join(rel);
    if inside && built.exists() {
        built
    } else {
        here
    }
}

/// The client's configuration file when none is given (`--config`,
/// `DFS_CONFIG`): `./client/config.toml`, else the user's
/// (`$XDG_CONFIG_HOME/ringdfs/config.toml`, by default under
/// `~/.config`), else the checkout's when the binary runs from inside it.
/// `None` if there is none of these.
pub fn client_config_path() -> Option<PathBuf> {
    let here = PathBuf::from("client/config.toml");
    if here.exists() {
        return Some(here);
    }
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(user) = config_home.map(|d| d.join("ringdfs/config.toml")) {
        if user.exists() {
            return Some(user);
        }
    }
    Some(default_path("client/config.toml")).filter(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped configurations put dfs1..dfs4 in ring order (SPEC §5's
    /// table as printed); dfs5 has no id (it takes the midpoint of the
    /// largest gap when it first joins, see `peer::settle_id`).
    #[test]
    fn shipped_servers_sort_into_ring_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers");
        let dfs5 = ServerConfig::load(&dir.join("dfs5.toml")).unwrap();
        assert!(dfs5.id.is_none() && dfs5.join.is_some());
        let nodes: Vec<Node> = (1..=4)
            .map(|i| {
                ServerConfig::load(&dir.join(format!("dfs{i}.toml")))
                    .unwrap()
                    .node()
                    .unwrap()
            })
            .collect();
        let mut sorted = nodes.clone();
        sorted.sort_by_key(|n| n.id);
        let order: Vec<&str> = sorted.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(order, ["dfs1", "dfs2", "dfs3", "dfs4"]);
        let seeds = ServerConfig::load(&dir.join("dfs3.toml"))
            .unwrap()
            .seeds()
            .unwrap();
        assert_eq!(
            seeds[..],
            nodes[..4],
            "every server agrees on the seeds' ids"
        );
    }

    /// `DFS_*` settings win over the file; strings stay strings, numbers
    /// and tables are read as TOML; other variables are ignored.
    #[test]
    fn the_environment_wins_over_the_file() {
        let mut table: toml::Table = "name = \"dfs2\"\nlisten = \"127.0.0.1:1\"\ncopies = 2\n"
            .parse()
            .unwrap();
        let vars = [
            ("DFS_LISTEN", "0.0.0.0:7102"),
            ("DFS_ADVERTISE", "10.0.0.2:7102"),
            ("DFS_ID", "4"),
            ("DFS_COPIES", "3"),
            ("DFS_LIMITS__MAX_CONNECTIONS", "77"),
            ("DFS_USER", "alice"),
            ("HOME", "/root"),
        ];
        apply_env(
            &mut table,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        table.insert("data_dir".into(), "d".into());
        table.insert("users".into(), "u".into());
        let config: ServerConfig = table.try_into().unwrap();
        assert_eq!(config.listen, "0.0.0.0:7102");
        assert_eq!(config.addr(), "10.0.0.2:7102");
        assert_eq!(config.id.as_deref(), Some("4"));
        assert_eq!(config.copies, 3);
        assert_eq!(config.limits.max_connections, 77);
        assert_eq!(config.name, "dfs2");
    }
}
