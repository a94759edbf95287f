//! Quotas and usage (issue 15): a per-user quota held with the users,
//! enforced by every server before any data moves and again at every
//! `PutChunk`; what a user uses (live files, uploads not committed, replaced
//! versions still kept) counted by every server; `du` and `df`.

use std::path::Path;
use std::process::Command;

use ringdfs::client::{no_progress, Client};
use ringdfs::error::Error;
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{checksum_of, ChunkId, Manifest, Request, Response, Version};
use ringdfs::store::Store;

use crate::util::{
    dfs_as_alice, dfs_server_user, random_file, raw_login, run_with_stdin, tree, wait_until,
    Cluster, RawConn,
};

/// Sets alice's quota through server `via`; it must succeed.
fn set_quota(cluster: &Cluster, via: usize, size: &str) {
    let (ok, out, err) = dfs_server_user(cluster, via, &["quota", "alice", size]);
    assert!(ok, "user quota alice {size}: {out}{err}");
}

/// alice's line in `dfs-server user list` (through server `via`).
fn alice_listed(cluster: &Cluster, via: usize) -> String {
    let (ok, out, err) = dfs_server_user(cluster, via, &["list"]);
    assert!(ok, "user list: {err}");
    out.lines()
        .find(|l| l.starts_with("alice "))
        .unwrap_or_else(|| panic!("alice not listed: {out}"))
        .to_string()
}

/// What server `i`'s store holds of everybody's: chunk copies and uploads
/// not committed.
fn held_by(cluster: &Cluster, i: usize) -> (u64, u64) {
    let store = Store::inspect(&cluster.data_dir(i)).unwrap();
    (
        store.stats().unwrap().chunks,
        store.uploads_pending().unwrap(),
    )
}

/// The message of a server's refusal (any other outcome fails the test).
fn refusal<T: std::fmt::Debug>(result: ringdfs::Result<T>) -> String {
    match result {
        Err(Error::Remote { error, .. }) => error.message,
        // Quota refusals travel typed (`ErrorKind::OverQuota`).
        Err(Error::OverQuota(message)) => message,
        other => panic!("expected a server's refusal, got {other:?}"),
    }
}

/// Sends the `PutChunk` header of chunk `chunk` of a 4-chunk file of
/// `size` bytes, `name` at `version`.
async fn put_header(conn: &mut RawConn, name: &str, version: Version, chunk: u32, size: u64) {
    let put = Request::PutChunk {
        name: name.into(),
        version,
        chunk,
        chunks: 4,
        size,
    };
    conn.send(&put).await.unwrap();
}

/// Sends chunk `chunk`'s bytes (0x5a) and `ChunkDone`, and returns the reply.
async fn put_body(
    conn: &mut RawConn,
    name: &str,
    version: Version,
    chunk: u32,
    size: u64,
) -> ringdfs::Result<Response> {
    let (start, end) = chunk_range(size, 4, chunk);
    let data = vec![0x5a; (end - start) as usize];
    let mut hasher = ChunkId {
        owner: "alice",
        name,
        version,
        chunk,
        len: end - start,
    }
    .hasher();
    hasher.update(&data);
    for block in data.chunks(1 << 20) {
        conn.send_data(bytes::Bytes::copy_from_slice(block))
            .await
            .unwrap();
    }
    conn.send(&Request::ChunkDone {
        checksum: checksum_of(&hasher),
    })
    .await
    .unwrap();
    conn.reply().await
}

/// Puts a file of `len` random bytes as `name`.
async fn put(client: &Client, dir: &Path, name: &str, len: usize) -> ringdfs::Result<()> {
    let (path, _) = random_file(dir, &name.replace('/', "_"), len);
    client.put(&path, name, &no_progress).await.map(drop)
}

