//! Operations: the OpenAPI document, health, metrics, request ids, unknown routes and
//! methods, the admin queue summary, and start-up configuration checks.

mod support;

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use support::{SECRET, Server, blitz, id_of, token, token_with};

#[test]
fn the_openapi_document_describes_every_route() {
    let server = Server::start();
    let api = server.api();
    let reply = api.send(api.request("GET", "/openapi.json", None));
    assert_eq!(reply.headers["content-type"], "application/json");
    let document = reply.ok(200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/matchmaking/queue", "post"),
        ("/v1/matchmaking/queue/{id}", "get"),
        ("/v1/matchmaking/queue/{id}", "delete"),
        ("/v1/matchmaking/queue/{id}/events", "get"),
        ("/v1/matchmaking/active", "get"),
        ("/v1/matchmaking/challenges", "post"),
        ("/v1/matchmaking/challenges/{id}/accept", "post"),
        ("/v1/matchmaking/challenges/{id}/decline", "post"),
        ("/v1/matchmaking/challenges/{id}", "delete"),
        ("/v1/matchmaking/challenges/incoming", "get"),
        ("/v1/matchmaking/challenges/outgoing", "get"),
        ("/internal/queues/summary", "get"),
        ("/metrics", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        assert!(operation["responses"].is_object());
    }
    let enqueue = &document["paths"]["/v1/matchmaking/queue"]["post"];
    for status in ["201", "400", "401", "409", "413", "415", "429", "503"] {
        assert!(
            enqueue["responses"][status].is_object(),
            "enqueue lacks {status}"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn health_metrics_and_request_ids() {
    let server = Server::start();
    let api = server.api();
    let plain = |path: &str| api.send(api.request("GET", path, None));
    assert_eq!(plain("/health/live").ok(200), json!({"status": "live"}));
    let ready = plain("/health/ready").ok(200);
    assert_eq!(ready["status"], "healthy", "{ready}");
    let components = ready["components"].as_object().unwrap();
    let names: Vec<&str> = components.keys().map(String::as_str).collect();
    assert_eq!(names, ["engine", "journal", "live_game", "snapshots"]);
    for (name, component) in components {
        assert_eq!(component["status"], "healthy", "{ready}");
        assert_eq!(component["critical"], name != "live_game", "{ready}");
    }
    assert_eq!(components["live_game"]["details"]["circuit"], "closed");
    assert_eq!(components["engine"]["details"]["state"], "running");
    assert_eq!(components["journal"]["details"]["writable"], true);
    assert_eq!(
        components["snapshots"]["details"]["consecutive_failures"],
        0
    );

    // An incoming id is echoed once sanitized, also on errors; otherwise one is made.
    let with_id = |id: &str| {
        api.send(
            api.request("GET", "/v1/matchmaking/active", None)
                .header("X-Request-Id", id),
        )
    };
    let reply = with_id("trace-42.a:b_c");
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["x-request-id"], "trace-42.a:b_c");
    assert_eq!(with_id("a b<c>").headers["x-request-id"], "abc");
    assert_eq!(
        with_id(&"x".repeat(300)).headers["x-request-id"],
        "x".repeat(64).as_str()
    );
    let made = [plain("/health/live"), plain("/health/live")]
        .map(|reply| reply.headers["x-request-id"].to_str().unwrap().to_owned());
    assert!(!made[0].is_empty());
    assert_ne!(made[0], made[1]);

    // Unknown routes are 404, known routes with another method 405 naming the allowed ones.
    plain("/nope/../etc/passwd").expect(404, "NOT_FOUND");
    let reply = api
        .send(api.request("PUT", "/v1/matchmaking/queue/q_1", None))
        .expect(405, "METHOD_NOT_ALLOWED");
    assert_eq!(reply.headers["allow"], "DELETE, GET");

    let reply = api.client.get(server.url("/metrics")).send().unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        reply.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = reply.text().unwrap();
    for needle in [
        r#"matchwell_http_requests_total{method="GET",route="/health/live",status="200"} 3"#,
        r#"route="unmatched",status="404""#,
        r#"route="/v1/matchmaking/queue/{id}",status="405""#,
        "matchwell_http_request_duration_seconds_bucket",
        // Readiness, for alerts: what /health/ready answered above.
        "matchwell_ready 1",
        r#"matchwell_health{component="engine",status="healthy"} 1"#,
        r#"matchwell_health{component="engine",status="unhealthy"} 0"#,
        r#"matchwell_health{component="live_game",status="healthy"} 1"#,
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains("passwd"), "a raw path became a label");
}

/// The series (name and labels, without the value) of the HTTP metrics in a Prometheus text
/// page.
fn http_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| line.starts_with("matchwell_http_"))
        .filter_map(|line| Some(line.rsplit_once(' ')?.0.to_owned()))
        .collect()
}

/// The value of label `name` in `series`.
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let length = series[start..].find('"')?;
    Some(&series[start..start + length])
}

