//! Many files at once: `put -r`/`get -r` of whole folders and `put`, `get`,
//! `rm`, `ls` of wildcard patterns (see [`crate::glob`]). A transfer is
//! planned first (the files, the empty folders, what is skipped), then run
//! a few files at a time ([`PARALLEL`]) under one progress display, and
//! ends in a [`Summary`] that names every file that failed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{Client, DirItem, Progress, Transfer, BATCH_BYTES, BATCH_FILES};
use crate::error::{Error, Result};
use crate::glob::{unescape, Segment};
use crate::protocol::SMALL_FILE;

/// Files moved at once.
pub const PARALLEL: usize = 4;

/// One file to move: where it is and where it goes, and its size.
#[derive(Debug, Clone)]
struct Job {
    local: PathBuf,
    remote: String,
    size: u64,
}

/// What a transfer of many files will do.
#[derive(Debug, Default)]
struct Plan {
    jobs: Vec<Job>,
    /// Folders to make: remote ones (PUT: only those nothing else makes)
    /// or local ones (GET).
    remote_folders: Vec<String>,
    local_folders: Vec<PathBuf>,
    /// Names left alone, and why (a symbolic link, a folder without `-r`).
    skipped: Vec<(String, String)>,
}

/// What a transfer of many files did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `true` for PUT, `false` for GET.
    pub put: bool,
    /// Files moved, of `total`.
    pub files: usize,
    pub total: usize,
    pub bytes: u64,
    /// Empty folders made.
    pub folders: usize,
    pub elapsed: Duration,
    /// The most files that were moving at one time.
    pub parallel: usize,
    /// Files (or folders) that failed, and why.
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
}

impl Summary {
    pub fn text(&self) -> String {
        let verb = if self.put { "stored" } else { "fetched" };
        let mut lines = Vec::new();
        for (name, why) in &self.skipped {
            lines.push(format!("skipped {name}: {why}"));
        }
        for (name, why) in &self.failed {
            lines.push(format!("failed {name}: {why}"));
        }
        let folders = match self.folders {
            0 => String::new(),
            1 => " and 1 empty folder".to_string(),
            n => format!(" and {n} empty folders"),
        };
        lines.push(format!(
            "{verb} {} of {} files ({}){folders} in {:.1} s, up to {} at a time",
            self.files,
            self.total,
            crate::cli::human_size(self.bytes),
            self.elapsed.as_secs_f64(),
            self.parallel,
        ));
        if !self.failed.is_empty() {
            let names: Vec<&str> = self.failed.iter().map(|(n, _)| n.as_str()).collect();
            lines.push(format!(
                "{} failed: {}",
                if self.failed.len() == 1 {
                    "1 file".to_string()
                } else {
                    format!("{} files", self.failed.len())
                },
                names.join(", ")
            ));
        }
        lines.join("\n")
    }

    pub fn json(&self) -> Value {
        let pairs = |list: &[(String, String)], why: &str| -> Vec<Value> {
            list.iter()
                .map(|(name, reason)| json!({ "name": name, why: reason }))
                .collect()
        };
        json!({
            "direction": if self.put { "put" } else { "get" },
            "files": self.files,
            "total": self.total,
            "bytes": self.bytes,
            "folders": self.folders,
            "seconds": self.elapsed.as_secs_f64(),
            "parallel": self.parallel,
            "failed": pairs(&self.failed, "error"),
            "skipped": pairs(&self.skipped, "reason"),
        })
    }
}

/// A remote path joined: `folder/name`, or `name` at the top.
fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

/// The last segment of a remote path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The name a local file or folder has (`.` and `..` as their real names).
fn local_name(path: &Path) -> Result<String> {
    let named = match path.file_name() {
        Some(name) => Some(name.to_os_string()),
        None => std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_os_string())),
    };
    named.and_then(|n| n.into_string().ok()).ok_or_else(|| {
        Error::Refused(format!(
            "cannot name {} remotely; give a remote name",
            path.display()
        ))
    })
}

// ---------------------------------------------------------------------------
// Remote patterns

