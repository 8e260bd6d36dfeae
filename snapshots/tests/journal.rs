//! The journal on real files: round trips, ordering, torn tails and corruption.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use matchwell_snapshots::journal::FrameDefect;
use matchwell_snapshots::{
    FileStorage, FsyncMode, Journal, JournalError, JournalOptions, Storage, read_segments,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Change {
    Joined { player: u64, name: String },
    Rated { player: u64, rating: u16 },
    Left { player: u64 },
}

fn change(i: u64) -> Change {
    match i % 3 {
        0 => Change::Joined {
            player: i,
            name: format!("player-{i}"),
        },
        1 => Change::Rated {
            player: i,
            rating: (i * 7 % 3000) as u16,
        },
        _ => Change::Left { player: i },
    }
}

fn open_storage(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(FileStorage::open(dir).unwrap())
}

fn always_journal(storage: &Arc<dyn Storage>) -> Journal<Change> {
    Journal::open(
        Arc::clone(storage),
        JournalOptions::with_fsync(FsyncMode::Always),
    )
    .unwrap()
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("journal-{segment:020}.mwj"))
}

fn all_modes() -> [FsyncMode; 3] {
    [
        FsyncMode::Always,
        FsyncMode::Batch {
            interval: Duration::from_millis(1),
        },
        FsyncMode::None,
    ]
}

#[test]
fn records_round_trip_across_rotations_in_every_fsync_mode() {
    for mode in all_modes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_storage(dir.path());
        let journal =
            Journal::open(Arc::clone(&storage), JournalOptions::with_fsync(mode)).unwrap();
        let mut last = None;
        for i in 0..90 {
            if i % 30 == 29 {
                journal.rotate().unwrap();
            }
            last = Some(journal.append(&change(i)).unwrap());
        }
        let last = last.unwrap();
        last.wait().unwrap();
        assert_eq!(last.seq(), 90);
        assert_eq!(journal.durable_seq(), 90, "{mode:?}");
        journal.close().unwrap();

        let recovered = read_segments::<Change>(&*storage, 0).unwrap();
        assert_eq!(recovered.torn_tail, None);
        let read: Vec<Change> = recovered.records.iter().map(|r| r.record.clone()).collect();
        assert_eq!(read, (0..90).map(change).collect::<Vec<_>>(), "{mode:?}");
        let segments: Vec<u64> = recovered.records.iter().map(|r| r.segment).collect();
        assert_eq!(segments[0], 0);
        assert_eq!(segments[89], 3);
        assert!(segments.is_sorted());
        assert!(
            recovered
                .records
                .windows(2)
                .all(|pair| pair[0].segment < pair[1].segment || pair[0].offset < pair[1].offset)
        );
    }
}

#[test]
fn concurrent_appends_land_in_sequence_number_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = Journal::open(Arc::clone(&storage), JournalOptions::default()).unwrap();
    let mut by_seq: Vec<(u64, Change)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8u64)
            .map(|writer| {
                let journal = &journal;
                scope.spawn(move || {
                    (0..500)
                        .map(|i| {
                            let record = change(writer * 1000 + i);
                            (journal.append(&record).unwrap().seq(), record)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    journal.close().unwrap();
    by_seq.sort_by_key(|(seq, _)| *seq);
    let expected: Vec<Change> = by_seq.into_iter().map(|(_, record)| record).collect();
    let read: Vec<Change> = read_segments::<Change>(&*storage, 0)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.record)
        .collect();
    assert_eq!(read, expected);
}

#[test]
fn tickets_can_be_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal<Change> = Journal::open(
        open_storage(dir.path()),
        JournalOptions::with_fsync(FsyncMode::Always),
    )
    .unwrap();
    let first = journal.append(&change(0)).unwrap();
    let second = journal.append(&change(1)).unwrap();
    block_on(async {
        first.await.unwrap();
        journal.wait_durable(second.seq()).await.unwrap();
        second.durable().await.unwrap();
    });
    assert_eq!(journal.durable_seq(), 2);
}

#[test]
fn a_torn_tail_is_dropped_counted_and_cut_so_appends_continue_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = always_journal(&storage);
    for i in 0..4 {
        journal.append(&change(i)).unwrap();
    }
    journal.close().unwrap();
    let segment = segment_path(dir.path(), 0);
    let full_len = fs::metadata(&segment).unwrap().len();
    let last_frame = read_segments::<Change>(&*storage, 0).unwrap().records[3].offset;

    // A crash in the middle of writing the fourth frame.
    let cut = last_frame + 5;
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let recovered = read_segments::<Change>(&*storage, 0).unwrap();
    assert_eq!(recovered.records.len(), 3);
    let torn = recovered.torn_tail.unwrap();
    assert_eq!(torn.file, segment);
    assert_eq!(
        (torn.offset, torn.bytes_dropped),
        (last_frame, cut - last_frame)
    );
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        last_frame,
        "the file is cut"
    );
    assert!(full_len > cut);

    let journal = always_journal(&storage);
    assert_eq!(journal.active_segment(), 1);
    journal.append(&change(10)).unwrap();
    journal.close().unwrap();
    let recovered = read_segments::<Change>(&*storage, 0).unwrap();
    assert_eq!(recovered.torn_tail, None);
    let read: Vec<Change> = recovered.records.into_iter().map(|r| r.record).collect();
    assert_eq!(read, [change(0), change(1), change(2), change(10)]);
}

#[test]
fn opening_the_journal_also_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = always_journal(&storage);
    journal.append(&change(0)).unwrap();
    journal.close().unwrap();
    let segment = segment_path(dir.path(), 0);
    let intact_len = fs::metadata(&segment).unwrap().len();
    let mut torn = fs::read(&segment).unwrap();
    torn.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    fs::write(&segment, torn).unwrap();

    let journal: Journal<Change> = always_journal(&storage);
    journal.close().unwrap();
    assert_eq!(fs::metadata(&segment).unwrap().len(), intact_len);
    assert_eq!(
        read_segments::<Change>(&*storage, 0).unwrap().records.len(),
        1
    );
}

