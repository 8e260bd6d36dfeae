//! The replicated journal: group commit, replay, fencing, and a server killed while appending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use matchwell_actors::change_log::ChangeLog;
use matchwell_actors::persist::Change;
use matchwell_cluster::store::JOURNAL_STREAM;
use matchwell_cluster::testkit::NatsCluster;
use matchwell_cluster::{ClusterStore, JetStreamLog};
use rand::Rng;
use tokio::runtime::Handle;

use crate::support::{connect, eventually, raw_jetstream, record, seeded_rng};

/// How many messages partition `partition`'s subject holds.
async fn messages_on(nats: &NatsCluster, partition: u32) -> usize {
    let jetstream = raw_jetstream(nats).await;
    let stream = jetstream.get_stream(JOURNAL_STREAM).await.unwrap();
    let info = stream
        .info_with_subjects(ClusterStore::journal_subject(partition))
        .await
        .unwrap();
    let mut total = 0;
    use futures::TryStreamExt;
    let subjects: Vec<(String, usize)> = info.try_collect().await.unwrap();
    for (_, count) in subjects {
        total += count;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_all_durable_in_order_and_replayed_exactly() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let log = Arc::new(JetStreamLog::open(&store, 0, 0, &Handle::current()));

    // One record at a time first: each is its own batch, so this is the latency of one.
    let started = Instant::now();
    for id in 0..20 {
        let seq = log
            .append(&Change {
                at_ms: id,
                images: Vec::new(),
            })
            .unwrap();
        log.wait_durable(seq).await.unwrap();
    }
    eprintln!("one-record batch: {:?} on average", started.elapsed() / 20);
    let mut expected: Vec<(u64, Change)> = (0..20)
        .map(|id| {
            (
                id + 1,
                Change {
                    at_ms: id,
                    images: Vec::new(),
                },
            )
        })
        .collect();

    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 500;
    let mut rng = seeded_rng("concurrent appends");
    let seeds: Vec<u64> = (0..THREADS).map(|_| rng.random()).collect();
    let started = Instant::now();
    let appenders: Vec<_> = seeds
        .into_iter()
        .enumerate()
        .map(|(thread, seed)| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
                (0..PER_THREAD)
                    .map(|n| {
                        let change = record(1_000_000 * (thread as u64 + 1) + n, &mut rng);
                        (log.append(&change).unwrap(), change)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for appender in appenders {
        expected.extend(appender.join().unwrap());
    }
    expected.sort_by_key(|(seq, _)| *seq);
    let last = expected.last().unwrap().0;
    assert_eq!(last, 20 + THREADS * PER_THREAD);
    log.wait_durable(last).await.unwrap();
    eprintln!(
        "{} records from {THREADS} threads durable in {:?}",
        THREADS * PER_THREAD,
        started.elapsed()
    );
    assert_eq!(log.durable_seq(), last);
    assert_eq!(log.failure(), None);

    let replayed = store.replay(0, 0).await.unwrap();
    let expected: Vec<Change> = expected.into_iter().map(|(_, change)| change).collect();
    assert_eq!(replayed.changes, expected);
    assert_eq!(replayed.last_seq, log.last_stream_seq());

    let messages = messages_on(&nats, 0).await;
    eprintln!("{} records in {messages} messages", expected.len());
    assert!(
        messages < expected.len() - 20,
        "group commit: {messages} messages for {} records",
        expected.len()
    );

    // Replaying from the middle gives the rest.
    let rest = store.replay(0, replayed.last_seq).await.unwrap();
    assert!(rest.changes.is_empty());
    assert_eq!(rest.last_seq, replayed.last_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_owner_can_no_longer_write() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("fencing");
    let partition = 3;

    let owner_a = JetStreamLog::open(&store, partition, 0, &Handle::current());
    let before: Vec<Change> = (0..10).map(|id| record(id, &mut rng)).collect();
    for change in &before {
        owner_a.append(change).unwrap();
    }
    owner_a.wait_durable(10).await.unwrap();

    // B takes over while A believes it still owns the partition (paused, cut off).
    let replayed = store.replay(partition, 0).await.unwrap();
    assert_eq!(replayed.changes, before);
    let owner_b = JetStreamLog::open(&store, partition, replayed.last_seq, &Handle::current());
    let fence = owner_b.fence().await.unwrap();
    assert!(fence > replayed.last_seq);
    assert_eq!(owner_b.last_stream_seq(), fence);

    let late = owner_a.append(&record(100, &mut rng)).unwrap();
    let refused = owner_a.wait_durable(late).await.unwrap_err();
    assert!(refused.0.contains("another owner"), "{refused}");
    assert!(owner_a.failure().is_some());
    assert!(owner_a.append(&record(101, &mut rng)).is_err());
    assert_eq!(owner_a.durable_seq(), 10);

    let after = record(200, &mut rng);
    let seq = owner_b.append(&after).unwrap();
    owner_b.wait_durable(seq).await.unwrap();

    let journal = store.replay(partition, 0).await.unwrap();
    let mut expected = before;
    expected.push(after);
    assert_eq!(journal.changes, expected, "nothing A wrote after the fence");
    assert_eq!(journal.last_seq, owner_b.last_stream_seq());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_after_a_write_the_replay_missed_fails_and_poisons() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("stale fence");
    let owner_a = JetStreamLog::open(&store, 1, 0, &Handle::current());
    let replayed = store.replay(1, 0).await.unwrap();
    let seq = owner_a.append(&record(1, &mut rng)).unwrap();
    owner_a.wait_durable(seq).await.unwrap();

    let owner_b = JetStreamLog::open(&store, 1, replayed.last_seq, &Handle::current());
    assert!(owner_b.fence().await.is_err());
    assert!(owner_b.failure().is_some());
    assert!(owner_b.fence().await.is_err(), "poisoned for good");
    assert!(owner_b.append(&record(2, &mut rng)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_flushes_then_refuses() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("close");
    let log = JetStreamLog::open(&store, 2, 0, &Handle::current());
    for id in 0..5 {
        log.append(&record(id, &mut rng)).unwrap();
    }
    log.close().await.unwrap();
    assert_eq!(log.durable_seq(), 5);
    assert!(log.append(&record(6, &mut rng)).is_err());
    assert!(log.failure().unwrap().contains("closed"));
    assert_eq!(store.replay(2, 0).await.unwrap().changes.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_killing_the_stream_leader() {
    let mut nats = NatsCluster::start(3).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("kill a server");
    let partition = 5;
    let log = Arc::new(JetStreamLog::open(&store, partition, 0, &Handle::current()));
    let changes: Vec<Change> = (0..3_000).map(|id| record(id, &mut rng)).collect();

    // One record at a time first: the latency of one batch with three replicas.
    let started = Instant::now();
    for change in &changes[..20] {
        let seq = log.append(change).unwrap();
        log.wait_durable(seq).await.unwrap();
    }
    eprintln!(
        "one-record batch, 3 replicas: {:?} on average",
        started.elapsed() / 20
    );

    let appender = {
        let log = Arc::clone(&log);
        let changes = changes.clone();
        std::thread::spawn(move || {
            for change in &changes[20..changes.len() - 1] {
                if log.append(change).is_err() {
                    break;
                }
                // A steady trickle, so that appends are in flight when the server dies.
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    eventually("100 durable records", Duration::from_secs(10), || {
        let durable = log.durable_seq();
        async move { (durable >= 100).then_some(()) }
    })
    .await;

    let jetstream = raw_jetstream(&nats).await;
    let leader = jetstream
        .get_stream(JOURNAL_STREAM)
        .await
        .unwrap()
        .cached_info()
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .unwrap();
    let index = (0..nats.len()).find(|&n| nats.name(n) == leader).unwrap();
    let durable_at_kill = log.durable_seq();
    let killed = Instant::now();
    tokio::task::block_in_place(|| nats.kill(index)).unwrap();
    appender.join().unwrap();
    eventually("the log to settle", Duration::from_secs(10), || {
        let settled = log.durable_seq() == log.appended_seq() || log.failure().is_some();
        async move { settled.then_some(()) }
    })
    .await;
    let durable = log.durable_seq();
    eprintln!(
        "killed the stream leader {leader} at {durable_at_kill} durable records; {durable} \
         durable in the end; log failure: {:?}",
        log.failure()
    );

    // A new owner replays and fences, as a node taking over does. A replay right after the
    // election may not yet see the newest messages (the new leader may not have applied them
    // all yet), but then the fence, which names the last message the replay saw, is refused,
    // and the new owner starts over: a replay followed by a successful fence saw everything.
    let (replayed, successor) = eventually("a new owner to fence", Duration::from_secs(15), || {
        let store = store.clone();
        async move {
            let replayed = store
                .replay(partition, 0)
                .await
                .inspect_err(|error| eprintln!("replay: {error}"))
                .ok()?;
            let log = JetStreamLog::open(&store, partition, replayed.last_seq, &Handle::current());
            let fenced = log.fence().await;
            eprintln!(
                "{} records replayed {:?} after the kill; fence: {fenced:?}",
                replayed.changes.len(),
                killed.elapsed()
            );
            fenced.ok()?;
            Some((replayed, log))
        }
    })
    .await;

    // Every acknowledged record is there, in order; records after them only if the server
    // stored them (their acknowledgment may have been lost with the server).
    let stored = replayed.changes.len();
    assert!(
        stored as u64 >= durable,
        "{stored} stored, {durable} acknowledged"
    );
    assert_eq!(replayed.changes, changes[..stored]);

    // The new owner goes on, on the two servers left.
    let seq = successor.append(changes.last().unwrap()).unwrap();
    successor.wait_durable(seq).await.unwrap();
}

/// While one of three servers is down, JetStream (2.9) places about one ephemeral consumer in
/// three on it, and such a creation is never answered: a reader is still opened, by attempts
/// short enough to be made again. Twelve replays in a row all succeed (with one two-second
/// wait per creation instead, each would fail with a chance of about one in three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journals_are_read_while_a_server_is_down() {
    let mut nats = NatsCluster::start(3).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("read with a server down");
    let partition = 3;
    let log = JetStreamLog::open(&store, partition, 0, &Handle::current());
    let changes: Vec<Change> = (0..10).map(|id| record(id, &mut rng)).collect();
    for change in &changes {
        let seq = log.append(change).unwrap();
        log.wait_durable(seq).await.unwrap();
    }
    tokio::task::block_in_place(|| nats.kill(2)).unwrap();

    // The stream may have lost its leader with the server: wait out the election.
    eventually("a replay after the kill", Duration::from_secs(30), || {
        let store = store.clone();
        async move { store.replay(partition, 0).await.ok() }
    })
    .await;
    for attempt in 0..12 {
        let started = Instant::now();
        let replayed = store
            .replay(partition, 0)
            .await
            .unwrap_or_else(|error| panic!("replay {attempt} failed: {error}"));
        assert_eq!(replayed.changes, changes);
        eprintln!(
            "replay {attempt} with a server down: {:?}",
            started.elapsed()
        );
    }
}
