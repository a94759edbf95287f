//! SIGKILL where the metadata engine of issue 11 is most exposed: in the
//! middle of a burst of small PUTs (chunks kept in the database, commits
//! shared by concurrent writers) and in the middle of the one-time migration
//! of a data folder written by the first release.
//!
//! Servers are `dfs-server` child processes. What a killed server left on its
//! disk is read from its own store while it is down ([`Store::inspect`]
//! recovers the database as its next start would), so no copy on another
//! server and no heal can cover a loss. Randomness (sizes, victims, kill
//! moments) comes from `CHAOS_SEED`, printed first, as in `crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use ringdfs::client::{no_progress, Client, PutReceipt};
use ringdfs::codec;
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{Checksum, Manifest, Version};
use ringdfs::store::{file_dir, ChunkTrailer, CopyId, Store, Tuning};
use ringdfs::Error;
use serde::Serialize;

use crate::util::{
    chunk_checksums, seed, seeded_file, test_tuning, version_in_file_name, wait_until, Launched,
    ProcCluster, USERS,
};

const SERVERS: usize = 4;

// ---------------------------------------------------------------------------
// Checks shared by both tests.

/// Reads every `(owner, name, bytes)` back through clients, eight at a time,
/// and compares it byte for byte.
async fn read_back(cluster: &ProcCluster, files: &[(&str, &str, &[u8])], work: &Path) {
    let mut clients = BTreeMap::new();
    for (owner, _, _) in files {
        if !clients.contains_key(owner) {
            clients.insert(*owner, cluster.login(owner).await);
        }
    }
    let clients = &clients;
    let failures: Vec<String> = futures_util::stream::iter(files.iter().enumerate())
        .map(|(i, &(owner, name, data))| async move {
            let out = work.join(format!("get-{i}"));
            let got = clients[owner].get(name, &out, &no_progress).await;
            let result = match got {
                Ok(_) if std::fs::read(&out).unwrap() == data => None,
                Ok(_) => Some(format!("{owner}/{name}: wrong bytes")),
                Err(e) => Some(format!("{owner}/{name}: {e}")),
            };
            let _ = std::fs::remove_file(&out);
            result
        })
        .buffer_unordered(8)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {} files do not read back: {:?}",
        failures.len(),
        files.len(),
        &failures[..failures.len().min(10)]
    );
}

