//! The library's one error type, and the small form of it that crosses the wire.
//!
//! Variants are named by what the caller does next: `NotFound` → tell the user,
//! `Unavailable` → try the other copy, `Unauthorized` → log in again, and so on.
//! A server answers a failed request with a [`WireError`]; the client turns it
//! back into an [`Error`] with [`WireError::into_error`], so callers never see
//! the difference between a local and a remote failure.

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file: {}", shown(.name))]
    NotFound { name: String },

    #[error("login failed: unknown user or wrong password")]
    Unauthorized,

    #[error("not logged in")]
    NotLoggedIn,

    #[error("{server} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },

    /// Both holders of a chunk failed; `chunk` is 1-based as users see it.
    #[error("chunk {chunk} of {} is unavailable: {reason}", shown(.name))]
    ChunkUnavailable {
        name: String,
        chunk: u32,
        reason: String,
    },

    #[error("chunk {chunk} is corrupt: {reason}")]
    Corrupt { chunk: u32, reason: String },

    #[error("invalid name {:?}: {reason}", shown(.name))]
    InvalidName { name: String, reason: &'static str },

    #[error("bad request: {0}")]
    BadRequest(String),

    #[error("protocol error: {0}")]
    Protocol(String),

    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },

    #[error("configuration: {0}")]
    Config(String),

    /// A store its server (another process) has open: the path.
    #[error(
        "{0} is open by its running server (stop it first; `dfs-server verify` asks the server)"
    )]
    InUse(String),

    /// Certificates: missing, unreadable, or not usable for TLS.
    #[error("TLS: {0}")]
    Tls(String),

    /// The cause is part of the message (not `source()`), so a chain printer
    /// such as anyhow's `{:#}` does not repeat it.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },

    /// A failure a server reported for one request.
    #[error("{server}: {}", error.message)]
    Remote { server: String, error: WireError },

    #[error("server error: {0}")]
    Internal(String),

    /// A server's disk is full (or its quota spent): it is up, but stores
    /// nothing new until space is freed.
    #[error("no space left")]
    NoSpace,

    /// A request that cannot be done as asked (adding a user who exists);
    /// the message says why.
    #[error("{0}")]
    Refused(String),

    /// A share does not allow it (not shared with the user, or read-only);
    /// the message says which.
    #[error("{0}")]
    Denied(String),

    /// The owner's quota has no room for it; the message says how much.
    #[error("{0}")]
    OverQuota(String),

    /// A byte range outside a file of `size` bytes (HTTP 416, S3 InvalidRange).
    #[error("the range asked for is not within the file's {size} bytes")]
    RangeNotSatisfiable { size: u64 },

    /// The user interrupted the operation (Ctrl-C).
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause: source,
        }
    }

    /// Like [`Error::io`], for writes to a server's own storage: a full
    /// disk (or a spent quota) is [`Error::NoSpace`], which callers act on.
    pub fn storage(context: impl Into<String>, source: std::io::Error) -> Self {
        if is_no_space(&source) {
            Error::NoSpace
        } else {
            Error::io(context, source)
        }
    }

    /// The wire form of this error, as a server sends it.
    /// The kind a server would report this error as.
    pub fn kind(&self) -> ErrorKind {
        self.to_wire().kind
    }

    pub fn to_wire(&self) -> WireError {
        let mut message = match self {
            // The context names the server's own files: for its log (see
            // `server`), not for the client.
            Error::Io { cause, .. } => format!("storage error: {cause}"),
            e => e.to_string(),
        };
        if message.len() > MAX_WIRE_MESSAGE {
            let mut end = MAX_WIRE_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let kind = match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Unauthorized => ErrorKind::Unauthorized,
            Error::NotLoggedIn => ErrorKind::NotLoggedIn,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::BadRequest(_)
            | Error::Protocol(_)
            | Error::Refused(_)
            | Error::RangeNotSatisfiable { .. } => ErrorKind::BadRequest,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::NoSpace => ErrorKind::NoSpace,
            Error::Denied(_) => ErrorKind::Denied,
            Error::OverQuota(_) => ErrorKind::OverQuota,
            Error::Remote { error, .. } => error.kind,
            _ => ErrorKind::Internal,
        };
        WireError { kind, message }
    }
}

