//! What each user uses, kept by the operations that change it.
//!
//! A user's usage is the logical size of their files, each counted once
//! (not per copy): the live files, their uploads not committed yet, and the
//! replaced versions still kept for reads under way (see `retired_data`). Every
//! server keeps every manifest, so every server can keep every user's total;
//! it is updated in the same transaction as the change, by one-line hooks in
//! `mod.rs` (`set_entry`, the staging and unstaging of uploads, the keeping
//! and expiry of replaced versions), so a quota check reads one row and
//! scans nothing.
//!
//! | table | key | value |
//! |---|---|---|
//! | `usage` | owner | [`Usage`], bincode |
//! | `usage_versions` | (owner, data name, gen, writer) | data counted besides the live files: (logical size, kept) — an upload not committed yet (`kept` false) or a replaced version kept for reads (`kept` true) |
//!
//! A store written before this table existed is counted once, at its first
//! start (`create`): its live files from `files`, plus whatever
//! `usage_versions` already holds. Uploads and kept versions that were
//! already there then are not counted (their sizes are not recorded
//! anywhere), and so are not taken off when they go: they last an hour at
//! most.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Store, Tables, FILES, META};
use crate::codec;
use crate::error::{Error, Result};
use crate::protocol::{Manifest, Version};

/// (owner, name, gen, writer).
type VersionKey = (&'static str, &'static str, u64, u64);

const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
const VERSIONS: TableDefinition<VersionKey, (u64, bool)> = TableDefinition::new("usage_versions");
/// In `meta` once the `usage` table has been filled in.
const COUNTED: &str = "usage";

/// One user's usage on this server, in logical bytes (each file once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Live files (folders made with `mkdir` are not files) and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Uploads with chunks here and no commit yet, and their files' sizes.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Replaced versions kept for reads under way, and their sizes.
    pub kept: u64,
    pub kept_bytes: u64,
}

impl Usage {
    /// Everything that counts against a quota.
    pub fn used(&self) -> u64 {
        self.bytes
            .saturating_add(self.upload_bytes)
            .saturating_add(self.kept_bytes)
    }
}

/// Creates the tables (in the transaction that creates the store's), and
/// counts a store that has files but no usage yet.
pub(super) fn create(txn: &WriteTransaction) -> Result<()> {
    let mut usage = txn.open_table(USAGE)?;
    let versions = txn.open_table(VERSIONS)?;
    let mut meta = txn.open_table(META)?;
    if meta.get(COUNTED)?.is_some() {
        return Ok(());
    }
    let mut totals: std::collections::BTreeMap<String, Usage> = Default::default();
    for item in txn.open_table(FILES)?.iter()? {
        let (key, value) = item?;
        let (owner, name) = key.value();
        let m: Manifest = codec::decode(value.value())?;
        if is_file(name) && !m.deleted {
            let u = totals.entry(owner.to_string()).or_default();
            u.files += 1;
            u.bytes += m.size;
        }
    }
    for item in versions.iter()? {
        let (key, value) = item?;
        let (owner, ..) = key.value();
        let (size, kept) = value.value();
        count_version(
            totals.entry(owner.to_string()).or_default(),
            size,
            kept,
            true,
        );
    }
    usage.retain(|_, _| false)?;
    for (owner, u) in &totals {
        usage.insert(owner.as_str(), codec::encode(u)?.as_slice())?;
    }
    meta.insert(COUNTED, &b""[..])?;
    Ok(())
}

/// Whether a name in `files` is a file (a folder's `mkdir` mark ends in `/`).
fn is_file(name: &str) -> bool {
    !name.ends_with('/')
}

fn count_version(u: &mut Usage, size: u64, kept: bool, add: bool) {
    let (count, bytes) = if kept {
        (&mut u.kept, &mut u.kept_bytes)
    } else {
        (&mut u.uploads, &mut u.upload_bytes)
    };
    if add {
        *count += 1;
        *bytes = bytes.saturating_add(size);
    } else {
        *count = count.saturating_sub(1);
        *bytes = bytes.saturating_sub(size);
    }
}

