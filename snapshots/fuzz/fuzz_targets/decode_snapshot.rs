//! Arbitrary bytes as a snapshot file: the decoders must return an error or a
//! value, never panic, and agree with each other.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use matchwell_snapshots::SnapshotError;
use matchwell_snapshots::snapshot::{decode_snapshot, decode_snapshot_header};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Member {
    id: u64,
    user: String,
    rating: u16,
    tags: Vec<String>,
    note: Option<String>,
}

fuzz_target!(|bytes: &[u8]| {
    let file = Path::new("fuzz.mws");
    let header = decode_snapshot_header(bytes, file);
    let decoded = decode_snapshot::<Vec<Member>>(bytes, file);
    match (&header, &decoded) {
        (Ok(header), Ok((decoded_header, _))) => assert_eq!(header, decoded_header),
        (Ok(_), Err(SnapshotError::BodyDecode { .. })) | (Err(_), Err(_)) => {}
        _ => panic!("header and full decoding disagree: {header:?} / {:?}", decoded.err()),
    }
    if let Ok(header) = header {
        assert!(header.body_len <= bytes.len() as u64);
    }
});
