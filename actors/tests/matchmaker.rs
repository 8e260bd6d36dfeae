//! The matchmaker end to end on a manual clock: actors, index, waves, challenges, game jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use compact_str::CompactString;
use futures::future::BoxFuture;
use matchwell_actors::clock::ManualClock;
use matchwell_actors::error::MatchmakerError;
use matchwell_actors::games::{GameCreationError, GameCreator, GameRequest, RetryPolicy};
use matchwell_actors::matchmaker::{
    ChallengeRequest, EnqueueRequest, Matchmaker, MatchmakerConfig,
};
use matchwell_actors::model::{
    ChallengeStatus, Color, ColorChoice, EntryStatus, GameStatus, MatchEvent,
};
use matchwell_actors::pools::{PoolCatalog, PoolSpec};
use matchwell_actors::{ChallengeRefusal, ShardTimers};

const START_MS: u64 = 1_700_000_000_000;

fn pool(time_control: &str) -> PoolSpec {
    PoolSpec::new(time_control.parse().unwrap(), "standard", true, None).unwrap()
}

fn request(tenant: &str, user: &str, time_control: &str, rating: u16) -> EnqueueRequest {
    EnqueueRequest {
        tenant: tenant.into(),
        user_id: user.into(),
        pool: pool(time_control),
        rating,
        idempotency_key: None,
    }
}

struct Harness {
    clock: Arc<ManualClock>,
    engine: Matchmaker,
}

fn harness_with(configure: impl FnOnce(&mut MatchmakerConfig)) -> Harness {
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut config = MatchmakerConfig::new(PoolCatalog::builtin());
    config.clock = clock.clone();
    config.shards = 2;
    config.timers = ShardTimers::default();
    configure(&mut config);
    Harness {
        clock,
        engine: Matchmaker::start(config).unwrap(),
    }
}

fn harness() -> Harness {
    harness_with(|_| {})
}

