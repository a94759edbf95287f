//! `dfs-server`: one ringdfs chunk server, and user administration.
//!
//! `dfs-server dfs1` serves from `servers/dfs1.toml`; `--config FILE` from any
//! file. `dfs-server user add|passwd|del|quota|list` manages the cluster's users
//! (and `user key add|list|del` their S3 access keys);
//! `dfs-server certs` creates the cluster's certificates; `dfs-server leave
//! dfs5` makes a running server hand its data over and leave the ring.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ringdfs::accounts::{self, UserChange};
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
    /// Add users, change passwords, remove users, list them, manage their S3
    /// access keys: on the whole cluster, through one server (the first in
    /// servers/ that answers).
    User {
        #[command(subcommand)]
        action: UserAction,
        /// Through this server: reads servers/NAME.toml.
        #[arg(long, global = true, value_name = "NAME")]
        server: Option<String>,
        /// Through the server this configuration file describes.
        #[arg(long, global = true, conflicts_with = "server")]
        config: Option<PathBuf>,
        /// Edit this seed file instead: the users a new cluster starts with.
        #[arg(long, global = true, conflicts_with_all = ["server", "config"])]
        users: Option<PathBuf>,
    },
    /// Create the cluster's certificate authority (once) and a certificate
    /// for every server in the servers folder that has none; copy the
    /// authority's certificate to where the client looks for it. With
    /// `--host` or `--renew`, (re)issue those servers' certificates and
    /// write a bundle for each to copy to its machine.
    Certs {
        /// Folder of server configurations [default: servers].
        #[arg(long)]
        servers: Option<PathBuf>,
        /// Client configuration whose `ca` file to write [default: client/config.toml].
        #[arg(long)]
        client: Option<PathBuf>,
        /// A server on another machine and the names and addresses it is
        /// dialled at: `dfs2=10.0.0.2,dfs2.lan` (repeatable). Issues its
        /// certificate and writes its bundle.
        #[arg(long, value_name = "NAME=HOST[,HOST...]")]
        host: Vec<String>,
        /// Reissue this server's certificate (after its address or names
        /// changed), with the hosts `--host` gives or its configuration's
        /// address, and write its bundle (repeatable).
        #[arg(long, value_name = "NAME")]
        renew: Vec<String>,
        /// Where the bundles go: one folder per server [default: bundles].
        #[arg(long)]
        out: Option<PathBuf>,
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
    /// Set a user's quota: SIZE with a unit (500MB, 10GiB), or `none` to
    /// remove it. Refused below what the user uses now.
    Quota {
        name: String,
        #[arg(value_name = "SIZE", value_parser = parse_size_arg)]
        size: QuotaSize,
    },
    /// List the users, with their quotas.
    List,
    /// A user's S3 access keys (for the S3 gateway): add, list, del.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Make a new access key for the user and print it: the secret is shown
    /// this once only.
    Add {
        name: String,
        /// Print {"access_key": ..., "secret_key": ...} instead.
        #[arg(long)]
        json: bool,
    },
    /// The user's access key ids and when each was made (never the secrets).
    List {
        name: String,
        /// Print a JSON array of {"access_key": ..., "created": UNIX_SECS}.
        #[arg(long)]
        json: bool,
    },
    /// Remove one of the user's access keys.
    Del {
        name: String,
        #[arg(value_name = "ACCESS_KEY")]
        access: String,
    },
}

/// A quota as typed: bytes, or `None` for no quota.
#[derive(Clone, Copy, Debug)]
struct QuotaSize(Option<u64>);

