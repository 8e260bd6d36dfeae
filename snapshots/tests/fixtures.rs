//! Committed files in `tests/fixtures/` (written by the ignored generator in
//! `src/fixtures.rs`): version-1 files must keep loading with the same
//! content in every later version, and damaged files must keep being
//! rejected with the same error.
//!
//! The record types are declared here again on purpose: these are the
//! reader's types, and they must match the files, not the generator's code.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use matchwell_snapshots::journal::{
    DecodedSegment, FrameDefect, SegmentPosition, TornTail, decode_segment,
};
use matchwell_snapshots::snapshot::decode_snapshot;
use matchwell_snapshots::{
    FileStorage, JournalError, SnapshotError, SnapshotHeader, SnapshotOptions, SnapshotStore,
    inspect_snapshot, read_segments,
};
use serde::Deserialize;

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct Member {
    id: u64,
    user: String,
    rating: u16,
    tags: Vec<String>,
    status: Status,
    note: Option<String>,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
enum Status {
    Waiting,
    Matched { game: u64 },
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
enum Change {
    Joined { id: u64, user: String },
    Rated { id: u64, rating: u16 },
    Left { id: u64 },
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> (Vec<u8>, PathBuf) {
    let path = fixture(name);
    (fs::read(&path).unwrap(), path)
}

fn expected_members() -> Vec<Member> {
    vec![
        Member {
            id: 1,
            user: "alice".into(),
            rating: 1500,
            tags: vec!["eu".into(), "ranked".into()],
            status: Status::Waiting,
            note: None,
        },
        Member {
            id: 2,
            user: "bob".into(),
            rating: 1320,
            tags: vec![],
            status: Status::Matched { game: 77 },
            note: Some("müller ✓".into()),
        },
        Member {
            id: u64::MAX,
            user: String::new(),
            rating: u16::MAX,
            tags: vec!["x".into()],
            status: Status::Waiting,
            note: Some(String::new()),
        },
    ]
}

fn expected_changes() -> Vec<Change> {
    vec![
        Change::Joined {
            id: 3,
            user: "carol".into(),
        },
        Change::Rated {
            id: 3,
            rating: 1610,
        },
        Change::Left { id: 1 },
    ]
}

fn assert_v1_header(header: &SnapshotHeader) {
    assert_eq!(header.created_at_ms, 1_700_000_000_000);
    assert_eq!(header.replay_from, 7);
    assert_eq!(
        header.summary,
        BTreeMap::from([("games".to_owned(), 1), ("members".to_owned(), 3)])
    );
    assert_eq!(header.body_len, 192);
}

#[test]
fn the_version_1_snapshot_still_loads() {
    let (bytes, path) = read_fixture("snapshot-v1.mws");
    let (header, members) = decode_snapshot::<Vec<Member>>(&bytes, &path).unwrap();
    assert_v1_header(&header);
    assert_eq!(members, expected_members());
    assert_eq!(inspect_snapshot(&path).unwrap(), header);

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("snapshot-00000000000000000001.mws"), &bytes).unwrap();
    let store = SnapshotStore::open(
        Arc::new(FileStorage::open(dir.path()).unwrap()),
        SnapshotOptions::default(),
    )
    .unwrap();
    let loaded = store.load_latest::<Vec<Member>>().unwrap().unwrap();
    assert_eq!(loaded.body, expected_members());
}

#[test]
fn the_version_1_journal_segment_still_loads() {
    let (bytes, path) = read_fixture("journal-v1.mwj");
    let decoded: DecodedSegment<Change> =
        decode_segment(&bytes, &path, SegmentPosition::Sealed).unwrap();
    assert_eq!(decoded.segment, Some(7));
    assert_eq!(decoded.torn_tail, None);
    let offsets: Vec<u64> = decoded.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [22, 54, 84]);

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("journal-00000000000000000007.mwj"), &bytes).unwrap();
    let storage = FileStorage::open(dir.path()).unwrap();
    let recovered = read_segments::<Change>(&storage, 7).unwrap();
    let changes: Vec<Change> = recovered.records.into_iter().map(|r| r.record).collect();
    assert_eq!(changes, expected_changes());
}

