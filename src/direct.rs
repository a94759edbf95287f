//! Chunks written and read past the page cache (`O_DIRECT`): a server's
//! chunk files, and a GET's part file.
//!
//! A large chunk is written once, front to back (a server syncs it before
//! it is acknowledged). Through the page cache every byte is first copied into
//! freshly allocated cache pages, and the sync then writes those pages out:
//! on the machines we measure on, that copy was the largest single cost of
//! a PUT on the servers (58 % of their CPU; `dd` of 1 GiB with a sync at
//! the end: 1.2 CPU-s buffered, 0.3–0.5 direct). With `O_DIRECT` the disk
//! takes the bytes straight from one reused, page-aligned stage.
//!
//! A server reads large chunk files past the cache too ([`read_at`]): a
//! read of a chunk that is not cached fills fresh cache pages first (0.75
//! CPU-s per GiB against 0.10), and the scrub then checks what is on the
//! disk, not a cached copy of it.
//!
//! `O_DIRECT` wants whole pages at page offsets, so the bytes gather in the
//! stage and go out a full stage at a time; what is left at the end (the
//! last, partial page, and the chunk's trailer) is written through the page
//! cache and synced with the rest. A filesystem that refuses `O_DIRECT`
//! (at `fcntl`, or at the first write) is simply written through the cache.

use std::fs::File;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// What `O_DIRECT` asks of offsets, lengths and the buffer's address (a
/// page: at least every disk's logical block).
const ALIGN: usize = 4096;
/// The stage's largest size (a full stage is one write).
const STAGE: usize = 1 << 20;
/// Fewer bytes than this are not worth a write of their own to the disk.
const MIN_DIRECT: u64 = 64 << 10;

/// A file written front to back from `at` on, past the page cache where
/// the filesystem allows it.
pub struct DirectFile {
    file: File,
    /// The stage: `cap` bytes from `base`, which is page-aligned.
    stage: Vec<u8>,
    base: usize,
    cap: usize,
    /// Bytes gathered in the stage.
    filled: usize,
    /// The file offset of the stage's first byte.
    at: u64,
    /// `O_DIRECT` is on.
    direct: bool,
    /// It is to be turned on at the next page boundary.
    wanted: bool,
}

impl DirectFile {
    /// Writes `file` from offset `at` on, `expect` bytes or so (which sizes
    /// the stage). Past the page cache from the first page boundary on;
    /// the page `at` starts inside goes through the cache.
    pub fn new(file: File, at: u64, expect: u64) -> DirectFile {
        let cap = (expect.min(STAGE as u64) as usize)
            .max(ALIGN)
            .next_multiple_of(ALIGN);
        let stage = vec![0u8; cap + ALIGN];
        let base = stage.as_ptr().align_offset(ALIGN);
        let mut out = DirectFile {
            file,
            stage,
            base: base.min(ALIGN),
            cap,
            filled: 0,
            at,
            direct: false,
            wanted: base < ALIGN && expect >= MIN_DIRECT,
        };
        out.go_direct();
        out
    }

    /// The file offset every byte before which has been written.
    pub fn written_to(&self) -> u64 {
        self.at
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // Before turning O_DIRECT on: through the cache up to the next
            // page boundary. Else a whole stage per write, either way.
            let limit = match self.wanted && !self.direct {
                true => ALIGN - (self.at % ALIGN as u64) as usize,
                false => self.cap,
            };
            let take = data.len().min(limit - self.filled);
            let from = self.base + self.filled;
            self.stage[from..from + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == limit {
                self.write_out(limit)?;
                self.go_direct();
            }
        }
        Ok(())
    }

    /// Writes `tail` and everything gathered, and syncs the file's data.
    pub fn finish(&mut self, tail: &[u8]) -> io::Result<()> {
        self.write_all(tail)?;
        self.flush()?;
        self.file.sync_data()
    }

    /// Writes out the stage: its whole pages past the cache, the rest
    /// through it (not synced).
    pub fn flush(&mut self) -> io::Result<()> {
        let pages = self.filled / ALIGN * ALIGN;
        if self.direct && pages > 0 {
            self.write_out(pages)?;
        }
        if self.filled > 0 {
            self.wanted = false;
            if self.direct {
                self.direct = false;
                set_direct(&self.file, false)?;
            }
            self.write_out(self.filled)?;
        }
        Ok(())
    }

    /// Turns `O_DIRECT` on, if wanted and at a page boundary.
    fn go_direct(&mut self) {
        if self.wanted && !self.direct && self.at.is_multiple_of(ALIGN as u64) {
            self.direct = set_direct(&self.file, true).is_ok();
            self.wanted = self.direct;
        }
    }

