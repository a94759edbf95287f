use super::*;
use crate::placement::{chunk_range, even_ring};
use crate::protocol::{checksum_of, DataRef, FileDigest};

fn spec(name: &str, version: Version, chunk: u32, size: u64) -> ChunkSpec {
    ChunkSpec {
        owner: "alice".into(),
        name: name.into(),
        version,
        chunk,
        chunks: 4,
        size,
    }
}

/// Small chunks packed into volumes, or (with `inline_max` 0) every chunk a file.
fn open(dir: &Path, inline: bool) -> Arc<Store> {
    let tuning = Tuning {
        inline_max: if inline { 64 << 10 } else { 0 },
        ..Tuning::default()
    };
    Store::open(dir, tuning).unwrap()
}

/// Stores `data`'s `chunk` of `version` (not committed).
fn stage(store: &Arc<Store>, name: &str, data: &[u8], version: Version, chunk: u32) -> Checksum {
    let (w, sum) = staged(store, name, data, version, chunk);
    w.finish(sum).unwrap();
    sum
}

/// Stores all four chunks of `data` and commits them.
fn put(store: &Arc<Store>, name: &str, data: &[u8], version: Version) -> Manifest {
    let checksums = (1..=4)
        .map(|chunk| stage(store, name, data, version, chunk))
        .collect();
    let manifest = four_chunks(name, version, data, checksums);
    assert!(store.commit("alice", manifest.clone()).unwrap());
    manifest
}

fn four_chunks(name: &str, version: Version, data: &[u8], checksums: Vec<Checksum>) -> Manifest {
    Manifest {
        name: name.into(),
        version,
        size: data.len() as u64,
        chunks: 4,
        checksums,
        stored_at: 0,
        digest: FileDigest::Md5(md5_of_data(data)),
        deleted: false,
        data: None,
        kept: None,
        meta: None,
    }
}

/// The MD5 a file stored through S3 has.
fn md5_of_data(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

fn copy(name: &str, version: Version, chunk: u32) -> CopyId {
    CopyId {
        owner: "alice".into(),
        name: name.into(),
        version,
        chunk,
    }
}

pub(super) fn tombstone(name: &str, version: Version) -> Manifest {
    Manifest {
        name: name.into(),
        version,
        size: 0,
        chunks: 0,
        checksums: Vec::new(),
        stored_at: 0,
        digest: FileDigest::None,
        deleted: true,
        data: None,
        kept: None,
        meta: None,
    }
}

fn read_all(store: &Store, name: &str, version: Version, chunk: u32) -> Result<Vec<u8>> {
    let mut r = store.open_chunk("alice", name, version, chunk)?;
    let mut out = Vec::new();
    while let Some(b) = r.next_block()? {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// A chunk of `data`'s `chunk`, written but not finished, and its checksum.
fn staged(
    store: &Arc<Store>,
    name: &str,
    data: &[u8],
    v: Version,
    chunk: u32,
) -> (ChunkWriter, Checksum) {
    let s = spec(name, v, chunk, data.len() as u64);
    let (start, end) = chunk_range(data.len() as u64, 4, chunk);
    let bytes = &data[start as usize..end as usize];
    let mut h = s.id().hasher();
    h.update(bytes);
    let mut w = store.begin_chunk(s).unwrap();
    w.write(bytes).unwrap();
    (w, checksum_of(&h))
}

pub(super) fn v(gen: u64) -> Version {
    Version { gen, writer: 0 }
}

/// Stored copies of `version` of `name`.
fn held(store: &Store, name: &str, version: Version) -> Vec<u32> {
    let txn = store.read().unwrap();
    held_in(&txn.open_table(CHUNKS).unwrap(), "alice", name, version).unwrap()
}

#[test]
fn store_commit_read_and_reopen_both_ways() {
    for inline in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), inline);
        put(&store, "f.bin", b"hello world", v(1));
        assert_eq!(read_all(&store, "f.bin", v(1), 1).unwrap(), b"hel");
        assert_eq!(store.list("alice").unwrap()[0].held, vec![1, 2, 3, 4]);
        assert!(store.list("bob").unwrap().is_empty());
        let files_on_disk = chunk::read_dir(&file_dir(dir.path(), "alice", "f.bin"))
            .unwrap()
            .len();
        assert_eq!(files_on_disk, if inline { 0 } else { 4 });

        drop(store);
        let store = open(dir.path(), inline);
        assert_eq!(read_all(&store, "f.bin", v(1), 4).unwrap(), b"ld");
        let stats = store.stats().unwrap();
        assert_eq!((stats.files, stats.chunks, stats.bytes), (1, 4, 11));
    }
}

#[test]
fn a_newer_version_replaces_and_an_older_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    put(&store, "f", b"first version", v(1));
    let m2 = put(&store, "f", b"second", v(2));
    assert_eq!(read_all(&store, "f", v(2), 1).unwrap(), b"se");
    // The replaced version stays readable for reads under way...
    assert_eq!(read_all(&store, "f", v(1), 1).unwrap(), b"firs");
    // ...until its grace period is over.
    assert_eq!(store.expire_retired(Duration::ZERO).unwrap(), 1);
    assert!(read_all(&store, "f", v(1), 1).is_err());
    let mut stale = m2.clone();
    stale.version = v(1);
    assert!(!store.commit("alice", stale).unwrap());
    // Only v2's four chunk files remain.
    let files = fs::read_dir(file_dir(dir.path(), "alice", "f"))
        .unwrap()
        .count();
    assert_eq!(files, 4);
    assert_eq!(store.stats().unwrap().chunks, 4);
}

