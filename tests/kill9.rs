//! `kill -9` of the real server binary at seeded random moments, while several clients have
//! requests in flight and snapshots run every few milliseconds (so journal rotation, snapshot
//! writing and segment deletion are killed too): after a restart on the same data directory
//! every acknowledged change is there, no entry is in two matches, both players of a match
//! are matched by it, and no user searches twice.
//!
//! A failing seed is printed; rerun it alone with `MATCHWELL_TEST_SEED=<seed>`.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use support::Server;

const RUNS: u64 = 12;
/// Clients sending at once; each speaks for users of its own, so that one user's requests
/// follow each other and what was acknowledged last is their state.
const CLIENTS: usize = 4;
const USERS_PER_CLIENT: usize = 4;

/// A server on `data_dir` that acknowledges only what is on disk and snapshots all the time.
fn start(data_dir: &std::path::Path) -> Server {
    options(data_dir)
        .env("MATCHWELL_TASK_SNAPSHOTS_MS", "15")
        .start()
}

fn options(data_dir: &std::path::Path) -> support::ServerOptions {
    Server::options()
        .data_dir(data_dir)
        .env("MATCHWELL_FSYNC", "always")
        .without_rate_limits()
}

/// Entry id → (user, the entry as last acknowledged).
type Acknowledged = Arc<Mutex<BTreeMap<String, (usize, Value)>>>;

/// Sends enqueues and cancels for `users` until the server is gone; records every answer
/// that acknowledged a change.
fn client(
    base: &str,
    tokens: &[String],
    users: std::ops::Range<usize>,
    seed: u64,
    acknowledged: &Acknowledged,
    answered: &AtomicUsize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let http = Client::new();
    let mut mine: Vec<String> = Vec::new();
    loop {
        let user = rng.random_range(users.clone());
        let cancel = (!mine.is_empty() && rng.random_bool(0.3))
            .then(|| mine[rng.random_range(0..mine.len())].clone());
        let request = match &cancel {
            Some(id) => {
                let owner = acknowledged.lock().unwrap()[id].0;
                http.delete(format!("{base}/v1/matchmaking/queue/{id}"))
                    .bearer_auth(&tokens[owner])
            }
            None => http
                .post(format!("{base}/v1/matchmaking/queue"))
                .bearer_auth(&tokens[user])
                .json(
                    &json!({"time_control": "5+3", "variant": "standard", "rated": true,
                              "rating": rng.random_range(1450..1550)}),
                ),
        };
        // The server was killed: this request's fate is unknown, and nothing more is sent.
        let Ok(response) = request.send() else {
            return;
        };
        let status = response.status().as_u16();
        let Ok(body) = response.json::<Value>() else {
            return;
        };
        answered.fetch_add(1, Ordering::SeqCst);
        match (&cancel, status) {
            (None, 201) => {
                let id = body["id"].as_str().unwrap().to_owned();
                mine.push(id.clone());
                acknowledged.lock().unwrap().insert(id, (user, body));
            }
            (Some(id), 200) => {
                acknowledged.lock().unwrap().get_mut(id).unwrap().1 = body;
            }
            (Some(id), 409) => {
                // Matched (or expired): what it became was acknowledged before the refusal.
                let owner = acknowledged.lock().unwrap()[id].0;
                let Ok(entry) = http
                    .get(format!("{base}/v1/matchmaking/queue/{id}"))
                    .bearer_auth(&tokens[owner])
                    .send()
                    .and_then(|response| response.json::<Value>())
                else {
                    return;
                };
                acknowledged.lock().unwrap().get_mut(id).unwrap().1 = entry;
            }
            _ => {}
        }
    }
}

fn run(seed: u64, tokens: &[String]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let acknowledged: Acknowledged = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    let kill_after = rng.random_range(10..300);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let base = server.base.clone();
            let tokens = tokens.to_vec();
            let acknowledged = Arc::clone(&acknowledged);
            let answered = Arc::clone(&answered);
            let users = n * USERS_PER_CLIENT..(n + 1) * USERS_PER_CLIENT;
            let client_seed = seed.wrapping_mul(31).wrapping_add(n as u64);
            std::thread::spawn(move || {
                client(&base, &tokens, users, client_seed, &acknowledged, &answered);
            })
        })
        .collect();
    support::poll("the clients to have been answered enough", || {
        (answered.load(Ordering::SeqCst) >= kill_after).then_some(())
    });
    // With every client's next request in flight or about to be.
    server.kill();
    for client in clients {
        client.join().unwrap();
    }

    // Recovered with every task off, so that no wave changes an entry between two reads.
    let server = options(dir.path()).env("MATCHWELL_TASKS", "off").start();
    let api = server.api();
    let acknowledged = acknowledged.lock().unwrap();
    let mut match_of_entry: BTreeMap<String, String> = BTreeMap::new();
    let mut players_of_match: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut searching_of_user: BTreeMap<usize, String> = BTreeMap::new();
    for (id, (user, before)) in acknowledged.iter() {
        let entry = api.entry(&tokens[*user], id).ok(200);
        let context = format!("seed {seed} (killed after {kill_after} answers): entry {id}");
        let status = entry["status"].as_str().unwrap();
        match before["status"].as_str().unwrap() {
            "cancelled" => assert_eq!(status, "cancelled", "{context}: its cancel was lost"),
            "matched" => {
                assert_eq!(status, "matched", "{context}: its match was lost");
                assert_eq!(
                    entry["match"]["match_id"], before["match"]["match_id"],
                    "{context}: another match"
                );
            }
            "expired" => assert_eq!(status, "expired", "{context}"),
            _ => {}
        }
        if let Some(match_id) = entry["match"]["match_id"].as_str() {
            match_of_entry.insert(id.clone(), match_id.to_owned());
            let players: Vec<String> = entry["match"]["players"]
                .as_array()
                .unwrap()
                .iter()
                .map(|player| player["entry_id"].as_str().unwrap().to_owned())
                .collect();
            assert!(
                players.contains(id),
                "{context}: its match does not name it"
            );
            players_of_match.insert(match_id.to_owned(), players);
        }
        if status == "searching" {
            let other = searching_of_user.insert(*user, id.clone());
            assert!(
                other.is_none(),
                "{context}: user {user} also searches as {other:?}"
            );
        }
    }
    for (match_id, players) in &players_of_match {
        for player in players {
            if let Some(theirs) = match_of_entry.get(player) {
                assert_eq!(
                    theirs, match_id,
                    "seed {seed}: {player} of {match_id} is matched in {theirs}"
                );
            }
        }
    }
    for (user, token) in tokens.iter().enumerate() {
        let active = api.get("/v1/matchmaking/active", token).ok(200);
        if let Some(id) = searching_of_user.get(&user) {
            assert_eq!(
                active["searching"]["id"].as_str(),
                Some(id.as_str()),
                "seed {seed}: user {user} searches with another entry"
            );
        }
    }
    server.kill();
}

#[test]
fn acknowledged_changes_survive_kill_9_with_requests_in_flight() {
    let tokens: Vec<String> = (0..CLIENTS * USERS_PER_CLIENT)
        .map(|n| support::token(&format!("player-{n}")))
        .collect();
    let seeds: Vec<u64> = match support::seed_from_env() {
        Some(seed) => vec![seed],
        None => (0..RUNS).collect(),
    };
    for seed in seeds {
        eprintln!("seed {seed}");
        run(seed, &tokens);
    }
}
