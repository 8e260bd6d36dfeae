//! The server's life against the real binary: it listens before it recovers (live, not ready,
//! refusing requests meanwhile), stops when told to during recovery, and a SIGTERM under load
//! stops it cleanly within its bound without losing an acknowledged write.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matchwell::{BackgroundTasks, Engine, EnqueueRequest, FsyncMode, PersistenceConfig, PoolSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use support::{Api, Reply, Server, blitz, id_of, token};

/// Searching players in the big data directory: enough that reading their journal back takes
/// seconds on a debug build, against the few milliseconds the test's first requests take.
const BIG: usize = 200_000;

/// Fills `dir` with a journal of [`BIG`] enqueues (users `u0`…), and no snapshot: what a
/// crash leaves, all of it to replay.
fn write_big_data_dir(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = PersistenceConfig::new(dir);
        config.fsync = FsyncMode::None;
        let engine = Engine::builder()
            .tasks(BackgroundTasks::all_off())
            .persistence(config)
            .start()
            .await
            .unwrap();
        let engine = Arc::new(engine);
        let pool = PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap();
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let engine = Arc::clone(&engine);
                let pool = pool.clone();
                tokio::spawn(async move {
                    for n in (writer..BIG).step_by(8) {
                        let request = EnqueueRequest {
                            tenant: "default".into(),
                            user_id: format!("u{n}").into(),
                            pool: pool.clone(),
                            rating: (1000 + n % 1000) as u16,
                            idempotency_key: None,
                        };
                        engine.enqueue(request).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        // Dropped without a shutdown: the journal is closed, no snapshot is written.
    });
}

/// `GET path` without a token.
fn plain(api: &Api, path: &str) -> Reply {
    api.send(api.request("GET", path, None))
}

#[test]
fn the_server_listens_while_it_recovers_and_stops_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    write_big_data_dir(dir.path());
    let first = token("u0");
    let newcomer = token("newcomer");

    let server = Server::options().data_dir(dir.path()).start_listening();
    let api = server.api();
    plain(&api, "/health/live").ok(200);
    let ready = plain(&api, "/health/ready");
    assert_eq!(
        ready.status, 503,
        "recovery was over before the test could look; the data directory is too small for this machine: {ready:?}"
    );
    assert_eq!(ready.body["status"], "unhealthy");
    assert_eq!(
        ready.body["components"]["engine"]["details"]["state"],
        "recovering"
    );
    let refused = api
        .enqueue(&newcomer, &blitz(1500))
        .expect(503, "UNAVAILABLE");
    assert!(refused.headers.contains_key("retry-after"), "{refused:?}");
    api.entry(&first, "q_1").expect(503, "UNAVAILABLE");
    plain(&api, "/metrics").ok(200);

    support::poll("the end of recovery", || {
        (plain(&api, "/health/ready").status == 200).then_some(())
    });
    let recovered = api.get("/v1/matchmaking/active", &first).ok(200);
    assert_eq!(recovered["searching"]["status"], "searching");
    api.enqueue(&newcomer, &blitz(1500)).ok(201);
    server.assert_logged(&["matchwell ready"]);
    server.kill();

    // Told to stop while recovering again, it abandons the recovery and exits at once.
    let mut server = Server::options().data_dir(dir.path()).start_listening();
    let api = server.api();
    let ready = plain(&api, "/health/ready");
    assert_eq!(ready.status, 503, "recovery was over already: {ready:?}");
    assert_eq!(
        ready.body["components"]["engine"]["details"]["state"],
        "recovering"
    );
    server.terminate();
    let status = server
        .wait_exit(support::PATIENCE)
        .expect("the server did not exit");
    assert!(status.success(), "{status:?}: {:#?}", server.log());
    server.assert_logged(&["stopping during recovery"]);

    // Nothing was lost by the abandoned recovery.
    let server = Server::options().data_dir(dir.path()).start();
    let api = server.api();
    let active = api.get("/v1/matchmaking/active", &first).ok(200);
    assert_eq!(active["searching"]["status"], "searching");
    let active = api.get("/v1/matchmaking/active", &newcomer).ok(200);
    assert_eq!(active["searching"]["status"], "searching");
}

/// What a client was told about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Told {
    /// Queued (201), and not cancelled since.
    Searching,
    /// Cancelled (200).
    Cancelled,
    /// Queued, then a cancel went out whose answer never came: either may be true.
    CancelUnanswered,
}