#[test]
fn corruption_and_truncation_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    put(&store, "f", &[42u8; 4000], v(5));
    let path = store.chunk_path("alice", "f", v(5), 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        read_all(&store, "f", v(5), 2),
        Err(Error::Corrupt { .. })
    ));

    let path = store.chunk_path("alice", "f", v(5), 3);
    let len = fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert!(matches!(
        read_all(&store, "f", v(5), 3),
        Err(Error::Corrupt { .. })
    ));
    let (checked, bad) = store.scrub().unwrap();
    assert_eq!(checked, 4);
    let bad: Vec<u32> = bad.iter().map(|(id, _)| id.chunk).collect();
    assert_eq!(bad, [2, 3]);
}

#[test]
fn a_corrupted_packed_chunk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    // Bytes unlikely to appear anywhere else in the volume.
    let mut data = vec![0u8; 4000];
    blake3::Hasher::new()
        .update(b"corrupted in a volume")
        .finalize_xof()
        .fill(&mut data);
    put(&store, "f", &data, v(5));
    drop(store);
    let volume = dir.path().join("volumes").join("00000001.vol");
    let mut bytes = fs::read(&volume).unwrap();
    let (start, end) = chunk_range(4000, 4, 2);
    let needle = &data[start as usize..end as usize];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("chunk 2's bytes are in the volume");
    bytes[at + 100] ^= 1;
    fs::write(&volume, bytes).unwrap();
    let store = open(dir.path(), true);
    assert!(matches!(
        read_all(&store, "f", v(5), 2),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_all(&store, "f", v(5), 1).unwrap(), &data[..1000]);
    // Quarantined, it is missing (once the store knows the ring).
    store
        .set_layout(Layout {
            ring: even_ring(1),
            pos: Some(1),
            k: 2,
        })
        .unwrap();
    assert_eq!(store.stats().unwrap().missing, 0);
    store.quarantine("alice", "f", v(5), 2).unwrap().unwrap();
    assert_eq!(store.missing(None, 10).unwrap(), [copy("f", v(5), 2)]);
    assert_eq!(store.stats().unwrap().missing, 1);
}

#[test]
fn an_abandoned_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    let mut w = store.begin_chunk(spec("f", v(1), 1, 100)).unwrap();
    w.write(&[1; 10]).unwrap();
    assert!(w.write(&[1; 100]).is_err(), "more than the chunk's length");
    drop(w);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

    let w = store.begin_chunk(spec("f", v(1), 1, 100)).unwrap();
    assert!(w.finish(Checksum([0; 32])).is_err(), "short chunk");
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(store.stats().unwrap().chunks, 0);
}

#[test]
fn an_aborted_upload_leaves_no_chunk_and_a_committed_version_is_never_dropped() {
    for inline in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), inline);
        let data = b"the first version";
        put(&store, "f", data, v(1));
        // v2: two chunks stored, one still being received, then abandoned.
        for chunk in [1, 2] {
            stage(&store, "f", b"second", v(2), chunk);
        }
        let (late, late_sum) = staged(&store, "f", b"second", v(2), 3);
        assert_eq!(held(&store, "f", v(2)), [1, 2]);
        assert_eq!(store.abort("alice", "f", v(2)).unwrap(), 2);
        assert!(held(&store, "f", v(2)).is_empty());
        // The chunk that lands after the abort goes as it lands.
        late.finish(late_sum).unwrap();
        assert!(held(&store, "f", v(2)).is_empty());
        // The committed version is untouched, and an abort of it does nothing.
        assert_eq!(store.abort("alice", "f", v(1)).unwrap(), 0);
        assert_eq!(held(&store, "f", v(1)), [1, 2, 3, 4]);
        assert_eq!(read_all(&store, "f", v(1), 1).unwrap(), b"the f");
        // Nor does an abort of an older version once a newer one is committed.
        put(&store, "f", b"third", v(3));
        assert_eq!(store.abort("alice", "f", v(3)).unwrap(), 0);
        assert_eq!(held(&store, "f", v(3)), [1, 2, 3, 4]);
        // A name never committed: its staged chunks go too.
        stage(&store, "new", b"never committed", v(2), 4);
        assert_eq!(store.abort("alice", "new", v(2)).unwrap(), 1);
        assert!(held(&store, "new", v(2)).is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let on_disk = chunk::read_dir(&file_dir(dir.path(), "alice", "f"))
            .unwrap()
            .len();
        // v3, and v1 retired for reads under way.
        assert_eq!(on_disk, if inline { 0 } else { 8 });
    }
}

#[test]
fn digests_depend_on_the_live_files_only_and_not_on_the_order_they_came() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, two) = (open(a.path(), true), open(b.path(), true));
    assert_eq!(one.root_digest().unwrap(), [0; 16]);
    put(&one, "x", b"x1", v(1));
    put(&one, "y", b"y1", v(2));
    put(&one, "x", b"x2", v(3));
    put(&two, "y", b"y1", v(2));
    put(&two, "x", b"x2", v(3));
    assert_eq!(one.root_digest().unwrap(), two.root_digest().unwrap());
    assert_eq!(one.digests(None).unwrap(), two.digests(None).unwrap());
    // A tombstone on one side and nothing on the other: the same.
    two.commit("alice", tombstone("z", v(9))).unwrap();
    assert_eq!(one.root_digest().unwrap(), two.root_digest().unwrap());
    // A live file against its tombstone: different, in exactly one bucket.
    two.commit("alice", tombstone("y", v(10))).unwrap();
    assert_ne!(one.root_digest().unwrap(), two.root_digest().unwrap());
    let groups = digest::differing(&one.digests(None).unwrap(), &two.digests(None).unwrap());
    let bucket = bucket_of("alice", "y");
    assert_eq!(groups, [usize::from(group_of(bucket))]);
    let buckets = digest::differing(
        &one.digests(Some(group_of(bucket))).unwrap(),
        &two.digests(Some(group_of(bucket))).unwrap(),
    );
    assert_eq!(buckets, [usize::from(bucket & 0xff)]);
    let entries = two.bucket_entries(bucket).unwrap();
    assert!(entries
        .iter()
        .any(|e| e.name == "y" && e.deleted && e.version == v(10)));
    // Dropping the tombstone changes no digest.
    let before = two.root_digest().unwrap();
    assert!(two.drop_tombstone("alice", "y", v(10)).unwrap());
    assert_eq!(two.root_digest().unwrap(), before);
    assert_eq!(two.manifest("alice", "y").unwrap(), None);
}