/// A file over the quota is refused with the one line, before any PUT
/// sends data (no server holds a chunk or an upload of it afterwards, and
/// the `dfs` binary prints that line alone); a delete frees the room at
/// once; an overwrite needs the whole new size while the replaced version
/// is kept, which counts until it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_over_the_quota_is_refused_before_any_data_moves_and_a_delete_frees_it() {
    let cluster = Cluster::start(4).await;
    set_quota(&cluster, 1, "1MiB");
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    put(&alice, work.path(), "a", 600 << 10).await.unwrap();
    let before: Vec<(u64, u64)> = (1..=4).map(|i| held_by(&cluster, i)).collect();
    assert!(
        before
            .iter()
            .all(|&(chunks, uploads)| chunks == 2 && uploads == 0),
        "{before:?}"
    );

    let refused = put(&alice, work.path(), "b", 600 << 10).await.unwrap_err();
    let line = "quota: 0.6 of 1 MiB used; this file needs 600 KiB";
    assert_eq!(refused.to_string(), line);
    let after: Vec<(u64, u64)> = (1..=4).map(|i| held_by(&cluster, i)).collect();
    assert_eq!(after, before, "a refused PUT left chunks or uploads behind");
    for i in 1..=4 {
        let store = Store::inspect(&cluster.data_dir(i)).unwrap();
        assert_eq!(store.stored("alice", "b").unwrap(), Vec::new(), "dfs{i}");
    }

    // The `dfs` binary says the same, on one line, and exits 1.
    let config = cluster.write_client_config();
    let (local, _) = random_file(work.path(), "local-b", 600 << 10);
    let mut command = dfs_as_alice(&config, work.path(), "wonderland");
    command.arg("put").arg(&local).arg("b");
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("dfs: {line}\n")
    );
    assert_eq!(
        (1..=4).map(|i| held_by(&cluster, i)).collect::<Vec<_>>(),
        before
    );

    // A delete frees the room at once (a tombstone weighs nothing).
    alice.delete("a").await.unwrap();
    put(&alice, work.path(), "b", 600 << 10).await.unwrap();

    // An overwrite of b by as much again does not fit while the version it
    // replaces is kept; a smaller one does, and the replaced version counts
    // until it goes (two heal rounds).
    let again = put(&alice, work.path(), "b", 600 << 10).await.unwrap_err();
    assert_eq!(again.to_string(), line);
    put(&alice, work.path(), "b", 300 << 10).await.unwrap();
    let df = alice.usage("").await.unwrap().report;
    assert_eq!(
        (df.bytes, df.kept, df.kept_bytes),
        (300 << 10, 1, 600 << 10)
    );
    assert_eq!(df.used(), 900 << 10);
    wait_until(20, "the replaced version of b expires", || async {
        alice.usage("").await.unwrap().report.used() == 300 << 10
    })
    .await;
    put(&alice, work.path(), "c", 700 << 10).await.unwrap();
}