/// The remote entries `pattern` (relative to the folder `cwd` unless it
/// starts with `/`; escaped as [`crate::glob`] says) matches, sorted. The
/// folders before the first wildcard are not listed; each folder after it
/// is listed only from where the names its segment can match start.
pub async fn expand_remote(client: &Client, cwd: &str, pattern: &str) -> Result<Vec<DirItem>> {
    let bad = |reason| Error::InvalidName {
        name: pattern.to_string(),
        reason,
    };
    let (mut base, rest): (Vec<String>, &str) = match pattern.strip_prefix('/') {
        Some(rest) => (Vec::new(), rest),
        None => (
            cwd.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            pattern,
        ),
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // The last segment is looked for in its folder even when it has no
    // wildcard (`ls a\*b` lists the file `a*b`).
    let first_wild = segments
        .iter()
        .position(|s| Segment::new(s).is_some())
        .unwrap_or(segments.len().saturating_sub(1));
    for segment in &segments[..first_wild] {
        match unescape(segment).as_str() {
            "." => {}
            ".." => {
                if base.pop().is_none() {
                    return Err(bad("`..` goes above the top folder"));
                }
            }
            name => base.push(name.to_string()),
        }
    }
    let base = base.join("/");
    crate::names::validate_folder(&base)?;
    let mut folders = vec![base];
    let mut found = Vec::new();
    let wild = &segments[first_wild..];
    for (n, segment) in wild.iter().enumerate() {
        let last = n + 1 == wild.len();
        let matcher = Segment::new(segment);
        let literal = unescape(segment);
        if matcher.is_none() && (literal == "." || literal == "..") {
            return Err(bad("a pattern cannot have `.` or `..` after a wildcard"));
        }
        let prefix = matcher.as_ref().map_or(literal.clone(), Segment::prefix);
        let mut next = Vec::new();
        for folder in &folders {
            let items = entries_from(client, folder, &prefix, |name| match &matcher {
                Some(m) => m.matches(name),
                None => name == literal,
            })
            .await?;
            for item in items {
                match item {
                    DirItem::Folder(path) if !last => next.push(path),
                    item if last => found.push(item),
                    _ => {}
                }
            }
        }
        folders = next;
    }
    found.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(found)
}

/// The entries of `folder` whose names (in it) start with `prefix` and
/// pass `keep`, read page by page from where those names sort to where
/// they end.
async fn entries_from(
    client: &Client,
    folder: &str,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<DirItem>> {
    let inside = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let start = format!("{inside}{prefix}");
    let mut after = crate::repl::cursor_before(&inside, prefix);
    let mut out = Vec::new();
    loop {
        let (items, next) = client.list_dir_page(folder, after.as_deref()).await?;
        for item in items {
            let path = item.path();
            let name = path.strip_prefix(&inside).unwrap_or(path);
            if name.starts_with(prefix) {
                if keep(name) {
                    out.push(item);
                }
            } else if path > start.as_str() {
                return Ok(out);
            }
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(out),
        }
    }
}

/// A pattern that matched nothing: one line naming it.
fn no_match(pattern: &str) -> Error {
    Error::Refused(format!("nothing matches {pattern}"))
}

/// `rm PATTERN`: deletes every file it matches. Folders are not removed
/// (that is `rmdir`): each is a failure. Deleted names, then failures.
pub async fn delete(
    client: &Client,
    cwd: &str,
    pattern: &str,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let items = expand_remote(client, cwd, pattern).await?;
    if items.is_empty() {
        return Err(no_match(pattern));
    }
    let (mut deleted, mut failed) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            DirItem::Folder(path) => failed.push((
                format!("{path}/"),
                "is a folder (rmdir removes an empty folder)".to_string(),
            )),
            DirItem::File(f) => match client.delete(&f.name).await {
                Ok(_) => deleted.push(f.name),
                Err(e) => failed.push((f.name, e.to_string())),
            },
        }
    }
    Ok((deleted, failed))
}

/// `ls PATTERN`: the entries it matches, or, when it matches one folder,
/// that folder's entries (as sftp lists them). The folder the names are
/// shown from, and the entries.
pub async fn list(client: &Client, cwd: &str, pattern: &str) -> Result<(String, Vec<DirItem>)> {
    let items = expand_remote(client, cwd, pattern).await?;
    match items.as_slice() {
        [] => Err(no_match(pattern)),
        [DirItem::Folder(path)] => Ok((path.clone(), client.list_dir(path).await?)),
        _ => Ok((cwd.to_string(), items)),
    }
}