#[test]
fn made_up_methods_and_paths_add_no_metric_series() {
    let seed = support::seed("metrics labels");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let server = Server::start();
    let api = server.api();
    let metrics = || {
        let reply = api.client.get(server.url("/metrics")).send().unwrap();
        assert_eq!(reply.status(), 200);
        reply.text().unwrap()
    };
    let document = api.send(api.request("GET", "/openapi.json", None)).ok(200);
    let templates: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let concrete = |template: &str, id: &str| template.replace("{id}", id);
    // Each route with each of its methods and with a method it does not know, and a path
    // that is no route: every series the random requests below can reach exists now.
    for template in &templates {
        for method in document["paths"][template].as_object().unwrap().keys() {
            let request = api.request(&method.to_uppercase(), &concrete(template, "q_1"), None);
            api.send(request);
        }
        api.send(api.request("XQZ123", &concrete(template, "q_1"), None))
            .expect(405, "METHOD_NOT_ALLOWED");
    }
    api.send(api.request("XQZ123", "/no/such/route", None))
        .expect(404, "NOT_FOUND");
    let before = http_series(&metrics());
    for template in &templates {
        assert!(
            before
                .iter()
                .any(|series| label(series, "route") == Some(template)),
            "no series of route {template}: {before:#?}"
        );
    }

    // Random methods (tokens that name no HTTP method, up to 1 KB) on random paths and on
    // the routes' paths with random ids.
    const TOKEN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let text = |rng: &mut ChaCha8Rng, length: usize, alphabet: &[u8]| -> String {
        (0..length)
            .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
            .collect()
    };
    let known = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    let mut sent = Vec::new();
    for n in 0..1_000 {
        let length = if rng.random_bool(0.1) {
            1_024
        } else {
            rng.random_range(1..=24)
        };
        let method = text(&mut rng, length, TOKEN);
        if known.contains(&method.as_str()) {
            continue;
        }
        let id = text(&mut rng, 12, b"abcdefghijklmnopqrstuvwxyz0123456789");
        let path = if rng.random_bool(0.5) {
            let template = &templates[rng.random_range(0..templates.len())];
            concrete(template, &id)
        } else {
            format!("/{id}/{}", text(&mut rng, 6, b"abcdefghijklmnopqrstuvwxyz"))
        };
        let reply = api.send(api.request(&method, &path, None));
        assert!(
            [404, 405].contains(&reply.status),
            "seed {seed}, request {n}: {method} {path}: {reply:?}"
        );
        sent.push((method, id));
    }

    let page = metrics();
    let after = http_series(&page);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "seed {seed}: random requests added {} series, such as {:?}",
        added.len(),
        added.first().map(|series| &series[..series.len().min(300)])
    );
    for series in &after {
        if let Some(method) = label(series, "method") {
            assert!(
                known.contains(&method) || method == "other",
                "seed {seed}: method label {method} in {series}"
            );
        }
        let route = label(series, "route").unwrap_or_default();
        assert!(
            route == "unmatched" || templates.iter().any(|template| template == route),
            "seed {seed}: route label {route} in {series}"
        );
    }
    // Long enough not to occur in the page by chance.
    for (method, id) in &sent {
        let long_method = method.len() >= 8 && page.contains(method.as_str());
        assert!(
            !long_method && !page.contains(id.as_str()),
            "seed {seed}: {method} or {id} is in /metrics"
        );
    }
}