/// Characters of a name from a request that an error message shows; a
/// longer name is cut, with an ellipsis.
pub const SHOWN_NAME_CHARS: usize = 64;

/// Bytes of an error message a server sends at most (the rest is cut): an
/// answer must never grow with the request it answers.
pub const MAX_WIRE_MESSAGE: usize = 1024;

/// `name` as an error message shows it: whole if short, else its first
/// [`SHOWN_NAME_CHARS`] characters and an ellipsis. Errors never echo
/// unbounded input (a request can carry a name of nearly a megabyte).
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(SHOWN_NAME_CHARS) {
        None => std::borrow::Cow::Borrowed(name),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &name[..end])),
    }
}

/// What a server reports when a request fails. Only the kind is acted on; the
/// message is for people (it is already the one-line `Display` of the error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    Unauthorized,
    NotLoggedIn,
    InvalidName,
    BadRequest,
    Corrupt,
    Internal,
    /// The server's disk is full.
    NoSpace,
    /// A share does not allow the request.
    Denied,
    /// Over the owner's quota. (Last: bincode numbers the variants.)
    OverQuota,
}

impl WireError {
    /// Rebuilds a local error from a server's answer. `server` names who said it.
    pub fn into_error(self, server: &str) -> Error {
        match self.kind {
            ErrorKind::Unauthorized => Error::Unauthorized,
            ErrorKind::NotLoggedIn => Error::NotLoggedIn,
            ErrorKind::Denied => Error::Denied(self.message),
            ErrorKind::OverQuota => Error::OverQuota(self.message),
            _ => Error::Remote {
                server: server.to_string(),
                error: self,
            },
        }
    }
}

/// Whether an I/O error says the disk is full or the quota spent.
fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The I/O error a metadata store failure comes from, if any.
trait StorageIo {
    fn storage_io(&self) -> Option<&std::io::Error>;
}

impl StorageIo for redb::StorageError {
    fn storage_io(&self) -> Option<&std::io::Error> {
        match self {
            redb::StorageError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl StorageIo for redb::Error {
    fn storage_io(&self) -> Option<&std::io::Error> {
        match self {
            redb::Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

macro_rules! storage_io_via_storage {
    ($($t:ident),*) => {$(
        impl StorageIo for redb::$t {
            fn storage_io(&self) -> Option<&std::io::Error> {
                match self {
                    redb::$t::Storage(e) => e.storage_io(),
                    _ => None,
                }
            }
        }
    )*};
}
storage_io_via_storage!(TableError, TransactionError, CommitError, DatabaseError);

/// The metadata database's failures are the server's own: the caller can do
/// nothing but report them, except a full disk, which is [`Error::NoSpace`].
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                if e.storage_io().is_some_and(is_no_space) {
                    return Error::NoSpace;
                }
                Error::Internal(format!("metadata store: {e}"))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_reply_never_names_a_server_path() {
        let cause = std::io::Error::from_raw_os_error(libc::EIO);
        let e = Error::io(
            "renaming into /srv/ringdfs/data/dfs1/users/alice/x.1",
            cause,
        );
        let wire = e.to_wire();
        assert_eq!(wire.kind, ErrorKind::Internal);
        assert!(!wire.message.contains("/srv"), "{}", wire.message);
        assert!(
            wire.message.starts_with("storage error: "),
            "{}",
            wire.message
        );
        // Locally (the client's own files) the context stays.
        assert!(e.to_string().contains("/srv/ringdfs"));
    }

    #[test]
    fn errors_show_long_names_cut_and_wire_messages_are_bounded() {
        assert_eq!(shown("report.pdf"), "report.pdf");
        let exactly = "é".repeat(SHOWN_NAME_CHARS);
        assert_eq!(shown(&exactly), exactly);
        let long = "é".repeat(1 << 20);
        let error = Error::NotFound { name: long.clone() };
        assert_eq!(
            error.to_string(),
            format!("no such file: {}…", "é".repeat(SHOWN_NAME_CHARS))
        );
        let invalid = Error::InvalidName {
            name: long,
            reason: "too long",
        };
        assert!(invalid.to_string().len() < 300);
        let wordy = Error::BadRequest("x".repeat(1 << 20)).to_wire();
        assert!(wordy.message.len() <= MAX_WIRE_MESSAGE + '…'.len_utf8());
        assert!(wordy.message.ends_with('…'));
    }
}