// ---------------------------------------------------------------------------
// Planning

/// Whether remote `path` is a folder (the top is).
async fn remote_folder(client: &Client, path: &str) -> Result<bool> {
    if path.is_empty() {
        return Ok(true);
    }
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    let name = base_name(path);
    let items = entries_from(client, parent, name, |n| n == name).await?;
    Ok(items
        .iter()
        .any(|i| matches!(i, DirItem::Folder(p) if p == path)))
}

/// Adds local `path` (a file, or with `recursive` a folder and all under
/// it) to `plan` as remote `remote`. Symbolic links and special files are
/// skipped, named. Whether anything under it is stored (a folder with
/// nothing stored under it is made on the servers).
fn plan_local(plan: &mut Plan, path: &Path, remote: &str, recursive: bool) -> bool {
    let shown = path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            plan.skipped.push((shown, e.to_string()));
            return false;
        }
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        plan.skipped
            .push((shown, "a symbolic link (not followed)".into()));
        false
    } else if kind.is_file() {
        plan.jobs.push(Job {
            local: path.to_path_buf(),
            remote: remote.to_string(),
            size: meta.len(),
        });
        true
    } else if kind.is_dir() && !recursive {
        plan.skipped
            .push((shown, "a folder (put -r stores folders)".into()));
        false
    } else if kind.is_dir() {
        let mut names = Vec::new();
        match std::fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    names.push(entry.file_name());
                }
            }
            Err(e) => {
                plan.skipped.push((shown, e.to_string()));
                return false;
            }
        }
        names.sort();
        let mut stored = false;
        for name in names {
            let child = path.join(&name);
            match name.to_str() {
                Some(n) => stored |= plan_local(plan, &child, &join(remote, n), true),
                None => plan
                    .skipped
                    .push((child.display().to_string(), "its name is not UTF-8".into())),
            }
        }
        if !stored {
            plan.remote_folders.push(remote.to_string());
        }
        true
    } else {
        plan.skipped
            .push((shown, "not a regular file or folder".into()));
        false
    }
}

/// Adds remote `item` (a file, or with `recursive` a folder and all under
/// it) to `plan` as local `local`.
async fn plan_remote(
    client: &Client,
    plan: &mut Plan,
    item: DirItem,
    local: &Path,
    recursive: bool,
) -> Result<()> {
    match item {
        DirItem::File(f) => plan.jobs.push(Job {
            local: local.to_path_buf(),
            remote: f.name,
            size: f.size,
        }),
        DirItem::Folder(path) if !recursive => plan.skipped.push((
            format!("{path}/"),
            "a folder (get -r fetches folders)".into(),
        )),
        DirItem::Folder(path) => {
            let mut folders = vec![(path, local.to_path_buf())];
            while let Some((folder, at)) = folders.pop() {
                let items = client.list_dir(&folder).await?;
                if items.is_empty() {
                    plan.local_folders.push(at.clone());
                }
                for item in items {
                    let name = base_name(item.path()).to_string();
                    match item {
                        DirItem::Folder(p) => folders.push((p, at.join(&name))),
                        DirItem::File(f) => plan.jobs.push(Job {
                            local: at.join(&name),
                            remote: f.name,
                            size: f.size,
                        }),
                    }
                }
            }
        }
    }
    Ok(())
}