/// The value of the first sample of `metric` (a full name with labels, if any) in a
/// Prometheus text page.
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(metric)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn journal_commits_and_snapshots_are_measured() {
    let server = Server::options()
        .env("MATCHWELL_FSYNC", "always")
        .env("MATCHWELL_TASK_SNAPSHOTS_MS", "50")
        .start();
    let api = server.api();
    api.enqueue(&token("ann"), &blitz(1500)).ok(201);
    let text = support::poll("a snapshot and a synced journal commit in /metrics", || {
        let text = api
            .client
            .get(server.url("/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        let snapshots = sample(&text, "matchwell_snapshot_seconds_count")?;
        let syncs = sample(&text, "matchwell_journal_sync_seconds_count")?;
        // A scrape reads the size (`…_body_bytes`) before the count, so it can catch a
        // snapshot counted but not yet sized: the first snapshot's size is awaited too.
        let sized = sample(&text, "matchwell_snapshot_body_bytes")?;
        (snapshots >= 1.0 && syncs >= 1.0 && sized > 0.0).then_some(text)
    });
    let positive = |metric: &str| sample(&text, metric).is_some_and(|value| value > 0.0);
    for metric in [
        "matchwell_journal_commit_records_sum",
        "matchwell_journal_bytes_total",
        "matchwell_journal_write_seconds_count",
        "matchwell_snapshot_body_bytes",
    ] {
        assert!(positive(metric), "{metric} is not positive:\n{text}");
    }
}

#[test]
fn the_summary_shows_the_pools_of_the_admins_tenant() {
    let server = Server::start();
    let api = server.api();
    let ann = token("ann");
    let ann_entry = id_of(&api.enqueue(&ann, &blitz(1500)).ok(201));
    api.enqueue(&token("ben"), &blitz(1560)).ok(201);
    let casual = json!({"time_control": "10+0", "variant": "chess960", "rated": false,
                        "rating": 900});
    api.enqueue(&token("cat"), &casual).ok(201);
    let admin = token_with("ops", &["--role", "admin"]);
    // The shard records the match before it handles the summary asked for after it.
    api.wait_for_status(&ann, &ann_entry, "matched");
    let summary = api.get("/internal/queues/summary", &admin).ok(200);
    assert_eq!(summary["tenant"], "default");
    let pool = |time_control: &str| -> &Value {
        summary["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pool| pool["time_control"] == time_control)
            .unwrap_or_else(|| panic!("no {time_control} pool in {summary}"))
    };
    let blitz_pool = pool("5+3");
    assert_eq!(blitz_pool["variant"], "standard");
    assert_eq!(blitz_pool["searching"], 0);
    assert_eq!(blitz_pool["matches_last_minute"], 1);
    assert_eq!(blitz_pool["mean_rating_gap"], 60.0);
    let casual_pool = pool("10+0");
    assert_eq!(casual_pool["rated"], false);
    assert_eq!(casual_pool["searching"], 1);
    assert_eq!(casual_pool["matches_last_minute"], 0);
    assert_eq!(casual_pool["mean_rating_gap"], Value::Null);
    for figure in ["oldest_wait_s", "wait_p50_s", "wait_p95_s"] {
        assert!(casual_pool[figure].as_f64().unwrap() >= 0.0);
    }
    api.get("/internal/queues/summary?tenant=acme", &admin)
        .expect(400, "INVALID_REQUEST");
}

#[test]
fn start_up_lists_the_tasks_and_refuses_bad_settings() {
    let server = Server::options()
        .env("MATCHWELL_TASK_SNAPSHOTS", "off")
        .start();
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("snapshots=off") && line.contains("7/8 tasks enabled")),
        "{:#?}",
        server.log()
    );
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for (name, value, message) in [
        ("MATCHWELL_TASK_MATCHING_MS", "0", "task `matching`"),
        ("MATCHWELL_FSYNC", "sometimes", "sometimes"),
        ("MATCHWELL_WORKERS", "0", "MATCHWELL_WORKERS"),
        (
            "MATCHWELL_BODY_LIMIT_BYTES",
            "0",
            "MATCHWELL_BODY_LIMIT_BYTES",
        ),
        (
            "MATCHWELL_RATE_LIMIT_BURST",
            "0",
            "MATCHWELL_RATE_LIMIT_BURST",
        ),
        (
            "MATCHWELL_READ_RATE_LIMIT_BURST",
            "0",
            "MATCHWELL_READ_RATE_LIMIT_BURST",
        ),
        (
            "MATCHWELL_SSE_MAX_PER_USER",
            "0",
            "MATCHWELL_SSE_MAX_PER_USER",
        ),
        ("MATCHWELL_SSE_MAX_TOTAL", "0", "MATCHWELL_SSE_MAX_TOTAL"),
        (
            "MATCHWELL_SSE_EVENTS_PER_MS",
            "0",
            "MATCHWELL_SSE_EVENTS_PER_MS",
        ),
        (
            "MATCHWELL_SHUTDOWN_TIMEOUT_S",
            "0",
            "MATCHWELL_SHUTDOWN_TIMEOUT_S",
        ),
        ("MATCHWELL_TASK_LIMITERS_MS", "0", "task `limiters`"),
        ("MATCHWELL_LIVE_GAME_API_URL", "not a url", "is not a URL"),
        (
            "MATCHWELL_LIVE_GAME_MAX_IN_FLIGHT",
            "0",
            "MATCHWELL_LIVE_GAME_MAX_IN_FLIGHT must be from 1 to 10000, not 0",
        ),
        (
            "MATCHWELL_LIVE_GAME_MAX_ATTEMPTS",
            "0",
            "MATCHWELL_LIVE_GAME_MAX_ATTEMPTS must be from 1",
        ),
        (
            "MATCHWELL_LIVE_GAME_BACKOFF_MS",
            "0",
            "MATCHWELL_LIVE_GAME_BACKOFF_MS must be from 1",
        ),
        (
            "MATCHWELL_LIVE_GAME_MAX_BACKOFF_MS",
            "150",
            "MATCHWELL_LIVE_GAME_MAX_BACKOFF_MS must be from 200 to 3600000, not 150",
        ),
        (
            "MATCHWELL_LIVE_GAME_TIMEOUT_MS",
            "0",
            "MATCHWELL_LIVE_GAME_TIMEOUT_MS must be from 1",
        ),
        (
            "MATCHWELL_MAX_SHARD_BACKLOG",
            "100000001",
            "MATCHWELL_MAX_SHARD_BACKLOG must be from 0 to 100000000, not 100000001",
        ),
        ("MATCHWELL_MAX_SHARD_BACKLOG", "-1", "'-1'"),
        (
            "MATCHWELL_MAX_JOURNAL_BACKLOG",
            "100000001",
            "MATCHWELL_MAX_JOURNAL_BACKLOG must be from 0 to 100000000",
        ),
        ("MATCHWELL_MAX_JOURNAL_BACKLOG", "many", "'many'"),
        ("MATCHWELL_POOLS", "/nonexistent/pools.toml", "pools.toml"),
        ("MATCHWELL_LISTEN", "127.0.0.1:99999", "127.0.0.1:99999"),
    ] {
        let log = support::refused_start(&[
            (name, value),
            ("MATCHWELL_JWT_SECRET", SECRET),
            ("MATCHWELL_DATA_DIR", data_dir),
        ]);
        assert!(log.contains(message), "{name}={value}: {log}");
    }
}

/// The access-log lines in `log` (JSON lines), parsed.
fn access_lines(log: &[String]) -> Vec<Value> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "matchwell::access")
        .collect()
}

