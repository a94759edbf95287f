//! Quotas: sizes as people type them, the refusal line, and the servers'
//! gate that keeps every upload within its owner's quota.
//!
//! A user's quota is part of the user's record (cluster state, see
//! `accounts`); what a user uses is kept by every server's store (see
//! `store::Usage`): live files, uploads not committed yet and replaced
//! versions still kept, each file once. A PUT asks one server first
//! (`CheckQuota`), so a file that does not fit is refused before any data
//! is sent; and every server checks every `PutChunk` again
//! ([`Gate::admit`]), so a hand-built request cannot get around it.
//!
//! What a PUT needs is the whole size of the file, even when it replaces
//! one: the version it replaces is kept (and counts) for a grace period
//! after the commit, so reads under way finish, and until the commit both
//! exist. A delete frees a file's bytes at once.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::protocol::{UsageReport, Version};
use crate::store::{ChunkSpec, Store};

/// A quota as typed after `dfs-server user quota USER`: a size with an
/// optional unit (`500MB` = 500 000 000 bytes, `10GiB` = 10 × 2^30, `1.5 GiB`,
/// a bare number is bytes), or `none` (no quota). The error is one line.
pub fn parse_quota(text: &str) -> std::result::Result<Option<u64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let shown = crate::error::shown(text);
    match parse_size::parse_size(text) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(parse_size::Error::PosOverflow) => Err(format!("{shown:?} is too large a size")),
        Err(_) => Err(format!(
            "{shown:?} is not a size: give a number and a unit (500MB, 10GiB, 1.5TB), or `none`"
        )),
    }
}

/// A size as people read it, without a needless `.0`: `10 GiB`,
/// `476.8 MiB`, `512 B`.
pub fn size_text(bytes: u64) -> String {
    let (number, unit) = split_size(bytes, None);
    format!("{number} {unit}")
}

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `bytes` as a number (one decimal, `.0` dropped) and a unit: the largest
/// unit it reaches, or `unit` (an index into [`UNITS`]) when given.
fn split_size(bytes: u64, unit: Option<usize>) -> (String, &'static str) {
    let unit = unit.unwrap_or_else(|| {
        (0..UNITS.len())
            .rev()
            .find(|&u| bytes >= 1u64 << (10 * u))
            .unwrap_or(0)
    });
    if unit == 0 {
        return (bytes.to_string(), UNITS[0]);
    }
    let value = bytes as f64 / (1u64 << (10 * unit)) as f64;
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text).to_string();
    (text, UNITS[unit])
}

/// The one-line refusal of a file of `need` bytes for a user who uses
/// `used` of `quota`: `quota: 9.8 of 10 GiB used; this file needs 512 MiB`.
pub fn refusal(used: u64, quota: u64, need: u64) -> Error {
    let (quota_number, unit) = split_size(quota, None);
    let index = UNITS.iter().position(|u| *u == unit).unwrap_or(0);
    // The use in the quota's unit, unless that would show a small use as 0.
    let used = match split_size(used, Some(index)) {
        (number, _) if number != "0" || used == 0 => number,
        _ => size_text(used),
    };
    Error::OverQuota(format!(
        "quota: {used} of {quota_number} {unit} used; this file needs {}",
        size_text(need)
    ))
}

/// An upload: (owner, name, version).
type UploadKey = (String, String, Version);
/// Uploads admitted: the file's size, and chunks of it being received.
type Held = HashMap<UploadKey, (u64, u32)>;

/// A server's gate for uploads: admits a chunk only if its upload fits its
/// owner's quota. Uploads admitted but not yet counted by the store are
/// held here (with their sizes), so uploads that arrive at once cannot
/// each see the quota's room and together overrun it.
#[derive(Default)]
pub struct Gate {
    /// (owner, name, version) → (the file's size, chunks being received).
    held: Mutex<Held>,
}