/// `put [-r] LOCAL [REMOTE]` for a folder or a pattern: `local` is the
/// path typed (a pattern if `wild`), `remote` the destination as typed.
#[allow(clippy::too_many_arguments)]
pub async fn put(
    client: &Client,
    cwd: &str,
    local: &Path,
    remote: Option<&str>,
    wild: bool,
    recursive: bool,
    how: Transfer,
    progress: &dyn Progress,
) -> Result<Summary> {
    let typed = local.to_string_lossy().into_owned();
    let sources = if wild {
        let found = crate::glob::expand_local(&typed)
            .map_err(|e| Error::io(format!("matching {typed}"), e))?;
        if found.is_empty() {
            return Err(no_match(&typed));
        }
        found
    } else {
        if let Err(e) = std::fs::symlink_metadata(local) {
            return Err(Error::io(typed, e));
        }
        vec![local.to_path_buf()]
    };
    // Into REMOTE when it is a folder (or names one, `docs/`), else as it.
    let (folder, single_name) = match remote {
        None => (crate::cli::resolve_path(cwd, "")?, None),
        Some(r) => {
            let path = crate::cli::resolve_path(cwd, r)?;
            let names_folder = r.ends_with('/') || matches!(base_name(r), "." | "..");
            if names_folder || remote_folder(client, &path).await? {
                (path, None)
            } else if sources.len() > 1 {
                return Err(Error::Refused(format!(
                    "{typed} matches {} files, but /{path} is not a folder",
                    sources.len()
                )));
            } else {
                (String::new(), Some(path))
            }
        }
    };
    let mut plan = Plan::default();
    for source in &sources {
        let target = match &single_name {
            Some(name) => name.clone(),
            None => join(&folder, &local_name(source)?),
        };
        crate::names::validate_name(&target)?;
        plan_local(&mut plan, source, &target, recursive);
    }
    Ok(run(client, plan, true, how, progress).await)
}

/// `get [-r] REMOTE [LOCAL]` for a folder or a pattern: `remote` as typed
/// (a pattern if `wild`), `local` the destination, else `download_dir`.
#[allow(clippy::too_many_arguments)]
pub async fn get(
    client: &Client,
    cwd: &str,
    remote: &str,
    local: Option<&Path>,
    wild: bool,
    recursive: bool,
    how: Transfer,
    download_dir: &Path,
    progress: &dyn Progress,
) -> Result<Summary> {
    let items = if wild {
        let items = expand_remote(client, cwd, remote).await?;
        if items.is_empty() {
            return Err(no_match(remote));
        }
        items
    } else {
        let path = crate::cli::resolve_path(cwd, remote)?;
        if remote_folder(client, &path).await? {
            vec![DirItem::Folder(path)]
        } else {
            // A file: as a listing would show it.
            let name = crate::cli::resolve(cwd, remote)?;
            let parent = name.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            let wanted = base_name(&name).to_string();
            let found = entries_from(client, &parent, &wanted, |n| n == wanted).await?;
            match found.into_iter().find(|i| i.path() == name) {
                Some(item) => vec![item],
                None => return Err(Error::NotFound { name }),
            }
        }
    };
    let (folder, single_path) = match local {
        None => {
            std::fs::create_dir_all(download_dir)
                .map_err(|e| Error::io(format!("creating {}", download_dir.display()), e))?;
            (download_dir.to_path_buf(), None)
        }
        Some(l) if l.is_dir() => (l.to_path_buf(), None),
        Some(l) if items.len() > 1 => {
            return Err(Error::Refused(format!(
                "{remote} matches {} entries, but {} is not a folder",
                items.len(),
                l.display()
            )))
        }
        Some(l) => (PathBuf::new(), Some(l.to_path_buf())),
    };
    let mut plan = Plan::default();
    for item in items {
        let target = match &single_path {
            Some(path) => path.clone(),
            // The top folder has no name: its entries go straight in.
            None if item.path().is_empty() => folder.clone(),
            None => folder.join(base_name(item.path())),
        };
        plan_remote(client, &mut plan, item, &target, recursive).await?;
    }
    Ok(run(client, plan, false, how, progress).await)
}

// ---------------------------------------------------------------------------
// Running