/// A client that queues and cancels its users' entries in turn until the server refuses or
/// goes away; every entry it was told about, with its owner's token.
fn client(
    api: Api,
    tokens: Vec<String>,
    mut rng: ChaCha8Rng,
    acknowledged: &AtomicUsize,
) -> Vec<(String, String, Told)> {
    let mut told = Vec::new();
    for user in tokens.iter().cycle() {
        let body = blitz(rng.random_range(1000..2000));
        let Ok(response) = api
            .request("POST", "/v1/matchmaking/queue", Some(user))
            .json(&body)
            .send()
        else {
            break;
        };
        if response.status() != 201 {
            break;
        }
        let id = id_of(&response.json().unwrap());
        acknowledged.fetch_add(1, Ordering::Relaxed);
        let cancel = api
            .request("DELETE", &format!("/v1/matchmaking/queue/{id}"), Some(user))
            .send();
        let state = match cancel.as_ref().map(|response| response.status().as_u16()) {
            Ok(200) => Told::Cancelled,
            Ok(_) => Told::Searching,
            Err(_) => Told::CancelUnanswered,
        };
        told.push((id, user.clone(), state));
        if state != Told::Cancelled {
            break;
        }
        acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    told
}

#[test]
fn sigterm_under_load_stops_cleanly_and_keeps_every_acknowledged_write() {
    let seed = support::seed("sigterm under load");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    const CLIENTS: usize = 4;
    const USERS_PER_CLIENT: usize = 3;
    const BOUND: Duration = Duration::from_secs(10);
    let tokens: Vec<Vec<String>> = (0..CLIENTS)
        .map(|client| {
            (0..USERS_PER_CLIENT)
                .map(|n| token(&format!("c{client}-u{n}")))
                .collect()
        })
        .collect();
    // No matching and no limits, so every entry stays as its client was told and no write
    // is refused for its rate.
    let start = |dir: &Path| {
        Server::options()
            .data_dir(dir)
            .env("MATCHWELL_FSYNC", "always")
            .env("MATCHWELL_TASK_MATCHING", "off")
            .env("MATCHWELL_RATE_LIMIT_PER_S", "0")
            .env("MATCHWELL_SHUTDOWN_TIMEOUT_S", BOUND.as_secs().to_string())
            .start()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let told = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = tokens
        .into_iter()
        .map(|tokens| {
            let api = server.api();
            let client_rng = ChaCha8Rng::seed_from_u64(rng.random());
            let (acknowledged, told, running) = (
                Arc::clone(&acknowledged),
                Arc::clone(&told),
                Arc::clone(&running),
            );
            std::thread::spawn(move || {
                let mine = client(api, tokens, client_rng, &acknowledged);
                told.lock().unwrap().extend(mine);
                running.store(false, Ordering::Relaxed);
            })
        })
        .collect();

    let threshold = rng.random_range(100..400);
    support::poll("the clients to get going", || {
        assert!(
            running.load(Ordering::Relaxed),
            "seed {seed}: a client stopped early"
        );
        (acknowledged.load(Ordering::Relaxed) >= threshold).then_some(())
    });
    let signalled = Instant::now();
    server.terminate();
    let status = server
        .wait_exit(BOUND + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("seed {seed}: no exit within the bound"));
    let took = signalled.elapsed();
    for client in clients {
        client.join().unwrap();
    }
    assert!(
        status.success(),
        "seed {seed}: {status:?}: {:#?}",
        server.log()
    );
    assert!(took < BOUND, "seed {seed}: the stop took {took:?}");
    server.assert_logged(&["final snapshot written"]);
    server.assert_logged(&["matchwell stopped cleanly"]);
    drop(server);

    // The final snapshot holds everything: nothing is left to replay.
    let server = start(dir.path());
    server.assert_logged(&["data directory recovered", "replayed=0"]);
    let api = server.api();
    let told = told.lock().unwrap();
    assert!(told.len() >= threshold / 2, "seed {seed}: {told:?}");
    let mut seen: BTreeMap<Told, usize> = BTreeMap::new();
    for (id, owner, state) in told.iter() {
        let entry = api.entry(owner, id).ok(200);
        let status = entry["status"].as_str().unwrap();
        let expected: &[&str] = match state {
            Told::Searching => &["searching"],
            Told::Cancelled => &["cancelled"],
            Told::CancelUnanswered => &["searching", "cancelled"],
        };
        assert!(
            expected.contains(&status),
            "seed {seed}: {id} told {state:?}, reads {entry}"
        );
        *seen.entry(*state).or_default() += 1;
    }
    eprintln!("seed {seed}: stopped in {took:?}; {seen:?}");
    assert_eq!(
        api.get("/health/ready", &told[0].1).ok(200)["status"],
        json!("healthy")
    );
}
