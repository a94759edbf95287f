//! The `dfs` command language, shared by one-shot commands and the prompt:
//! parsing a line into a [`Command`], resolving its remote names against the
//! current folder ([`resolve`]), running it against a [`Client`] into an
//! [`Outcome`], and rendering that as text (tables, sizes, receipts; coloured
//! on a terminal) or as JSON for scripts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crossterm::style::{Color, Stylize};
use serde_json::{json, Value};

use crate::bulk::Summary;
use crate::client::{
    one_command, Client, DeleteReceipt, DirItem, GetReceipt, Health, Location, Progress,
    PutReceipt, RelinkReceipt, ServerReport, Transfer, UsageInfo, VerifyReport,
};
use crate::error::{Error, Result};
use crate::glob::Word;
use crate::sharing::{Access, Share};
use crate::standing::Standing;

/// One thing a user asks for. Remote names are as typed (relative to the
/// current folder unless they start with `/`) until [`Command::resolved`]
/// makes them whole paths as the servers name them. A name that is a
/// pattern (`wild`, see [`crate::glob`]) keeps its wildcards, and its
/// quoted ones escaped with `\`; it is matched when the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `put [-r] [-c] [-p] LOCAL [REMOTE]`; with `-r` or a pattern, many
    /// files (see [`crate::bulk`]).
    Put {
        local: PathBuf,
        remote: Option<String>,
        flags: Flags,
        wild: bool,
    },
    Get {
        remote: String,
        local: Option<PathBuf>,
        flags: Flags,
        wild: bool,
    },
    /// A folder's files and sub-folders (`""`: the current folder; once
    /// resolved, the top), or with `recursive` every file under it; `long`:
    /// in full (LIST, `ls -l`), else names only (`ls`).
    List {
        folder: String,
        recursive: bool,
        long: bool,
        wild: bool,
    },
    Delete {
        remote: String,
        wild: bool,
    },
    /// `mkdir` (`make`) or `rmdir` of a folder.
    Folder {
        path: String,
        make: bool,
    },
    /// `mv` (`keep` false) or `cp` (`keep` true) of a file or folder.
    Relink {
        from: String,
        to: String,
        keep: bool,
    },
    Where {
        remote: String,
    },
    Verify {
        remote: Option<String>,
    },
    /// `cd`: makes `path` (a folder; `/` the top) the current folder.
    Cd {
        path: String,
    },
    /// `pwd`: the current folder.
    Pwd,
    Status,
    /// HELP: every command, or one (`topic`, a command's name).
    Help {
        topic: Option<&'static str>,
    },
    Exit,
    /// The files and bytes under a folder, or of a file (`""`: everything).
    Du {
        path: String,
    },
    /// Used, quota, and the cluster's free space.
    Df,
    /// `lcd`: makes `path` (default: the home folder) the current local
    /// folder, where relative local names start.
    Lcd {
        path: Option<PathBuf>,
    },
    /// `lls`: the names in a local folder (default: the current one).
    Lls {
        path: Option<PathBuf>,
    },
    /// `lpwd`: the current local folder.
    Lpwd,
    /// `share` (`access` given) or `unshare` (`None`) of a file or folder.
    Share {
        path: String,
        user: String,
        access: Option<Access>,
    },
    /// What the user shares and what is shared with them.
    Shares,
}

/// The options of `put` and `get`, as sftp has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `-r`: a whole folder.
    pub recursive: bool,
    /// `-c`: continue an interrupted transfer.
    pub resume: bool,
    /// `-p`: keep modification times (and modes on GET).
    pub keep_times: bool,
}

impl Flags {
    /// What the client is asked to do: `-r` always resumes.
    pub fn transfer(self) -> Transfer {
        Transfer {
            resume: self.resume || self.recursive,
            keep_times: self.keep_times,
        }
    }

    /// Whether the command moves many files (see [`crate::bulk`]).
    fn many(self, wild: bool) -> bool {
        wild || self.recursive
    }
}

/// A command of the language: its name, the other words for it, its
/// arguments, what it does and an example. [`VERBS`] is the one list that
/// parsing, HELP, usage errors, completion and hints all read.
#[derive(Debug)]
pub struct Verb {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static str,
    pub about: &'static str,
    pub example: &'static str,
}

const fn verb(
    name: &'static str,
    aliases: &'static [&'static str],
    args: &'static str,
    about: &'static str,
    example: &'static str,
) -> Verb {
    Verb {
        name,
        aliases,
        args,
        about,
        example,
    }
}

/// Every command, in the order HELP lists them.
pub const VERBS: &[Verb] = &[
    verb(
        "put",
        &["upload"],
        "LOCAL [REMOTE] [-r] [-c] [-p]",
        "store a local file (as REMOTE, default its name); -r: a whole folder; wildcards (*.pdf) store each file matched; -c: resume; -p: keep times",
        "put ~/report.pdf docs/report.pdf",
    ),
    verb(
        "get",
        &["download"],
        "REMOTE [LOCAL] [-r] [-c] [-p]",
        "fetch a file (to LOCAL, default the download folder); -r: a whole folder; wildcards (docs/*.pdf) fetch each file matched; -c: resume; -p: keep times",
        "get docs/report.pdf ~/Desktop/",
    ),
    verb(
        "list",
        &[],
        "[FOLDER] [-R]",
        "a folder's files and folders in full (-R: every file under it): size, chunks, when stored, health",
        "list docs -R",
    ),
    verb(
        "ls",
        &[],
        "[FOLDER] [-l] [-R]",
        "the names in a folder, or those a pattern matches (-l: in full, as LIST; -R: every file under it)",
        "ls -l docs",
    ),
    verb(
        "cd",
        &[],
        "[FOLDER]",
        "go to a folder (.. is the one above; / or nothing: the top)",
        "cd docs/2026",
    ),
    verb("pwd", &[], "", "the current folder", "pwd"),
    verb(
        "delete",
        &["rm", "del"],
        "REMOTE",
        "remove a file and all its chunks (a pattern: every file it matches)",
        "delete docs/old.txt",
    ),
    verb("mkdir", &[], "FOLDER", "make an empty folder", "mkdir docs/2027"),
    verb(
        "rmdir",
        &[],
        "FOLDER",
        "remove an empty folder",
        "rmdir docs/2027",
    ),
    verb(
        "mv",
        &["move", "rename"],
        "OLD NEW",
        "rename or move a file or folder (into NEW if it is a folder); no data moves",
        "mv draft.txt docs/final.txt",
    ),
    verb(
        "cp",
        &["copy"],
        "SOURCE COPY",
        "copy a file or folder on the servers; the copy shares the data",
        "cp docs docs-backup",
    ),
    verb(
        "where",
        &[],
        "REMOTE",
        "which servers hold each chunk, and whether each copy is there",
        "where docs/report.pdf",
    ),
    verb(
        "verify",
        &[],
        "[REMOTE]",
        "check every copy of a file (or of all files) on its server",
        "verify docs/report.pdf",
    ),
    verb(
        "status",
        &[],
        "",
        "the ring: each server, up or down, what it stores",
        "status",
    ),
    verb(
        "du",
        &[],
        "[PATH]",
        "the files and bytes under a folder, or of a file (default: all yours)",
        "du docs",
    ),
    verb(
        "df",
        &[],
        "",
        "what you use, your quota, and the cluster's free space",
        "df",
    ),
    verb(
        "share",
        &[],
        "PATH USER [read|write]",
        "let USER read (default) or also write a file or folder of yours; they see it under /shared/YOU",
        "share docs bob write",
    ),
    verb(
        "unshare",
        &[],
        "PATH USER",
        "stop sharing a file or folder with USER",
        "unshare docs bob",
    ),
    verb(
        "shares",
        &[],
        "",
        "what you share, and what others share with you (under /shared)",
        "shares",
    ),
    verb(
        "lcd",
        &[],
        "[LOCALDIR]",
        "go to a local folder (default: your home), where local names start",
        "lcd ~/Downloads",
    ),
    verb(
        "lls",
        &[],
        "[LOCALDIR]",
        "the names in a local folder (default: the current one)",
        "lls ~/Downloads",
    ),
    verb("lpwd", &[], "", "the current local folder", "lpwd"),
    verb(
        "help",
        &["?"],
        "[COMMAND]",
        "this list, or one command's usage and an example",
        "help put",
    ),
    verb("exit", &["quit", "q"], "", "leave (Ctrl-D does too)", "exit"),
];

/// The command `word` names (its name or an alias, in any case).
pub fn find_verb(word: &str) -> Option<&'static Verb> {
    let word = word.to_ascii_lowercase();
    VERBS
        .iter()
        .find(|v| v.name == word || v.aliases.contains(&word.as_str()))
}

/// Every word that names a command: names and aliases.
pub fn verb_words() -> impl Iterator<Item = &'static str> {
    VERBS
        .iter()
        .flat_map(|v| std::iter::once(v.name).chain(v.aliases.iter().copied()))
}

