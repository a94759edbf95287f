//! `dfs`: the ringdfs client.
//!
//! `dfs` opens a prompt (see `ringdfs::repl`); `dfs put|get|list|ls|delete|mv|cp|du|df|share|where|status|...`
//! runs one command for scripts (exit status 0 on success, 1 with a one-line reason otherwise);
//! commands piped in run in order, `cd` moving the current folder for the
//! ones after it; `dfs local` starts the four servers of `servers/` in this
//! process first.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ringdfs::cli::{self, eprint_line, print_line, Command, Style};
use ringdfs::client::{no_progress, one_command, Client};
use ringdfs::config::{client_config_path, default_path, ClientConfig, ServerConfig};
use ringdfs::repl::{Bar, Repl};
use ringdfs::server::RunningServer;
use ringdfs::tls;
use ringdfs::Error;
use tokio::runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "dfs",
    version,
    about = "The ringdfs client: store files on the ring"
)]
struct Args {
    /// Client configuration file [default: ./client/config.toml, else
    /// ~/.config/ringdfs/config.toml].
    #[arg(long, global = true, env = "DFS_CONFIG")]
    config: Option<PathBuf>,
    /// User to log in as (asked for when not given).
    #[arg(long, short, global = true, env = "DFS_USER")]
    user: Option<String>,
    /// Print the result of a one-shot command as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Run the commands of FILE (`-`: standard input) as sftp's batch mode
    /// does: each echoed, stopping at the first that fails unless its line
    /// starts with `-`.
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    batch: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Store a local file (as REMOTE, default its file name).
    Put {
        local: PathBuf,
        remote: Option<String>,
        /// Continue an interrupted put of the same file, reusing only what
        /// the servers kept and checksums confirm.
        #[arg(short = 'c', long = "continue")]
        resume: bool,
    },
    /// Fetch a file (to LOCAL, default the download folder).
    Get {
        remote: String,
        local: Option<PathBuf>,
        /// Continue an interrupted get of the same file, reusing only what
        /// checksums confirm.
        #[arg(short = 'c', long = "continue")]
        resume: bool,
    },
    /// List a folder's files and sub-folders in full: size, chunks, when
    /// stored, health (the top by default).
    List {
        /// The folder, e.g. `docs` or `docs/2026`.
        folder: Option<String>,
        /// Every file under the folder, at any depth.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// The long form (what LIST shows anyway).
        #[arg(short = 'l', long, hide = true)]
        long: bool,
    },
    /// The names in a folder, one a line (folders end with `/`).
    Ls {
        /// The folder, e.g. `docs` or `docs/2026` (the top by default).
        folder: Option<String>,
        /// Every file under the folder, at any depth.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// In full, as LIST shows them.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// The current folder (a one-shot command starts at the top: `/`).
    Pwd,
    /// Delete a file from every server.
    #[command(alias = "rm")]
    Delete { remote: String },
    /// Make an empty folder.
    Mkdir { folder: String },
    /// Remove an empty folder.
    Rmdir { folder: String },
    /// Rename or move a file or folder (into NEW if it is a folder); no data moves.
    #[command(alias = "move")]
    Mv { old: String, new: String },
    /// Copy a file or folder on the servers (the copy shares the data).
    #[command(alias = "copy")]
    Cp { source: String, copy: String },
    /// Show which servers hold each chunk of a file.
    Where { remote: String },
    /// Check every copy of a file (or of all your files); exit status 1 if
    /// any copy is corrupt or any chunk lost.
    Verify { remote: Option<String> },
    /// Show the ring and each server's state.
    Status,
    /// Show the files and bytes under a folder, or of a file (default: all yours).
    Du { path: Option<String> },
    /// Show what you use, your quota, and the cluster's free space.
    Df,
    /// Let USER read (default) or also write a file or folder of yours;
    /// they see it under /shared/YOU.
    Share {
        path: String,
        /// Who to share with (a user name).
        #[arg(value_name = "USER")]
        recipient: String,
        #[arg(value_parser = ["read", "write"], default_value = "read")]
        access: String,
    },
    /// Stop sharing a file or folder with USER.
    Unshare {
        path: String,
        #[arg(value_name = "USER")]
        recipient: String,
    },
    /// Show what you share, and what others share with you (under /shared).
    Shares,
    /// Start the four servers of servers/ in this process, then the prompt.
    Local {
        /// Folder holding dfs1.toml .. dfs4.toml [default: servers].
        #[arg(long)]
        servers: Option<PathBuf>,
    },
}

fn main() {
    ringdfs::memory::limit_retained_memory();
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprint_line(&format!("dfs: {e:#}"));
            1
        }
    };
    std::process::exit(code);
}

