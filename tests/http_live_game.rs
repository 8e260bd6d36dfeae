//! The live-game service under stress, against the real server binary and a fake service on
//! loopback: transient failures of every kind end in exactly one game, a permanent one puts
//! the players back, `Retry-After` is honoured, an outage never sees more calls at once than
//! the in-flight limit, and jobs pending at a `kill -9` complete after the restart.
//! A failing seed is printed; rerun it with `MATCHWELL_TEST_SEED=<seed>`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use support::{
    Answer, Api, EventStream, FakeLiveGame, Server, ServerOptions, blitz, id_of, poll, token,
    token_with,
};

/// A server creating games through `games`, retrying fast: backoff ceilings from 20 to
/// 200 ms, the dispatcher looking every 10 ms, a 500 ms timeout.
fn options(games: &FakeLiveGame) -> ServerOptions {
    Server::options()
        .live_game(games)
        .env("MATCHWELL_LIVE_GAME_BACKOFF_MS", "20")
        .env("MATCHWELL_LIVE_GAME_MAX_BACKOFF_MS", "200")
        .env("MATCHWELL_LIVE_GAME_TIMEOUT_MS", "500")
        .env("MATCHWELL_TASK_GAMES_MS", "10")
        .env("MATCHWELL_FSYNC", "none")
}

