//! Journal throughput on the local disk.
//!
//! * `append/batch`: appends per second from one thread under the default
//!   `FsyncMode::Batch` (5 ms), including the wait for the last record of
//!   each sample to be durable.
//! * `acknowledged/always/64-writers`: writes per second under
//!   `FsyncMode::Always` with 64 threads that each append and wait for their
//!   record to be durable before appending the next one.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use matchwell_snapshots::{FileStorage, FsyncMode, Journal, JournalOptions};
use serde::Serialize;

const WRITERS: u64 = 64;

#[derive(Serialize)]
enum Change {
    Joined {
        player: u64,
        user: String,
        rating: u16,
    },
}

fn change(player: u64) -> Change {
    Change::Joined {
        player,
        user: "user1234".to_owned(),
        rating: 1500,
    }
}

fn open(dir: &std::path::Path, fsync: FsyncMode) -> Journal<Change> {
    let storage = Arc::new(FileStorage::open(dir).unwrap());
    Journal::open(storage, JournalOptions::with_fsync(fsync)).unwrap()
}

/// Keeps the journal from growing across samples.
fn start_fresh_segment(journal: &Journal<Change>) {
    let segment = journal.rotate().unwrap();
    journal.remove_segments_before(segment).unwrap();
}

fn batch_appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), FsyncMode::default());
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append/batch", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut last = None;
            for player in 0..iters {
                last = Some(journal.append(black_box(&change(player))).unwrap());
            }
            if let Some(ticket) = last {
                ticket.wait().unwrap();
            }
            let elapsed = start.elapsed();
            start_fresh_segment(&journal);
            elapsed
        });
    });
    group.finish();
    journal.close().unwrap();
}

fn always_with_concurrent_writers(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path(), FsyncMode::Always);
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(WRITERS));
    group.bench_function("acknowledged/always/64-writers", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            thread::scope(|scope| {
                for writer in 0..WRITERS {
                    let journal = &journal;
                    scope.spawn(move || {
                        for i in 0..iters {
                            journal
                                .append(&change(writer << 32 | i))
                                .unwrap()
                                .wait()
                                .unwrap();
                        }
                    });
                }
            });
            let elapsed = start.elapsed();
            start_fresh_segment(&journal);
            elapsed
        });
    });
    group.finish();
    journal.close().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = batch_appends, always_with_concurrent_writers
}
criterion_main!(benches);
