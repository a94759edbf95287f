//! The interactive prompt: line editing and history (rustyline), completion
//! of commands, local paths and remote names (folder by folder, relative to
//! the current folder), greyed argument hints, a prompt that shows the
//! current folder and the ring's health, progress bars, and Ctrl-C that
//! cancels a transfer rather than the client.
//!
//! `readline()` blocks, so the prompt runs on the calling thread and
//! `block_on`s each command; a background task pings the servers every few
//! seconds so the prompt's `[3/4 dfs2 down]` is current.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

use crate::cli::{self, Command, Outcome, Style};
use crate::client::{one_command, Client, DirItem, Progress};
use crate::error::{Error, Result};
use crate::standing::Standing;

/// Transfers smaller than this get no progress bar.
const BAR_THRESHOLD: u64 = 1 << 20;
/// How often the prompt's view of the ring is refreshed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How long Tab reuses a folder's listing (any command forgets them all).
const COMPLETION_TTL: Duration = Duration::from_secs(5);
/// How long Tab waits for a listing before offering nothing.
const COMPLETION_WAIT: Duration = Duration::from_secs(3);
/// At most this many remote names are offered at once.
const COMPLETION_MAX: usize = 1000;

/// The prompt's session.
pub struct Repl<'a> {
    runtime: &'a Runtime,
    client: Arc<Client>,
    download_dir: PathBuf,
    style: Style,
    /// The current folder (`""`: the top), as `cli::run` takes it.
    cwd: Arc<Mutex<String>>,
    remote: Arc<RemoteNames>,
}