/// `du` of the top, a folder and a file, and `df`, agree with the sizes of
/// the files stored and with what the servers' stores hold (every chunk
/// copy: `copies` times each file); each server counts the same; bob's
/// files are not alice's. One-shot, piped and `--json` give the same
/// figures; a path that is neither file nor folder is one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn du_and_df_agree_with_the_files_and_with_what_the_disks_hold() {
    let seed = crate::util::seed("du_and_df_agree_with_the_files_and_with_what_the_disks_hold");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let bob = cluster.login("bob").await;
    let work = tempfile::tempdir().unwrap();
    let names = [
        "docs/a.txt",
        "docs/b/c.bin",
        "docs/b/d.bin",
        "docsx",
        "top.bin",
    ];
    let mut sizes = std::collections::BTreeMap::new();
    for name in names {
        let len = rand::Rng::gen_range(&mut rng, 1..300_000usize);
        put(&alice, work.path(), name, len).await.unwrap();
        sizes.insert(name, len as u64);
    }
    alice.folder("docs/empty", true).await.unwrap();
    put(&bob, work.path(), "docs/bobs", 123_456).await.unwrap();
    let sum = |prefix: &str| -> (u64, u64) {
        let under: Vec<u64> = sizes
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| *s)
            .collect();
        (under.len() as u64, under.iter().sum())
    };
    let (all_files, all_bytes) = sum("");
    assert_eq!(all_files, 5);

    let du = |path: &'static str| {
        let alice = &alice;
        async move {
            let r = alice.usage(path).await.unwrap().report;
            (r.path_files, r.path_bytes, r.path_is_file)
        }
    };
    assert_eq!(du("").await, (all_files, all_bytes, false));
    let (f, b) = sum("docs/");
    assert_eq!(du("docs").await, (f, b, false));
    assert_eq!(f, 3);
    let (f, b) = sum("docs/b/");
    assert_eq!(du("docs/b").await, (f, b, false));
    assert_eq!(du("docs/empty").await, (0, 0, false));
    assert_eq!(du("top.bin").await, (1, sizes["top.bin"], true));
    let missing = alice.usage("nothing/here").await.unwrap_err();
    assert_eq!(missing.to_string(), "no such file: nothing/here");

    let df = alice.usage("").await.unwrap();
    assert_eq!(df.report.quota, None);
    assert_eq!(
        (df.report.files, df.report.bytes, df.report.used()),
        (5, all_bytes, all_bytes)
    );
    assert_eq!((df.answered, df.servers, df.copies), (4, 4, 2));

    // What the disks hold: each server counts alice's alike, and every
    // chunk copy of everybody's files together is two of each file.
    let mut copies = 0;
    for i in 1..=4 {
        let store = Store::inspect(&cluster.data_dir(i)).unwrap();
        let u = store.usage("alice").unwrap();
        assert_eq!(
            (u.files, u.bytes, u.used()),
            (5, all_bytes, all_bytes),
            "dfs{i}"
        );
        copies += store.stats().unwrap().bytes;
    }
    assert_eq!(copies, 2 * (all_bytes + 123_456));
    // The servers share one disk here: its free space is counted once.
    let free = disk_free(cluster.dir.path()).saturating_sub(4 << 20) / 2;
    let diff = df.cluster_free.abs_diff(free);
    assert!(
        diff <= free / 20,
        "cluster free {} vs the disk's {free}",
        df.cluster_free
    );

    // One-shot and piped, as text and JSON.
    let config = cluster.write_client_config();
    let dfs = |args: &[&str]| {
        let mut command = dfs_as_alice(&config, work.path(), "wonderland");
        command.args(args);
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "dfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (f, b) = sum("docs/");
    let json: serde_json::Value = serde_json::from_str(&dfs(&["--json", "du", "docs/"])).unwrap();
    assert_eq!(json["files"], f);
    assert_eq!(json["bytes"], b);
    assert_eq!(json["file"], false);
    let json: serde_json::Value = serde_json::from_str(&dfs(&["--json", "df"])).unwrap();
    assert_eq!(json["used"], all_bytes);
    assert_eq!(json["quota"], serde_json::Value::Null);
    let text = dfs(&["du", "docs"]);
    assert_eq!(
        text,
        format!("{}  3 files  docs/\n", ringdfs::cli::human_size(b))
    );
    let text = dfs(&["df"]);
    assert!(text.starts_with("USED ") && text.contains("none"), "{text}");
    let out = run_with_stdin(
        dfs_as_alice(&config, work.path(), "wonderland"),
        "du top.bin\n-du nothing\ndf\n",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "a failure on a line that starts with - is let go"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let top = format!(
        "{}  1 file  top.bin",
        ringdfs::cli::human_size(sizes["top.bin"])
    );
    // Each command is echoed, then its output.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(
        lines[..4],
        [
            "dfs> du top.bin",
            top.as_str(),
            "dfs> du nothing",
            "dfs> df"
        ]
    );
    assert!(lines[4].starts_with("USED "), "{stdout}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no such file: nothing\n"
    );

    // A delete takes the file out of du and df on every server.
    alice.delete("docs/b/c.bin").await.unwrap();
    let (f, b) = sum("docs/b/");
    assert_eq!(
        du("docs/b").await,
        (f - 1, b - sizes["docs/b/c.bin"], false)
    );
    for i in 1..=4 {
        let u = Store::inspect(&cluster.data_dir(i))
            .unwrap()
            .usage("alice")
            .unwrap();
        assert_eq!(u.bytes, all_bytes - sizes["docs/b/c.bin"], "dfs{i}");
    }
}

