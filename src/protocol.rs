//! The wire protocol: frames, messages, and a connection that speaks them.
//!
//! # Frames
//!
//! A connection is a sequence of frames in each direction, over any
//! `AsyncRead + AsyncWrite` stream (plain TCP today; TLS wraps it unchanged):
//!
//! ```text
//! +----------------+--------+----------------------------+
//! | length: u32 BE | tag u8 | payload (length - 1 bytes) |
//! +----------------+--------+----------------------------+
//! tag 0: a control message, bincode (see `codec`): `Request` or `Response`
//! tag 1: a block of file data, raw bytes, at most `MAX_BLOCK` (1 MiB)
//! ```
//!
//! Frames longer than the receiver's limit (`MAX_FRAME`, or a smaller one a
//! server sets until a peer has logged in) close the connection before
//! anything is buffered. File data never passes through bincode, so a block is received
//! without a copy and a chunk of any size streams in bounded memory.
//!
//! # Conversation
//!
//! ```text
//! C: Hello{version}                S: Hello{version, server}
//! C: Login{user, password}         S: LoggedIn{token}        (or Resume{token})
//! C: PutChunk{name, version, chunk, n, size}  then Data blocks, then ChunkDone{checksum}
//!                                  S: Ok                     (stored and synced)
//! C: Commit{manifest}              S: Ok                     (new version visible)
//! C: GetChunk{name, version, chunk}
//!                                  S: Chunk{len}, Data blocks, ChunkDone{checksum}
//! C: ChunkPrefix{name, version, chunk, n, size}
//!                                  S: Prefix{len, checksum}  (kept of a cut upload)
//! C: PutChunkFrom{.., offset}  then Data blocks from offset, then ChunkDone{checksum}
//! C: GetChunkFrom{name, version, chunk, offset}
//!                                  S: Chunk{len}, Data blocks from offset, ChunkDone
//! C: GetRange{name, version, chunk, offset, len}
//!                                  S: Range{start, len, values}, Data blocks, ChunkDone
//! C: Stat{name} / List / Delete{name, version} / Status / Ring
//! ```
//!
//! Servers also send each other the Chord ring messages (`FindSuccessor`,
//! `GetPredecessor`, `GetSuccessorList`, `Notify`, `ExchangeView`) after a
//! peer login; see `chord`.
//!
//! Every request gets exactly one reply (`Error(WireError)` when it failed), so
//! a connection can be reused for the next request once a reply is complete.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};

use crate::accounts::{UserChange, UserRecord};
use crate::codec;
use crate::error::{Error, Result, WireError};
use crate::ring::{Id, Lookup, Node, View};
use crate::sharing::{Access, Share};

/// Bumped on any incompatible change to the messages below (3: digests
/// for anti-entropy, no-space errors, STATUS uploads and disk state; 4:
/// users as cluster state; 5: data shared by names, mv and cp; 6: quotas and usage;
/// 7: sharing; 8: resuming transfers, `ChunkPrefix`, `PutChunkFrom`,
/// `GetChunkFrom`; 9: S3 keys in user records, `UserChange::KeyAdd|KeyDel`,
/// `GatewayLogin`, S3 metadata in manifests, ETags in listings, `Denied`
/// and `OverQuota` errors; 10: small files in one round, `Fetch` and
/// `PutSmall`; 11: ranged chunk reads, `GetRange`; 12: a manifest's
/// `FileDigest`, SHA-256 or MD5, in place of its MD5; 13: many small
/// files in one round, `PutSmallMany` and `CommitPuts`).
pub const PROTOCOL_VERSION: u32 = 13;
/// A file of at most this many bytes moves in one message per server each
/// way (`Fetch`, `PutSmall`) instead of a stream per chunk: one round trip
/// and one commit per holder for its data. Well inside a frame.
pub const SMALL_FILE: u64 = 256 * 1024;
/// Largest block of file data in one frame.
pub const MAX_BLOCK: usize = 1 << 20;
/// Largest frame payload (tag included). Control messages must fit too: lists
/// are paged to stay well below it.
pub const MAX_FRAME: usize = MAX_BLOCK + 1024;

const TAG_MSG: u8 = 0;
const TAG_DATA: u8 = 1;

/// A file version: newer compares greater. `gen` comes from the writer's clock
/// (nanoseconds, but always above the version it replaces); `writer` is random
/// and breaks ties, so two writers never produce the same version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub gen: u64,
    pub writer: u64,
}

impl Version {
    /// A fresh version newer than `after` (if any).
    pub fn next(after: Option<Version>) -> Version {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let floor = after.map_or(0, |v| v.gen.saturating_add(1));
        Version {
            gen: now.max(floor),
            writer: rand::random(),
        }
    }
}

/// BLAKE3 of a chunk's bytes, keyed by everything that identifies the chunk,
/// so a valid chunk of another file, version or position never verifies.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum(pub [u8; 32]);

impl std::fmt::Debug for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::hex(&self.0[..8]))
    }
}

/// Where a chunk belongs; the input to its checksum besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkId<'a> {
    pub owner: &'a str,
    pub name: &'a str,
    pub version: Version,
    /// 1-based.
    pub chunk: u32,
    pub len: u64,
}

/// The BLAKE3 derive-key context of chunk checksums.
pub const CHUNK_CONTEXT: &str = "ringdfs 2026-11 chunk checksum v1";