/// The value of `series` (name and labels) in `/metrics`; 0 when absent.
fn metric(server: &Server, series: &str) -> f64 {
    let text = reqwest::blocking::get(server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `searching` and `pending_games` of pool 5+3 standard rated in the queue summary (zeros
/// when the pool is not listed).
fn blitz_figures(api: &Api, admin: &str) -> (u64, u64) {
    let summary = api.get("/internal/queues/summary", admin).ok(200);
    summary["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pool| pool["time_control"] == "5+3" && pool["variant"] == "standard")
        .map_or((0, 0), |pool| {
            (
                pool["searching"].as_u64().unwrap(),
                pool["pending_games"].as_u64().unwrap(),
            )
        })
}

/// Queues alice and bob at the same rating; their entry ids.
fn queue_pair(api: &Api, alice: &str, bob: &str) -> (String, String) {
    let first = id_of(&api.enqueue(alice, &blitz(1500)).ok(201));
    let second = id_of(&api.enqueue(bob, &blitz(1500)).ok(201));
    (first, second)
}

/// Waits on the stream of entry `id` until its game is created; the entry.
fn game_created(api: &Api, token: &str, id: &str) -> Value {
    api.watch(token, id, "matched with a game", |entry| {
        entry["match"]["game_status"] == "created"
    })
}

#[test]
fn transient_failures_of_every_kind_end_in_exactly_one_game() {
    let games = FakeLiveGame::start();
    let server = options(&games).start();
    let api = server.api();
    let (alice, bob) = (token("alice"), token("bob"));
    let transient = r#"matchwell_live_game_attempts_total{outcome="transient"}"#;
    let modes = [
        ("503", 2, Answer::Status(503)),
        ("500", 2, Answer::Status(500)),
        ("429 without Retry-After", 2, Answer::Status(429)),
        ("408", 1, Answer::Status(408)),
        ("no answer", 2, Answer::Hang),
        ("a slow answer", 0, Answer::Create),
    ];
    for (mode, failures, answer) in modes {
        games.fail_first(failures, answer);
        games.set_delay(if failures == 0 {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        });
        let (first, _) = queue_pair(&api, &alice, &bob);
        let entry = game_created(&api, &alice, &first);
        let found = &entry["match"];
        let key = found["match_id"].as_str().unwrap();
        assert_eq!(
            games.calls_for(key).len(),
            failures + 1,
            "{mode}: every failure is retried once, then the game is created"
        );
        assert_eq!(
            found["game_id"].as_str(),
            games.games().get(key).map(String::as_str),
            "{mode}"
        );
    }
    assert_eq!(
        metric(
            &server,
            r#"matchwell_live_game_attempts_total{outcome="timeout"}"#
        ),
        2.0
    );

    // Refused connections: the service stops listening while a pair is formed.
    games.set_delay(Duration::ZERO);
    games.fail_first(0, Answer::Create);
    let before = metric(&server, transient);
    games.stop_listening();
    let (first, _) = queue_pair(&api, &alice, &bob);
    poll("two attempts refused", || {
        (metric(&server, transient) >= before + 2.0).then_some(())
    });
    games.listen();
    let entry = game_created(&api, &alice, &first);
    let key = entry["match"]["match_id"].as_str().unwrap();
    assert_eq!(games.calls_for(key).len(), 1, "refused calls never arrived");
    assert_eq!(games.games().len(), 7, "one game per match, none more");
}

#[test]
fn a_permanent_failure_puts_both_players_back_with_their_waiting_time() {
    let games = FakeLiveGame::start();
    // The refusal comes late enough for the streams to see the match, and the next wave
    // late enough for them to see the players searching again.
    games.set_answer(Answer::Status(400));
    games.set_delay(Duration::from_millis(200));
    let pools = "[[pool]]\ntime_control = \"5+3\"\nvariant = \"standard\"\nrated = true\n\
                 wave_interval_ms = 1500\n";
    let server = options(&games).pools(pools).start();
    let api = server.api();
    let (alice, bob) = (token("alice"), token("bob"));
    let first = api.enqueue(&alice, &blitz(1500)).ok(201);
    let mut alice_events = EventStream::open(&api, &alice, &id_of(&first));
    let second = api.enqueue(&bob, &blitz(1520)).ok(201);
    let mut bob_events = EventStream::open(&api, &bob, &id_of(&second));
    let mut failed_match = None;
    for (events, queued) in [(&mut alice_events, &first), (&mut bob_events, &second)] {
        let mut next = || events.next_entry().expect("the stream goes on");
        // Bob's stream may open after the pairing already.
        let matched = std::iter::from_fn(|| Some(next()))
            .find(|entry| entry["status"] != "searching")
            .unwrap();
        assert_eq!(matched["status"], "matched");
        assert_eq!(matched["match"]["game_status"], "pending");
        let match_id = matched["match"]["match_id"].clone();
        assert_eq!(*failed_match.get_or_insert(match_id.clone()), match_id);
        let back = next();
        assert_eq!(back["status"], "searching", "the game failed: {back}");
        assert_eq!(back["id"], queued["id"], "the same entry searches again");
        assert_eq!(
            back["joined_at"], queued["joined_at"],
            "with its waiting time"
        );
        assert_eq!(back["match"], Value::Null);
    }
    let failed_match = failed_match.unwrap();
    assert_eq!(games.calls_for(failed_match.as_str().unwrap()).len(), 1);
    assert_eq!(
        metric(
            &server,
            r#"matchwell_live_game_attempts_total{outcome="permanent"}"#
        ),
        1.0
    );

    // The service accepts again: the next wave pairs them anew, and that game is created.
    games.set_answer(Answer::Create);
    let entry = std::iter::from_fn(|| alice_events.next_entry())
        .find(|entry| entry["match"]["game_status"] == "created")
        .expect("a game");
    assert_ne!(entry["match"]["match_id"], failed_match);
    assert_eq!(entry["joined_at"], first["joined_at"]);
    assert!(
        games
            .games()
            .contains_key(entry["match"]["match_id"].as_str().unwrap())
    );
    assert!(!games.games().contains_key(failed_match.as_str().unwrap()));
}

/// A pair's game is refused once with `answer`; the two calls of its match.
fn refused_once_then_created(answer: Answer) -> Vec<support::GameCall> {
    let games = FakeLiveGame::start();
    games.fail_first(1, answer);
    let server = options(&games).start();
    let api = server.api();
    let (alice, bob) = (token("alice"), token("bob"));
    let (first, _) = queue_pair(&api, &alice, &bob);
    let entry = game_created(&api, &alice, &first);
    let calls = games.calls_for(entry["match"]["match_id"].as_str().unwrap());
    assert_eq!(calls.len(), 2);
    calls
}

#[test]
fn retry_after_in_seconds_is_honoured() {
    let calls = refused_once_then_created(Answer::RetryAfterSeconds(429, 2));
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let calls = refused_once_then_created(Answer::RetryAfterDate(503, 3));
    // The date said "3 s after the answer" in whole seconds, so it was no earlier than the
    // first call's time plus 3 s, cut to the second.
    let floor = (calls[0].wall + Duration::from_secs(3))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let not_before = UNIX_EPOCH + Duration::from_secs(floor);
    assert!(
        calls[1].wall >= not_before,
        "retried {:?} before the date",
        not_before.duration_since(calls[1].wall).unwrap_or_default()
    );
}

/// Runs `work` over `items` cut into four lanes, each on a thread of its own; what each lane
/// returned, in order.
fn in_four_lanes<T: Sync, R: Send>(items: &[T], work: impl Fn(usize, &[T]) -> R + Sync) -> Vec<R> {
    let work = &work;
    std::thread::scope(|scope| {
        let lanes: Vec<_> = items
            .chunks(items.len().div_ceil(4))
            .enumerate()
            .map(|(lane, chunk)| scope.spawn(move || work(lane, chunk)))
            .collect();
        lanes.into_iter().map(|lane| lane.join().unwrap()).collect()
    })
}

/// Queues `players` players (an even number, all within each other's window) through a
/// service token; `(user, entry id)` of each.
fn queue_many(server: &Server, service: &str, players: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ratings: Vec<u16> = (0..players).map(|_| rng.random_range(1460..1540)).collect();
    in_four_lanes(&ratings, |lane, ratings| {
        let api = server.api();
        ratings
            .iter()
            .enumerate()
            .map(|(n, &rating)| {
                let user = format!("player-{lane}-{n}");
                let body = json!({"time_control": "5+3", "variant": "standard",
                                  "rated": true, "rating": rating, "user_id": user});
                (user, id_of(&api.enqueue(service, &body).ok(201)))
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Checks that every entry is matched with its game created, the one the service made for
/// its match, two entries a match, and one game a match.
fn every_match_has_its_one_game(
    server: &Server,
    service: &str,
    entries: &[(String, String)],
    games: &FakeLiveGame,
    seed: u64,
) {
    let created = games.games();
    let lanes = in_four_lanes(entries, |_, lane| {
        let api = server.api();
        let mut matches: BTreeMap<String, usize> = BTreeMap::new();
        for (user, id) in lane {
            let path = format!("/v1/matchmaking/queue/{id}?user_id={user}");
            let entry = api.get(&path, service).ok(200);
            let found = &entry["match"];
            assert_eq!(
                (entry["status"].as_str(), found["game_status"].as_str()),
                (Some("matched"), Some("created")),
                "seed {seed}: {entry}"
            );
            let match_id = found["match_id"].as_str().unwrap();
            assert_eq!(
                found["game_id"].as_str(),
                created.get(match_id).map(String::as_str),
                "seed {seed}: {entry}"
            );
            *matches.entry(match_id.to_owned()).or_default() += 1;
        }
        matches
    });
    let mut matches: BTreeMap<String, usize> = BTreeMap::new();
    for (match_id, players) in lanes.into_iter().flatten() {
        *matches.entry(match_id).or_default() += players;
    }
    assert_eq!(matches.len(), entries.len() / 2, "seed {seed}");
    assert!(matches.values().all(|&players| players == 2), "seed {seed}");
    assert_eq!(
        created.len(),
        matches.len(),
        "seed {seed}: one game a match"
    );
    let called: BTreeSet<String> = games
        .calls()
        .into_iter()
        .filter_map(|call| call.idempotency_key)
        .collect();
    assert!(
        called.iter().all(|key| matches.contains_key(key)),
        "seed {seed}: the service was asked only for these matches"
    );
}

#[test]
fn an_outage_while_2000_pairs_form_never_sees_more_calls_at_once_than_the_limit() {
    const PAIRS: usize = 2_000;
    const LIMIT: usize = 8;
    let seed = support::seed("outage");
    let games = FakeLiveGame::start();
    games.set_delay(Duration::from_millis(10));
    games.set_down(true);
    let server = options(&games)
        .env("MATCHWELL_LIVE_GAME_MAX_IN_FLIGHT", LIMIT.to_string())
        .env("MATCHWELL_LIVE_GAME_MAX_ATTEMPTS", "1000")
        .without_rate_limits()
        .start();
    let api = server.api();
    let service = token_with("matchmaker", &["--role", "service"]);
    let admin = token_with("ops", &["--role", "admin"]);
    let entries = queue_many(&server, &service, 2 * PAIRS, seed);
    poll("every pair formed, no game created", || {
        (blitz_figures(&api, &admin) == (0, PAIRS as u64)).then_some(())
    });
    assert_eq!(
        metric(&server, r#"matchwell_live_game_circuit{state="closed"}"#),
        0.0,
        "seed {seed}: repeated failures opened the circuit"
    );
    assert!(games.games().is_empty());
    let during_outage = games.calls().len();
    // Matching goes on, so the service is degraded, not down.
    let ready = api.send(api.request("GET", "/health/ready", None));
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "degraded", "{}", ready.body);
    let live_game = &ready.body["components"]["live_game"];
    assert_eq!(live_game["critical"], false, "{live_game}");
    assert_ne!(live_game["details"]["circuit"], "closed", "{live_game}");
    assert_eq!(live_game["details"]["reachable"], false, "{live_game}");

    games.set_down(false);
    poll("every game created", || {
        (blitz_figures(&api, &admin).1 == 0).then_some(())
    });
    let most = games.max_concurrent();
    assert!(
        (2..=LIMIT).contains(&most),
        "seed {seed}: {most} calls at once (limit {LIMIT})"
    );
    every_match_has_its_one_game(&server, &service, &entries, &games, seed);
    assert_eq!(
        metric(
            &server,
            r#"matchwell_live_game_attempts_total{outcome="created"}"#
        ),
        PAIRS as f64
    );
    assert_eq!(metric(&server, "matchwell_game_jobs_pending"), 0.0);
    assert_eq!(
        metric(&server, r#"matchwell_live_game_circuit{state="closed"}"#),
        1.0
    );
    let ready = api.send(api.request("GET", "/health/ready", None));
    assert_eq!(ready.body["status"], "healthy", "{}", ready.body);
    eprintln!(
        "seed {seed}: {during_outage} calls during the outage, {} in all, at most {most} at once",
        games.calls().len()
    );
}

#[test]
fn jobs_pending_at_a_kill_9_complete_after_the_restart() {
    const PAIRS: usize = 20;
    let seed = support::seed("kill -9");
    let dir = tempfile::tempdir().unwrap();
    let games = FakeLiveGame::start();
    games.set_down(true);
    let start = || {
        options(&games)
            .data_dir(dir.path())
            .env("MATCHWELL_FSYNC", "always")
            .env("MATCHWELL_LIVE_GAME_MAX_ATTEMPTS", "1000")
            .env("MATCHWELL_READ_RATE_LIMIT_PER_S", "0")
            .start()
    };
    let service = token_with("matchmaker", &["--role", "service"]);
    let admin = token_with("ops", &["--role", "admin"]);
    let server = start();
    let entries = queue_many(&server, &service, 2 * PAIRS, seed);
    let api = server.api();
    poll("every pair formed", || {
        (blitz_figures(&api, &admin) == (0, PAIRS as u64)).then_some(())
    });
    poll("game creation attempted", || {
        (!games.calls().is_empty()).then_some(())
    });
    server.kill();

    games.set_down(false);
    let server = start();
    let api = server.api();
    poll("every game created after the restart", || {
        (blitz_figures(&api, &admin).1 == 0).then_some(())
    });
    every_match_has_its_one_game(&server, &service, &entries, &games, seed);
}