fn real_main() -> Result<i32> {
    let args = ringdfs::cli::parse_args::<Args>();
    let local_mode = matches!(args.command, Some(Sub::Local { .. }));
    install_logging(local_mode)?;
    let runtime = Runtime::new().context("starting the runtime")?;

    let config_path = match args.config.clone().or_else(client_config_path) {
        Some(path) => path,
        None => bail!(
            "no client configuration: give --config FILE (or DFS_CONFIG), or put one at \
             ./client/config.toml or ~/.config/ringdfs/config.toml"
        ),
    };
    let mut servers = Vec::new();
    if let Some(Sub::Local { servers: dir }) = &args.command {
        let dir = dir.clone().unwrap_or_else(|| default_path("servers"));
        servers = runtime.block_on(start_local(&dir, &config_path))?;
        print_line(&format!(
            "started {} servers ({}); their logs go to data/dfs-local.log",
            servers.len(),
            servers
                .iter()
                .map(|s| format!("{} on {}", s.name, s.addr))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let config = ClientConfig::load(&config_path)?;
    let interactive = std::io::stdin().is_terminal();

    let one_shot = match args.command {
        // `~` as the prompt takes it, for a name the shell left alone ('~/x').
        Some(Sub::Put {
            local,
            remote,
            resume,
        }) => Some(Command::Put {
            local: tilde(local),
            remote,
            resume,
        }),
        Some(Sub::Get {
            remote,
            local,
            resume,
        }) => Some(Command::Get {
            remote,
            local: local.map(tilde),
            resume,
        }),
        Some(Sub::List {
            folder, recursive, ..
        }) => Some(Command::List {
            folder: folder.unwrap_or_default(),
            recursive,
            long: true,
        }),
        Some(Sub::Ls {
            folder,
            recursive,
            long,
        }) => Some(Command::List {
            folder: folder.unwrap_or_default(),
            recursive,
            long,
        }),
        Some(Sub::Pwd) => Some(Command::Pwd),
        Some(Sub::Delete { remote }) => Some(Command::Delete { remote }),
        Some(Sub::Where { remote }) => Some(Command::Where { remote }),
        Some(Sub::Mkdir { folder }) => Some(Command::Folder {
            path: folder,
            make: true,
        }),
        Some(Sub::Rmdir { folder }) => Some(Command::Folder {
            path: folder,
            make: false,
        }),
        Some(Sub::Mv { old, new }) => Some(Command::Relink {
            from: old,
            to: new,
            keep: false,
        }),
        Some(Sub::Cp { source, copy }) => Some(Command::Relink {
            from: source,
            to: copy,
            keep: true,
        }),
        Some(Sub::Verify { remote }) => Some(Command::Verify { remote }),
        Some(Sub::Status) => Some(Command::Status),
        Some(Sub::Du { path }) => Some(Command::Du {
            path: path.unwrap_or_default(),
        }),
        Some(Sub::Df) => Some(Command::Df),
        Some(Sub::Share {
            path,
            recipient,
            access,
        }) => Some(Command::Share {
            path,
            user: recipient,
            access: Some(ringdfs::sharing::Access::parse(&access)?),
        }),
        Some(Sub::Unshare { path, recipient }) => Some(Command::Share {
            path,
            user: recipient,
            access: None,
        }),
        Some(Sub::Shares) => Some(Command::Shares),
        Some(Sub::Local { .. }) | None => None,
    };
    let code = match one_shot {
        Some(command) => {
            let bar = Bar::new(!args.json && std::io::stderr().is_terminal());
            // The login and the command are one command: a server that
            // timed out logging in is not waited for again.
            let outcome = runtime.block_on(one_command(async {
                let client = login(&config, args.user.clone(), interactive).await?;
                let outcome = cli::run(&client, &command, "", &config.download_dir, &bar).await;
                anyhow::Ok(outcome?)
            }));
            bar.finish();
            let outcome = outcome?;
            if args.json {
                print_line(&format!("{:#}", outcome.json()));
            } else {
                print_text(&outcome.text(Style::detect()));
            }
            i32::from(outcome.failed())
        }
        None if args.batch.is_some() => {
            let path = args.batch.as_deref().expect("checked");
            let lines: Vec<String> = if path == Path::new("-") {
                std::io::stdin()
                    .lock()
                    .lines()
                    .collect::<std::io::Result<_>>()
            } else {
                std::fs::read_to_string(path).map(|t| t.lines().map(str::to_string).collect())
            }
            .with_context(|| format!("reading the batch file {}", path.display()))?;
            // Asked for no password at a terminal: a batch runs unattended.
            let client = runtime.block_on(login(&config, args.user.clone(), false))?;
            batch(&runtime, &client, &config, args.json, &lines)
        }
        None => {
            let client = runtime.block_on(login(&config, args.user.clone(), interactive))?;
            if interactive {
                Repl::new(&runtime, Arc::new(client), &config.download_dir).run()?;
                0
            } else {
                script(&runtime, &client, &config, args.json)
            }
        }
    };
    for server in servers {
        runtime.block_on(server.stop());
    }
    Ok(code)
}

/// Logs go to stderr at `warn` (RUST_LOG overrides), so the prompt stays
/// clean; with `dfs local`, the in-process servers' logs go to a file instead.
fn install_logging(local_mode: bool) -> Result<()> {
    let filter = |default: &str| {
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into())
    };
    if local_mode {
        let path = default_path("data").join("dfs-local.log");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        tracing_subscriber::fmt()
            .with_env_filter(filter("info"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
    } else {
        // Outages the client works around (a server down, a copy read from
        // its other holder) are debug events: the prompt, receipts and
        // STATUS already say so. Only the unexpected reaches `warn`.
        tracing_subscriber::fmt()
            .with_env_filter(filter("warn"))
            .with_ansi(cli::colour_on_stderr())
            .with_writer(std::io::stderr)
            .init();
    }
    Ok(())
}

/// Starts dfs1..dfs4 from `dir` on their configured addresses, creating the
/// cluster's certificates first if they are missing and making the client
/// (configured in `client_config`) trust their authority.
async fn start_local(dir: &Path, client_config: &Path) -> Result<Vec<RunningServer>> {
    let mut configs = Vec::new();
    for i in 1..=4 {
        configs.push(ServerConfig::load(&dir.join(format!("dfs{i}.toml")))?);
    }
    for config in &configs {
        tls::ensure_certs(&config.tls_dir, &[config.identity()])?;
    }
    let client = ClientConfig::load(client_config)?;
    tls::install_ca(&configs[0].tls_dir, &client.ca)?;
    let mut servers = Vec::new();
    for config in configs {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another ringdfs already running?)",
                    config.listen
                )
            })?;
        servers.push(RunningServer::start(&config, listener)?);
    }
    Ok(servers)
}

