//! What a PUT reads: one local file, or several files read one after another
//! as one (an S3 multipart upload's parts, in part order), so the parts are
//! stored as they lie on disk instead of being copied into one file first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The local bytes of a PUT. Cheap to clone: each chunk's reader takes one.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Each file with its length when the PUT looked at it.
    files: Arc<[(PathBuf, u64)]>,
}

impl Source {
    /// One local file of `len` bytes (as its metadata said).
    pub(crate) fn file(path: &Path, len: u64) -> Source {
        Source {
            files: Arc::from([(path.to_path_buf(), len)]),
        }
    }

    /// Several local files, stored as the one file they make end to end.
    pub(crate) fn parts(paths: &[PathBuf]) -> std::io::Result<Source> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let meta = std::fs::metadata(path)?;
            if !meta.is_file() {
                return Err(not_a_file(path));
            }
            files.push((path.clone(), meta.len()));
        }
        Ok(Source {
            files: files.into(),
        })
    }

    /// The one local file, if that is what this is (`put -c` records it).
    pub(crate) fn single(&self) -> Option<&Path> {
        match &*self.files {
            [(path, _)] => Some(path),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.files.iter().map(|(_, len)| len).sum()
    }

    /// How errors name it: the file, or the first of the parts.
    pub(crate) fn shown(&self) -> String {
        match &*self.files {
            [] => "no parts".into(),
            [(path, _)] => path.display().to_string(),
            [(first, _), rest @ ..] => {
                format!("{} and {} more parts", first.display(), rest.len())
            }
        }
    }

    /// A reader of the bytes from `start` to the end. A file found shorter
    /// than it was is an `UnexpectedEof` error when the reader reaches it.
    pub(crate) fn reader_at(&self, start: u64) -> std::io::Result<Concat> {
        let mut skip = start;
        let mut index = 0;
        while index < self.files.len() && skip >= self.files[index].1 {
            skip -= self.files[index].1;
            index += 1;
        }
        let mut reader = Concat {
            files: Arc::clone(&self.files),
            index,
            file: None,
            left: 0,
        };
        if index < self.files.len() {
            reader.open(skip)?;
        }
        Ok(reader)
    }
}

fn not_a_file(path: &Path) -> std::io::Error {
    std::io::Error::other(format!("{} is not a regular file", path.display()))
}

/// Reads a [`Source`]'s files one after another.
pub(crate) struct Concat {
    files: Arc<[(PathBuf, u64)]>,
    /// The file being read.
    index: usize,
    file: Option<File>,
    /// Bytes of the current file still to read.
    left: u64,
}

impl Concat {
    /// Opens the current file at `offset`.
    fn open(&mut self, offset: u64) -> std::io::Result<()> {
        let (path, len) = &self.files[self.index];
        let mut file = File::open(path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        self.file = Some(file);
        self.left = len - offset;
        Ok(())
    }
}

impl Read for Concat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.index >= self.files.len() || buf.is_empty() {
                return Ok(0);
            }
            if self.left == 0 {
                self.index += 1;
                self.file = None;
                if self.index < self.files.len() {
                    self.open(0)?;
                }
                continue;
            }
            let want = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
            let file = self
                .file
                .as_mut()
                .expect("an open file while bytes are left");
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} is shorter than when the upload began",
                        self.files[self.index].0.display()
                    ),
                ));
            }
            self.left -= n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts of awkward sizes (an empty one among them) read from every
    /// start, in reads of several sizes: exactly the bytes of the joined file.
    #[test]
    fn parts_read_as_the_file_they_make_from_any_start() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [5usize, 0, 1, 4096, 3, 7000];
        let mut joined = Vec::new();
        let mut paths = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..*size).map(|b| (b * 7 + i * 31) as u8).collect();
            let path = dir.path().join(format!("{i:05}"));
            std::fs::write(&path, &bytes).unwrap();
            joined.extend_from_slice(&bytes);
            paths.push(path);
        }
        let source = Source::parts(&paths).unwrap();
        assert_eq!(source.len(), joined.len() as u64);
        assert_eq!(source.single(), None);
        for start in [0, 1, 4, 5, 6, 7, 4101, 4102, 4104, 9000, joined.len()] {
            for piece in [1, 3, 4096, 1 << 20] {
                let mut reader = source.reader_at(start as u64).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; piece];
                loop {
                    match reader.read(&mut buf).unwrap() {
                        0 => break,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(got == joined[start..], "start {start}, reads of {piece}");
            }
        }
    }

    /// A part that shrank after the upload looked at it is an error, not a
    /// shorter file; one file is a source of its own; a folder is no part.
    #[test]
    fn a_part_found_shorter_is_an_error_and_a_file_is_a_single_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, [1u8; 100]).unwrap();
        std::fs::write(&b, [2u8; 100]).unwrap();
        let source = Source::parts(&[a.clone(), b.clone()]).unwrap();
        std::fs::write(&b, [2u8; 10]).unwrap();
        let mut out = Vec::new();
        let err = source.reader_at(0).unwrap().read_to_end(&mut out);
        assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);

        let single = Source::file(&a, 100);
        assert_eq!(single.single(), Some(a.as_path()));
        let mut out = Vec::new();
        single.reader_at(40).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, [1u8; 60]);
        assert!(
            Source::parts(&[a, dir.path().to_path_buf()]).is_err(),
            "a folder is not a part"
        );
    }
}
