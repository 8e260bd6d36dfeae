//! Writing and loading a snapshot of 1,000,000 members on the local disk.
//!
//! `write` includes encoding, checksumming, writing, `fdatasync`, rename and
//! directory sync; `load` includes reading, validating and decoding.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use matchwell_snapshots::{FileStorage, SnapshotOptions, SnapshotStore};
use serde::{Deserialize, Serialize};

const MEMBERS: u64 = 1_000_000;

#[derive(Debug, Serialize, Deserialize)]
struct Member {
    id: u64,
    user: String,
    rating: u16,
    joined_at_ms: u64,
    pool: u32,
    status: u8,
}

fn members() -> Vec<Member> {
    (0..MEMBERS)
        .map(|id| Member {
            id,
            user: format!("u{:07}", id),
            rating: (id % 3000) as u16,
            joined_at_ms: 1_700_000_000_000 + id * 13,
            pool: (id % 64) as u32,
            status: (id % 4) as u8,
        })
        .collect()
}

fn snapshot(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let options = SnapshotOptions {
        keep: NonZeroUsize::new(1).unwrap(),
    };
    let store =
        SnapshotStore::open(Arc::new(FileStorage::open(dir.path()).unwrap()), options).unwrap();
    let state = members();
    let summary = BTreeMap::from([("members".to_owned(), MEMBERS)]);
    let written = store.write(&state, 0, summary.clone()).unwrap();
    eprintln!(
        "snapshot of {MEMBERS} members: {} bytes",
        written.header.body_len
    );

    let mut group = c.benchmark_group("snapshot/1M-members");
    group.throughput(Throughput::Elements(MEMBERS));
    group.bench_function("write", |b| {
        b.iter(|| store.write(&state, 0, summary.clone()).unwrap());
    });
    group.bench_function("load", |b| {
        b.iter(|| store.load_latest::<Vec<Member>>().unwrap().unwrap());
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12));
    targets = snapshot
}
criterion_main!(benches);
