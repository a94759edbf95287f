//! Never lose a byte: damaged copies, writes and deletes with a server down,
//! healing, and concurrent versions. In-process clusters with 1 s heal rounds.

use std::path::Path;

use ringdfs::client::{no_progress, Client, Health};
use ringdfs::placement::Placement;
use ringdfs::Error;

use crate::util::{
    captured_logs, chunk_file, chunks_on_disk, random_file, tree, wait_until, Cluster,
};

/// The two holders (1-based server numbers) of `chunk` of alice's `name`.
fn holders(name: &str, chunk: u32) -> [usize; 2] {
    Placement::of("alice", name, 4)
        .holders(chunk)
        .map(|p| p as usize)
}

async fn fully_healthy(client: &Client, name: &str) -> bool {
    matches!(client.verify(Some(name)).await, Ok(r) if r[0].health == Health::Healthy)
}

/// Damages chunk 2's copy on its first (`which = 0`) or second holder with
/// `damage`, then checks: GET still returns the right bytes, the bad copy is
/// named in the log, and after healing both copies verify and are identical.
async fn damage_and_heal(name: &str, which: usize, damage: fn(&Path)) {
    captured_logs();
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "src", 400_000);
    client.put(&path, name, &no_progress).await.unwrap();
    let chunk = 2;
    let pair = holders(name, chunk);
    let (bad, good) = (pair[which], pair[1 - which]);
    let victim = chunk_file(&cluster.data_dir(bad), "alice", name, chunk).unwrap();
    let good_copy = chunk_file(&cluster.data_dir(good), "alice", name, chunk).unwrap();
    damage(&victim);

    let out = work.path().join("out");
    client.get(name, &out, &no_progress).await.unwrap();
    assert!(
        std::fs::read(&out).unwrap() == data,
        "GET returned wrong bytes"
    );
    if which == 1 {
        // GET reads the first holder; VERIFY is what reads the second, and
        // calls the file corrupt (not merely unhealthy), naming the copy.
        let report = client.verify(Some(name)).await.unwrap();
        assert_eq!(report.len(), 1, "{report:?}");
        assert_eq!(report[0].health, Health::Corrupt, "{report:?}");
        assert_eq!(
            report[0].problems,
            [format!(
                "chunk 2 on dfs{bad}: corrupt (set aside; repairing)"
            )],
            "{report:?}"
        );
    }
    let logged = format!("server=dfs{bad}");
    wait_until(10, "the log names the bad copy", || async {
        captured_logs()
            .lines()
            .any(|l| l.contains(&logged) && l.contains(name) && l.contains("chunk=2"))
    })
    .await;
    wait_until(10, "both copies verify", || fully_healthy(&client, name)).await;
    let repaired = chunk_file(&cluster.data_dir(bad), "alice", name, chunk).unwrap();
    assert_eq!(
        std::fs::read(repaired).unwrap(),
        std::fs::read(good_copy).unwrap()
    );
    // The server stayed up throughout.
    let status = client.status().await;
    assert_eq!(status.len(), 4, "{status:?}");
    assert!(status.iter().all(|r| r.state.is_ok()), "{status:?}");
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len / 2).unwrap();
}

