//! The engine's data directory: what one engine writes, the next one reads back.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use compact_str::CompactString;
use futures::future::BoxFuture;
use matchwell::{
    ChallengeRequest, ColorChoice, Engine, EngineBuilder, EnqueueRequest, EntryStatus, FsyncMode,
    GameCreationError, GameCreator, GameRequest, ManualClock, MatchmakerError, PersistenceConfig,
    PoolSpec,
};

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
    start_with(dir, at_ms, fsync, |builder| builder).await
}

async fn start_with(
    dir: &std::path::Path,
    at_ms: u64,
    fsync: FsyncMode,
    configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> (Engine, Arc<ManualClock>) {
    let (builder, clock): (EngineBuilder, _) = Engine::builder().manual(at_ms);
    let mut config = PersistenceConfig::new(dir);
    config.fsync = fsync;
    let engine = configure(builder.shards(2).persistence(config))
        .start()
        .await
        .unwrap();
    (engine, clock)
}

/// A live-game service that is down at the first call and refuses every later one.
#[derive(Default)]
struct DownThenRefusing {
    calls: AtomicUsize,
}

impl GameCreator for DownThenRefusing {
    fn create_game(
        &self,
        _request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        let outcome = if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            GameCreationError::transient("503 Service Unavailable")
        } else {
            GameCreationError::Permanent("400 Bad Request".into())
        };
        Box::pin(std::future::ready(Err(outcome)))
    }
}

/// The statuses of `ids`, in order.
fn statuses(engine: &Engine, ids: &[matchwell::EntryId]) -> Vec<EntryStatus> {
    ids.iter()
        .map(|&id| engine.entry("acme", id).unwrap().status)
        .collect()
}

/// Alice and Bob are matched; while the game is pending Alice queues again; then the game
/// fails for good. Alice's new search stands and her matched entry ends cancelled (it cannot
/// go back: one search per user), Bob searches again; a restart, graceful or not, reads the
/// same and never revives the old entry in place of the new one.
#[tokio::test]
async fn a_failed_match_never_takes_the_place_of_its_players_new_search() {
    for graceful in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let creator = || Arc::new(DownThenRefusing::default()) as Arc<dyn GameCreator>;
        let (engine, clock) = start_with(dir.path(), 1_000_000, FsyncMode::Always, |builder| {
            builder.game_creator(creator())
        })
        .await;
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
        let again = engine
            .enqueue(enqueue("alice", "5+3", 1500, None))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
        engine.tick().await.unwrap();
        let ids = [alice.id, bob.id, again.id];
        let expected = vec![
            EntryStatus::Cancelled,
            EntryStatus::Searching,
            EntryStatus::Searching,
        ];
        assert_eq!(statuses(&engine, &ids), expected, "graceful: {graceful}");
        let before = ids.map(|id| engine.entry("acme", id));
        if graceful {
            engine.shutdown().await;
        } else {
            drop(engine);
        }

        let (engine, _) = start_with(dir.path(), 1_001_200, FsyncMode::Always, |builder| {
            builder.game_creator(creator())
        })
        .await;
        assert_eq!(
            ids.map(|id| engine.entry("acme", id)),
            before,
            "graceful: {graceful}"
        );
        assert_eq!(
            engine.active("acme", "alice").searching.unwrap().id,
            again.id
        );
        engine.shutdown().await;
    }
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
    // Dropped without `shutdown`: nothing but the journal records what happened.
    drop(engine);

    let (engine, _) = start(dir.path(), 10_000, FsyncMode::Always).await;
    // The match is journaled with the wave; its game is created afterwards and may or may not
    // have been journaled before the drop (if not, it is created again after the restart).
    let before = matched.found.unwrap();
    let after = engine.entry("acme", alice.id).unwrap().found.unwrap();
    assert_eq!(
        (
            after.match_id,
            &after.pool,
            &after.players,
            after.created_at_ms
        ),
        (
            before.match_id,
            &before.pool,
            &before.players,
            before.created_at_ms
        )
    );
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
    // A change and then a crash, before any snapshot: the change tells the next start that the
    // engine was up until then, so the first shift must be in the journal too.
    engine
        .enqueue(enqueue("bob", "3+0", 1500, None))
        .await
        .unwrap();
    drop(engine);

    let (engine, _) = start(dir.path(), 700_000, FsyncMode::Always).await;
    let resumed = engine.entry("acme", alice.id).unwrap();
    assert_eq!(resumed.status, EntryStatus::Searching);
    assert_eq!(resumed.wait_ms, 30_000);
    engine.shutdown().await;
}

/// A committed data directory written by an earlier build.
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Format version 1 with named snapshot bodies (structs as MessagePack maps).
const DATA_V1: &str = "data-v1";
/// Format version 1 with positional snapshot bodies (structs as arrays), which this build
/// writes.
const DATA_V1_POSITIONAL: &str = "data-v1-positional";

