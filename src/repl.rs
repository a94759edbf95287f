//! The interactive prompt: line editing and history (rustyline), completion
//! of commands, local paths and remote names, greyed argument hints, a prompt
//! that shows the ring's health, progress bars, and Ctrl-C that cancels a
//! transfer rather than the client.
//!
//! `readline()` blocks, so the prompt runs on the calling thread and
//! `block_on`s each command; a background task pings the servers every few
//! seconds so the prompt's `[3/4 dfs2 down]` is current.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossterm::style::{Color, Stylize};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Runtime;

use crate::cli::{self, Command, Outcome, Style, COMMANDS};
use crate::client::{Client, Progress};
use crate::error::{Error, Result};
use crate::standing::Standing;

/// Transfers smaller than this get no progress bar.
const BAR_THRESHOLD: u64 = 1 << 20;
/// How often the prompt's view of the ring is refreshed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Command names and aliases, for completion and hints: (typed, canonical).
const VERBS: &[(&str, &str)] = &[
    ("put", "put"),
    ("get", "get"),
    ("list", "list"),
    ("ls", "list"),
    ("delete", "delete"),
    ("rm", "delete"),
    ("mv", "mv"),
    ("cp", "cp"),
    ("where", "where"),
    ("verify", "verify"),
    ("status", "status"),
    ("help", "help"),
    ("exit", "exit"),
    ("quit", "exit"),
];

/// The prompt's session.
pub struct Repl<'a> {
    runtime: &'a Runtime,
    client: Arc<Client>,
    download_dir: PathBuf,
    style: Style,
    remote_names: Arc<Mutex<Vec<String>>>,
}

impl<'a> Repl<'a> {
    pub fn new(runtime: &'a Runtime, client: Arc<Client>, download_dir: &Path) -> Repl<'a> {
        Repl {
            runtime,
            client,
            download_dir: download_dir.to_path_buf(),
            style: Style::detect(),
            remote_names: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Reads and runs commands until EXIT or Ctrl-D.
    pub fn run(&self) -> Result<()> {
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .history_ignore_space(true)
            .history_ignore_dups(true)
            .map_err(|e| Error::Internal(e.to_string()))?
            .max_history_size(1000)
            .map_err(|e| Error::Internal(e.to_string()))?
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor: Editor<DfsHelper, DefaultHistory> =
            Editor::with_config(config).map_err(|e| Error::Internal(e.to_string()))?;
        editor.set_helper(Some(DfsHelper {
            remote_names: Arc::clone(&self.remote_names),
            files: FilenameCompleter::new(),
            color: self.style.color,
        }));
        let history = history_path(self.client.user());
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }

        let pinger = {
            let client = Arc::clone(&self.client);
            self.runtime.spawn(async move {
                loop {
                    client.refresh_health().await;
                    tokio::time::sleep(HEALTH_INTERVAL).await;
                }
            })
        };
        self.refresh_names();
        cli::print_line("type HELP for the commands; Tab completes; Ctrl-D leaves");
        loop {
            let prompt = prompt(self.client.user(), &self.client.standing(), self.style);
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(path) = &history {
                            save_history(&mut editor, path);
                        }
                    }
                    if self.execute(&line) {
                        break;
                    }
                }
                // Ctrl-C at the prompt clears the line.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    pinger.abort();
                    return Err(Error::Internal(format!("reading a line: {e}")));
                }
            }
        }
        pinger.abort();
        Ok(())
    }

    /// Runs one line; true when the user asked to leave.
    fn execute(&self, line: &str) -> bool {
        let command = match cli::parse_line(line) {
            Ok(None) => return false,
            Ok(Some(Command::Exit)) => return true,
            Ok(Some(command)) => command,
            Err(msg) => {
                self.error(&msg);
                return false;
            }
        };
        let bar = Bar::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let result = self.runtime.block_on(async {
            tokio::select! {
                result = cli::run(&self.client, &command, &self.download_dir, &bar) => result,
                _ = tokio::signal::ctrl_c() => Err(Error::Cancelled),
            }
        });
        bar.finish();
        match result {
            Ok(outcome) => {
                cli::print_line(&outcome.text(self.style));
                if matches!(
                    outcome,
                    Outcome::Put { .. } | Outcome::Delete { .. } | Outcome::List { .. }
                ) {
                    self.refresh_names();
                }
            }
            Err(e) => self.error(&e.to_string()),
        }
        false
    }

    fn error(&self, msg: &str) {
        cli::eprint_line(&self.style.paint(&format!("error: {msg}"), Color::Red));
    }

    /// Refreshes the cached remote names that completion offers.
    fn refresh_names(&self) {
        if let Ok(files) = self.runtime.block_on(self.client.list()) {
            *self.remote_names.lock().expect("names lock") =
                files.into_iter().map(|f| f.name).collect();
        }
    }
}

