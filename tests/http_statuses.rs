//! Every status code the OpenAPI document promises, provoked on every route: against the
//! real binary, and for 503 (the engine not ready) against a server in this process whose
//! engine is not there yet, then stopped under it. The document and these tests cannot drift apart: a documented status no test
//! provokes fails, and so does a provoked one the document does not list.

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use matchwell::Engine;
use matchwell::health::HealthRegistry;
use matchwell::http::{EngineSlot, EventPace, HttpSettings, StreamLimits};
use matchwell::jwt::{JwtSecret, TokenScope};
use serde_json::{Value, json};
use support::{Api, Reply, SECRET, Server, blitz, challenge_of, id_of, token, token_with};

/// Routes that answer without the engine, and so never 503.
const ENGINELESS: [&str; 4] = ["/health/live", "/health/ready", "/metrics", "/openapi.json"];

/// Routes answering 503 once the engine has stopped, besides `/health/ready`; every route
/// but the [`ENGINELESS`] ones does while it recovers.
const STOPPED: [(&str, &str); 7] = [
    ("POST", "/v1/matchmaking/queue"),
    ("DELETE", "/v1/matchmaking/queue/{id}"),
    ("POST", "/v1/matchmaking/challenges"),
    ("POST", "/v1/matchmaking/challenges/{id}/accept"),
    ("POST", "/v1/matchmaking/challenges/{id}/decline"),
    ("DELETE", "/v1/matchmaking/challenges/{id}"),
    ("GET", "/internal/queues/summary"),
];

/// Fresh users, so that no provocation disturbs another, and an admin.
struct Users {
    count: AtomicUsize,
    admin: String,
}

impl Users {
    fn next(&self) -> (String, String) {
        let name = format!("user-{}", self.count.fetch_add(1, Ordering::Relaxed));
        let token = token(&name);
        (name, token)
    }
}

