//! Seeded fuzzing of the real server: malformed bodies, headers, paths, tokens and raw bytes.
//! Every answer must be a well-formed refusal (never a 5xx), the process must stay up, and
//! afterwards the state must be what it was and the server must still work.
//!
//! The seed is `MATCHWELL_TEST_SEED` when set, else drawn; a failure prints it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use support::{Api, Reply, Server, blitz, challenge_of, id_of, token, token_with};

/// Requests sent over HTTP, and raw byte sequences sent over TCP. Spread over several
/// callers, the requests stay far below each user's default budgets (40 writes and 400 reads
/// at once), so no answer is a 429.
const REQUESTS: usize = 600;
const RAW: usize = 120;

/// The fixed state the fuzzing must not change, and how to read it back.
struct World {
    entries: Vec<(String, String)>,
    challenge: String,
    owners: Vec<(String, String)>,
    admin: String,
}

impl World {
    fn build(api: &Api) -> Self {
        let owners: Vec<(String, String)> = ["alice", "bob", "carol", "dave"]
            .into_iter()
            .map(|user| (user.to_owned(), token(user)))
            .collect();
        let casual = json!({"time_control": "10+0", "variant": "chess960", "rated": false,
                            "rating": 3900});
        let alice = id_of(&api.enqueue(&owners[0].1, &blitz(100)).ok(201));
        let bob = id_of(&api.enqueue(&owners[1].1, &casual).ok(201));
        let challenge = id_of(&api.challenge(&owners[2].1, &challenge_of("dave")).ok(201));
        Self {
            entries: vec![(alice, owners[0].1.clone()), (bob, owners[1].1.clone())],
            challenge,
            owners,
            admin: token_with("ops", &["--role", "admin"]),
        }
    }

    /// Everything the owners and the admin can see, without what moves with the clock.
    fn observe(&self, api: &Api) -> Value {
        let mut seen = Vec::new();
        for (id, token) in &self.entries {
            seen.push(unclocked(api.entry(token, id).ok(200)));
        }
        for (_, token) in &self.owners {
            let mut active = api.get("/v1/matchmaking/active", token).ok(200);
            active["searching"] = unclocked(active["searching"].take());
            seen.push(active);
        }
        let path = format!("/v1/matchmaking/challenges/{}", self.challenge);
        seen.push(api.get(&path, &self.owners[3].1).ok(200));
        let mut summary = api.get("/internal/queues/summary", &self.admin).ok(200);
        for pool in summary["pools"].as_array_mut().unwrap() {
            for clocked in [
                "oldest_wait_s",
                "wait_p50_s",
                "wait_p95_s",
                "arrivals_per_s",
            ] {
                pool[clocked] = Value::Null;
            }
        }
        seen.push(summary);
        Value::Array(seen)
    }
}

fn unclocked(mut entry: Value) -> Value {
    if let Some(fields) = entry.as_object_mut() {
        fields.remove("wait_s");
        fields.remove("window");
    }
    entry
}

/// Draws malformed requests.
struct Fuzzer {
    rng: ChaCha8Rng,
}

const ROUTES: [(&str, &str); 13] = [
    ("POST", "/v1/matchmaking/queue"),
    ("GET", "/v1/matchmaking/queue/{q}"),
    ("DELETE", "/v1/matchmaking/queue/{q}"),
    ("GET", "/v1/matchmaking/queue/{q}/events"),
    ("GET", "/v1/matchmaking/active"),
    ("POST", "/v1/matchmaking/challenges"),
    ("GET", "/v1/matchmaking/challenges/incoming"),
    ("GET", "/v1/matchmaking/challenges/outgoing"),
    ("GET", "/v1/matchmaking/challenges/{c}"),
    ("POST", "/v1/matchmaking/challenges/{c}/accept"),
    ("POST", "/v1/matchmaking/challenges/{c}/decline"),
    ("DELETE", "/v1/matchmaking/challenges/{c}"),
    ("GET", "/internal/queues/summary"),
];

const NASTY: [&str; 16] = [
    "",
    " ",
    "\u{0}",
    "%00",
    "%ff%fe",
    "..",
    "../..",
    "%2e%2e%2f",
    "q_",
    "q_-1",
    "q_ffffffffffffffffff",
    "q_0",
    "c_0",
    "\u{202e}",
    "𝕏",
    "{id}",
];