/// `alice@ringdfs [4/4]> `, `alice@ringdfs [3/4 dfs2 down]> `, or
/// `alice@ringdfs [3/4 dfs2 alone]> ` for a server that answers but is not
/// in one ring with the others (see [`Standing`]): the plain text and the
/// coloured one. `health` is each member's standing, `None` if it is down.
pub fn prompt(user: &str, health: &[(String, Option<Standing>)], style: Style) -> (String, String) {
    let healthy = health
        .iter()
        .filter(|(_, s)| *s == Some(Standing::InRing))
        .count();
    let named = |state: Option<Standing>| -> Vec<&str> {
        health
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(name, _)| name.as_str())
            .collect()
    };
    let problems: Vec<String> = [
        (named(None), "down"),
        (named(Some(Standing::Alone)), "alone"),
        (named(Some(Standing::Apart)), "apart"),
    ]
    .into_iter()
    .filter(|(names, _)| !names.is_empty())
    .map(|(names, word)| format!("{} {word}", names.join(" ")))
    .collect();
    let ring = if problems.is_empty() {
        format!("[{healthy}/{}]", health.len())
    } else {
        format!("[{healthy}/{} {}]", health.len(), problems.join(", "))
    };
    let plain = format!("{user}@ringdfs {ring}> ");
    let color = if problems.is_empty() {
        Color::Green
    } else {
        Color::Yellow
    };
    let styled = format!(
        "{}@ringdfs {}> ",
        style.paint(user, Color::Cyan),
        style.paint(&ring, color)
    );
    (plain, styled)
}

/// Where a user's command history lives: `$XDG_STATE_HOME/ringdfs/` or
/// `~/.local/state/ringdfs/`, one file per user.
pub fn history_path(user: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("ringdfs").join(format!("history-{user}")))
}

fn save_history(editor: &mut Editor<DfsHelper, DefaultHistory>, path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = editor.save_history(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot save history");
    }
}

/// A progress bar on standard error, for transfers over 1 MiB on a terminal.
pub struct Bar {
    bar: ProgressBar,
    enabled: bool,
}

impl Bar {
    pub fn new(enabled: bool) -> Bar {
        Bar {
            bar: ProgressBar::hidden(),
            enabled,
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if self.enabled && total > BAR_THRESHOLD {
            self.bar.set_length(total);
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {bytes:>10}/{total_bytes} {binary_bytes_per_sec:>12}  {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn add(&self, delta: i64) {
        if delta >= 0 {
            self.bar.inc(delta as u64);
        } else {
            self.bar.dec(delta.unsigned_abs());
        }
    }
}

/// Completion and hints for the prompt.
struct DfsHelper {
    remote_names: Arc<Mutex<Vec<String>>>,
    files: FilenameCompleter,
    color: bool,
}

/// What the word under the cursor is.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    Command,
    LocalPath,
    RemoteName,
    Nothing,
}

/// The words before the cursor (unquoted), and where the word being typed
/// starts; `partial` is that word so far, unquoted.
#[derive(Debug, PartialEq, Eq)]
pub struct Typed {
    pub words: Vec<String>,
    pub start: usize,
    pub partial: String,
}

/// Splits `line` (up to the cursor) into finished words and the word being
/// typed, honouring quotes and backslashes roughly as a shell does.
pub fn typed(line: &str) -> Typed {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                if !in_word {
                    start = i;
                    in_word = true;
                }
                quote = Some(c);
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                if !in_word {
                    start = i;
                    in_word = true;
                }
                if let Some((_, next)) = chars.next() {
                    current.push(next);
                }
            }
            (_, c) => {
                if !in_word {
                    start = i;
                    in_word = true;
                }
                current.push(c);
            }
        }
    }
    if !in_word {
        start = line.len();
    }
    Typed {
        words,
        start,
        partial: current,
    }
}

