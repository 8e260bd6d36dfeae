//! `kill -9` of the real server binary at seeded random moments: after a restart on the same
//! data directory every acknowledged change is there and no player is in two matches.
//! A failing seed is printed; rerun it alone with `MATCHWELL_TEST_SEED=<seed>`.

mod support;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use support::Server;

const RUNS: u64 = 20;

/// A server on `data_dir` that acknowledges only what is on disk.
fn start(data_dir: &std::path::Path) -> Server {
    Server::options()
        .data_dir(data_dir)
        .env("MATCHWELL_FSYNC", "always")
        .start()
}

fn run(seed: u64, tokens: &[String]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = start(dir.path());
    // entry id → (user index, last status acknowledged or seen)
    let mut acknowledged: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    let operations = rng.random_range(5..80);
    for _ in 0..operations {
        let user = rng.random_range(0..tokens.len());
        if rng.random_bool(0.7) {
            let response = client
                .post(format!("{}/v1/matchmaking/queue", server.base))
                .bearer_auth(&tokens[user])
                .json(
                    &json!({"time_control": "5+3", "variant": "standard", "rated": true,
                              "rating": rng.random_range(1450..1550)}),
                )
                .send()
                .unwrap();
            if response.status() == 201 {
                let entry: Value = response.json().unwrap();
                acknowledged.insert(entry["id"].as_str().unwrap().to_owned(), (user, entry));
            }
        } else if let Some(id) = acknowledged
            .keys()
            .nth(rng.random_range(0..acknowledged.len().max(1)))
            .cloned()
        {
            let owner = acknowledged[&id].0;
            let response = client
                .delete(format!("{}/v1/matchmaking/queue/{id}", server.base))
                .bearer_auth(&tokens[owner])
                .send()
                .unwrap();
            let status = response.status();
            let entry: Value = response.json().unwrap();
            if status == 200 {
                acknowledged.insert(id, (owner, entry));
            } else if status == 409 {
                acknowledged.insert(id, (owner, entry["error"]["entry"].clone()).clone());
            }
        }
    }
    server.kill();

    let server = start(dir.path());
    let mut match_of_user: BTreeMap<(usize, String), String> = BTreeMap::new();
    for (id, (user, before)) in &acknowledged {
        let entry: Value = client
            .get(format!("{}/v1/matchmaking/queue/{id}", server.base))
            .bearer_auth(&tokens[*user])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            entry["id"],
            json!(id),
            "seed {seed}: acknowledged entry {id} is missing: {entry}"
        );
        if before["status"] == "cancelled" {
            assert_eq!(
                entry["status"], "cancelled",
                "seed {seed}: cancel of {id} was lost"
            );
        }
        if let Some(match_id) = entry["match"]["match_id"].as_str() {
            let previous = match_of_user.insert((*user, match_id.to_owned()), id.clone());
            assert!(
                previous.is_none(),
                "seed {seed}: user {user} twice in {match_id}"
            );
        }
    }
    let mut matches_per_entry: BTreeMap<String, usize> = BTreeMap::new();
    for ((_, _), id) in &match_of_user {
        *matches_per_entry.entry(id.clone()).or_default() += 1;
    }
    assert!(
        matches_per_entry.values().all(|&n| n == 1),
        "seed {seed}: an entry in two matches"
    );
    server.kill();
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let tokens: Vec<String> = (0..8)
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