/// Changes `owner`'s row by `change`.
fn update(t: &mut Tables<'_>, owner: &str, change: impl FnOnce(&mut Usage)) -> Result<()> {
    let mut table = t.txn.open_table(USAGE)?;
    let mut u: Usage = match table.get(owner)? {
        Some(row) => codec::decode(row.value())?,
        None => Usage::default(),
    };
    change(&mut u);
    if u == Usage::default() {
        table.remove(owner)?;
    } else {
        table.insert(owner, codec::encode(&u)?.as_slice())?;
    }
    Ok(())
}

/// Hook of `set_entry`: the file's entry goes from `old` to `new`.
pub(super) fn entry(
    t: &mut Tables<'_>,
    owner: &str,
    name: &str,
    old: Option<&Manifest>,
    new: Option<&Manifest>,
) -> Result<()> {
    let live = |m: Option<&Manifest>| m.filter(|m| !m.deleted && is_file(name)).map(|m| m.size);
    let (before, after) = (live(old), live(new));
    if before == after && before.is_none() {
        return Ok(());
    }
    update(t, owner, |u| {
        if let Some(size) = before {
            u.files = u.files.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(size);
        }
        if let Some(size) = after {
            u.files += 1;
            u.bytes = u.bytes.saturating_add(size);
        }
    })
}

/// Hook of staging an upload: `version` of the file, of `size` bytes in
/// all, has chunks here and no commit. Counted once, however many of its
/// chunks arrive.
pub(super) fn upload(
    t: &mut Tables<'_>,
    owner: &str,
    name: &str,
    version: Version,
    size: u64,
) -> Result<()> {
    note(t, owner, name, version, size, false)
}

fn note(
    t: &mut Tables<'_>,
    owner: &str,
    name: &str,
    version: Version,
    size: u64,
    kept: bool,
) -> Result<()> {
    {
        let mut versions = t.txn.open_table(VERSIONS)?;
        let key = (owner, name, version.gen, version.writer);
        if versions.get(key)?.is_some() {
            return Ok(());
        }
        versions.insert(key, (size, kept))?;
    }
    update(t, owner, |u| count_version(u, size, kept, true))
}

/// Hook of unstaging or dropping an upload, and of a kept version going:
/// `version` no longer counts (if it did).
pub(super) fn forget(t: &mut Tables<'_>, owner: &str, name: &str, version: Version) -> Result<()> {
    let gone = t
        .txn
        .open_table(VERSIONS)?
        .remove((owner, name, version.gen, version.writer))?
        .map(|v| v.value());
    match gone {
        Some((size, kept)) => update(t, owner, |u| count_version(u, size, kept, false)),
        None => Ok(()),
    }
}

/// Hook of an overwrite retiring data no manifest shares any more: it is
/// kept for reads under way (see `retired_data`) and counts until it goes
/// ([`forget`]).
pub(super) fn kept(
    t: &mut Tables<'_>,
    owner: &str,
    data_name: &str,
    version: Version,
    size: u64,
) -> Result<()> {
    note(t, owner, data_name, version, size, true)
}

impl Store {
    /// `owner`'s usage on this server (one row; nothing is scanned).
    pub fn usage(&self, owner: &str) -> Result<Usage> {
        let txn = self.read()?;
        let table = match txn.open_table(USAGE) {
            Ok(table) => table,
            // A store its server has not opened since this release.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Usage::default()),
            Err(e) => return Err(e.into()),
        };
        Ok(match table.get(owner)? {
            Some(row) => codec::decode(row.value())?,
            None => Usage::default(),
        })
    }

    /// The size an upload of `version` of the file was counted with here,
    /// if it is counted (it has chunks here and no commit yet).
    pub fn upload_counted(&self, owner: &str, name: &str, version: Version) -> Result<Option<u64>> {
        let txn = self.read()?;
        let versions = txn.open_table(VERSIONS)?;
        Ok(versions
            .get((owner, name, version.gen, version.writer))?
            .map(|v| v.value())
            .filter(|(_, kept)| !kept)
            .map(|(size, _)| size))
    }

