//! The upgrade from the first release's layout, where each file was a folder
//! holding a `manifest` file and its chunk files, and the index was rebuilt
//! by scanning every folder at start.
//!
//! On the first start of a new release over such a folder (the database has
//! no `format` yet), every legacy manifest and every chunk file's trailer is
//! read into the database, in batches; the chunk files stay where they are
//! (the new layout keeps large chunks at the same paths). Only then is the
//! format recorded, and only after that are the legacy manifest files
//! removed. Each batch is idempotent (a manifest is committed only if newer,
//! a chunk recorded only if new), so a crash anywhere in between loses
//! nothing: the next start runs the migration again from the beginning. The
//! removal is marked pending in the same commit as the format, and cleared
//! once done, so a crash part way through it is finished by the next start.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use redb::{ReadableTable, TableDefinition};

use super::chunk::{parse_chunk_file_name, read_dir, read_trailer, remove_file_logged};
use super::{now_ms, ChunkKey, ChunkRow, ChunkSpec, Store, FORMAT};
use crate::codec;
use crate::error::Result;
use crate::names::{validate_name, validate_user};
use crate::protocol::{Checksum, DataRef, FileDigest, Kept, Manifest, ObjectMeta, Version};

const MANIFEST_MAGIC: &[u8; 8] = b"RDFSMAN1";
/// Files per transaction.
const BATCH: usize = 500;

#[derive(Deserialize)]
struct StoredManifest {
    owner: String,
    manifest: ManifestV3,
}

/// A manifest as store formats 1 to 3 encoded it: before `data`, every
/// file's data was its own name and version.
#[derive(Serialize, Deserialize)]
pub(super) struct ManifestV3 {
    name: String,
    version: Version,
    size: u64,
    chunks: u32,
    checksums: Vec<Checksum>,
    stored_at: u64,
    md5: [u8; 16],
    deleted: bool,
}

/// For the migrations' tests: a manifest as format 3 wrote it.
#[cfg(test)]
impl From<&Manifest> for ManifestV3 {
    fn from(m: &Manifest) -> ManifestV3 {
        ManifestV3 {
            name: m.name.clone(),
            version: m.version,
            size: m.size,
            chunks: m.chunks,
            checksums: m.checksums.clone(),
            stored_at: m.stored_at,
            md5: md5_of(m.digest),
            deleted: m.deleted,
        }
    }
}

impl From<ManifestV3> for Manifest {
    fn from(m: ManifestV3) -> Manifest {
        Manifest {
            name: m.name,
            version: m.version,
            size: m.size,
            chunks: m.chunks,
            checksums: m.checksums,
            stored_at: m.stored_at,
            digest: legacy_digest(m.md5),
            deleted: m.deleted,
            data: None,
            kept: None,
            meta: None,
        }
    }
}

/// One legacy file folder, read.
struct Legacy {
    owner: String,
    manifest: Option<Manifest>,
    copies: Vec<(ChunkSpec, Checksum)>,
}

/// Reads every legacy folder into the database.
pub(super) fn run(store: &Arc<Store>) -> Result<()> {
    let users = store.root.join("users");
    let mut batch = Vec::new();
    let (mut files, mut copies) = (0u64, 0u64);
    for owner_dir in read_dir(&users)? {
        let owner = owner_dir.file_name().to_string_lossy().into_owned();
        if validate_user(&owner).is_err() {
            continue;
        }
        for file_dir in read_dir(&owner_dir.path())? {
            let Some(legacy) = read_folder(&owner, &file_dir.path()) else {
                continue;
            };
            files += u64::from(legacy.manifest.is_some());
            copies += legacy.copies.len() as u64;
            batch.push(legacy);
            if batch.len() == BATCH {
                flush(store, std::mem::take(&mut batch))?;
            }
        }
    }
    flush(store, batch)?;
    if files + copies > 0 {
        tracing::info!(root = %store.root.display(), files, copies, "migrated the data folder to the metadata database");
    }
    Ok(())
}

fn flush(store: &Store, batch: Vec<Legacy>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    store.write(move |t| {
        for legacy in &batch {
            for (spec, checksum) in &legacy.copies {
                if t.chunks.get(spec.key())?.is_none() {
                    t.insert_copy(spec, *checksum, None, &[])?;
                }
            }
            if let Some(m) = &legacy.manifest {
                t.commit(&legacy.owner, m, now_ms())?;
            }
        }
        Ok(())
    })
}

