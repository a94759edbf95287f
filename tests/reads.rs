//! READ, the ranged streaming read a gateway's GET answers with
//! (`Client::read`): exact bytes for every range, around a stopped holder
//! and a corrupt copy, an error (never wrong bytes) when no good copy is
//! left, and bounded memory for a file far larger than its buffer.

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use futures_util::StreamExt;
use rand::{RngCore, SeedableRng};
use ringdfs::client::{no_progress, Client, ReadStream, MAX_BUFFERED};
use ringdfs::placement::chunk_range;
use ringdfs::Error;

use ringdfs::blocks::BLOCK;
use ringdfs::protocol::{Frame, Request, Response};

use crate::util::{chunk_file, holders, random_file, raw_login, Cluster};

/// What a stream yielded: its bytes, then the error it ended with, if any.
async fn drain(mut stream: ReadStream) -> (Vec<u8>, Option<Error>, u64) {
    let mut bytes = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(piece) => bytes.extend_from_slice(&piece),
            Err(e) => {
                assert!(stream.next().await.is_none(), "an error is the last item");
                return (bytes, Some(e), stream.peak_buffered());
            }
        }
    }
    (bytes, None, stream.peak_buffered())
}

/// The bytes of `range` of `name`, which must arrive without an error.
async fn read(client: &Client, name: &str, range: Option<Range<u64>>) -> Vec<u8> {
    let (manifest, stream) = client.read(name, range.clone()).await.unwrap();
    assert_eq!(stream.range(), range.unwrap_or(0..manifest.size));
    let (bytes, error, peak) = drain(stream).await;
    assert!(error.is_none(), "{name}: {error:?}");
    assert!(peak <= MAX_BUFFERED, "{peak} bytes held");
    bytes
}

fn same(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: {} bytes, wanted {} (first difference at {:?})",
        got.len(),
        want.len(),
        got.iter().zip(want).position(|(a, b)| a != b)
    );
}

#[tokio::test]
async fn every_range_of_a_file_reads_exactly() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let size = 5 << 20;
    let (local, data) = random_file(work.path(), "five", size);
    client.put(&local, "five", &no_progress).await.unwrap();
    let size = size as u64;
    let end_of = |c| chunk_range(size, 4, c).1;

    same(&read(&client, "five", None).await, &data, "whole");
    let ranges = [
        ("first byte", 0..1),
        ("last byte", size - 1..size),
        ("across chunks 1-2", end_of(1) - 10..end_of(1) + 10),
        ("chunks 1 to 3", end_of(1) / 2..end_of(2) + 1000),
        ("all of chunk 2", end_of(1)..end_of(2)),
        ("empty", 1000..1000),
        ("empty at the end", size..size),
    ];
    for (what, range) in ranges {
        let got = read(&client, "five", Some(range.clone())).await;
        same(&got, &data[range.start as usize..range.end as usize], what);
    }

    for bad in [size..size + 1, 0..size + 1, Range { start: 10, end: 5 }] {
        match client.read("five", Some(bad.clone())).await {
            Err(Error::Refused(m)) => assert!(m.contains("not within the file"), "{m}"),
            other => panic!("{bad:?}: {:?}", other.map(|(m, _)| m)),
        }
    }

    let (empty, _) = random_file(work.path(), "empty", 0);
    client.put(&empty, "empty", &no_progress).await.unwrap();
    assert!(read(&client, "empty", None).await.is_empty());
    assert!(read(&client, "empty", Some(0..0)).await.is_empty());
    assert!(matches!(
        client.read("empty", Some(0..1)).await,
        Err(Error::Refused(_))
    ));

    assert!(matches!(
        client.read("nothing", None).await,
        Err(Error::NotFound { .. })
    ));
    client.delete("five").await.unwrap();
    assert!(matches!(
        client.read("five", None).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_stopped_holder_is_read_around() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "f", 5 << 20);
    client.put(&local, "f", &no_progress).await.unwrap();
    // The first holder of chunk 2 (and a holder of one other chunk).
    cluster.stop(holders("alice", "f", 2, 4)[0]).await;
    same(
        &read(&client, "f", None).await,
        &data,
        "whole, one server down",
    );
    same(&read(&client, "f", None).await, &data, "again");
}