#[test]
fn missing_and_surplus_follow_commits_copies_and_ring_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    // Position 1 of 4: the table gives it two of the four chunks.
    let layout = Layout {
        ring: even_ring(4),
        pos: Some(1),
        k: 2,
    };
    store.set_layout(layout.clone()).unwrap();
    let wanted = layout.wanted("alice", "f", 4);
    assert_eq!(wanted.len(), 2);
    let data = b"0123456789abcdef";
    // Chunks arrive before the commit for one, after it for the other.
    stage(&store, "f", data, v(1), wanted[0]);
    let checksums = (1..=4)
        .map(|c| {
            let (w, sum) = staged(&store, "f", data, v(1), c);
            drop(w);
            sum
        })
        .collect();
    let manifest = four_chunks("f", v(1), data, checksums);
    store.commit("alice", manifest).unwrap();
    assert_eq!(
        store.missing(None, 10).unwrap(),
        [copy("f", v(1), wanted[1])]
    );
    stage(&store, "f", data, v(1), wanted[1]);
    assert!(store.missing(None, 10).unwrap().is_empty());
    assert!(store.surplus(None, 10).unwrap().is_empty());
    // The ring grows: whatever the new table no longer gives it is surplus,
    // and what it newly gives is missing.
    let grown = Layout {
        ring: even_ring(5),
        pos: Some(1),
        k: 2,
    };
    assert!(store.set_layout(grown.clone()).unwrap());
    assert!(
        !store.set_layout(grown.clone()).unwrap(),
        "no change, no rescan"
    );
    let now = grown.wanted("alice", "f", 4);
    assert_ne!(now, wanted, "this join moves some of f's chunks");
    let surplus: Vec<u32> = store
        .surplus(None, 10)
        .unwrap()
        .iter()
        .map(|k| k.chunk)
        .collect();
    let missing: Vec<u32> = store
        .missing(None, 10)
        .unwrap()
        .iter()
        .map(|k| k.chunk)
        .collect();
    assert_eq!(
        surplus,
        wanted
            .iter()
            .copied()
            .filter(|c| !now.contains(c))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        missing,
        now.iter()
            .copied()
            .filter(|c| !wanted.contains(c))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.stats().unwrap().missing, missing.len() as u64);
    // A delete: nothing is missing or surplus any more.
    store.commit("alice", tombstone("f", v(2))).unwrap();
    assert!(store.missing(None, 10).unwrap().is_empty());
    assert!(store.surplus(None, 10).unwrap().is_empty());
    assert_eq!(
        store.stats().unwrap(),
        Stats {
            tombstones: 1,
            ..Stats::default()
        }
    );
}

#[test]
fn listing_pages_through_one_users_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    for i in 0..25 {
        put(&store, &format!("f{i:02}"), b"data", v(i + 1));
    }
    store.commit("alice", tombstone("f03", v(100))).unwrap();
    let (page, more) = store.list_page("alice", None, 10).unwrap();
    assert!(more);
    assert_eq!(page.first().unwrap().name, "f00");
    let (page, more) = store.list_page("alice", Some("f09"), 10).unwrap();
    assert!(more);
    assert_eq!(page.first().unwrap().name, "f10");
    let (page, more) = store.list_page("alice", Some("f19"), 10).unwrap();
    assert!(!more);
    assert_eq!(page.len(), 5);
    let all = store.list("alice").unwrap();
    assert_eq!(all.len(), 25);
    assert!(all.iter().find(|e| e.name == "f03").unwrap().deleted);
    assert!(store.list("al").unwrap().is_empty());
    assert!(store.list("alicf").unwrap().is_empty());
}

/// Every entry of `folder`, page by page (`limit` per page), as the
/// listing's cursors (`name` for a file, `path/` for a folder).
fn list_dir_all(store: &Store, owner: &str, folder: &str, limit: usize) -> Vec<String> {
    let (mut out, mut after) = (Vec::new(), None::<String>);
    loop {
        let (page, more) = store
            .list_dir(owner, folder, after.as_deref(), limit)
            .unwrap();
        assert!(page.len() <= limit);
        out.extend(page.iter().map(DirEntry::cursor));
        after = page.last().map(DirEntry::cursor);
        if !more {
            return out;
        }
    }
}