/// Provokes `status` on `method path` of the real server; the answer.
fn provoke(api: &Api, users: &Users, method: &str, path: &str, status: u16) -> Reply {
    let (me, mine) = users.next();
    let (other, theirs) = users.next();
    let admin = &users.admin;
    // The route's path with a real id of the caller's, or a junk one for 404.
    let real_path = |id: &str| path.replace("{id}", id);
    let my_entry = || id_of(&api.enqueue(&mine, &blitz(1500)).ok(201));
    let challenge_to_me = || id_of(&api.challenge(&theirs, &challenge_of(&me)).ok(201));
    let my_challenge = || id_of(&api.challenge(&mine, &challenge_of(&other)).ok(201));
    let call = |path: &str, token: Option<&str>| {
        let request = api.request(method, path, token);
        let request = match (method, path) {
            ("POST", "/v1/matchmaking/queue") => request.json(&blitz(1500)),
            ("POST", "/v1/matchmaking/challenges") => request.json(&challenge_of(&other)),
            _ => request,
        };
        api.send(request)
    };
    // A path the caller may use: their entry, or a challenge in which they have the right part.
    let usable_path = || match path {
        "/v1/matchmaking/queue/{id}" | "/v1/matchmaking/queue/{id}/events" => {
            let id = my_entry();
            if path.ends_with("/events") {
                // A settled entry: its stream sends it once and ends.
                api.cancel(&mine, &id).ok(200);
            }
            real_path(&id)
        }
        "/v1/matchmaking/challenges/{id}" if method == "DELETE" => real_path(&my_challenge()),
        p if p.contains("{id}") => real_path(&challenge_to_me()),
        _ => path.to_owned(),
    };
    match status {
        200 | 201 if path == "/internal/queues/summary" => call(path, Some(admin)),
        200 | 201 => call(&usable_path(), Some(&mine)),
        400 => match (method, path) {
            ("POST", "/v1/matchmaking/queue") => api.enqueue(&mine, &json!({"rated": 1})),
            ("POST", "/v1/matchmaking/challenges") => api.challenge(&mine, &challenge_of(&me)),
            _ => {
                let token = if path.starts_with("/internal") {
                    admin
                } else {
                    &mine
                };
                call(&format!("{}?bogus=1", usable_path()), Some(token))
            }
        },
        401 => call(&usable_path(), None),
        403 => match (method, path) {
            ("GET", "/internal/queues/summary") => call(path, Some(&mine)),
            ("POST", "/v1/matchmaking/queue") => {
                let mut body = blitz(1500);
                body["user_id"] = json!(other);
                api.enqueue(&mine, &body)
            }
            ("POST", "/v1/matchmaking/challenges") => {
                let mut body = challenge_of(&me);
                body["user_id"] = json!(other);
                api.challenge(&mine, &body)
            }
            _ => {
                let path = usable_path();
                let separator = if path.contains('?') { '&' } else { '?' };
                call(&format!("{path}{separator}user_id={other}"), Some(&mine))
            }
        },
        404 => call(&real_path("x_1"), Some(&mine)),
        409 => match (method, path) {
            ("POST", "/v1/matchmaking/queue") => {
                my_entry();
                call(path, Some(&mine))
            }
            ("POST", "/v1/matchmaking/challenges") => {
                my_challenge();
                call(path, Some(&mine))
            }
            ("DELETE", "/v1/matchmaking/queue/{id}") => {
                // Expired entries can no longer be cancelled.
                let body = json!({"time_control": "1+0", "variant": "standard", "rated": true});
                let id = id_of(&api.enqueue(&mine, &body).ok(201));
                api.wait_for_status(&mine, &id, "expired");
                call(&real_path(&id), Some(&mine))
            }
            _ => {
                // A challenge that is settled already.
                let path = usable_path();
                let id = path.split('/').nth(4).unwrap();
                let closer = if method == "DELETE" { &mine } else { &theirs };
                api.delete(&format!("/v1/matchmaking/challenges/{id}"), closer)
                    .ok(200);
                call(&path, Some(&mine))
            }
        },
        413 => {
            let mut body = if path.ends_with("/queue") {
                blitz(1500)
            } else {
                challenge_of(&other)
            };
            body["variant"] = json!("v".repeat(20_000));
            api.send(api.request(method, path, Some(&mine)).json(&body))
        }
        422 => {
            // An Idempotency-Key used again with another rating.
            api.enqueue_keyed(&mine, b"k-422", &blitz(1500)).ok(201);
            api.enqueue_keyed(&mine, b"k-422", &blitz(1600))
        }
        415 => api.send(
            api.request(method, path, Some(&mine))
                .header("Content-Type", "text/plain")
                .body("{}"),
        ),
        429 => {
            let path = usable_path();
            // Spend the budget on requests that change nothing: reads and writes have
            // budgets of their own.
            support::poll("the budget to run out", || {
                let spent = if method == "GET" {
                    api.get("/v1/matchmaking/active", &mine)
                } else {
                    api.cancel(&mine, "q_ffffffff")
                };
                (spent.status == 429).then_some(())
            });
            call(&path, Some(&mine))
        }
        _ => panic!("no way to provoke {status} on {method} {path}"),
    }
}

/// The error code `status` carries on `method path`.
fn code_of(status: u16, method: &str, path: &str) -> &'static str {
    match status {
        200 | 201 => "",
        400 => "INVALID_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        409 => match (method, path) {
            ("POST", "/v1/matchmaking/queue") => "ALREADY_QUEUED",
            ("DELETE", "/v1/matchmaking/queue/{id}") => "NOT_CANCELLABLE",
            ("POST", "/v1/matchmaking/challenges") => "CHALLENGE_EXISTS",
            _ => "CHALLENGE_NOT_PENDING",
        },
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        422 => "IDEMPOTENCY_KEY_REUSED",
        429 => "RATE_LIMITED",
        _ => "UNAVAILABLE",
    }
}

