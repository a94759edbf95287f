//! Writing a small file so that nobody ever sees half of it: a temp file
//! beside the target, with its final permissions from the start, synced, then
//! renamed over the target (or linked to it only if there is none yet).
//! Used for `users.toml`, keys and certificates, and the cluster key.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// What to do when the target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Keep it: whoever writes first wins (e.g. several servers creating one
    /// shared key at once).
    Keep,
}

/// The folder `path` is in (`.` for a bare file name).
pub fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically with file mode `mode` (Unix). Returns
/// false when `existing` is `Keep` and the file was already there.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> Result<bool> {
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ringdfs-")
        .tempfile_in(parent_or_dot(path))
        .map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    match existing {
        Existing::Replace => {
            tmp.persist(path).map_err(|e| io(e.error))?;
            Ok(true)
        }
        // A hard link fails if the target exists: the first writer wins.
        Existing::Keep => match std::fs::hard_link(tmp.path(), path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_and_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(write_file(&path, b"one", 0o600, Existing::Keep).unwrap());
        assert!(!write_file(&path, b"two", 0o600, Existing::Keep).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert!(write_file(&path, b"three", 0o600, Existing::Replace).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