#[test]
fn a_folder_lists_its_files_and_sub_folders_one_level_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    let names = [
        "a", "a b", "b/1", "b/2/x", "b/2/y", "b/3", "b c", "b0", "c/gone", "d/e/f/g",
    ];
    for (i, name) in names.iter().enumerate() {
        put(&store, name, b"data", v(i as u64 + 1));
    }
    store.commit("alice", tombstone("c/gone", v(100))).unwrap();
    store.commit("bob", tombstone("z", v(1))).unwrap();
    let top = ["a", "a b", "b c", "b/", "b0", "c/gone", "d/"];
    // "c/gone" is a tombstone in a folder of tombstones: the folder is not
    // listed, and neither is its tombstone (it is inside it).
    let top: Vec<&str> = top.into_iter().filter(|n| *n != "c/gone").collect();
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            list_dir_all(&store, "alice", "", limit),
            top,
            "limit {limit}"
        );
        assert_eq!(
            list_dir_all(&store, "alice", "b", limit),
            ["b/1", "b/2/", "b/3"],
            "limit {limit}"
        );
    }
    assert_eq!(list_dir_all(&store, "alice", "b/2", 1), ["b/2/x", "b/2/y"]);
    assert_eq!(list_dir_all(&store, "alice", "d/e", 10), ["d/e/f/"]);
    assert!(list_dir_all(&store, "alice", "nothing", 10).is_empty());
    assert!(list_dir_all(&store, "al", "", 10).is_empty());
}

#[test]
fn concurrent_commits_share_transactions_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..20 {
                    put(&store, &format!("t{t}-{i}"), b"small file", v(1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(store);
    let store = open(dir.path(), true);
    assert_eq!(store.list("alice").unwrap().len(), 160);
    assert_eq!(store.stats().unwrap().chunks, 640);
}

#[test]
fn a_legacy_folder_is_migrated_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Write with file chunks, then turn the folder into the legacy layout:
    // a manifest file per folder and no database.
    let manifest = {
        let store = open(dir.path(), false);
        let m = put(&store, "old.bin", b"written by the first release", v(7));
        stage(&store, "old.bin", b"staged", v(8), 2);
        m
    };
    let folder = file_dir(dir.path(), "alice", "old.bin");
    migrate::write_legacy_manifest(&folder, "alice", &manifest);
    fs::write(
        folder.join(format!("{:016x}-{:016x}.1", 1, 0)),
        b"an older version",
    )
    .unwrap();
    fs::remove_file(dir.path().join(DB_FILE)).unwrap();

    let store = open(dir.path(), true);
    assert_eq!(
        store.manifest("alice", "old.bin").unwrap(),
        Some(manifest.clone())
    );
    assert_eq!(read_all(&store, "old.bin", v(7), 1).unwrap(), b"written");
    assert_eq!(held(&store, "old.bin", v(8)), [2]);
    assert!(!folder.join("manifest").exists(), "legacy manifest removed");
    assert!(!folder.join(format!("{:016x}-{:016x}.1", 1, 0)).exists());
    let stats = store.stats().unwrap();
    assert_eq!((stats.files, stats.chunks), (1, 5));

    // A crash after the import but before the format was recorded: the
    // next start imports again and counts nothing twice.
    drop(store);
    migrate::write_legacy_manifest(&folder, "alice", &manifest);
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove("format").unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path(), true);
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(read_all(&store, "old.bin", v(7), 4).unwrap(), b"release");
}

#[test]
fn legacy_manifests_left_by_a_crash_while_removing_them_go_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = {
        let store = open(dir.path(), false);
        put(&store, "old.bin", b"written by the first release", v(7))
    };
    let folder = file_dir(dir.path(), "alice", "old.bin");
    migrate::write_legacy_manifest(&folder, "alice", &manifest);
    fs::remove_file(dir.path().join(DB_FILE)).unwrap();
    let stats = {
        let store = open(dir.path(), true);
        assert!(!folder.join("manifest").exists(), "legacy manifest removed");
        store.stats().unwrap()
    };

    // A crash after the format was recorded, part way through removing the
    // legacy manifests: one is left, and the removal is still pending.
    migrate::write_legacy_manifest(&folder, "alice", &manifest);
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(TIDY, &b""[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path(), true);
    assert!(!folder.join("manifest").exists(), "legacy manifest removed");
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(read_all(&store, "old.bin", v(7), 1).unwrap(), b"written");
    let txn = store.read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert!(meta.get(TIDY).unwrap().is_none(), "the removal is done");
}

/// Tuning with small chunks packed into volumes of `volume_max` bytes.
fn open_volumes(dir: &Path, volume_max: u64) -> Arc<Store> {
    let tuning = Tuning {
        volume_max,
        ..Tuning::default()
    };
    Store::open(dir, tuning).unwrap()
}