    /// Writes the stage's first `len` bytes at `at`, and moves the rest (if
    /// any) to its start.
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        let bytes = &self.stage[self.base..self.base + len];
        match self.file.write_all_at(bytes, self.at) {
            // The filesystem took the flag but not the write: through the
            // cache from here on.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct = false;
                self.wanted = false;
                set_direct(&self.file, false)?;
                self.file.write_all_at(bytes, self.at)?;
            }
            written => written?,
        }
        self.at += len as u64;
        self.stage
            .copy_within(self.base + len..self.base + self.filled, self.base);
        self.filled -= len;
        Ok(())
    }
}

impl Drop for DirectFile {
    /// An unfinished file keeps what arrived (an upload's partial chunk is
    /// continued from it by `put -c`).
    fn drop(&mut self) {
        if self.filled > 0 {
            if let Err(e) = self.flush() {
                tracing::debug!(error = %e, "writing the rest of a cut-off chunk");
            }
        }
    }
}

/// Reads `len` bytes at `at`, a page boundary, from `file`, which has
/// `O_DIRECT` set, into a fresh page-aligned block (its last page may run
/// past `len`: into a chunk file's trailer, or the file's end).
pub fn read_at(file: &File, at: u64, len: usize) -> io::Result<Bytes> {
    let span = len.next_multiple_of(ALIGN);
    let mut buf = BytesMut::zeroed(span + ALIGN);
    let base = buf.as_ptr().align_offset(ALIGN);
    if base >= ALIGN || !at.is_multiple_of(ALIGN as u64) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[base + got..base + span], at + got as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.advance(base);
    buf.truncate(len);
    Ok(buf.freeze())
}

/// Sets or clears `O_DIRECT` on `file`.
pub fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the whole
    // call; F_GETFL and F_SETFL only read and set its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = match on {
        true => flags | libc::O_DIRECT,
        false => flags & !libc::O_DIRECT,
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Whatever the pieces' sizes, the file holds exactly the bytes, from
    /// `at` on, and the stage goes out past the cache where it can.
    #[test]
    fn writes_exactly_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        let can_direct = set_direct(&probe, true).is_ok();
        for (len, piece, at) in [
            (0, 1, 0),
            (1, 1, 0),
            (4095, 100, 0),
            (4096, 4096, 0),
            (3 * STAGE + 12_345, 70_000, 0),
            (2 * STAGE, STAGE, 0),
            (STAGE + 1, 333, 8192),
            (STAGE + 5, 4096, 100), // an unaligned start: its page through the cache
            (3 * STAGE, 65_536, 4097),
            (70_000, 1 << 20, 4095),
        ] {
            let path = dir.path().join(format!("{len}-{piece}-{at}"));
            std::fs::write(&path, vec![9u8; at as usize]).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let data = pattern(len);
            let mut out = DirectFile::new(file, at, len as u64);
            for part in data.chunks(piece) {
                out.write_all(part).unwrap();
            }
            if can_direct && len > STAGE && at.is_multiple_of(ALIGN as u64) {
                assert!(out.direct, "{len} from {at}: not past the cache");
            }
            out.finish(b"trailer").unwrap();
            drop(out);
            let got = std::fs::read(&path).unwrap();
            let mut want = vec![9u8; at as usize];
            want.extend_from_slice(&data);
            want.extend_from_slice(b"trailer");
            assert_eq!(
                got.len(),
                want.len(),
                "{len} in pieces of {piece} from {at}"
            );
            assert!(got == want, "{len} in pieces of {piece} from {at}");
        }
    }

    /// A read past the cache gives exactly the bytes asked for, the last
    /// page cut to length; from a page boundary only.
    #[test]
    fn reads_exactly_what_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(3 * STAGE + 777);
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let _ = set_direct(&file, true);
        for (at, len) in [
            (0, STAGE),
            (STAGE, 4095),
            (2 * STAGE, STAGE + 777),
            (4096, 1),
        ] {
            let got = read_at(&file, at as u64, len).unwrap();
            assert!(got[..] == data[at..at + len], "{len} at {at}");
        }
        assert!(read_at(&file, 100, 10).is_err(), "an unaligned start");
        assert!(
            read_at(&file, 3 * STAGE as u64, 778).is_err(),
            "past the end"
        );
    }

    /// Dropped unfinished, it keeps every byte it was given.
    #[test]
    fn an_unfinished_file_keeps_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut");
        let data = pattern(STAGE + 10_000);
        let mut out = DirectFile::new(File::create(&path).unwrap(), 0, 4 * STAGE as u64);
        out.write_all(&data).unwrap();
        drop(out);
        assert!(std::fs::read(&path).unwrap() == data);
    }
}