/// Free bytes on the file system holding `dir`.
fn disk_free(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a writable statvfs, filled on success.
    let stat = unsafe {
        assert_eq!(libc::statvfs(path.as_ptr(), stat.as_mut_ptr()), 0);
        stat.assume_init()
    };
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// A quota set through one server is held by every server (each refuses a
/// file over it, asked directly), kept across a password change, shown by
/// `user list` through another, and removed everywhere by `none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_set_through_one_server_is_enforced_by_every_other() {
    let cluster = Cluster::start(4).await;
    set_quota(&cluster, 2, "1MiB");
    let check = |i: usize, size: u64| {
        let cluster = &cluster;
        async move {
            let mut conn = raw_login(cluster, i, "alice").await;
            conn.call(&Request::CheckQuota { size }).await
        }
    };
    let mut refused = 0;
    for i in 1..=4 {
        let line = refusal(check(i, 2 << 20).await);
        assert_eq!(
            line, "quota: 0 of 1 MiB used; this file needs 2 MiB",
            "dfs{i}"
        );
        refused += 1;
        assert!(
            matches!(check(i, 1 << 20).await, Ok(Response::Ok)),
            "dfs{i}"
        );
    }
    assert_eq!(refused, 4);
    assert!(alice_listed(&cluster, 4).contains("quota 1 MiB"));
    let (ok, out, _) = dfs_server_user(&cluster, 4, &["list"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains("no quota")),
        "{out}"
    );

    // A new password keeps the quota.
    let (ok, _, err) = dfs_server_user(&cluster, 3, &["passwd", "alice"]);
    assert!(ok, "{err}");
    for i in 1..=4 {
        refusal(check(i, 2 << 20).await);
    }

    let (ok, out, err) = dfs_server_user(&cluster, 3, &["quota", "alice", "none"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("removed the quota of alice on dfs3"),
        "{out}"
    );
    for i in 1..=4 {
        assert!(
            matches!(check(i, 2 << 20).await, Ok(Response::Ok)),
            "dfs{i}"
        );
    }
    assert!(alice_listed(&cluster, 1).contains("no quota"));
}

/// Hand-built uploads cannot get around the quota: a `PutChunk` of a file
/// over it is refused and stores nothing; a later chunk of an admitted
/// upload cannot claim a larger file, nor its commit a smaller one; and
/// uploads sent at once are admitted only as far as the quota goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_uploads_over_the_quota_are_refused_and_store_nothing() {
    let cluster = Cluster::start(4).await;
    set_quota(&cluster, 1, "100KiB");

    // A large chunk (a file of its own) of a 4 MiB file.
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let version = Version::next(None);
    put_header(&mut conn, "big", version, 1, 4 << 20).await;
    let line = refusal(put_body(&mut conn, "big", version, 1, 4 << 20).await);
    assert_eq!(line, "quota: 0 of 100 KiB used; this file needs 4 MiB");
    for i in 1..=4 {
        assert_eq!(held_by(&cluster, i), (0, 0), "dfs{i}");
    }
    assert_eq!(
        tree(&cluster.data_dir(1).join("users")),
        Vec::<std::path::PathBuf>::new()
    );

    // An admitted upload of 8 000 bytes whose next chunk claims 4 MiB.
    let version = Version::next(None);
    let mut conn = raw_login(&cluster, 1, "alice").await;
    put_header(&mut conn, "small", version, 1, 8_000).await;
    assert!(matches!(
        put_body(&mut conn, "small", version, 1, 8_000).await,
        Ok(Response::Ok)
    ));
    put_header(&mut conn, "small", version, 2, 4 << 20).await;
    let line = refusal(conn.reply().await);
    assert!(line.contains("its upload began as 8000"), "{line}");
    // Nor may its commit say it is smaller than it was sent as.
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let commit = Request::Commit {
        manifest: Manifest {
            name: "small".into(),
            version,
            size: 100,
            chunks: 4,
            checksums: vec![ringdfs::protocol::Checksum([0; 32]); 4],
            stored_at: 0,
            digest: ringdfs::protocol::FileDigest::None,
            deleted: false,
            data: None,
            kept: None,
            meta: None,
        },
        missing: Vec::new(),
    };
    let line = refusal(conn.call(&commit).await);
    assert!(
        line.contains("its chunks were sent as a file of 8000"),
        "{line}"
    );
    let u = Store::inspect(&cluster.data_dir(1))
        .unwrap()
        .usage("alice")
        .unwrap();
    assert_eq!((u.uploads, u.upload_bytes, u.files), (1, 8_000, 0));

    // Five uploads of 40 000 bytes at once to dfs2 (which holds none of the
    // above; small chunks, counted by the store only once stored): of
    // 100 KiB (102 400), two fit, three do not.
    let mut conns = Vec::new();
    let version = Version::next(None);
    for k in 0..5 {
        let mut conn = raw_login(&cluster, 2, "alice").await;
        put_header(&mut conn, &format!("at-once-{k}"), version, 1, 40_000).await;
        conns.push(conn);
    }
    let mut replies = Vec::new();
    for (k, conn) in conns.iter_mut().enumerate() {
        replies.push(put_body(conn, &format!("at-once-{k}"), version, 1, 40_000).await);
    }
    let stored = replies
        .iter()
        .filter(|r| matches!(r, Ok(Response::Ok)))
        .count();
    let over: Vec<String> = replies
        .into_iter()
        .filter(|r| r.is_err())
        .map(refusal)
        .collect();
    assert_eq!((stored, over.len()), (2, 3), "{over:?}");
    for line in &over {
        assert!(
            line.starts_with("quota: ") && line.ends_with("this file needs 39.1 KiB"),
            "{line}"
        );
    }
    let u = Store::inspect(&cluster.data_dir(2))
        .unwrap()
        .usage("alice")
        .unwrap();
    assert_eq!((u.uploads, u.upload_bytes), (2, 80_000));
}