fn flip_a_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// The file holding the copy of chunk `chunk` of alice's `name` on its
/// `which`th holder (0: the one read first).
fn copy(cluster: &Cluster, name: &str, chunk: u32, which: usize) -> std::path::PathBuf {
    let server = holders("alice", name, chunk, 4)[which];
    chunk_file(&cluster.data_dir(server), "alice", name, chunk).unwrap()
}

#[tokio::test]
async fn a_corrupt_copy_is_read_around_and_two_are_an_error() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();

    // Small chunks (1.25 MiB) are held back until they verify: a bad first
    // copy costs a fetch from the second.
    let (local, data) = random_file(work.path(), "small", 5 << 20);
    client.put(&local, "small", &no_progress).await.unwrap();
    flip_a_byte(&copy(&cluster, "small", 2, 0), 1000);
    same(&read(&client, "small", None).await, &data, "one bad copy");
    // Both copies of chunk 3 bad: an error, and what came before it right.
    flip_a_byte(&copy(&cluster, "small", 3, 0), 5000);
    flip_a_byte(&copy(&cluster, "small", 3, 1), 5000);
    let (_, stream) = client.read("small", None).await.unwrap();
    let (got, error, _) = drain(stream).await;
    assert!(
        matches!(&error, Some(Error::ChunkUnavailable { chunk: 3, .. })),
        "{error:?}"
    );
    same(&got, &data[..got.len()], "before the error");
    assert!(got.len() as u64 <= chunk_range(5 << 20, 4, 2).1);

    // Large chunks (6 MiB) go out block by block, each checked first: a
    // bad byte anywhere in the first copy, before the range or inside it,
    // costs a fetch of that block's rest from the second, and the read is
    // exact.
    let (local, data) = random_file(work.path(), "large", 24 << 20);
    client.put(&local, "large", &no_progress).await.unwrap();
    flip_a_byte(&copy(&cluster, "large", 1, 0), 1000);
    flip_a_byte(&copy(&cluster, "large", 2, 0), (3 << 20) + 5);
    for range in [1 << 20..6 << 20, 0..12 << 20, (6 << 20) + 7..(9 << 20) + 3] {
        let got = read(&client, "large", Some(range.clone())).await;
        same(
            &got,
            &data[range.start as usize..range.end as usize],
            "range",
        );
    }
    same(&read(&client, "large", None).await, &data, "whole");

    // Both copies bad in one block: an error, and every byte before it right.
    flip_a_byte(&copy(&cluster, "large", 3, 0), (2 << 20) + 9);
    flip_a_byte(&copy(&cluster, "large", 3, 1), (2 << 20) + 9);
    let (_, stream) = client.read("large", None).await.unwrap();
    let (got, error, _) = drain(stream).await;
    assert!(
        matches!(&error, Some(Error::ChunkUnavailable { chunk: 3, .. })),
        "{error:?}"
    );
    // (How much of chunk 3 came first depends on whether the scrub or a
    // heal found its copies bad before this read did.)
    same(&got, &data[..got.len()], "before the error");
    assert!(got.len() as u64 >= 12 << 20, "chunks 1 and 2 came");
}

#[tokio::test]
async fn a_stream_dropped_midway_stops_and_the_client_goes_on() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "f", 24 << 20);
    client.put(&local, "f", &no_progress).await.unwrap();
    for _ in 0..3 {
        let (_, mut stream) = client.read("f", None).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        same(&first, &data[..first.len()], "first piece");
        drop(stream);
    }
    same(&read(&client, "f", None).await, &data, "after drops");
}

