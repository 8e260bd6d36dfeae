//! Power cuts at random points under `FsyncMode::Always`, on the simulated disk.
//!
//! Each scenario is drawn from a seed: how many writer threads append how many
//! records, how often one of them rotates, after how many storage operations
//! the power fails (so it can fail between any write and its sync, or in the
//! middle of a rotation), and whether unsynced bytes are lost or torn. Thread interleaving is
//! up to the scheduler, so a seed fixes the scenario, not the exact run; the
//! assertions hold for every interleaving. A failing seed is printed; rerun it
//! alone with `MATCHWELL_CRASH_SEED=<seed>`.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use matchwell_snapshots::{
    CrashMode, FaultyStorage, FsyncMode, Journal, JournalOptions, Storage, read_segments,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

const SEEDS: u64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    writer: u32,
    index: u32,
}

struct Scenario {
    writers: u32,
    appends_per_writer: u32,
    /// Writer 0 rotates after every this many of its appends.
    rotate_every: u32,
    /// The power fails after this many storage operations (or at the end,
    /// if the writers finish first).
    crash_after_operations: u64,
    crash_mode: CrashMode,
    seed: u64,
}

impl Scenario {
    fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let writers = rng.random_range(1..=8);
        let appends_per_writer = rng.random_range(1..=60);
        // Each group commit takes a write and a sync; this bound lets most
        // crashes strike while the writers are still busy.
        let operations = 2 * u64::from(writers * appends_per_writer);
        Self {
            writers,
            appends_per_writer,
            rotate_every: rng.random_range(3..=30),
            crash_after_operations: rng.random_range(0..=operations),
            crash_mode: if rng.random_bool(0.75) {
                CrashMode::TearUnsynced
            } else {
                CrashMode::LoseUnsynced
            },
            seed,
        }
    }
}

#[test]
fn acknowledged_records_survive_any_crash_as_a_prefix_of_the_append_order() {
    let seeds: Vec<u64> = match std::env::var("MATCHWELL_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("MATCHWELL_CRASH_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&Scenario::from_seed(seed))));
        if let Err(panic) = outcome {
            eprintln!(
                "crash scenario failed for seed {seed}; rerun with MATCHWELL_CRASH_SEED={seed}"
            );
            panic::resume_unwind(panic);
        }
    }
}

fn run(scenario: &Scenario) {
    let disk = FaultyStorage::new(scenario.seed);
    let journal = Journal::<Entry>::open(
        Arc::new(disk.clone()),
        JournalOptions::with_fsync(FsyncMode::Always),
    )
    .unwrap();
    disk.schedule_crash(scenario.crash_after_operations, scenario.crash_mode);

    let results: Vec<WriterLog> = thread::scope(|scope| {
        let handles: Vec<_> = (0..scenario.writers)
            .map(|writer| {
                let (journal, disk) = (&journal, &disk);
                scope.spawn(move || {
                    let mut log = WriterLog::default();
                    for index in 0..scenario.appends_per_writer {
                        if disk.has_crashed() {
                            break;
                        }
                        let entry = Entry { writer, index };
                        let Ok(ticket) = journal.append(&entry) else {
                            break;
                        };
                        log.appended.push((ticket.seq(), entry));
                        if writer == 0 && (index + 1) % scenario.rotate_every == 0 {
                            let _ = journal.rotate();
                        }
                        match ticket.wait() {
                            Ok(()) => {
                                log.acknowledged_up_to = ticket.seq().max(log.acknowledged_up_to)
                            }
                            Err(_) => break,
                        }
                    }
                    log
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if !disk.has_crashed() {
        disk.crash(scenario.crash_mode);
    }

    // The old process dies: nothing it does after the crash reaches the disk.
    let _ = journal.close();
    let durable_seq = journal.durable_seq();
    let appended_seq = journal.appended_seq();
    drop(journal);
    let rebooted = disk.rebooted();

    let by_seq: BTreeMap<u64, Entry> = results
        .iter()
        .flat_map(|log| log.appended.iter().copied())
        .collect();
    let acknowledged = results
        .iter()
        .map(|log| log.acknowledged_up_to)
        .max()
        .unwrap_or(0);
    assert!(
        acknowledged <= durable_seq,
        "a ticket reported durable beyond durable_seq"
    );
    assert_eq!(by_seq.len() as u64, appended_seq);

    let recovered = read_segments::<Entry>(&rebooted, 0).unwrap();
    let read: Vec<Entry> = recovered.records.iter().map(|r| r.record).collect();
    assert!(
        read.len() as u64 >= durable_seq,
        "lost durable records: read {}, durable {durable_seq}",
        read.len()
    );
    let expected: Vec<Entry> = by_seq.values().take(read.len()).copied().collect();
    assert_eq!(read, expected, "not a prefix of the append order");

    // After recovery the journal continues cleanly.
    let journal = Journal::<Entry>::open(
        Arc::new(rebooted.clone()),
        JournalOptions::with_fsync(FsyncMode::Always),
    )
    .unwrap();
    let later = Entry {
        writer: u32::MAX,
        index: 0,
    };
    journal.append(&later).unwrap().wait().unwrap();
    journal.close().unwrap();
    let after = read_segments::<Entry>(&rebooted, 0).unwrap();
    assert_eq!(after.torn_tail, None);
    let read_after: Vec<Entry> = after.records.iter().map(|r| r.record).collect();
    assert_eq!(read_after, [read, vec![later]].concat());
    assert_storage_is_consistent(&rebooted);
}

#[derive(Default)]
struct WriterLog {
    appended: Vec<(u64, Entry)>,
    acknowledged_up_to: u64,
}

/// Every segment file left is a whole segment: no short or stray files.
fn assert_storage_is_consistent(storage: &FaultyStorage) {
    for name in storage.list().unwrap() {
        assert!(
            name.starts_with("journal-") && name.ends_with(".mwj"),
            "{name}"
        );
        assert!(storage.read(&name).unwrap().len() >= 22, "{name} is short");
    }
}

#[test]
fn a_failed_sync_fails_every_pending_ticket_and_keeps_what_was_durable() {
    let disk = FaultyStorage::new(5);
    let journal = Journal::<Entry>::open(
        Arc::new(disk.clone()),
        JournalOptions::with_fsync(FsyncMode::Always),
    )
    .unwrap();
    let entry = |index| Entry { writer: 0, index };
    for index in 0..10 {
        journal.append(&entry(index)).unwrap().wait().unwrap();
    }
    disk.fail_next_syncs(1);
    // The first of these meets the failed sync; the writer may be poisoned
    // before the others are even appended. Either way the error names the cause.
    for index in 10..20 {
        let err = journal
            .append(&entry(index))
            .and_then(|ticket| ticket.wait())
            .unwrap_err();
        assert!(err.to_string().contains("injected sync failure"), "{err}");
    }
    assert_eq!(journal.durable_seq(), 10);
    assert!(!journal.is_healthy());
    assert!(journal.append(&entry(20)).is_err());
    drop(journal);

    let rebooted = disk.crash(CrashMode::LoseUnsynced);
    let read: Vec<Entry> = read_segments::<Entry>(&rebooted, 0)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.record)
        .collect();
    assert_eq!(read, (0..10).map(entry).collect::<Vec<_>>());
}
