//! `dfs mount DIR`: the user's files as a folder, through FUSE (the
//! `fuser` crate; `fusermount3` from Debian's `fuse3` does the mounting).
//!
//! Every operation is one of the client library's, so the servers check it
//! as they check `dfs`'s: sharing, quotas and names are theirs to enforce.
//!
//! - **Names:** a folder lists as `ls` does (the page of each server
//!   merged); `shared/` holds what others share. A listing is kept 1 s, so
//!   `ls -l` and a `cp -r` do not ask the servers for every name.
//! - **Reads are ranged** ([`Client::read`]): a read elsewhere than where
//!   the last one ended fetches only its own bytes (the servers send the
//!   1 MiB blocks that hold them); a read from the start, or going on where
//!   the last one ended, streams the rest of the file, a chunk ahead, until
//!   the file is closed or read elsewhere. Every byte handed to the kernel was checked against the
//!   file's checksums. At most one stream per open file (its buffer is
//!   bounded, see `client::read`). A handle reads one version: if the file
//!   is replaced while it is open, its next read that must fetch fails with
//!   `ESTALE` rather than mixing two versions.
//! - **Writes** go to a temp file (the file's bytes fetched first unless it
//!   is opened to be truncated), stored by one atomic PUT when the file is
//!   closed (`flush`) or `fsync`'d; until then nobody else sees a byte.
//! - **Errors** become errno: `ENOENT`, `EACCES` (a read-only share, or
//!   not shared), `EDQUOT` (quota), `ENOSPC`, `EIO` (no copy reachable),
//!   `EINVAL` (a name the servers refuse).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::client::{no_progress, Client, DirItem, ReadStream};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::Version;
use crate::sharing::{covers, Access, SHARED};

/// How long the kernel may keep a name or attributes, and the mount a
/// folder's listing, before asking again.
const TTL: Duration = Duration::from_secs(1);
/// The servers' checked block: the I/O size the mount offers the kernel.
const BLOCK: u64 = crate::blocks::BLOCK;
/// The block size `statfs` reports.
const STATFS_BLOCK: u64 = 4096;
const ROOT: u64 = fuser::FUSE_ROOT_ID;

/// Mounts `client`'s files at `dir` and serves them until the folder is
/// unmounted (`fusermount3 -u DIR`) or `stop` completes (Ctrl-C);
/// `mounted` is called once the folder shows the files.
pub fn run(
    client: Arc<Client>,
    runtime: tokio::runtime::Handle,
    dir: &Path,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    mounted: impl FnOnce(),
) -> Result<()> {
    check_folder(dir)?;
    let temp = tempfile::Builder::new()
        .prefix("ringdfs-mount-")
        .tempdir()
        .map_err(|e| Error::io("creating the mount's temp folder", e))?;
    let fs = Mount::new(client, runtime.clone(), temp.path().to_path_buf());
    let options = [
        MountOption::FSName("ringdfs".into()),
        MountOption::Subtype("ringdfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    let mut session = fuser::Session::new(fs, dir, &options).map_err(|e| {
        // fuser runs fusermount3; without it the error names no file.
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Refused(format!(
                "mounting on {} needs fusermount3 and /dev/fuse (Debian: apt-get install fuse3)",
                dir.display()
            ))
        } else {
            Error::io(format!("mounting on {}", dir.display()), e)
        }
    })?;
    let mut unmounter = session.unmount_callable();
    let at = dir.display().to_string();
    runtime.spawn(async move {
        stop.await;
        info!(dir = %at, "unmounting");
        let _ = unmounter.unmount();
    });
    info!(dir = %dir.display(), "mounted");
    mounted();
    session
        .run()
        .map_err(|e| Error::io(format!("serving the mount on {}", dir.display()), e))?;
    drop(temp);
    Ok(())
}

/// Refuses a mount point that is not a folder (before anything else is
/// asked, a password included).
pub fn check_folder(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        _ => Err(Error::Refused(format!(
            "{}: not a folder to mount on",
            dir.display()
        ))),
    }
}

/// What the mount knows of one name.
#[derive(Debug, Clone)]
struct Node {
    path: String,
    dir: bool,
    size: u64,
    modified: SystemTime,
}

/// An open file.
enum Handle {
    Read(Reader),
    Write(Writer),
}

