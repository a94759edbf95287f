//! `mv` and `cp` (issue 15): metadata only. A file's data keeps the name
//! and version it was written under, so a rename or copy moves no chunk
//! byte, on disk or on the wire; on each server the new names and the old
//! names' tombstones commit together, so a reader sees one or the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ringdfs::client::{no_progress, Client, DirItem};
use ringdfs::error::Error;

use crate::util::{random_file, wait_until, Cluster, ProcCluster};

/// Every file under a data folder's `users/` and `volumes/` with its inode
/// and length: equal maps mean no chunk was written, moved or removed.
fn chunk_files(data_dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![data_dir.join("users"), data_dir.join("volumes")];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                out.insert(entry.path(), (meta.ino(), meta.len()));
            }
        }
    }
    out
}

/// Bytes a process has read and written through system calls (sockets
/// and files alike), from `/proc/PID/io`.
fn io_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("rchar:") || l.starts_with("wchar:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum()
}

async fn get_bytes(client: &Client, name: &str, dir: &Path) -> Vec<u8> {
    let path = dir.join("fetched");
    client.get(name, &path, &no_progress).await.unwrap();
    std::fs::read(path).unwrap()
}

/// The whole paths of a folder's files and sub-folders, as listed.
async fn paths_in(client: &Client, folder: &str) -> Vec<String> {
    client
        .list_dir(folder)
        .await
        .unwrap()
        .iter()
        .map(|item| item.path().to_string())
        .collect()
}

/// Whether `name` is listed in its folder.
async fn listed(client: &Client, name: &str) -> bool {
    let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
    paths_in(client, parent).await.iter().any(|p| p == name)
}

/// `mv` of a 48 MiB file and of a folder of 1 000 files writes, moves and
/// removes no chunk file or volume on any server, and each server reads and
/// writes far fewer bytes than the file holds; both read back whole under
/// their new names, and the old names are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_large_file_and_a_folder_of_1000_files_moves_no_chunk_byte() {
    // No background scrub: it reads chunk files at its own pace, and on a
    // loaded machine the moves take long enough for that to dwarf them.
    let quiet = ringdfs::store::Tuning {
        scrub_bytes_per_sec: 0,
        ..Default::default()
    };
    let cluster = ProcCluster::start_tuned(4, Some(&quiet)).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (big, big_data) = random_file(work.path(), "big", 48 << 20);
    client.put(&big, "big.bin", &no_progress).await.unwrap();
    let (small, small_data) = random_file(work.path(), "small", 300);
    for i in 0..1000 {
        client
            .put(&small, &format!("inbox/f{i:04}"), &no_progress)
            .await
            .unwrap();
    }
    let disks: Vec<_> = (1..=4).map(|i| chunk_files(&cluster.data_dir(i))).collect();
    let io: Vec<u64> = (1..=4).map(|i| io_bytes(cluster.pid(i))).collect();

    let moved = client
        .relink("big.bin", "archive.bin", false)
        .await
        .unwrap();
    assert_eq!((moved.to.as_str(), moved.files), ("archive.bin", 1));
    let moved = client.relink("inbox", "done/inbox", false).await.unwrap();
    assert_eq!((moved.to.as_str(), moved.files), ("done/inbox", 1000));
    assert!(moved.missed.is_empty(), "{:?}", moved.missed);

    for i in 1..=4 {
        let spent = io_bytes(cluster.pid(i)) - io[i - 1];
        println!("dfs{i}: {spent} bytes read and written for both moves");
        assert!(
            spent < 8 << 20,
            "dfs{i} read and wrote {spent} bytes for two moves of metadata"
        );
        assert_eq!(
            chunk_files(&cluster.data_dir(i)),
            disks[i - 1],
            "dfs{i}: a chunk file or volume changed"
        );
    }
    assert_eq!(
        get_bytes(&client, "archive.bin", work.path()).await,
        big_data
    );
    assert!(!listed(&client, "big.bin").await);
    let inbox = client.list_dir("done/inbox").await.unwrap();
    assert_eq!(inbox.len(), 1000);
    assert_eq!(inbox[0].path(), "done/inbox/f0000");
    for i in [0, 517, 999] {
        let name = format!("done/inbox/f{i:04}");
        assert_eq!(get_bytes(&client, &name, work.path()).await, small_data);
    }
    assert_eq!(paths_in(&client, "").await, ["archive.bin", "done"]);
}