fn parse_size_arg(text: &str) -> std::result::Result<QuotaSize, String> {
    ringdfs::quota::parse_quota(text).map(QuotaSize)
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
        Some(Command::User {
            action,
            server,
            config,
            users,
        }) => {
            if let Some(path) = users {
                return manage_seed(&path, action);
            }
            let configs = match (config, server) {
                (Some(path), _) => vec![ServerConfig::load(&path)?],
                (None, Some(name)) => vec![ServerConfig::load(&default_path(&format!(
                    "servers/{name}.toml"
                )))?],
                (None, None) => server_configs(&default_path("servers"))?,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            return runtime.block_on(manage_users(&configs, action));
        }
        Some(Command::Verify { name, config }) => {
            let config = ServerConfig::load(&config_path(config, name)?)?;
            return verify(&config);
        }
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
        Some(Command::Certs {
            servers,
            client,
            host,
            renew,
            out,
        }) => {
            let servers = servers.unwrap_or_else(|| default_path("servers"));
            if !host.is_empty() || !renew.is_empty() {
                let out = out.unwrap_or_else(|| PathBuf::from("bundles"));
                return make_bundles(&servers, &host, &renew, &out);
            }
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
        let http = ringdfs::http::bind(&config).await?;
        ringdfs::peer::settle_id(&mut config).await?;
        let server = Arc::new(Server::open(&config)?);
        tracing::info!(server = %config.name, data = %config.data_dir.display(), "started");
        let shutdown = CancellationToken::new();
        if let Some(listener) = http {
            ringdfs::http::start(Arc::clone(&server), &config, listener, shutdown.clone())?;
        }
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

/// The admin form of VERIFY: every chunk of one server's store, read from
/// its folder, or by the server itself while it runs (it has the store to
/// itself).
fn verify(config: &ServerConfig) -> Result<()> {
    let (checked, bad) = match ringdfs::store::Store::inspect(&config.data_dir) {
        Ok(store) => {
            let (checked, bad) = store.scrub()?;
            let bad = bad.iter().map(|(copy, e)| copy.bad_line(e)).collect();
            (checked, bad)
        }
        Err(ringdfs::error::Error::InUse(_)) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(ringdfs::peer::request_verify(config))?
        }
        Err(e) => return Err(e.into()),
    };
    for line in &bad {
        println!("{line}");
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
    let configs = server_configs(servers)?;
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
            println!(
                "{}: every server already has a certificate (`--renew NAME` reissues one)",
                dir.display()
            );
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

/// `dfs-server certs --host NAME=HOSTS --renew NAME`: on the authority's
/// machine, (re)issues those servers' certificates and writes for each a
/// bundle `OUT/NAME/` holding what its machine needs: `ca.pem`, `NAME.pem`,
/// `NAME.key` and `cluster.key`. `ca.key` never leaves this machine.
fn make_bundles(
    servers: &std::path::Path,
    hosts: &[String],
    renew: &[String],
    out: &std::path::Path,
) -> Result<()> {
    let configs = server_configs(servers)?;
    let authority = &configs[0];
    let mut wanted: Vec<tls::ServerIdentity> = Vec::new();
    for spec in hosts {
        let Some((name, list)) = spec.split_once('=') else {
            bail!("--host takes NAME=HOST[,HOST...], not {spec:?}");
        };
        let hosts: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        ringdfs::names::validate_user(name).with_context(|| format!("--host {spec}"))?;
        if hosts.is_empty() {
            bail!("--host {spec}: no host after '='");
        }
        wanted.push(tls::ServerIdentity {
            name: name.to_string(),
            hosts,
        });
    }
    for name in renew {
        if wanted.iter().any(|w| &w.name == name) {
            continue;
        }
        let Some(config) = configs.iter().find(|c| &c.name == name) else {
            bail!(
                "no server {name} in {}: give its hosts with --host {name}=HOST",
                servers.display()
            );
        };
        wanted.push(config.identity());
    }
    let dir = &authority.tls_dir;
    // The authority, if this is its first use.
    tls::ensure_certs(dir, &[])?;
    tls::renew_certs(dir, &wanted)?;
    let key = authority.cluster_key.as_ref().with_context(|| {
        format!(
            "{} names no cluster_key to put in the bundles",
            authority.name
        )
    })?;
    ringdfs::peer::ClusterKey::load_or_create(key)?;
    for id in &wanted {
        let bundle = out.join(&id.name);
        std::fs::create_dir_all(&bundle)
            .with_context(|| format!("creating {}", bundle.display()))?;
        let copy = |from: PathBuf, name: String, mode: u32| -> Result<()> {
            let bytes =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            ringdfs::atomic::write_file(
                &bundle.join(name),
                &bytes,
                mode,
                ringdfs::atomic::Existing::Replace,
            )?;
            Ok(())
        };
        copy(tls::ca_cert_path(dir), "ca.pem".into(), 0o644)?;
        copy(
            tls::cert_path(dir, &id.name),
            format!("{}.pem", id.name),
            0o644,
        )?;
        copy(
            tls::key_path(dir, &id.name),
            format!("{}.key", id.name),
            0o600,
        )?;
        copy(key.clone(), "cluster.key".into(), 0o600)?;
        println!(
            "{}: certificate for {}; its bundle is {}/ (copy ca.pem, {0}.pem and {0}.key into \
             its tls_dir, cluster.key to its cluster_key)",
            id.name,
            id.hosts.join(", "),
            bundle.display()
        );
    }
    Ok(())
}

/// Every server configuration (`*.toml`) in `servers`, by name.
fn server_configs(servers: &std::path::Path) -> Result<Vec<ServerConfig>> {
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
    Ok(configs)
}

/// How long `dfs-server user` waits for a server to answer.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `dfs-server user` on the cluster: through the first of `configs` whose
/// server answers (it sends the change on to the others). When none is
/// running, the change goes into the data folder of each that has stored
/// something (they spread it when they start); when none has, into the
/// seed file, `users.toml`.
async fn manage_users(configs: &[ServerConfig], action: UserAction) -> Result<()> {
    let change = match &action {
        UserAction::Add { name } => {
            ringdfs::names::validate_user(name)?;
            UserChange::Add {
                name: name.clone(),
                phc: hash_new_password(name)?,
            }
        }
        UserAction::Passwd { name } => UserChange::Passwd {
            name: name.clone(),
            phc: hash_new_password(name)?,
        },
        UserAction::Del { name } => UserChange::Del { name: name.clone() },
        UserAction::Quota { name, size } => UserChange::Quota {
            name: name.clone(),
            bytes: size.0,
        },
        UserAction::List => return list_users(configs).await,
        UserAction::Key {
            action: KeyAction::Add { name, .. },
        } => {
            ringdfs::names::validate_user(name)?;
            let (access, secret) = accounts::new_s3_key();
            UserChange::KeyAdd {
                name: name.clone(),
                access,
                secret,
            }
        }
        UserAction::Key {
            action: KeyAction::Del { name, access },
        } => UserChange::KeyDel {
            name: name.clone(),
            access: access.clone(),
        },
        UserAction::Key {
            action: KeyAction::List { name, json },
        } => return list_keys(configs, name, *json).await,
    };
    let mut unanswered = Vec::new();
    for config in configs {
        match accounts::change_on_server(config, change.clone(), ADMIN_TIMEOUT).await {
            Ok(record) => {
                report(
                    &action,
                    &change,
                    &format!("on {}; every server has it within seconds", config.name),
                );
                debug_assert_eq!(record.name, change.name());
                return Ok(());
            }
            // The server answered: its refusal is the answer.
            Err(e @ ringdfs::Error::Remote { .. }) => return Err(e.into()),
            Err(e) => unanswered.push(format!("{}: {e}", config.name)),
        }
    }
    let stored: Vec<&ServerConfig> = configs.iter().filter(|c| has_store(c)).collect();
    if stored.is_empty() {
        let seed = &configs[0].users;
        manage_seed(seed, action)?;
        println!(
            "(no server has started yet: {} seeds the cluster)",
            seed.display()
        );
        return Ok(());
    }
    let mut made = Vec::new();
    for config in stored {
        let (config, change) = (config.clone(), change.clone());
        let name = config.name.clone();
        tokio::task::spawn_blocking(move || accounts::change_offline(&config, change))
            .await?
            .with_context(|| {
                format!(
                    "no server answered ({}), and {name}'s data folder",
                    unanswered.join("; ")
                )
            })?;
        made.push(name);
    }
    report(
        &action,
        &change,
        &format!(
            "in the data folders of {} (no server is running; the others learn it from them)",
            made.join(", ")
        ),
    );
    Ok(())
}

/// Prints what a change did (`place`: where it was made). A new S3 key goes
/// to standard output alone, so a script can take it (as JSON with
/// `--json`); the report of where goes to standard error.
fn report(action: &UserAction, change: &UserChange, place: &str) {
    let UserChange::KeyAdd { access, secret, .. } = change else {
        println!("{} {place}", done(change));
        return;
    };
    eprintln!("{} {place}", done(change));
    let json = matches!(
        action,
        UserAction::Key {
            action: KeyAction::Add { json: true, .. }
        }
    );
    if json {
        println!(
            "{{\"access_key\": {}, \"secret_key\": {}}}",
            serde_json::Value::from(access.as_str()),
            serde_json::Value::from(secret.as_str())
        );
    } else {
        println!("access key: {access}");
        println!("secret key: {secret}");
        println!("(the secret key is not shown again: keep it now; `user key add` makes another)");
    }
}

/// What a change did, for its report.
fn done(change: &UserChange) -> String {
    match change {
        UserChange::Add { name, .. } => format!("added {name}"),
        UserChange::Passwd { name, .. } => format!("changed the password of {name}"),
        UserChange::Del { name } => format!("removed {name}"),
        UserChange::Quota {
            name,
            bytes: Some(bytes),
        } => format!(
            "set the quota of {name} to {}",
            ringdfs::quota::size_text(*bytes)
        ),
        UserChange::Quota { name, bytes: None } => format!("removed the quota of {name}"),
        UserChange::Share {
            name,
            path,
            with,
            access,
        } => match access {
            Some(access) => format!("{name} shares {path} with {with} ({})", access.as_str()),
            None => format!("{name} no longer shares {path} with {with}"),
        },
        UserChange::KeyAdd { name, access, .. } => {
            format!("added access key {access} for {name}")
        }
        UserChange::KeyDel { name, access } => {
            format!("removed access key {access} of {name}")
        }
    }
}

fn has_store(config: &ServerConfig) -> bool {
    config.data_dir.join(ringdfs::store::DB_FILE).exists()
}

/// `dfs-server user list`: the users a running server knows (or, with none
/// running, a data folder, or the seed).
async fn list_users(configs: &[ServerConfig]) -> Result<()> {
    let Some(records) = fetch_records(configs).await? else {
        return manage_seed(&configs[0].users, UserAction::List);
    };
    for r in records.iter().filter(|r| r.account.is_some()) {
        let when = if r.changed.millis == 0 {
            "from the seed (users.toml)".to_string()
        } else {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.changed.millis);
            format!(
                "changed {} on {}",
                humantime::format_rfc3339_seconds(t),
                r.changed.server
            )
        };
        let quota = match r.account.as_ref().and_then(|a| a.quota) {
            Some(bytes) => format!("quota {}", ringdfs::quota::size_text(bytes)),
            None => "no quota".to_string(),
        };
        println!("{:<24} {quota:<16} {when}", r.name);
    }
    Ok(())
}

/// The user records of the first of `configs` whose server answers, or with
/// none running, of the first data folder; `None` when no server has
/// started yet.
async fn fetch_records(configs: &[ServerConfig]) -> Result<Option<Vec<accounts::UserRecord>>> {
    for config in configs {
        if let Ok(records) = accounts::records_on_server(config, ADMIN_TIMEOUT).await {
            return Ok(Some(records));
        }
    }
    let Some(config) = configs.iter().find(|c| has_store(c)).cloned() else {
        return Ok(None);
    };
    let records = tokio::task::spawn_blocking(move || accounts::records_offline(&config)).await??;
    Ok(Some(records))
}

/// `dfs-server user key list USER`: the user's access key ids and when each
/// was made, never the secrets.
async fn list_keys(configs: &[ServerConfig], name: &str, json: bool) -> Result<()> {
    let Some(records) = fetch_records(configs).await? else {
        return manage_seed(
            &configs[0].users,
            UserAction::Key {
                action: KeyAction::List {
                    name: name.to_string(),
                    json,
                },
            },
        );
    };
    let Some(account) = records
        .into_iter()
        .find(|r| r.name == name)
        .and_then(|r| r.account)
    else {
        bail!("no user {name}");
    };
    let keys = account.key_ids();
    if json {
        let list: Vec<serde_json::Value> = keys
            .iter()
            .map(|(access, created)| serde_json::json!({"access_key": access, "created": created}))
            .collect();
        println!("{}", serde_json::Value::from(list));
        return Ok(());
    }
    if keys.is_empty() {
        println!("{name} has no access keys (`dfs-server user key add {name}` makes one)");
    }
    for (access, created) in keys {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(created);
        println!("{access}  made {}", humantime::format_rfc3339_seconds(t));
    }
    Ok(())
}

/// `dfs-server user ... --users FILE`: edits the seed file.
fn manage_seed(path: &std::path::Path, action: UserAction) -> Result<()> {
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
            println!("changed the password of {name} in {}", path.display());
        }
        UserAction::Del { name } => {
            if !users.remove(&name) {
                bail!("no user {name} in {}", path.display());
            }
            users.save(path)?;
            println!("removed {name} from {}", path.display());
        }
        UserAction::Quota { .. } => {
            bail!(
                "a quota is kept by the cluster, not in the seed file {}: set it once the servers have started",
                path.display()
            );
        }
        UserAction::Key { .. } => {
            bail!(
                "S3 access keys are kept by the cluster, not in the seed file {}: add them once the servers have started",
                path.display()
            );
        }
        UserAction::List => {
            for name in users.names() {
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// The new password, hashed (argon2id) here: no server ever sees it.
fn hash_new_password(name: &str) -> Result<String> {
    let password = new_password(name)?;
    let hash = ringdfs::auth::hash_password(&password, &argon2::Params::default())?;
    Ok(hash.to_string())
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