/// Runs `plan`, [`PARALLEL`] files at a time; a file that fails is named in
/// the summary and the others go on.
async fn run(
    client: &Client,
    plan: Plan,
    put: bool,
    how: Transfer,
    progress: &dyn Progress,
) -> Summary {
    let started = Instant::now();
    let display = Display::new(progress.shows(), &plan);
    let failed = Mutex::new(Vec::new());
    let mut folders = 0;
    if put {
        for folder in &plan.remote_folders {
            let made = match client.folder(folder, true).await {
                Ok(()) => Ok(()),
                // It was there already: as good.
                Err(e) => match remote_folder(client, folder).await {
                    Ok(true) => Ok(()),
                    _ => Err(e),
                },
            };
            match made {
                Ok(()) => folders += 1,
                Err(e) => failed
                    .lock()
                    .expect("failed lock")
                    .push((format!("{folder}/"), e.to_string())),
            }
        }
    } else {
        for folder in &plan.local_folders {
            if let Err(e) = std::fs::create_dir_all(folder) {
                failed
                    .lock()
                    .expect("failed lock")
                    .push((folder.display().to_string(), e.to_string()));
            }
        }
        folders = plan.local_folders.len();
    }
    let in_flight = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let bytes = AtomicI64::new(0);
    let total = plan.jobs.len();
    let units = match put {
        true => batched(plan.jobs),
        false => plan.jobs.into_iter().map(|job| vec![job]).collect(),
    };
    stream::iter(units)
        .for_each_concurrent(PARALLEL, |unit| {
            let (display, failed) = (&display, &failed);
            let (in_flight, most, done, bytes) = (&in_flight, &most, &done, &bytes);
            async move {
                // Files moving at once (a batch's all count).
                let files = unit.len();
                let now = in_flight.fetch_add(files, Ordering::SeqCst) + files;
                most.fetch_max(now, Ordering::SeqCst);
                let outcomes = match files {
                    1 => {
                        let job = unit.into_iter().next().expect("one job");
                        vec![one(client, put, how, display, job).await]
                    }
                    _ => many(client, how, display, unit).await,
                };
                in_flight.fetch_sub(files, Ordering::SeqCst);
                for (shown, result) in outcomes {
                    match result {
                        Ok(size) => {
                            done.fetch_add(1, Ordering::SeqCst);
                            bytes.fetch_add(size as i64, Ordering::SeqCst);
                        }
                        Err(e) => failed
                            .lock()
                            .expect("failed lock")
                            .push((shown, e.to_string())),
                    }
                }
            }
        })
        .await;
    display.clear();
    let mut failed = failed.into_inner().expect("failed lock");
    failed.sort();
    Summary {
        put,
        files: done.into_inner(),
        total,
        bytes: bytes.into_inner().max(0) as u64,
        folders,
        elapsed: started.elapsed(),
        parallel: most.into_inner(),
        failed,
        skipped: plan.skipped,
    }
}

/// What became of one file: as the summary names it, and its size or why
/// it failed.
type Outcome = (String, Result<u64>);

/// A PUT's jobs as they run: small files together, in batches of up to
/// `BATCH_FILES` files and `BATCH_BYTES` (see [`Client::put_small_files`]),
/// every other file alone.
fn batched(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut units = Vec::new();
    let (mut batch, mut batch_bytes) = (Vec::new(), 0);
    for job in jobs {
        if job.size > SMALL_FILE {
            units.push(vec![job]);
            continue;
        }
        if batch.len() == BATCH_FILES || batch_bytes + job.size > BATCH_BYTES {
            units.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += job.size;
        batch.push(job);
    }
    if !batch.is_empty() {
        units.push(batch);
    }
    units
}

/// Moves one file, with its own progress line.
async fn one(client: &Client, put: bool, how: Transfer, display: &Display, job: Job) -> Outcome {
    let shown = if put {
        job.local.display().to_string()
    } else {
        job.remote.clone()
    };
    let line = display.file(&shown, job.size);
    let result = if put {
        client
            .put_with(&job.local, &job.remote, how, &line)
            .await
            .map(|r| r.size)
    } else {
        if let Some(parent) = job.local.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        client
            .get_with(&job.remote, &job.local, how, &line)
            .await
            .map(|r| r.size)
    };
    display.finished(&line, 1);
    (shown, result)
}

/// Stores small files together; those the batch could not store (it
/// failed as a whole, or a server had a newer version of one) go one by
/// one, each with its own answer.
async fn many(client: &Client, how: Transfer, display: &Display, jobs: Vec<Job>) -> Vec<Outcome> {
    let shown = format!("{} and {} more", jobs[0].local.display(), jobs.len() - 1);
    let line = display.file(&shown, jobs.iter().map(|j| j.size).sum());
    let pairs: Vec<(PathBuf, String)> = jobs
        .iter()
        .map(|j| (j.local.clone(), j.remote.clone()))
        .collect();
    let receipts = match client.put_small_files(&pairs, how).await {
        Ok(receipts) => receipts,
        Err(e) => {
            tracing::debug!(files = jobs.len(), error = %e, "a batch failed: one by one");
            vec![None; jobs.len()]
        }
    };
    let (mut outcomes, mut alone) = (Vec::new(), Vec::new());
    for (job, receipt) in jobs.into_iter().zip(receipts) {
        match receipt {
            Some(r) => {
                line.add(r.size as i64);
                outcomes.push((job.local.display().to_string(), Ok(r.size)));
            }
            None => alone.push(job),
        }
    }
    display.finished(&line, outcomes.len());
    for job in alone {
        outcomes.push(one(client, true, how, display, job).await);
    }
    outcomes
}

/// The progress display of a transfer of many files, on standard error:
/// one line for the whole (files done of all, bytes, rate, time left) and
/// one for each file moving. Nothing is drawn unless `enabled`.
struct Display {
    multi: MultiProgress,
    whole: ProgressBar,
    files: usize,
    done: AtomicUsize,
    enabled: bool,
}

/// One file's line, and what it adds to the whole.
struct Line<'a> {
    bar: ProgressBar,
    whole: &'a ProgressBar,
}