impl ChunkId<'_> {
    /// A hasher primed with this chunk's identity; feed it the bytes.
    pub fn hasher(&self) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_derive_key(CHUNK_CONTEXT);
        for field in [self.owner.as_bytes(), self.name.as_bytes()] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field);
        }
        h.update(&self.version.gen.to_le_bytes());
        h.update(&self.version.writer.to_le_bytes());
        h.update(&self.chunk.to_le_bytes());
        h.update(&self.len.to_le_bytes());
        h
    }

    /// The checksum of `bytes` as this chunk.
    pub fn checksum(&self, bytes: &[u8]) -> Checksum {
        let mut hasher = self.hasher();
        hasher.update(bytes);
        checksum_of(&hasher)
    }

    /// How many bytes of identity [`ChunkId::hasher`] feeds before the data.
    pub fn prefix_len(&self) -> u64 {
        (8 + self.owner.len() + 8 + self.name.len() + 8 + 8 + 4 + 8) as u64
    }
}

pub fn checksum_of(hasher: &blake3::Hasher) -> Checksum {
    Checksum(*hasher.finalize().as_bytes())
}

/// A password on its way to a server: prints as `"***"` in debug output, so
/// no log line or panic message can show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// A login session's bearer token: 256 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token(pub [u8; 32]);

impl Token {
    /// The token as 64 hex digits (how the HTTP endpoints hand it out).
    pub fn to_hex(&self) -> String {
        crate::hex(&self.0)
    }

    /// A token from 64 hex digits; `None` if it is not that.
    pub fn from_hex(text: &str) -> Option<Token> {
        crate::peer::parse_hex32(text).map(Token)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// One server of the ring, as the ring is described to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
    /// The server's ring identifier in hex (see `ring::Id::parse_hex`);
    /// in a configuration, `None` means SHA-1 of the name.
    #[serde(default)]
    pub id: Option<String>,
}

/// A file's metadata: which version is current and how to check its chunks.
/// Every server holding a chunk of the file keeps it. A `deleted` manifest is a
/// tombstone: it outranks older versions so they do not come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    pub size: u64,
    /// How many chunks the file was cut into (the ring's size when written).
    pub chunks: u32,
    /// One per chunk, in chunk order.
    pub checksums: Vec<Checksum>,
    /// Seconds since the Unix epoch when the writer started the PUT.
    pub stored_at: u64,
    /// The whole file's digest, for receipts (see [`FileDigest`]).
    pub digest: FileDigest,
    pub deleted: bool,
    /// Where the file's data is, when not under this name and version: a
    /// file moved or copied shares the data a PUT wrote under another name
    /// (and keeps its placement: no chunk moves).
    pub data: Option<DataRef>,
    /// The local file's modification time and mode bits, when it was put
    /// with `put -p` (`get -p` gives them back).
    pub kept: Option<Kept>,
    /// What an S3 client said of the object beyond its bytes (content
    /// type, `x-amz-meta-*`, a multipart upload's ETag).
    pub meta: Option<ObjectMeta>,
}

/// A whole file's digest, for its receipts: the SHA-256 of what `dfs`, the
/// mount or the page store (as `sha256sum` prints it); the MD5 of what
/// came through S3 or the files API, which work it out as the body arrives
/// (an S3 ETag is a single-part object's MD5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileDigest {
    /// A tombstone or a folder.
    None,
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

/// As receipts end: `sha256 HEX` (or `md5 HEX`).
impl std::fmt::Display for FileDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.algorithm(), self.hex())
    }
}

impl FileDigest {
    /// Its hex, as `md5sum` or `sha256sum` prints it (zeros for none).
    pub fn hex(&self) -> String {
        match self {
            FileDigest::None => crate::hex(&[0u8; 16]),
            FileDigest::Md5(d) => crate::hex(d),
            FileDigest::Sha256(d) => crate::hex(d),
        }
    }

    /// Which digest it is: `md5`, `sha256` or `none`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            FileDigest::None => "none",
            FileDigest::Md5(_) => "md5",
            FileDigest::Sha256(_) => "sha256",
        }
    }
}

/// An S3 object's metadata, kept with its manifest (see `http::s3`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// `Content-Type`, as the client sent it.
    pub content_type: Option<String>,
    /// `x-amz-meta-NAME: VALUE` pairs, names in lower case without the prefix.
    pub user: Vec<(String, String)>,
    /// The ETag when it is not the hex MD5 of the bytes: a multipart
    /// upload's (`MD5(part MD5s)-N`, as S3 computes it).
    pub etag: Option<String>,
}

/// What `put -p` keeps of a local file, as sftp does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Modification time: seconds since the Unix epoch (negative before
    /// it), and nanoseconds.
    pub mtime: i64,
    pub mtime_nanos: u32,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
}

/// The name and version a file's data was written under, by a PUT. Chunks
/// are stored, placed, checksummed and fetched by this, never by the name a
/// file has now, so a rename or copy changes metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    pub name: String,
    pub version: Version,
}

impl Manifest {
    /// About how many bytes it takes encoded (at least as many), to fill
    /// a message without passing a frame's size.
    pub fn encoded_len(&self) -> usize {
        96 + self.name.len()
            + self.data.as_ref().map_or(0, |d| 24 + d.name.len())
            + 32 * self.checksums.len()
    }

    /// The name the file's data was written under (its placement's key).
    pub fn data_name(&self) -> &str {
        self.data.as_ref().map_or(&self.name, |d| &d.name)
    }

