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

/// The options of `put` and `get`, as sftp has them.
#[derive(clap::Args)]
struct TransferFlags {
    /// A whole folder, all under it (many files at once; resumes).
    #[arg(short = 'r', short_alias = 'R', long)]
    recursive: bool,
    /// Continue an interrupted transfer, reusing what verifies.
    #[arg(short = 'c', long = "continue")]
    resume: bool,
    /// Keep modification times (and modes on GET).
    #[arg(short = 'p', long = "preserve")]
    keep_times: bool,
}

impl TransferFlags {
    fn flags(&self) -> cli::Flags {
        cli::Flags {
            recursive: self.recursive,
            resume: self.resume,
            keep_times: self.keep_times,
        }
    }
}

/// A name given to a one-shot command: the shell has unquoted it already,
/// so its wildcards are wildcards (`\*` is a literal `*`).
fn bare(text: &str) -> (String, bool) {
    let word = ringdfs::glob::Word::bare(text);
    let wild = word.pattern.is_some();
    (word.pattern.unwrap_or(word.text), wild)
}

/// The one-shot commands. Their text, aliases and examples are those of
/// `cli::VERBS` (see `command_line`); only `local` is not a prompt command.
#[derive(Subcommand)]
enum Sub {
    Put {
        #[command(flatten)]
        flags: TransferFlags,
        local: PathBuf,
        remote: Option<String>,
    },
    Get {
        #[command(flatten)]
        flags: TransferFlags,
        remote: String,
        local: Option<PathBuf>,
    },
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
    Pwd,
    Delete {
        remote: String,
    },
    Mkdir {
        folder: String,
    },
    Rmdir {
        folder: String,
    },
    Mv {
        old: String,
        new: String,
    },
    Cp {
        source: String,
        copy: String,
    },
    Where {
        remote: String,
    },
    Verify {
        remote: Option<String>,
    },
    Status,
    Du {
        path: Option<String>,
    },
    Df,
    Share {
        path: String,
        /// Who to share with (a user name).
        #[arg(value_name = "USER")]
        recipient: String,
        #[arg(value_parser = ["read", "write"], default_value = "read")]
        access: String,
    },
    Unshare {
        path: String,
        #[arg(value_name = "USER")]
        recipient: String,
    },
    Shares,
    /// Your files as the folder DIR (FUSE; needs fusermount3, from the
    /// fuse3 package), until Ctrl-C or `fusermount3 -u DIR`.
    Mount {
        dir: PathBuf,
    },
    /// Start the four servers of servers/ in this process, then the prompt.
    Local {
        /// Folder holding dfs1.toml .. dfs4.toml [default: servers].
        #[arg(long)]
        servers: Option<PathBuf>,
    },
}

