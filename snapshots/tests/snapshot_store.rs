//! The snapshot store: round trips, retention, cleanup and fallback.

use std::collections::BTreeMap;
use std::fs;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use matchwell_snapshots::{
    CrashMode, FaultyStorage, FileStorage, SnapshotError, SnapshotOptions, SnapshotStore, Storage,
    inspect_snapshot,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    id: u64,
    user: String,
    rating: u16,
    joined_at_ms: u64,
    pool: u32,
    status: u8,
}

fn members(count: u64) -> Vec<Member> {
    (0..count)
        .map(|id| Member {
            id,
            user: format!("user{id:04}"),
            rating: (id % 3000) as u16,
            joined_at_ms: 1_700_000_000_000 + id,
            pool: (id % 7) as u32,
            status: (id % 3) as u8,
        })
        .collect()
}

fn summary(count: usize) -> BTreeMap<String, u64> {
    BTreeMap::from([("members".to_owned(), count as u64)])
}

fn file_store(dir: &Path, keep: usize) -> SnapshotStore {
    let options = SnapshotOptions {
        keep: NonZeroUsize::new(keep).unwrap(),
    };
    SnapshotStore::open(Arc::new(FileStorage::open(dir).unwrap()), options).unwrap()
}

fn flip_a_body_bit(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_snapshot_round_trips_and_can_be_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path(), 3);
    assert_eq!(store.load_latest::<Vec<Member>>().unwrap(), None);

    let state = members(100);
    let written = store.write(&state, 12, summary(state.len())).unwrap();
    assert_eq!(written.seq, 1);
    assert_eq!(
        written.file,
        dir.path().join("snapshot-00000000000000000001.mws")
    );
    assert_eq!(written.header.replay_from, 12);
    assert!(written.header.created_at_ms > 1_600_000_000_000);

    let loaded = store.load_latest::<Vec<Member>>().unwrap().unwrap();
    assert_eq!(loaded.body, state);
    assert_eq!(loaded.header, written.header);
    assert_eq!((loaded.seq, loaded.skipped), (1, 0));
    assert_eq!(loaded.header.summary["members"], 100);

    assert_eq!(inspect_snapshot(&written.file).unwrap(), written.header);
    assert_eq!(store.read_header(1).unwrap(), written.header);
}

#[test]
fn stray_temporary_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    file_store(dir.path(), 3)
        .write(&members(3), 0, summary(3))
        .unwrap();
    let stray = dir.path().join("snapshot-00000000000000000002.mws.tmp");
    fs::write(&stray, b"half a snapshot").unwrap();
    fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();

    let store = file_store(dir.path(), 3);
    assert!(!stray.exists());
    assert!(dir.path().join("notes.txt").exists());
    assert_eq!(store.list().unwrap(), [1]);
    assert_eq!(store.write(&members(1), 0, summary(1)).unwrap().seq, 2);
}

#[test]
fn only_the_newest_k_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path(), 2);
    for count in 1..=5 {
        store
            .write(&members(count), count, summary(count as usize))
            .unwrap();
    }
    assert_eq!(store.list().unwrap(), [4, 5]);
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "snapshot-00000000000000000004.mws",
            "snapshot-00000000000000000005.mws"
        ]
    );
}

#[test]
fn loading_falls_back_to_an_older_snapshot_when_newer_ones_are_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path(), 3);
    for count in 1..=3 {
        store
            .write(&members(count), count, summary(count as usize))
            .unwrap();
    }
    flip_a_body_bit(&store.path_of(3));
    fs::write(store.path_of(2), b"").unwrap();

    let loaded = store.load_latest::<Vec<Member>>().unwrap().unwrap();
    assert_eq!((loaded.seq, loaded.skipped), (1, 2));
    assert_eq!(loaded.body, members(1));
    assert_eq!(loaded.header.replay_from, 1);

    flip_a_body_bit(&store.path_of(1));
    let err = store.load_latest::<Vec<Member>>().unwrap_err();
    match err {
        SnapshotError::NoValidSnapshot { count, newest } => {
            assert_eq!(count, 3);
            assert!(
                matches!(*newest, SnapshotError::BodyChecksum { .. }),
                "{newest}"
            );
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn a_snapshot_of_another_type_is_skipped_like_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path(), 3);
    store.write(&members(2), 0, summary(2)).unwrap();
    store.write("not a member list", 0, summary(0)).unwrap();
    let loaded = store.load_latest::<Vec<Member>>().unwrap().unwrap();
    assert_eq!((loaded.seq, loaded.skipped), (1, 1));
}

#[test]
fn a_failed_write_leaves_no_snapshot_and_no_temporary_file() {
    let disk = FaultyStorage::new(1);
    let store = SnapshotStore::open(Arc::new(disk.clone()), SnapshotOptions::default()).unwrap();
    disk.fail_next_syncs(1);
    let err = store.write(&members(3), 0, summary(3)).unwrap_err();
    assert!(matches!(err, SnapshotError::Storage(_)), "{err}");
    assert!(disk.list().unwrap().is_empty());

    let written = store.write(&members(3), 0, summary(3)).unwrap();
    assert_eq!(written.seq, 2, "numbers are not reused");
    assert_eq!(store.list().unwrap(), [2]);
}

#[test]
fn a_written_snapshot_survives_a_power_cut() {
    let disk = FaultyStorage::new(1);
    let store = SnapshotStore::open(Arc::new(disk.clone()), SnapshotOptions::default()).unwrap();
    store.write(&members(10), 4, summary(10)).unwrap();
    let rebooted = disk.crash(CrashMode::TearUnsynced);
    let store = SnapshotStore::open(Arc::new(rebooted), SnapshotOptions::default()).unwrap();
    let loaded = store.load_latest::<Vec<Member>>().unwrap().unwrap();
    assert_eq!(loaded.body, members(10));
}

#[test]
fn a_power_cut_during_a_write_never_exposes_a_partial_snapshot() {
    for operations in 0..8 {
        let disk = FaultyStorage::new(operations);
        let store =
            SnapshotStore::open(Arc::new(disk.clone()), SnapshotOptions::default()).unwrap();
        store.write(&members(1), 0, summary(1)).unwrap();
        disk.schedule_crash(operations, CrashMode::TearUnsynced);
        let outcome = store.write(&members(5), 0, summary(5));
        let crashed_during_write = disk.has_crashed();
        if !crashed_during_write {
            disk.crash(CrashMode::TearUnsynced);
        }

        let rebooted = disk.rebooted();
        let store =
            SnapshotStore::open(Arc::new(rebooted.clone()), SnapshotOptions::default()).unwrap();
        let loaded = store.load_latest::<Vec<Member>>().unwrap().unwrap();
        assert_eq!(loaded.skipped, 0, "crash after {operations} operations");
        match outcome {
            // Also when the crash hit the removal of old snapshots afterwards.
            Ok(_) => assert_eq!(loaded.body, members(5), "a completed write is durable"),
            Err(_) => {
                assert!(crashed_during_write);
                assert!(loaded.body == members(1) || loaded.body == members(5));
            }
        }
        assert!(
            rebooted
                .list()
                .unwrap()
                .iter()
                .all(|name| name.ends_with(".mws")),
            "temporary files are cleaned up"
        );
    }
}
