//! Arbitrary bytes as a journal segment: decoding must return an error or
//! records, never panic, and whatever it returns must lie inside the file.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use matchwell_snapshots::journal::{SegmentPosition, decode_segment};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
enum Change {
    Joined { id: u64, user: String },
    Rated { id: u64, rating: u16 },
    Left { id: u64 },
}

fuzz_target!(|bytes: &[u8]| {
    let file = Path::new("fuzz.mwj");
    let len = bytes.len() as u64;
    for position in [SegmentPosition::Last, SegmentPosition::Sealed] {
        let Ok(decoded) = decode_segment::<Change>(bytes, file, position) else {
            continue;
        };
        assert!(decoded.records.windows(2).all(|pair| pair[0].offset < pair[1].offset));
        assert!(decoded.records.iter().all(|record| record.offset < len));
        if let Some(torn) = decoded.torn_tail {
            assert_eq!(position, SegmentPosition::Last, "only the last segment is torn");
            assert_eq!(torn.offset + torn.bytes_dropped, len);
        }
    }
});