/// Writes `text` and a newline to standard output. When the reader has gone
/// (`dfs list | head -1`), the process ends quietly, killed by SIGPIPE as
/// `ls` or `cat` would be; any other failure is reported, and exits 1.
pub fn print_line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => die_of_sigpipe(),
        Err(e) => {
            eprint_line(&format!("cannot write the output: {e}"));
            std::process::exit(1);
        }
    }
}

/// Writes `text` and a newline to standard error, if it can: a message
/// that cannot be shown is no reason to fail (or panic).
pub fn eprint_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Ends the process as a closed pipe ends a Unix tool: by SIGPIPE, which
/// the Rust runtime ignores (so that writes fail instead) until now.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: setting a signal's disposition and raising it touch no memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Only if SIGPIPE is blocked: the status a shell shows for it.
    std::process::exit(128 + libc::SIGPIPE)
}

/// Parses a binary's arguments with clap, but reports a mistake in one line
/// (clap's own message spans several) and exits with status 2. `--help` and
/// `--version` print as usual.
pub fn parse_args<T: clap::Parser>() -> T {
    parse_args_of(T::command())
}

/// [`parse_args`] with `command` (a parser's clap command, changed).
pub fn parse_args_of<T: clap::FromArgMatches>(command: clap::Command) -> T {
    match command
        .try_get_matches()
        .and_then(|matches| T::from_arg_matches(&matches))
    {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let bin = std::env::args().next().unwrap_or_default();
            let bin = Path::new(&bin)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // clap's message: "error: what", maybe indented details, then usage.
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let what = what.join(" ");
            let what = what.trim_start_matches("error: ");
            eprintln!("{bin}: {what} (see {bin} --help)");
            std::process::exit(2);
        }
    }
}

/// Parses one line. `Ok(None)` for a blank line. Commands are case-insensitive;
/// arguments may be quoted like a shell's (`put "my file.txt"`).
pub fn parse_line(line: &str) -> std::result::Result<Option<Command>, String> {
    let typed = crate::glob::split(line)?;
    let words: Vec<String> = typed.iter().map(|w| w.text.clone()).collect();
    let typed = typed.get(1..).unwrap_or_default();
    let Some((first, args)) = words.split_first() else {
        return Ok(None);
    };
    let Some(found) = find_verb(first) else {
        return Err(format!(
            "unknown command {:?}; type HELP for the list",
            first.to_ascii_lowercase()
        ));
    };
    let verb = found.name;
    if let [flag] = args {
        if flag == "--help" || flag == "-h" {
            return Ok(Some(Command::Help { topic: Some(verb) }));
        }
    }
    let usage = |name: &str| usage_of(find_verb(name).expect("a known command"));
    let command = match (verb, args) {
        ("put" | "get", _) => parse_transfer(verb, typed).ok_or_else(|| usage(verb))??,
        ("list" | "ls", _) => parse_list(verb, typed).ok_or_else(|| usage(verb))??,
        ("delete", [_]) => Command::Delete {
            remote: pattern_or_text(&typed[0]),
            wild: typed[0].pattern.is_some(),
        },
        ("delete", _) => return Err(usage("delete")),
        ("mkdir" | "rmdir", [path]) => Command::Folder {
            path: path.clone(),
            make: verb == "mkdir",
        },
        ("mkdir" | "rmdir", _) => return Err(usage(verb)),
        ("mv" | "cp", [from, to]) => Command::Relink {
            from: from.clone(),
            to: to.clone(),
            keep: verb == "cp",
        },
        ("mv", _) => return Err(usage("mv")),
        ("cp", _) => return Err(usage("cp")),
        ("where", [remote]) => Command::Where {
            remote: remote.clone(),
        },
        ("where", _) => return Err(usage("where")),
        ("verify", []) => Command::Verify { remote: None },
        ("verify", [remote]) => Command::Verify {
            remote: Some(remote.clone()),
        },
        ("verify", _) => return Err(usage("verify")),
        ("cd", []) => Command::Cd { path: "/".into() },
        ("cd", [path]) => Command::Cd { path: path.clone() },
        ("cd", _) => return Err(usage("cd")),
        ("pwd", []) => Command::Pwd,
        ("pwd", _) => return Err(usage("pwd")),
        ("status", []) => Command::Status,
        ("status", _) => return Err(usage("status")),
        ("du", []) => Command::Du {
            path: String::new(),
        },
        ("du", [path]) => Command::Du { path: path.clone() },
        ("du", _) => return Err(usage("du")),
        ("df", []) => Command::Df,
        ("df", _) => return Err(usage("df")),
        ("share", [path, user]) => Command::Share {
            path: path.clone(),
            user: user.clone(),
            access: Some(Access::Read),
        },
        ("share", [path, user, access]) => Command::Share {
            path: path.clone(),
            user: user.clone(),
            access: Some(Access::parse(&access.to_ascii_lowercase()).map_err(|e| e.to_string())?),
        },
        ("share", _) => return Err(usage("share")),
        ("unshare", [path, user]) => Command::Share {
            path: path.clone(),
            user: user.clone(),
            access: None,
        },
        ("unshare", _) => return Err(usage("unshare")),
        ("shares", []) => Command::Shares,
        ("shares", _) => return Err(usage("shares")),
        ("lcd", []) => Command::Lcd { path: None },
        ("lcd", [path]) => Command::Lcd {
            path: Some(local_path(path)),
        },
        ("lcd", _) => return Err(usage("lcd")),
        ("lls", []) => Command::Lls { path: None },
        ("lls", [path]) => Command::Lls {
            path: Some(local_path(path)),
        },
        ("lls", _) => return Err(usage("lls")),
        ("lpwd", []) => Command::Lpwd,
        ("lpwd", _) => return Err(usage("lpwd")),
        ("help", []) => Command::Help { topic: None },
        ("help", [topic]) => Command::Help {
            topic: Some(
                find_verb(topic)
                    .ok_or_else(|| format!("no command {topic:?}; type HELP for the list"))?
                    .name,
            ),
        },
        ("help", _) => return Err(usage("help")),
        ("exit", _) => Command::Exit,
        (other, _) => unreachable!("{other} is in VERBS but not parsed"),
    };
    Ok(Some(command))
}

/// A word as a command keeps it: its pattern (quoted wildcards escaped)
/// if it has wildcards, else its text.
fn pattern_or_text(word: &Word) -> String {
    word.pattern.clone().unwrap_or_else(|| word.text.clone())
}

/// `put`/`get` with sftp's options `-r` (or `-R`), `-c` (or sftp's `-a`)
/// and `-p` (or `-P`), joined or not (`-rp`), anywhere before `--`. The
/// source may be a pattern; the destination is taken as it is. `None` for
/// too few or too many names, `Some(Err)` for an option it does not know.
fn parse_transfer(verb: &str, words: &[Word]) -> Option<std::result::Result<Command, String>> {
    let mut flags = Flags::default();
    let mut names = Vec::new();
    let mut options = true;
    for word in words {
        let text = word.text.as_str();
        if options && text == "--" {
            options = false;
        } else if options && text.starts_with('-') && text.len() > 1 {
            for flag in text[1..].chars() {
                match flag {
                    'r' | 'R' => flags.recursive = true,
                    'c' | 'a' => flags.resume = true,
                    'p' | 'P' => flags.keep_times = true,
                    _ => {
                        let verb = verb.to_uppercase();
                        return Some(Err(format!("{verb}: unknown option {text}")));
                    }
                }
            }
        } else {
            names.push(word);
        }
    }
    let (source, destination) = match names.as_slice() {
        [source] => (*source, None),
        [source, destination] => (*source, Some(destination.text.clone())),
        _ => return None,
    };
    let wild = source.pattern.is_some();
    Some(Ok(if verb == "put" {
        Command::Put {
            local: local_path(&pattern_or_text(source)),
            remote: destination,
            flags,
            wild,
        }
    } else {
        Command::Get {
            remote: pattern_or_text(source),
            local: destination.map(|d| local_path(&d)),
            flags,
            wild,
        }
    }))
}

/// `list [FOLDER] [-R]` (always in full) or `ls [FOLDER] [-l] [-R]`
/// (names only unless `-l`); options may be joined (`-lR`). The folder may
/// be a pattern. `None` for two folders, `Some(Err)` for an option it does
/// not know.
fn parse_list(verb: &str, args: &[Word]) -> Option<std::result::Result<Command, String>> {
    let mut recursive = false;
    let mut long = verb == "list";
    let mut folder: Option<&Word> = None;
    for word in args {
        let arg = &word.text;
        match arg.as_str() {
            "--recursive" => recursive = true,
            "--long" => long = true,
            option if option.starts_with('-') && option.len() > 1 => {
                for flag in option[1..].chars() {
                    match flag {
                        'R' | 'r' => recursive = true,
                        'l' => long = true,
                        _ => {
                            let verb = verb.to_uppercase();
                            return Some(Err(format!("{verb}: unknown option {option}")));
                        }
                    }
                }
            }
            _ => {
                if folder.replace(word).is_some() {
                    return None;
                }
            }
        }
    }
    Some(Ok(Command::List {
        folder: folder.map(pattern_or_text).unwrap_or_default(),
        recursive,
        long,
        wild: folder.is_some_and(|w| w.pattern.is_some()),
    }))
}