/// `Args` as clap parses it, each subcommand's text, aliases and example
/// taken from `cli::VERBS`: the prompt's HELP, `CMD --help` there, and
/// `dfs CMD --help` say the same.
fn command_line() -> clap::Command {
    let mut command = <Args as clap::CommandFactory>::command();
    for verb in cli::VERBS {
        if command.find_subcommand(verb.name).is_some() {
            command = command.mut_subcommand(verb.name, |sub| {
                sub.about(verb.about)
                    .visible_aliases(verb.aliases.iter().copied())
                    .after_help(format!("Example: dfs {}", verb.example))
            });
        }
    }
    command
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
    let args: Args = ringdfs::cli::parse_args_of(command_line());
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
        let urls: Vec<String> = servers
            .iter()
            .filter_map(|s| s.http_addr.map(|a| format!("https://{a}/")))
            .collect();
        if !urls.is_empty() {
            print_line(&format!(
                "the web page, S3, curl (/files/) and /health at {} (CA: {})",
                urls.join(", "),
                ClientConfig::load(&config_path)?.ca.display()
            ));
        }
    }

    let config = ClientConfig::load(&config_path)?;
    let interactive = std::io::stdin().is_terminal();

    let one_shot = match args.command {
        // `~` as the prompt takes it, for a name the shell left alone ('~/x').
        Some(Sub::Put {
            flags,
            local,
            remote,
        }) => {
            // A name that is not UTF-8 is no pattern.
            let (local, wild) = match local.to_str() {
                Some(typed) => {
                    let (pattern, wild) = bare(typed);
                    (cli::local_path(&pattern), wild)
                }
                None => (local, false),
            };
            Some(Command::Put {
                local,
                remote,
                flags: flags.flags(),
                wild,
            })
        }
        Some(Sub::Get {
            flags,
            remote,
            local,
        }) => {
            let (remote, wild) = bare(&remote);
            Some(Command::Get {
                remote,
                local: local.map(tilde),
                flags: flags.flags(),
                wild,
            })
        }
        Some(Sub::List {
            folder, recursive, ..
        }) => {
            let (folder, wild) = bare(&folder.unwrap_or_default());
            Some(Command::List {
                folder,
                recursive,
                long: true,
                wild,
            })
        }
        Some(Sub::Ls {
            folder,
            recursive,
            long,
        }) => {
            let (folder, wild) = bare(&folder.unwrap_or_default());
            Some(Command::List {
                folder,
                recursive,
                long,
                wild,
            })
        }
        Some(Sub::Pwd) => Some(Command::Pwd),
        Some(Sub::Delete { remote }) => {
            let (remote, wild) = bare(&remote);
            Some(Command::Delete { remote, wild })
        }
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
        Some(Sub::Mount { dir }) => {
            ringdfs::mount::check_folder(&dir)?;
            let client = runtime.block_on(login(&config, args.user.clone(), interactive))?;
            let stop = async {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            let user = client.user().to_string();
            let said = || {
                print_line(&format!(
                    "{user}'s files are at {0}; Ctrl-C or `fusermount3 -u {0}` unmounts",
                    dir.display()
                ))
            };
            ringdfs::mount::run(Arc::new(client), runtime.handle().clone(), &dir, stop, said)?;
            return Ok(0);
        }
        Some(Sub::Local { .. }) | None => None,
    };
    // `put - NAME` and `get NAME -`: standard input and output, through a
    // temp file (kept here until the command is done).
    let (one_shot, _spooled, to_stdout) = match one_shot {
        Some(command) => {
            let (command, spooled, to_stdout) = pipe_ends(command)?;
            (Some(command), spooled, to_stdout)
        }
        None => (None, None, None),
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
            if let Some((_dir, path)) = &to_stdout {
                copy_to_stdout(path)?;
            } else if args.json {
                print_line(&format!("{:#}", outcome.json()));
            } else {
                print_text(&outcome.text(Style::detect()));
            }
            i32::from(outcome.failed())
        }
        None if args.batch.is_some() => {
            let path = args.batch.as_deref().expect("checked");
            let file: Option<Vec<String>> = if path == Path::new("-") {
                None
            } else {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the batch file {}", path.display()))?;
                Some(text.lines().map(str::to_string).collect())
            };
            // Asked for no password at a terminal: a batch runs unattended.
            let client = runtime.block_on(login(&config, args.user.clone(), false))?;
            match file {
                Some(lines) => batch(
                    &runtime,
                    &client,
                    &config,
                    args.json,
                    lines.into_iter().map(Ok),
                ),
                None => batch(
                    &runtime,
                    &client,
                    &config,
                    args.json,
                    std::io::stdin().lock().lines(),
                ),
            }
        }
        None => {
            let client = runtime.block_on(login(&config, args.user.clone(), interactive))?;
            if interactive {
                Repl::new(&runtime, Arc::new(client), &config.download_dir).run()?;
                0
            } else {
                batch(
                    &runtime,
                    &client,
                    &config,
                    args.json,
                    std::io::stdin().lock().lines(),
                )
            }
        }
    };
    for server in servers {
        runtime.block_on(server.stop());
    }
    Ok(code)
}

/// A one-shot `put - NAME` or `get NAME -` made into a PUT of a temp file
/// holding standard input, or a GET into a temp folder whose file then goes
/// to standard output; any other command as it is. Returns the command, the
/// spooled input (open while the PUT reads it) and the GET's temp folder
/// and file.
#[allow(clippy::type_complexity)]
fn pipe_ends(
    command: Command,
) -> Result<(
    Command,
    Option<std::fs::File>,
    Option<(tempfile::TempDir, PathBuf)>,
)> {
    let dash = |p: &Path| p == Path::new("-");
    match command {
        Command::Put {
            local,
            remote,
            flags,
            wild: _,
        } if dash(&local) => {
            let Some(remote) = remote else {
                bail!("put - needs the remote name: dfs put - NAME");
            };
            if flags.recursive || flags.resume {
                bail!("put - stores one stream: no -r or -c");
            }
            let (file, path) = spool_stdin()?;
            let command = Command::Put {
                local: path,
                remote: Some(remote),
                flags,
                wild: false,
            };
            Ok((command, Some(file), None))
        }
        Command::Get {
            remote,
            local: Some(local),
            flags,
            wild,
        } if dash(&local) => {
            if flags.recursive || flags.resume || wild {
                bail!("get NAME - writes one file: no -r, -c or pattern");
            }
            let dir = tempfile::tempdir().context("making a temp folder for the file")?;
            let path = dir.path().join("file");
            let command = Command::Get {
                remote,
                local: Some(path.clone()),
                flags,
                wild,
            };
            Ok((command, None, Some((dir, path))))
        }
        other => Ok((other, None, None)),
    }
}