/// The peak resident set (VmHWM, KiB) of this process so far.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 256 MiB streamed whole: the stream never holds more than its bound.
/// The bound asserted is the stream's own count (`peak_buffered`): this
/// process's peak resident set also counts the servers and every test
/// running beside this one, so it is only printed.
#[tokio::test]
async fn a_large_file_streams_in_bounded_memory() {
    const SIZE: usize = 256 << 20;
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("big");
    let mut want = blake3::Hasher::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&local).unwrap());
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            rng.fill_bytes(&mut block);
            want.update(&block);
            file.write_all(&block).unwrap();
        }
    }
    client.put(&local, "big", &no_progress).await.unwrap();

    let out = work.path().join("out");
    let started = std::time::Instant::now();
    client.get("big", &out, &no_progress).await.unwrap();
    let get_secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&out).unwrap();

    let rss_before = peak_rss_kib();
    let started = std::time::Instant::now();
    let (_, mut stream) = client.read("big", None).await.unwrap();
    let (mut got, mut len) = (blake3::Hasher::new(), 0usize);
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        len += piece.len();
        got.update(&piece);
    }
    let read_secs = started.elapsed().as_secs_f64();
    let peak = stream.peak_buffered();
    let mib = |secs: f64| SIZE as f64 / secs / (1 << 20) as f64;
    eprintln!(
        "256 MiB: get {:.0} MiB/s, read {:.0} MiB/s; stream held at most {} KiB; \
         peak RSS grew {} KiB while reading",
        mib(get_secs),
        mib(read_secs),
        peak >> 10,
        peak_rss_kib() - rss_before
    );
    assert_eq!(len, SIZE);
    assert_eq!(got.finalize(), want.finalize(), "the bytes differ");
    // MAX_BUFFERED is at most 16 MiB (checked where it is defined).
    assert!(peak > 0 && peak <= MAX_BUFFERED, "{peak} bytes held");
}

/// A 4 KiB range inside a 16 MiB chunk moves one block of data and the
/// chunk's block values, not the chunk: counted on a raw connection.
#[tokio::test]
async fn a_small_range_of_a_large_chunk_moves_one_block() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let size = 64u64 << 20;
    let (local, data) = random_file(work.path(), "big", size as usize);
    let receipt = client.put(&local, "big", &no_progress).await.unwrap();
    let chunk_start = chunk_range(size, 4, 2).0;
    let mut conn = raw_login(&cluster, holders("alice", "big", 2, 4)[1], "alice").await;
    let request = Request::GetRange {
        name: "big".into(),
        version: receipt.version,
        chunk: 2,
        offset: 5 << 20,
        len: 4096,
    };
    let (start, len, values) = match conn.call(&request).await.unwrap() {
        Response::Range { start, len, values } => (start, len, values),
        other => panic!("GetRange answered {other:?}"),
    };
    assert!(start <= 5 << 20 && start + len >= (5 << 20) + 4096);
    assert!(len <= BLOCK, "{len} bytes for a 4 KiB range");
    assert_eq!(
        values.len(),
        17,
        "16 MiB and the chunk's identity: 17 blocks"
    );
    let mut got = Vec::new();
    loop {
        match conn.recv::<Response>().await.unwrap().unwrap() {
            Frame::Data(block) => got.extend_from_slice(&block),
            Frame::Msg(Response::ChunkDone { .. }) => break,
            Frame::Msg(other) => panic!("inside a range: {other:?}"),
        }
    }
    assert_eq!(got.len() as u64, len);
    let at = (chunk_start + start) as usize;
    same(&got, &data[at..at + got.len()], "the blocks sent");

    // Out of the chunk: a one-line refusal, and the connection goes on.
    let beyond = Request::GetRange {
        name: "big".into(),
        version: receipt.version,
        chunk: 2,
        offset: 16 << 20,
        len: 1,
    };
    let e = conn.call(&beyond).await.unwrap_err().to_string();
    assert!(e.contains("not within it") && !e.contains('\n'), "{e}");
    assert!(matches!(
        conn.call(&request).await.unwrap(),
        Response::Range { .. }
    ));
}