fn volume_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = fs::read_dir(dir.join("volumes"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    out.sort();
    out
}

fn data_of(i: usize) -> Vec<u8> {
    let mut data = vec![0u8; 4000];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

fn read_file(store: &Store, name: &str, version: Version) -> Vec<u8> {
    (1..=4)
        .flat_map(|c| read_all(store, name, version, c).unwrap())
        .collect()
}

#[test]
fn small_chunks_fill_volumes_and_compaction_reclaims_what_deletes_left() {
    let dir = tempfile::tempdir().unwrap();
    // 8 KiB volumes: two files' chunks each.
    let store = open_volumes(dir.path(), 8 << 10);
    for i in 0..20 {
        put(&store, &format!("f{i:02}"), &data_of(i), v(10));
    }
    let before = volume_files(dir.path());
    assert_eq!(before.len(), 10, "{before:?}");
    assert!(before.iter().all(|(_, len)| *len <= 8 << 10));
    assert_eq!(
        fs::read_dir(dir.path().join("users")).unwrap().count(),
        0,
        "no chunk files"
    );
    // Delete three files in every four: most volumes become mostly dead.
    for i in (0..20).filter(|i| i % 4 != 0) {
        assert!(store
            .commit("alice", tombstone(&format!("f{i:02}"), v(11)))
            .unwrap());
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.files, stats.chunks), (5, 20));
    let removed = store.compact_volumes().unwrap();
    let after = volume_files(dir.path());
    let bytes = |v: &[(String, u64)]| v.iter().map(|(_, len)| len).sum::<u64>();
    assert!(removed >= 5, "{removed} volumes compacted: {after:?}");
    // The live chunks, moved, and the volume that was active (never compacted).
    let active = before.last().unwrap().1;
    assert_eq!(bytes(&after), active + 5 * 4000, "{after:?}");
    assert_eq!(
        store.stats().unwrap(),
        stats,
        "compaction changes no totals"
    );
    // The volume that was active is sealed now, and all dead: it goes next,
    // then there is nothing more to do.
    assert_eq!(store.compact_volumes().unwrap(), 1);
    assert_eq!(bytes(&volume_files(dir.path())), 5 * 4000);
    assert_eq!(store.compact_volumes().unwrap(), 0);
    // Every survivor reads back, before and after a reopen.
    for i in (0..20).step_by(4) {
        assert_eq!(read_file(&store, &format!("f{i:02}"), v(10)), data_of(i));
    }
    drop(store);
    let store = open_volumes(dir.path(), 8 << 10);
    for i in (0..20).step_by(4) {
        assert_eq!(read_file(&store, &format!("f{i:02}"), v(10)), data_of(i));
    }
    assert_eq!(store.compact_volumes().unwrap(), 0);
}

#[test]
fn bytes_a_crash_left_after_the_last_commit_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    put(&store, "a", &data_of(1), v(1));
    drop(store);
    // An append whose commit never happened: torn garbage at the end.
    let volume = dir.path().join("volumes").join("00000001.vol");
    let mut f = fs::OpenOptions::new().append(true).open(&volume).unwrap();
    f.write_all(&[0xAB; 777]).unwrap();
    drop(f);
    let store = open(dir.path(), true);
    put(&store, "b", &data_of(2), v(1));
    assert_eq!(read_file(&store, "a", v(1)), data_of(1));
    assert_eq!(read_file(&store, "b", v(1)), data_of(2));
    assert_eq!(fs::metadata(&volume).unwrap().len(), 2 * 4000 + 777);
}

/// Turns a format-3 store into the format-2 layout (rows in `chunks`, small
/// chunks' bytes in `blobs`, no volumes), as the previous release wrote it.
/// Rewrites a store as format 3 wrote it: manifests without `data`, wants
/// by file, one retired version per file (none here), no `data` table.
fn downgrade_to_v3(dir: &Path) {
    const V3_MISSING: TableDefinition<(&str, &str, u32), ()> = TableDefinition::new("missing");
    let db = Database::create(dir.join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut files = txn.open_table(FILES).unwrap();
        let mut rows = Vec::new();
        for item in files.iter().unwrap() {
            let (key, value) = item.unwrap();
            let (owner, name) = key.value();
            let m: Manifest = codec::decode(value.value()).unwrap();
            assert!(m.data.is_none(), "format 3 had no shared data");
            rows.push((owner.to_string(), name.to_string(), m));
        }
        for (owner, name, m) in &rows {
            let old = codec::encode(&migrate::ManifestV3::from(m)).unwrap();
            files
                .insert((owner.as_str(), name.as_str()), old.as_slice())
                .unwrap();
        }
        let missing = txn.open_table(MISSING).unwrap();
        let mut old_missing = txn.open_table(V3_MISSING).unwrap();
        for item in missing.iter().unwrap() {
            let (key, _) = item.unwrap();
            let (owner, name, _, _, chunk) = key.value();
            old_missing.insert((owner, name, chunk), ()).unwrap();
        }
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format", &b"3"[..]).unwrap();
    }
    txn.delete_table(DATA).unwrap();
    txn.delete_table(MISSING).unwrap();
    txn.delete_table(SURPLUS).unwrap();
    txn.delete_table(RETIRED).unwrap();
    txn.commit().unwrap();
}

fn downgrade_to_v2(dir: &Path) {
    downgrade_to_v3(dir);
    const V2_ROWS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("chunks");
    const V2_BLOBS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("blobs");
    #[derive(Serialize)]
    struct V2Row {
        len: u64,
        checksum: Checksum,
        inline: bool,
    }
    let volumes = Volumes::new(dir);
    let db = Database::create(dir.join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let rows = txn.open_table(CHUNKS).unwrap();
        let mut old_rows = txn.open_table(V2_ROWS).unwrap();
        let mut blobs = txn.open_table(V2_BLOBS).unwrap();
        for item in rows.iter().unwrap() {
            let (key, value) = item.unwrap();
            let row: ChunkRow = codec::decode(value.value()).unwrap();
            let old = V2Row {
                len: row.len,
                checksum: row.checksum,
                inline: row.at.is_some(),
            };
            old_rows
                .insert(key.value(), codec::encode(&old).unwrap().as_slice())
                .unwrap();
            if let Some((vol, offset)) = row.at {
                let data = volumes.read(vol, offset, row.len).unwrap().unwrap();
                blobs.insert(key.value(), &data[..]).unwrap();
            }
        }
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format", &b"2"[..]).unwrap();
    }
    txn.delete_table(CHUNKS).unwrap();
    txn.delete_table(VOLUMES).unwrap();
    txn.commit().unwrap();
    fs::remove_dir_all(dir.join("volumes")).unwrap();
}