/// Reads one file folder: its manifest (if any) and the chunk files worth
/// keeping (of the current version, or newer ones not yet committed). Older
/// versions' chunk files, which nothing would read again, are removed.
fn read_folder(owner: &str, dir: &Path) -> Option<Legacy> {
    let manifest = match read_manifest(&dir.join("manifest")) {
        Ok(Some(m)) if m.owner == owner => Some(Manifest::from(m.manifest)),
        Ok(_) => None,
        Err(why) => {
            tracing::warn!(dir = %dir.display(), error = %why, "unreadable legacy manifest; its file is healed from the other servers");
            None
        }
    };
    let mut copies = Vec::new();
    for entry in read_dir(dir).ok()? {
        let Some((version, chunk)) = parse_chunk_file_name(&entry.file_name()) else {
            continue;
        };
        let path = entry.path();
        if manifest
            .as_ref()
            .is_some_and(|m| version < m.version || (m.deleted && version == m.version))
        {
            remove_file_logged(&path);
            continue;
        }
        let trailer = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| read_trailer(&f));
        let trailer = match trailer {
            Ok(t) if t.owner == owner && t.version == version && t.chunk == chunk => t,
            Ok(_) | Err(_) => {
                // Left in place and not recorded: the copy is missing to the
                // new store, and healing fetches a good one.
                tracing::warn!(path = %path.display(), "chunk file with a bad trailer; not migrated");
                continue;
            }
        };
        if validate_name(&trailer.name).is_err() {
            continue;
        }
        let checksum = trailer.checksum;
        let spec = ChunkSpec {
            owner: owner.to_string(),
            name: trailer.name,
            version,
            chunk,
            chunks: trailer.chunks,
            size: trailer.size,
        };
        if spec.validate().is_err() || spec.chunk_len() != trailer.len {
            tracing::warn!(path = %path.display(), "chunk file that does not fit its file; not migrated");
            continue;
        }
        copies.push((spec, checksum));
    }
    if manifest.is_none() && copies.is_empty() {
        return None;
    }
    Some(Legacy {
        owner: owner.to_string(),
        manifest,
        copies,
    })
}

fn read_manifest(path: &Path) -> std::result::Result<Option<StoredManifest>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() < 40 || &bytes[..8] != MANIFEST_MAGIC {
        return Err("not a manifest".into());
    }
    let (sum, body) = bytes[8..].split_at(32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("manifest checksum mismatch".into());
    }
    codec::decode(body).map(Some).map_err(|e| e.to_string())
}