impl Fuzzer {
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items.choose(&mut self.rng).unwrap()
    }

    fn junk_text(&mut self, max: usize) -> String {
        let len = self.rng.random_range(0..=max);
        (0..len)
            .map(|_| match self.rng.random_range(0..4) {
                0 => char::from(self.rng.random_range(0x20_u8..0x7f)),
                1 => char::from_u32(self.rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'),
                2 => *['"', '\\', '{', '}', '[', ']', ':', ',']
                    .choose(&mut self.rng)
                    .unwrap(),
                _ => char::from(self.rng.random_range(0_u8..0x20)),
            })
            .collect()
    }

    /// An id that names nothing: another kind, junk, or a number far past any made here.
    fn bad_id(&mut self) -> String {
        match self.rng.random_range(0..4) {
            0 => self.pick(&NASTY).to_owned(),
            1 => format!("q_{:x}", self.rng.random_range(0x1000_u64..u64::MAX)),
            2 => format!("c_{:x}", self.rng.random_range(0x1000_u64..u64::MAX)),
            _ => self.junk_text(40),
        }
    }

    /// A value of a random JSON type.
    fn junk_value(&mut self, depth: u32) -> Value {
        match self.rng.random_range(0..if depth > 2 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.rng.random_bool(0.5)),
            2 => json!(self.rng.random::<i64>()),
            3 => json!(self.rng.random::<f64>() * 1e12),
            4 => json!(self.junk_text(30)),
            5 => json!(u64::MAX),
            6 => Value::Array((0..3).map(|_| self.junk_value(depth + 1)).collect()),
            _ => {
                let mut object = Map::new();
                for _ in 0..3 {
                    let key = self.junk_text(8);
                    object.insert(key, self.junk_value(depth + 1));
                }
                Value::Object(object)
            }
        }
    }

    /// A JSON body for `path` that the server must refuse: each variant breaks a rule.
    fn bad_body(&mut self, path: &str) -> Vec<u8> {
        let valid = if path.ends_with("/queue") {
            blitz(1500)
        } else {
            challenge_of("zoe")
        };
        let text = valid.to_string();
        match self.rng.random_range(0..9) {
            // Truncated.
            0 => text.as_bytes()[..self.rng.random_range(0..text.len())].to_vec(),
            // Random bytes.
            1 => {
                let mut bytes = vec![0; self.rng.random_range(0..300)];
                self.rng.fill_bytes(&mut bytes);
                bytes
            }
            // A field of the wrong type (strings where they belong stay wrong: not strings).
            2 => {
                let mut body = valid.clone();
                let fields: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
                let field = fields.choose(&mut self.rng).unwrap().clone();
                let right_type = |value: &Value| match field.as_str() {
                    "rated" => value.is_boolean(),
                    "rating" => value.is_null() || value.as_i64().is_some_and(|r| r <= 4000),
                    _ => value.is_string(),
                };
                body[&field] = loop {
                    let value = self.junk_value(0);
                    if !right_type(&value) {
                        break value;
                    }
                };
                body.to_string().into_bytes()
            }
            // An unknown field.
            3 => {
                let mut body = valid.clone();
                body[format!("x{}", self.junk_text(10))] = self.junk_value(0);
                body.to_string().into_bytes()
            }
            // A required field missing.
            4 => {
                let mut body = valid.clone();
                let required = ["time_control", "variant", "rated"];
                body.as_object_mut()
                    .unwrap()
                    .remove(*required.choose(&mut self.rng).unwrap());
                body.to_string().into_bytes()
            }
            // A value out of range.
            5 => {
                let mut body = valid.clone();
                match self.rng.random_range(0..5) {
                    0 => body["time_control"] = json!(self.junk_text(12) + "++"),
                    1 => body["variant"] = json!("V".repeat(self.rng.random_range(1..100))),
                    2 if path.ends_with("/queue") => {
                        body["rating"] = json!(self.rng.random_range(4001_i64..i64::MAX))
                    }
                    3 if path.ends_with("/queue") => {
                        body["region"] = json!("r".repeat(self.rng.random_range(17..200)))
                    }
                    _ => body["time_control"] = json!("0+0"),
                }
                body.to_string().into_bytes()
            }
            // Deep nesting.
            6 => {
                let depth = self.rng.random_range(100..5_000);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            }
            // Not an object.
            7 => self.junk_value(0).to_string().into_bytes(),
            // Too large.
            _ => {
                let mut body = valid;
                body["variant"] = json!("v".repeat(17_000));
                body.to_string().into_bytes()
            }
        }
    }

    fn bad_token(&mut self, good: &str) -> String {
        match self.rng.random_range(0..5) {
            0 => self.junk_text(60).replace(['\r', '\n'], ""),
            1 => {
                // Flip one character of a real token.
                let mut bytes = good.as_bytes().to_vec();
                let at = self.rng.random_range(0..bytes.len());
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).unwrap()
            }
            2 => good.split('.').take(2).collect::<Vec<_>>().join("."),
            3 => format!("{good}.{good}"),
            _ => "e30.e30.e30".to_owned(),
        }
    }
}

