//! Resuming transfers (issue 16, "Resume"): an interrupted PUT or GET of a
//! large file continues with `put -c` / `get -c` from where it stopped,
//! reusing only bytes whose checksums match. Bytes sent are counted by the
//! kernel (`/proc/PID/io`), never taken from the client's own report. Only
//! `read`/`write`-family calls count there (tokio's TLS writes do: `writev`;
//! `send` and `recv` would not), so what is counted is: a client's `wchar`
//! (its TLS writes: both copies of a PUT; the part file of a GET), a
//! server's `wchar` during a GET (its sends) and during a PUT (the chunk
//! bytes it writes to disk).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use ringdfs::client::Transfer;
use tokio::sync::Notify;

use crate::util::{dfs_as_alice, seed, seeded_file, tree, wait_until, Cluster, ProcCluster};

/// Every file below `dir`, as whole paths.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    tree(dir).into_iter().map(|p| dir.join(p)).collect()
}

const RESUME: Transfer = Transfer {
    resume: true,
    keep_times: false,
};

/// One counter of `/proc/PID/io` (`rchar`, `wchar`) of process `pid`.
fn io_counter(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/io"))
        .parse()
        .unwrap()
}

/// The sum of `field` over the cluster's four servers.
fn servers_io(cluster: &ProcCluster, field: &str) -> u64 {
    (1..=4).map(|i| io_counter(cluster.pid(i), field)).sum()
}

/// Whether `pid` has exited and not been reaped (its `/proc/PID/io` then
/// holds its final counts).
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    state.is_some_and(|s| s.starts_with('Z'))
}

/// Runs `command` to its end; returns its exit status, what it printed on
/// stderr, and its `wchar` (every byte it wrote: to its sockets, mostly),
/// read from `/proc` after it exited and before it is reaped.
async fn run_counting_writes(
    mut command: std::process::Command,
) -> (std::process::ExitStatus, String, u64) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    wait_until(300, "the dfs client to exit", || async { is_zombie(pid) }).await;
    let wchar = io_counter(pid, "wchar");
    let status = child.wait().unwrap();
    (status, said.join().unwrap(), wchar)
}