#[test]
fn every_request_gets_one_access_log_line() {
    let server = Server::options()
        .env("MATCHWELL_LOG_FORMAT", "json")
        .start();
    let api = server.api();
    let ann = token("ann");
    let with_id = |request: reqwest::blocking::RequestBuilder, id: &str| {
        api.send(request.header("X-Request-Id", id))
    };
    let queued = with_id(
        api.request("POST", "/v1/matchmaking/queue", Some(&ann))
            .json(&blitz(1500)),
        "trace-1",
    );
    assert_eq!(queued.status, 201);
    let entry = id_of(&queued.body);
    let missing = with_id(
        api.request("GET", "/v1/matchmaking/queue/q_999999", Some(&ann)),
        "trace-2",
    );
    assert_eq!(missing.status, 404);
    let anonymous = api.send(api.request("GET", "/v1/matchmaking/active", None));
    assert_eq!(anonymous.status, 401);
    let nowhere = api.send(api.request("GET", "/no/such/path", None));
    assert_eq!(nowhere.status, 404);
    let generated =
        |reply: &support::Reply| reply.headers["x-request-id"].to_str().unwrap().to_owned();
    // Request id, method, route, status, user.
    let expected = [
        (
            "trace-1".to_owned(),
            "POST",
            "/v1/matchmaking/queue",
            201,
            Some("ann"),
        ),
        (
            "trace-2".to_owned(),
            "GET",
            "/v1/matchmaking/queue/{id}",
            404,
            Some("ann"),
        ),
        (
            generated(&anonymous),
            "GET",
            "/v1/matchmaking/active",
            401,
            None,
        ),
        (generated(&nowhere), "GET", "unmatched", 404, None),
    ];
    let lines = support::poll("an access-log line per request", || {
        let lines = access_lines(&server.log());
        expected
            .iter()
            .map(|(id, ..)| {
                let mine: Vec<&Value> = lines
                    .iter()
                    .filter(|line| line["request_id"] == *id)
                    .collect();
                assert!(mine.len() <= 1, "{id} logged twice: {mine:#?}");
                mine.first().copied().cloned()
            })
            .collect::<Option<Vec<Value>>>()
    });
    for ((id, method, route, status, user), line) in expected.iter().zip(&lines) {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["message"], "request", "{line}");
        assert_eq!(line["method"], *method, "{line}");
        assert_eq!(line["route"], *route, "{line}");
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["request_id"], id.as_str(), "{line}");
        assert!(line["latency_us"].is_u64(), "{line}");
        match user {
            Some(user) => {
                assert_eq!(line["tenant"], "default", "{line}");
                assert_eq!(line["user"], *user, "{line}");
            }
            None => {
                let fields = line.as_object().unwrap();
                assert!(
                    !fields.contains_key("tenant") && !fields.contains_key("user"),
                    "{line}"
                );
            }
        }
        let text = line.to_string();
        assert!(
            !text.contains("q_999999") && !text.contains("/no/such") && !text.contains(&entry),
            "a raw path was logged: {line}"
        );
    }
    // Every line of the log is one JSON object, not only the access log's.
    for line in server.log() {
        let parsed: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed.is_object() && parsed["target"].is_string(), "{line}");
    }

    // Operators can turn the access log off, and keep the rest.
    let mut server = Server::options()
        .env("MATCHWELL_LOG_FORMAT", "json")
        .env("MATCHWELL_LOG", "info,matchwell::access=off")
        .start();
    server.api().enqueue(&ann, &blitz(1500)).ok(201);
    server.terminate();
    let status = server.wait_exit(support::PATIENCE).expect("no exit");
    assert!(status.success());
    // The stop's lines come last: once the reader has them, it has the whole log.
    let log = support::poll("the log of the stop", || {
        let log = server.log();
        log.iter()
            .any(|line| line.contains("matchwell stopped cleanly"))
            .then_some(log)
    });
    assert_eq!(access_lines(&log), Vec::<Value>::new());
}

#[test]
fn the_master_switch_turns_every_task_off() {
    let server = Server::options().env("MATCHWELL_TASKS", "off").start();
    let log = server.log();
    let tasks = log
        .iter()
        .find(|line| line.contains("background tasks"))
        .unwrap_or_else(|| panic!("no list of tasks: {log:#?}"));
    let names = [
        "matching",
        "expiry",
        "games",
        "challenges",
        "retention",
        "snapshots",
        "heartbeat",
        "limiters",
    ];
    for name in names {
        assert!(tasks.contains(&format!("{name}=off")), "{name}: {tasks}");
    }
    assert!(tasks.contains("0/8 tasks enabled"), "{tasks}");
    // No heartbeat: the journal has committed nothing since it opened.
    let api = server.api();
    let ready = api.send(api.request("GET", "/health/ready", None)).ok(200);
    assert_eq!(
        ready["components"]["journal"]["details"]["last_commit_age_ms"],
        Value::Null,
        "{ready}"
    );
}