/// Removes the legacy manifest files once the migration is recorded, and
/// the folders left empty.
pub(super) fn tidy(root: &Path) {
    for owner_dir in read_dir(&root.join("users")).unwrap_or_default() {
        for file_dir in read_dir(&owner_dir.path()).unwrap_or_default() {
            let dir = file_dir.path();
            remove_file_logged(&dir.join("manifest"));
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// Writes a folder in the legacy layout, for the migration's tests.
#[cfg(test)]
pub(super) fn write_legacy_manifest(dir: &Path, owner: &str, manifest: &Manifest) {
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        owner: &'a str,
        manifest: ManifestV3,
    }
    let manifest = ManifestV3::from(manifest);
    let body = codec::encode(&Stored { owner, manifest }).unwrap();
    let mut bytes = MANIFEST_MAGIC.to_vec();
    bytes.extend_from_slice(blake3::hash(&body).as_bytes());
    bytes.extend_from_slice(&body);
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("manifest"), bytes).unwrap();
}

// The upgrade from format 2, where small chunks were kept in the database.

/// Format 2's chunk rows and small chunks' bytes.
const V2_ROWS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("chunks");
const V2_BLOBS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("blobs");

#[derive(Deserialize)]
struct V2Row {
    len: u64,
    checksum: Checksum,
    inline: bool,
}

type OwnedKey = (String, String, u64, u64, u32);

/// Moves format 2's chunk rows into the current table, and the small chunks'
/// bytes from the database into volumes, a batch per commit; the last commit
/// drops the old tables and records the format. A crash in between leaves
/// the rest for the next start (bytes appended by a batch that did not
/// commit are dead space in the volume).
pub(super) fn from_v2(store: &Store) -> Result<()> {
    let mut moved = 0u64;
    loop {
        let done = store.write(|t| {
            let mut rows = t.txn.open_table(V2_ROWS)?;
            let mut blobs = t.txn.open_table(V2_BLOBS)?;
            let mut batch: Vec<(OwnedKey, V2Row)> = Vec::new();
            for item in rows.iter()?.take(BATCH) {
                let (key, value) = item?;
                let (o, n, gen, writer, chunk) = key.value();
                let row: V2Row = codec::decode(value.value())?;
                batch.push(((o.to_string(), n.to_string(), gen, writer, chunk), row));
            }
            if batch.is_empty() {
                drop((rows, blobs));
                t.txn.delete_table(V2_ROWS)?;
                t.txn.delete_table(V2_BLOBS)?;
                t.meta.insert("format", &b"3"[..])?;
                return Ok(None);
            }
            for ((o, n, gen, writer, chunk), row) in &batch {
                let key = (o.as_str(), n.as_str(), *gen, *writer, *chunk);
                rows.remove(key)?;
                let at = if row.inline {
                    let Some(data) = blobs.remove(key)?.map(|d| d.value().to_vec()) else {
                        // Counted but gone: forgotten, so healing fetches it.
                        t.counts.chunks -= 1;
                        t.counts.bytes -= row.len;
                        continue;
                    };
                    Some(t.appender.append(&data)?)
                } else {
                    None
                };
                let new = ChunkRow {
                    len: row.len,
                    checksum: row.checksum,
                    at,
                };
                t.chunks.insert(key, codec::encode(&new)?.as_slice())?;
                if let Some((vol, _)) = at {
                    t.add_live(vol, row.len, true)?;
                }
            }
            Ok(Some(batch.len() as u64))
        })?;
        match done {
            Some(n) => moved += n,
            None => break,
        }
    }
    tracing::info!(root = %store.root.display(), chunks = moved, "moved the small chunks into volume files (store format 3)");
    Ok(())
}

// The upgrade from format 3, where chunks were keyed by the file's name.

const V3_MISSING: TableDefinition<(&str, &str, u32), ()> = TableDefinition::new("missing");
const V3_SURPLUS: TableDefinition<(&str, &str, u32), ()> = TableDefinition::new("surplus");
const V3_RETIRED: TableDefinition<(&str, &str), (u64, u64, u64)> = TableDefinition::new("retired");

/// Format 4 keys chunks by the data they belong to (see `Manifest::data`):
/// every file's data was its own name and version, so the chunk rows stay
/// as they are; each manifest is re-encoded with `data` and counted in the
/// `data` table, `missing` and `surplus` are recomputed by data, and the
/// versions format 3 kept for reads under way go (nothing is reading them
/// across a restart). One transaction: a crash leaves format 3 to upgrade
/// again.
pub(super) fn from_v3(store: &Store) -> Result<()> {
    let files = store.write(|t| {
        let manifests = reencode_manifests::<ManifestV3>(t)?;
        let mut retired = Vec::new();
        for item in t.txn.open_table(V3_RETIRED)?.iter()? {
            let (key, value) = item?;
            let (owner, name) = key.value();
            let (gen, writer, _) = value.value();
            retired.push((owner.to_string(), name.to_string(), Version { gen, writer }));
        }
        for (owner, name, version) in &retired {
            for chunk in t.held(owner, name, *version)? {
                t.remove_copy(owner, name, *version, chunk, false)?;
            }
        }
        t.txn.delete_table(V3_MISSING)?;
        t.txn.delete_table(V3_SURPLUS)?;
        t.txn.delete_table(V3_RETIRED)?;
        t.counts.missing = 0;
        for (owner, _, m) in manifests.iter().filter(|(_, _, m)| m.has_data()) {
            t.add_ref(owner, m)?;
        }
        t.meta.insert("format", FORMAT)?;
        Ok(manifests.len())
    })?;
    tracing::info!(root = %store.root.display(), files, "keyed the chunks by their data (store format 4)");
    Ok(())
}

// The upgrade from format 4, whose manifests had no `kept`.

/// A manifest as store format 4 encoded it: before `kept` (`put -p`).
#[derive(Serialize, Deserialize)]
pub(super) struct ManifestV4 {
    name: String,
    version: Version,
    size: u64,
    chunks: u32,
    checksums: Vec<Checksum>,
    stored_at: u64,
    md5: [u8; 16],
    deleted: bool,
    data: Option<DataRef>,
}

/// For the migrations' tests: a manifest as format 4 wrote it.
#[cfg(test)]
impl From<&Manifest> for ManifestV4 {
    fn from(m: &Manifest) -> ManifestV4 {
        ManifestV4 {
            name: m.name.clone(),
            version: m.version,
            size: m.size,
            chunks: m.chunks,
            checksums: m.checksums.clone(),
            stored_at: m.stored_at,
            md5: md5_of(m.digest),
            deleted: m.deleted,
            data: m.data.clone(),
        }
    }
}

impl From<ManifestV4> for Manifest {
    fn from(m: ManifestV4) -> Manifest {
        Manifest {
            name: m.name,
            version: m.version,
            size: m.size,
            chunks: m.chunks,
            checksums: m.checksums,
            stored_at: m.stored_at,
            digest: legacy_digest(m.md5),
            deleted: m.deleted,
            data: m.data,
            kept: None,
            meta: None,
        }
    }
}

/// Format 5 gave manifests `kept`: each is re-encoded with none.
pub(super) fn from_v4(store: &Store) -> Result<()> {
    upgrade_manifests::<ManifestV4>(store, 4)
}

// The upgrade from format 5, whose manifests had no `meta`.

/// A manifest as store format 5 encoded it: format 4's fields, then `kept`,
/// and no `meta` (S3 metadata). bincode writes a struct's fields in order
/// with nothing between them, so the nested struct encodes exactly as the
/// flat one did (`a_format_5_manifest_encodes_as_format_6_without_meta`).
#[derive(Serialize, Deserialize)]
pub(super) struct ManifestV5 {
    v4: ManifestV4,
    kept: Option<Kept>,
}

/// For the migrations' tests: a manifest as format 5 wrote it.
#[cfg(test)]
impl From<&Manifest> for ManifestV5 {
    fn from(m: &Manifest) -> ManifestV5 {
        ManifestV5 {
            v4: m.into(),
            kept: m.kept,
        }
    }
}

impl From<ManifestV5> for Manifest {
    fn from(m: ManifestV5) -> Manifest {
        Manifest {
            kept: m.kept,
            ..Manifest::from(m.v4)
        }
    }
}

/// Format 6 gave manifests `meta`: each is re-encoded with none.
pub(super) fn from_v5(store: &Store) -> Result<()> {
    upgrade_manifests::<ManifestV5>(store, 5)
}

// The upgrade from format 6, whose manifests had an MD5 where they now
// have a `FileDigest`.

/// A manifest as store format 6 encoded it: format 5's, then `meta`.
#[derive(Serialize, Deserialize)]
pub(super) struct ManifestV6 {
    v5: ManifestV5,
    meta: Option<ObjectMeta>,
}

/// For the migrations' tests: a manifest as format 6 wrote it.
#[cfg(test)]
impl From<&Manifest> for ManifestV6 {
    fn from(m: &Manifest) -> ManifestV6 {
        ManifestV6 {
            v5: m.into(),
            meta: m.meta.clone(),
        }
    }
}

impl From<ManifestV6> for Manifest {
    fn from(m: ManifestV6) -> Manifest {
        Manifest {
            meta: m.meta,
            ..Manifest::from(m.v5)
        }
    }
}

/// Format 7 gave manifests a `FileDigest`: each MD5 becomes
/// `FileDigest::Md5` (zeros, a tombstone's or a folder's, `None`).
pub(super) fn from_v6(store: &Store) -> Result<()> {
    upgrade_manifests::<ManifestV6>(store, 6)
}

/// Format 8 added the write-ahead log (`wal`): nothing to convert, but a
/// release that does not know the log must not open a store whose log may
/// hold acknowledged changes.
pub(super) fn from_v7(store: &Store) -> Result<()> {
    store.write(|t| {
        t.meta.insert("format", FORMAT)?;
        Ok(())
    })?;
    tracing::info!(root = %store.root.display(), "store format 7 to 8 (a write-ahead log)");
    Ok(())
}

/// Re-encodes every manifest of a store of format `from`, read as `Old`,
/// as the current format writes it (every later format's additions at
/// once), and records the current format. One transaction: a crash leaves
/// the old format to upgrade again.
fn upgrade_manifests<Old>(store: &Store, from: u32) -> Result<()>
where
    Old: serde::de::DeserializeOwned + Into<Manifest>,
{
    let files = store.write(|t| {
        let manifests = reencode_manifests::<Old>(t)?;
        t.meta.insert("format", FORMAT)?;
        Ok(manifests.len())
    })?;
    let to = String::from_utf8_lossy(FORMAT);
    tracing::info!(root = %store.root.display(), files, "re-encoded every manifest from store format {from} to {to}");
    Ok(())
}

/// The digest of a manifest that had an MD5 (zeros: none).
fn legacy_digest(md5: [u8; 16]) -> FileDigest {
    match md5 == [0; 16] {
        true => FileDigest::None,
        false => FileDigest::Md5(md5),
    }
}

/// For the migrations' tests: the MD5 an older format kept of `digest`.
#[cfg(test)]
fn md5_of(digest: FileDigest) -> [u8; 16] {
    match digest {
        FileDigest::Md5(md5) => md5,
        _ => [0; 16],
    }
}

/// Rewrites every manifest in `files`, read as an older format's `Old`, in
/// the current encoding; returns them (owner, name, manifest).
fn reencode_manifests<Old>(t: &mut super::Tables<'_>) -> Result<Vec<(String, String, Manifest)>>
where
    Old: serde::de::DeserializeOwned + Into<Manifest>,
{
    let mut manifests = Vec::new();
    for item in t.files.iter()? {
        let (key, value) = item?;
        let (owner, name) = key.value();
        let m: Old = codec::decode(value.value())?;
        manifests.push((owner.to_string(), name.to_string(), m.into()));
    }
    for (owner, name, m) in &manifests {
        t.files.insert(
            (owner.as_str(), name.as_str()),
            codec::encode(m)?.as_slice(),
        )?;
    }
    Ok(manifests)
}
