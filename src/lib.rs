//! ringdfs: a small distributed file store.
//!
//! # The parts
//!
//! | module | owns |
//! |---|---|
//! | [`placement`] | the chunk-pair table (SPEC §5) and how a file is cut into chunks; pure |
//! | [`ring`] | Chord identifiers, intervals, routing, stabilization and membership; pure |
//! | [`names`] | which file and user names are acceptable; pure |
//! | [`protocol`] | frames, messages, and a `Connection` over any async stream |
//! | [`blocks`] | block values: checking a range of a chunk against its checksum without reading all of it; pure |
//! | [`codec`] | every bincode call, with a decode size limit |
//! | [`store`] | a server's chunks and manifests on disk, written atomically |
//! | [`auth`] | argon2id password checks, login back-off, sessions |
//! | [`accounts`] | users as cluster state: records on every server, last writer wins |
//! | [`quota`] | quotas: sizes as typed, the refusal line, the servers' upload gate |
//! | [`tls`] | the cluster's certificate authority and certificates; TLS 1.3 configurations |
//! | [`server`] | the chunk server: listener, connections, requests |
//! | [`chord`] | the ring run over the network: stabilization, failure detection, joins, the membership view |
//! | [`standing`] | whether a server that answers is in one ring with the others (`alone`, `apart`): pure |
//! | [`client`] | the client library: login, put, get, list, delete, status; `read`, a verified stream of a byte range |
//! | [`http`] | a server's HTTPS endpoints: S3 (on s3s), the files API for curl, `/health`; a gateway acting as the user through [`client`] |
//! | [`config`] | the server and client configuration files |
//! | [`memory`] | glibc allocator settings that keep the resident set small |
//! | [`cli`] | the `dfs` command language: parse, run, render (text or JSON) |
//! | [`glob`] | wildcards as sftp matches them; command lines split with quoting remembered |
//! | [`bulk`] | many files at once: `put -r`/`get -r`, patterns; parallel, one progress display |
//! | [`repl`] | the interactive prompt: editing, history, completion, progress |
//!
//! # One request's path: `dfs get report.pdf`
//!
//! `cli` parses the command and calls [`client::Client::get`]. The client asks
//! every server for the file's manifest (`Request::Fetch`; for a file of at
//! most `SMALL_FILE` bytes the answers carry its chunks too, and the GET is
//! done), takes the newest,
//! and computes with [`placement::Placement`] which two servers hold each chunk.
//! One task per chunk sends `Request::GetChunk` to the chunk's first holder over
//! a [`protocol::Connection`]; on the server, [`server`] checks the session's
//! user, opens the chunk with [`store::Store::open_chunk`] (the user's name is
//! part of the on-disk path, the request's name only through a digest), and
//! streams it back in 1 MiB blocks while verifying its checksum. The client
//! writes each chunk at its offset into a temp file, checks the checksum
//! against the manifest, and renames the file into place when every chunk has
//! arrived. A failed holder costs one retry at the other holder.

pub mod accounts;
pub mod atomic;
pub mod auth;
pub mod blocks;
pub mod bulk;
pub mod chord;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod direct;
pub mod error;
pub mod glob;
pub mod heal;
pub mod http;
pub mod memory;
pub mod mount;
pub mod names;
pub mod peer;
pub mod placement;
pub mod protocol;
pub mod quota;
pub mod repl;
pub mod ring;
pub mod server;
pub mod sharing;
pub mod standing;
pub mod store;
pub mod tls;
pub mod transfer;

pub use error::{Error, Result};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
