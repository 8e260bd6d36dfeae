//! The engine's data directory: what one engine writes, the next one reads back.

use std::time::Duration;

use matchwell::{
    ChallengeRequest, ColorChoice, Engine, EngineBuilder, EnqueueRequest, EntryStatus, FsyncMode,
    ManualClock, MatchmakerError, PersistenceConfig, PoolSpec,
};
use std::sync::Arc;

fn pool(time_control: &str) -> PoolSpec {
    PoolSpec::new(time_control.parse().unwrap(), "standard", true, None).unwrap()
}

fn enqueue(user: &str, time_control: &str, rating: u16, key: Option<&str>) -> EnqueueRequest {
    EnqueueRequest {
        tenant: "acme".into(),
        user_id: user.into(),
        pool: pool(time_control),
        rating,
        idempotency_key: key.map(Into::into),
    }
}

async fn start(dir: &std::path::Path, at_ms: u64, fsync: FsyncMode) -> (Engine, Arc<ManualClock>) {
    let (builder, clock): (EngineBuilder, _) = Engine::builder().manual(at_ms);
    let mut config = PersistenceConfig::new(dir);
    config.fsync = fsync;
    let engine = builder.shards(2).persistence(config).start().await.unwrap();
    (engine, clock)
}

#[tokio::test]
async fn a_restart_brings_back_entries_matches_challenges_and_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = start(dir.path(), 1_000, FsyncMode::Always).await;
    let waiting = engine
        .enqueue(enqueue("alice", "5+3", 1500, Some("k1")))
        .await
        .unwrap();
    let cancelled = engine
        .enqueue(enqueue("bob", "3+0", 1500, None))
        .await
        .unwrap();
    engine.cancel("acme", cancelled.id).await.unwrap();
    let carol = engine
        .enqueue(enqueue("carol", "10+0", 1500, None))
        .await
        .unwrap();
    let dave = engine
        .enqueue(enqueue("dave", "10+0", 1520, None))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(500));
    let report = engine.tick().await.unwrap();
    assert_eq!(report.queues.pairs, 1);
    let challenge = engine
        .create_challenge(ChallengeRequest {
            tenant: "acme".into(),
            challenger_id: "erin".into(),
            opponent_id: "frank".into(),
            time_control: "5+3".parse().unwrap(),
            variant: "standard".into(),
            rated: false,
            color: ColorChoice::Random,
            expires_in: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    let before = [waiting.id, cancelled.id, carol.id, dave.id].map(|id| engine.entry("acme", id));
    engine.shutdown().await;

    let (engine, _) = start(dir.path(), 1_500, FsyncMode::Always).await;
    let after = [waiting.id, cancelled.id, carol.id, dave.id].map(|id| engine.entry("acme", id));
    assert_eq!(after, before);
    assert_eq!(after[2].as_ref().unwrap().status, EntryStatus::Matched);
    assert_eq!(
        engine.challenge("acme", "frank", challenge.id),
        Some(challenge.clone())
    );
    assert_eq!(engine.incoming_challenges("acme", "frank"), vec![challenge]);
    let again = engine
        .enqueue(enqueue("alice", "5+3", 1500, Some("k1")))
        .await
        .unwrap();
    assert_eq!(again.id, waiting.id, "the idempotency key survived");
    assert!(matches!(
        engine.enqueue(enqueue("alice", "5+3", 1500, None)).await,
        Err(MatchmakerError::AlreadyQueued(existing)) if existing.id == waiting.id
    ));
    let fresh = engine
        .enqueue(enqueue("gina", "5+3", 1500, None))
        .await
        .unwrap();
    assert!(fresh.id > dave.id, "ids keep increasing after a restart");
    engine.shutdown().await;
}

#[tokio::test]
async fn journaled_changes_survive_without_a_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = start(dir.path(), 0, FsyncMode::Always).await;
    let alice = engine
        .enqueue(enqueue("alice", "5+3", 1500, None))
        .await
        .unwrap();
    let bob = engine
        .enqueue(enqueue("bob", "5+3", 1510, None))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(200));
    engine.tick().await.unwrap();
    let matched = engine.entry("acme", alice.id).unwrap();
    assert_eq!(matched.status, EntryStatus::Matched);
    // Dropped without `shutdown`: nothing but the journal records what happened after the
    // snapshot taken at start.
    drop(engine);

    let (engine, _) = start(dir.path(), 10_000, FsyncMode::Always).await;
    assert_eq!(engine.entry("acme", alice.id).unwrap().found, matched.found);
    assert_eq!(
        engine.entry("acme", bob.id).unwrap().status,
        EntryStatus::Matched
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn waiting_time_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = start(
        dir.path(),
        0,
        FsyncMode::Batch {
            interval: Duration::from_millis(5),
        },
    )
    .await;
    let alice = engine
        .enqueue(enqueue("alice", "5+3", 1500, None))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    let waited = engine.entry("acme", alice.id).unwrap();
    assert_eq!(waited.wait_ms, 30_000);
    engine.shutdown().await;

    // Ten minutes down: longer than max_wait, yet the entry neither expired nor widened.
    let (engine, _) = start(dir.path(), 630_000, FsyncMode::Always).await;
    let resumed = engine.entry("acme", alice.id).unwrap();
    assert_eq!(resumed.status, EntryStatus::Searching);
    assert_eq!(resumed.wait_ms, 30_000);
    assert_eq!(resumed.window, waited.window);
    engine.shutdown().await;
}