    /// The version the file's data was written at.
    pub fn data_version(&self) -> Version {
        self.data.as_ref().map_or(self.version, |d| d.version)
    }

    /// A reference to this file's data, for a manifest that shares it.
    pub fn data_ref(&self) -> DataRef {
        DataRef {
            name: self.data_name().to_string(),
            version: self.data_version(),
        }
    }

    /// Whether the manifest refers to data: a live file (not a tombstone,
    /// not a folder made with `mkdir`).
    pub fn has_data(&self) -> bool {
        !self.deleted && !self.name.ends_with('/')
    }

    /// The S3 ETag: a multipart upload's own, else the hex digest of the
    /// bytes (the MD5 of an object put through S3).
    pub fn etag(&self) -> String {
        match self.meta.as_ref().and_then(|m| m.etag.as_ref()) {
            Some(etag) => etag.clone(),
            None => self.digest.hex(),
        }
    }

    /// A tombstone for `name` at `version`.
    pub fn tombstone(name: String, version: Version) -> Manifest {
        Manifest {
            name,
            version,
            size: 0,
            chunks: 0,
            checksums: Vec::new(),
            stored_at: crate::unix_now(),
            digest: FileDigest::None,
            deleted: true,
            data: None,
            kept: None,
            meta: None,
        }
    }
}

/// One file in a server's answer to `List`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub version: Version,
    pub size: u64,
    pub chunks: u32,
    pub stored_at: u64,
    /// A tombstone: the file was deleted at `version`.
    pub deleted: bool,
    /// The chunks (1-based) of this version this server holds.
    pub held: Vec<u32>,
    /// Its S3 ETag (see [`Manifest::etag`]).
    pub etag: String,
}

/// One entry of a folder's listing (`ListDir`): a file (its whole name, and
/// a tombstone too, so a client merging several servers' answers sees a
/// delete) or a sub-folder (its whole path, without a trailing `/`) that
/// holds at least one live file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirEntry {
    File(FileEntry),
    Folder(String),
}

impl DirEntry {
    /// Where the entry sorts, and the cursor that resumes a listing after
    /// it: a file's name, a folder's path with a `/`, so that resuming
    /// skips everything inside it.
    pub fn cursor(&self) -> String {
        match self {
            DirEntry::File(f) => f.name.clone(),
            DirEntry::Folder(path) => format!("{path}/"),
        }
    }
}

/// One chunk of a small file, whole, in `PutSmall`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmallPart {
    pub chunk: u32,
    pub checksum: Checksum,
    pub data: Bytes,
}

/// One small file of a `PutSmallMany`: its parts this server holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmallFile {
    pub name: String,
    pub version: Version,
    pub chunks: u32,
    pub size: u64,
    pub parts: Vec<SmallPart>,
}

/// A copy a writer could not store: chunk `chunk` on server `server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub chunk: u32,
    pub server: String,
}

/// One file of a digest bucket: what a peer compares when the bucket's
/// digests differ (see `store::digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    pub owner: String,
    pub name: String,
    pub version: Version,
    pub deleted: bool,
}

/// What a server says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub ring: Vec<Member>,
    /// This server's ring identifier (hex), successor and predecessor (names)
    /// as its Chord state has them, and the members it sees as down.
    pub id: String,
    pub successor: Option<String>,
    pub predecessor: Option<String>,
    pub down: Vec<String>,
    /// Handing its data over before it leaves the ring.
    pub leaving: bool,
    /// Chunk copies and their bytes, all users together (of every version
    /// stored: current, replaced moments ago, or not yet committed).
    pub chunks: u64,
    pub bytes: u64,
    /// Files (live manifests) of all users.
    pub files: u64,
    /// Uploads with chunks here and no commit yet: under way, or abandoned
    /// and removed after `[store] upload_grace_secs`.
    pub uploads_pending: u64,
    pub heal: HealStatus,
    /// Its disk is full: it is up, but refuses new copies until space is freed.
    pub no_space: bool,
}

/// A user's usage as one server counts it (logical bytes: each file once,
/// not per copy), with the user's quota and the server's free space: the
/// answer to `Request::Usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The user's quota in bytes; `None`: none.
    pub quota: Option<u64>,
    /// Live files and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Uploads not committed yet, and their files' bytes.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Replaced versions kept for reads under way, and their bytes.
    pub kept: u64,
    pub kept_bytes: u64,
    /// Under the path asked: live files and their bytes, and whether the
    /// path is a file (else a folder).
    pub path_files: u64,
    pub path_bytes: u64,
    pub path_is_file: bool,
    /// The disk this server stores on (host and device: servers sharing a
    /// disk name the same one) and the bytes free on it for chunks.
    pub disk: String,
    pub free: u64,
}

impl UsageReport {
    /// Everything that counts against the quota.
    pub fn used(&self) -> u64 {
        self.bytes
            .saturating_add(self.upload_bytes)
            .saturating_add(self.kept_bytes)
    }
}