    /// The live files under `path` of `owner`'s, and their bytes: the file
    /// itself if `path` is one (`true`), else everything in the folder at
    /// any depth (`false`), by a range scan of that folder only; `""` is
    /// everything (the usage row: no scan). `None` if there is no such file
    /// or folder.
    pub fn usage_under(&self, owner: &str, path: &str) -> Result<Option<(u64, u64, bool)>> {
        if path.is_empty() {
            let u = self.usage(owner)?;
            return Ok(Some((u.files, u.bytes, false)));
        }
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        if let Some(value) = files.get((owner, path))? {
            let m: Manifest = codec::decode(value.value())?;
            if !m.deleted {
                return Ok(Some((1, m.size, true)));
            }
        }
        let inside = format!("{path}/");
        let (mut count, mut bytes, mut found) = (0u64, 0u64, false);
        for item in files.range((owner, inside.as_str())..)? {
            let (key, value) = item?;
            let (o, name) = key.value();
            if o != owner || !name.starts_with(&inside) {
                break;
            }
            let m: Manifest = codec::decode(value.value())?;
            if m.deleted {
                continue;
            }
            found = true;
            if is_file(name) {
                count += 1;
                bytes = bytes.saturating_add(m.size);
            }
        }
        Ok(found.then_some((count, bytes, false)))
    }