/// What kind of word is typed after `words`.
pub fn slot_after(words: &[String]) -> Slot {
    let Some(verb) = words.first() else {
        return Slot::Command;
    };
    let verb = canonical(verb);
    match (verb, words.len()) {
        (Some("put"), 1) => Slot::LocalPath,
        (Some("put"), 2) => Slot::RemoteName,
        (Some("get" | "delete" | "where" | "verify"), 1) => Slot::RemoteName,
        (Some("mv" | "cp"), 1 | 2) => Slot::RemoteName,
        (Some("get"), 2) => Slot::LocalPath,
        _ => Slot::Nothing,
    }
}

fn canonical(verb: &str) -> Option<&'static str> {
    let verb = verb.to_ascii_lowercase();
    VERBS.iter().find(|(v, _)| *v == verb).map(|(_, c)| *c)
}

/// The greyed hint after `line` (the cursor at its end): the rest of a command
/// name being typed, then the arguments still to come.
pub fn hint_for(line: &str) -> Option<String> {
    let t = typed(line);
    let args_of = |canon: &str| {
        COMMANDS
            .iter()
            .find(|(n, _, _)| *n == canon)
            .map(|(_, args, _)| args.split_whitespace().collect::<Vec<_>>())
    };
    if t.words.is_empty() {
        // Typing the command: complete it if only one command fits.
        if t.partial.is_empty() {
            return None;
        }
        let lower = t.partial.to_ascii_lowercase();
        let fits: Vec<_> = VERBS
            .iter()
            .filter(|(v, _)| v.starts_with(&lower))
            .collect();
        let [(verb, canon)] = fits.as_slice() else {
            return None;
        };
        let args = args_of(canon)?;
        let rest = &verb[lower.len()..];
        return Some(if args.is_empty() {
            rest.to_string()
        } else {
            format!("{rest} {}", args.join(" "))
        });
    }
    if !t.partial.is_empty() {
        return None; // mid-word: no hint
    }
    let args = args_of(canonical(&t.words[0])?)?;
    let remaining = args.get(t.words.len() - 1..)?;
    if remaining.is_empty() {
        return None;
    }
    Some(remaining.join(" "))
}

/// Candidates from `names` that start with `partial`, quoted where needed.
pub fn complete_from(names: &[String], partial: &str, after: &str) -> Vec<Pair> {
    let mut out: Vec<Pair> = names
        .iter()
        .filter(|n| n.starts_with(partial))
        .map(|n| Pair {
            display: n.clone(),
            replacement: format!("{}{after}", shell_words::quote(n)),
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out
}

impl Completer for DfsHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let t = typed(&line[..pos]);
        match slot_after(&t.words) {
            Slot::Command => {
                let verbs: Vec<String> = VERBS.iter().map(|(v, _)| v.to_string()).collect();
                let partial = t.partial.to_ascii_lowercase();
                Ok((t.start, complete_from(&verbs, &partial, " ")))
            }
            Slot::RemoteName => {
                let names = self.remote_names.lock().expect("names lock").clone();
                Ok((t.start, complete_from(&names, &t.partial, " ")))
            }
            Slot::LocalPath => self.files.complete(line, pos, ctx),
            Slot::Nothing => Ok((pos, Vec::new())),
        }
    }
}

impl Hinter for DfsHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        hint_for(line).map(|h| {
            if line.ends_with(char::is_whitespace) || typed(line).words.is_empty() {
                h
            } else {
                format!(" {h}")
            }
        })
    }
}

