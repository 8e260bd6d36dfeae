//! Snapshots in the object store, trimming, and the hot standby, with a real matchmaker
//! journaling through the replicated log.

use std::sync::Arc;
use std::time::Duration;

use matchwell_actors::change_log::ChangeLog;
use matchwell_actors::clock::ManualClock;
use matchwell_actors::matchmaker::{
    ChallengeRequest, EnqueueRequest, Matchmaker, MatchmakerConfig, partition_id_base,
};
use matchwell_actors::model::ColorChoice;
use matchwell_actors::persist::{Change, Restored};
use matchwell_actors::pools::{PoolCatalog, PoolSpec};
use matchwell_cluster::{ClusterStore, Follower, JetStreamLog, ReplayError};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::runtime::Handle;

use crate::support::{connect, seeded_rng};
use matchwell_cluster::testkit::NatsCluster;

/// A partition's matchmaker journaling to JetStream, and its log.
struct Partition {
    number: u32,
    engine: Matchmaker,
    log: Arc<JetStreamLog>,
    clock: Arc<ManualClock>,
    users: u64,
}

impl Partition {
    fn start(store: &ClusterStore, partition: u32) -> Self {
        let log = Arc::new(JetStreamLog::open(store, partition, 0, &Handle::current()));
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut config = MatchmakerConfig::new(PoolCatalog::builtin());
        config.clock = clock.clone();
        config.shards = 1;
        config.id_base = partition_id_base(partition);
        config.journal = Some(log.clone());
        config.acknowledge_durable = true;
        Self {
            number: partition,
            engine: Matchmaker::start(config).unwrap(),
            log,
            clock,
            users: 0,
        }
    }

    /// Some players join, some leave, a wave pairs some and their games are created, two
    /// players exchange challenges; then time passes. Games are created before anything is captured because a pending match's
    /// image differs between the two: its wave's record has no game job yet (the job is
    /// scheduled after the record), a capture has it; recovery gives either a fresh job.
    async fn play(&mut self, rng: &mut ChaCha8Rng) {
        let pool = PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap();
        let mut joined = Vec::new();
        for _ in 0..40 {
            self.users += 1;
            let entry = self
                .engine
                .enqueue(EnqueueRequest {
                    tenant: "acme".into(),
                    user_id: format!("user-{}", self.users).into(),
                    pool: pool.clone(),
                    rating: rng.random_range(1_000..2_000),
                    idempotency_key: None,
                })
                .await
                .unwrap();
            joined.push(entry.id);
        }
        for id in joined.iter().filter(|_| rng.random_bool(0.2)) {
            self.engine.cancel("acme", *id).await.unwrap();
        }
        self.engine.run_waves(true).await.unwrap();
        self.engine.tick().await.unwrap();
        for (challenger, opponent) in [("erin", "frank"), ("frank", "erin")] {
            let challenge = self
                .engine
                .create_challenge(ChallengeRequest {
                    tenant: "acme".into(),
                    challenger_id: challenger.into(),
                    opponent_id: opponent.into(),
                    time_control: "3+2".parse().unwrap(),
                    variant: "standard".into(),
                    rated: rng.random_bool(0.5),
                    color: ColorChoice::Random,
                    expires_in: None,
                })
                .await
                .unwrap();
            if rng.random_bool(0.5) {
                self.engine
                    .decline_challenge("acme", opponent, challenge.id)
                    .await
                    .unwrap();
            } else {
                self.engine
                    .cancel_challenge("acme", challenger, challenge.id)
                    .await
                    .unwrap();
            }
        }
        self.clock.advance(Duration::from_secs(5));
    }

    async fn durable(&self) {
        let appended = self.log.appended_seq();
        self.log.wait_durable(appended).await.unwrap();
    }

    /// Notes the log's last sequence, then captures: everything the capture may miss comes
    /// after it. Returns the sequence the snapshot covers.
    async fn snapshot(&self, store: &ClusterStore) -> u64 {
        let covered = self.log.last_stream_seq();
        store
            .save_snapshot(self.number, &self.engine.capture(), covered)
            .await
            .unwrap();
        covered
    }
}