#[test]
fn corruption_inside_a_segment_names_the_file_and_offset_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = always_journal(&storage);
    for i in 0..3 {
        journal.append(&change(i)).unwrap();
    }
    journal.rotate().unwrap();
    journal.append(&change(3)).unwrap();
    journal.close().unwrap();
    let second_frame = read_segments::<Change>(&*storage, 0).unwrap().records[1].offset;

    // Flip a payload bit of the middle record of the first (sealed) segment.
    let segment = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&segment).unwrap();
    bytes[second_frame as usize + 10] ^= 0x04;
    fs::write(&segment, &bytes).unwrap();

    let err = read_segments::<Change>(&*storage, 0).unwrap_err();
    assert!(
        matches!(
            &err,
            JournalError::CorruptFrame { file, offset, defect: FrameDefect::Checksum { .. } }
                if *file == segment && *offset == second_frame
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&segment.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("byte offset {second_frame}")),
        "{message}"
    );
    assert_eq!(fs::read(&segment).unwrap(), bytes, "nothing is repaired");
}

#[test]
fn a_bad_frame_followed_by_more_data_in_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = always_journal(&storage);
    for i in 0..3 {
        journal.append(&change(i)).unwrap();
    }
    journal.close().unwrap();
    let first_frame = read_segments::<Change>(&*storage, 0).unwrap().records[0].offset;
    let segment = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&segment).unwrap();
    bytes[first_frame as usize + 9] ^= 0x01;
    fs::write(&segment, &bytes).unwrap();

    let err = read_segments::<Change>(&*storage, 0).unwrap_err();
    assert!(
        matches!(err, JournalError::CorruptFrame { offset, .. } if offset == first_frame),
        "{err}"
    );
    let reopen = Journal::<Change>::open(Arc::clone(&storage), JournalOptions::default());
    assert!(matches!(reopen, Err(JournalError::CorruptFrame { .. })));
}

#[test]
fn gaps_in_segment_numbering_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = Journal::<Change>::open(
        Arc::clone(&storage),
        JournalOptions::with_fsync(FsyncMode::Always),
    )
    .unwrap();
    journal.rotate().unwrap();
    journal.rotate().unwrap();
    journal.close().unwrap();
    fs::remove_file(segment_path(dir.path(), 1)).unwrap();

    let err = read_segments::<Change>(&*storage, 0).unwrap_err();
    assert!(
        matches!(
            &err,
            JournalError::MissingSegment { file, next_present: Some(2) } if *file == segment_path(dir.path(), 1)
        ),
        "{err}"
    );
    read_segments::<Change>(&*storage, 2).unwrap();
    assert!(matches!(
        read_segments::<Change>(&*storage, 5),
        Err(JournalError::MissingSegment {
            next_present: None,
            ..
        })
    ));
}

#[test]
fn replay_starts_at_the_requested_segment() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    let journal = always_journal(&storage);
    journal.append(&change(0)).unwrap();
    let replay_from = journal.rotate().unwrap();
    journal.append(&change(1)).unwrap();
    journal.close().unwrap();
    let recovered = read_segments::<Change>(&*storage, replay_from).unwrap();
    let read: Vec<Change> = recovered.records.into_iter().map(|r| r.record).collect();
    assert_eq!(read, [change(1)]);
}

#[test]
fn an_empty_storage_has_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let recovered = read_segments::<Change>(&*open_storage(dir.path()), 0).unwrap();
    assert!(recovered.records.is_empty());
    assert_eq!(recovered.torn_tail, None);
}

/// Runs a future to completion on the current thread; the journal needs no runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