impl Highlighter for DfsHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color {
            Cow::Owned(hint.dark_grey().to_string())
        } else {
            Cow::Borrowed(hint)
        }
    }

    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for DfsHelper {}
impl Helper for DfsHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_words_honour_quotes() {
        let t = typed("get \"my fi");
        assert_eq!(t.words, ["get"]);
        assert_eq!((t.start, t.partial.as_str()), (4, "my fi"));
        let t = typed("put a.txt ");
        assert_eq!(t.words, ["put", "a.txt"]);
        assert_eq!((t.start, t.partial.as_str()), (10, ""));
        let t = typed("rm my\\ fi");
        assert_eq!(t.words, ["rm"]);
        assert_eq!(t.partial, "my fi");
    }

    #[test]
    fn slots_by_command_and_position() {
        let w = |s: &str| typed(s).words;
        assert_eq!(slot_after(&w("")), Slot::Command);
        assert_eq!(slot_after(&w("put ")), Slot::LocalPath);
        assert_eq!(slot_after(&w("PUT a ")), Slot::RemoteName);
        assert_eq!(slot_after(&w("get ")), Slot::RemoteName);
        assert_eq!(slot_after(&w("get x ")), Slot::LocalPath);
        assert_eq!(slot_after(&w("rm ")), Slot::RemoteName);
        assert_eq!(slot_after(&w("where ")), Slot::RemoteName);
        assert_eq!(slot_after(&w("ls ")), Slot::Nothing);
    }

    #[test]
    fn hints_show_the_arguments_still_to_come() {
        assert_eq!(hint_for("put ").as_deref(), Some("LOCAL [REMOTE]"));
        assert_eq!(hint_for("put a.txt ").as_deref(), Some("[REMOTE]"));
        assert_eq!(hint_for("put a.txt b ").as_deref(), None);
        assert_eq!(hint_for("wh").as_deref(), Some("ere REMOTE"));
        assert_eq!(hint_for("sta").as_deref(), Some("tus"));
        assert_eq!(hint_for("GET").as_deref(), Some(" REMOTE [LOCAL]"));
        assert_eq!(hint_for("get rep").as_deref(), None);
        assert_eq!(hint_for("").as_deref(), None);
    }

    #[test]
    fn remote_completion_quotes_names_with_spaces() {
        let names = vec!["my file.txt".to_string(), "my.txt".into(), "other".into()];
        let got: Vec<_> = complete_from(&names, "my", " ")
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(got, ["'my file.txt' ", "my.txt "]);
    }

    #[test]
    fn the_prompt_names_servers_that_are_down() {
        let health = |downs: &[&str]| {
            ["dfs1", "dfs2", "dfs3", "dfs4"]
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        (!downs.contains(n)).then_some(Standing::InRing),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            prompt("alice", &health(&[]), Style::PLAIN).0,
            "alice@ringdfs [4/4]> "
        );
        assert_eq!(
            prompt("alice", &health(&["dfs2"]), Style::PLAIN).0,
            "alice@ringdfs [3/4 dfs2 down]> "
        );
    }

    #[test]
    fn the_prompt_names_servers_outside_the_ring_as_not_healthy() {
        let health = |states: [Option<Standing>; 4]| {
            ["dfs1", "dfs2", "dfs3", "dfs4"]
                .iter()
                .zip(states)
                .map(|(n, s)| (n.to_string(), s))
                .collect::<Vec<_>>()
        };
        let ok = Some(Standing::InRing);
        assert_eq!(
            prompt(
                "alice",
                &health([ok, Some(Standing::Alone), ok, ok]),
                Style::PLAIN
            )
            .0,
            "alice@ringdfs [3/4 dfs2 alone]> "
        );
        assert_eq!(
            prompt(
                "alice",
                &health([ok, Some(Standing::Apart), None, Some(Standing::Apart)]),
                Style::PLAIN
            )
            .0,
            "alice@ringdfs [1/4 dfs3 down, dfs2 dfs4 apart]> "
        );
    }
}