/// What the fixtures hold: alice matched with bob (in the snapshot), carol searching with key
/// "k-carol" (in the snapshot), dave searching and erin's challenge to frank (only in the
/// journal, after the snapshot).
async fn write_fixture_operations(engine: &Engine, clock: &ManualClock) {
    for (user, rating, key) in [
        ("alice", 1500, None),
        ("bob", 1510, None),
        ("carol", 2400, Some("k-carol")),
    ] {
        engine
            .enqueue(enqueue(user, "5+3", rating, key))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_millis(200));
    engine.tick().await.unwrap();
    engine.snapshot_now().await.unwrap();
    engine
        .enqueue(enqueue("dave", "3+0", 1700, None))
        .await
        .unwrap();
    engine
        .create_challenge(ChallengeRequest {
            tenant: "acme".into(),
            challenger_id: "erin".into(),
            opponent_id: "frank".into(),
            time_control: "10+0".parse().unwrap(),
            variant: "standard".into(),
            rated: true,
            color: ColorChoice::White,
            expires_in: Some(Duration::from_secs(3_600)),
        })
        .await
        .unwrap();
}

/// Writes the fixture of what this build writes; run by hand only when the files it writes
/// change (and then into a new directory, keeping the old fixtures).
#[tokio::test]
#[ignore = "writes a committed fixture"]
async fn write_current_fixture() {
    let dir = fixture(DATA_V1_POSITIONAL);
    let _ = std::fs::remove_dir_all(&dir);
    let (engine, clock) = start(&dir, 1_000_000, FsyncMode::Always).await;
    write_fixture_operations(&engine, &clock).await;
    drop(engine);
}

/// Loads a copy of fixture `name` and checks everything [`write_fixture_operations`] did.
async fn assert_fixture_loads(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(fixture(name)).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), dir.path().join(file.file_name())).unwrap();
    }
    let (engine, _) = start(dir.path(), 2_000_000, FsyncMode::Always).await;
    let recovery = engine.recovery().unwrap();
    assert!(
        recovery.snapshot.is_some() && recovery.replayed > 0,
        "{name}: {recovery:?}"
    );
    let alice = engine.active("acme", "alice").recent_match.unwrap();
    let bob = engine.active("acme", "bob").recent_match.unwrap();
    assert_eq!(alice, bob);
    let carol = engine.active("acme", "carol").searching.unwrap();
    assert_eq!(carol.rating, 2400);
    let again = engine
        .enqueue(enqueue("carol", "5+3", 2400, Some("k-carol")))
        .await
        .unwrap();
    assert_eq!(again.id, carol.id);
    let dave = engine.active("acme", "dave").searching.unwrap();
    assert_eq!(dave.pool, pool("3+0"));
    let incoming = engine.incoming_challenges("acme", "frank");
    assert_eq!(incoming.len(), 1);
    assert_eq!(incoming[0].challenger_id, "erin");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_data_directory_with_named_snapshot_bodies_still_loads() {
    assert_fixture_loads(DATA_V1).await;
}

#[tokio::test]
async fn a_data_directory_with_positional_snapshot_bodies_still_loads() {
    assert_fixture_loads(DATA_V1_POSITIONAL).await;
}

/// Written by a build that journaled a failed match apart from its players' return, and did
/// not journal a refused return: Alice's entry q_1 was matched with Bob's q_2, the game failed
/// for good after Alice had queued again as q_3, and q_1 stayed matched to the failed match.
/// That build, restarting, put q_1 back in the queue and cancelled q_3.
const DATA_V1_REFUSED_REQUEUE: &str = "data-v1-refused-requeue";

#[tokio::test]
async fn a_failed_match_left_unfinished_by_an_earlier_build_ends_without_reviving_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(fixture(DATA_V1_REFUSED_REQUEUE)).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), dir.path().join(file.file_name())).unwrap();
    }
    let ids = ["q_1", "q_2", "q_3"].map(|id| id.parse().unwrap());
    let expected = vec![
        EntryStatus::Cancelled,
        EntryStatus::Searching,
        EntryStatus::Searching,
    ];
    let (engine, _) = start(dir.path(), 2_000_000, FsyncMode::Always).await;
    assert_eq!(statuses(&engine, &ids), expected);
    assert_eq!(engine.active("acme", "alice").searching.unwrap().id, ids[2]);
    // The end of q_1 was journaled: a crash now and a restart read the same.
    drop(engine);
    let (engine, _) = start(dir.path(), 2_000_100, FsyncMode::Always).await;
    assert_eq!(statuses(&engine, &ids), expected);
    engine.shutdown().await;
}

#[test]
fn a_snapshot_is_described_with_its_counts() {
    let snapshot = fixture(DATA_V1).join("snapshot-00000000000000000002.mws");
    let text = matchwell::persistence::describe_snapshot(&snapshot).unwrap();
    assert!(text.contains("format version: 1"), "{text}");
    assert!(text.contains("searching: 1"), "{text}");
    assert!(
        text.contains("pending_games: 1") || text.contains("matches: 1"),
        "{text}"
    );
    let damaged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(damaged.path(), b"not a snapshot").unwrap();
    assert!(matchwell::persistence::describe_snapshot(damaged.path()).is_err());
}