/// How this server's self-healing is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealStatus {
    /// Heal rounds finished since start.
    pub rounds: u64,
    /// Chunk copies fetched from partners since start.
    pub copied: u64,
    /// Chunks this server should hold but does not (after the last round).
    pub missing: u64,
    /// Files other servers lack copies of, as writers reported (hints).
    pub hints: u64,
    /// Seconds from start (or from the last time copies went missing) until
    /// nothing was missing; `None` while something still is.
    pub healed_in_secs: Option<f64>,
    /// Bytes of digests and entries received from peers to compare files,
    /// since start: an idle round adds the same whatever the files stored.
    pub sync_bytes: u64,
    /// Chunk copies the background scrub has re-read, and the bad ones it found.
    pub scrubbed: u64,
    pub scrub_bad: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Hello {
        version: u32,
    },
    Login {
        user: String,
        password: Secret,
    },
    Resume {
        token: Token,
    },
    Ring,
    Status,
    List,
    Stat {
        name: String,
    },
    /// Followed by data blocks totalling exactly the chunk's length, then `ChunkDone`.
    PutChunk {
        name: String,
        version: Version,
        chunk: u32,
        chunks: u32,
        size: u64,
    },
    ChunkDone {
        checksum: Checksum,
    },
    /// Makes `manifest` current; `missing` lists copies the writer could not
    /// store (their servers were down): hints for healing.
    Commit {
        manifest: Manifest,
        missing: Vec<Hint>,
    },
    /// A chunk of a file's data: `name` and `version` are the data's
    /// (`Manifest::data_name`, `data_version`), as for `Verify` and
    /// `PeerGetChunk`.
    GetChunk {
        name: String,
        version: Version,
        chunk: u32,
    },
    Delete {
        name: String,
        version: Version,
    },
    /// Reads one stored chunk and checks it, without sending it.
    Verify {
        name: String,
        version: Version,
        chunk: u32,
    },
    /// Server to server: `proof` = BLAKE3 keyed by the cluster key over the
    /// Hello challenge and `name` (see `peer`).
    PeerLogin {
        name: String,
        proof: [u8; 32],
    },
    /// A server's HTTP endpoint (S3, files API) acting for `user`, whom it
    /// authenticated itself: mutual TLS with `server`'s certificate, and
    /// `proof` = `ClusterKey::proof_for(challenge, server, user)`. The
    /// connection is then `user`'s, as after `Login`.
    GatewayLogin {
        server: String,
        user: String,
        proof: [u8; 32],
    },
    /// Server to server: the root digest of its files, and its view's digest.
    SyncRoot,
    PeerStat {
        owner: String,
        name: String,
    },
    PeerGetChunk {
        owner: String,
        name: String,
        version: Version,
        chunk: u32,
    },
    /// Server to server: "you may be missing copies; heal now".
    HealNow,
    /// Ring messages, server to server (see `chord`). One step of
    /// `find_successor(id)`: the answer or a closer node to ask.
    FindSuccessor {
        id: Id,
    },
    GetPredecessor,
    /// The successor list, with the sender's membership view.
    GetSuccessorList,
    /// "I might be your predecessor"; carries the sender's view.
    Notify {
        node: Node,
        view: View,
    },
    /// Merge views both ways: the reply is the receiver's merged view.
    ExchangeView {
        view: View,
    },
    /// From the server's own administrator (`dfs-server leave`, logged in
    /// as the server itself): hand the data over, leave the ring, stop.
    Leave,
    /// From a writer whose PUT failed or was cancelled (Ctrl-C) before it
    /// sent `Commit`: drop the chunks of `version` of `name` stored so far,
    /// which nothing would ever read or remove. A version that is current
    /// here, or older than the current one, is left alone. Last in the enum,
    /// so the other messages keep their encoding.
    Abort {
        name: String,
        version: Version,
    },
    /// Server to server: the 256 group digests (`group` None) or the 256
    /// bucket digests of one group.
    SyncDigests {
        group: Option<u8>,
    },
    /// Server to server: every file of one digest bucket.
    SyncEntries {
        bucket: u16,
    },
    /// From the server's own administrator (`dfs-server user`, logged in as
    /// the server itself): add a user, change a password, remove a user,
    /// on the whole cluster (see `accounts`).
    ChangeUser(UserChange),
    /// Server to server (or its administrator): every user record it has.
    Users,
    /// Server to server: user records changed on the sender; keep those
    /// that outrank yours.
    MergeUsers(Vec<UserRecord>),
    /// One page of one folder (`""`: the top), one level deep, in name
    /// order, starting after the cursor `after` (see `DirEntry::cursor`).
    ListDir {
        folder: String,
        after: Option<String>,
    },
    /// `mkdir`: an empty folder (sent to every server).
    MakeFolder {
        path: String,
    },
    /// `rmdir`: removes an empty folder made with `mkdir`.
    RemoveFolder {
        path: String,
    },
    /// Asked before a PUT sends any data: would a file of `size` bytes fit
    /// the user's quota? `Ok`, or an error whose message is the one-line
    /// refusal (`quota: 9.8 of 10 GiB used; this file needs 512 MiB`).
    CheckQuota {
        size: u64,
    },
    /// `du`/`df`: the user's usage and quota, the files and bytes under
    /// `path` (a file or a folder; `""`: everything), and this server's
    /// free space.
    Usage {
        path: String,
    },
    /// `mv` and `cp`: commits every manifest in one transaction, or none.
    /// A new name's manifest shares existing data (`Manifest::data`); a
    /// move also carries a tombstone for each old name.
    CommitMany {
        manifests: Vec<Manifest>,
    },
    /// The manifests (tombstones and folder marks too) of `path` and of
    /// everything under folder `path`, after `after`, in name order
    /// (answered with `Manifests`): what `mv` and `cp` take.
    Manifests {
        path: String,
        after: Option<String>,
    },
    /// Server to server: which chunks of the data written as `name` at
    /// `version` it holds (answered with `Held`).
    PeerHeld {
        owner: String,
        name: String,
        version: Version,
    },
    /// `share`: lets `with` reach `path` (a file or a folder of the
    /// sender's), or with `access` `None` (`unshare`) no longer. Answered
    /// with `Ok` once every member that answers has it.
    Share {
        path: String,
        with: String,
        access: Option<Access>,
    },
    /// `shares`: what the sender shares and what is shared with them
    /// (answered with `Shares`).
    Shares,
    /// `request` on `owner`'s files, within what `owner` shares with the
    /// sender (see `sharing::authorize`; `paths`: the names it acts through
    /// where it does not name them itself).
    Shared {
        owner: String,
        paths: Vec<String>,
        request: Box<Request>,
    },
    /// `put -c`: how much of this chunk of an uncommitted upload an
    /// interrupted `PutChunk` left on the server, and the checksum of those
    /// bytes alone (the chunk's `ChunkId::hasher` fed only them, read again
    /// from disk). Answered with `Prefix`; `len` 0 when nothing is kept.
    ChunkPrefix {
        name: String,
        version: Version,
        chunk: u32,
        chunks: u32,
        size: u64,
    },
    /// `PutChunk` going on after the first `offset` bytes the server kept
    /// (as `ChunkPrefix` reported them): followed by the data blocks from
    /// `offset` to the chunk's end, then `ChunkDone` with the whole
    /// chunk's checksum. Refused when fewer bytes are kept.
    PutChunkFrom {
        name: String,
        version: Version,
        chunk: u32,
        chunks: u32,
        size: u64,
        offset: u64,
    },
    /// `GetChunk` from byte `offset` on: `Chunk{len}` (the whole chunk's
    /// length), the data blocks from `offset`, `ChunkDone`. The server still
    /// reads and checks the whole chunk.
    GetChunkFrom {
        name: String,
        version: Version,
        chunk: u32,
        offset: u64,
    },
    /// Bytes `offset..offset + len` of a chunk, read and checked without
    /// the rest (see `crate::blocks`): `Range{start, len, values}`, the data
    /// of the whole blocks covering them (`start..start + len`), then
    /// `ChunkDone`. A chunk of one block comes whole, with no values.
    GetRange {
        name: String,
        version: Version,
        chunk: u32,
        offset: u64,
        len: u64,
    },
    /// `Stat`, and with it the data of those of `chunks` of that version
    /// this server holds, when the file has at most [`SMALL_FILE`] bytes: a
    /// small file's GET in one round (answered with `FileData`). The reader
    /// names, for each server, the chunks it would read from it first.
    Fetch {
        name: String,
        chunks: Vec<u32>,
    },
    /// A small file's chunks that this server holds (at most
    /// [`SMALL_FILE`] bytes in all), each whole with its checksum, stored
    /// in one commit (answered with `Stored`). Then `Commit`, as after
    /// `PutChunk`.
    PutSmall {
        name: String,
        version: Version,
        chunks: u32,
        size: u64,
        parts: Vec<SmallPart>,
    },
    /// `PutSmall` of several files (`put -r`, wildcards) in one commit, all
    /// or none (answered with `StoredMany`, in order). Then `CommitPuts`.
    PutSmallMany {
        files: Vec<SmallFile>,
    },
    /// `Commit` of several new files' manifests (none sharing data, every
    /// copy stored: no hints) in one commit, all or none.
    CommitPuts {
        manifests: Vec<Manifest>,
    },
    /// From the server's own administrator (`dfs-server verify` while the
    /// server runs and has its store to itself): read and check every copy
    /// this server holds, changing nothing (answered with `Verified`).
    VerifyStore,
}

