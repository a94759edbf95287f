//! Configuration files: `servers/dfsN.toml` and `client/config.toml`.
//!
//! Relative paths inside a file are taken relative to the folder that file is
//! in, so `cargo run` works from any directory and a cluster can live anywhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::Member;

/// One chunk server.
///
/// ```toml
/// name = "dfs1"
/// listen = "127.0.0.1:7101"
/// data_dir = "../data/dfs1"
/// users = "../users.toml"
///
/// [[ring]]            # every server of the ring, in ring order
/// name = "dfs1"
/// addr = "127.0.0.1:7101"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: String,
    pub listen: String,
    pub data_dir: PathBuf,
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
    pub ring: Vec<Member>,
}

fn default_heal_interval() -> u64 {
    5
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig> {
        let mut config: ServerConfig = load_toml(path)?;
        let base = base_dir(path);
        config.data_dir = base.join(&config.data_dir);
        config.users = base.join(&config.users);
        config.cluster_key = config.cluster_key.map(|k| base.join(k));
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if !self.ring.iter().any(|m| m.name == self.name) {
            return Err(Error::Config(format!(
                "server {} is not in its own [[ring]] list",
                self.name
            )));
        }
        let mut names: Vec<_> = self.ring.iter().map(|m| &m.name).collect();
        names.sort();
        names.dedup();
        if names.len() != self.ring.len() {
            return Err(Error::Config("[[ring]] names a server twice".into()));
        }
        Ok(())
    }
}

impl ServerConfig {
    pub fn heal_interval(&self) -> Duration {
        Duration::from_secs(self.heal_interval_secs.max(1))
    }
}

/// The client.
///
/// ```toml
/// servers = ["127.0.0.1:7101", "127.0.0.1:7102"]   # any one reachable is enough
/// download_dir = "files"                           # where GET puts files by default
/// timeout_secs = 5                                 # a silent server costs at most this
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub servers: Vec<String>,
    #[serde(default = "default_download_dir")]
    pub download_dir: PathBuf,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
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
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
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

/// `rel` (e.g. `client/config.toml`) under the current folder if it is there,
/// else under the source tree the binary was built from, so `cargo run` works
/// from any folder of the checkout.
pub fn default_path(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if built.exists() {
        built
    } else {
        here
    }
}