#[tokio::test]
async fn two_close_players_are_matched_against_each_other() {
    let Harness { engine, .. } = harness();
    let mut events = engine.events();
    let alice = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    let bob = engine
        .enqueue(request("acme", "bob", "5+3", 1540))
        .await
        .unwrap();
    assert_eq!(alice.status, EntryStatus::Searching);
    assert_eq!(alice.window, 100);
    let report = engine.tick().await.unwrap();
    assert_eq!(report.queues.pairs, 1);
    assert_eq!(report.game_attempts, 1, "the tick creates the game");

    let alice = engine.entry("acme", alice.id).unwrap();
    let bob = engine.entry("acme", bob.id).unwrap();
    assert_eq!(
        (alice.status, bob.status),
        (EntryStatus::Matched, EntryStatus::Matched)
    );
    let found = alice.found.clone().unwrap();
    assert_eq!(Some(&found), bob.found.as_ref());
    assert!(found.player("alice").is_some() && found.player("bob").is_some());
    assert_ne!(found.players[0].color, found.players[1].color);
    assert_eq!(found.players[0].color, Color::White);
    assert_eq!(found.game_status, GameStatus::Created);
    assert_eq!(
        found.game_id.as_deref(),
        Some(format!("g_{}", found.match_id).as_str())
    );

    let MatchEvent::Matched { found: announced } = events.recv().await.unwrap() else {
        panic!("first event is the match")
    };
    assert_eq!(announced.match_id, found.match_id);
    assert!(matches!(
        events.recv().await.unwrap(),
        MatchEvent::GameCreated { .. }
    ));
    assert_eq!(
        engine
            .active("acme", "alice")
            .recent_match
            .unwrap()
            .match_id,
        found.match_id
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let Harness { engine, .. } = harness();
    let long = "x".repeat(65);
    let cases = [
        (request("acme", "", "5+3", 1500), "user_id"),
        (request("acme", &long, "5+3", 1500), "user_id"),
        (request("acme", " alice", "5+3", 1500), "user_id"),
        (request("acme", "al\u{7}ice", "5+3", 1500), "user_id"),
        (request("", "alice", "5+3", 1500), "tenant"),
        (request("acme", "alice", "5+3", 4001), "rating"),
        (
            EnqueueRequest {
                idempotency_key: Some("k".repeat(129).into()),
                ..request("acme", "alice", "5+3", 1500)
            },
            "idempotency_key",
        ),
    ];
    for (bad, field) in cases {
        match engine.enqueue(bad).await {
            Err(MatchmakerError::Invalid { field: refused, .. }) => assert_eq!(refused, field),
            other => panic!("expected an invalid {field}, got {other:?}"),
        }
    }
    let unknown = engine.enqueue(request("acme", "alice", "7+7", 1500)).await;
    assert!(
        matches!(unknown, Err(MatchmakerError::UnknownPool(_))),
        "{unknown:?}"
    );
    assert_eq!(engine.active("acme", "alice").searching, None);
    let first = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    assert_eq!(
        first.id.get(),
        1,
        "refused requests created nothing, not even an id"
    );
    assert_eq!(
        engine.active("acme", "alice").searching.unwrap().id,
        first.id
    );
}

#[tokio::test]
async fn one_searching_entry_per_user_per_tenant_and_idempotent_retries() {
    let Harness { engine, .. } = harness();
    let first = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    match engine.enqueue(request("acme", "alice", "3+2", 1500)).await {
        Err(MatchmakerError::AlreadyQueued(existing)) => assert_eq!(existing.id, first.id),
        other => panic!("expected ALREADY_QUEUED, got {other:?}"),
    }
    let elsewhere = engine
        .enqueue(request("globex", "alice", "5+3", 1500))
        .await
        .unwrap();
    assert_ne!(
        elsewhere.id, first.id,
        "another tenant's alice is another user"
    );

    let keyed = || EnqueueRequest {
        idempotency_key: Some("retry-1".into()),
        ..request("acme", "bob", "5+3", 1900)
    };
    let once = engine.enqueue(keyed()).await.unwrap();
    let twice = engine.enqueue(keyed()).await.unwrap();
    assert_eq!(once.id, twice.id, "the same key yields the same entry");
    let other_key = EnqueueRequest {
        idempotency_key: Some("retry-2".into()),
        ..request("acme", "bob", "5+3", 1900)
    };
    assert!(matches!(
        engine.enqueue(other_key).await,
        Err(MatchmakerError::AlreadyQueued(_))
    ));
}

#[tokio::test]
async fn cancel_is_repeatable_and_refused_after_a_match() {
    let Harness { engine, .. } = harness();
    let alice = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    let cancelled = engine.cancel("acme", alice.id).await.unwrap();
    assert_eq!(cancelled.status, EntryStatus::Cancelled);
    assert_eq!(
        engine.cancel("acme", alice.id).await.unwrap().status,
        EntryStatus::Cancelled
    );
    assert!(matches!(
        engine.cancel("globex", alice.id).await,
        Err(MatchmakerError::NotFound)
    ));

    let bob = engine
        .enqueue(request("acme", "bob", "5+3", 1500))
        .await
        .unwrap();
    let carol = engine
        .enqueue(request("acme", "carol", "5+3", 1510))
        .await
        .unwrap();
    engine.tick().await.unwrap();
    assert!(matches!(
        engine.cancel("acme", bob.id).await,
        Err(MatchmakerError::NotCancellable(EntryStatus::Matched))
    ));
    assert_eq!(
        engine.entry("acme", carol.id).unwrap().status,
        EntryStatus::Matched
    );
    assert_eq!(
        engine.entry("acme", alice.id).unwrap().status,
        EntryStatus::Cancelled,
        "a cancelled player is never matched"
    );
    let again = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    assert_ne!(
        again.id, alice.id,
        "after a cancel the user may queue again"
    );
}

#[tokio::test]
async fn tenants_and_pools_are_isolated() {
    let Harness { engine, .. } = harness();
    let a = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    let b = engine
        .enqueue(request("globex", "bob", "5+3", 1500))
        .await
        .unwrap();
    let c = engine
        .enqueue(request("acme", "carol", "3+2", 1500))
        .await
        .unwrap();
    engine.tick().await.unwrap();
    for (tenant, id) in [("acme", a.id), ("globex", b.id), ("acme", c.id)] {
        assert_eq!(
            engine.entry(tenant, id).unwrap().status,
            EntryStatus::Searching
        );
    }
    assert_eq!(
        engine.entry("globex", a.id),
        None,
        "another tenant's entry is invisible"
    );
    assert_eq!(engine.entry("nobody", a.id), None);
    assert_eq!(engine.summary("acme").await.unwrap().len(), 2);
    assert_eq!(engine.summary("globex").await.unwrap()[0].searching, 1);
}

#[tokio::test]
async fn windows_widen_with_waiting_time_and_entries_expire() {
    let Harness { clock, engine } = harness();
    let alice = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    let bob = engine
        .enqueue(request("acme", "bob", "5+3", 1620))
        .await
        .unwrap();
    engine.tick().await.unwrap();
    assert_eq!(
        engine.entry("acme", alice.id).unwrap().status,
        EntryStatus::Searching
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(engine.entry("acme", alice.id).unwrap().window, 125);
    engine.tick().await.unwrap();
    assert_eq!(
        engine.entry("acme", bob.id).unwrap().status,
        EntryStatus::Matched
    );

    let lonely = engine
        .enqueue(request("acme", "carol", "5+3", 100))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(599));
    engine.tick().await.unwrap();
    assert_eq!(
        engine.entry("acme", lonely.id).unwrap().status,
        EntryStatus::Searching
    );
    assert_eq!(engine.entry("acme", lonely.id).unwrap().window, 500);
    clock.advance(Duration::from_secs(1));
    let report = engine.tick().await.unwrap();
    assert_eq!(report.queues.expired, 1);
    let expired = engine.entry("acme", lonely.id).unwrap();
    assert_eq!(expired.status, EntryStatus::Expired);
    assert_eq!(expired.wait_ms, 600_000);
    assert!(matches!(
        engine.cancel("acme", lonely.id).await,
        Err(MatchmakerError::NotCancellable(EntryStatus::Expired))
    ));
}

#[tokio::test]
async fn colors_alternate_for_players_who_meet_again() {
    let Harness { clock, engine } = harness();
    let mut last_white = None;
    for round in 0..4 {
        engine
            .enqueue(request("acme", "alice", "5+3", 1500))
            .await
            .unwrap();
        engine
            .enqueue(request("acme", "bob", "5+3", 1500))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
        engine.tick().await.unwrap();
        let found = engine.active("acme", "alice").recent_match.unwrap();
        let white = found.players[0].user_id.clone();
        if let Some(previous) = &last_white {
            assert_ne!(
                &white, previous,
                "round {round}: whoever had white last gets black"
            );
        }
        last_white = Some(white);
    }
}

/// A game creator that fails transiently a set number of times, then succeeds or fails for
/// good.
struct Flaky {
    transient_failures: usize,
    then_permanent: bool,
    calls: AtomicUsize,
    keys: parking_lot::Mutex<Vec<String>>,
}

impl GameCreator for Flaky {
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.keys.lock().push(request.match_id.clone());
        let outcome = if call < self.transient_failures {
            Err(GameCreationError::transient("503 Service Unavailable"))
        } else if self.then_permanent {
            Err(GameCreationError::Permanent("400 Bad Request".into()))
        } else {
            Ok(CompactString::from("game-1"))
        };
        Box::pin(std::future::ready(outcome))
    }
}