/// `dfs put - NAME`: standard input, copied into a temp file that has no
/// name (it goes when `dfs` ends, however it ends), so that its size is
/// known before it is cut into chunks; memory holds one buffer. The path
/// opens that file.
fn spool_stdin() -> Result<(std::fs::File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let mut file = tempfile::tempfile().context("making a temp file for standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading standard input")?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok((file, path))
}

/// `dfs get NAME -`: the file, fetched and verified whole (so what reaches
/// standard output has been checked), copied out. A reader that stops early
/// ends `dfs` by SIGPIPE, as it ends `cat`.
fn copy_to_stdout(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::open(path).context("reading the fetched file")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    match std::io::copy(&mut file, &mut out).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => cli::die_of_sigpipe(),
        done => done.map(drop).context("writing to standard output"),
    }
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
        let http = ringdfs::http::bind(&config).await?;
        servers.push(RunningServer::start_with_http(&config, listener, http)?);
    }
    // The prompt comes once they have found each other (a PUT at once would
    // otherwise store copies on a server the others do not count yet); a
    // ring that has not formed within the bound is the prompt's to show.
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let until = std::time::Instant::now() + LOCAL_RING_WAIT;
    while std::time::Instant::now() < until && !servers.iter().all(|s| s.sees_ring_of(&names)) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(servers)
}

/// How long `dfs local` waits for its servers to form one ring.
const LOCAL_RING_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

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

/// Commands from a batch file (`-b FILE`) or standard input, one per line,
/// read as they come, with sftp's batch rules. Each command is echoed
/// (`dfs> LINE`, not with `--json`, where what each prints is one line of
/// JSON) and run from the top folder on (`cd` moves it for the commands
/// after it); the first that fails ends the batch with status 1, unless its
/// line starts with `-` (then its failure is reported and ignored). Blank
/// lines and `#` comments are skipped.
fn batch(
    runtime: &Runtime,
    client: &Client,
    config: &ClientConfig,
    json: bool,
    lines: impl Iterator<Item = std::io::Result<String>>,
) -> i32 {
    let mut cwd = String::new();
    for line in lines {
        let Ok(line) = line else {
            eprint_line("error: the commands are not text");
            return 1;
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Commands only the prompt and batches run: each works on state a
    /// one-shot run does not keep (the current folders) or ends the session.
    const PROMPT_ONLY: [&str; 6] = ["cd", "lcd", "lls", "lpwd", "help", "exit"];

    /// One vocabulary: every subcommand but `local` and `mount` (which
    /// run until stopped) is a command of the prompt, with the same aliases, and every command of the prompt that
    /// makes sense once is a subcommand.
    #[test]
    fn the_subcommands_are_the_prompts_commands() {
        let command = command_line();
        command.clone().debug_assert();
        let mut checked = 0;
        for sub in command
            .get_subcommands()
            .filter(|s| !matches!(s.get_name(), "local" | "mount"))
        {
            let verb = cli::VERBS
                .iter()
                .find(|v| v.name == sub.get_name())
                .unwrap_or_else(|| panic!("dfs {} is not in cli::VERBS", sub.get_name()));
            let aliases: Vec<&str> = sub.get_all_aliases().collect();
            assert_eq!(aliases, verb.aliases, "the aliases of {}", verb.name);
            checked += 1;
        }
        for verb in cli::VERBS {
            let one_shot = command.find_subcommand(verb.name).is_some();
            assert_eq!(
                one_shot,
                !PROMPT_ONLY.contains(&verb.name),
                "{}: a subcommand exactly when it makes sense once",
                verb.name
            );
        }
        assert_eq!(checked, cli::VERBS.len() - PROMPT_ONLY.len());
    }
}
