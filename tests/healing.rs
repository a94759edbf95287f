//! Never lose a byte: damaged copies, writes and deletes with a server down,
//! healing, and concurrent versions. In-process clusters with 1 s heal rounds.

use std::path::Path;

use ringdfs::client::{no_progress, Client, Health};
use ringdfs::error::ErrorKind;
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{Frame, Request, Response, Version};
use ringdfs::Error;

use crate::util::{
    captured_logs, chunk_file, chunk_files, chunks_on_disk, random_file, raw_login, tree,
    version_in_file_name, wait_until, Cluster, RawConn,
};

/// The two holders (1-based server numbers) of `chunk` of alice's `name`.
fn holders(name: &str, chunk: u32) -> [usize; 2] {
    let [a, b] = crate::util::holders("alice", name, chunk, 4)[..] else {
        unreachable!("two holders")
    };
    [a, b]
}

async fn fully_healthy(client: &Client, name: &str) -> bool {
    matches!(client.verify(Some(name)).await, Ok(r) if r[0].health == Health::Healthy)
}

/// Damages chunk 2's copy on its first (`which = 0`) or second holder with
/// `damage`, in a file of `len` bytes, then checks: GET still returns the
/// right bytes, the bad copy is named in the log, and after healing both
/// copies verify and are identical.
async fn damage_and_heal(name: &str, len: usize, which: usize, damage: fn(&Path)) {
    captured_logs();
    // The reads below must be what finds the damage: no background scrub.
    let cluster = Cluster::start_tuned(4, |c| c.store.scrub_bytes_per_sec = 0).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "src", len);
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
    damage_and_heal("flip-first.bin", 400_000, 0, flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_the_second_holder_is_caught_and_healed() {
    damage_and_heal("flip-second.bin", 400_000, 1, flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chunk_is_caught_and_healed() {
    damage_and_heal("truncated.bin", 400_000, 0, truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_chunk_is_caught_and_healed() {
    damage_and_heal("deleted.bin", 400_000, 0, delete).await;
}

// A small file (at most `SMALL_FILE`) is read in one round, each chunk
// coming with its manifest from the holder read first (`Fetch`): the same
// damage is caught there, and healed, as a chunk's own read catches it.
// 200 000 bytes: chunks of 50 000, above the tests' `inline_max`, so files.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_small_file_is_caught_and_healed() {
    damage_and_heal("small-flip.bin", 200_000, 0, flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_small_files_second_copy_is_caught_by_verify_and_healed() {
    damage_and_heal("small-flip-second.bin", 200_000, 1, flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_chunk_of_a_small_file_is_caught_and_healed() {
    damage_and_heal("small-deleted.bin", 200_000, 0, delete).await;
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
            let want = crate::util::held("alice", name, 3, 4);
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
            let want = crate::util::held("alice", name, 3, 4);
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
        let names = crate::util::names(&fresh).await;
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

// ---------------------------------------------------------------------------
// A returning server catches up; heal never spreads a bad copy.

/// Chunk `chunk` of alice's `name` at `version`, asked of one server over a
/// raw connection: its bytes, or the error the server answered with.
async fn raw_chunk(
    conn: &mut RawConn,
    name: &str,
    version: Version,
    chunk: u32,
) -> ringdfs::Result<Vec<u8>> {
    let request = Request::GetChunk {
        name: name.into(),
        version,
        chunk,
    };
    let len = match conn.call(&request).await? {
        Response::Chunk { len } => len,
        other => panic!("GetChunk answered {other:?}"),
    };
    let mut bytes = Vec::new();
    loop {
        match conn
            .recv::<Response>()
            .await?
            .expect("the rest of the chunk")
        {
            Frame::Data(block) => bytes.extend_from_slice(&block),
            Frame::Msg(Response::ChunkDone { .. }) => break,
            Frame::Msg(Response::Error(e)) => return Err(e.into_error("the server")),
            Frame::Msg(other) => panic!("inside a chunk: {other:?}"),
        }
    }
    assert_eq!(bytes.len() as u64, len);
    Ok(bytes)
}

/// A file overwritten while one of its holders was down: from the moment
/// that server is back, no read through it yields the older version (its
/// manifest only moves forward, a chunk asked of it is the new bytes or
/// "not here"), GETs return the new file, and it ends up holding only the
/// new version's chunks and serving them alone with its neighbours down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_back_from_an_outage_adopts_the_overwrite_and_never_serves_the_old_version() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let name = "overwritten.bin";
    let (path, old) = random_file(work.path(), "v1", 400_000);
    client.put(&path, name, &no_progress).await.unwrap();
    let v1 = client.stat(name).await.unwrap();
    assert_eq!(chunk_files(&cluster.data_dir(3), "alice", name).len(), 2);

    cluster.stop(3).await;
    let (path, new) = random_file(work.path(), "v2", 300_001);
    let receipt = client.put(&path, name, &no_progress).await.unwrap();
    assert_eq!(receipt.missing, ["dfs3"]);
    let v2 = client.stat(name).await.unwrap();
    assert!(v2.version > v1.version);
    let mine = crate::util::held("alice", name, 3, 4);
    let new_chunk = |c: u32| {
        let (start, end) = chunk_range(new.len() as u64, 4, c);
        &new[start as usize..end as usize]
    };

    cluster.restart(3).await;
    let mut raw = raw_login(&cluster, 3, "alice").await;
    let started = std::time::Instant::now();
    let (mut polls, mut not_yet, mut served, mut gets) = (0u32, 0u32, 0u32, 0u32);
    let mut adopted = false;
    loop {
        polls += 1;
        // Its manifest: the old one until it adopts the new, never back.
        let stat = Request::Stat { name: name.into() };
        let (version, held) = match raw.call(&stat).await.unwrap() {
            Response::File {
                manifest: Some(m),
                held,
            } => (m.version, held),
            other => panic!("dfs3 answered Stat with {other:?}"),
        };
        if version == v2.version {
            adopted = true;
        } else {
            assert_eq!(version, v1.version, "dfs3 shows a version nobody wrote");
            assert!(!adopted, "dfs3 went back to the old version");
        }
        // Its copies of the new version: the new bytes, or not there yet.
        for &c in &mine {
            match raw_chunk(&mut raw, name, v2.version, c).await {
                Ok(bytes) => {
                    assert!(
                        bytes == new_chunk(c),
                        "dfs3 served other bytes as chunk {c}"
                    );
                    served += 1;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => not_yet += 1,
                Err(e) => panic!("dfs3, chunk {c} of the new version: {e}"),
            }
        }
        // A reader through the whole ring gets the new file, every time.
        let out = work.path().join("read");
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(
            std::fs::read(&out).unwrap() == new,
            "GET returned the old file"
        );
        gets += 1;
        if adopted && held == mine {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "after 20 s dfs3 still has version {version:?} (new: {:?}) and chunks {held:?}",
            v2.version
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!(
        "dfs3 caught up in {:?}: {polls} polls, {gets} GETs, {served} new chunks served, {not_yet} not there yet",
        started.elapsed()
    );

    // On its disk, once the replaced version's grace period is over: only
    // the new version's chunks; the old version is gone for any reader.
    let want: Vec<(String, u32)> = mine
        .iter()
        .map(|&c| (version_in_file_name(v2.version), c))
        .collect();
    wait_until(10, "dfs3 holds only the new version's chunks", || async {
        chunk_files(&cluster.data_dir(3), "alice", name) == want
    })
    .await;
    for &c in &mine {
        let err = raw_chunk(&mut raw, name, v1.version, c).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "old chunk {c}: {err}");
        assert!(raw_chunk(&mut raw, name, v2.version, c).await.unwrap() == new_chunk(c));
    }
    drop(raw);

    // With both its neighbours down, dfs3 alone serves its two chunks (and
    // dfs1 the other two): still the new file.
    cluster.stop(2).await;
    cluster.stop(4).await;
    let fresh = cluster.login("alice").await;
    let out = work.path().join("forced");
    fresh.get(name, &out, &no_progress).await.unwrap();
    assert!(
        std::fs::read(&out).unwrap() == new,
        "dfs3 served the old file"
    );
    assert!(std::fs::read(&out).unwrap() != old);
}

/// Heal rounds server `i` has finished, as its STATUS says.
async fn heal_rounds(client: &Client, i: usize) -> u64 {
    let status = client.status().await;
    match &status[i - 1].state {
        Ok(s) => s.heal.rounds,
        Err(e) => panic!("dfs{i} did not answer STATUS: {e}"),
    }
}

/// Waits until server `i` has finished `more` heal rounds after now.
async fn more_heal_rounds(client: &Client, i: usize, more: u64) {
    let from = heal_rounds(client, i).await;
    wait_until(
        20,
        &format!("dfs{i} ran {more} more heal rounds"),
        || async { heal_rounds(client, i).await >= from + more },
    )
    .await;
}

/// Waits until `healer` has fetched chunk `chunk` of alice's `name` from
/// `source`: it holds a copy, or it logged that the copy failed.
async fn heal_fetched(cluster: &Cluster, name: &str, chunk: u32, source: usize, healer: usize) {
    let failed = format!("server=dfs{healer} file={name} chunk={chunk} from=dfs{source}");
    wait_until(20, "the healer fetched the source's copy", || async {
        chunk_file(&cluster.data_dir(healer), "alice", name, chunk).is_some()
            || captured_logs()
                .lines()
                .any(|l| l.contains("chunk copy failed") && l.contains(&failed))
    })
    .await;
}

/// The surviving copy of a chunk goes bad while the other holder has lost
/// its own: heal fetches it, finds it bad, and stores nothing. The bad copy
/// is set aside, the chunk is reported lost (never healthy), and GET fails
/// with one line and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_does_not_copy_a_source_copy_that_fails_its_checksum() {
    captured_logs();
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let name = "bad-source.bin";
    let (path, _) = random_file(work.path(), "src", 400_000);
    client.put(&path, name, &no_progress).await.unwrap();
    let chunk = 2;
    let [source, healer] = holders(name, chunk);
    let bad = chunk_file(&cluster.data_dir(source), "alice", name, chunk).unwrap();
    flip_a_byte(&bad);
    std::fs::remove_file(chunk_file(&cluster.data_dir(healer), "alice", name, chunk).unwrap())
        .unwrap();

    // The healer's round notices its copy is gone and asks the source, whose
    // read of its copy fails: the only reader of that copy is that fetch.
    let healer_copy = || chunk_file(&cluster.data_dir(healer), "alice", name, chunk);
    heal_fetched(&cluster, name, chunk, source, healer).await;
    assert_eq!(
        healer_copy(),
        None,
        "the healer stored a copy of a bad chunk"
    );
    wait_until(10, "the source set its bad copy aside", || async {
        !tree(&cluster.data_dir(source).join("quarantine")).is_empty()
    })
    .await;
    more_heal_rounds(&client, healer, 2).await;
    assert_eq!(
        healer_copy(),
        None,
        "the healer stored a copy of a bad chunk"
    );
    assert!(tree(&cluster.data_dir(healer).join("tmp")).is_empty());
    assert_eq!(
        chunk_file(&cluster.data_dir(source), "alice", name, chunk),
        None
    );

    let report = client.verify(Some(name)).await.unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].health, Health::Lost, "{report:?}");
    let out_dir = tempfile::tempdir().unwrap();
    let err = client
        .get(name, &out_dir.path().join("out"), &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ChunkUnavailable { chunk: 2, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(tree(out_dir.path()).is_empty());
}

/// Heal checks a fetched copy against its own manifest, not the sender's
/// word: a source whose copy and manifest agree with each other but not
/// with the file as written (its disk rewritten while it was stopped) gets
/// its copy refused, and the healer never holds bytes that fail the file's
/// checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_checks_each_fetched_copy_against_the_manifest_not_the_sender() {
    use ringdfs::protocol::{checksum_of, ChunkId};
    use ringdfs::store::{ChunkSpec, Store};

    captured_logs();
    let mut cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let name = "lying-source.bin";
    let (path, _) = random_file(work.path(), "src", 400_000);
    client.put(&path, name, &no_progress).await.unwrap();
    let chunk = 3;
    let [source, healer] = holders(name, chunk);
    let good = std::fs::read(chunk_file(&cluster.data_dir(healer), "alice", name, chunk).unwrap())
        .unwrap();

    // While the source is stopped, the healer loses its copy (it cannot heal
    // it: the source is the only other holder).
    cluster.stop(source).await;
    std::fs::remove_file(chunk_file(&cluster.data_dir(healer), "alice", name, chunk).unwrap())
        .unwrap();
    // The source's disk is rewritten: other bytes for the chunk, with a
    // trailer and a manifest that vouch for them (a new database, which
    // takes the chunk files in as not yet committed).
    let data = cluster.data_dir(source);
    std::fs::remove_file(data.join("meta.redb")).unwrap();
    {
        let store = Store::open(&data, crate::util::test_tuning()).unwrap();
        let mut manifest = client.stat(name).await.unwrap();
        let spec = ChunkSpec {
            owner: "alice".into(),
            name: name.into(),
            version: manifest.version,
            chunk,
            chunks: manifest.chunks,
            size: manifest.size,
        };
        let len = spec.chunk_len();
        let lie = vec![0x5a; len as usize];
        let mut hasher = ChunkId {
            owner: "alice",
            name,
            version: manifest.version,
            chunk,
            len,
        }
        .hasher();
        hasher.update(&lie);
        let sum = checksum_of(&hasher);
        manifest.checksums[chunk as usize - 1] = sum;
        assert!(store.commit("alice", manifest).unwrap());
        let mut writer = store.begin_chunk(spec).unwrap();
        writer.write(&lie).unwrap();
        writer.finish(sum).unwrap();
    }
    cluster.restart(source).await;

    let healer_copy = || chunk_file(&cluster.data_dir(healer), "alice", name, chunk);
    heal_fetched(&cluster, name, chunk, source, healer).await;
    more_heal_rounds(&client, healer, 2).await;
    // The source was the only place to fetch from: any copy would be its bytes.
    if let Some(copy) = healer_copy() {
        let stored = std::fs::read(copy).unwrap();
        panic!(
            "the healer stored the source's copy ({} bytes, the written chunk's: {})",
            stored.len(),
            stored == good
        );
    }
    assert!(tree(&cluster.data_dir(healer).join("tmp")).is_empty());
}

// ---------------------------------------------------------------------------
// VERIFY as a script runs it, and the administrator's store check.

/// `dfs --config CONFIG --user alice ARGS...` with `stdin` piped in, HOME and
/// the state folder inside `home`: exit code, stdout, stderr.
fn dfs(config: &Path, home: &Path, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut command = crate::util::dfs_as_alice(config, home, "wonderland");
    command.args(args);
    let out = crate::util::run_with_stdin(command, stdin);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The HEALTH column of `name`'s row in VERIFY's table.
fn health_in_table(table: &str, name: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix("  ")?;
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// `dfs verify [NAME]` (one-shot, piped, and --json): status 0 and
/// "healthy"/"degraded" while every chunk has a good copy, status 1 and
/// "corrupt" when a bad copy is found, status 1 and "lost" when a chunk has
/// no good copy left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_as_a_command_exits_1_exactly_when_something_is_corrupt_or_lost() {
    // VERIFY must be what finds the damage: no background scrub racing it.
    let mut cluster = Cluster::start_tuned(4, |c| c.store.scrub_bytes_per_sec = 0).await;
    let client = cluster.login("alice").await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let work = tempfile::tempdir().unwrap();
    for name in ["fine.bin", "hurt.bin", "gone.bin"] {
        let (path, _) = random_file(work.path(), "src", 200_000);
        client.put(&path, name, &no_progress).await.unwrap();
    }

    let (code, out, err) = dfs(&config, home, &["verify"], "");
    assert_eq!(code, Some(0), "{out}{err}");
    for name in ["fine.bin", "hurt.bin", "gone.bin"] {
        assert_eq!(
            health_in_table(&out, name).as_deref(),
            Some("healthy"),
            "{out}"
        );
    }
    assert!(out.contains("3 of 3 files healthy"), "{out}");

    // A server down: degraded, which is not a failure.
    cluster.stop(4).await;
    let (code, out, err) = dfs(&config, home, &["verify", "fine.bin"], "");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        health_in_table(&out, "fine.bin").as_deref(),
        Some("degraded"),
        "{out}"
    );
    assert!(out.contains("0 of 1 file healthy"), "{out}");
    cluster.restart(4).await;
    wait_until(10, "fine.bin is healthy again", || {
        fully_healthy(&client, "fine.bin")
    })
    .await;

    // One bad copy (on the holder GET does not read first): corrupt, status 1.
    let [_, second] = holders("hurt.bin", 1);
    flip_a_byte(&chunk_file(&cluster.data_dir(second), "alice", "hurt.bin", 1).unwrap());
    let (code, out, err) = dfs(&config, home, &["verify", "hurt.bin"], "");
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        health_in_table(&out, "hurt.bin").as_deref(),
        Some("corrupt"),
        "{out}"
    );
    assert!(
        out.contains(&format!("chunk 1 on dfs{second}: corrupt")),
        "{out}"
    );
    // Repaired within seconds: healthy, status 0.
    wait_until(10, "hurt.bin is repaired", || {
        fully_healthy(&client, "hurt.bin")
    })
    .await;
    let (code, out, err) = dfs(&config, home, &["verify", "hurt.bin"], "");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        health_in_table(&out, "hurt.bin").as_deref(),
        Some("healthy"),
        "{out}"
    );

    // Both copies of a chunk bad: lost, status 1, for the whole listing too.
    for server in holders("gone.bin", 3) {
        flip_a_byte(&chunk_file(&cluster.data_dir(server), "alice", "gone.bin", 3).unwrap());
    }
    let (code, out, err) = dfs(&config, home, &["verify"], "");
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        health_in_table(&out, "gone.bin").as_deref(),
        Some("lost"),
        "{out}"
    );
    assert_eq!(
        health_in_table(&out, "fine.bin").as_deref(),
        Some("healthy"),
        "{out}"
    );
    assert!(out.contains("2 of 3 files healthy"), "{out}");
    assert!(out.contains("chunk 3 has no good copy"), "{out}");

    // The same through standard input, as a script pipes commands, and as JSON.
    let (code, out, err) = dfs(&config, home, &[], "verify gone.bin\n");
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        health_in_table(&out, "gone.bin").as_deref(),
        Some("lost"),
        "{out}"
    );
    let (code, out, err) = dfs(&config, home, &[], "verify fine.bin\n");
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = dfs(&config, home, &["--json", "verify", "gone.bin"], "");
    assert_eq!(code, Some(1), "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["name"], "gone.bin");
    assert_eq!(json[0]["health"], "lost");
}

/// `dfs-server verify dfsN` reads every copy the server's store holds,
/// beside the running server: status 0 and the count when all are good;
/// status 1, a line per bad copy and a one-line reason when some are not;
/// and it changes nothing on disk (the bad copies stay where they are).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfs_server_verify_checks_every_copy_read_only_and_fails_on_a_bad_one() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let names = ["one.bin", "two.bin", "three.bin"];
    for name in names {
        let (path, _) = random_file(work.path(), "src", 120_000);
        client.put(&path, name, &no_progress).await.unwrap();
    }
    cluster.write_server_config(2);
    let admin_verify = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .args(["verify", "dfs2"])
            .current_dir(cluster.dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    /// Every file under a folder with its bytes.
    fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        tree(dir)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(dir.join(&p)).unwrap();
                (p, bytes)
            })
            .collect()
    }

    let (code, out, err) = admin_verify();
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "dfs2: checked 6 chunk copies, 0 bad\n", "{err}");

    // A flipped byte in one copy, a truncated other: both named, status 1.
    let a = crate::util::held("alice", "one.bin", 2, 4)[0];
    let b = crate::util::held("alice", "three.bin", 2, 4)[1];
    flip_a_byte(&chunk_file(&cluster.data_dir(2), "alice", "one.bin", a).unwrap());
    truncate(&chunk_file(&cluster.data_dir(2), "alice", "three.bin", b).unwrap());
    // The stored files (the server itself may rewrite its ring view meanwhile).
    let before = snapshot(&cluster.data_dir(2).join("users"));
    let (code, out, err) = admin_verify();
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!("BAD  alice/one.bin chunk {a}: ")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("BAD  alice/three.bin chunk {b}: ")),
        "{out}"
    );
    assert_eq!(lines[2], "dfs2: checked 6 chunk copies, 2 bad");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("dfs-server: 2 bad copies on dfs2"), "{err}");
    assert!(
        snapshot(&cluster.data_dir(2).join("users")) == before,
        "the check changed the store"
    );
    assert!(tree(&cluster.data_dir(2).join("quarantine")).is_empty());

    // A folder that holds no store is an error, not "0 bad".
    let mut empty = cluster.config(2).clone();
    empty.name = "dfs9".into();
    empty.data_dir = work.path().join("nothing-here");
    empty.ring.clear();
    let path = cluster.dir.path().join("servers").join("dfs9.toml");
    std::fs::write(&path, toml::to_string(&empty).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(["verify", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no ringdfs store"), "{err}");
    assert!(
        !work.path().join("nothing-here").exists(),
        "the check created a store"
    );
}

/// The scrub finds damage no read touches: the copy GET does not read first
/// goes bad and is repaired in the background, so when the other copy goes
/// bad later, the file still reads back (without the scrub, both copies of
/// the chunk would then be bad). Small chunks in the database are scrubbed
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_repairs_a_copy_no_read_touches_before_the_other_goes_bad() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "src", 300_000);
    client.put(&path, "quiet.bin", &no_progress).await.unwrap();
    let chunk = 2;
    let [first, second] = holders("quiet.bin", chunk);
    let copy = chunk_file(&cluster.data_dir(second), "alice", "quiet.bin", chunk).unwrap();
    let good = std::fs::read(&copy).unwrap();
    flip_a_byte(&copy);
    let scrub_bad = || async {
        let status = client.status().await;
        status[second - 1].state.as_ref().unwrap().heal.scrub_bad
    };
    wait_until(
        20,
        "the scrub found the bad copy and it was repaired",
        || async {
            scrub_bad().await >= 1 && std::fs::read(&copy).is_ok_and(|bytes| bytes == good)
        },
    )
    .await;
    // Now the copy every GET reads first goes bad too.
    flip_a_byte(&chunk_file(&cluster.data_dir(first), "alice", "quiet.bin", chunk).unwrap());
    let out = work.path().join("out");
    client.get("quiet.bin", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
}