fn flaky(transient_failures: usize, then_permanent: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        transient_failures,
        then_permanent,
        calls: AtomicUsize::new(0),
        keys: Default::default(),
    })
}

#[tokio::test]
async fn game_creation_retries_after_a_jittered_backoff_under_the_same_key() {
    let creator = flaky(2, false);
    let Harness { clock, engine } = harness_with(|config| {
        config.game_creator = creator.clone();
        config.retry = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_attempts: 5,
            ..RetryPolicy::default()
        };
    });
    let alice = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    engine
        .enqueue(request("acme", "bob", "5+3", 1500))
        .await
        .unwrap();
    assert_eq!(engine.tick().await.unwrap().game_attempts, 1);
    assert_eq!(
        engine
            .entry("acme", alice.id)
            .unwrap()
            .found
            .unwrap()
            .game_status,
        GameStatus::Pending
    );
    // Each retry is drawn up to a ceiling that doubles: 100 ms after the first failure, 200
    // after the second.
    let mut failed_at = engine.now_ms();
    for ceiling in [100, 200] {
        let due = engine.next_game_job_due().expect("a retry is scheduled");
        assert!(
            (failed_at + 1..=failed_at + ceiling).contains(&due),
            "retry at +{} ms, ceiling {ceiling} ms",
            due - failed_at
        );
        clock.advance(Duration::from_millis(due - 1 - engine.now_ms()));
        assert_eq!(
            engine.tick().await.unwrap().game_attempts,
            0,
            "the retry waits for its backoff"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(engine.tick().await.unwrap().game_attempts, 1);
        failed_at = due;
    }
    let found = engine.entry("acme", alice.id).unwrap().found.unwrap();
    assert_eq!(
        (found.game_status, found.game_id.as_deref()),
        (GameStatus::Created, Some("game-1"))
    );
    let keys = creator.keys.lock().clone();
    assert_eq!(
        keys,
        vec![found.match_id.to_string(); 3],
        "every attempt uses the match id as key"
    );
}