impl<'a> Repl<'a> {
    pub fn new(runtime: &'a Runtime, client: Arc<Client>, download_dir: &Path) -> Repl<'a> {
        Repl {
            runtime,
            remote: Arc::new(RemoteNames {
                runtime: runtime.handle().clone(),
                client: Arc::clone(&client),
                cache: Mutex::new(HashMap::new()),
            }),
            client,
            download_dir: download_dir.to_path_buf(),
            style: Style::detect(),
            cwd: Arc::new(Mutex::new(String::new())),
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
            remote: Arc::clone(&self.remote),
            cwd: Arc::clone(&self.cwd),
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
        cli::print_line("type HELP for the commands; Tab completes; Ctrl-D leaves");
        loop {
            let cwd = self.cwd.lock().expect("cwd lock").clone();
            let prompt = prompt(
                self.client.user(),
                &cwd,
                &self.client.standing(),
                self.style,
            );
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
        let cwd = self.cwd.lock().expect("cwd lock").clone();
        let result = self.runtime.block_on(async {
            tokio::select! {
                result = cli::run(&self.client, &command, &cwd, &self.download_dir, &bar) => result,
                _ = tokio::signal::ctrl_c() => Err(Error::Cancelled),
            }
        });
        bar.finish();
        // Whatever the command changed, Tab lists afresh.
        self.remote.forget();
        match result {
            Ok(Outcome::Cd { cwd }) => *self.cwd.lock().expect("cwd lock") = cwd,
            Ok(outcome) => {
                let text = outcome.text(self.style);
                if !text.is_empty() {
                    cli::print_line(&text);
                }
            }
            Err(e) => self.error(&e.to_string()),
        }
        false
    }

    fn error(&self, msg: &str) {
        cli::eprint_line(&self.style.paint(&format!("error: {msg}"), Color::Red));
    }
}

/// The remote names Tab offers: one folder's entries at a time, those
/// starting with what is typed, listed (by `ListDir`, from where they sort)
/// when first asked for and reused for a few seconds.
struct RemoteNames {
    runtime: tokio::runtime::Handle,
    client: Arc<Client>,
    /// By folder: its entries listed last.
    cache: Mutex<HashMap<String, Listed>>,
}

/// A folder's entries whose names start with `prefix`, as listed at `at`.
struct Listed {
    at: Instant,
    prefix: String,
    /// Every such entry (not cut off at `COMPLETION_MAX`).
    whole: bool,
    entries: Vec<Entry>,
}

/// One entry of a folder, for completion: its name in the folder, and
/// whether it is a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub folder: bool,
}

impl RemoteNames {
    /// The entries of `folder` (`""`: the top) whose names start with
    /// `prefix`; none if the servers do not answer within `COMPLETION_WAIT`.
    fn entries(&self, folder: &str, prefix: &str) -> Vec<Entry> {
        let matching = |entries: &[Entry]| -> Vec<Entry> {
            entries
                .iter()
                .filter(|e| e.name.starts_with(prefix))
                .cloned()
                .collect()
        };
        if let Some(listed) = self.cache.lock().expect("cache lock").get(folder) {
            if listed.whole
                && listed.at.elapsed() < COMPLETION_TTL
                && prefix.starts_with(&listed.prefix)
            {
                return matching(&listed.entries);
            }
        }
        let listing = self.runtime.block_on(async {
            let listing = one_command(list_matching(&self.client, folder, prefix));
            tokio::time::timeout(COMPLETION_WAIT, listing).await
        });
        let Ok(Ok((entries, whole))) = listing else {
            return Vec::new();
        };
        self.cache.lock().expect("cache lock").insert(
            folder.to_string(),
            Listed {
                at: Instant::now(),
                prefix: prefix.to_string(),
                whole,
                entries: entries.clone(),
            },
        );
        entries
    }

    fn forget(&self) {
        self.cache.lock().expect("cache lock").clear();
    }
}

/// The entries of `folder` whose names start with `prefix`, page by page
/// from where they sort to where they end, and whether that is all of them
/// (at most `COMPLETION_MAX` are listed).
async fn list_matching(client: &Client, folder: &str, prefix: &str) -> Result<(Vec<Entry>, bool)> {
    let inside = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let start = format!("{inside}{prefix}");
    let mut after = cursor_before(&inside, prefix);
    let mut out = Vec::new();
    loop {
        let (items, next) = client.list_dir_page(folder, after.as_deref()).await?;
        for item in &items {
            let path = item.path();
            let name = path.strip_prefix(&inside).unwrap_or(path);
            if name.starts_with(prefix) {
                out.push(Entry {
                    name: name.to_string(),
                    folder: matches!(item, DirItem::Folder(_)),
                });
                if out.len() >= COMPLETION_MAX {
                    return Ok((out, false));
                }
            } else if path > start.as_str() {
                return Ok((out, true)); // past every name that starts so
            }
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => return Ok((out, true)),
        }
    }
}

/// A listing cursor (see `DirEntry::cursor`) just before every name in the
/// folder `inside` (its path and a `/`, or `""` for the top) that starts
/// with `prefix`: the prefix with its last character one lower, then the
/// highest character. A listing skips the cursor's own name and starts at
/// it, so it starts where those names sort and misses none of them.
/// `None` (from the start) for an empty prefix.
pub fn cursor_before(inside: &str, prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let lower = match last as u32 {
        0 => return None,
        0xE000 => '\u{D7FF}',
        n => char::from_u32(n - 1)?,
    };
    let head: String = chars.into_iter().collect();
    Some(format!("{inside}{head}{lower}{}", char::MAX))
}

/// Splits a remote word being typed into its folder part, as typed (up to
/// and with the last `/`), and the start of a name in that folder.
pub fn split_partial(partial: &str) -> (&str, &str) {
    match partial.rfind('/') {
        Some(i) => partial.split_at(i + 1),
        None => ("", partial),
    }
}

/// What Tab offers for `entries` of the folder typed as `dir`: the whole
/// word, quoted where needed; a folder ends with `/` (to go on typing in
/// it), a file with a space. `folders_only` for `cd`, `ls`, `mkdir`, `rmdir`.
pub fn remote_candidates(dir: &str, entries: &[Entry], folders_only: bool) -> Vec<Pair> {
    let mut out: Vec<Pair> = entries
        .iter()
        .filter(|e| e.folder || !folders_only)
        .map(|e| {
            let slash = if e.folder { "/" } else { "" };
            let word = shell_words::quote(&format!("{dir}{}{slash}", e.name)).into_owned();
            Pair {
                display: format!("{}{slash}", e.name),
                replacement: if e.folder { word } else { word + " " },
            }
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out
}

/// `alice@ringdfs [4/4]> `, `alice@ringdfs [3/4 dfs2 down]> `, or
/// `alice@ringdfs [3/4 dfs2 alone]> ` for a server that answers but is not
/// in one ring with the others (see [`Standing`]): the plain text and the
/// coloured one. `health` is each member's standing, `None` if it is down.
/// Away from the top folder it shows the current folder `cwd` too:
/// `alice@ringdfs:/docs/2026 [4/4]> `.
pub fn prompt(
    user: &str,
    cwd: &str,
    health: &[(String, Option<Standing>)],
    style: Style,
) -> (String, String) {
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
    let (place, styled_place) = if cwd.is_empty() {
        (String::new(), String::new())
    } else {
        let place = format!(":{}", cli::shown_folder(cwd));
        let styled = style.paint(&place, Color::Blue);
        (place, styled)
    };
    let plain = format!("{user}@ringdfs{place} {ring}> ");
    let color = if problems.is_empty() {
        Color::Green
    } else {
        Color::Yellow
    };
    let styled = format!(
        "{}@ringdfs{} {}> ",
        style.paint(user, Color::Cyan),
        styled_place,
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

    fn shows(&self) -> bool {
        self.enabled
    }
}

/// Completion and hints for the prompt.
struct DfsHelper {
    remote: Arc<RemoteNames>,
    cwd: Arc<Mutex<String>>,
    files: FilenameCompleter,
    color: bool,
}

/// What the word under the cursor is.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    Command,
    LocalPath,
    /// A remote file (or a folder on the way to one).
    RemoteName,
    /// A remote folder.
    RemoteFolder,
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
    let words = &without_continue(words);
    let Some(verb) = words.first() else {
        return Slot::Command;
    };
    let verb = canonical(verb);
    // Options (`put -r`) are not names.
    let count = match verb {
        Some("put" | "get") => words
            .iter()
            .filter(|w| !(w.starts_with('-') && w.len() > 1))
            .count(),
        _ => words.len(),
    };
    match (verb, count) {
        (Some("put"), 1) => Slot::LocalPath,
        (Some("put"), 2) => Slot::RemoteName,
        (Some("get" | "delete" | "where" | "verify" | "du"), 1) => Slot::RemoteName,
        (Some("mv" | "cp"), 1 | 2) => Slot::RemoteName,
        (Some("share" | "unshare"), 1) => Slot::RemoteName,
        (Some("get"), 2) => Slot::LocalPath,
        (Some("lcd" | "lls"), 1) => Slot::LocalPath,
        (Some("help"), 1) => Slot::Command,
        (Some("cd" | "mkdir" | "rmdir"), 1) => Slot::RemoteFolder,
        // Options may come before the folder.
        (Some("list" | "ls"), _) => Slot::RemoteFolder,
        _ => Slot::Nothing,
    }
}

/// `words` without put's and get's `-c` (continue), which may come first.
fn without_continue(words: &[String]) -> Vec<String> {
    match words {
        [verb, flag, rest @ ..]
            if flag == "-c" && matches!(canonical(verb), Some("put" | "get")) =>
        {
            std::iter::once(verb.clone())
                .chain(rest.iter().cloned())
                .collect()
        }
        _ => words.to_vec(),
    }
}

fn canonical(verb: &str) -> Option<&'static str> {
    cli::find_verb(verb).map(|v| v.name)
}

/// The greyed hint after `line` (the cursor at its end): the rest of a command
/// name being typed, then the arguments still to come.
pub fn hint_for(line: &str) -> Option<String> {
    let t = typed(line);
    let args_of =
        |word: &str| cli::find_verb(word).map(|v| v.args.split_whitespace().collect::<Vec<_>>());
    if t.words.is_empty() {
        // Typing the command: complete it if only one command fits.
        if t.partial.is_empty() {
            return None;
        }
        let lower = t.partial.to_ascii_lowercase();
        let fits: Vec<&str> = cli::verb_words()
            .filter(|v| v.starts_with(&lower))
            .collect();
        let [verb] = fits.as_slice() else {
            return None;
        };
        let args = args_of(verb)?;
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
    let mut args = args_of(canonical(&t.words[0])?)?;
    let words = without_continue(&t.words);
    if t.words.len() > 1 && args.first() == Some(&"[-c]") {
        args.remove(0); // a flag or a name typed: `-c` is past
    }
    let remaining = args.get(words.len() - 1..)?;
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
                let verbs: Vec<String> = cli::verb_words().map(str::to_string).collect();
                let partial = t.partial.to_ascii_lowercase();
                Ok((t.start, complete_from(&verbs, &partial, " ")))
            }
            slot @ (Slot::RemoteName | Slot::RemoteFolder) => {
                let cwd = self.cwd.lock().expect("cwd lock").clone();
                let (dir, prefix) = split_partial(&t.partial);
                let Ok(folder) = cli::resolve_path(&cwd, dir) else {
                    return Ok((pos, Vec::new()));
                };
                let entries = self.remote.entries(&folder, prefix);
                let folders_only = slot == Slot::RemoteFolder;
                Ok((t.start, remote_candidates(dir, &entries, folders_only)))
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
        assert_eq!(slot_after(&w("put -r ")), Slot::LocalPath);
        assert_eq!(slot_after(&w("get -rp x ")), Slot::LocalPath);
        assert_eq!(slot_after(&w("rm ")), Slot::RemoteName);
        assert_eq!(slot_after(&w("where ")), Slot::RemoteName);
        assert_eq!(slot_after(&w("ls ")), Slot::RemoteFolder);
        assert_eq!(slot_after(&w("ls -l ")), Slot::RemoteFolder);
        assert_eq!(slot_after(&w("cd ")), Slot::RemoteFolder);
        assert_eq!(slot_after(&w("cd x ")), Slot::Nothing);
        assert_eq!(slot_after(&w("pwd ")), Slot::Nothing);
    }

    #[test]
    fn hints_show_the_arguments_still_to_come() {
        assert_eq!(
            hint_for("put ").as_deref(),
            Some("LOCAL [REMOTE] [-r] [-c] [-p]")
        );
        assert_eq!(
            hint_for("put a.txt ").as_deref(),
            Some("[REMOTE] [-r] [-c] [-p]")
        );
        assert_eq!(hint_for("put a.txt b ").as_deref(), Some("[-r] [-c] [-p]"));
        assert_eq!(hint_for("wh").as_deref(), Some("ere REMOTE"));
        assert_eq!(hint_for("sta").as_deref(), Some("tus"));
        assert_eq!(
            hint_for("GET").as_deref(),
            Some(" REMOTE [LOCAL] [-r] [-c] [-p]")
        );
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
    fn remote_completion_goes_folder_by_folder() {
        assert_eq!(split_partial("do"), ("", "do"));
        assert_eq!(split_partial("docs/"), ("docs/", ""));
        assert_eq!(split_partial("../docs/pl"), ("../docs/", "pl"));
        let entries = vec![
            Entry {
                name: "2026".into(),
                folder: true,
            },
            Entry {
                name: "my plan.txt".into(),
                folder: false,
            },
        ];
        let got: Vec<_> = remote_candidates("../docs/", &entries, false)
            .into_iter()
            .map(|p| (p.display, p.replacement))
            .collect();
        assert_eq!(
            got,
            [
                ("2026/".to_string(), "../docs/2026/".to_string()),
                ("my plan.txt".into(), "'../docs/my plan.txt' ".into()),
            ]
        );
        let folders: Vec<_> = remote_candidates("", &entries, true)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(folders, ["2026/"]);
    }

    #[test]
    fn completion_listings_start_just_before_the_names_typed() {
        assert_eq!(cursor_before("docs/", ""), None);
        let cursor = cursor_before("docs/", "pl").unwrap();
        assert_eq!(cursor, format!("docs/pk{}", char::MAX));
        // Every name that starts with the prefix sorts after it, even one
        // that is the prefix itself; names before the prefix sort before it.
        for name in ["docs/pl", "docs/pl.txt", "docs/plan", "docs/pl/"] {
            assert!(name > cursor.as_str(), "{name}");
        }
        for name in ["docs/pk", "docs/pkz", "docs/p", "docs/"] {
            assert!(name < cursor.as_str(), "{name}");
        }
        assert_eq!(cursor_before("", "0").unwrap(), format!("/{}", char::MAX));
    }

    #[test]
    fn the_prompt_shows_the_current_folder_away_from_the_top() {
        let health = vec![("dfs1".to_string(), Some(Standing::InRing))];
        assert_eq!(
            prompt("alice", "", &health, Style::PLAIN).0,
            "alice@ringdfs [1/1]> "
        );
        assert_eq!(
            prompt("alice", "docs/2026", &health, Style::PLAIN).0,
            "alice@ringdfs:/docs/2026 [1/1]> "
        );
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
            prompt("alice", "", &health(&[]), Style::PLAIN).0,
            "alice@ringdfs [4/4]> "
        );
        assert_eq!(
            prompt("alice", "", &health(&["dfs2"]), Style::PLAIN).0,
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
                "",
                &health([ok, Some(Standing::Alone), ok, ok]),
                Style::PLAIN
            )
            .0,
            "alice@ringdfs [3/4 dfs2 alone]> "
        );
        assert_eq!(
            prompt(
                "alice",
                "",
                &health([ok, Some(Standing::Apart), None, Some(Standing::Apart)]),
                Style::PLAIN
            )
            .0,
            "alice@ringdfs [1/4 dfs3 down, dfs2 dfs4 apart]> "
        );
    }
}
