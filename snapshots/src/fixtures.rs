//! Writes the committed test fixtures in `tests/fixtures/`.
//!
//! The files pin the on-disk formats: `tests/fixtures.rs` checks that they
//! still load (or are still rejected) exactly as when they were written. Run
//! this generator only when adding fixtures for a new format version:
//! `cargo test -p matchwell-snapshots --lib fixtures -- --ignored`. Never
//! regenerate the files of an existing version.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::journal::format::{encode_frame, encode_segment_header};
use crate::snapshot::format::encode_snapshot;

#[derive(Serialize)]
struct FixtureMember {
    id: u64,
    user: String,
    rating: u16,
    tags: Vec<String>,
    status: FixtureStatus,
    note: Option<String>,
}

#[derive(Serialize)]
enum FixtureStatus {
    Waiting,
    Matched { game: u64 },
}

#[derive(Serialize)]
enum FixtureChange {
    Joined { id: u64, user: String },
    Rated { id: u64, rating: u16 },
    Left { id: u64 },
}

fn members() -> Vec<FixtureMember> {
    vec![
        FixtureMember {
            id: 1,
            user: "alice".into(),
            rating: 1500,
            tags: vec!["eu".into(), "ranked".into()],
            status: FixtureStatus::Waiting,
            note: None,
        },
        FixtureMember {
            id: 2,
            user: "bob".into(),
            rating: 1320,
            tags: vec![],
            status: FixtureStatus::Matched { game: 77 },
            note: Some("müller ✓".into()),
        },
        FixtureMember {
            id: u64::MAX,
            user: String::new(),
            rating: u16::MAX,
            tags: vec!["x".into()],
            status: FixtureStatus::Waiting,
            note: Some(String::new()),
        },
    ]
}

fn changes() -> Vec<FixtureChange> {
    vec![
        FixtureChange::Joined {
            id: 3,
            user: "carol".into(),
        },
        FixtureChange::Rated {
            id: 3,
            rating: 1610,
        },
        FixtureChange::Left { id: 1 },
    ]
}

fn with_byte(mut bytes: Vec<u8>, index: usize, change: impl FnOnce(u8) -> u8) -> Vec<u8> {
    bytes[index] = change(bytes[index]);
    bytes
}

#[test]
#[ignore = "writes tests/fixtures/; run only to add fixtures for a new format version"]
fn generate_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| fs::write(dir.join(name), bytes).unwrap();

    let summary = BTreeMap::from([("members".to_owned(), 3), ("games".to_owned(), 1)]);
    let snapshot = encode_snapshot(&members(), 1_700_000_000_000, 7, summary).unwrap();
    let header_start = 18;
    let snapshot = [snapshot.head, snapshot.body].concat();
    let len = snapshot.len();
    write("snapshot-v1.mws", &snapshot);
    write("snapshot-empty.mws", &[]);
    write("snapshot-truncated.mws", &snapshot[..len - 10]);
    write(
        "snapshot-bitflip-body.mws",
        &with_byte(snapshot.clone(), len - 5, |b| b ^ 0x01),
    );
    write(
        "snapshot-bitflip-header.mws",
        &with_byte(snapshot.clone(), header_start + 3, |b| b ^ 0x40),
    );
    write(
        "snapshot-wrong-magic.mws",
        &with_byte(snapshot.clone(), 1, |_| b'X'),
    );
    write(
        "snapshot-future-version.mws",
        &with_byte(snapshot, 8, |_| 2),
    );

    let mut segment = encode_segment_header(7).to_vec();
    let mut frame_starts = Vec::new();
    for change in changes() {
        frame_starts.push(segment.len());
        segment.extend(encode_frame(&change).unwrap());
    }
    let len = segment.len();
    write("journal-v1.mwj", &segment);
    write("journal-empty.mwj", &[]);
    write("journal-truncated.mwj", &segment[..len - 3]);
    write(
        "journal-bitflip.mwj",
        &with_byte(segment.clone(), frame_starts[1] + 9, |b| b ^ 0x01),
    );
    write(
        "journal-wrong-magic.mwj",
        &with_byte(segment.clone(), 1, |_| b'X'),
    );
    write("journal-future-version.mwj", &with_byte(segment, 8, |_| 2));
}