/// While a file and a folder are moved back and forth, a reader listing
/// them always finds exactly one of the two names: never neither, never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_the_old_name_or_the_new_one_never_neither_never_both() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let reader = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "f", 100_000);
    client.put(&path, "a.txt", &no_progress).await.unwrap();
    for i in 0..50 {
        client
            .put(&path, &format!("dir-a/f{i:02}"), &no_progress)
            .await
            .unwrap();
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut looks = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let top = paths_in(&reader, "").await;
                let files = ["a.txt", "b.txt"]
                    .iter()
                    .filter(|n| top.contains(&n.to_string()));
                assert_eq!(files.count(), 1, "listing {top:?}");
                let dirs = ["dir-a", "dir-b"]
                    .iter()
                    .filter(|n| top.contains(&n.to_string()));
                assert_eq!(dirs.count(), 1, "listing {top:?}");
                looks += 1;
            }
            looks
        })
    };
    for round in 0..6 {
        let (from, to) = if round % 2 == 0 {
            ("a", "b")
        } else {
            ("b", "a")
        };
        client
            .relink(&format!("{from}.txt"), &format!("{to}.txt"), false)
            .await
            .unwrap();
        let moved = client
            .relink(&format!("dir-{from}"), &format!("dir-{to}"), false)
            .await
            .unwrap();
        assert_eq!(moved.files, 50);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let looks = watching.await.unwrap();
    println!("the reader listed {looks} times during 12 moves");
    assert!(looks >= 3, "the reader must have looked during the moves");
    assert!(listed(&client, "a.txt").await && listed(&client, "dir-a/f49").await);
}

/// `cp` makes a second name for the same data on the servers: each name
/// then lives on its own (deleting or overwriting one leaves the other),
/// a folder copies whole, and a server that missed the copy catches up by
/// healing and then serves the copy's chunks it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_lives_on_its_own_and_a_server_that_missed_it_catches_up() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (one, one_data) = random_file(work.path(), "one", 3_000_000);
    let (two, two_data) = random_file(work.path(), "two", 1_000_000);
    client.put(&one, "report.pdf", &no_progress).await.unwrap();
    let copied = client.relink("report.pdf", "copy.pdf", true).await.unwrap();
    assert_eq!(copied.files, 1);
    client.delete("report.pdf").await.unwrap();
    assert_eq!(get_bytes(&client, "copy.pdf", work.path()).await, one_data);

    // A folder copies whole; overwriting a file of the copy leaves the original.
    client.put(&one, "src/a", &no_progress).await.unwrap();
    client.put(&two, "src/deep/b", &no_progress).await.unwrap();
    client.folder("src/empty", true).await.unwrap();
    client.relink("src", "backup", true).await.unwrap();
    client.put(&two, "backup/a", &no_progress).await.unwrap();
    assert_eq!(get_bytes(&client, "src/a", work.path()).await, one_data);
    assert_eq!(get_bytes(&client, "backup/a", work.path()).await, two_data);
    assert_eq!(
        get_bytes(&client, "backup/deep/b", work.path()).await,
        two_data
    );
    assert!(
        listed(&client, "backup/empty").await,
        "the empty folder is copied"
    );
    // A file moved onto an empty folder (made with mkdir) goes into it.
    let into = client.relink("src/a", "backup/empty", false).await.unwrap();
    assert_eq!(into.to, "backup/empty/a");
    assert_eq!(
        get_bytes(&client, "backup/empty/a", work.path()).await,
        one_data
    );

    // dfs2 misses a move; back, it heals to it, and serves its copies.
    cluster.stop(2).await;
    let moved = client.relink("copy.pdf", "kept.pdf", false).await.unwrap();
    assert_eq!(moved.missed, ["dfs2"]);
    cluster.restart(2).await;
    let dfs2 = ringdfs::store::Store::inspect(&cluster.data_dir(2)).unwrap();
    wait_until(60, "dfs2 to adopt the move and lack nothing", || {
        let dfs2 = dfs2.clone();
        async move {
            dfs2.manifest("alice", "kept.pdf")
                .unwrap()
                .is_some_and(|m| !m.deleted)
                && dfs2.stats().unwrap().missing == 0
        }
    })
    .await;
    cluster.stop(1).await;
    assert_eq!(get_bytes(&client, "kept.pdf", work.path()).await, one_data);
}

/// What cannot be moved or copied is one line, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_moves_are_one_line_and_change_nothing() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "f", 1000);
    client.put(&path, "a", &no_progress).await.unwrap();
    client.put(&path, "docs/x", &no_progress).await.unwrap();
    let before = client.list().await.unwrap();
    for (from, to, keep, says) in [
        ("a", "a", false, "are the same"),
        ("docs", "docs/sub", false, "into itself"),
        ("docs", "a", true, "is a file"),
        ("missing", "b", false, "missing"),
        ("a", "../b", false, ""),
        ("a", "b//c", false, ""),
    ] {
        let e = client.relink(from, to, keep).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains(says), "mv {from} {to}: {text}");
        assert!(!text.contains('\n'), "{text}");
        if from == "missing" {
            assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        }
    }
    assert_eq!(client.list().await.unwrap(), before);
    // A file moved onto a folder goes into it, as mv does.
    let moved = client.relink("a", "docs", false).await.unwrap();
    assert_eq!(moved.to, "docs/a");
    let docs: Vec<String> = client
        .list_dir("docs")
        .await
        .unwrap()
        .iter()
        .filter_map(|item| match item {
            DirItem::File(f) => Some(f.name.clone()),
            DirItem::Folder(_) => None,
        })
        .collect();
    assert_eq!(docs, ["docs/a", "docs/x"]);
}