/// Every copy a store holds, in key order.
fn all_copies(store: &Store) -> Vec<ringdfs::store::CopyId> {
    let mut all: Vec<ringdfs::store::CopyId> = Vec::new();
    loop {
        let page = store.copies(all.last(), 1000).unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// What a store says it lacks, all of it.
fn all_missing(store: &Store) -> BTreeSet<CopyId> {
    let mut all: Vec<CopyId> = Vec::new();
    loop {
        let page = store.missing(all.last(), 1000).unwrap();
        if page.is_empty() {
            return all.into_iter().collect();
        }
        all.extend(page);
    }
}

/// A store whose tables agree with each other, as one transaction at a time
/// leaves them: the scrub reads every copy it records without fault, its
/// totals count what its tables hold, and `missing` lists exactly the chunks
/// its placement gives it of its live files that it does not hold.
fn check_consistent(server: usize, store: &Store, owners: &[&str]) {
    let (checked, bad) = store.scrub().unwrap();
    assert!(bad.is_empty(), "dfs{server}: the scrub finds {bad:?}");
    let copies = all_copies(store);
    assert_eq!(checked, copies.len() as u64, "dfs{server}: scrubbed copies");
    let stats = store.stats().unwrap();
    assert_eq!(
        stats.chunks,
        copies.len() as u64,
        "dfs{server}: chunk total"
    );
    let layout = store.layout().unwrap();
    let (mut live, mut expected_missing) = (0, BTreeSet::new());
    for owner in owners {
        for entry in store.list(owner).unwrap() {
            if entry.deleted {
                continue;
            }
            live += 1;
            for chunk in layout
                .as_ref()
                .map_or_else(Vec::new, |l| l.wanted(owner, &entry.name, entry.chunks))
            {
                if !entry.held.contains(&chunk) {
                    expected_missing.insert(CopyId {
                        owner: owner.to_string(),
                        name: entry.name.clone(),
                        version: entry.version,
                        chunk,
                    });
                }
            }
        }
    }
    assert_eq!(stats.files, live, "dfs{server}: file total");
    let missing = all_missing(store);
    assert_eq!(
        stats.missing,
        missing.len() as u64,
        "dfs{server}: missing total"
    );
    assert!(
        missing == expected_missing,
        "dfs{server}: `missing` lists {} chunks, its files lack {}",
        missing.len(),
        expected_missing.len()
    );
}

/// Checks that every chunk file under `data_dir/users` is whole (its
/// trailer present, its length and checksum right), and returns how many
/// of them the store does not record (a chunk stored by a PUT that never
/// recorded it: whole, but unused).
fn check_chunk_files(server: usize, data_dir: &Path, store: &Store) -> usize {
    let recorded: BTreeSet<PathBuf> = all_copies(store)
        .into_iter()
        .map(|c| {
            file_dir(data_dir, &c.owner, &c.name).join(format!(
                "{}.{}",
                version_in_file_name(c.version),
                c.chunk
            ))
        })
        .collect();
    let mut unrecorded = 0;
    for path in crate::util::tree(&data_dir.join("users")) {
        let path = data_dir.join("users").join(path);
        let bytes = std::fs::read(&path).unwrap();
        let whole = whole_chunk(&bytes);
        assert!(
            whole.is_some(),
            "dfs{server}: {} is not a whole chunk file",
            path.display()
        );
        if !recorded.contains(&path) {
            unrecorded += 1;
        }
    }
    unrecorded
}

/// The trailer of a whole chunk file: "RDFSCHK1" at the end, a trailer that
/// decodes, the length it gives, and data matching its checksum.
fn whole_chunk(bytes: &[u8]) -> Option<ChunkTrailer> {
    let end = bytes.len().checked_sub(12)?;
    if &bytes[end + 4..] != b"RDFSCHK1" {
        return None;
    }
    let len = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
    let start = end.checked_sub(len)?;
    let trailer: ChunkTrailer = codec::decode(&bytes[start..end]).ok()?;
    if trailer.len != start as u64 {
        return None;
    }
    let mut hasher = ringdfs::protocol::ChunkId {
        owner: &trailer.owner,
        name: &trailer.name,
        version: trailer.version,
        chunk: trailer.chunk,
        len: trailer.len,
    }
    .hasher();
    hasher.update(&bytes[..start]);
    (ringdfs::protocol::checksum_of(&hasher) == trailer.checksum).then_some(trailer)
}

/// Nothing in any server's log says it panicked.
fn no_panics(cluster: &ProcCluster) {
    for i in 1..=SERVERS {
        let log = cluster.log(i);
        assert!(!log.contains("panicked"), "dfs{i} panicked:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// 1. A burst of small PUTs.

/// The kills and restarts so far, as the PUTs see them: one server is down
/// at a time, and `epoch` is odd while it is; `victims[k]` is the server
/// killed when the epoch became `2k + 1`.
#[derive(Default)]
struct Timeline {
    epoch: AtomicU64,
    victims: Mutex<Vec<usize>>,
}

impl Timeline {
    fn now(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    /// Called just before `victim` is killed.
    fn killing(&self, victim: usize) {
        self.victims.lock().unwrap().push(victim);
        self.epoch.fetch_add(1, SeqCst);
    }

    /// Called once the victim listens again.
    fn restarted(&self) {
        self.epoch.fetch_add(1, SeqCst);
    }

    /// Whether `server` was down at any moment of a PUT that started at
    /// epoch `from` and returned at epoch `to`.
    fn down_during(&self, server: usize, (from, to): (u64, u64)) -> bool {
        let victims = self.victims.lock().unwrap();
        (from..=to)
            .filter(|e| e % 2 == 1)
            .any(|e| victims[(e / 2) as usize] == server)
    }
}

/// An acknowledged PUT.
struct Acked {
    name: String,
    data: Vec<u8>,
    receipt: PutReceipt,
    /// Of the bytes sent (index 0 = chunk 1).
    checksums: Vec<Checksum>,
    /// The timeline's epoch when the PUT started and when it returned.
    epochs: (u64, u64),
}

/// What the writers did.
struct Burst {
    acked: Mutex<Vec<Arc<Acked>>>,
    /// PUTs that failed, all while a server was down.
    failed: AtomicU64,
    /// Each writer's PUT under way: 1 + the epoch it started at (0: none).
    running: Vec<AtomicU64>,
}

impl Burst {
    fn new(writers: usize) -> Burst {
        Burst {
            acked: Mutex::default(),
            failed: AtomicU64::new(0),
            running: (0..writers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether every PUT that started before epoch `epoch` has returned.
    fn returned_before(&self, epoch: u64) -> bool {
        self.running.iter().all(|r| {
            let started = r.load(SeqCst);
            started == 0 || started > epoch
        })
    }
}

/// One writer: PUTs fresh files (most 100 B to 12 KiB, whose chunks go into
/// the database; one in ten 64 KB to 256 KiB, whose chunks are files) one
/// after another until `stop`.
async fn writer(
    task: usize,
    client: Client,
    mut rng: StdRng,
    work: PathBuf,
    timeline: Arc<Timeline>,
    burst: Arc<Burst>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(SeqCst) {
        n += 1;
        let name = format!("w{task}-{n:05}");
        let len = if rng.gen_ratio(1, 10) {
            rng.gen_range(64_001..=256 << 10)
        } else {
            rng.gen_range(100..=12 << 10)
        };
        let (path, data) = seeded_file(&mut rng, &work, &format!("src-{task}"), len);
        let from = timeline.now();
        burst.running[task].store(from + 1, SeqCst);
        let result = client.put(&path, &name, &no_progress).await;
        let to = timeline.now();
        match result {
            Ok(receipt) => {
                let checksums =
                    chunk_checksums("alice", &name, receipt.version, receipt.chunks, &data);
                burst.acked.lock().unwrap().push(Arc::new(Acked {
                    name,
                    data,
                    receipt,
                    checksums,
                    epochs: (from, to),
                }));
            }
            Err(e) => {
                assert!(
                    from != to || from % 2 == 1,
                    "PUT {name} failed with every server up: {e}"
                );
                burst.failed.fetch_add(1, SeqCst);
            }
        }
        burst.running[task].store(0, SeqCst);
    }
}

/// What one kill left on the victim's disk.
#[derive(Debug, Default)]
struct Left {
    /// Acknowledged files whose copies the victim took: all their chunks
    /// were checked.
    files: usize,
    /// Of those, PUTs still running (or whose commit it missed) when it died,
    /// which it holds the chunks of but no manifest for.
    uncommitted: usize,
    /// Unfinished chunk files under tmp/.
    tmp: usize,
    /// Whole chunk files under users/ that no record names.
    unrecorded: usize,
}

/// Checks the store of `victim`, killed (and not yet restarted), against
/// every PUT acknowledged so far.
fn check_killed(
    cluster: &ProcCluster,
    victim: usize,
    acked: &[Arc<Acked>],
    timeline: &Timeline,
) -> Left {
    let data_dir = cluster.data_dir(victim);
    let store = Store::inspect(&data_dir).unwrap();
    let mut left = Left::default();
    for put in acked {
        let name = put.name.as_str();
        if put.receipt.missing.contains(&format!("dfs{victim}")) {
            continue;
        }
        left.files += 1;
        let version = put.receipt.version;
        // It acknowledged these chunks: they are durable, whole and right.
        let table = crate::util::held("alice", name, victim, SERVERS as u32);
        for &chunk in &table {
            let reader = store
                .open_chunk("alice", name, version, chunk)
                .unwrap_or_else(|e| panic!("dfs{victim} lost {name} chunk {chunk}: {e}"));
            assert!(
                reader.checksum() == put.checksums[chunk as usize - 1],
                "dfs{victim}: {name} chunk {chunk} is not the bytes sent"
            );
            reader
                .check()
                .unwrap_or_else(|e| panic!("dfs{victim}: {name} chunk {chunk}: {e}"));
        }
        match store.file("alice", name).unwrap() {
            (Some(manifest), held) => {
                assert_eq!(manifest.version, version, "dfs{victim}: {name}");
                assert!(
                    manifest.checksums == put.checksums,
                    "dfs{victim}: {name}: the manifest's checksums are not the bytes sent"
                );
                assert_eq!(held, table, "dfs{victim}: {name}: chunks held");
            }
            (None, _) => {
                // Only a PUT the victim was down during some of may lack its
                // commit there (a PUT that returned before the kill, with
                // the victim up all along, had it committed).
                assert!(
                    timeline.down_during(victim, put.epochs),
                    "dfs{victim} lost its manifest of {name}, committed before the kill"
                );
                left.uncommitted += 1;
            }
        }
    }
    check_consistent(victim, &store, &["alice"]);
    left.unrecorded = check_chunk_files(victim, &data_dir, &store);
    for entry in std::fs::read_dir(data_dir.join("tmp")).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            path.extension().is_some_and(|x| x == "part"),
            "dfs{victim}: {} in tmp/",
            path.display()
        );
        left.tmp += 1;
    }
    left
}

/// SIGKILL during a burst of small PUTs: a killed server's own store holds
/// every chunk it acknowledged, every manifest committed before the kill,
/// and nothing half-written; once back, every acknowledged file reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_small_puts_loses_no_acknowledged_file() {
    let seed = seed("kill_9_during_a_burst_of_small_puts");
    let mut rng = StdRng::seed_from_u64(seed);
    // The tests' tuning: chunks up to 16 KiB in the database, larger ones files.
    let mut cluster = ProcCluster::start_tuned(SERVERS, Some(&test_tuning())).await;
    let work = tempfile::tempdir().unwrap();
    let timeline = Arc::new(Timeline::default());
    const WRITERS: usize = 8;
    let burst = Arc::new(Burst::new(WRITERS));
    let stop = Arc::new(AtomicBool::new(false));
    // Dropped (the writers aborted) before `work` if the test fails.
    let mut writers = tokio::task::JoinSet::new();
    for task in 0..WRITERS {
        // A commit a server is slow to answer would go unnoticed in the
        // receipt: a timeout long beside any commit. A dead server answers
        // at once (its connections are reset).
        let mut config = cluster.client_config();
        config.timeout_secs = 20;
        let client = Client::login(&config, "alice", USERS[0].1).await.unwrap();
        writers.spawn(writer(
            task,
            client,
            StdRng::seed_from_u64(seed.wrapping_add(1 + task as u64)),
            work.path().to_path_buf(),
            timeline.clone(),
            burst.clone(),
            stop.clone(),
        ));
    }

    for round in 1..=5 {
        // The pause is the schedule: the writers run meanwhile.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1000))).await;
        let victim = rng.gen_range(1..=SERVERS);
        timeline.killing(victim);
        cluster.kill(victim);
        // The PUTs under way when it died have returned: those that got
        // their chunks onto it before it died count too.
        let killed_at = timeline.now();
        wait_until(30, "the PUTs under way at the kill return", || {
            let done = burst.returned_before(killed_at);
            async move { done }
        })
        .await;
        let acked = burst.acked.lock().unwrap().clone();
        let left = check_killed(&cluster, victim, &acked, &timeline);
        eprintln!(
            "round {round}: killed dfs{victim} with {} PUTs acknowledged: {left:?}",
            acked.len()
        );
        cluster.restart(victim).await;
        timeline.restarted();
    }
    tokio::time::sleep(Duration::from_millis(rng.gen_range(300..800))).await;
    stop.store(true, SeqCst);
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let acked = burst.acked.lock().unwrap().clone();
    let failed = burst.failed.load(SeqCst);
    let inline = acked.iter().filter(|p| p.data.len() <= 64_000).count();
    eprintln!(
        "{} PUTs acknowledged ({inline} of them of chunks kept in the database), {failed} failed \
         while a server was down",
        acked.len()
    );
    assert!(acked.len() >= 100, "too few PUTs acknowledged");

    // Back up, the servers catch up on what they missed.
    let client = cluster.login("alice").await;
    let total = acked.len() as u64;
    wait_until(
        60,
        "every server holds every file and lacks no chunk",
        || {
            let client = &client;
            async move {
                client.status().await.iter().all(|r| {
                    r.state
                        .as_ref()
                        .is_ok_and(|s| s.files >= total && s.heal.missing == 0 && s.heal.hints == 0)
                })
            }
        },
    )
    .await;
    cluster
        .check_stores(|server, store| {
            let data_dir = store.root().to_path_buf();
            for put in &acked {
                let table = crate::util::held("alice", &put.name, server, SERVERS as u32);
                let (manifest, held) = store.file("alice", &put.name).unwrap();
                assert_eq!(
                    manifest.map(|m| m.version),
                    Some(put.receipt.version),
                    "dfs{server}: {}",
                    put.name
                );
                assert_eq!(held, table, "dfs{server}: {}", put.name);
            }
            // No write is under way: nothing is left half-done.
            let tmp = std::fs::read_dir(data_dir.join("tmp")).unwrap().count();
            assert_eq!(tmp, 0, "dfs{server}: files left in tmp/");
            check_consistent(server, store, &["alice"]);
            let unrecorded = check_chunk_files(server, &data_dir, store);
            eprintln!("dfs{server}: {unrecorded} whole chunk files no record names");
        })
        .await;
    let files: Vec<(&str, &str, &[u8])> = acked
        .iter()
        .map(|p| ("alice", p.name.as_str(), p.data.as_slice()))
        .collect();
    read_back(&cluster, &files, work.path()).await;
    no_panics(&cluster);
}

// ---------------------------------------------------------------------------
// 2. The migration from the first release's layout.

/// A file as the first release stored it.
struct LegacyFile {
    owner: &'static str,
    manifest: Manifest,
    data: Vec<u8>,
    /// A replaced version whose chunk files were still on disk.
    older: Option<Version>,
}

/// A legacy `manifest` file's body.
#[derive(Serialize)]
struct LegacyManifest<'a> {
    owner: &'a str,
    manifest: OldManifest<'a>,
}

/// A manifest as the legacy layout encoded it (before `Manifest::data`).
#[derive(Serialize)]
struct OldManifest<'a> {
    name: &'a str,
    version: Version,
    size: u64,
    chunks: u32,
    checksums: &'a [Checksum],
    stored_at: u64,
    md5: [u8; 16],
    deleted: bool,
}

impl<'a> From<&'a Manifest> for OldManifest<'a> {
    fn from(m: &'a Manifest) -> Self {
        OldManifest {
            name: &m.name,
            version: m.version,
            size: m.size,
            chunks: m.chunks,
            checksums: &m.checksums,
            stored_at: m.stored_at,
            md5: match m.digest {
                ringdfs::protocol::FileDigest::Md5(md5) => md5,
                _ => [0; 16],
            },
            deleted: m.deleted,
        }
    }
}

/// The files: small ones (most), a few large ones, some replaced (their
/// older version's chunk files left behind), some deleted (a tombstone, and
/// the deleted version's chunk files left behind), for alice and bob.
fn legacy_files(rng: &mut StdRng, count: usize) -> Vec<LegacyFile> {
    let base: u64 = 1_750_000_000_000_000_000;
    (0..count)
        .map(|i| {
            let owner = if i % 10 == 9 { "bob" } else { "alice" };
            let name = format!("f{i:05}.txt");
            let version = Version {
                gen: base + 1000 * i as u64,
                writer: rng.next_u64(),
            };
            let older = (i % 7 == 3).then(|| Version {
                gen: version.gen - 500,
                writer: rng.next_u64(),
            });
            if i % 50 == 17 {
                let manifest = Manifest {
                    name,
                    version,
                    size: 0,
                    chunks: 0,
                    checksums: Vec::new(),
                    stored_at: 1_750_000_000,
                    digest: ringdfs::protocol::FileDigest::None,
                    deleted: true,
                    data: None,
                    kept: None,
                    meta: None,
                };
                let older = older.or(Some(Version {
                    gen: version.gen - 500,
                    writer: rng.next_u64(),
                }));
                let mut data = vec![0u8; rng.gen_range(100..2000)];
                rng.fill_bytes(&mut data);
                return LegacyFile {
                    owner,
                    manifest,
                    data,
                    older,
                };
            }
            let len = if i % 100 == 42 {
                rng.gen_range(100_000..600_000)
            } else {
                rng.gen_range(50..4096)
            };
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let manifest = Manifest {
                checksums: chunk_checksums(owner, &name, version, SERVERS as u32, &data),
                name,
                version,
                size: len as u64,
                chunks: SERVERS as u32,
                stored_at: 1_750_000_000,
                digest: ringdfs::protocol::FileDigest::Md5({
                    use md5::{Digest, Md5};
                    Md5::digest(&data).into()
                }),
                deleted: false,
                data: None,
                kept: None,
                meta: None,
            };
            LegacyFile {
                owner,
                manifest,
                data,
                older,
            }
        })
        .collect()
}

/// The legacy chunk file of `file`'s chunk `chunk` at `version`.
fn legacy_chunk_path(root: &Path, file: &LegacyFile, version: Version, chunk: u32) -> PathBuf {
    file_dir(root, file.owner, &file.manifest.name)
        .join(format!("{}.{chunk}", version_in_file_name(version)))
}

/// Which chunks (ascending) of `owner`'s 4-chunk `name` server `pos` holds.
type Rule = fn(&str, &str, usize) -> Vec<u32>;

/// Placement now (consistent hashing on the test clusters' ring).
fn placed_now(owner: &str, name: &str, pos: usize) -> Vec<u32> {
    crate::util::held(owner, name, pos, SERVERS as u32)
}

/// Placement before consistent hashing: `r = MD5(owner/name) mod n`, and
/// server `pos` held chunks `((pos-1-r) mod n)+1` and `((pos-r) mod n)+1`.
fn placed_by_old_rule(owner: &str, name: &str, pos: usize) -> Vec<u32> {
    let n = SERVERS as i64;
    let r = (ringdfs::placement::key_hash(owner, name) % n as u128) as i64;
    let i = pos as i64;
    let mut held = vec![
        ((i - 1 - r).rem_euclid(n) + 1) as u32,
        ((i - r).rem_euclid(n) + 1) as u32,
    ];
    held.sort_unstable();
    held
}

/// Writes server `pos`'s data folder as the first release left it: for
/// every file a folder with its `manifest` and the chunk files `rule` gives
/// `pos` (of the current version, and of the older one if any).
fn write_legacy_folder(root: &Path, pos: u32, files: &[LegacyFile], rule: Rule) {
    for file in files {
        let m = &file.manifest;
        let dir = file_dir(root, file.owner, &m.name);
        std::fs::create_dir_all(&dir).unwrap();
        let body = codec::encode(&LegacyManifest {
            owner: file.owner,
            manifest: OldManifest::from(m),
        })
        .unwrap();
        let mut bytes = b"RDFSMAN1".to_vec();
        bytes.extend_from_slice(blake3::hash(&body).as_bytes());
        bytes.extend_from_slice(&body);
        std::fs::write(dir.join("manifest"), bytes).unwrap();
        let held = rule(file.owner, &m.name, pos as usize);
        let versions = (!m.deleted)
            .then_some(m.version)
            .into_iter()
            .chain(file.older);
        for version in versions {
            let sums = chunk_checksums(file.owner, &m.name, version, SERVERS as u32, &file.data);
            for &chunk in &held {
                let size = file.data.len() as u64;
                let (start, end) = chunk_range(size, SERVERS as u32, chunk);
                let trailer = codec::encode(&ChunkTrailer {
                    owner: file.owner.to_string(),
                    name: m.name.clone(),
                    version,
                    chunk,
                    chunks: SERVERS as u32,
                    size,
                    len: end - start,
                    checksum: sums[chunk as usize - 1],
                })
                .unwrap();
                let mut bytes = file.data[start as usize..end as usize].to_vec();
                bytes.extend_from_slice(&trailer);
                bytes.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
                bytes.extend_from_slice(b"RDFSCHK1");
                std::fs::write(legacy_chunk_path(root, file, version, chunk), bytes).unwrap();
            }
        }
    }
}

/// The file folders of a data folder, in the order the migration (and its
/// tidying) reads them: the same directory listings, unchanged since.
fn scan_order(root: &Path) -> Vec<PathBuf> {
    let list = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    list(&root.join("users"))
        .iter()
        .flat_map(|owner| list(owner))
        .collect()
}

/// Legacy `manifest` files left under a data folder.
fn legacy_manifests(root: &Path) -> usize {
    scan_order(root)
        .iter()
        .filter(|dir| dir.join("manifest").exists())
        .count()
}

/// When a migrating server is killed.
#[derive(Debug, Clone)]
enum KillAt {
    /// Once the migration's scan has removed this outdated chunk file: part
    /// way through reading the folders into the database.
    Scanned(PathBuf),
    /// Once this legacy manifest is gone: the migration has been recorded
    /// and the legacy manifests are being removed.
    Tidying(PathBuf),
    /// This long after the start, wherever that lands.
    After(Duration),
}

/// Where a kill landed, as the victim's log and disk show it.
#[derive(Debug, PartialEq, Eq)]
enum Landed {
    /// Before its log said it had read the legacy folders in (a `Scanned`
    /// kill: while it did); its next start migrates again.
    Unfinished,
    /// After reading them all in, with this many legacy manifests left.
    Migrated { manifests: usize },
    /// After it was serving.
    Serving,
}

/// Kills each `(server, start, when)` at its moment (polled every
/// millisecond) and says where each kill landed.
async fn kill_at(
    cluster: &mut ProcCluster,
    plans: Vec<(usize, Launched, KillAt)>,
) -> Vec<(usize, Duration, KillAt, Landed)> {
    let mut pending = plans;
    let mut landed = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (i, launched, at) in pending {
            let due = match &at {
                KillAt::Scanned(path) | KillAt::Tidying(path) => !path.exists(),
                KillAt::After(delay) => launched.elapsed() >= *delay,
            };
            let serving = cluster.said_since(i, &launched).contains("listening");
            if !(due || serving) {
                if cluster.exited(i) {
                    let said = cluster.said_since(i, &launched);
                    // Its port, picked free, was taken meanwhile: a start
                    // that ended before it opened its store.
                    assert!(
                        said.contains("Address already in use"),
                        "dfs{i} exited:\n{said}"
                    );
                    eprintln!("dfs{i} could not listen: {}", said.trim());
                    landed.push((i, launched.elapsed(), at, Landed::Unfinished));
                    continue;
                }
                assert!(
                    launched.elapsed() < Duration::from_secs(30),
                    "dfs{i}: {at:?} not reached in 30 s"
                );
                still.push((i, launched, at));
                continue;
            }
            cluster.kill(i);
            let after = launched.elapsed();
            let said = cluster.said_since(i, &launched);
            let root = cluster.data_dir(i);
            let where_ = if said.contains("listening") {
                Landed::Serving
            } else if said.contains("migrated the data folder") {
                Landed::Migrated {
                    manifests: legacy_manifests(&root),
                }
            } else {
                Landed::Unfinished
            };
            eprintln!("dfs{i} killed {after:?} after its start ({at:?}): {where_:?}");
            landed.push((i, after, at, where_));
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    landed
}

/// SIGKILL during the one-time migration of a legacy data folder (all four
/// servers part way through reading it in, then three at seeded moments,
/// then one while it removes the legacy manifests): each next start migrates
/// again, and in the end every server holds its share of every file, every
/// file reads back, and no legacy manifest is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_migration_loses_nothing_and_migration_resumes() {
    let seed = seed("kill_9_during_migration");
    let mut rng = StdRng::seed_from_u64(seed);
    // The default tuning, as an upgraded installation has it.
    let mut cluster = ProcCluster::configure(SERVERS, None::<&Tuning>);
    // Enough for several commits of the migration's batches on each server.
    let files = legacy_files(&mut rng, 1200);
    let started = Instant::now();
    std::thread::scope(|s| {
        for pos in 1..=SERVERS {
            let (root, files) = (cluster.data_dir(pos), &files);
            s.spawn(move || write_legacy_folder(&root, pos as u32, files, placed_now));
        }
    });
    let live = files.iter().filter(|f| !f.manifest.deleted).count();
    eprintln!(
        "{} legacy files ({live} live) written to {SERVERS} data folders in {:?}",
        files.len(),
        started.elapsed()
    );
    let mut landed = Vec::new();

    // 1. All four at once, each killed part way through reading its folders
    // in: once the scan has removed a seeded one of its outdated chunk files.
    let mut plans = Vec::new();
    let mut fractions = BTreeMap::new();
    for i in 1..=SERVERS {
        let root = cluster.data_dir(i);
        let outdated: BTreeMap<PathBuf, String> = files
            .iter()
            .filter_map(|f| {
                let older = version_in_file_name(f.older?);
                Some((file_dir(&root, f.owner, &f.manifest.name), older))
            })
            .collect();
        // The outdated chunk files in the order the scan meets them.
        let met: Vec<PathBuf> = scan_order(&root)
            .into_iter()
            .filter_map(|dir| {
                let older = outdated.get(&dir)?;
                std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(older.as_str())
                    })
            })
            .collect();
        let at = rng.gen_range(met.len() / 10..met.len() * 9 / 10);
        fractions.insert(i, (at + 1) as f64 / met.len() as f64);
        plans.push((i, cluster.launch(i), KillAt::Scanned(met[at].clone())));
    }
    let first = kill_at(&mut cluster, plans).await;
    // How long a whole migration takes here, about: the slowest pace seen.
    let whole = first
        .iter()
        .map(|(i, after, _, _)| after.div_f64(fractions[i]))
        .max()
        .unwrap();
    eprintln!("a whole migration takes about {whole:?}");
    landed.extend(first);

    // 2. Three of them again, each killed at a seeded moment of its start,
    // wherever that lands (it may finish first).
    let tidier = rng.gen_range(1..=SERVERS);
    let mut plans = Vec::new();
    for i in (1..=SERVERS).filter(|&i| i != tidier) {
        let delay = whole.mul_f64(rng.gen_range(0.0..1.5));
        plans.push((i, cluster.launch(i), KillAt::After(delay)));
    }
    landed.extend(kill_at(&mut cluster, plans).await);

    // 3. All four; the one not started in 2 is killed while it removes the
    // legacy manifests, once its migration is recorded. The others finish.
    let first_removed = scan_order(&cluster.data_dir(tidier))[0].join("manifest");
    let launched: Vec<(usize, Launched)> = (1..=SERVERS).map(|i| (i, cluster.launch(i))).collect();
    let mut finishing = Vec::new();
    for (i, l) in launched {
        if i == tidier {
            let at = KillAt::Tidying(first_removed.clone());
            landed.extend(kill_at(&mut cluster, vec![(i, l, at)]).await);
        } else {
            finishing.push((i, l));
        }
    }
    for (i, l) in &finishing {
        cluster.wait_listening(*i, l).await;
    }
    // The scan was under way (the trigger's file gone) and not finished.
    let mid = landed
        .iter()
        .filter(|(_, _, at, l)| matches!(at, KillAt::Scanned(_)) && *l == Landed::Unfinished)
        .count();
    assert!(mid >= 1, "no kill landed during a migration: {landed:?}");

    // Every server started again: each finishes its migration.
    for i in 1..=SERVERS {
        if cluster.exited(i) {
            cluster.restart(i).await;
        }
    }
    no_panics(&cluster);
    cluster
        .check_stores(|i, store| {
            let root = store.root().to_path_buf();
            for file in &files {
                let (owner, m) = (file.owner, &file.manifest);
                let (manifest, held) = store.file(owner, &m.name).unwrap();
                if let Some(older) = file.older {
                    for chunk in 1..=SERVERS as u32 {
                        assert!(
                            !legacy_chunk_path(&root, file, older, chunk).exists(),
                            "dfs{i}: {owner}/{}: the replaced version's chunk {chunk} is left",
                            m.name
                        );
                    }
                }
                if m.deleted {
                    assert!(
                        manifest.as_ref().is_none_or(|got| got == m),
                        "dfs{i}: {owner}/{}: {manifest:?}",
                        m.name
                    );
                    continue;
                }
                assert!(
                    manifest.as_ref() == Some(m),
                    "dfs{i}: {owner}/{}: holds {manifest:?}, not the legacy manifest",
                    m.name
                );
                let table = crate::util::held(owner, &m.name, i, SERVERS as u32);
                assert_eq!(held, table, "dfs{i}: {owner}/{}: chunks held", m.name);
                for &chunk in &table {
                    // Where it was (the new layout keeps large chunks' paths).
                    assert!(
                        legacy_chunk_path(&root, file, m.version, chunk).exists(),
                        "dfs{i}: {owner}/{} chunk {chunk} moved",
                        m.name
                    );
                    store
                        .open_chunk(owner, &m.name, m.version, chunk)
                        .and_then(|r| r.check())
                        .unwrap_or_else(|e| {
                            panic!("dfs{i}: {owner}/{} chunk {chunk}: {e}", m.name)
                        });
                }
            }
            check_consistent(i, store, &["alice", "bob"]);
            assert_eq!(legacy_manifests(&root), 0, "dfs{i}: legacy manifests left");
        })
        .await;
    let work = tempfile::tempdir().unwrap();
    let readable: Vec<(&str, &str, &[u8])> = files
        .iter()
        .filter(|f| !f.manifest.deleted)
        .map(|f| (f.owner, f.manifest.name.as_str(), f.data.as_slice()))
        .collect();
    read_back(&cluster, &readable, work.path()).await;
    let alice = cluster.login("alice").await;
    for file in files
        .iter()
        .filter(|f| f.manifest.deleted && f.owner == "alice")
    {
        let out = work.path().join("deleted");
        match alice.get(&file.manifest.name, &out, &no_progress).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("{}: deleted, yet {other:?}", file.manifest.name),
        }
    }
    let landed: Vec<_> = landed
        .iter()
        .map(|(i, after, _, l)| (*i, *after, l))
        .collect();
    eprintln!("kills: {landed:?}; total {:?}", started.elapsed());
}