/// A file open for reading: where its stream is, if it has one.
struct Reader {
    path: String,
    size: u64,
    /// The version the handle reads (from its first fetch on).
    version: Option<Version>,
    /// Where the last read ended: a read starting here is sequential.
    next: u64,
    stream: Option<Stream>,
}

/// A ranged read under way: its bytes from `at` on, some of them already
/// here (`held`).
struct Stream {
    at: u64,
    end: u64,
    held: bytes::Bytes,
    bytes: ReadStream,
}

/// A file open for writing: its bytes in a temp file, stored on close.
struct Writer {
    ino: u64,
    path: String,
    temp: PathBuf,
    file: File,
    /// Written to (or new) since it was last stored.
    dirty: bool,
}

/// The filesystem: names to inode numbers and back, listings, open files.
struct Mount {
    client: Arc<Client>,
    runtime: tokio::runtime::Handle,
    temp: PathBuf,
    nodes: HashMap<u64, Node>,
    inos: HashMap<String, u64>,
    next_ino: u64,
    /// Folder listings: when fetched, and the names in it.
    listings: HashMap<String, (Instant, Vec<Node>)>,
    /// What is shared with this user, and when it was asked.
    shares: Option<(Instant, Vec<crate::sharing::Share>)>,
    handles: HashMap<u64, Handle>,
    /// Open directory handles: the listing as it was at `opendir`.
    dir_handles: HashMap<u64, Vec<(u64, FileType, String)>>,
    next_fh: u64,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

impl Mount {
    fn new(client: Arc<Client>, runtime: tokio::runtime::Handle, temp: PathBuf) -> Mount {
        let mounted_at = SystemTime::now();
        let root = Node {
            path: String::new(),
            dir: true,
            size: 0,
            modified: mounted_at,
        };
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Mount {
            client,
            runtime,
            temp,
            nodes: HashMap::from([(ROOT, root)]),
            inos: HashMap::from([(String::new(), ROOT)]),
            next_ino: ROOT + 1,
            listings: HashMap::new(),
            shares: None,
            handles: HashMap::new(),
            dir_handles: HashMap::new(),
            next_fh: 1,
            uid,
            gid,
            mounted_at,
        }
    }

    /// Runs one of the client's operations to its end.
    fn wait<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.runtime.block_on(work)
    }

    fn path_of(&self, ino: u64) -> std::result::Result<String, i32> {
        self.nodes
            .get(&ino)
            .map(|n| n.path.clone())
            .ok_or(libc::ENOENT)
    }