#[test]
fn a_format_2_store_moves_its_small_chunks_into_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    let big = vec![7u8; 300 << 10]; // 75 KiB chunks: files
    put(&store, "big", &big, v(1));
    for i in 0..600 {
        put(&store, &format!("f{i:03}"), &data_of(i), v(1));
    }
    let stats = store.stats().unwrap();
    drop(store);
    downgrade_to_v2(dir.path());
    let store = open(dir.path(), true);
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(
        volume_files(dir.path()),
        [("00000001.vol".into(), 600 * 4000)]
    );
    for i in [0, 299, 599] {
        assert_eq!(read_file(&store, &format!("f{i:03}"), v(1)), data_of(i));
    }
    assert_eq!(read_file(&store, "big", v(1)), big);
    let txn = store.read().unwrap();
    const V2_BLOBS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("blobs");
    assert!(matches!(
        txn.open_table(V2_BLOBS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
}

#[test]
fn a_format_3_store_keys_its_chunks_by_data_and_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    let layout = Layout {
        ring: even_ring(2),
        pos: Some(1),
        k: 1,
    };
    store.set_layout(layout.clone()).unwrap();
    let mut kept = Vec::new();
    for i in 0..20 {
        let name = format!("f{i:02}");
        put(&store, &name, &data_of(i), v(1));
        kept.push(name);
    }
    store.commit("alice", tombstone("f00", v(2))).unwrap();
    // f19 lost a chunk: missing; each file's chunks of the other server: surplus.
    let chunk = layout.wanted("alice", "f19", 4)[0];
    store.quarantine("alice", "f19", v(1), chunk).unwrap();
    let stats = store.stats().unwrap();
    let (missing, surplus) = (
        store.missing(None, 1000).unwrap(),
        store.surplus(None, 1000).unwrap(),
    );
    assert_eq!(missing.len(), 1);
    assert!(surplus.len() >= 19, "{surplus:?}");
    drop(store);
    downgrade_to_v3(dir.path());
    let store = open(dir.path(), false);
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(store.missing(None, 1000).unwrap(), missing);
    assert_eq!(store.surplus(None, 1000).unwrap(), surplus);
    for (i, name) in kept.iter().enumerate().take(19).skip(1) {
        assert_eq!(read_file(&store, name, v(1)), data_of(i));
        let row = store.data("alice", name, v(1)).unwrap().unwrap();
        assert_eq!(row.refs, 1);
    }
    assert!(store.data("alice", "f00", v(1)).unwrap().is_none());
    let meta = store.read().unwrap();
    let meta = meta.open_table(META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
}

/// A store as format 4 wrote it keeps every file, sharing data and
/// tombstones included, and is upgraded to the current format.
#[test]
fn a_format_4_store_keeps_every_manifest() {
    an_older_store_keeps_every_manifest(b"4", |m| {
        codec::encode(&migrate::ManifestV4::from(m)).unwrap()
    });
}

/// A store of format 5 (manifests before S3 metadata) keeps every manifest.
#[test]
fn a_format_5_store_keeps_every_manifest() {
    an_older_store_keeps_every_manifest(b"5", |m| {
        codec::encode(&migrate::ManifestV5::from(m)).unwrap()
    });
}

#[test]
fn a_format_6_store_keeps_every_manifest() {
    an_older_store_keeps_every_manifest(b"6", |m| {
        codec::encode(&migrate::ManifestV6::from(m)).unwrap()
    });
}

/// A store of format 7 (before the write-ahead log) keeps every manifest,
/// and is marked format 8, which a release without the log refuses.
#[test]
fn a_format_7_store_keeps_every_manifest() {
    an_older_store_keeps_every_manifest(b"7", |m| codec::encode(m).unwrap());
}

/// A format-5 manifest's bytes are a format-6 one's without its last
/// byte (`meta: None`): the nested `ManifestV5` reads what format 5 wrote.
#[test]
fn a_format_5_manifest_encodes_as_format_6_without_meta() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    put(&store, "f", &data_of(1), v(1));
    let mut m = store.manifest("alice", "f").unwrap().unwrap();
    m.kept = Some(crate::protocol::Kept {
        mtime: 1_700_000_000,
        mtime_nanos: 5,
        mode: 0o640,
    });
    let now = codec::encode(&migrate::ManifestV6::from(&m)).unwrap();
    let old = codec::encode(&migrate::ManifestV5::from(&m)).unwrap();
    assert_eq!(now.last(), Some(&0), "meta: None is one byte");
    assert_eq!(old.as_slice(), &now[..now.len() - 1]);
}

/// Rewrites a store's manifests as the older `format` encoded them
/// (`encode`), reopens it, and checks every manifest reads back the same.
fn an_older_store_keeps_every_manifest(format: &[u8], encode: fn(&Manifest) -> Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    for i in 0..10 {
        put(&store, &format!("f{i}"), &data_of(i), v(1));
    }
    let source = store.manifest("alice", "f1").unwrap().unwrap();
    store
        .commit("alice", sharing(&source, "copy", v(2)))
        .unwrap();
    store.commit("alice", tombstone("f0", v(2))).unwrap();
    let before: Vec<Manifest> = (0..10)
        .map(|i| format!("f{i}"))
        .chain(["copy".to_string()])
        .map(|name| store.manifest("alice", &name).unwrap().unwrap())
        .collect();
    assert_eq!(before.len(), 11);
    drop(store);
    // Rewrite every manifest as the older format encoded it.
    let db = Database::create(dir.path().join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut files = txn.open_table(FILES).unwrap();
        for m in &before {
            let old = encode(m);
            files
                .insert(("alice", m.name.as_str()), old.as_slice())
                .unwrap();
        }
        txn.open_table(META)
            .unwrap()
            .insert("format", format)
            .unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let store = open(dir.path(), false);
    for m in &before {
        assert_eq!(&store.manifest("alice", &m.name).unwrap().unwrap(), m);
    }
    assert_eq!(read_file(&store, "f1", v(1)), data_of(1));
    let meta = store.read().unwrap();
    let meta = meta.open_table(META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
}

#[test]
fn an_upload_never_committed_goes_after_the_grace_with_its_unrecorded_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    let data = data_of(3);
    put(&store, "kept", &data, v(1));
    stage(&store, "f", &data, v(5), 1);
    // A chunk file of the same upload put in place by a server killed
    // before it recorded it.
    let unrecorded = chunk_path(dir.path(), "alice", "f", v(5), 2);
    fs::write(&unrecorded, b"whatever").unwrap();
    assert_eq!(store.uploads_pending().unwrap(), 1);
    assert_eq!(store.collect_staged(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(store.stored("alice", "f").unwrap().len(), 1);

    assert_eq!(store.collect_staged(Duration::ZERO).unwrap(), 1);
    assert!(store.stored("alice", "f").unwrap().is_empty());
    assert!(!unrecorded.exists());
    assert_eq!(store.uploads_pending().unwrap(), 0);
    assert_eq!(read_file(&store, "kept", v(1)), data);
    assert_eq!(store.stats().unwrap().chunks, 4);
}

/// A manifest for `name` at `version` sharing `source`'s data (mv, cp).
fn sharing(source: &Manifest, name: &str, version: Version) -> Manifest {
    Manifest {
        name: name.into(),
        version,
        data: Some(source.data_ref()),
        ..source.clone()
    }
}

#[test]
fn a_rename_or_copy_shares_the_data_and_the_last_name_to_go_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    let data = data_of(1);
    let a = put(&store, "a", &data, v(1));
    let files = || all_chunk_files(dir.path());
    let before = files();
    assert_eq!(before.len(), 4);

    // mv a b: one transaction; no chunk file is touched.
    let b = sharing(&a, "docs/b", v(2));
    let moved = vec![tombstone("a", v(2)), b.clone()];
    assert_eq!(store.commit_shared("alice", moved).unwrap(), 2);
    assert_eq!(files(), before);
    assert!(store.manifest("alice", "a").unwrap().unwrap().deleted);
    let (m, held) = store.file("alice", "docs/b").unwrap();
    assert_eq!(m.unwrap().data_name(), "a");
    assert_eq!(held, [1, 2, 3, 4]);
    let read = |m: &Manifest| -> Vec<u8> {
        (1..=4)
            .flat_map(|c| read_all(&store, m.data_name(), m.data_version(), c).unwrap())
            .collect()
    };
    assert_eq!(read(&b), data);

    // cp docs/b c: two names, one data.
    let c = sharing(&b, "c", v(3));
    assert_eq!(store.commit_shared("alice", vec![c.clone()]).unwrap(), 1);
    assert_eq!(store.data("alice", "a", v(1)).unwrap().unwrap().refs, 2);
    assert_eq!(files(), before);

    // A new file named `a` does not disturb the data once written as `a`.
    put(&store, "a", &data_of(2), v(4));
    assert_eq!(read(&c), data);

    store.commit("alice", tombstone("docs/b", v(5))).unwrap();
    assert_eq!(read(&c), data, "one name left: the data stays");
    store.commit("alice", tombstone("c", v(6))).unwrap();
    assert!(store.data("alice", "a", v(1)).unwrap().is_none());
    assert!(read_all(&store, "a", v(1), 1).is_err());
    assert_eq!(files().len(), 4, "only the new a's chunks are left");
}

#[test]
fn a_shared_commit_naming_data_this_store_lacks_or_misdescribing_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), false);
    let a = put(&store, "a", &data_of(1), v(1));
    let mut forged = sharing(&a, "b", v(2));
    forged.checksums[0] = Checksum([9; 32]);
    let mut unknown = sharing(&a, "b", v(2));
    unknown.data = Some(DataRef {
        name: "nowhere".into(),
        version: v(1),
    });
    let under_a_file = sharing(&a, "a/x", v(2));
    for batch in [
        vec![tombstone("a", v(2)), forged],
        vec![tombstone("a", v(2)), unknown],
        vec![under_a_file],
    ] {
        let e = store.commit_shared("alice", batch).unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!e.to_string().contains('\n'));
        assert!(!store.manifest("alice", "a").unwrap().unwrap().deleted);
        assert!(store.manifest("alice", "b").unwrap().is_none());
        assert!(store.manifest("alice", "a/x").unwrap().is_none());
    }
    assert_eq!(store.data("alice", "a", v(1)).unwrap().unwrap().refs, 1);
}