/// Every (method, path, status) the document lists.
fn documented(document: &Value) -> BTreeSet<(String, String, u16)> {
    let mut listed = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                listed.insert((method.to_uppercase(), path.clone(), status.parse().unwrap()));
            }
        }
    }
    listed
}

#[test]
fn every_documented_status_is_provoked_on_every_route() {
    // No matching, so that queued players stay queued; a pool whose entries expire at once;
    // budgets that refill slowly, so that a spent one stays spent for the next request.
    let server = Server::options()
        .pools(
            "[[pool]]\ntime_control = \"5+3\"\nvariant = \"standard\"\nrated = true\n\n\
             [[pool]]\ntime_control = \"1+0\"\nvariant = \"standard\"\nrated = true\nmax_wait_s = 1\n",
        )
        .env("MATCHWELL_TASK_MATCHING", "off")
        .env("MATCHWELL_TASK_EXPIRY_MS", "50")
        .env("MATCHWELL_RATE_LIMIT_PER_S", "1")
        .env("MATCHWELL_RATE_LIMIT_BURST", "10")
        .env("MATCHWELL_READ_RATE_LIMIT_PER_S", "1")
        .env("MATCHWELL_READ_RATE_LIMIT_BURST", "10")
        .start();
    let api = server.api();
    let document = api.send(api.request("GET", "/openapi.json", None)).ok(200);
    let users = Users {
        count: AtomicUsize::new(0),
        admin: token_with("ops", &["--role", "admin"]),
    };
    let mut provoked = BTreeSet::new();
    for (method, path, status) in documented(&document) {
        let not_ready =
            status == 503 && (path == "/health/ready" || !ENGINELESS.contains(&path.as_str()));
        if not_ready {
            // Provoked by the test below.
            provoked.insert((method, path, status));
            continue;
        }
        let reply = provoke(&api, &users, &method, &path, status);
        let what = format!("{method} {path} → {status}");
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        let code = code_of(status, &method, &path);
        if status >= 400 {
            assert_eq!(reply.code(), code, "{what}: {reply:?}");
            assert!(!reply.message().is_empty(), "{what}");
        }
        provoked.insert((method, path, status));
    }
    assert_eq!(provoked, documented(&document));
    assert!(provoked.len() >= 93, "only {} statuses", provoked.len());
}

/// A server in this process: its engine is absent until the test sends on the first channel,
/// and the server stops when the test drops the second.
struct InProcess {
    base: String,
    slot: Arc<EngineSlot>,
    recover: mpsc::Sender<()>,
    _serving: mpsc::Sender<()>,
}

fn in_process_server() -> InProcess {
    let (started, handed) = mpsc::channel();
    let (recover, recovering) = mpsc::channel::<()>();
    let (serving, stopped) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let slot = Arc::new(EngineSlot::default());
            let mut health = HealthRegistry::default();
            slot.register_health(&mut health);
            let secret = JwtSecret::resolve(Some(SECRET), std::path::Path::new("unused")).unwrap();
            let settings = HttpSettings {
                listen: "127.0.0.1:0".into(),
                workers: 1,
                body_limit_bytes: 16 * 1024,
                tokens: TokenScope::default(),
                rate_limit: None,
                read_rate_limit: None,
                streams: StreamLimits {
                    per_user: 8,
                    total: 100,
                },
                event_pace: EventPace::per_ms(NonZeroU32::new(10).unwrap()),
                limiter_cleanup: None,
                catalog: Arc::new(matchwell::PoolCatalog::builtin()),
            };
            let registry = prometheus::Registry::new();
            let server = matchwell::http::start(
                Arc::clone(&slot),
                registry.clone(),
                health,
                &secret,
                &settings,
            )
            .unwrap();
            let base = format!("http://{}", server.addrs[0]);
            started.send((base, Arc::clone(&slot))).unwrap();
            if actix_web::rt::task::spawn_blocking(move || recovering.recv())
                .await
                .unwrap()
                .is_ok()
            {
                let engine = Engine::builder().metrics_registry(registry).start();
                slot.fill(Arc::new(engine.await.unwrap()));
            }
            // Serves until the test drops its end.
            let _ = actix_web::rt::task::spawn_blocking(move || stopped.recv()).await;
            server.drain(Duration::ZERO).await.unwrap();
        });
    });
    let (base, slot) = handed.recv_timeout(support::PATIENCE).unwrap();
    InProcess {
        base,
        slot,
        recover,
        _serving: serving,
    }
}

