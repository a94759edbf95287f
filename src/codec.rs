//! Every bincode call in the crate, behind one configuration.
//!
//! bincode is flagged unmaintained (RUSTSEC-2025-0141), so it is confined here:
//! swapping it out touches this file only. The configuration carries a decode
//! limit, so a hostile length field inside a message ("a string of 2^62 bytes")
//! fails to decode instead of allocating: nothing we decode is larger than a frame.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// No encoded value is larger than this (a frame's payload is at most this big too).
pub const DECODE_LIMIT: usize = 2 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|e| Error::Protocol(format!("cannot encode message: {e}")))
}

/// Decodes exactly one value; trailing bytes are an error, not ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Error::Protocol(format!("cannot decode message: {e}")))?;
    if used != bytes.len() {
        return Err(Error::Protocol(format!(
            "{} trailing bytes after a message",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Decodes one value from the start of `bytes`, ignoring what follows: for
/// reading the first fields of a message that was too large to keep whole.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(bytes, config())
        .map(|(value, _)| value)
        .map_err(|e| Error::Protocol(format!("cannot decode message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_inner_length_is_refused_without_allocating() {
        // A Vec<u8> whose varint length claims 2^62 bytes, followed by nothing.
        let mut bytes = vec![0xfd]; // bincode varint marker: u64 follows
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        assert!(decode::<String>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        assert!(decode::<u32>(&bytes).is_err());
    }
}