/// Every chunk file under the data folder, with its inode and length: the
/// same map before and after means no chunk file was written, moved or removed.
fn all_chunk_files(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.join("users")];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
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

/// Data bytes `range` of a chunk read as `GetRange` does, and where the
/// blocks read start.
fn read_range(
    store: &Store,
    name: &str,
    version: Version,
    chunk: u32,
    range: std::ops::Range<u64>,
) -> Result<(u64, Vec<u8>)> {
    let (mut r, span, _) = store.open_range("alice", name, version, chunk, range)?;
    let mut out = Vec::new();
    while let Some(b) = r.next_block()? {
        out.extend_from_slice(&b);
    }
    assert_eq!(out.len() as u64, span.end - span.start);
    Ok((span.start, out))
}

#[test]
fn a_range_reads_only_its_blocks_and_checks_them_alone() {
    use crate::blocks::BLOCK;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), true);
    let data: Vec<u8> = (0..24u64 << 20).map(|i| (i * 7 % 253) as u8).collect();
    put(&store, "big", &data, v(3));
    let chunk_at = chunk_range(data.len() as u64, 4, 2).0 as usize;
    let chunk = &data[chunk_at..chunk_at + (6 << 20)];

    // 4 KiB in the middle: one block (two when it straddles a boundary).
    let (start, got) = read_range(&store, "big", v(3), 2, 3 << 20..(3 << 20) + 4096).unwrap();
    assert!(got.len() as u64 <= 2 * BLOCK, "{} bytes read", got.len());
    assert_eq!(&got[..], &chunk[start as usize..start as usize + got.len()]);

    // A bad byte in another block does not stop it; in its block it does.
    let path = store.chunk_path("alice", "big", v(3), 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 1;
    fs::write(&path, &bytes).unwrap();
    read_range(&store, "big", v(3), 2, 3 << 20..(3 << 20) + 4096).unwrap();
    assert!(matches!(
        read_range(&store, "big", v(3), 2, 50..60),
        Err(Error::Corrupt { chunk: 2, .. })
    ));
    bytes[100] ^= 1;
    fs::write(&path, &bytes).unwrap();

    // Values lost (a chunk stored before they were kept): worked out again
    // from the whole chunk, recorded, and the range reads the same.
    let key = ("alice", "big", 3u64, 0u64, 2u32);
    let Db::Write(db) = &*store.db else {
        unreachable!("opened for writing")
    };
    let txn = db.begin_write().unwrap();
    txn.open_table(BLOCKS).unwrap().remove(key).unwrap();
    txn.commit().unwrap();
    let (start2, again) = read_range(&store, "big", v(3), 2, 3 << 20..(3 << 20) + 4096).unwrap();
    assert_eq!((start2, &again), (start, &got));
    let txn = store.read().unwrap();
    assert!(txn.open_table(BLOCKS).unwrap().get(key).unwrap().is_some());
    drop(txn);

    // A range outside the chunk is refused; the whole chunk reads whole.
    assert!(matches!(
        read_range(&store, "big", v(3), 2, 0..(6 << 20) + 1),
        Err(Error::BadRequest(_))
    ));
    let (start, all) = read_range(&store, "big", v(3), 2, 0..6 << 20).unwrap();
    assert_eq!((start, &all[..]), (0, chunk));
    // A small chunk has no values: it is read whole.
    put(&store, "small", &[9u8; 4000], v(4));
    let (start, all) = read_range(&store, "small", v(4), 1, 10..20).unwrap();
    assert_eq!((start, all.len()), (0, 1000));

    // Deleting the file takes its values with its copies.
    store.commit("alice", tombstone("big", v(9))).unwrap();
    let txn = store.read().unwrap();
    assert!(txn.open_table(BLOCKS).unwrap().get(key).unwrap().is_none());
}