/// An admitted chunk's place at the [`Gate`]; given back when dropped (once
/// the chunk is stored, and so its upload counted, or has failed).
pub struct Ticket<'a> {
    gate: &'a Gate,
    key: UploadKey,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut held = self.gate.held.lock().expect("quota gate lock");
        if let Some((_, chunks)) = held.get_mut(&self.key) {
            *chunks -= 1;
            if *chunks == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Gate {
    /// What `owner` uses: what the store counts, and the uploads admitted
    /// here that it does not count yet.
    fn used(&self, store: &Store, owner: &str, held: &Held) -> Result<u64> {
        let mut used = store.usage(owner)?.used();
        for ((o, name, version), (size, _)) in held {
            if o == owner && store.upload_counted(o, name, *version)?.is_none() {
                used = used.saturating_add(*size);
            }
        }
        Ok(used)
    }

    /// Whether a new file of `size` bytes fits `owner`'s `quota`: the
    /// answer to `CheckQuota`.
    pub fn check(&self, store: &Store, owner: &str, quota: Option<u64>, size: u64) -> Result<()> {
        let Some(quota) = quota else {
            return Ok(());
        };
        let held = self.held.lock().expect("quota gate lock");
        let used = self.used(store, owner, &held)?;
        if used.saturating_add(size) > quota {
            return Err(refusal(used, quota, size));
        }
        Ok(())
    }

    /// Admits a chunk of `spec`'s upload: at once if its upload is already
    /// counted (or being received), with the same size; else if the whole
    /// file fits the owner's `quota`. Without a quota, everything is
    /// admitted and nothing held.
    pub fn admit(
        &self,
        store: &Store,
        quota: Option<u64>,
        spec: &ChunkSpec,
    ) -> Result<Option<Ticket<'_>>> {
        let Some(quota) = quota else {
            return Ok(None);
        };
        let key = (spec.owner.clone(), spec.name.clone(), spec.version);
        let mut held = self.held.lock().expect("quota gate lock");
        let known = match held.get(&key) {
            Some((size, _)) => Some(*size),
            None => store.upload_counted(&spec.owner, &spec.name, spec.version)?,
        };
        match known {
            Some(size) if size != spec.size => {
                return Err(Error::BadRequest(format!(
                    "chunk {} says its file has {} bytes, but its upload began as {size}",
                    spec.chunk, spec.size
                )));
            }
            Some(_) => {}
            None => {
                let used = self.used(store, &spec.owner, &held)?;
                if used.saturating_add(spec.size) > quota {
                    return Err(refusal(used, quota, spec.size));
                }
            }
        }
        held.entry(key.clone()).or_insert((spec.size, 0)).1 += 1;
        Ok(Some(Ticket { gate: self, key }))
    }
}

/// The answer to `Usage{path}` for `owner` (quota `quota`), from `store`
/// (whose data folder's disk is reported too).
pub fn report(store: &Store, owner: &str, quota: Option<u64>, path: &str) -> Result<UsageReport> {
    if !path.is_empty() {
        crate::names::validate_name(path)?;
    }
    let usage = store.usage(owner)?;
    let (path_files, path_bytes, path_is_file) =
        store
            .usage_under(owner, path)?
            .ok_or_else(|| Error::NotFound {
                name: path.to_string(),
            })?;
    let free = crate::heal::free_bytes(store.root())
        .unwrap_or(0)
        .saturating_sub(crate::heal::RESERVE);
    Ok(UsageReport {
        quota,
        files: usage.files,
        bytes: usage.bytes,
        uploads: usage.uploads,
        upload_bytes: usage.upload_bytes,
        kept: usage.kept,
        kept_bytes: usage.kept_bytes,
        path_files,
        path_bytes,
        path_is_file,
        disk: disk_id(store.root()),
        free,
    })
}

/// Names the disk `dir` is on: the host's name and the file system's
/// device, so the client counts the free space of a disk several servers
/// share (one machine, as in `dfs local`) once.
fn disk_id(dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir).map_or(0, |m| m.dev());
    let mut name = [0u8; 256];
    // SAFETY: `name` is writable for its whole length, which is passed.
    let host = if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0 {
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        String::from_utf8_lossy(&name[..end]).into_owned()
    } else {
        String::new()
    };
    format!("{host}:{device:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_with_units_or_none_and_mistakes_are_one_line() {
        for (typed, want) in [
            ("500MB", Some(500_000_000)),
            ("10GiB", Some(10 << 30)),
            ("10 GiB", Some(10 << 30)),
            ("1.5gib", Some(3 << 29)),
            ("4096", Some(4096)),
            ("0", Some(0)),
            ("none", None),
            ("NONE", None),
        ] {
            assert_eq!(parse_quota(typed), Ok(want), "{typed}");
        }
        for typed in [
            "",
            "10XB",
            "-5MB",
            "1.2.3GB",
            "ten",
            "GiB",
            "99999999999EiB",
        ] {
            let e = parse_quota(typed).unwrap_err();
            assert!(
                !e.contains('\n') && e.contains(&format!("{typed:?}")),
                "{typed}: {e}"
            );
        }
    }

    #[test]
    fn the_refusal_reads_like_the_issue_says() {
        let gib = 1u64 << 30;
        let line = refusal(gib * 98 / 10, 10 * gib, 512 << 20).to_string();
        assert_eq!(line, "quota: 9.8 of 10 GiB used; this file needs 512 MiB");
        let line = refusal(0, 1 << 20, 2 << 20).to_string();
        assert_eq!(line, "quota: 0 of 1 MiB used; this file needs 2 MiB");
        // A use too small to show in the quota's unit shows its own.
        let line = refusal(3 << 20, 10 * gib, 11 * gib).to_string();
        assert_eq!(line, "quota: 3 MiB of 10 GiB used; this file needs 11 GiB");
        assert_eq!(size_text(500_000_000), "476.8 MiB");
        assert_eq!(size_text(512), "512 B");
    }
}