#[tokio::test]
async fn a_game_that_cannot_be_created_puts_the_players_back_with_their_waiting_time() {
    let creator = flaky(0, true);
    let Harness { clock, engine } = harness_with(|config| config.game_creator = creator.clone());
    let alice = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(20));
    let bob = engine
        .enqueue(request("acme", "bob", "5+3", 1500))
        .await
        .unwrap();
    engine.tick().await.unwrap();
    let failed = engine.entry("acme", alice.id).unwrap();
    assert_eq!(failed.status, EntryStatus::Searching, "back in the queue");
    assert_eq!(
        failed.joined_at_ms, START_MS,
        "with the original joining time"
    );
    assert_eq!(failed.window, 150);
    assert_eq!(engine.active("acme", "bob").searching.unwrap().id, bob.id);
    // They are paired again at the next wave.
    clock.advance(Duration::from_secs(1));
    engine.tick().await.unwrap();
    assert_eq!(creator.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_challenge_lives_from_creation_to_acceptance() {
    let creator = flaky(1, false);
    let Harness { clock, engine } = harness_with(|config| config.game_creator = creator.clone());
    let challenge = |from: &str, to: &str| ChallengeRequest {
        tenant: "acme".into(),
        challenger_id: from.into(),
        opponent_id: to.into(),
        time_control: "5+3".parse().unwrap(),
        variant: "standard".into(),
        rated: true,
        color: ColorChoice::White,
        expires_in: Some(Duration::from_secs(30)),
    };
    let sent = engine
        .create_challenge(challenge("alice", "bob"))
        .await
        .unwrap();
    assert_eq!(sent.status, ChallengeStatus::Pending);
    assert!(
        matches!(engine.create_challenge(challenge("alice", "bob")).await, Err(MatchmakerError::Challenge(ChallengeRefusal::Duplicate(id))) if id == sent.id)
    );
    assert!(matches!(
        engine.create_challenge(challenge("alice", "alice")).await,
        Err(MatchmakerError::Invalid {
            field: "opponent_id",
            ..
        })
    ));
    let chess = ChallengeRequest {
        variant: "crazyhouse".into(),
        ..challenge("alice", "carol")
    };
    assert!(matches!(
        engine.create_challenge(chess).await,
        Err(MatchmakerError::UnknownPool(_))
    ));
    assert_eq!(engine.incoming_challenges("acme", "bob").len(), 1);
    assert_eq!(engine.outgoing_challenges("acme", "alice").len(), 1);
    assert!(engine.incoming_challenges("globex", "bob").is_empty());

    // The live-game service is down once: the challenge stays pending.
    assert!(matches!(
        engine.accept_challenge("acme", "bob", sent.id).await,
        Err(MatchmakerError::GameService(_))
    ));
    assert_eq!(
        engine.challenge("acme", "bob", sent.id).unwrap().status,
        ChallengeStatus::Pending
    );
    assert!(matches!(
        engine.accept_challenge("acme", "alice", sent.id).await,
        Err(MatchmakerError::Challenge(ChallengeRefusal::WrongParty(_)))
    ));
    let accepted = engine
        .accept_challenge("acme", "bob", sent.id)
        .await
        .unwrap();
    assert_eq!(
        (
            accepted.status,
            accepted.game_id.as_deref(),
            accepted.challenger_color
        ),
        (
            ChallengeStatus::Accepted,
            Some("game-1"),
            Some(Color::White)
        )
    );
    assert!(engine.incoming_challenges("acme", "bob").is_empty());
    assert!(matches!(
        engine.decline_challenge("acme", "bob", sent.id).await,
        Err(MatchmakerError::Challenge(ChallengeRefusal::NotPending(
            ChallengeStatus::Accepted
        )))
    ));

    let declined = engine
        .create_challenge(challenge("alice", "bob"))
        .await
        .unwrap();
    assert_eq!(
        engine
            .decline_challenge("acme", "bob", declined.id)
            .await
            .unwrap()
            .status,
        ChallengeStatus::Declined
    );
    let cancelled = engine
        .create_challenge(challenge("alice", "bob"))
        .await
        .unwrap();
    assert_eq!(
        engine
            .cancel_challenge("acme", "alice", cancelled.id)
            .await
            .unwrap()
            .status,
        ChallengeStatus::Cancelled
    );
    let expiring = engine
        .create_challenge(challenge("alice", "bob"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    assert_eq!(engine.tick().await.unwrap().expired_challenges, 1);
    assert_eq!(
        engine
            .challenge("acme", "alice", expiring.id)
            .unwrap()
            .status,
        ChallengeStatus::Expired
    );
    assert!(matches!(
        engine.accept_challenge("acme", "bob", expiring.id).await,
        Err(MatchmakerError::Challenge(ChallengeRefusal::NotPending(
            ChallengeStatus::Expired
        )))
    ));
}

#[tokio::test]
async fn settled_records_are_forgotten_after_the_retention_period() {
    let Harness { clock, engine } =
        harness_with(|config| config.retention = Duration::from_secs(60));
    let alice = engine
        .enqueue(request("acme", "alice", "5+3", 1500))
        .await
        .unwrap();
    let bob = engine
        .enqueue(request("acme", "bob", "5+3", 1500))
        .await
        .unwrap();
    let carol = engine
        .enqueue(request("acme", "carol", "5+3", 3000))
        .await
        .unwrap();
    engine.tick().await.unwrap();
    engine.cancel("acme", carol.id).await.unwrap();
    clock.advance(Duration::from_secs(59));
    engine.tick().await.unwrap();
    // Up to the end of the retention period the match still names its players, whose users
    // it reads through their entries.
    let found = engine
        .entry("acme", alice.id)
        .unwrap()
        .found
        .expect("matched");
    let mut users: Vec<&str> = found.players.iter().map(|p| p.user_id.as_str()).collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        engine.tick().await.unwrap().pruned,
        2,
        "the match and the cancelled entry"
    );
    for id in [alice.id, bob.id, carol.id] {
        assert_eq!(engine.entry("acme", id), None);
    }
    assert_eq!(engine.active("acme", "alice").recent_match, None);
}

/// A live-game service that never answers while `hanging`, and creates the game otherwise.
struct Hanging {
    hanging: std::sync::atomic::AtomicBool,
}

impl GameCreator for Hanging {
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        if self.hanging.load(Ordering::SeqCst) {
            Box::pin(std::future::pending())
        } else {
            Box::pin(std::future::ready(Ok(CompactString::from(format!(
                "g_{}",
                request.match_id
            )))))
        }
    }
}

#[tokio::test]
async fn an_accept_given_up_while_the_game_is_created_leaves_the_challenge_pending() {
    use futures::FutureExt;

    let creator = Arc::new(Hanging {
        hanging: true.into(),
    });
    let Harness { engine, .. } = harness_with(|config| config.game_creator = creator.clone());
    let challenge = || ChallengeRequest {
        tenant: "acme".into(),
        challenger_id: "alice".into(),
        opponent_id: "bob".into(),
        time_control: "5+3".parse().unwrap(),
        variant: "standard".into(),
        rated: true,
        color: ColorChoice::Random,
        expires_in: Some(Duration::from_secs(30)),
    };
    // Polled up to the live-game call, which hangs, then dropped: what a timeout or a
    // `select!` around the accept does. Each time the challenge is pending again, and the
    // opponent may decline it, the challenger cancel it, or the opponent accept it.
    let give_up_accepting = |id| {
        assert!(
            engine
                .accept_challenge("acme", "bob", id)
                .now_or_never()
                .is_none(),
            "the accept waits for the game"
        );
        assert_eq!(
            engine.challenge("acme", "bob", id).unwrap().status,
            ChallengeStatus::Pending
        );
        assert_eq!(engine.incoming_challenges("acme", "bob").len(), 1);
    };
    let first = engine.create_challenge(challenge()).await.unwrap();
    give_up_accepting(first.id);
    let declined = engine
        .decline_challenge("acme", "bob", first.id)
        .await
        .unwrap();
    assert_eq!(declined.status, ChallengeStatus::Declined);

    let second = engine.create_challenge(challenge()).await.unwrap();
    give_up_accepting(second.id);
    let cancelled = engine
        .cancel_challenge("acme", "alice", second.id)
        .await
        .unwrap();
    assert_eq!(cancelled.status, ChallengeStatus::Cancelled);

    let third = engine.create_challenge(challenge()).await.unwrap();
    give_up_accepting(third.id);
    creator.hanging.store(false, Ordering::SeqCst);
    let accepted = engine
        .accept_challenge("acme", "bob", third.id)
        .await
        .unwrap();
    assert_eq!(accepted.status, ChallengeStatus::Accepted);
    assert_eq!(
        accepted.game_id.as_deref(),
        Some(format!("g_{}", third.id).as_str())
    );
}
