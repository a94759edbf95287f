//! `dfs-server`: one ringdfs chunk server, and user administration.
//!
//! `dfs-server dfs1` serves from `servers/dfs1.toml`; `--config FILE` from any
//! file. `dfs-server user add|passwd|del NAME` edits `users.toml`;
//! `dfs-server certs` creates the cluster's certificates; `dfs-server leave
//! dfs5` makes a running server hand its data over and leave the ring.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ringdfs::auth::Users;
use ringdfs::config::{default_path, ClientConfig, ServerConfig};
use ringdfs::server::{run, Server};
use ringdfs::tls;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "dfs-server", version, about = "A ringdfs chunk server")]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    /// The server to run: reads servers/NAME.toml.
    name: Option<String>,
    /// Run from this configuration file instead.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Read and check every chunk a server stores (safe beside the running
    /// server: changes nothing). Exit status 1 if any copy is bad.
    Verify {
        /// The server: reads servers/NAME.toml.
        name: Option<String>,
        /// Or its configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a running server hand its data over to the others and leave the
    /// ring for good (it stops when the data is safe elsewhere).
    Leave {
        /// The server: reads servers/NAME.toml.
        name: Option<String>,
        /// Or its configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Add users, change passwords, remove users (in users.toml).
    User {
        #[command(subcommand)]
        action: UserAction,
        /// The users file to edit.
        #[arg(long, global = true)]
        users: Option<PathBuf>,
    },
    /// Create the cluster's certificate authority (once) and a certificate
    /// for every server in the servers folder that has none; copy the
    /// authority's certificate to where the client looks for it.
    Certs {
        /// Folder of server configurations [default: servers].
        #[arg(long)]
        servers: Option<PathBuf>,
        /// Client configuration whose `ca` file to write [default: client/config.toml].
        #[arg(long)]
        client: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user; asks for the password twice (or reads DFS_PASSWORD).
    Add { name: String },
    /// Change a user's password.
    Passwd { name: String },
    /// Remove a user.
    Del { name: String },
}

fn main() {
    ringdfs::memory::limit_retained_memory();
    if let Err(e) = real_main() {
        eprintln!("dfs-server: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = ringdfs::cli::parse_args::<Args>();
    match args.command {
        Some(Command::User { action, users }) => {
            let path = users.unwrap_or_else(|| default_path("users.toml"));
            return manage_user(&path, action);
        }
        Some(Command::Verify { name, config }) => return verify(&config_path(config, name)?),
        Some(Command::Leave { name, config }) => {
            let config = ServerConfig::load(&config_path(config, name)?)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            println!(
                "{}: handing the data over to the other servers...",
                config.name
            );
            runtime.block_on(ringdfs::peer::request_leave(
                &config,
                std::time::Duration::from_secs(24 * 3600),
            ))?;
            println!("{} has left the ring", config.name);
            return Ok(());
        }
        Some(Command::Certs { servers, client }) => {
            let servers = servers.unwrap_or_else(|| default_path("servers"));
            let client = client.unwrap_or_else(|| default_path("client/config.toml"));
            return make_certs(&servers, &client);
        }
        None => {}
    }
    let path = config_path(args.config, args.name)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colour only on a terminal: a log file gets plain text.
        .with_ansi(ringdfs::cli::colour_on_stderr())
        .with_writer(std::io::stderr)
        .init();
    let mut config = ServerConfig::load(&path)?;
    // A server's own certificate is made on first start (with the authority, if
    // there is none yet), so four servers started by hand just work.
    let created = tls::ensure_certs(&config.tls_dir, &[config.identity()])?;
    if created.authority {
        tracing::info!(dir = %config.tls_dir.display(), "created the cluster's certificate authority");
    }
    if !created.servers.is_empty() {
        tracing::info!(server = %config.name, dir = %config.tls_dir.display(), "created this server's certificate");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        ringdfs::peer::settle_id(&mut config).await?;
        let server = Arc::new(Server::open(&config)?);
        tracing::info!(server = %config.name, data = %config.data_dir.display(), "started");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        run(listener, server, shutdown).await;
        Ok(())
    })
}

fn config_path(config: Option<PathBuf>, name: Option<String>) -> Result<PathBuf> {
    match (config, name) {
        (Some(path), _) => Ok(path),
        (None, Some(name)) => Ok(default_path(&format!("servers/{name}.toml"))),
        (None, None) => bail!("name a server (e.g. `dfs-server dfs1`) or give --config FILE"),
    }
}

/// The admin form of VERIFY: every chunk of one server's store.
fn verify(path: &std::path::Path) -> Result<()> {
    let config = ServerConfig::load(path)?;
    let store = ringdfs::store::Store::inspect(&config.data_dir)?;
    let (checked, bad) = store.scrub()?;
    for (copy, error) in &bad {
        println!(
            "BAD  {}/{} chunk {}: {error}",
            copy.owner, copy.name, copy.chunk
        );
    }
    println!(
        "{}: checked {checked} chunk copies, {} bad",
        config.name,
        bad.len()
    );
    if !bad.is_empty() {
        bail!(
            "{} bad copies on {} (the running server repairs a copy when it next reads it; `dfs verify` reads them all)",
            bad.len(),
            config.name
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `dfs-server certs`: certificates for every `*.toml` in `servers`, and the
/// client's copy of the authority.
fn make_certs(servers: &std::path::Path, client: &std::path::Path) -> Result<()> {
    let mut configs = Vec::new();
    let entries =
        std::fs::read_dir(servers).with_context(|| format!("reading {}", servers.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", servers.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "toml") {
            configs.push(ServerConfig::load(&path)?);
        }
    }
    if configs.is_empty() {
        bail!("no server configuration (*.toml) in {}", servers.display());
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut dirs: Vec<PathBuf> = configs.iter().map(|c| c.tls_dir.clone()).collect();
    dirs.dedup();
    for dir in &dirs {
        let ids: Vec<_> = configs
            .iter()
            .filter(|c| &c.tls_dir == dir)
            .map(ServerConfig::identity)
            .collect();
        let created = tls::ensure_certs(dir, &ids)?;
        if created.authority {
            println!("created the certificate authority in {}", dir.display());
        }
        for name in &created.servers {
            println!("created the certificate of {name} in {}", dir.display());
        }
        if !created.authority && created.servers.is_empty() {
            println!("{}: every server already has a certificate", dir.display());
        }
    }
    if dirs.len() > 1 {
        bail!("the servers name more than one tls_dir; a cluster has one authority");
    }
    let client = ClientConfig::load(client)?;
    if tls::install_ca(&dirs[0], &client.ca)? {
        println!("the client trusts {}", client.ca.display());
    }
    Ok(())
}

fn manage_user(path: &std::path::Path, action: UserAction) -> Result<()> {
    let mut users = if path.exists() {
        Users::load(path)?
    } else {
        Users::default()
    };
    match action {
        UserAction::Add { name } => {
            if users.contains(&name) {
                bail!("user {name} exists; use `user passwd {name}` to change the password");
            }
            ringdfs::names::validate_user(&name)?;
            users.set(&name, &new_password(&name)?)?;
            users.save(path)?;
            println!("added {name} to {}", path.display());
        }
        UserAction::Passwd { name } => {
            if !users.contains(&name) {
                bail!("no user {name} in {}", path.display());
            }
            users.set(&name, &new_password(&name)?)?;
            users.save(path)?;
            println!("changed the password of {name}");
        }
        UserAction::Del { name } => {
            if !users.remove(&name) {
                bail!("no user {name} in {}", path.display());
            }
            users.save(path)?;
            println!("removed {name}");
        }
    }
    Ok(())
}

/// The new password: from DFS_PASSWORD, or asked for twice without echo.
fn new_password(name: &str) -> Result<String> {
    if let Ok(pw) = std::env::var("DFS_PASSWORD") {
        return Ok(pw);
    }
    let first = rpassword::prompt_password(format!("new password for {name}: "))
        .context("reading the password")?;
    let second = rpassword::prompt_password("again: ").context("reading the password")?;
    if first != second {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}
