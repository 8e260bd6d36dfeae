//! `kill -9` of the real server binary at seeded random moments: after a restart on the same
//! data directory every acknowledged change is there and no player is in two matches.
//! A failing seed is printed; rerun it alone with `MATCHWELL_TEST_SEED=<seed>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const RUNS: u64 = 20;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_matchwell"))
            .arg("serve")
            .env("MATCHWELL_LISTEN", "127.0.0.1:0")
            .env("MATCHWELL_DATA_DIR", data_dir)
            .env(
                "MATCHWELL_JWT_SECRET",
                "kill-test-secret-of-at-least-32-bytes!!",
            )
            .env("MATCHWELL_FSYNC", "always")
            .env("MATCHWELL_LOG_FORMAT", "human")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (address, found) = std::sync::mpsc::channel();
        // Keeps draining the log after the address, so the server never writes to a closed pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on ".len()..].split_whitespace().next();
                    let _ = address.send(addr.unwrap_or_default().to_owned());
                }
            }
        });
        let base = found.recv_timeout(Duration::from_secs(30)).ok();
        Self {
            child,
            base: base.expect("the server printed its address"),
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn token(user: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_matchwell"))
        .args(["token", "--user", user])
        .env(
            "MATCHWELL_JWT_SECRET",
            "kill-test-secret-of-at-least-32-bytes!!",
        )
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn run(seed: u64, tokens: &[String]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = Server::start(dir.path());
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

    let server = Server::start(dir.path());
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
    let tokens: Vec<String> = (0..8).map(|n| token(&format!("player-{n}"))).collect();
    let seeds: Vec<u64> = match std::env::var("MATCHWELL_TEST_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => (0..RUNS).collect(),
    };
    for seed in seeds {
        eprintln!("seed {seed}");
        run(seed, &tokens);
    }
}