    /// Refuses a commit of `manifest` whose size is not the size its upload
    /// was counted with here: a writer cannot store a large file's chunks
    /// and then commit it as a small one.
    pub fn check_commit_size(&self, owner: &str, manifest: &Manifest) -> Result<()> {
        match self.upload_counted(owner, &manifest.name, manifest.version)? {
            Some(size) if size != manifest.size && !manifest.deleted => {
                Err(Error::BadRequest(format!(
                    "the manifest says {} bytes, but its chunks were sent as a file of {size}",
                    manifest.size
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The replaced version of the file the store keeps, if any.
#[cfg(test)]
fn kept_version(store: &Store, owner: &str, name: &str) -> Result<Option<Version>> {
    let txn = store.read()?;
    let retired = txn.open_table(super::RETIRED)?;
    match retired.get((owner, name))? {
        Some(r) => Ok(Some(codec::decode::<super::Retired>(r.value())?.version)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Checksum;
    use crate::store::{ChunkSpec, Tuning};
    use std::sync::Arc;
    use std::time::Duration;

    fn manifest(
        name: &str,
        version: Version,
        size: u64,
        chunks: u32,
        sums: Vec<Checksum>,
    ) -> Manifest {
        Manifest {
            name: name.into(),
            version,
            size,
            chunks,
            checksums: sums,
            stored_at: 0,
            digest: crate::protocol::FileDigest::None,
            deleted: false,
            data: None,
            kept: None,
            meta: None,
        }
    }

    /// Stores every chunk of a `size`-byte file of `chunks` chunks (zeros),
    /// uncommitted, and returns its manifest.
    fn upload_file(
        store: &Arc<Store>,
        owner: &str,
        name: &str,
        size: u64,
        chunks: u32,
    ) -> Manifest {
        let version = Version::next(store.manifest(owner, name).unwrap().map(|m| m.version));
        let mut sums = Vec::new();
        for chunk in 1..=chunks {
            let spec = ChunkSpec {
                owner: owner.into(),
                name: name.into(),
                version,
                chunk,
                chunks,
                size,
            };
            let len = spec.chunk_len();
            let mut hasher = spec.id().hasher();
            let data = vec![0u8; len as usize];
            hasher.update(&data);
            let sum = crate::protocol::checksum_of(&hasher);
            let mut writer = store.begin_chunk(spec).unwrap();
            writer.write(&data).unwrap();
            writer.finish(sum).unwrap();
            sums.push(sum);
        }
        manifest(name, version, size, chunks, sums)
    }

    fn open() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            inline_max: 1024,
            ..Tuning::default()
        };
        let store = Store::open(dir.path(), tuning).unwrap();
        (dir, store)
    }

    #[test]
    fn uploads_files_and_kept_versions_each_count_once_while_they_exist() {
        let (_dir, store) = open();
        // An upload counts its whole size once, not per chunk; packed
        // (small) and file (large) chunks alike.
        let first = upload_file(&store, "alice", "a", 10_000, 4);
        let u = store.usage("alice").unwrap();
        assert_eq!((u.uploads, u.upload_bytes, u.used()), (1, 10_000, 10_000));
        store.commit("alice", first.clone()).unwrap();
        let u = store.usage("alice").unwrap();
        assert_eq!(
            (u.files, u.bytes, u.uploads, u.used()),
            (1, 10_000, 0, 10_000)
        );

        // An overwrite: the new upload and the old version both count, then
        // the old one is kept (for reads under way) until it expires.
        let second = upload_file(&store, "alice", "a", 3_000, 4);
        assert_eq!(store.usage("alice").unwrap().used(), 13_000);
        store.commit("alice", second.clone()).unwrap();
        let u = store.usage("alice").unwrap();
        assert_eq!(
            (u.files, u.bytes, u.kept, u.kept_bytes),
            (1, 3_000, 1, 10_000)
        );
        assert_eq!(
            kept_version(&store, "alice", "a").unwrap(),
            Some(first.version)
        );
        // A third version replaces the kept one: only the latest replaced counts.
        let third = upload_file(&store, "alice", "a", 500, 2);
        store.commit("alice", third.clone()).unwrap();
        let u = store.usage("alice").unwrap();
        assert_eq!(
            (u.bytes, u.kept, u.kept_bytes, u.used()),
            (500, 1, 3_000, 3_500)
        );
        store.expire_retired(Duration::ZERO).unwrap();
        assert_eq!(store.usage("alice").unwrap().used(), 500);

        // An aborted upload and a collected one stop counting.
        let aborted = upload_file(&store, "alice", "b", 7_000, 4);
        assert_eq!(store.usage("alice").unwrap().upload_bytes, 7_000);
        store.abort("alice", "b", aborted.version).unwrap();
        upload_file(&store, "alice", "c", 9_000, 4);
        assert_eq!(store.usage("alice").unwrap().upload_bytes, 9_000);
        store.collect_staged(Duration::ZERO).unwrap();
        assert_eq!(store.usage("alice").unwrap().used(), 500);

        // A delete frees it all at once; the tombstone weighs nothing.
        let overwrite = upload_file(&store, "alice", "a", 800, 4);
        store.commit("alice", overwrite.clone()).unwrap();
        assert_eq!(store.usage("alice").unwrap().used(), 1_300);
        let mut tombstone = manifest(
            "a",
            Version::next(Some(overwrite.version)),
            0,
            0,
            Vec::new(),
        );
        tombstone.deleted = true;
        store.commit("alice", tombstone.clone()).unwrap();
        assert_eq!(store.usage("alice").unwrap(), Usage::default());
        store
            .drop_tombstone("alice", "a", tombstone.version)
            .unwrap();
        assert_eq!(store.usage("alice").unwrap(), Usage::default());
        // Nobody else's usage moved.
        assert_eq!(store.usage("bob").unwrap(), Usage::default());
    }

    #[test]
    fn folders_are_summed_by_a_scan_of_that_folder_and_marks_are_not_files() {
        let (_dir, store) = open();
        for (name, size) in [("docs/a", 100), ("docs/b/c", 20), ("docsx", 7), ("top", 3)] {
            let m = upload_file(&store, "alice", name, size, 2);
            store.commit("alice", m).unwrap();
        }
        store.make_folder("alice", "docs/empty").unwrap();
        store.make_folder("alice", "void").unwrap();
        assert_eq!(
            store.usage_under("alice", "").unwrap(),
            Some((4, 130, false))
        );
        assert_eq!(
            store.usage_under("alice", "docs").unwrap(),
            Some((2, 120, false))
        );
        assert_eq!(
            store.usage_under("alice", "docs/b/c").unwrap(),
            Some((1, 20, true))
        );
        assert_eq!(
            store.usage_under("alice", "void").unwrap(),
            Some((0, 0, false))
        );
        assert_eq!(store.usage_under("alice", "nothing").unwrap(), None);
        assert_eq!(store.usage_under("bob", "docs").unwrap(), None);
    }

    #[test]
    fn a_store_without_usage_is_counted_at_its_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Tuning::default()).unwrap();
            let m = upload_file(&store, "alice", "x", 4_000, 4);
            store.commit("alice", m).unwrap();
            // As a store of the release before usage was kept.
            store
                .write(|t| {
                    t.txn.delete_table(USAGE)?;
                    t.meta.remove(COUNTED)?;
                    Ok(())
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), Tuning::default()).unwrap();
        let u = store.usage("alice").unwrap();
        assert_eq!((u.files, u.bytes, u.used()), (1, 4_000, 4_000));
    }
}