impl Progress for Line<'_> {
    fn start(&self, total: u64) {
        self.bar.set_length(total);
    }

    fn add(&self, delta: i64) {
        if delta >= 0 {
            self.bar.inc(delta as u64);
            self.whole.inc(delta as u64);
        } else {
            self.bar.dec(delta.unsigned_abs());
            self.whole.dec(delta.unsigned_abs());
        }
    }
}

impl Display {
    fn new(enabled: bool, plan: &Plan) -> Display {
        let multi = MultiProgress::with_draw_target(if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let bytes: u64 = plan.jobs.iter().map(|j| j.size).sum();
        let whole = multi.add(ProgressBar::new(bytes));
        whole.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {prefix} files  {bytes:>10}/{total_bytes}  {binary_bytes_per_sec:>12}  {eta} left",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let files = plan.jobs.len();
        whole.set_prefix(format!("0/{files}"));
        Display {
            multi,
            whole,
            files,
            done: AtomicUsize::new(0),
            enabled,
        }
    }

    fn file(&self, name: &str, size: u64) -> Line<'_> {
        let bar = if self.enabled {
            let bar = self.multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("  {msg:40!} {bytes:>10}/{total_bytes}")
                    .expect("a valid template"),
            );
            bar.set_message(name.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        Line {
            bar,
            whole: &self.whole,
        }
    }

    /// `line` is done, with `files` files.
    fn finished(&self, line: &Line<'_>, files: usize) {
        line.bar.finish_and_clear();
        self.multi.remove(&line.bar);
        let done = self.done.fetch_add(files, Ordering::SeqCst) + files;
        self.whole.set_prefix(format!("{done}/{}", self.files));
    }

    fn clear(&self) {
        self.whole.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_every_failure() {
        let summary = Summary {
            put: true,
            files: 2,
            total: 3,
            bytes: 2048,
            folders: 1,
            elapsed: Duration::from_millis(1500),
            parallel: 3,
            failed: vec![("d/bad ".into(), "a name's segments cannot end".into())],
            skipped: vec![("d/link".into(), "a symbolic link (not followed)".into())],
        };
        let text = summary.text();
        assert!(text.contains("skipped d/link: a symbolic link"), "{text}");
        assert!(text.contains("failed d/bad : a name"), "{text}");
        assert!(
            text.contains(
                "stored 2 of 3 files (2.0 KiB) and 1 empty folder in 1.5 s, up to 3 at a time"
            ),
            "{text}"
        );
        assert!(text.ends_with("1 file failed: d/bad "), "{text}");
        assert_eq!(summary.json()["failed"][0]["name"], "d/bad ");
        assert_eq!(summary.json()["parallel"], 3);
    }
}
