//! Bytes from a stranger, decoded as a server decodes them (requests, in the
//! small pre-login frames) and as a client does (responses, full-size frames):
//! frame by frame until the stream ends or fails. Errors are expected; a panic,
//! a hang or a large allocation is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdfs::protocol::{Connection, Request, Response, MAX_FRAME};
use serde::de::DeserializeOwned;

fn decode_all<M: DeserializeOwned>(bytes: &[u8], max_frame: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let stream = tokio::io::join(bytes, tokio::io::sink());
        let mut conn = Connection::new(stream, "fuzz");
        conn.set_max_frame(max_frame);
        while let Ok(Some(_)) = conn.recv::<M>().await {}
    });
}

fuzz_target!(|data: &[u8]| {
    decode_all::<Request>(data, 4096);
    decode_all::<Response>(data, MAX_FRAME);
    // The message decoder on its own, without framing.
    let _ = ringdfs::codec::decode::<Request>(data);
    let _ = ringdfs::codec::decode::<Response>(data);
});