/// What a fuzzed answer must look like: a refusal in the one error shape, or a read.
fn check_refusal(reply: &Reply, method: &str, what: &str) {
    assert!(reply.status < 500, "{what}: server error {reply:?}");
    if reply.status >= 400 {
        assert!(
            !reply.code().is_empty() && !reply.message().is_empty(),
            "{what}: not the error shape: {reply:?}"
        );
    } else {
        assert_eq!(method, "GET", "{what}: a write succeeded: {reply:?}");
    }
}

/// Sends `bytes` over a fresh connection; the status of the answer, if any came.
fn raw_exchange(addr: &str, bytes: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may close early on garbage; a failed write is an answer too.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[test]
fn malformed_requests_change_nothing_and_never_break_the_server() {
    let seed = support::seed("fuzz");
    let mut fuzz = Fuzzer {
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    let mut server = Server::start();
    let api = server.api();
    let world = World::build(&api);
    let before = world.observe(&api);
    let owner_tokens: Vec<String> = world.owners.iter().map(|(_, t)| t.clone()).collect();
    // Tokens of callers that own nothing here, who may send any path and method.
    let outsiders = [
        token("mallory"),
        token_with("alice", &["--tenant", "acme"]),
        token_with("svc", &["--role", "service", "--tenant", "acme"]),
        token_with("ops", &["--role", "admin", "--tenant", "acme"]),
    ];

    for n in 0..REQUESTS {
        let (method, template) = *ROUTES.choose(&mut fuzz.rng).unwrap();
        let real_path = template
            .replace("{q}", &world.entries[fuzz.rng.random_range(0..2)].0)
            .replace("{c}", &world.challenge);
        let kind = fuzz.rng.random_range(0..4);
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        let (method, path, body, expected): (&str, String, Option<Vec<u8>>, &[u16]) = match kind {
            // A real route with a bad token.
            0 => {
                let good = owner_tokens.choose(&mut fuzz.rng).unwrap();
                let bad = fuzz.bad_token(good);
                let scheme = fuzz.pick(&["Bearer ", "bearer ", "Basic ", "", "Bearer  "]);
                headers.push((
                    "authorization".into(),
                    format!("{scheme}{bad}").into_bytes(),
                ));
                let body = (method == "POST").then(|| fuzz.bad_body(&real_path));
                (method, real_path, body, &[401])
            }
            // A body that breaks a rule, from anyone.
            1 => {
                let path = if fuzz.rng.random_bool(0.5) {
                    "/v1/matchmaking/queue"
                } else {
                    "/v1/matchmaking/challenges"
                };
                let caller = if fuzz.rng.random_bool(0.5) {
                    owner_tokens.choose(&mut fuzz.rng).unwrap()
                } else {
                    outsiders.choose(&mut fuzz.rng).unwrap()
                };
                headers.push((
                    "authorization".into(),
                    format!("Bearer {caller}").into_bytes(),
                ));
                let content_type = fuzz.pick(&[
                    "application/json",
                    "application/json",
                    "application/json",
                    "application/json; charset=utf-8",
                    "text/plain",
                    "",
                    "*/*",
                ]);
                if !content_type.is_empty() {
                    headers.push(("content-type".into(), content_type.as_bytes().to_vec()));
                }
                if fuzz.rng.random_bool(0.2) {
                    let key = fuzz.junk_text(200).into_bytes();
                    headers.push(("idempotency-key".into(), key));
                }
                (
                    "POST",
                    path.to_owned(),
                    Some(fuzz.bad_body(path)),
                    &[400, 413, 415],
                )
            }
            // A path that names nothing, any method, from someone who owns nothing.
            2 => {
                let caller = outsiders.choose(&mut fuzz.rng).unwrap();
                headers.push((
                    "authorization".into(),
                    format!("Bearer {caller}").into_bytes(),
                ));
                let bad = fuzz.bad_id();
                let path = template.replace("{q}", &bad).replace("{c}", &bad);
                let encoded: String = path
                    .chars()
                    .map(|c| match c {
                        '/' | 'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' | '{' | '}' => {
                            c.to_string()
                        }
                        _ => c.to_string().bytes().map(|b| format!("%{b:02X}")).collect(),
                    })
                    .collect();
                let method = fuzz.pick(&["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]);
                let body = (method == "POST").then(|| fuzz.bad_body(&encoded));
                (
                    method,
                    encoded,
                    body,
                    &[400, 401, 403, 404, 405, 413, 415, 200],
                )
            }
            // A real route with a junk query, from someone who owns nothing.
            _ => {
                let caller = outsiders.choose(&mut fuzz.rng).unwrap();
                headers.push((
                    "authorization".into(),
                    format!("Bearer {caller}").into_bytes(),
                ));
                let key = fuzz.pick(&["user_id", "x", "", "user_id[]", "%00"]);
                let value: String = fuzz
                    .junk_text(20)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect();
                let path = format!("{real_path}?{key}={value}&{key}");
                let body = (method == "POST").then(|| fuzz.bad_body(&real_path));
                (method, path, body, &[400, 403, 404, 413, 415, 200])
            }
        };
        if fuzz.rng.random_bool(0.1) {
            let id = fuzz.junk_text(300).into_bytes();
            headers.push(("x-request-id".into(), id));
        }
        let what = format!("seed {seed}, request {n}: {method} {path} {headers:?}");
        let mut request = api.request(method, &path, None);
        for (name, value) in &headers {
            if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value) {
                request = request.header(name.as_str(), value);
            }
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let reply = api.send(request);
        check_refusal(&reply, method, &what);
        // A GET of events on a real entry would stream; those are refused by construction.
        assert!(
            expected.contains(&reply.status),
            "{what}: status {} not in {expected:?}: {reply:?}",
            reply.status
        );
    }

    let addr = server.base.trim_start_matches("http://").to_owned();
    let good = &outsiders[0];
    for n in 0..RAW {
        let bytes: Vec<u8> = match fuzz.rng.random_range(0..8) {
            0 => {
                let mut bytes = vec![0; fuzz.rng.random_range(1..2_000)];
                fuzz.rng.fill_bytes(&mut bytes);
                bytes
            }
            1 => format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(fuzz.rng.random_range(1..70_000))).into_bytes(),
            2 => format!(
                "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"time",
                fuzz.pick(&["-1", "99999999999999999999", "abc", "1000000", "5, 7"])
            )
            .into_bytes(),
            3 => format!(
                "POST /v1/matchmaking/queue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{}\r\n{{}}\r\n0\r\n\r\n",
                fuzz.pick(&["zz", "-2", "ffffffffffffffffff", "2", ""])
            )
            .into_bytes(),
            4 => {
                let mut text = String::from("GET /health/live HTTP/1.1\r\n");
                for i in 0..fuzz.rng.random_range(50..400) {
                    text.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(100)));
                }
                text.push_str("\r\n");
                text.into_bytes()
            }
            5 => {
                let mut bytes = b"GET /v1/matchmaking/active HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".to_vec();
                let mut junk = vec![0; 40];
                fuzz.rng.fill_bytes(&mut junk);
                bytes.extend(junk);
                bytes.extend_from_slice(b"\r\n\r\n");
                bytes
            }
            6 => fuzz
                .pick(&[
                    "GET\r\n\r\n",
                    "GET / HTTP/9.9\r\n\r\n",
                    "BREW /pot HTTP/1.1\r\n\r\n",
                    "GET /health/live HTTP/1.1\r\nHost x\r\n\r\n",
                    "\r\n\r\n\r\n",
                    "GET /health/live HTTP/1.0\r\n\r\n",
                    "GET http://evil/health/live HTTP/1.1\r\n\r\n",
                    "DELETE /v1/matchmaking/queue/q_1 HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n",
                ])
                .as_bytes()
                .to_vec(),
            _ => {
                // Several pipelined requests, the last one cut.
                let one = "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
                let mut text = one.repeat(fuzz.rng.random_range(1..20));
                text.push_str(&one[..fuzz.rng.random_range(0..one.len())]);
                text.into_bytes()
            }
        };
        if let Some(status) = raw_exchange(&addr, &bytes) {
            assert!(
                status < 500,
                "seed {seed}, raw {n}: {status} for {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
    }

    // Still the same process, with no panic in its log, still ready, still the same state.
    assert!(server.exited().is_none(), "seed {seed}: the server exited");
    let log = server.log();
    assert!(
        !log.iter().any(|line| line.contains("panicked")),
        "seed {seed}: {log:#?}"
    );
    let plain = |path: &str| api.send(api.request("GET", path, None));
    plain("/health/ready").ok(200);
    assert_eq!(
        world.observe(&api),
        before,
        "seed {seed}: the state changed"
    );
    // And it still works.
    let mallory = &outsiders[0];
    let entry = api.enqueue(mallory, &blitz(1500)).ok(201);
    api.cancel(mallory, &id_of(&entry)).ok(200);
}