    /// The path of `name` in folder `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> std::result::Result<String, i32> {
        let name = name.to_str().ok_or(libc::EINVAL)?;
        let folder = self.path_of(parent)?;
        Ok(match folder.is_empty() {
            true => name.to_string(),
            false => format!("{folder}/{name}"),
        })
    }

    /// The inode of `node` (a new number the first time its path is seen),
    /// its record updated.
    fn remember(&mut self, node: Node) -> u64 {
        let ino = match self.inos.get(&node.path) {
            Some(&ino) => ino,
            None => {
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inos.insert(node.path.clone(), ino);
                ino
            }
        };
        self.nodes.insert(ino, node);
        ino
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let writable = self.may_write(&node.path);
        let (kind, perm, nlink) = match (node.dir, writable) {
            (true, true) => (FileType::Directory, 0o755, 2),
            (true, false) => (FileType::Directory, 0o555, 2),
            (false, true) => (FileType::RegularFile, 0o644, 1),
            (false, false) => (FileType::RegularFile, 0o444, 1),
        };
        FileAttr {
            ino,
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: node.modified,
            mtime: node.modified,
            ctime: node.modified,
            crtime: node.modified,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }

    /// A folder's entries, fetched if the kept listing is older than [`TTL`].
    fn listing(&mut self, folder: &str) -> Result<&[Node]> {
        let fresh = self
            .listings
            .get(folder)
            .is_some_and(|(at, _)| at.elapsed() < TTL);
        if fresh {
            return Ok(&self.listings[folder].1);
        }
        let items = self.wait(self.client.list_dir(folder))?;
        let nodes: Vec<Node> = items
            .into_iter()
            .map(|item| match item {
                DirItem::File(f) => Node {
                    path: f.name,
                    dir: false,
                    size: f.size,
                    modified: UNIX_EPOCH + Duration::from_secs(f.stored_at),
                },
                DirItem::Folder(path) => Node {
                    path,
                    dir: true,
                    size: 0,
                    modified: self.mounted_at,
                },
            })
            .collect();
        let kept = self
            .listings
            .entry(folder.to_string())
            .insert_entry((Instant::now(), nodes));
        Ok(&kept.into_mut().1)
    }

    /// Notes a change made here in the kept listing of `node`'s folder
    /// (not dropping it: a `cp -r` of many files into one folder would
    /// otherwise list the folder again for every file).
    fn known(&mut self, node: Node) {
        let folder = parent(&node.path).to_string();
        if let Some((_, nodes)) = self.listings.get_mut(&folder) {
            match nodes.iter_mut().find(|n| n.path == node.path) {
                Some(kept) => *kept = node,
                None => nodes.push(node),
            }
        }
    }

    /// Notes that `path` is gone (removed, or moved away): from its
    /// folder's kept listing, and its own listings and those under it.
    fn gone(&mut self, path: &str) {
        if let Some((_, nodes)) = self.listings.get_mut(parent(path)) {
            nodes.retain(|n| n.path != path);
        }
        self.listings.retain(|folder, _| !covers(path, folder));
    }

    /// The node at `path` as the servers have it now (or as a writer here
    /// has it: a file being written exists before it is stored).
    fn find(&mut self, path: &str) -> std::result::Result<Node, i32> {
        if path.is_empty() {
            return Ok(self.nodes[&ROOT].clone());
        }
        if let Some(node) = self.writing(path) {
            return Ok(node);
        }
        let entries = self.listing(parent(path)).map_err(|e| errno(&e))?;
        entries
            .iter()
            .find(|n| n.path == path)
            .cloned()
            .ok_or(libc::ENOENT)
    }

    /// The node of a file open for writing here, if one is.
    fn writing(&self, path: &str) -> Option<Node> {
        self.handles.values().find_map(|h| match h {
            Handle::Write(w) if w.path == path => self.nodes.get(&w.ino).cloned(),
            _ => None,
        })
    }

    /// Whether the user may change `path`: their own files, or a share
    /// with write access (the servers check again; this gives `EACCES` at
    /// open, not at close).
    fn may_write(&self, path: &str) -> bool {
        if path == SHARED {
            return false;
        }
        let Ok(scope) = self.client.scope(path) else {
            return false;
        };
        if !scope.shared {
            return true;
        }
        // `shared/OWNER` itself is nobody's to change.
        let user = self.client.user();
        !scope.name.is_empty()
            && self.shares.as_ref().is_some_and(|(_, shares)| {
                shares.iter().any(|s| {
                    s.owner == scope.owner
                        && s.user == user
                        && s.access == Access::Write
                        && covers(&s.path, &scope.name)
                })
            })
    }

    /// [`Mount::may_write`], with what is shared asked again if the answer
    /// kept is older than [`TTL`].
    fn check_write(&mut self, path: &str) -> std::result::Result<(), i32> {
        if covers(SHARED, path) {
            let stale = self
                .shares
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= TTL);
            if stale {
                let shares = self.wait(self.client.shares()).map_err(|e| errno(&e))?;
                self.shares = Some((Instant::now(), shares));
            }
        }
        match self.may_write(path) {
            true => Ok(()),
            false => Err(libc::EACCES),
        }
    }

    fn new_fh(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        fh
    }

    /// A writer for `path` (inode `ino`): a temp file holding its bytes now
    /// (none if `truncate` or new).
    fn open_writer(&mut self, ino: u64, path: &str, truncate: bool) -> Result<Writer> {
        let temp = self.temp.join(format!("w{}", self.next_fh));
        if !truncate {
            self.wait(self.client.get(path, &temp, &no_progress))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(&temp)
            .map_err(|e| Error::io(temp.display().to_string(), e))?;
        Ok(Writer {
            ino,
            path: path.to_string(),
            temp,
            file,
            dirty: truncate,
        })
    }

    /// Stores a dirty writer's file: one PUT, atomic.
    fn store(&mut self, fh: u64) -> std::result::Result<(), i32> {
        let Some(Handle::Write(w)) = self.handles.get(&fh) else {
            return Ok(());
        };
        if !w.dirty {
            return Ok(());
        }
        let (path, temp, ino) = (w.path.clone(), w.temp.clone(), w.ino);
        let receipt = self
            .wait(self.client.put(&temp, &path, &no_progress))
            .map_err(|e| {
                warn!(file = %path, error = %e, "storing a file written through the mount failed");
                errno(&e)
            })?;
        if let Some(Handle::Write(w)) = self.handles.get_mut(&fh) {
            w.dirty = false;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.size = receipt.size;
            node.modified = SystemTime::now();
            let node = node.clone();
            self.known(node);
        }
        debug!(file = %path, size = receipt.size, "stored through the mount");
        Ok(())
    }

    /// Ends an open file: what it wrote since it was last stored is stored
    /// (a close flushes first, so usually nothing), and its temp file goes.
    fn close(&mut self, fh: u64) -> std::result::Result<(), i32> {
        let stored = self.store(fh);
        if let Some(Handle::Write(w)) = self.handles.remove(&fh) {
            let _ = std::fs::remove_file(&w.temp);
        }
        stored
    }

    /// `size` bytes at `offset` of a file open for reading.
    fn read_at(&mut self, fh: u64, offset: u64, size: u64) -> std::result::Result<Vec<u8>, i32> {
        let (client, runtime) = (Arc::clone(&self.client), self.runtime.clone());
        let Some(Handle::Read(r)) = self.handles.get_mut(&fh) else {
            return Err(libc::EBADF);
        };
        let end = (offset + size).min(r.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        while (offset + out.len() as u64) < end {
            let at = offset + out.len() as u64;
            let usable = r
                .stream
                .as_ref()
                .is_some_and(|s| s.at == at && s.at < s.end);
            if !usable {
                // From the start, or going on from the last read: the rest
                // of the file, streamed (dropped with the handle). Elsewhere:
                // exactly this read's bytes, for which the servers send only
                // the blocks that hold them.
                let stop = match at == r.next {
                    true => r.size,
                    false => end,
                };
                let (manifest, bytes) = runtime
                    .block_on(client.read(&r.path, Some(at..stop)))
                    .map_err(|e| errno(&e))?;
                if *r.version.get_or_insert(manifest.version) != manifest.version {
                    return Err(libc::ESTALE);
                }
                r.stream = Some(Stream {
                    at,
                    end: stop,
                    held: bytes::Bytes::new(),
                    bytes,
                });
            }
            let stream = r.stream.as_mut().expect("made above");
            if stream.held.is_empty() {
                match runtime.block_on(stream.bytes.next()) {
                    Some(Ok(bytes)) => stream.held = bytes,
                    Some(Err(e)) => {
                        r.stream = None;
                        return Err(errno(&e));
                    }
                    None => {
                        r.stream = None;
                        return Err(libc::EIO);
                    }
                }
                continue;
            }
            let take = stream.held.len().min((end - at) as usize);
            out.extend_from_slice(&stream.held.split_to(take));
            stream.at += take as u64;
        }
        r.next = end;
        Ok(out)
    }
}

/// The errno of a client error.
fn errno(e: &Error) -> i32 {
    match e {
        Error::Unavailable { .. } | Error::ChunkUnavailable { .. } | Error::Timeout { .. } => {
            libc::EIO
        }
        Error::Io { cause, .. } => cause.raw_os_error().unwrap_or(libc::EIO),
        Error::Refused(_) => libc::EPERM,
        e => match e.kind() {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::Denied | ErrorKind::Unauthorized | ErrorKind::NotLoggedIn => libc::EACCES,
            ErrorKind::OverQuota => libc::EDQUOT,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::InvalidName | ErrorKind::BadRequest => libc::EINVAL,
            ErrorKind::Corrupt | ErrorKind::Internal => libc::EIO,
        },
    }
}

/// The folder `path` is in (`""`: the top).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(folder, _)| folder)
}