/// Logs in with the user from `--user`/DFS_USER or a prompt, and the password
/// from DFS_PASSWORD or a prompt without echo. A person gets three tries.
async fn login(config: &ClientConfig, user: Option<String>, interactive: bool) -> Result<Client> {
    let env_password = std::env::var("DFS_PASSWORD").ok();
    let tries = if interactive && env_password.is_none() {
        3
    } else {
        1
    };
    for attempt in 1..=tries {
        let user = match &user {
            Some(u) => u.clone(),
            None if interactive => ask("user: ")?,
            None => bail!("no user given: pass --user NAME or set DFS_USER"),
        };
        let password = match &env_password {
            Some(p) => p.clone(),
            None if interactive => {
                rpassword::prompt_password("password: ").context("reading the password")?
            }
            None => bail!("no password given: set DFS_PASSWORD"),
        };
        match Client::login(config, &user, &password).await {
            Ok(client) => return Ok(client),
            Err(Error::Unauthorized) if attempt < tries => {
                eprint_line("login failed: unknown user or wrong password");
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last try returns")
}

fn ask(question: &str) -> Result<String> {
    use std::io::Write;
    let mut out = std::io::stdout();
    if let Err(e) = write!(out, "{question}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            cli::die_of_sigpipe();
        }
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading from the terminal")?;
    Ok(line.trim().to_string())
}

/// `~` at the start of a local path as the home folder (see
/// `cli::local_path`); a path that is not UTF-8 as it is.
fn tilde(path: PathBuf) -> PathBuf {
    match path.to_str() {
        Some(typed) => cli::local_path(typed),
        None => path,
    }
}

/// Prints `text` and a newline, unless there is no text (`cd`, `ls` of an
/// empty folder).
fn print_text(text: &str) {
    if !text.is_empty() {
        print_line(text);
    }
}

/// Commands from standard input, one per line, from the top folder on (`cd`
/// moves it for the commands after it); with `json`, what each prints is
/// one line of JSON. Status 1 if any failed.
fn script(runtime: &Runtime, client: &Client, config: &ClientConfig, json: bool) -> i32 {
    let mut failed = false;
    let mut cwd = String::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            eprint_line("error: standard input is not text");
            return 1;
        };
        match execute(runtime, client, config, &mut cwd, json, &line) {
            Step::Exit => break,
            Step::Failed => failed = true,
            Step::Done => {}
        }
    }
    i32::from(failed)
}

/// `-b FILE`: sftp's batch rules. Each command is echoed (`dfs> LINE`, not
/// with `--json`) and run from the top folder on; the first that fails
/// ends the batch with status 1, unless its line starts with `-` (then its
/// failure is reported and ignored). Blank lines and `#` comments are
/// skipped.
fn batch(
    runtime: &Runtime,
    client: &Client,
    config: &ClientConfig,
    json: bool,
    lines: &[String],
) -> i32 {
    let mut cwd = String::new();
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (may_fail, command) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        if !json {
            print_line(&format!("dfs> {command}"));
        }
        match execute(runtime, client, config, &mut cwd, json, command) {
            Step::Exit => return 0,
            Step::Failed if !may_fail => return 1,
            Step::Failed | Step::Done => {}
        }
    }
    0
}

enum Step {
    Done,
    Failed,
    Exit,
}

fn execute(
    runtime: &Runtime,
    client: &Client,
    config: &ClientConfig,
    cwd: &mut String,
    json: bool,
    line: &str,
) -> Step {
    let command = match cli::parse_line(line) {
        Ok(None) => return Step::Done,
        Ok(Some(Command::Exit)) => return Step::Exit,
        Ok(Some(command)) => command,
        Err(msg) => {
            eprint_line(&format!("error: {msg}"));
            return Step::Failed;
        }
    };
    match runtime.block_on(cli::run(
        client,
        &command,
        cwd,
        &config.download_dir,
        &no_progress,
    )) {
        Ok(outcome) => {
            match &outcome {
                cli::Outcome::Cd { cwd: to } => *cwd = to.clone(),
                _ if json => print_line(&outcome.json().to_string()),
                _ => print_text(&outcome.text(Style::PLAIN)),
            }
            if outcome.failed() {
                Step::Failed
            } else {
                Step::Done
            }
        }
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            Step::Failed
        }
    }
}