impl Request {
    /// Whether data blocks follow the request (an upload of a chunk).
    pub fn streams(&self) -> bool {
        matches!(
            self,
            Request::PutChunk { .. } | Request::PutChunkFrom { .. }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// `challenge` is random per connection; a peer server proves it holds
    /// the cluster key by answering it in `PeerLogin`.
    Hello {
        version: u32,
        server: String,
        challenge: [u8; 32],
    },
    LoggedIn {
        token: Token,
    },
    Ok,
    /// The members in ring order (by identifier from zero), those the
    /// answering server sees as down, and the copies `k` of every chunk.
    Ring {
        members: Vec<Member>,
        down: Vec<String>,
        copies: u32,
    },
    Status(ServerStatus),
    /// One page of a listing; `more` says another page follows.
    Files {
        files: Vec<FileEntry>,
        more: bool,
    },
    /// The answer to `Stat`: this server's manifest of the file (if any) and
    /// which chunks of that version it holds.
    File {
        manifest: Option<Manifest>,
        held: Vec<u32>,
    },
    Manifests {
        manifests: Vec<Manifest>,
        more: bool,
    },
    /// The chunks of one file's data a server holds.
    Held {
        chunks: Vec<u32>,
    },
    /// Followed by `len` bytes of data blocks, then `ChunkDone`.
    Chunk {
        len: u64,
    },
    /// Followed by `len` bytes of data blocks (the chunk's bytes from
    /// `start`), then `ChunkDone`: a `GetRange`'s answer, with the chunk's
    /// block values, which merge into its checksum.
    Range {
        start: u64,
        len: u64,
        values: Vec<[u8; 32]>,
    },
    ChunkDone {
        checksum: Checksum,
    },
    /// The digest of the sender's live files (see `store::digest`).
    SyncRoot {
        root: [u8; 16],
        /// Chunks the sender lacks (see `store::Stats::missing`).
        missing: u64,
        /// The sender's membership digest (`View::digest`): servers move
        /// copies away only while they all agree on the ring.
        view: u64,
        /// The digest of the sender's user records (`Accounts::digest`).
        users: [u8; 16],
    },
    Lookup(Lookup),
    Predecessor(Option<Node>),
    Successors {
        nodes: Vec<Node>,
        view: View,
    },
    View(View),
    Error(WireError),
    Digests(Vec<[u8; 16]>),
    Entries(Vec<SyncEntry>),
    /// User records: the answer to `Users`, or the record `ChangeUser` made.
    Users(Vec<UserRecord>),
    /// One page of a folder; `more` says there is more after its last entry.
    Dir {
        entries: Vec<DirEntry>,
        more: bool,
    },
    /// The answer to `Usage`.
    Usage(UsageReport),
    /// The answer to `Shares`.
    Shares(Vec<Share>),
    /// The answer to `ChunkPrefix`: bytes kept and their checksum.
    Prefix {
        len: u64,
        checksum: Checksum,
    },
    /// The answer to `Fetch`: `File`'s fields, and the bytes of the chunks
    /// asked for that are held here (read and verified) when the file is
    /// small; a chunk that could not be read is left out.
    FileData {
        manifest: Option<Manifest>,
        held: Vec<u32>,
        data: Vec<(u32, Bytes)>,
    },
    /// The answer to `PutSmall`: the parts are durable (or were older than
    /// what is current, and dropped), and the version of the file this
    /// server had as current when they came, so the writer can tell.
    Stored {
        current: Option<Version>,
    },
    /// The answer to `PutSmallMany`: `Stored`'s `current` for each file.
    StoredMany {
        current: Vec<Option<Version>>,
    },
    /// The answer to `Verify`: copies checked, and a line for each bad one.
    Verified {
        checked: u64,
        bad: Vec<String>,
    },
}

/// What arrives on a connection: a control message or a block of data.
#[derive(Debug)]
pub enum Frame<M> {
    Msg(M),
    Data(Bytes),
}

/// What a server receives before login, where a frame over its limit but
/// within [`MAX_FRAME`] is read and dropped rather than fatal (see
/// [`Connection::set_skip_oversized`]).
#[derive(Debug)]
pub enum Received<M> {
    Frame(Frame<M>),
    /// A frame of `len` bytes (tag included) over the limit, dropped as it
    /// arrived: a control message (else a data block), of which `head` holds
    /// the first bytes (at most [`OVERSIZED_HEAD`]).
    Oversized {
        len: usize,
        message: bool,
        head: Bytes,
    },
}

/// How much of an oversized frame is kept: enough for a message's variant
/// and a user name.
pub const OVERSIZED_HEAD: usize = 128;
/// The head of an oversized frame as the codec keeps it: tag included.
const OVERSIZED_KEPT: usize = OVERSIZED_HEAD + 1;

/// A frame before its message is decoded.
#[derive(Debug)]
enum RawFrame {
    Msg(Bytes),
    Data(Bytes),
    Oversized { len: usize, head: Bytes },
}

/// `LengthDelimitedCodec` plus the one-byte tag.
struct FrameCodec {
    inner: LengthDelimitedCodec,
    /// Part of a frame has arrived (the inner codec consumes a frame's length
    /// prefix before its body, so the read buffer alone does not say).
    partial: bool,
    /// The inner codec has consumed a length prefix and waits for its body.
    in_body: bool,
    /// The inner codec's limit.
    max: usize,
    /// Frames over `max` but at most this long are dropped as they arrive
    /// (keeping their head) instead of failing; 0: off.
    skip_up_to: usize,
    skipping: Option<Skipping>,
}

/// An oversized frame being dropped.
struct Skipping {
    len: usize,
    remaining: usize,
    head: BytesMut,
}

impl Decoder for FrameCodec {
    type Item = RawFrame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<RawFrame>> {
        if !self.in_body && self.skipping.is_none() && self.skip_up_to > 0 && src.len() >= 4 {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if len > self.max && len <= self.skip_up_to {
                src.advance(4);
                self.skipping = Some(Skipping {
                    len,
                    remaining: len,
                    head: BytesMut::new(),
                });
            }
        }
        if let Some(skip) = &mut self.skipping {
            let take = src.len().min(skip.remaining);
            let keep = take.min(OVERSIZED_KEPT.saturating_sub(skip.head.len()));
            skip.head.extend_from_slice(&src[..keep]);
            src.advance(take);
            skip.remaining -= take;
            if skip.remaining > 0 {
                self.partial = true;
                return Ok(None);
            }
            let skip = self.skipping.take().expect("skipping");
            self.partial = false;
            return Ok(Some(RawFrame::Oversized {
                len: skip.len,
                head: skip.head.freeze(),
            }));
        }
        let had_input = !src.is_empty();
        let had_prefix = src.len() >= 4;
        let Some(mut frame) = self.inner.decode(src)? else {
            self.partial |= had_input;
            self.in_body |= had_prefix;
            return Ok(None);
        };
        self.partial = false;
        self.in_body = false;
        if frame.is_empty() {
            return Err(invalid_data("empty frame"));
        }
        let tag = frame.get_u8();
        match tag {
            TAG_MSG => Ok(Some(RawFrame::Msg(frame.freeze()))),
            TAG_DATA => Ok(Some(RawFrame::Data(frame.freeze()))),
            other => Err(invalid_data(&format!("unknown frame tag {other}"))),
        }
    }
}

impl Encoder<RawFrame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: RawFrame, dst: &mut BytesMut) -> std::io::Result<()> {
        let (tag, body) = match item {
            RawFrame::Msg(b) => (TAG_MSG, b),
            RawFrame::Data(b) => (TAG_DATA, b),
            RawFrame::Oversized { .. } => {
                return Err(invalid_data("an oversized frame is not sent"))
            }
        };
        let len = body.len() + 1;
        if len > MAX_FRAME {
            return Err(invalid_data("frame too large to send"));
        }
        dst.reserve(4 + len);
        dst.put_u32(len as u32);
        dst.put_u8(tag);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

/// `sending` (to `peer`) within `limit`, if there is one.
async fn within<T>(
    limit: Option<Duration>,
    peer: &str,
    sending: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match limit {
        None => sending.await,
        Some(limit) => tokio::time::timeout(limit, sending)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{peer} to take what was sent"),
                secs: limit.as_secs(),
            })?,
    }
}

