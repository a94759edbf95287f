//! Moving one chunk's bytes between a connection and the store, for both
//! sides of the server (a client's upload, a peer's copy during healing):
//! the socket side only moves blocks, a blocking task writes and hashes.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::protocol::{Checksum, Connection, Frame};
use crate::store::ChunkWriter;

/// Blocks buffered between the socket and the disk, per transfer.
pub(crate) const PIPELINE_DEPTH: usize = 2;

/// Streams data blocks from `conn` into `writer` until the message that ends
/// them, which `end` turns into the sender's checksum (or an error). The
/// blocking side writes and hashes; the socket side only moves blocks.
pub(crate) async fn pump_into<S, M>(
    conn: &mut Connection<S>,
    mut writer: ChunkWriter,
    end: impl Fn(M) -> Result<Checksum>,
) -> Result<(ChunkWriter, Checksum)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: serde::de::DeserializeOwned,
{
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(PIPELINE_DEPTH);
    let disk = tokio::task::spawn_blocking(move || {
        while let Some(block) = rx.blocking_recv() {
            writer.write(&block)?;
        }
        Ok::<_, Error>(writer)
    });
    let outcome = loop {
        match conn.recv::<M>().await {
            Ok(Some(Frame::Data(block))) => {
                if tx.send(block).await.is_err() {
                    break Err(None); // the writer failed; its error is below
                }
            }
            Ok(Some(Frame::Msg(m))) => break end(m).map_err(Some),
            Ok(None) => {
                break Err(Some(Error::Protocol(
                    "connection closed inside a transfer".into(),
                )))
            }
            Err(e) => break Err(Some(e)),
        }
    };
    drop(tx);
    let writer = disk
        .await
        .map_err(|e| Error::Internal(format!("chunk writer: {e}")))?;
    match outcome {
        Ok(checksum) => Ok((writer?, checksum)),
        Err(Some(e)) => Err(e),
        Err(None) => {
            let e = writer
                .err()
                .unwrap_or(Error::Internal("chunk writer stopped".into()));
            if let Error::NoSpace | Error::Io { .. } = e {
                // Storing failed, the sender is still streaming: take the
                // rest of the chunk, so it reads the reply saying why (no
                // space left) rather than a reset.
                let _ = skip_rest::<S, M>(conn).await;
            }
            Err(e)
        }
    }
}

/// Reads and drops a chunk's remaining data blocks, up to the message that
/// ends them: a chunk that cannot be stored still ends where its sender
/// expects, so the sender hears why.
pub(crate) async fn skip_rest<S, M>(conn: &mut Connection<S>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: serde::de::DeserializeOwned,
{
    loop {
        match conn.recv::<M>().await? {
            Some(Frame::Data(_)) => {}
            Some(Frame::Msg(_)) => return Ok(()),
            None => {
                return Err(Error::Protocol(
                    "connection closed inside a transfer".into(),
                ))
            }
        }
    }
}

/// Checks and stores a fully received chunk, off the async threads.
pub(crate) async fn finish(writer: ChunkWriter, claimed: Checksum) -> Result<()> {
    tokio::task::spawn_blocking(move || writer.finish(claimed))
        .await
        .map_err(|e| Error::Internal(format!("chunk writer: {e}")))?
}