/// Starts `command` and SIGKILLs it once `progress(pid)` reaches `at`;
/// fails if it exits first.
async fn kill_at(
    mut command: std::process::Command,
    at: u64,
    progress: impl Fn(u32) -> u64,
) -> u64 {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reached = loop {
        let now = progress(child.id());
        if now >= at {
            break now;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the client exited ({status}) before it was to be killed ({now} of {at})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    reached
}

/// A file of `len` bytes of seeded random data, written in pieces; returns
/// its BLAKE3.
fn write_seeded(path: &Path, len: u64, seed: u64) -> blake3::Hash {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = blake3::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hash.update(&buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    hash.finalize()
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut hash = blake3::Hasher::new();
    hash.update_reader(std::fs::File::open(path).unwrap())
        .unwrap();
    hash.finalize()
}

fn write_client_config(cluster: &ProcCluster, dir: &Path) -> PathBuf {
    let config = cluster.client_config();
    let servers: Vec<String> = config.servers.iter().map(|s| format!("{s:?}")).collect();
    let path = dir.join("client.toml");
    let text = format!(
        "servers = [{}]\ndownload_dir = \"downloads\"\ntimeout_secs = 10\nca = {:?}\n",
        servers.join(", "),
        config.ca.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A 1 GiB PUT whose client is SIGKILLed half-way (the servers have written
/// half of the two copies) is finished by `put -c`, which sends at most
/// 55 % of the file again: counted as the bytes the client wrote (both
/// copies, TLS included) and as the bytes the servers wrote. The same for
/// a GET killed once it has written half the file, and `get -c` (counted as
/// the bytes the servers sent). The file comes back identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_1_gib_put_and_get_continue_with_c_sending_at_most_55_percent_again() {
    const SIZE: u64 = 1 << 30;
    const COPIES: u64 = 2;
    let seed = seed("resume_1gib");
    let cluster = ProcCluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let config = write_client_config(&cluster, work.path());
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let dfs = || dfs_as_alice(&config, &home, "wonderland");
    let local = work.path().join("big.bin");
    let original = write_seeded(&local, SIZE, seed);

    // PUT, killed once the servers have written half of the two copies.
    let before = servers_io(&cluster, "wchar");
    let mut put = dfs();
    put.args(["put"]).arg(&local).arg("big.bin");
    let reached = kill_at(put, SIZE * COPIES / 2, |_| {
        servers_io(&cluster, "wchar") - before
    })
    .await;
    eprintln!("put killed after the servers wrote {reached} bytes");
    // Chunks that were finished are stored; the others' parts are kept.
    let kept: u64 = (1..=4)
        .flat_map(|i| {
            let dir = cluster.data_dir(i);
            [
                files_under(&dir.join("partial")),
                files_under(&dir.join("users")),
            ]
            .concat()
        })
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    assert!(
        kept >= SIZE * COPIES * 2 / 5,
        "the servers keep what arrived of the cut upload: {kept} bytes"
    );

    let before = servers_io(&cluster, "wchar");
    let mut resume = dfs();
    resume.env("RUST_LOG", "ringdfs=debug");
    resume.args(["put", "-c"]).arg(&local).arg("big.bin");
    let (status, said, wrote) = run_counting_writes(resume).await;
    // What the client and the servers said of the parts kept (for a failure).
    let logs: Vec<String> = (1..=4).map(|i| cluster.log(i)).collect();
    let parts: Vec<&str> = said
        .lines()
        .chain(logs.iter().flat_map(|l| l.lines()))
        .filter(|l| l.contains("kept"))
        .collect();
    assert!(status.success(), "put -c: {status}: {said}");
    let stored = servers_io(&cluster, "wchar") - before;
    for (who, bytes) in [("the client sent", wrote), ("the servers wrote", stored)] {
        let share = bytes as f64 / (SIZE * COPIES) as f64;
        eprintln!(
            "put -c: {who} {bytes} bytes: {:.1} % of the two copies",
            share * 100.0
        );
        assert!(
            share <= 0.55,
            "put -c: {who} {:.1} % of the file again; the client said: {parts:#?}",
            share * 100.0
        );
    }
    let partials_left: Vec<PathBuf> = (1..=4)
        .flat_map(|i| files_under(&cluster.data_dir(i).join("partial")))
        .collect();
    assert!(
        partials_left.is_empty(),
        "the commit removes the partials: {partials_left:?}"
    );

    // GET, killed once it has written half the file.
    let out = work.path().join("out.bin");
    let mut get = dfs();
    get.args(["get", "big.bin"]).arg(&out);
    let reached = kill_at(get, SIZE / 2, |pid| io_counter(pid, "wchar")).await;
    eprintln!("get killed after writing {reached} bytes");
    assert!(!out.exists(), "a cut GET leaves no target");

    let before = servers_io(&cluster, "wchar");
    let mut resume = dfs();
    resume.args(["get", "-c", "big.bin"]).arg(&out);
    let (status, said, _) = run_counting_writes(resume).await;
    assert!(status.success(), "get -c: {status}: {said}");
    let sent = servers_io(&cluster, "wchar") - before;
    let share = sent as f64 / SIZE as f64;
    eprintln!(
        "get -c: the servers wrote {sent} bytes: {:.1} %",
        share * 100.0
    );
    assert!(
        share <= 0.55,
        "get -c fetched {:.1} % of the file again",
        share * 100.0
    );
    assert!(hash_file(&out) == original, "the file came back different");
    let left: Vec<PathBuf> = files_under(work.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".ringdfs-"))
        .collect();
    assert!(left.is_empty(), "part files left: {left:?}");
}

/// Runs `work` until `progress` has counted `at` bytes, then drops it (as
/// Ctrl-C does); panics if it finishes first.
async fn cancel_at<T: std::fmt::Debug>(
    work: impl std::future::Future<Output = T>,
    moved: &AtomicI64,
    at: i64,
    reached: &Notify,
) {
    tokio::select! {
        done = work => panic!("finished before it was cancelled: {done:?}"),
        _ = reached.notified() => {}
    }
    assert!(moved.load(Ordering::Relaxed) >= at);
}

/// Partial files of uploads under a server's data folder.
fn partial_files(cluster: &Cluster, i: usize) -> Vec<PathBuf> {
    files_under(&cluster.data_dir(i).join("partial"))
}

/// A byte in the middle of what a server kept of a cut upload is changed:
/// `put -c` finds the kept bytes do not match the local file and sends that
/// chunk whole to that server; every copy ends up stored and right.
#[tokio::test]
async fn put_c_sends_again_a_chunk_whose_kept_part_was_damaged() {
    const SIZE: usize = 48 << 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("resume_damaged_put"));
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = seeded_file(&mut rng, work.path(), "f.bin", SIZE);

    let moved = AtomicI64::new(0);
    let reached = Notify::new();
    let half = (SIZE / 2) as i64;
    let progress = |d: i64| {
        if moved.fetch_add(d, Ordering::Relaxed) + d >= half {
            reached.notify_one();
        }
    };
    let put = alice.put_with(&local, "f.bin", RESUME, &progress);
    cancel_at(put, &moved, half, &reached).await;

    // Every server that holds chunks kept part of them; damage dfs1's.
    let kept = partial_files(&cluster, 1);
    assert!(!kept.is_empty(), "dfs1 keeps the parts of the cut upload");
    let largest = kept
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .unwrap();
    let damaged = wait_for_partial_at_rest(largest).await;
    flip_byte(&damaged, std::fs::metadata(&damaged).unwrap().len() / 2);

    let receipt = alice
        .put_with(&local, "f.bin", RESUME, &ringdfs::client::no_progress)
        .await
        .unwrap();
    assert_eq!(
        receipt.copies, receipt.wanted,
        "the damaged holder took its chunk whole: {receipt:?}"
    );
    let reports = alice.verify(Some("f.bin")).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].problems.is_empty(),
        "every copy is right: {:?}",
        reports[0]
    );
    let out = work.path().join("out.bin");
    alice
        .get("f.bin", &out, &ringdfs::client::no_progress)
        .await
        .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the file is what was put"
    );
    for i in 1..=4 {
        assert!(
            partial_files(&cluster, i).is_empty(),
            "dfs{i}: partials stay"
        );
    }
}