/// The process's current folder (the local folder of `lcd`).
fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().map_err(|e| Error::io("the local folder", e))
}

/// `lls`: the names in local `folder`, folders with a `/`, sorted.
fn local_names(folder: &Path) -> Result<Vec<String>> {
    let refused = |e| Error::io(format!("lls {}", folder.display()), e);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(refused)? {
        let entry = entry.map_err(refused)?;
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Every file under `folder`, folder by folder (for what others share,
/// which `Client::list` does not cover).
async fn files_under(client: &Client, folder: &str) -> Result<Vec<DirItem>> {
    let (mut files, mut folders) = (Vec::new(), vec![folder.to_string()]);
    while let Some(folder) = folders.pop() {
        for item in client.list_dir(&folder).await? {
            match item {
                DirItem::Folder(path) => folders.push(path),
                file => files.push(file),
            }
        }
    }
    files.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(files)
}

/// Why `path` (not a folder) cannot be gone into or listed: it is a file,
/// or nothing.
async fn not_a_folder(client: &Client, path: &str) -> Error {
    match client.stat(path).await {
        Ok(_) => Error::Refused(format!("/{path} is a file, not a folder")),
        Err(Error::NotFound { .. }) => Error::Refused(format!("no such folder: /{path}")),
        Err(e) => e,
    }
}

/// A remote path as typed, made whole: relative to the current folder `cwd`
/// (`""`: the top; else a path as the servers name it, `docs/2026`) unless
/// it starts with `/`; `.` segments dropped and `..` ones going up, here in
/// the client (the servers refuse both). A trailing `/` is allowed; `""` is
/// the top. One line of error for `..` above the top, an empty segment
/// (`a//b`) or a segment the servers would refuse.
pub fn resolve_path(cwd: &str, typed: &str) -> Result<String> {
    let bad = |reason| Error::InvalidName {
        name: typed.to_string(),
        reason,
    };
    let (mut segments, rest): (Vec<&str>, &str) = match typed.strip_prefix('/') {
        Some(rest) => (Vec::new(), rest),
        None => (cwd.split('/').filter(|s| !s.is_empty()).collect(), typed),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if !rest.is_empty() {
        for segment in rest.split('/') {
            match segment {
                "" => return Err(bad("a path cannot have an empty segment (`//`)")),
                "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(bad("`..` goes above the top folder"));
                    }
                }
                name => segments.push(name),
            }
        }
    }
    let path = segments.join("/");
    crate::names::validate_folder(&path)?;
    Ok(path)
}

/// A file's remote name as typed, made whole (see [`resolve_path`]): the
/// name the servers get. Every command that takes a remote file name
/// resolves it with this. A trailing `/`, or a path that is the top, is
/// not a file's name.
pub fn resolve(cwd: &str, typed: &str) -> Result<String> {
    let bad = |reason| Error::InvalidName {
        name: typed.to_string(),
        reason,
    };
    if typed.is_empty() {
        return Err(bad("a name cannot be empty"));
    }
    if typed.ends_with('/') {
        return Err(bad("a file name cannot end with `/`"));
    }
    let path = resolve_path(cwd, typed)?;
    if path.is_empty() {
        return Err(bad("the top folder is not a file"));
    }
    Ok(path)
}

/// Where PUT stores `local`: the remote name given, or if none is given or
/// it names a folder (`docs/`, `.`, `..`), the local file's name in that
/// folder (the current one by default).
fn put_target(cwd: &str, local: &Path, remote: Option<&str>) -> Result<String> {
    let names_a_folder =
        |r: &str| r.ends_with('/') || matches!(r.rsplit('/').next(), Some("." | ".."));
    match remote {
        Some(r) if !names_a_folder(r) => resolve(cwd, r),
        folder => {
            let folder = resolve_path(cwd, folder.unwrap_or(""))?;
            let file = default_remote_name(local)?;
            resolve(&folder, &file)
        }
    }
}

impl Command {
    /// The command with every remote name made whole against the current
    /// folder `cwd` (see [`resolve`]); `Err` (one line) for a name that
    /// cannot be.
    pub fn resolved(&self, cwd: &str) -> Result<Command> {
        Ok(match self {
            // Many files: named when they are found (see `crate::bulk`).
            Command::Put { flags, wild, .. } | Command::Get { flags, wild, .. }
                if flags.many(*wild) =>
            {
                self.clone()
            }
            Command::List { wild: true, .. } | Command::Delete { wild: true, .. } => self.clone(),
            Command::Put {
                local,
                remote,
                flags,
                wild,
            } => Command::Put {
                local: local.clone(),
                remote: Some(put_target(cwd, local, remote.as_deref())?),
                flags: *flags,
                wild: *wild,
            },
            Command::Get {
                remote,
                local,
                flags,
                wild,
            } => Command::Get {
                remote: resolve(cwd, remote)?,
                local: local.clone(),
                flags: *flags,
                wild: *wild,
            },
            Command::List {
                folder,
                recursive,
                long,
                wild,
            } => Command::List {
                folder: resolve_path(cwd, folder)?,
                recursive: *recursive,
                long: *long,
                wild: *wild,
            },
            Command::Delete { remote, wild } => Command::Delete {
                remote: resolve(cwd, remote)?,
                wild: *wild,
            },
            Command::Folder { path, make } => Command::Folder {
                path: resolve_path(cwd, path)?,
                make: *make,
            },
            Command::Where { remote } => Command::Where {
                remote: resolve(cwd, remote)?,
            },
            Command::Verify { remote } => Command::Verify {
                remote: remote.as_deref().map(|r| resolve(cwd, r)).transpose()?,
            },
            Command::Cd { path } => Command::Cd {
                path: resolve_path(cwd, path)?,
            },
            Command::Du { path } => Command::Du {
                path: resolve_path(cwd, path)?,
            },
            Command::Df => Command::Df,
            Command::Share { path, user, access } => Command::Share {
                path: resolve(cwd, path)?,
                user: user.clone(),
                access: *access,
            },
            Command::Shares => Command::Shares,
            Command::Relink { from, to, keep } => Command::Relink {
                from: resolve_path(cwd, from)?,
                to: resolve_path(cwd, to)?,
                keep: *keep,
            },
            Command::Pwd
            | Command::Status
            | Command::Help { .. }
            | Command::Exit
            | Command::Lcd { .. }
            | Command::Lls { .. }
            | Command::Lpwd => self.clone(),
        })
    }
}

/// The current folder as people read it: `/`, `/docs/2026`.
pub fn shown_folder(cwd: &str) -> String {
    format!("/{cwd}")
}

/// What a command produced, before it is rendered.
#[derive(Debug)]
pub enum Outcome {
    Put {
        name: String,
        receipt: PutReceipt,
    },
    Get {
        name: String,
        receipt: GetReceipt,
    },
    /// The entries of `folder`, shown relative to it; `long`: in full.
    List {
        folder: String,
        items: Vec<DirItem>,
        long: bool,
    },
    Delete {
        name: String,
        receipt: DeleteReceipt,
    },
    /// `put`/`get` of many files (`-r`, a pattern).
    Transfers(Summary),
    /// `rm PATTERN`: the files deleted, and those that could not be.
    Deleted {
        names: Vec<String>,
        failed: Vec<(String, String)>,
    },
    Folder {
        path: String,
        made: bool,
    },
    Relink {
        from: String,
        keep: bool,
        receipt: RelinkReceipt,
    },
    Where(Location),
    Verify(Vec<VerifyReport>),
    /// `cd` went to folder `cwd` (`""`: the top): it is the current folder now.
    Cd {
        cwd: String,
    },
    Pwd {
        cwd: String,
    },
    Status(Vec<ServerReport>),
    Help(Option<&'static str>),
    Exit,
    /// The current local folder (after `lcd`, or `lpwd`).
    LocalFolder(PathBuf),
    /// `lls`: a local folder's entries (folders end with `/`), sorted.
    LocalList {
        folder: PathBuf,
        names: Vec<String>,
    },
    Du(UsageInfo),
    Df(UsageInfo),
    Share {
        path: String,
        user: String,
        access: Option<Access>,
    },
    /// Every share involving `me` (see `Client::shares`).
    Shares {
        me: String,
        shares: Vec<Share>,
    },
}

/// Runs `command` in the current folder `cwd` (`""`: the top; see
/// [`resolve`]), as one command of the client ([`one_command`]: a server
/// that times out is not waited for twice). `download_dir` is where GET puts
/// files when no local path is given. `cd` changes nothing itself: its
/// [`Outcome::Cd`] names the new current folder, for the caller to keep.
pub async fn run(
    client: &Client,
    command: &Command,
    cwd: &str,
    download_dir: &Path,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let command = command.resolved(cwd)?;
    one_command(run_one(client, &command, cwd, download_dir, progress)).await
}

/// Runs a command whose names are resolved.
async fn run_one(
    client: &Client,
    command: &Command,
    cwd: &str,
    download_dir: &Path,
    progress: &dyn Progress,
) -> Result<Outcome> {
    Ok(match command {
        Command::Put {
            local,
            remote,
            flags,
            wild,
        } if flags.many(*wild) => Outcome::Transfers(
            // Boxed: the futures of many transfers are deep.
            Box::pin(crate::bulk::put(
                client,
                cwd,
                local,
                remote.as_deref(),
                *wild,
                flags.recursive,
                flags.transfer(),
                progress,
            ))
            .await?,
        ),
        Command::Get {
            remote,
            local,
            flags,
            wild,
        } if flags.many(*wild) => Outcome::Transfers(
            // Boxed: the futures of many transfers are deep.
            Box::pin(crate::bulk::get(
                client,
                cwd,
                remote,
                local.as_deref(),
                *wild,
                flags.recursive,
                flags.transfer(),
                download_dir,
                progress,
            ))
            .await?,
        ),
        Command::Put {
            local,
            remote,
            flags,
            ..
        } => {
            // Only a one-shot `dfs put - NAME` reads standard input (here it
            // holds the commands, or the terminal).
            if local.as_os_str() == "-" {
                return Err(Error::Refused(
                    "put - reads standard input: run it as dfs put - NAME".into(),
                ));
            }
            let name = match remote {
                Some(r) => r.clone(),
                None => default_remote_name(local)?,
            };
            let receipt = client
                .put_with(local, &name, flags.transfer(), progress)
                .await?;
            Outcome::Put { name, receipt }
        }
        Command::Get {
            remote,
            local,
            flags,
            ..
        } => {
            if local.is_none() {
                std::fs::create_dir_all(download_dir)
                    .map_err(|e| Error::io(format!("creating {}", download_dir.display()), e))?;
            }
            if local.as_deref().is_some_and(|l| l.as_os_str() == "-") {
                return Err(Error::Refused(
                    "get NAME - writes to standard output: run it as dfs get NAME -".into(),
                ));
            }
            let local = local_target(remote, local.as_deref(), download_dir);
            let receipt = client
                .get_with(remote, &local, flags.transfer(), progress)
                .await?;
            Outcome::Get {
                name: remote.clone(),
                receipt,
            }
        }
        Command::List {
            recursive: true,
            wild: true,
            folder,
            ..
        } => {
            return Err(Error::Refused(format!(
                "ls -R takes a folder, not a pattern ({folder})"
            )))
        }
        Command::List {
            folder,
            long,
            wild: true,
            ..
        } => {
            let (folder, items) = Box::pin(crate::bulk::list(client, cwd, folder)).await?;
            Outcome::List {
                folder,
                items,
                long: *long,
            }
        }
        Command::Delete { remote, wild: true } => {
            let (names, failed) = Box::pin(crate::bulk::delete(client, cwd, remote)).await?;
            Outcome::Deleted { names, failed }
        }
        Command::List {
            folder,
            recursive,
            long,
            ..
        } => {
            crate::names::validate_folder(folder)?;
            let shared = folder == crate::sharing::SHARED || client.scope(folder)?.shared;
            let items = if *recursive && shared {
                files_under(client, folder).await?
            } else if *recursive {
                let inside = format!("{folder}/");
                client
                    .list()
                    .await?
                    .into_iter()
                    .filter(|f| folder.is_empty() || f.name.starts_with(&inside))
                    .map(DirItem::File)
                    .collect()
            } else {
                client.list_dir(folder).await?
            };
            if items.is_empty() && !folder.is_empty() && !client.folder_exists(folder).await? {
                return Err(not_a_folder(client, folder).await);
            }
            Outcome::List {
                folder: folder.clone(),
                items,
                long: *long,
            }
        }
        Command::Delete { remote, .. } => Outcome::Delete {
            name: remote.clone(),
            receipt: client.delete(remote).await?,
        },
        Command::Folder { path, make } => {
            client.folder(path, *make).await?;
            Outcome::Folder {
                path: path.clone(),
                made: *make,
            }
        }
        Command::Relink { from, to, keep } => Outcome::Relink {
            from: from.clone(),
            keep: *keep,
            receipt: client.relink(from, to, *keep).await?,
        },
        Command::Where { remote } => Outcome::Where(client.locate(remote).await?),
        Command::Verify { remote } => Outcome::Verify(client.verify(remote.as_deref()).await?),
        Command::Cd { path } => {
            if !path.is_empty() && !client.folder_exists(path).await? {
                return Err(not_a_folder(client, path).await);
            }
            Outcome::Cd { cwd: path.clone() }
        }
        Command::Pwd => Outcome::Pwd {
            cwd: cwd.to_string(),
        },
        Command::Status => Outcome::Status(client.status().await),
        Command::Help { topic } => Outcome::Help(*topic),
        Command::Lcd { path } => {
            let to = match path {
                Some(p) => p.clone(),
                None => local_path("~"),
            };
            std::env::set_current_dir(&to)
                .map_err(|e| Error::io(format!("lcd {}", to.display()), e))?;
            Outcome::LocalFolder(current_dir()?)
        }
        Command::Lls { path } => {
            let folder = path.clone().unwrap_or_else(|| PathBuf::from("."));
            Outcome::LocalList {
                names: local_names(&folder)?,
                folder,
            }
        }
        Command::Lpwd => Outcome::LocalFolder(current_dir()?),
        Command::Exit => Outcome::Exit,
        Command::Du { path } => Outcome::Du(client.usage(path).await?),
        Command::Df => Outcome::Df(client.usage("").await?),
        Command::Share { path, user, access } => {
            client.share(path, user, *access).await?;
            Outcome::Share {
                path: path.clone(),
                user: user.clone(),
                access: *access,
            }
        }
        Command::Shares => Outcome::Shares {
            me: client.user().to_string(),
            shares: client.shares().await?,
        },
    })
}

/// The remote name PUT uses when none is given: the local file's name.
fn default_remote_name(local: &Path) -> Result<String> {
    local
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Refused(format!(
                "cannot name {} remotely; give a remote name",
                local.display()
            ))
        })
}

/// Where GET writes: `local` if given (inside it, if it is a folder), else the
/// download folder.
pub fn local_target(remote: &str, local: Option<&Path>, download_dir: &Path) -> PathBuf {
    // A file in a folder lands under its own name, not its path.
    let file = remote.rsplit('/').next().unwrap_or(remote);
    match local {
        Some(path) if path.is_dir() => path.join(file),
        Some(path) => path.to_path_buf(),
        None => download_dir.join(file),
    }
}

/// Whether logs on standard error get colour: only on a terminal, and never
/// with `NO_COLOR`.
pub fn colour_on_stderr() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Whether output gets colour: only on a terminal, and never with `NO_COLOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub const PLAIN: Style = Style { color: false };

    /// Colour when standard output is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    pub fn paint(&self, text: &str, color: Color) -> String {
        if self.color {
            text.with(color).to_string()
        } else {
            text.to_string()
        }
    }
}

impl Outcome {
    /// Whether a script should see this as a failure (VERIFY found damage).
    pub fn failed(&self) -> bool {
        match self {
            Outcome::Verify(reports) => reports.iter().any(|r| r.health >= Health::Corrupt),
            Outcome::Transfers(summary) => !summary.failed.is_empty(),
            Outcome::Deleted { failed, .. } => !failed.is_empty(),
            _ => false,
        }
    }

    /// The outcome as people read it.
    pub fn text(&self, style: Style) -> String {
        match self {
            Outcome::Put { name, receipt } if receipt.missing.is_empty() => format!(
                "stored {name}: {} in {} chunks, {} copies{}; {}  {name}",
                human_size(receipt.size),
                receipt.chunks,
                receipt.copies,
                apart(receipt, style),
                receipt.digest,
            ),
            Outcome::Put { name, receipt } => format!(
                "stored {name}: {} in {} chunks, {} of {} copies, {}{}; {}  {name}",
                human_size(receipt.size),
                receipt.chunks,
                receipt.copies,
                receipt.wanted,
                style.paint(&degraded(receipt), Color::Yellow),
                apart(receipt, style),
                receipt.digest,
            ),
            Outcome::Get { receipt, .. } => format!(
                "fetched {} and verified every chunk; {}  {}",
                human_size(receipt.size),
                receipt.digest,
                receipt.path.display(),
            ),
            Outcome::List {
                folder,
                items,
                long: true,
            } => list_table(folder, items, style),
            Outcome::List {
                folder,
                items,
                long: false,
            } => list_names(folder, items, style),
            Outcome::Transfers(summary) => summary.text(),
            Outcome::Deleted { names, failed } => names
                .iter()
                .map(|n| format!("deleted {n}"))
                .chain(failed.iter().map(|(n, why)| format!("failed {n}: {why}")))
                .collect::<Vec<_>>()
                .join("\n"),
            Outcome::Folder { path, made: true } => format!("made folder {path}/"),
            Outcome::Folder { path, made: false } => format!("removed folder {path}/"),
            Outcome::Delete { name, receipt } if receipt.missed.is_empty() => {
                format!("deleted {name}")
            }
            Outcome::Delete { name, receipt } => format!(
                "deleted {name} ({} did not answer; it deletes its copy when it is back)",
                receipt.missed.join(", ")
            ),
            Outcome::Relink {
                from,
                keep,
                receipt,
            } => {
                let verb = if *keep { "copied" } else { "moved" };
                let files = plural(receipt.files as u64, "file");
                let mut line = format!("{verb} {from} to {} ({files})", receipt.to);
                if !receipt.missed.is_empty() {
                    line += &format!(
                        "; {} did not take it yet (healing brings it up to date)",
                        receipt.missed.join(", ")
                    );
                }
                line
            }
            Outcome::Where(location) => where_table(location, style),
            Outcome::Verify(reports) => verify_table(reports, style),
            Outcome::Cd { .. } => String::new(),
            Outcome::Pwd { cwd } => shown_folder(cwd),
            Outcome::Status(reports) => status_table(reports, style),
            Outcome::Help(None) => help_text(),
            Outcome::Help(Some(topic)) => {
                help_for(find_verb(topic).expect("a topic is a command's name"))
            }
            Outcome::LocalFolder(dir) => dir.display().to_string(),
            Outcome::LocalList { names, .. } => names.join("\n"),
            Outcome::Exit => String::new(),
            Outcome::Du(info) => du_text(info),
            Outcome::Df(info) => df_table(info, style),
            Outcome::Share {
                path,
                user,
                access: Some(access),
            } => format!("shared /{path} with {user} ({})", access.as_str()),
            Outcome::Share {
                path,
                user,
                access: None,
            } => format!("/{path} is no longer shared with {user}"),
            Outcome::Shares { me, shares } => shares_text(me, shares, style),
        }
    }

    /// The outcome as scripts read it (`--json`).
    pub fn json(&self) -> Value {
        match self {
            Outcome::Put { name, receipt } => json!({
                "name": name,
                "size": receipt.size,
                "chunks": receipt.chunks,
                "copies": receipt.copies,
                "wanted": receipt.wanted,
                "degraded": !receipt.missing.is_empty(),
                "missing": receipt.missing,
                "one_ring": receipt.apart.is_empty(),
                "not_in_ring": receipt
                    .apart
                    .iter()
                    .map(|(server, standing)| (server.clone(), Value::from(standing.as_str())))
                    .collect::<serde_json::Map<String, Value>>(),
                "refused": receipt
                    .refused
                    .iter()
                    .map(|(server, why)| (server.clone(), Value::from(why.as_str())))
                    .collect::<serde_json::Map<String, Value>>(),
                receipt.digest.algorithm(): receipt.digest.hex(),
            }),
            Outcome::Get { name, receipt } => json!({
                "name": name,
                "size": receipt.size,
                "path": receipt.path,
                receipt.digest.algorithm(): receipt.digest.hex(),
            }),
            Outcome::List { items, .. } => Value::Array(
                items
                    .iter()
                    .map(|item| {
                        let f = match item {
                            DirItem::File(f) => f,
                            DirItem::Folder(path) => {
                                return json!({ "name": format!("{path}/"), "folder": true })
                            }
                        };
                        json!({
                            "name": f.name,
                            "size": f.size,
                            "chunks": f.chunks,
                            "stored_at": f.stored_at,
                            "copies": f.copies,
                            "healthy": f.healthy(),
                            "readable": !f.unreadable(),
                        })
                    })
                    .collect(),
            ),
            Outcome::Folder { path, made } => json!({ "folder": path, "made": made }),
            Outcome::Relink {
                from,
                keep,
                receipt,
            } => json!({
                "from": from,
                "to": receipt.to,
                "copied": keep,
                "files": receipt.files,
                "missed": receipt.missed,
            }),
            Outcome::Cd { cwd } | Outcome::Pwd { cwd } => json!({ "cwd": shown_folder(cwd) }),
            Outcome::Delete { name, receipt } => json!({
                "name": name,
                "applied": receipt.applied,
                "missed": receipt.missed,
            }),
            Outcome::Transfers(summary) => summary.json(),
            Outcome::Deleted { names, failed } => json!({
                "deleted": names,
                "failed": failed
                    .iter()
                    .map(|(name, error)| json!({ "name": name, "error": error }))
                    .collect::<Vec<_>>(),
            }),
            Outcome::Where(location) => json!({
                "name": location.manifest.name,
                "size": location.manifest.size,
                "chunks": location.chunks.iter().enumerate().map(|(i, copies)| json!({
                    "chunk": i + 1,
                    "copies": copies.iter().map(|c| json!({
                        "server": c.server,
                        "present": c.present,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
            Outcome::Verify(reports) => Value::Array(
                reports
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "health": r.health.as_str(),
                            "problems": r.problems,
                        })
                    })
                    .collect(),
            ),
            Outcome::Status(reports) => Value::Array(
                reports
                    .iter()
                    .map(|r| match &r.state {
                        Ok(s) => json!({
                            "position": r.position,
                            "server": r.member.name,
                            "addr": r.member.addr,
                            "id": s.id,
                            "share": r.share,
                            "up": true,
                            "in_ring": r.standing == Some(Standing::InRing),
                            "standing": r.standing.map_or("down", Standing::as_str),
                            "successor": s.successor,
                            "predecessor": s.predecessor,
                            "sees_down": s.down,
                            "leaving": s.leaving,
                            "no_space": s.no_space,
                            "files": s.files,
                            "chunks": s.chunks,
                            "bytes": s.bytes,
                            "heal": {
                                "rounds": s.heal.rounds,
                                "copied": s.heal.copied,
                                "missing": s.heal.missing,
                                "hints": s.heal.hints,
                                "healed_in_secs": s.heal.healed_in_secs,
                            },
                        }),
                        Err(e) => json!({
                            "position": r.position,
                            "server": r.member.name,
                            "addr": r.member.addr,
                            "id": r.member.id,
                            "up": false,
                            "in_ring": false,
                            "standing": "down",
                            "error": e,
                        }),
                    })
                    .collect(),
            ),
            Outcome::Help(_) | Outcome::Exit => Value::Null,
            Outcome::LocalFolder(dir) => json!({ "local_cwd": dir.display().to_string() }),
            Outcome::LocalList { folder, names } => json!({
                "folder": folder.display().to_string(),
                "names": names,
            }),
            Outcome::Du(info) => du_json(info),
            Outcome::Share { path, user, access } => json!({
                "path": format!("/{path}"),
                "user": user,
                "access": access.map(Access::as_str),
            }),
            Outcome::Shares { me, shares } => {
                let entry = |s: &Share| {
                    json!({
                        "owner": s.owner,
                        "path": format!("/{}", s.path),
                        "user": s.user,
                        "access": s.access.as_str(),
                        "seen_as": seen_as(me, s),
                    })
                };
                json!({
                    "mine": shares.iter().filter(|s| s.owner == *me).map(entry).collect::<Vec<_>>(),
                    "with_me": shares.iter().filter(|s| s.user == *me).map(entry).collect::<Vec<_>>(),
                })
            }
            Outcome::Df(info) => df_json(info),
        }
    }
}

/// ", not all in one ring (dfs2 alone)" for a PUT that gave copies to
/// servers cut off from the others; nothing for one that did not.
fn apart(receipt: &PutReceipt, style: Style) -> String {
    if receipt.apart.is_empty() {
        return String::new();
    }
    let who: Vec<String> = receipt
        .apart
        .iter()
        .map(|(server, standing)| format!("{server} {}", standing.as_str()))
        .collect();
    let text = format!("not all in one ring ({})", who.join(", "));
    format!(", {}", style.paint(&text, Color::Yellow))
}

/// Why a PUT stored fewer copies than wanted: "degraded until dfs2 is back"
/// for servers that could not be reached, the server's own reason for one
/// that answered ("dfs3: no space left").
fn degraded(receipt: &PutReceipt) -> String {
    let down: Vec<&str> = receipt
        .missing
        .iter()
        .filter(|s| !receipt.refused.iter().any(|(r, _)| r == *s))
        .map(String::as_str)
        .collect();
    let mut text = String::from("degraded");
    if !down.is_empty() {
        let verb = if down.len() == 1 { "is" } else { "are" };
        text.push_str(&format!(" until {} {verb} back", down.join(" and ")));
    }
    if !receipt.refused.is_empty() {
        let why: Vec<String> = receipt
            .refused
            .iter()
            .map(|(server, reason)| format!("{server}: {reason}"))
            .collect();
        text.push_str(&format!(" ({})", why.join("; ")));
    }
    text
}

pub fn help_text() -> String {
    let mut out = String::from("commands (case-insensitive):\n");
    for v in VERBS {
        out.push_str(&format!(
            "  {:<26} {}\n",
            format!("{} {}", v.name, v.args),
            v.about
        ));
    }
    let aliases: Vec<String> = VERBS
        .iter()
        .flat_map(|v| v.aliases.iter().map(move |a| format!("{a} = {}", v.name)))
        .collect();
    out.push_str(&format!(
        "aliases: {}; `help COMMAND` (or `COMMAND --help`) shows one with an example; \
         remote names are relative to the current folder (cd) unless they start with /, \
         local ones to the local folder (lcd), ~ is your home; quote names with spaces; \
         Tab completes, Ctrl-C cancels a transfer",
        aliases.join(", ")
    ));
    out
}

/// `help COMMAND`: its usage, what it does, its other names and an example.
pub fn help_for(v: &Verb) -> String {
    let mut out = format!("{}\n  {}\n", usage_of(v), v.about);
    if !v.aliases.is_empty() {
        out.push_str(&format!("  also: {}\n", v.aliases.join(", ")));
    }
    out.push_str(&format!("  example: {}", v.example));
    out
}

/// The usage line of a command, as a mistake in its arguments shows it.
fn usage_of(v: &Verb) -> String {
    if v.args.is_empty() {
        format!("{} takes no arguments", v.name.to_uppercase())
    } else {
        format!("usage: {} {}", v.name.to_uppercase(), v.args)
    }
}

/// A local path as typed: `~` or `~/...` is in the home folder (`$HOME`),
/// as a shell would make it.
pub fn local_path(typed: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match typed.strip_prefix('~') {
        Some("") => home().unwrap_or_else(|| typed.into()),
        Some(rest) if rest.starts_with('/') => match home() {
            Some(home) => home.join(rest.trim_start_matches('/')),
            None => typed.into(),
        },
        _ => typed.into(),
    }
}

/// `1.5 MiB`-style sizes; exact bytes below 1 KiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn time_of(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-21T00:42:34Z → 2026-11-21 00:42:34
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A table cell: its text and, on a colour terminal, its colour.
struct Cell(String, Option<Color>);

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell(s, None)
    }
}

/// LIST as an aligned table.
pub fn list_table(folder: &str, items: &[DirItem], style: Style) -> String {
    if items.is_empty() {
        return "no files".into();
    }
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|item| {
            let f = match item {
                DirItem::File(f) => f,
                DirItem::Folder(path) => {
                    let name = format!("{}/", relative(folder, path));
                    let dash = || Cell::from("-".to_string());
                    return vec![name.into(), dash(), dash(), dash(), String::new().into()];
                }
            };
            let health = if f.healthy() {
                Cell("ok".into(), Some(Color::Green))
            } else if f.unreadable() {
                let lost = f.copies.iter().filter(|&&c| c == 0).count();
                Cell(
                    format!("unreadable ({} with no copy)", plural(lost as u64, "chunk")),
                    Some(Color::Red),
                )
            } else {
                let missing: u32 = f.copies.iter().map(|&c| f.wanted.saturating_sub(c)).sum();
                let copies = if missing == 1 { "copy" } else { "copies" };
                Cell(
                    format!("degraded ({missing} {copies} missing)"),
                    Some(Color::Yellow),
                )
            };
            vec![
                relative(folder, &f.name).to_string().into(),
                human_size(f.size).into(),
                f.chunks.to_string().into(),
                time_of(f.stored_at).into(),
                health,
            ]
        })
        .collect();
    table(
        &["NAME", "SIZE", "CHUNKS", "STORED (UTC)", "HEALTH"],
        rows,
        style,
    )
}

/// `ls`: the names in a folder, one a line, relative to it; folders end
/// with `/` (blue on a colour terminal). Nothing for an empty folder, as
/// `ls` prints.
pub fn list_names(folder: &str, items: &[DirItem], style: Style) -> String {
    items
        .iter()
        .map(|item| match item {
            DirItem::File(f) => relative(folder, &f.name).to_string(),
            DirItem::Folder(path) => {
                style.paint(&format!("{}/", relative(folder, path)), Color::Blue)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `path` as seen from inside `folder` (`""`: the top).
fn relative<'a>(folder: &str, path: &'a str) -> &'a str {
    if folder.is_empty() {
        path
    } else {
        path.strip_prefix(folder)
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or(path)
    }
}

/// VERIFY as a table, one line per file, problems spelled out.
pub fn verify_table(reports: &[VerifyReport], style: Style) -> String {
    if reports.is_empty() {
        return "no files".into();
    }
    let rows = reports
        .iter()
        .map(|r| {
            let color = match r.health {
                Health::Healthy => Color::Green,
                Health::Degraded => Color::Yellow,
                Health::Corrupt | Health::Lost => Color::Red,
            };
            vec![
                r.name.clone().into(),
                Cell(r.health.as_str().into(), Some(color)),
                r.problems.join("; ").into(),
            ]
        })
        .collect();
    let healthy = reports
        .iter()
        .filter(|r| r.health == Health::Healthy)
        .count();
    format!(
        "{}\n{healthy} of {} healthy",
        table(&["NAME", "HEALTH", "PROBLEMS"], rows, style),
        plural(reports.len() as u64, "file")
    )
}

/// STATUS as an aligned table: each member in ring order with its ring id,
/// its state (DOWN if the client cannot reach it; `alone` or `apart` if it
/// answers but is not in one ring with the others, see [`Standing`]), and
/// its successor and predecessor as its own Chord state has them. A line
/// under the table says what to check for servers outside the ring.
pub fn status_table(reports: &[ServerReport], style: Style) -> String {
    let rows = reports
        .iter()
        .map(|r| {
            let id = r
                .member
                .id
                .as_deref()
                .map(|hex| hex.chars().take(8).collect::<String>())
                .unwrap_or_default();
            let (state, successor, predecessor, stores, heal) = match &r.state {
                Ok(s) => (
                    if s.leaving {
                        Cell("leaving".into(), Some(Color::Yellow))
                    } else if let Some(out @ (Standing::Alone | Standing::Apart)) = r.standing {
                        Cell(out.as_str().into(), Some(Color::Red))
                    } else if s.no_space {
                        Cell("up, no space left".into(), Some(Color::Yellow))
                    } else {
                        Cell("up".into(), Some(Color::Green))
                    },
                    s.successor.clone().unwrap_or_else(|| "-".into()),
                    s.predecessor.clone().unwrap_or_else(|| "-".into()),
                    format!(
                        "{}, {}, {}{}",
                        plural(s.files, "file"),
                        plural(s.chunks, "chunk"),
                        human_size(s.bytes),
                        match s.uploads_pending {
                            0 => String::new(),
                            n => format!(" ({} pending)", plural(n, "upload")),
                        }
                    ),
                    heal_text(&s.heal),
                ),
                Err(e) => (
                    Cell("DOWN".into(), Some(Color::Red)),
                    "-".into(),
                    "-".into(),
                    e.clone(),
                    Cell(String::new(), None),
                ),
            };
            vec![
                r.position.to_string().into(),
                r.member.name.clone().into(),
                id.into(),
                format!("{:.1} %", r.share * 100.0).into(),
                r.member.addr.clone().into(),
                state,
                successor.into(),
                predecessor.into(),
                heal,
                stores.into(),
            ]
        })
        .collect();
    let text = table(
        &[
            "#",
            "SERVER",
            "ID",
            "SHARE",
            "ADDRESS",
            "STATE",
            "SUCCESSOR",
            "PREDECESSOR",
            "HEAL",
            "STORES",
        ],
        rows,
        style,
    );
    let outside: Vec<&str> = reports
        .iter()
        .filter(|r| matches!(r.standing, Some(Standing::Alone | Standing::Apart)))
        .map(|r| r.member.name.as_str())
        .collect();
    if outside.is_empty() {
        return text;
    }
    let (who, verb) = match outside.as_slice() {
        [one] => (one.to_string(), "answers"),
        many => (many.join(", "), "answer"),
    };
    format!(
        "{text}\n{}",
        style.paint(
            &format!(
                "{who} {verb} but {} not in one ring with the others: the server's log says \
                 why (its tls/ca.pem and certificate, its cluster.key, or an address it cannot reach)",
                if outside.len() == 1 { "is" } else { "are" }
            ),
            Color::Red
        )
    )
}

/// A server's healing in a few words: "healed in 0.4 s", "3 copies missing".
fn heal_text(heal: &crate::protocol::HealStatus) -> Cell {
    if heal.missing > 0 {
        return Cell(
            format!(
                "{} missing",
                plural(heal.missing, "copy").replace("copys", "copies")
            ),
            Some(Color::Yellow),
        );
    }
    match heal.healed_in_secs {
        Some(secs) if heal.copied > 0 => Cell(
            format!("healed in {secs:.1} s ({} copied)", heal.copied),
            Some(Color::Green),
        ),
        Some(_) => Cell("ok".into(), Some(Color::Green)),
        None if heal.rounds == 0 => Cell("starting".into(), None),
        None => Cell("healing".into(), Some(Color::Yellow)),
    }
}

/// WHERE: each chunk, its size, and each copy's server and state.
pub fn where_table(location: &Location, style: Style) -> String {
    let m = &location.manifest;
    let rows = location
        .chunks
        .iter()
        .enumerate()
        .map(|(i, copies)| {
            let (start, end) = crate::placement::chunk_range(m.size, m.chunks, i as u32 + 1);
            let mut row: Vec<Cell> =
                vec![(i + 1).to_string().into(), human_size(end - start).into()];
            for copy in copies {
                let (state, color) = match copy.present {
                    Some(true) => ("ok", Color::Green),
                    Some(false) => ("missing", Color::Yellow),
                    None => ("down", Color::Red),
                };
                row.push(Cell(format!("{} {state}", copy.server), Some(color)));
            }
            row
        })
        .collect();
    const ORDINALS: [&str; 5] = ["FIRST", "SECOND", "THIRD", "FOURTH", "FIFTH"];
    let copies = location.chunks.first().map_or(0, Vec::len);
    let names: Vec<String> = match copies {
        1 => vec!["COPY".into()],
        k => (0..k)
            .map(|i| match ORDINALS.get(i) {
                Some(ordinal) => format!("{ordinal} COPY"),
                None => format!("COPY {}", i + 1),
            })
            .collect(),
    };
    let mut header = vec!["CHUNK", "SIZE"];
    header.extend(names.iter().map(String::as_str));
    format!(
        "{}: {}, {} chunks, stored {} UTC\n{}",
        m.name,
        human_size(m.size),
        m.chunks,
        time_of(m.stored_at),
        table(&header, rows, style)
    )
}

/// DU: `1.5 MiB  3 files  docs/` (`/`: all the user's files).
pub fn du_text(info: &UsageInfo) -> String {
    let r = &info.report;
    let path = match (info.path.as_str(), r.path_is_file) {
        ("", _) => "/".to_string(),
        (file, true) => file.to_string(),
        (folder, false) => format!("{folder}/"),
    };
    format!(
        "{}  {}  {path}",
        human_size(r.path_bytes),
        plural(r.path_files, "file")
    )
}

fn du_json(info: &UsageInfo) -> Value {
    let r = &info.report;
    json!({
        "path": info.path,
        "file": r.path_is_file,
        "files": r.path_files,
        "bytes": r.path_bytes,
    })
}

/// What the user may still store: the quota's room, or the cluster's free
/// space if that is less (or there is no quota).
fn available(info: &UsageInfo) -> u64 {
    let r = &info.report;
    match r.quota {
        Some(quota) => quota.saturating_sub(r.used()).min(info.cluster_free),
        None => info.cluster_free,
    }
}

/// DF: used, quota, what is left, and the cluster's free space; what the use
/// is made of when uploads or kept versions count too.
/// Where the recipient of `share` sees it.
fn seen_as(me: &str, share: &Share) -> String {
    if share.owner == me {
        format!("/{}", share.path)
    } else {
        format!("/{}/{}/{}", crate::sharing::SHARED, share.owner, share.path)
    }
}

/// `shares`: what `me` shares, then what is shared with `me`.
fn shares_text(me: &str, shares: &[Share], style: Style) -> String {
    // The shares on one side, each with the user on the other.
    let rows = |mine: bool| -> Vec<Vec<Cell>> {
        shares
            .iter()
            .filter(|s| (s.owner == me) == mine && (mine || s.user == me))
            .map(|s| {
                let other = if mine { &s.user } else { &s.owner };
                vec![
                    seen_as(me, s).into(),
                    other.clone().into(),
                    s.access.as_str().to_string().into(),
                ]
            })
            .collect()
    };
    let (mine, theirs) = (rows(true), rows(false));
    let mut parts = Vec::new();
    parts.push(if mine.is_empty() {
        "you share nothing".to_string()
    } else {
        table(&["YOU SHARE", "WITH", "ACCESS"], mine, style)
    });
    parts.push(if theirs.is_empty() {
        "nothing is shared with you".to_string()
    } else {
        table(&["SHARED WITH YOU", "BY", "ACCESS"], theirs, style)
    });
    parts.join("\n")
}

pub fn df_table(info: &UsageInfo, style: Style) -> String {
    let r = &info.report;
    let (quota, share) = match r.quota {
        Some(q) => (
            crate::quota::size_text(q),
            match q {
                0 => "-".to_string(),
                q => format!("{:.1} %", r.used() as f64 * 100.0 / q as f64),
            },
        ),
        None => ("none".to_string(), "-".to_string()),
    };
    let full = r.quota.is_some_and(|q| r.used() >= q);
    let rows = vec![vec![
        human_size(r.used()).into(),
        quota.into(),
        Cell(share, full.then_some(Color::Red)),
        human_size(available(info)).into(),
        human_size(info.cluster_free).into(),
    ]];
    let mut text = table(
        &["USED", "QUOTA", "USE", "AVAILABLE", "CLUSTER FREE"],
        rows,
        style,
    );
    if r.uploads + r.kept > 0 {
        let mut parts = vec![format!(
            "{} in {}",
            human_size(r.bytes),
            plural(r.files, "file")
        )];
        if r.uploads > 0 {
            parts.push(format!(
                "{} in {} not committed yet",
                human_size(r.upload_bytes),
                plural(r.uploads, "upload")
            ));
        }
        if r.kept > 0 {
            parts.push(format!(
                "{} in {} kept for reads under way",
                human_size(r.kept_bytes),
                plural(r.kept, "replaced version")
            ));
        }
        text.push_str(&format!("\nused: {}", parts.join(", ")));
    }
    if info.answered < info.servers {
        text.push_str(&format!(
            "\n(cluster free space of the {} of {} servers that answered, over {} copies)",
            info.answered, info.servers, info.copies
        ));
    }
    text
}

fn df_json(info: &UsageInfo) -> Value {
    let r = &info.report;
    json!({
        "used": r.used(),
        "files": r.files,
        "bytes": r.bytes,
        "uploads": r.uploads,
        "upload_bytes": r.upload_bytes,
        "kept": r.kept,
        "kept_bytes": r.kept_bytes,
        "quota": r.quota,
        "available": available(info),
        "cluster_free": info.cluster_free,
        "copies": info.copies,
        "servers_answered": info.answered,
        "servers": info.servers,
    })
}

/// Columns padded to their widest cell, in terminal columns before colour
/// (a CJK character takes two, a combining accent none).
fn table(header: &[&str], rows: Vec<Vec<Cell>>, style: Style) -> String {
    use unicode_width::UnicodeWidthStr;
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.0.width());
        }
    }
    let render = |cells: Vec<Cell>| {
        let last = cells.len().saturating_sub(1);
        let line: Vec<String> = cells
            .into_iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (Cell(text, color), &w))| {
                let pad = if i == last {
                    String::new()
                } else {
                    " ".repeat(w - text.width())
                };
                match color {
                    Some(c) => style.paint(&text, c) + &pad,
                    None => text + &pad,
                }
            })
            .collect();
        line.join("  ")
    };
    let mut out = vec![render(
        header.iter().map(|h| Cell(h.to_string(), None)).collect(),
    )];
    out.extend(rows.into_iter().map(render));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_says_ok_degraded_or_unreadable() {
        let file = |name: &str, copies: Vec<u32>| {
            DirItem::File(crate::client::FileInfo {
                name: name.into(),
                size: 10,
                chunks: copies.len() as u32,
                stored_at: 0,
                version: crate::protocol::Version { gen: 1, writer: 1 },
                copies,
                wanted: 2,
                etag: String::new(),
            })
        };
        let table = list_table(
            "",
            &[
                file("a", vec![2, 2]),
                file("b", vec![2, 1]),
                file("c", vec![0, 1, 0]),
            ],
            Style::PLAIN,
        );
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert!(row("a ").ends_with("ok"), "{table}");
        assert!(row("b ").ends_with("degraded (1 copy missing)"), "{table}");
        assert!(
            row("c ").ends_with("unreadable (2 chunks with no copy)"),
            "{table}"
        );
    }

    /// Wide (CJK) names take two columns each, and the columns after them
    /// still line up on a terminal.
    #[test]
    fn columns_line_up_with_wide_and_combining_characters() {
        use unicode_width::UnicodeWidthStr;
        let rows = ["報告書.pdf", "cafe\u{301}.txt", "plain.txt"]
            .iter()
            .map(|name| vec![Cell(name.to_string(), None), Cell("10 B".into(), None)])
            .collect();
        let table = table(&["NAME", "SIZE"], rows, Style::PLAIN);
        let starts: Vec<usize> = table
            .lines()
            .map(|line| {
                let at = line.find("SIZE").or_else(|| line.find("10 B")).unwrap();
                line[..at].width()
            })
            .collect();
        assert_eq!(starts.len(), 4, "{table}");
        assert!(
            starts.iter().all(|&s| s == starts[0]),
            "{starts:?}\n{table}"
        );
        assert_eq!(starts[0], "報告書.pdf".width() + 2, "{table}");
    }

    #[test]
    fn a_tilde_is_the_home_folder_only_at_the_start() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
        assert_eq!(local_path("~"), home);
        assert_eq!(local_path("~/a/b.txt"), home.join("a/b.txt"));
        assert_eq!(local_path("~bob/x"), PathBuf::from("~bob/x"));
        assert_eq!(local_path("a/~/x"), PathBuf::from("a/~/x"));
        assert_eq!(local_path("/abs"), PathBuf::from("/abs"));
    }

    #[test]
    fn every_verb_and_alias_parses_and_has_an_example_of_itself() {
        for v in VERBS {
            assert!(v.example.starts_with(v.name), "{}: {}", v.name, v.example);
            let parsed = parse_line(v.example).unwrap_or_else(|e| panic!("{}: {e}", v.example));
            assert!(parsed.is_some(), "{}", v.example);
            for alias in v.aliases {
                assert_eq!(find_verb(alias).map(|f| f.name), Some(v.name));
            }
            assert_eq!(
                parse_line(&format!("{} --help", v.name)).unwrap(),
                Some(Command::Help {
                    topic: Some(v.name)
                })
            );
        }
    }

    #[test]
    fn parses_commands_aliases_and_quotes() {
        let cases: &[(&str, Command)] = &[
            (
                "put a.txt",
                Command::Put {
                    local: "a.txt".into(),
                    remote: None,
                    flags: Flags::default(),
                    wild: false,
                },
            ),
            (
                "PUT \"my file.txt\" 'remote name'",
                Command::Put {
                    local: "my file.txt".into(),
                    remote: Some("remote name".into()),
                    flags: Flags::default(),
                    wild: false,
                },
            ),
            (
                "Get x ./y",
                Command::Get {
                    remote: "x".into(),
                    local: Some("./y".into()),
                    flags: Flags::default(),
                    wild: false,
                },
            ),
            (
                "ls",
                Command::List {
                    folder: String::new(),
                    recursive: false,
                    long: false,
                    wild: false,
                },
            ),
            (
                "ls -lR ../x",
                Command::List {
                    folder: "../x".into(),
                    recursive: true,
                    long: true,
                    wild: false,
                },
            ),
            (
                "LIST docs/ -R",
                Command::List {
                    folder: "docs/".into(),
                    recursive: true,
                    long: true,
                    wild: false,
                },
            ),
            ("cd", Command::Cd { path: "/".into() }),
            ("CD ..", Command::Cd { path: "..".into() }),
            ("pwd", Command::Pwd),
            (
                "rm x",
                Command::Delete {
                    remote: "x".into(),
                    wild: false,
                },
            ),
            (
                "rm *.tmp",
                Command::Delete {
                    remote: "*.tmp".into(),
                    wild: true,
                },
            ),
            (
                "rm \"a*b\"",
                Command::Delete {
                    remote: "a*b".into(),
                    wild: false,
                },
            ),
            (
                "put -rp photos backup",
                Command::Put {
                    local: "photos".into(),
                    remote: Some("backup".into()),
                    flags: Flags {
                        recursive: true,
                        resume: false,
                        keep_times: true,
                    },
                    wild: false,
                },
            ),
            (
                "put 'my *.pdf'* docs/",
                Command::Put {
                    local: "my \\*.pdf*".into(),
                    remote: Some("docs/".into()),
                    flags: Flags::default(),
                    wild: true,
                },
            ),
            (
                "get -c -R docs -- -x",
                Command::Get {
                    remote: "docs".into(),
                    local: Some("-x".into()),
                    flags: Flags {
                        recursive: true,
                        resume: true,
                        keep_times: false,
                    },
                    wild: false,
                },
            ),
            (
                "get photos/2024-* -",
                Command::Get {
                    remote: "photos/2024-*".into(),
                    local: Some("-".into()),
                    flags: Flags::default(),
                    wild: true,
                },
            ),
            (
                "ls -l *.pdf",
                Command::List {
                    folder: "*.pdf".into(),
                    recursive: false,
                    long: true,
                    wild: true,
                },
            ),
            ("status", Command::Status),
            (
                "du",
                Command::Du {
                    path: String::new(),
                },
            ),
            (
                "DU docs/",
                Command::Du {
                    path: "docs/".into(),
                },
            ),
            ("df", Command::Df),
            (
                "share docs bob",
                Command::Share {
                    path: "docs".into(),
                    user: "bob".into(),
                    access: Some(Access::Read),
                },
            ),
            (
                "SHARE docs bob WRITE",
                Command::Share {
                    path: "docs".into(),
                    user: "bob".into(),
                    access: Some(Access::Write),
                },
            ),
            (
                "unshare docs bob",
                Command::Share {
                    path: "docs".into(),
                    user: "bob".into(),
                    access: None,
                },
            ),
            ("shares", Command::Shares),
            ("quit", Command::Exit),
            ("help", Command::Help { topic: None }),
            (
                "HELP del",
                Command::Help {
                    topic: Some("delete"),
                },
            ),
            ("put --help", Command::Help { topic: Some("put") }),
            ("lpwd", Command::Lpwd),
            ("lcd", Command::Lcd { path: None }),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line).unwrap().as_ref(), Some(want), "{line}");
        }
        assert_eq!(parse_line("   ").unwrap(), None);
    }

    #[test]
    fn usage_errors_are_one_line() {
        for (line, want) in [
            ("put", "usage: PUT LOCAL [REMOTE] [-r] [-c] [-p]"),
            ("put -r", "usage: PUT LOCAL [REMOTE] [-r] [-c] [-p]"),
            ("get a b c", "usage: GET REMOTE [LOCAL] [-r] [-c] [-p]"),
            ("put -rx a", "PUT: unknown option -rx"),
            ("delete", "usage: DELETE REMOTE"),
            ("ls a b", "usage: LS [FOLDER] [-l] [-R]"),
            ("list a b", "usage: LIST [FOLDER] [-R]"),
            ("ls -x", "LS: unknown option -x"),
            ("list -lx", "LIST: unknown option -lx"),
            ("cd a b", "usage: CD [FOLDER]"),
            ("share docs", "usage: SHARE PATH USER [read|write]"),
            (
                "share docs bob admin",
                "`admin`: a share is `read` or `write`",
            ),
            ("unshare docs", "usage: UNSHARE PATH USER"),
            ("shares x", "SHARES takes no arguments"),
            ("pwd x", "PWD takes no arguments"),
            ("du a b", "usage: DU [PATH]"),
            ("df x", "DF takes no arguments"),
            (
                "frobnicate",
                "unknown command \"frobnicate\"; type HELP for the list",
            ),
            ("put \"open", "unbalanced quotes"),
        ] {
            assert_eq!(parse_line(line).unwrap_err(), want, "{line}");
        }
    }

    #[test]
    fn remote_names_resolve_against_the_current_folder() {
        for (cwd, typed, want) in [
            ("", "a.txt", "a.txt"),
            ("docs", "a.txt", "docs/a.txt"),
            ("docs/2026", "../a.txt", "docs/a.txt"),
            ("docs/2026", "../../a.txt", "a.txt"),
            ("docs/2026", "/a.txt", "a.txt"),
            ("docs", "./x/./y/../z", "docs/x/z"),
            ("docs", "/photos/cat.jpg", "photos/cat.jpg"),
        ] {
            assert_eq!(resolve(cwd, typed).unwrap(), want, "{cwd} {typed}");
        }
        for (cwd, typed, want) in [
            ("docs", "", "docs"),
            ("docs", "/", ""),
            ("docs", "..", ""),
            ("docs", "sub/", "docs/sub"),
            ("docs/2026", "../..", ""),
            ("", ".", ""),
        ] {
            assert_eq!(resolve_path(cwd, typed).unwrap(), want, "{cwd} {typed}");
        }
        for (cwd, typed, why) in [
            ("", "..", "`..` goes above the top folder"),
            ("docs", "../../x", "`..` goes above the top folder"),
            ("docs", "a//b", "empty segment"),
            ("docs", "x/", "cannot end with `/`"),
            ("docs", "/", "cannot end with `/`"),
            ("docs", "..", "the top folder is not a file"),
            ("", "", "cannot be empty"),
            ("", "a\\b", "cannot contain"),
        ] {
            let e = resolve(cwd, typed).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{typed}: {e}");
            let e = e.to_string();
            assert!(e.contains(why) && !e.contains('\n'), "{cwd} {typed}: {e}");
        }
    }

    #[test]
    fn put_stores_into_the_folder_named_or_the_current_one() {
        let local = Path::new("/tmp/report.pdf");
        for (cwd, remote, want) in [
            ("", None, "report.pdf"),
            ("docs", None, "docs/report.pdf"),
            ("docs", Some("r.pdf"), "docs/r.pdf"),
            ("docs", Some("2026/"), "docs/2026/report.pdf"),
            ("docs", Some(".."), "report.pdf"),
            ("docs", Some("/"), "report.pdf"),
            ("docs/2026", Some("../."), "docs/report.pdf"),
        ] {
            assert_eq!(
                put_target(cwd, local, remote).unwrap(),
                want,
                "{cwd} {remote:?}"
            );
        }
    }

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_size(1 << 40), "1.0 TiB");
    }

    #[test]
    fn times_are_utc_without_the_t() {
        assert_eq!(time_of(0), "1970-01-01 00:00:00");
    }
}