/// A quota below what the user uses is refused with one line, and nothing
/// changes: online (through a server) and offline (in the data folders,
/// with no server running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_below_use_is_refused_with_nothing_changed() {
    let mut cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    put(&alice, work.path(), "a", 600 << 10).await.unwrap();

    let (ok, out, err) = dfs_server_user(&cluster, 1, &["quota", "alice", "500KiB"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert_eq!(
        err,
        "dfs-server: dfs1: a quota of 500 KiB is below what alice uses now (600 KiB); nothing changed\n"
    );
    assert!(alice_listed(&cluster, 2).contains("no quota"));
    set_quota(&cluster, 1, "1MiB");
    let (ok, _, err) = dfs_server_user(&cluster, 1, &["quota", "alice", "100KB"]);
    assert!(!ok && err.lines().count() == 1, "{err}");
    assert!(alice_listed(&cluster, 3).contains("quota 1 MiB"));

    drop(alice);
    for i in 1..=4 {
        cluster.stop(i).await;
    }
    let (ok, _, err) = dfs_server_user(&cluster, 1, &["quota", "alice", "100KiB"]);
    assert!(!ok, "offline: {err}");
    assert!(
        err.lines().count() == 1 && err.contains("is below what alice uses now (600 KiB)"),
        "{err}"
    );
    assert!(alice_listed(&cluster, 1).contains("quota 1 MiB"));
}

/// A SIZE that is not one is refused by `dfs-server user quota` in one
/// line naming it, before anything is asked of any server.
#[test]
fn quota_sizes_that_do_not_parse_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for size in ["10XB", "1.2.3GB", "", "ten", "99999999999EiB"] {
        let out = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .args(["user", "quota", "alice", size])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{size:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{size:?}: {err}");
        assert!(err.contains(&format!("{size:?}")), "{size:?}: {err}");
        assert!(out.stdout.is_empty());
        checked += 1;
    }
    assert_eq!(checked, 5);
}