/// Expects the one error shape with 503 `UNAVAILABLE` and a `Retry-After`.
fn expect_not_ready(reply: Reply, what: &str) {
    let reply = reply.expect(503, "UNAVAILABLE");
    assert!(
        reply.headers.contains_key("retry-after"),
        "{what}: no Retry-After: {reply:?}"
    );
}

#[test]
fn every_route_of_the_engine_answers_503_until_it_is_ready_and_writes_once_it_stopped() {
    let server = in_process_server();
    let api = Api::new(&server.base);
    let (ann, ben) = (token("ann"), token("ben"));
    let admin = token_with("ops", &["--role", "admin"]);
    let request = |method: &str, path: &str, id: &str| {
        let path = path.replace("{id}", id);
        let (token, body) = match (method, path.as_str()) {
            ("POST", "/v1/matchmaking/queue") => (&ben, Some(blitz(1500))),
            ("POST", "/v1/matchmaking/challenges") => (&ben, Some(challenge_of("ann"))),
            (_, "/internal/queues/summary") => (&admin, None),
            ("POST", _) => (&ben, None),
            _ => (&ann, None),
        };
        let mut request = api.request(method, &path, Some(token));
        if let Some(body) = body {
            request = request.json(&body);
        }
        api.send(request)
    };

    // Recovering: only health, metrics and the document answer.
    let document = api.send(api.request("GET", "/openapi.json", None)).ok(200);
    let ready = api.send(api.request("GET", "/health/ready", None));
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["status"], "unhealthy");
    assert_eq!(
        ready.body["components"]["engine"]["details"]["state"],
        "recovering"
    );
    api.send(api.request("GET", "/health/live", None)).ok(200);
    let metrics = api
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().unwrap();
    for needle in [
        "matchwell_ready 0",
        r#"matchwell_health{component="engine",status="unhealthy"} 1"#,
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
    let mut routes = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        if ENGINELESS.contains(&path.as_str()) {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            expect_not_ready(request(&method, path, "x_1"), &format!("{method} {path}"));
            routes += 1;
        }
    }
    assert_eq!(routes, 13);

    server.recover.send(()).unwrap();
    support::poll("the engine to be ready", || {
        let reply = api.send(api.request("GET", "/health/ready", None));
        (reply.status == 200).then_some(())
    });
    let entry = id_of(&api.enqueue(&ann, &blitz(1500)).ok(201));
    let challenge = id_of(&api.challenge(&ann, &challenge_of("ben")).ok(201));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(server.slot.get().unwrap().shutdown());
    let ready = api.send(api.request("GET", "/health/ready", None));
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(
        ready.body["components"]["engine"]["details"]["state"],
        "stopping"
    );
    for (method, path) in STOPPED {
        let id = if path.contains("challenges") {
            &challenge
        } else {
            &entry
        };
        expect_not_ready(request(method, path, id), &format!("{method} {path}"));
    }
    // Reads still answer, and nothing was written.
    assert_eq!(api.entry(&ann, &entry).ok(200)["status"], "searching");
    let path = format!("/v1/matchmaking/challenges/{challenge}");
    assert_eq!(api.get(&path, &ben).ok(200)["status"], "pending");
    let active = api.get("/v1/matchmaking/active", &ben).ok(200);
    assert_eq!(active["searching"], Value::Null);
    assert_eq!(active["outgoing"], json!([]));
}