/// Waits until a partial file stops growing (its writer has let go).
async fn wait_for_partial_at_rest(path: &Path) -> PathBuf {
    let len = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = len();
    wait_until(10, "the partial to stop growing", || {
        let now = len();
        let still = now == last && now > 0;
        last = now;
        async move { still }
    })
    .await;
    path.to_path_buf()
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0xff;
    file.write_all_at(&byte, at).unwrap();
}

/// A plain `put` cancelled half-way still leaves nothing on the servers:
/// its `Abort` removes the partial chunks too.
#[tokio::test]
async fn a_cancelled_plain_put_leaves_no_partial_chunks() {
    const SIZE: usize = 48 << 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("resume_plain_put"));
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, _) = seeded_file(&mut rng, work.path(), "f.bin", SIZE);
    let moved = AtomicI64::new(0);
    let reached = Notify::new();
    let half = (SIZE / 2) as i64;
    let progress = |d: i64| {
        if moved.fetch_add(d, Ordering::Relaxed) + d >= half {
            reached.notify_one();
        }
    };
    let put = alice.put(&local, "f.bin", &progress);
    cancel_at(put, &moved, half, &reached).await;
    wait_until(20, "the abort to remove every partial chunk", || async {
        (1..=4).all(|i| partial_files(&cluster, i).is_empty())
    })
    .await;
    assert_eq!(
        alice.list().await.unwrap().len(),
        0,
        "nothing was committed"
    );
}

/// A byte of what a cut `get -c` wrote is changed in its part file: the
/// next `get -c` finds that chunk does not match the manifest, fetches it
/// again from its start, and the file comes out right. A cancelled plain
/// GET removes its part file.
#[tokio::test]
async fn get_c_fetches_again_a_chunk_damaged_in_the_part_file() {
    const SIZE: usize = 48 << 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("resume_damaged_get"));
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = seeded_file(&mut rng, work.path(), "f.bin", SIZE);
    alice
        .put(&local, "f.bin", &ringdfs::client::no_progress)
        .await
        .unwrap();
    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let out = downloads.join("out.bin");
    let part_files = || -> Vec<PathBuf> {
        files_under(&downloads)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".ringdfs-"))
            .collect()
    };

    let moved = AtomicI64::new(0);
    let reached = Notify::new();
    let half = (SIZE / 2) as i64;
    let progress = |d: i64| {
        if moved.fetch_add(d, Ordering::Relaxed) + d >= half {
            reached.notify_one();
        }
    };
    let get = alice.get_with("f.bin", &out, RESUME, &progress);
    cancel_at(get, &moved, half, &reached).await;
    assert!(!out.exists());
    let parts = part_files();
    let part = parts
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "part"))
        .unwrap_or_else(|| panic!("get -c keeps its part file: {parts:?}"));
    let record = parts
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("and its record: {parts:?}"));
    // Damage the middle of the first chunk the record says is partly written.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let done: Vec<u64> = record["done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect();
    assert_eq!(done.len(), 4, "{record}");
    let (chunk, written) = done
        .iter()
        .enumerate()
        .find(|(_, d)| **d > 0)
        .unwrap_or_else(|| panic!("something was recorded as written: {record}"));
    let (start, _) = ringdfs::placement::chunk_range(SIZE as u64, 4, chunk as u32 + 1);
    flip_byte(part, start + written / 2);

    alice
        .get_with("f.bin", &out, RESUME, &ringdfs::client::no_progress)
        .await
        .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the damaged chunk was fetched again"
    );
    assert!(part_files().is_empty(), "{:?}", part_files());

    // A plain GET, cancelled, takes its part file with it.
    std::fs::remove_file(&out).unwrap();
    let moved = AtomicI64::new(0);
    let reached = Notify::new();
    let progress = |d: i64| {
        if moved.fetch_add(d, Ordering::Relaxed) + d >= half {
            reached.notify_one();
        }
    };
    let get = alice.get("f.bin", &out, &progress);
    cancel_at(get, &moved, half, &reached).await;
    assert!(part_files().is_empty(), "{:?}", part_files());
}