/// Two recovered states are equal. `Restored` has no equality of its own; its debug text
/// lists every item in key order (the tests use no idempotency keys, the one map without an
/// order).
fn assert_same_state(left: &Restored, right: &Restored) {
    let (left, right) = (format!("{left:?}"), format!("{right:?}"));
    if let Some(at) = left.bytes().zip(right.bytes()).position(|(l, r)| l != r) {
        let around =
            |text: &str| text[at.saturating_sub(300)..(at + 300).min(text.len())].to_owned();
        panic!(
            "the states differ at byte {at}:\n  left: …{}…\n right: …{}…",
            around(&left),
            around(&right)
        );
    }
    assert_eq!(
        left.len(),
        right.len(),
        "one state is a prefix of the other"
    );
}

fn replayed(
    snapshot: Option<matchwell_actors::persist::SnapshotBody>,
    changes: Vec<Change>,
) -> Restored {
    let mut restored = Restored::from_snapshot(snapshot);
    for change in changes {
        restored.apply(change);
    }
    restored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_and_the_trimmed_journal_restore_what_the_full_journal_does() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("snapshot and trim");
    let mut partition = Partition::start(&store, 2);
    assert!(store.load_latest_snapshot(2).await.unwrap().is_none());

    partition.play(&mut rng).await;
    partition.durable().await;
    let covered = partition.snapshot(&store).await;
    partition.play(&mut rng).await;
    partition.play(&mut rng).await;
    partition.durable().await;

    let full = store.replay(2, 0).await.unwrap();
    let from_scratch = replayed(None, full.changes);

    let trimmed = store.trim_journal(2, covered).await.unwrap();
    assert!(trimmed > 0);
    let loaded = store.load_latest_snapshot(2).await.unwrap().unwrap();
    assert_eq!(loaded.covered_seq, covered);
    let rest = store.replay(2, loaded.covered_seq).await.unwrap();
    assert_eq!(rest.last_seq, full.last_seq);
    assert_same_state(&replayed(Some(loaded.body), rest.changes), &from_scratch);

    // The trimmed part is gone, and a replay from before it says so.
    assert!(matches!(
        store.replay(2, 0).await,
        Err(ReplayError::Gap { .. })
    ));

    // Trimming everything keeps the last message: the owner goes on writing after it.
    store.trim_journal(2, full.last_seq).await.unwrap();
    assert_eq!(store.journal_end(2).await.unwrap(), full.last_seq);
    partition.play(&mut rng).await;
    partition.durable().await;
    assert_eq!(partition.log.failure(), None);
    partition.engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_to_what_a_full_replay_restores() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("follower");
    let mut partition = Partition::start(&store, 6);
    partition.play(&mut rng).await;
    partition.durable().await;
    let covered = partition.snapshot(&store).await;

    let follower = Follower::start(&store, 6).await.unwrap();
    assert_eq!(follower.applied_seq(), covered);
    for _ in 0..3 {
        partition.play(&mut rng).await;
    }
    partition.durable().await;
    // The owner snapshots and trims while the follower follows.
    let covered = partition.snapshot(&store).await;
    store.trim_journal(6, covered).await.unwrap();
    partition.play(&mut rng).await;
    partition.durable().await;

    let (restored, last_seq) = follower.catch_up().await.unwrap();
    assert_eq!(last_seq, partition.log.last_stream_seq());
    let snapshot = store.load_latest_snapshot(6).await.unwrap().unwrap();
    let rest = store.replay(6, snapshot.covered_seq).await.unwrap();
    assert_same_state(&restored, &replayed(Some(snapshot.body), rest.changes));
    partition.engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_a_journal_of_one_message_keeps_it() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let mut rng = seeded_rng("trim one message");
    let log = JetStreamLog::open(&store, 3, 0, &Handle::current());
    let seq = log.append(&crate::support::record(1, &mut rng)).unwrap();
    log.wait_durable(seq).await.unwrap();
    assert_eq!(
        store.trim_journal(3, log.last_stream_seq()).await.unwrap(),
        0
    );
    assert_eq!(store.journal_end(3).await.unwrap(), log.last_stream_seq());
    let seq = log.append(&crate::support::record(2, &mut rng)).unwrap();
    log.wait_durable(seq).await.unwrap();
    assert_eq!(store.replay(3, 0).await.unwrap().changes.len(), 2);
}