/// A cluster whose data folders were placed by the rule before consistent
/// hashing (`r = h mod n`, first-release folders) converges to the new
/// placement by healing: every server ends holding exactly what consistent
/// hashing gives it, and every file reads back (no copy was dropped before
/// its new holders had it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_placed_by_the_old_rule_converges_to_consistent_hashing_losing_nothing() {
    let mut rng = StdRng::seed_from_u64(seed("old_rule_converges"));
    let mut cluster = ProcCluster::configure(SERVERS, None::<&Tuning>);
    let files = legacy_files(&mut rng, 200);
    std::thread::scope(|s| {
        for pos in 1..=SERVERS {
            let (root, files) = (cluster.data_dir(pos), &files);
            s.spawn(move || write_legacy_folder(&root, pos as u32, files, placed_by_old_rule));
        }
    });
    let live: Vec<&LegacyFile> = files.iter().filter(|f| !f.manifest.deleted).collect();
    let moving = live
        .iter()
        .filter(|f| {
            (1..=SERVERS).any(|pos| {
                placed_by_old_rule(f.owner, &f.manifest.name, pos)
                    != placed_now(f.owner, &f.manifest.name, pos)
            })
        })
        .count();
    eprintln!(
        "{moving} of {} live files are placed differently now",
        live.len()
    );
    assert!(moving * 2 > live.len(), "the rules differ for most files");

    for i in 1..=SERVERS {
        cluster.restart(i).await;
    }
    let placed = |i: usize, store: &Store| {
        live.iter().all(|f| {
            let name = &f.manifest.name;
            store.file(f.owner, name).unwrap().1 == placed_now(f.owner, name, i)
        })
    };
    let took = cluster
        .wait_for_stores(
            180,
            "every server to hold what consistent hashing gives it",
            placed,
        )
        .await;
    eprintln!("converged {took:?} after the servers started");
    no_panics(&cluster);
    let work = tempfile::tempdir().unwrap();
    let readable: Vec<(&str, &str, &[u8])> = live
        .iter()
        .map(|f| (f.owner, f.manifest.name.as_str(), f.data.as_slice()))
        .collect();
    read_back(&cluster, &readable, work.path()).await;
}