fn answer(reply: ReplyEmpty, result: std::result::Result<(), i32>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn open_for_writing(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY
}

impl Filesystem for Mount {
    fn init(
        &mut self,
        _req: &Request<'_>,
        config: &mut fuser::KernelConfig,
    ) -> std::result::Result<(), libc::c_int> {
        // Reads and writes of up to a block each, where the kernel allows
        // (it answers with its own limit otherwise, which is kept).
        let _ = config.set_max_write(BLOCK as u32);
        let _ = config.set_max_readahead(BLOCK as u32);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let found = self.child(parent, name).and_then(|path| self.find(&path));
        match found {
            Ok(node) => {
                let ino = self.remember(node.clone());
                reply.entry(&TTL, &self.attr(ino, &node), 0);
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let found = self.path_of(ino).and_then(|path| self.find(&path));
        match found {
            Ok(node) => {
                self.nodes.insert(ino, node.clone());
                reply.attr(&TTL, &self.attr(ino, &node));
            }
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Modes, owners and times are the store's: only the size changes.
        let result = (|| {
            let path = self.path_of(ino)?;
            let mut node = self.find(&path)?;
            if let Some(size) = size {
                if node.dir {
                    return Err(libc::EISDIR);
                }
                self.check_write(&path)?;
                let writer = fh.filter(|fh| matches!(self.handles.get(fh), Some(Handle::Write(_))));
                match writer {
                    Some(fh) => {
                        let Some(Handle::Write(w)) = self.handles.get_mut(&fh) else {
                            unreachable!("checked")
                        };
                        w.file
                            .set_len(size)
                            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
                        w.dirty = true;
                    }
                    None => {
                        // `truncate FILE`: fetched, cut, stored again.
                        let mut w = self
                            .open_writer(ino, &path, size == 0)
                            .map_err(|e| errno(&e))?;
                        w.file
                            .set_len(size)
                            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
                        w.dirty = true;
                        let fh = self.new_fh(Handle::Write(w));
                        self.close(fh)?;
                    }
                }
                node.size = size;
                node.modified = SystemTime::now();
                self.nodes.insert(ino, node.clone());
            }
            Ok(node)
        })();
        match result {
            Ok(node) => reply.attr(&TTL, &self.attr(ino, &node)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let path = self.child(parent, name)?;
            self.check_write(&path)?;
            self.wait(self.client.folder(&path, true))
                .map_err(|e| errno(&e))?;
            let node = Node {
                path,
                dir: true,
                size: 0,
                modified: SystemTime::now(),
            };
            self.known(node.clone());
            Ok(node)
        })();
        match result {
            Ok(node) => {
                let ino = self.remember(node.clone());
                reply.entry(&TTL, &self.attr(ino, &node), 0);
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let path = self.child(parent, name)?;
            self.check_write(&path)?;
            self.wait(self.client.delete(&path))
                .map_err(|e| errno(&e))?;
            self.gone(&path);
            Ok(())
        })();
        answer(reply, result);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let path = self.child(parent, name)?;
            self.check_write(&path)?;
            if !self.listing(&path).map_err(|e| errno(&e))?.is_empty() {
                return Err(libc::ENOTEMPTY);
            }
            self.wait(self.client.folder(&path, false))
                .map_err(|e| errno(&e))?;
            self.gone(&path);
            Ok(())
        })();
        answer(reply, result);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            if flags != 0 {
                return Err(libc::EINVAL); // RENAME_NOREPLACE, _EXCHANGE
            }
            self.check_write(&from)?;
            self.check_write(&to)?;
            let source = self.find(&from)?;
            // POSIX: a file replaces a file; nothing replaces a folder that
            // has something in it (mv's "into a folder" is the shell's).
            match self.find(&to) {
                Ok(target) if target.dir && !source.dir => return Err(libc::EISDIR),
                Ok(target) if !target.dir && source.dir => return Err(libc::ENOTDIR),
                Ok(target) if target.dir => {
                    if !self.listing(&to).map_err(|e| errno(&e))?.is_empty() {
                        return Err(libc::ENOTEMPTY);
                    }
                    self.wait(self.client.folder(&to, false))
                        .map_err(|e| errno(&e))?;
                }
                _ => {}
            }
            self.wait(self.client.relink(&from, &to, false))
                .map_err(|e| errno(&e))?;
            self.gone(&from);
            self.gone(&to);
            self.known(Node {
                path: to.clone(),
                ..source
            });
            // The old name's inode now names the new path.
            if let Some(ino) = self.inos.remove(&from) {
                self.inos.insert(to.clone(), ino);
                if let Some(node) = self.nodes.get_mut(&ino) {
                    node.path = to.clone();
                }
            }
            Ok(())
        })();
        answer(reply, result);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let result = (|| {
            let path = self.path_of(ino)?;
            let node = self.find(&path)?;
            if node.dir {
                return Err(libc::EISDIR);
            }
            if open_for_writing(flags) {
                self.check_write(&path)?;
                let truncate = flags & libc::O_TRUNC != 0;
                let writer = self
                    .open_writer(ino, &path, truncate)
                    .map_err(|e| errno(&e))?;
                if truncate {
                    if let Some(n) = self.nodes.get_mut(&ino) {
                        n.size = 0;
                    }
                }
                return Ok(self.new_fh(Handle::Write(writer)));
            }
            Ok(self.new_fh(Handle::Read(Reader {
                path,
                size: node.size,
                version: None,
                next: 0,
                stream: None,
            })))
        })();
        match result {
            Ok(fh) => reply.opened(fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let path = self.child(parent, name)?;
            self.check_write(&path)?;
            crate::names::validate_name(&path).map_err(|_| libc::EINVAL)?;
            let node = Node {
                path: path.clone(),
                dir: false,
                size: 0,
                modified: SystemTime::now(),
            };
            let ino = self.remember(node.clone());
            let writer = self.open_writer(ino, &path, true).map_err(|e| errno(&e))?;
            let fh = self.new_fh(Handle::Write(writer));
            Ok((ino, node, fh))
        })();
        match result {
            Ok((ino, node, fh)) => reply.created(&TTL, &self.attr(ino, &node), 0, fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let offset = offset.max(0) as u64;
        let result = match self.handles.get(&fh) {
            Some(Handle::Write(w)) => {
                let mut buf = vec![0; size as usize];
                match w.file.read_at(&mut buf, offset) {
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
            _ => self.read_at(fh, offset, u64::from(size)),
        };
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(Handle::Write(w)) = self.handles.get_mut(&fh) else {
            return reply.error(libc::EBADF);
        };
        let offset = offset.max(0) as u64;
        if let Err(e) = w.file.write_all_at(data, offset) {
            return reply.error(e.raw_os_error().unwrap_or(libc::EIO));
        }
        w.dirty = true;
        let ino = w.ino;
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.size = node.size.max(offset + data.len() as u64);
            node.modified = SystemTime::now();
        }
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _lock: u64, reply: ReplyEmpty) {
        answer(reply, self.store(fh));
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _data: bool, reply: ReplyEmpty) {
        answer(reply, self.store(fh));
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.close(fh));
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let result = (|| {
            let path = self.path_of(ino)?;
            self.listings.remove(&path);
            let nodes = self.listing(&path).map_err(|e| errno(&e))?.to_vec();
            let up = self.inos.get(parent(&path)).copied().unwrap_or(ROOT);
            let mut entries = vec![
                (ino, FileType::Directory, ".".to_string()),
                (up, FileType::Directory, "..".to_string()),
            ];
            for node in nodes {
                let name = node.path.rsplit('/').next().unwrap_or_default().to_string();
                let kind = match node.dir {
                    true => FileType::Directory,
                    false => FileType::RegularFile,
                };
                let child = self.remember(node);
                entries.push((child, kind, name));
            }
            let fh = self.next_fh;
            self.next_fh += 1;
            self.dir_handles.insert(fh, entries);
            Ok(fh)
        })();
        match result {
            Ok(fh) => reply.opened(fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.dir_handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, i as i64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dir_handles.remove(&fh);
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        match self.wait(self.client.usage("")) {
            Ok(usage) => {
                let used = usage.report.used();
                // With a quota, the quota is the disk; without, what is used
                // and what the cluster has room for.
                let total = match usage.report.quota {
                    Some(quota) => quota.max(used),
                    None => used.saturating_add(usage.cluster_free),
                };
                let free = total - used;
                let free = free.min(usage.cluster_free);
                let blocks = |bytes: u64| bytes / STATFS_BLOCK;
                reply.statfs(
                    blocks(total),
                    blocks(free),
                    blocks(free),
                    usage.report.files,
                    u64::MAX / 2,
                    STATFS_BLOCK as u32,
                    255,
                    STATFS_BLOCK as u32,
                );
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}