fn snapshot_error(name: &str) -> SnapshotError {
    let (bytes, path) = read_fixture(name);
    let err = decode_snapshot::<Vec<Member>>(&bytes, &path).unwrap_err();
    assert!(
        err.to_string().contains(name),
        "the error names the file: {err}"
    );
    err
}

#[test]
fn damaged_snapshots_are_rejected_with_specific_errors() {
    assert!(matches!(
        snapshot_error("snapshot-empty.mws"),
        SnapshotError::Empty { .. }
    ));
    assert!(matches!(
        snapshot_error("snapshot-truncated.mws"),
        SnapshotError::Truncated {
            part: "body",
            offset: 108,
            needed: 192,
            available: 182,
            ..
        }
    ));
    assert!(matches!(
        snapshot_error("snapshot-bitflip-body.mws"),
        SnapshotError::BodyChecksum { offset: 108, .. }
    ));
    assert!(matches!(
        snapshot_error("snapshot-bitflip-header.mws"),
        SnapshotError::HeaderChecksum { offset: 14, .. }
    ));
    assert!(matches!(
        snapshot_error("snapshot-wrong-magic.mws"),
        SnapshotError::BadMagic { .. }
    ));
    assert!(matches!(
        snapshot_error("snapshot-future-version.mws"),
        SnapshotError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        }
    ));
    assert!(matches!(
        inspect_snapshot(&fixture("snapshot-bitflip-body.mws")),
        Err(SnapshotError::BodyChecksum { .. })
    ));
}

fn journal_outcome(
    name: &str,
    position: SegmentPosition,
) -> Result<DecodedSegment<Change>, JournalError> {
    let (bytes, path) = read_fixture(name);
    decode_segment(&bytes, &path, position)
}

fn journal_error(name: &str, position: SegmentPosition) -> JournalError {
    let err = journal_outcome(name, position).unwrap_err();
    assert!(
        err.to_string().contains(name),
        "the error names the file: {err}"
    );
    err
}

#[test]
fn damaged_journal_segments_are_rejected_with_specific_errors() {
    use SegmentPosition::{Last, Sealed};

    assert!(matches!(
        journal_error("journal-bitflip.mwj", Last),
        JournalError::CorruptFrame {
            offset: 54,
            defect: FrameDefect::Checksum { .. },
            ..
        }
    ));
    assert!(matches!(
        journal_error("journal-truncated.mwj", Sealed),
        JournalError::CorruptFrame {
            offset: 84,
            defect: FrameDefect::Incomplete {
                needed: 19,
                available: 16
            },
            ..
        }
    ));
    assert!(matches!(
        journal_error("journal-empty.mwj", Sealed),
        JournalError::SegmentTooShort { len: 0, .. }
    ));
    for position in [Last, Sealed] {
        assert!(matches!(
            journal_error("journal-wrong-magic.mwj", position),
            JournalError::SegmentMagic { .. }
        ));
        assert!(matches!(
            journal_error("journal-future-version.mwj", position),
            JournalError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }
        ));
    }
}

#[test]
fn a_truncated_or_empty_last_segment_is_a_torn_tail() {
    let truncated = journal_outcome("journal-truncated.mwj", SegmentPosition::Last).unwrap();
    assert_eq!(truncated.records.len(), 2);
    assert_eq!(
        truncated.torn_tail,
        Some(TornTail {
            file: fixture("journal-truncated.mwj"),
            offset: 84,
            bytes_dropped: 16
        })
    );

    let empty = journal_outcome("journal-empty.mwj", SegmentPosition::Last).unwrap();
    assert_eq!(empty.segment, None);
    assert!(empty.records.is_empty());
    assert_eq!(
        empty.torn_tail.map(|t| (t.offset, t.bytes_dropped)),
        Some((0, 0))
    );
}