fn delete(path: &Path) {
    std::fs::remove_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_the_first_holder_is_caught_and_healed() {
    damage_and_heal("flip-first.bin", 0, flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_the_second_holder_is_caught_and_healed() {
    damage_and_heal("flip-second.bin", 1, flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chunk_is_caught_and_healed() {
    damage_and_heal("truncated.bin", 0, truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_chunk_is_caught_and_healed() {
    damage_and_heal("deleted.bin", 0, delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_data_folder_is_deleted_heals_itself() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..6 {
        let (path, data) = random_file(work.path(), "src", 50_000 + i * 1000);
        client
            .put(&path, &format!("w{i}"), &no_progress)
            .await
            .unwrap();
        files.push((format!("w{i}"), data));
    }
    std::fs::remove_dir_all(cluster.data_dir(3)).unwrap();
    for (name, data) in &files {
        let out = work.path().join("out");
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == *data, "{name}");
    }
    wait_until(10, "dfs3 holds its chunks again", || async {
        files.iter().all(|(name, _)| {
            let (a, b) = Placement::of("alice", name, 4).chunks_of(3);
            let mut want = vec![a, b];
            want.sort_unstable();
            chunks_on_disk(&cluster.data_dir(3), "alice", name) == want
        })
    })
    .await;
    for (name, _) in &files {
        assert!(fully_healthy(&client, name).await, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_copies_corrupt_is_a_clear_error_and_no_file() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "src", 300_000);
    client.put(&path, "doomed", &no_progress).await.unwrap();
    for server in holders("doomed", 3) {
        flip_a_byte(&chunk_file(&cluster.data_dir(server), "alice", "doomed", 3).unwrap());
    }
    let out_dir = tempfile::tempdir().unwrap();
    let err = client
        .get("doomed", &out_dir.path().join("doomed"), &no_progress)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, Error::ChunkUnavailable { chunk: 3, .. }),
        "{message}"
    );
    assert!(message.contains("corrupt"), "{message}");
    assert!(!message.contains('\n'));
    assert!(tree(out_dir.path()).is_empty());
    let report = client.verify(Some("doomed")).await.unwrap();
    assert_eq!(report[0].health, Health::Lost, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_a_server_down_are_degraded_then_healed_on_its_return() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    cluster.stop(3).await;
    let mut files = Vec::new();
    for i in 0..8 {
        let (path, data) = random_file(work.path(), "src", 100_000 + i * 77);
        let name = format!("d{i}");
        let receipt = client.put(&path, &name, &no_progress).await.unwrap();
        assert_eq!((receipt.copies, receipt.wanted), (6, 8));
        assert_eq!(receipt.missing, ["dfs3"]);
        files.push((name, data));
    }
    for (name, data) in &files {
        let out = work.path().join("out");
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == *data);
    }
    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), files.len(), "{listed:?}");
    assert!(listed.iter().all(|f| !f.healthy()), "LIST shows degraded");
    let location = client.locate("d0").await.unwrap();
    let down = location
        .chunks
        .iter()
        .flatten()
        .filter(|c| c.present.is_none())
        .count();
    assert_eq!(down, 2, "WHERE shows dfs3's two copies as down");

    cluster.restart(3).await;
    let took = wait_until(10, "every chunk has two copies on disk", || async {
        files.iter().all(|(name, _)| {
            let (a, b) = Placement::of("alice", name, 4).chunks_of(3);
            let mut want = vec![a, b];
            want.sort_unstable();
            chunks_on_disk(&cluster.data_dir(3), "alice", name) == want
        })
    })
    .await;
    eprintln!("healed 8 degraded files {took:?} after dfs3 returned");
    for (name, _) in &files {
        assert!(fully_healthy(&client, name).await, "{name}");
    }
    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), files.len(), "{listed:?}");
    assert!(listed.iter().all(|f| f.healthy()), "{listed:?}");
    let status = client.status().await;
    let dfs3 = status[2].state.as_ref().unwrap();
    assert!(dfs3.heal.copied >= 16, "{:?}", dfs3.heal);
    assert!(dfs3.heal.healed_in_secs.is_some(), "{:?}", dfs3.heal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_while_a_server_is_down_never_comes_back() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "src", 200_000);
    client.put(&path, "ghost", &no_progress).await.unwrap();
    let (path, keep) = random_file(work.path(), "keep", 1000);
    client.put(&path, "kept", &no_progress).await.unwrap();
    cluster.stop(2).await;
    let receipt = client.delete("ghost").await.unwrap();
    assert_eq!(receipt.missed, ["dfs2"]);
    cluster.restart(2).await;
    // From its return until it has applied the tombstone, and after: never listed.
    let fresh = cluster.login("alice").await;
    wait_until(10, "dfs2 dropped its copies", || async {
        let names: Vec<String> = fresh
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["kept"], "the deleted file reappeared");
        chunks_on_disk(&cluster.data_dir(2), "alice", "ghost").is_empty()
    })
    .await;
    for server in 1..=4 {
        assert!(chunks_on_disk(&cluster.data_dir(server), "alice", "ghost").is_empty());
    }
    assert!(matches!(
        fresh
            .get("ghost", &work.path().join("g"), &no_progress)
            .await,
        Err(Error::NotFound { .. })
    ));
    // Once every server has the tombstone, it is dropped everywhere.
    wait_until(10, "tombstones dropped", || async {
        (1..=4).all(|s| !ringdfs::store::file_dir(&cluster.data_dir(s), "alice", "ghost").exists())
    })
    .await;
    let out = work.path().join("kept.out");
    fresh.get("kept", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_one_whole_version_while_a_writer_alternates() {
    let cluster = Cluster::start(4).await;
    let writer = cluster.login("alice").await;
    let reader = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (short, short_data) = random_file(work.path(), "short", 150_000);
    let (long, long_data) = random_file(work.path(), "long", 700_001);
    writer.put(&short, "flip", &no_progress).await.unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let write = async {
        for i in 0..30 {
            let src = if i % 2 == 0 { &long } else { &short };
            writer.put(src, "flip", &no_progress).await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let read = async {
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let out = work.path().join("read");
            reader.get("flip", &out, &no_progress).await.unwrap();
            let got = std::fs::read(&out).unwrap();
            assert!(got == short_data || got == long_data, "a mix of versions");
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(write, read);
    assert!(reads > 0);
}

/// Two writers on one name: every read meanwhile is one writer's whole
/// file (and reads do succeed), and one writer wins on every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_name_one_wins_whole() {
    let cluster = Cluster::start(4).await;
    let (a, b) = (cluster.login("alice").await, cluster.login("alice").await);
    let work = tempfile::tempdir().unwrap();
    let (path_a, data_a) = random_file(work.path(), "a", 300_000);
    let (path_b, data_b) = random_file(work.path(), "b", 300_000);
    let writer = |client: &'static Client, path: std::path::PathBuf| async move {
        for _ in 0..50 {
            client.put(&path, "contested", &no_progress).await.unwrap();
        }
    };
    let (a, b): (&'static Client, &'static Client) =
        (Box::leak(Box::new(a)), Box::leak(Box::new(b)));
    let reader = cluster.login("alice").await;
    let wa = tokio::spawn(writer(a, path_a));
    let wb = tokio::spawn(writer(b, path_b));
    let out = work.path().join("read");
    // Every read that succeeds is one writer's whole file. A read may fail
    // only as "not there yet" (before the first commit) or as a chunk
    // replaced under it more often than GET retries; anything else fails.
    let (mut whole, mut not_yet, mut replaced) = (0u32, 0u32, 0u32);
    while !(wa.is_finished() && wb.is_finished()) {
        match reader.get("contested", &out, &no_progress).await {
            Ok(_) => {
                let got = std::fs::read(&out).unwrap();
                assert!(got == data_a || got == data_b, "a mix of two writers");
                whole += 1;
            }
            Err(Error::NotFound { .. }) if whole == 0 => not_yet += 1,
            Err(Error::ChunkUnavailable { .. }) => replaced += 1,
            Err(e) => panic!("a read failed: {e}"),
        }
    }
    eprintln!(
        "{whole} whole reads, {not_yet} before the first commit, {replaced} replaced mid-read"
    );
    assert!(
        whole >= 5,
        "only {whole} reads succeeded while the writers ran"
    );
    wa.await.unwrap();
    wb.await.unwrap();
    reader.get("contested", &out, &no_progress).await.unwrap();
    let got = std::fs::read(&out).unwrap();
    assert!(got == data_a || got == data_b);
    // Every server agrees on the winner, and once the replaced versions'
    // grace period is over, nothing of the losers is left.
    assert!(fully_healthy(&reader, "contested").await);
    wait_until(10, "only the winner's chunks on disk", || async {
        (1..=4).all(|s| chunks_on_disk(&cluster.data_dir(s), "alice", "contested").len() == 2)
    })
    .await;
}