/// What a server killed between checkpoints leaves: changes in its
/// write-ahead log past `log_seq`. The next open applies them (small chunks
/// with their bytes, then a manifest) in order, durably, and empties the
/// log; they are applied once.
#[test]
fn changes_left_in_the_write_ahead_log_are_applied_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = b"bytes that only the log holds ".repeat(40);
    let (chunks, manifest) = {
        let store = open(root, true);
        put(&store, "kept", &data, v(1));
        // Sealed but not recorded: the log carries them instead.
        let sealed: Vec<Sealed> = (1..=4)
            .map(|chunk| {
                let (w, sum) = staged(&store, "late", &data, v(2), chunk);
                w.seal(sum).unwrap()
            })
            .collect();
        let checksums = sealed.iter().map(|s| s.checksum).collect();
        let chunks: Vec<LoggedChunk> = sealed
            .into_iter()
            .map(|s| LoggedChunk {
                spec: s.spec,
                checksum: s.checksum,
                values: s.values,
                data: s.data.expect("a small chunk"),
            })
            .collect();
        (chunks, four_chunks("late", v(2), &data, checksums))
    };
    assert!(!Log::pending(root), "a closed store checkpoints");
    let checkpoint = {
        let store = Store::inspect(root).unwrap();
        let txn = store.read().unwrap();
        log_seq(&txn.open_table(META).unwrap()).unwrap()
    };
    assert!(checkpoint > 0, "the commits went through the log");
    {
        let (mut log, replay) = Log::open(root, checkpoint).unwrap();
        assert!(replay.is_empty());
        let records = [
            Change::Chunks(chunks),
            Change::Commits(vec![("alice".into(), manifest.clone())]),
        ]
        .map(|c| codec::encode(&c).unwrap());
        log.append(records.iter().map(Vec::as_slice)).unwrap();
    }
    for round in 0..2 {
        let store = open(root, true);
        assert!(!Log::pending(root), "round {round}: the log is emptied");
        assert_eq!(
            store.manifest("alice", "late").unwrap().as_ref(),
            Some(&manifest)
        );
        for chunk in 1..=4 {
            let (start, end) = chunk_range(data.len() as u64, 4, chunk);
            let read = read_all(&store, "late", v(2), chunk).unwrap();
            assert!(read == data[start as usize..end as usize], "chunk {chunk}");
        }
        assert_eq!(held(&store, "late", v(2)), [1, 2, 3, 4]);
        let kept = store.manifest("alice", "kept").unwrap().map(|m| m.version);
        assert_eq!(kept, Some(v(1)));
        assert_eq!(store.stats().unwrap().files, 2, "round {round}");
    }
}