fn invalid_data(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// A framed connection to a peer named `peer` (for error messages). Receives
/// time out after `timeout` of silence, when set; a frame that has started to
/// arrive must finish within `frame_timeout`, when set, however slowly its
/// bytes trickle in. A send fails after `send_timeout`, when set, without the
/// peer taking what is sent (a hung peer stops reading).
pub struct Connection<S> {
    framed: Framed<S, FrameCodec>,
    peer: String,
    timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, peer: impl Into<String>) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(MAX_FRAME)
            .new_codec();
        let codec = FrameCodec {
            inner,
            partial: false,
            in_body: false,
            max: MAX_FRAME,
            skip_up_to: 0,
            skipping: None,
        };
        Connection {
            framed: Framed::with_capacity(stream, codec, 64 * 1024),
            peer: peer.into(),
            timeout: None,
            frame_timeout: None,
            send_timeout: None,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.framed.get_ref()
    }

    /// Bytes received but not yet returned as a frame.
    pub fn has_buffered_input(&self) -> bool {
        !self.framed.read_buffer().is_empty()
    }

    /// Sets how long a receive waits for the next frame before failing.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Sets how long a frame may take to arrive once its first byte has.
    pub fn set_frame_timeout(&mut self, timeout: Option<Duration>) {
        self.frame_timeout = timeout;
    }

    /// Sets how long a send may wait for the peer to take it.
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    /// Sets the largest frame accepted from the peer (never above `MAX_FRAME`);
    /// a longer length prefix closes the connection before anything is buffered.
    pub fn set_max_frame(&mut self, len: usize) {
        let codec = self.framed.codec_mut();
        codec.max = len.min(MAX_FRAME);
        codec.inner.set_max_frame_length(codec.max);
    }

    /// From now on, a frame over the limit set by [`Connection::set_max_frame`]
    /// but at most `up_to` bytes is read and dropped as it arrives, and
    /// [`Connection::recv_or_oversized`] reports it, so the peer can be
    /// answered instead of reset. 0 turns this off.
    pub fn set_skip_oversized(&mut self, up_to: usize) {
        self.framed.codec_mut().skip_up_to = up_to.min(MAX_FRAME);
    }

    pub async fn send<M: Serialize>(&mut self, msg: &M) -> Result<()> {
        let body = Bytes::from(codec::encode(msg)?);
        self.send_raw(RawFrame::Msg(body)).await
    }

    /// Sends a block of file data. The block goes straight to the stream
    /// (header and block in one vectored write) rather than through the
    /// codec's buffer, which would copy every byte once more.
    pub async fn send_data(&mut self, data: Bytes) -> Result<()> {
        debug_assert!(data.len() <= MAX_BLOCK);
        if data.len() + 1 > MAX_FRAME {
            return Err(Error::io(
                format!("sending to {}", self.peer),
                invalid_data("frame too large to send"),
            ));
        }
        let peer = self.peer.clone();
        let limit = self.send_timeout;
        let framed = &mut self.framed;
        let sending = async move {
            // Whatever the codec holds goes first, so frames stay in order.
            SinkExt::<RawFrame>::flush(framed).await?;
            let mut header = [0u8; 5];
            header[..4].copy_from_slice(&(data.len() as u32 + 1).to_be_bytes());
            header[4] = TAG_DATA;
            let mut frame = Buf::chain(&header[..], data);
            let io = framed.get_mut();
            io.write_all_buf(&mut frame).await?;
            io.flush().await
        };
        within(limit, &peer, async {
            sending
                .await
                .map_err(|e| Error::io(format!("sending to {peer}"), e))
        })
        .await
    }

    async fn send_raw(&mut self, frame: RawFrame) -> Result<()> {
        let peer = self.peer.clone();
        let limit = self.send_timeout;
        let framed = &mut self.framed;
        within(limit, &peer, async {
            framed
                .send(frame)
                .await
                .map_err(|e| Error::io(format!("sending to {peer}"), e))
        })
        .await
    }

    /// The next frame, or `None` when the peer closed the connection cleanly.
    pub async fn recv<M: DeserializeOwned>(&mut self) -> Result<Option<Frame<M>>> {
        match self.recv_or_oversized().await? {
            None => Ok(None),
            Some(Received::Frame(frame)) => Ok(Some(frame)),
            Some(Received::Oversized { len, .. }) => Err(Error::Protocol(format!(
                "{} sent a frame of {len} bytes, over the limit",
                self.peer
            ))),
        }
    }

    /// The next frame, or an oversized one dropped (see
    /// [`Connection::set_skip_oversized`]), or `None` when the peer closed
    /// the connection cleanly.
    pub async fn recv_or_oversized<M: DeserializeOwned>(&mut self) -> Result<Option<Received<M>>> {
        let next = match (self.timeout, self.frame_timeout) {
            (None, None) => self.framed.next().await,
            (idle, frame) => self.next_within(idle, frame).await?,
        };
        match next {
            None => Ok(None),
            // A TLS peer that hangs up between frames without close_notify
            // has simply gone; mid-frame it is an error like any other.
            Some(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    && !self.framed.codec().partial
                    && !self.has_buffered_input() =>
            {
                Ok(None)
            }
            Some(Err(e)) => Err(Error::io(format!("receiving from {}", self.peer), e)),
            Some(Ok(RawFrame::Data(b))) => Ok(Some(Received::Frame(Frame::Data(b)))),
            Some(Ok(RawFrame::Msg(b))) => Ok(Some(Received::Frame(Frame::Msg(codec::decode(&b)?)))),
            Some(Ok(RawFrame::Oversized { len, mut head })) => {
                let message = !head.is_empty() && head.get_u8() == TAG_MSG;
                Ok(Some(Received::Oversized { len, message, head }))
            }
        }
    }

    /// The next raw frame, failing after `idle` without a frame starting, or
    /// `frame` after one started without it finishing.
    async fn next_within(
        &mut self,
        idle: Option<Duration>,
        frame: Option<Duration>,
    ) -> Result<Option<std::io::Result<RawFrame>>> {
        use std::future::Future;
        use std::task::Poll;
        let mut idle_deadline = idle.map(|t| Box::pin(tokio::time::sleep(t)));
        let mut frame_deadline = None;
        let framed = &mut self.framed;
        let waited = std::future::poll_fn(|cx| {
            if let Poll::Ready(item) = framed.poll_next_unpin(cx) {
                return Poll::Ready(Ok(item));
            }
            let started = framed.codec().partial || !framed.read_buffer().is_empty();
            if let (true, Some(limit)) = (started, frame) {
                // A frame under way must also finish within its own deadline.
                let deadline =
                    frame_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(limit));
                }
            }
            // The other deadline holds even mid-frame: before login it is what
            // is left of the login deadline, and a stranger who sends part of
            // a length prefix must not keep the connection for a whole frame
            // timeout (regression: a_partial_prefix_before_login_...).
            if let (Some(deadline), Some(limit)) = (&mut idle_deadline, idle) {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(limit));
                }
            }
            Poll::Pending
        })
        .await;
        waited.map_err(|limit| Error::Timeout {
            what: self.peer.clone(),
            secs: limit.as_secs(),
        })
    }

    /// The next frame, which must be a message; end of stream is an error.
    pub async fn recv_msg<M: DeserializeOwned>(&mut self) -> Result<M> {
        match self.recv().await? {
            Some(Frame::Msg(m)) => Ok(m),
            Some(Frame::Data(_)) => Err(Error::Protocol(format!(
                "{} sent data where a message was expected",
                self.peer
            ))),
            None => Err(Error::Unavailable {
                server: self.peer.clone(),
                reason: "connection closed".into(),
            }),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Sends a request and waits for its reply, turning an `Error` reply into `Err`.
    pub async fn call(&mut self, req: &Request) -> Result<Response> {
        self.send(req).await?;
        self.reply().await
    }

    /// The reply to a request already sent.
    pub async fn reply(&mut self) -> Result<Response> {
        match self.recv_msg::<Response>().await? {
            Response::Error(e) => Err(e.into_error(&self.peer)),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_request_never_shows_its_password() {
        let login = Request::Login {
            user: "alice".into(),
            password: "wonderland".into(),
        };
        let shown = format!("{login:?} {login:#?}");
        assert!(!shown.contains("wonderland"), "{shown}");
        assert!(shown.contains("alice"));
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = Connection::new(a, "a");
        let mut b = Connection::new(b, "b");
        let req = Request::Stat { name: "x".into() };
        let send = async {
            a.send(&req).await.unwrap();
            a.send_data(Bytes::from(vec![7u8; MAX_BLOCK]))
                .await
                .unwrap();
        };
        let recv = async {
            let m: Frame<Request> = b.recv().await.unwrap().unwrap();
            assert!(matches!(m, Frame::Msg(Request::Stat { name }) if name == "x"));
            match b.recv::<Request>().await.unwrap().unwrap() {
                Frame::Data(d) => assert_eq!(d.len(), MAX_BLOCK),
                Frame::Msg(_) => panic!("expected data"),
            }
        };
        tokio::join!(send, recv);

        // A 4 GiB length prefix is refused without buffering it.
        use tokio::io::AsyncWriteExt;
        let (mut raw, other) = tokio::io::duplex(1 << 16);
        let mut other = Connection::new(other, "raw");
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(other.recv::<Request>().await.is_err());
    }
}
