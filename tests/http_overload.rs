//! Overload against the real binary: with a deliberately small bound on the journal's backlog
//! and many concurrent writers under fsync `always`, writes past the bound answer 503
//! `UNAVAILABLE` with `Retry-After` at once and change nothing, the writes admitted keep a
//! bounded latency, reads keep being answered, and `/metrics` counts what was shed.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Api, PATIENCE, Reply, Server, blitz, id_of, token_with};

/// Concurrent writers in a burst: far more than the bound below, each waiting on the same
/// fsyncs.
const WRITERS: usize = 64;
/// Records allowed to wait for the disk: a handful, so that a burst of [`WRITERS`] goes past it
/// while a single caller (and the heartbeat's record) never does.
const JOURNAL_BOUND: &str = "4";

/// What one request of a burst got.
struct Outcome {
    user: String,
    /// The entry the request created or cancelled, once known.
    entry: Option<String>,
    reply: Reply,
    took: Duration,
}

impl Outcome {
    fn shed(&self) -> bool {
        self.reply.status == 503
    }
}

fn timed(user: String, entry: Option<String>, send: impl FnOnce() -> Reply) -> Outcome {
    let started = Instant::now();
    let reply = send();
    Outcome {
        user,
        entry,
        reply,
        took: started.elapsed(),
    }
}

/// A queued entry of `user`, retried while the engine sheds: preparing must not fail on a
/// burst's tail.
fn queued(api: &Api, service: &str, user: &str) -> String {
    let mut body = blitz(1500);
    body["user_id"] = user.into();
    support::poll("an enqueue to be admitted", || {
        let reply = api.enqueue(service, &body);
        (reply.status != 503).then(|| id_of(&reply.ok(201)))
    })
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99).div_ceil(100).max(1) - 1]
}

/// `name{labels}` in a Prometheus text page, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn writes_past_the_journal_bound_are_shed_at_once_and_change_nothing() {
    let server = Server::options()
        .env("MATCHWELL_FSYNC", "always")
        .env("MATCHWELL_MAX_JOURNAL_BACKLOG", JOURNAL_BOUND)
        .without_rate_limits()
        // Entries stay searching, so that every cancel has something to cancel.
        .env("MATCHWELL_TASK_MATCHING", "off")
        .start();
    let api = server.api();
    let service = token_with("svc", &["--role", "service"]);
    let as_user = |path: &str, user: &str| format!("{path}?user_id={user}");

    let mut enqueues: Vec<Outcome> = Vec::new();
    let mut cancels: Vec<Outcome> = Vec::new();
    let mut reads: Vec<Reply> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    // Bursts until each kind of write has been both shed and admitted.
    for round in 0.. {
        let seen = |outcomes: &[Outcome]| {
            outcomes.iter().any(Outcome::shed) && outcomes.iter().any(|o| !o.shed())
        };
        if seen(&enqueues) && seen(&cancels) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no burst went past the bound: {} enqueues, {} cancels",
            enqueues.len(),
            cancels.len()
        );
        let targets: Vec<(String, String)> = (0..WRITERS)
            .map(|n| {
                let user = format!("c{round}-{n}");
                let entry = queued(&api, &service, &user);
                (user, entry)
            })
            .collect();
        std::thread::scope(|scope| {
            let writers: Vec<_> = targets
                .iter()
                .enumerate()
                .map(|(n, (target, entry))| {
                    let (api, service) = (&api, &service);
                    scope.spawn(move || {
                        let user = format!("e{round}-{n}");
                        let mut body = blitz(1500);
                        body["user_id"] = user.as_str().into();
                        let enqueue = timed(user, None, || api.enqueue(service, &body));
                        let path = as_user(&format!("/v1/matchmaking/queue/{entry}"), target);
                        let cancel = timed(target.clone(), Some(entry.clone()), || {
                            api.delete(&path, service)
                        });
                        (enqueue, cancel)
                    })
                })
                .collect();
            // Reads meanwhile, of the entries being cancelled.
            let readers: Vec<_> = targets
                .iter()
                .take(8)
                .map(|(target, entry)| {
                    let (api, service) = (&api, &service);
                    let path = as_user(&format!("/v1/matchmaking/queue/{entry}"), target);
                    scope
                        .spawn(move || (0..16).map(|_| api.get(&path, service)).collect::<Vec<_>>())
                })
                .collect();
            for writer in writers {
                let (enqueue, cancel) = writer.join().unwrap();
                enqueues.push(enqueue);
                cancels.push(cancel);
            }
            for reader in readers {
                reads.extend(reader.join().unwrap());
            }
        });
    }

    let mut admitted = Vec::new();
    for outcome in enqueues.iter_mut().chain(cancels.iter_mut()) {
        let reply = &outcome.reply;
        if outcome.shed() {
            assert_eq!(reply.code(), "UNAVAILABLE", "{reply:?}");
            assert!(reply.message().contains("journal"), "{reply:?}");
            assert_eq!(reply.headers["retry-after"], "1", "{reply:?}");
        } else {
            assert!(matches!(reply.status, 200 | 201), "{reply:?}");
            outcome.entry.get_or_insert_with(|| id_of(&reply.body));
            admitted.push(outcome.took);
        }
    }
    // What each write left behind: a shed enqueue no entry, a shed cancel an entry still
    // searching.
    for outcome in &enqueues {
        let path = as_user("/v1/matchmaking/active", &outcome.user);
        let searching = &api.get(&path, &service).ok(200)["searching"];
        match &outcome.entry {
            None => assert_eq!(*searching, Value::Null, "shed enqueue of {}", outcome.user),
            Some(entry) => assert_eq!(searching["id"], entry.as_str(), "{}", outcome.user),
        }
    }
    for outcome in &cancels {
        let entry = outcome.entry.as_deref().unwrap();
        let path = as_user(&format!("/v1/matchmaking/queue/{entry}"), &outcome.user);
        let status = api.get(&path, &service).ok(200)["status"].clone();
        let expected = if outcome.shed() {
            "searching"
        } else {
            "cancelled"
        };
        assert_eq!(status, expected, "cancel of {entry}");
    }
    assert!(
        reads.iter().all(|read| read.status == 200),
        "a read was refused: {:?}",
        reads.iter().find(|read| read.status != 200)
    );

    let shed = enqueues
        .iter()
        .chain(&cancels)
        .filter(|outcome| outcome.shed())
        .count();
    let p99 = p99(admitted.clone());
    eprintln!(
        "{} writes: {shed} shed, {} admitted with p99 {p99:?}",
        enqueues.len() + cancels.len(),
        admitted.len()
    );
    assert!(
        p99 < Duration::from_millis(750),
        "admitted writes waited too long: p99 {p99:?}"
    );

    let metrics = api
        .client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric(&metrics, r#"matchwell_shed_total{reason="journal"}"#),
        shed as f64
    );
    assert_eq!(
        metric(&metrics, r#"matchwell_shed_total{reason="shard"}"#),
        0.0
    );
}
