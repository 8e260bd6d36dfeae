//! Limits against the real binary: body size, field lengths, rating range, malformed and
//! unknown JSON, content type, the per-user write and read rates, the event streams open per
//! user and in total, and the pace of their events. Every refusal names its cause and changes
//! nothing.

mod support;

use std::io::Cursor;
use std::time::{Duration, SystemTime};

use reqwest::blocking::Body;
use serde_json::{Value, json};
use support::{Api, EventStream, Reply, Server, blitz, id_of, token, token_with};

/// `POST /v1/matchmaking/queue` with `body` sent as is, under `content_type` if any.
fn raw_enqueue(api: &Api, token: &str, content_type: Option<&str>, body: impl Into<Body>) -> Reply {
    let mut request = api
        .request("POST", "/v1/matchmaking/queue", Some(token))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    api.send(request)
}

fn nothing_searching(api: &Api, token: &str) {
    let active = api.get("/v1/matchmaking/active", token).ok(200);
    assert_eq!(active["searching"], Value::Null, "{active}");
}

#[test]
fn oversize_bodies_are_413() {
    let server = Server::start();
    let api = server.api();
    let uma = token("uma");
    let mut body = blitz(1500);
    body["region"] = json!("x".repeat(20 * 1024));
    let reply = api.enqueue(&uma, &body).expect(413, "PAYLOAD_TOO_LARGE");
    assert!(reply.message().contains("16384 bytes"), "{reply:?}");
    // The same without a Content-Length: the limit holds while reading.
    let bytes = serde_json::to_vec(&body).unwrap();
    let streamed = Body::new(Cursor::new(bytes));
    raw_enqueue(&api, &uma, Some("application/json"), streamed).expect(413, "PAYLOAD_TOO_LARGE");
    // A lower limit is configurable.
    let small = Server::options()
        .env("MATCHWELL_BODY_LIMIT_BYTES", "64")
        .start();
    let api_small = small.api();
    let mut padded = blitz(1500);
    padded["region"] = json!("eu");
    padded["user_id"] = json!("uma");
    api_small
        .enqueue(&uma, &padded)
        .expect(413, "PAYLOAD_TOO_LARGE");
    nothing_searching(&api, &uma);
    nothing_searching(&api_small, &uma);
}

#[test]
fn fields_out_of_range_are_400_naming_the_field() {
    let server = Server::start();
    let api = server.api();
    let vic = token("vic");
    let service = token_with("backend", &["--role", "service"]);
    let with = |field: &str, value: Value| {
        let mut body = blitz(1500);
        body[field] = value;
        body
    };
    let cases = [
        (with("rating", json!(4001)), "rating", "0 to 4000"),
        (with("rating", json!(-1)), "rating", "0 to 4000"),
        (with("rating", json!(i64::MAX)), "rating", "0 to 4000"),
        (
            with("time_control", json!("181+0")),
            "time_control",
            "0 to 180",
        ),
        (
            with("time_control", json!("0+0")),
            "time_control",
            "not both 0",
        ),
        (with("time_control", json!("5 + 3")), "time_control", "M+S"),
        (with("time_control", json!("")), "time_control", "M+S"),
        (with("variant", json!("v".repeat(33))), "variant", "1 to 32"),
        (with("variant", json!("")), "variant", "1 to 32"),
        (with("variant", json!("std\u{0}")), "variant", "1 to 32"),
        (with("region", json!("r".repeat(17))), "region", "1 to 16"),
        (with("region", json!("EU")), "region", "a-z"),
    ];
    for (body, field, message) in cases {
        let reply = api.enqueue(&vic, &body).expect(400, "INVALID_REQUEST");
        assert_eq!(reply.body["error"]["field"], field, "{body}: {reply:?}");
        assert!(reply.message().contains(message), "{body}: {reply:?}");
    }
    // A service names users of at most 64 characters, without control characters.
    for user in [
        "u".repeat(65),
        String::new(),
        " padded".into(),
        "tab\tbed".into(),
    ] {
        let reply = api
            .enqueue(&service, &with("user_id", json!(user)))
            .expect(400, "INVALID_REQUEST");
        assert_eq!(reply.body["error"]["field"], "user_id", "{reply:?}");
    }
    // Idempotency keys: at most 128 visible bytes.
    for key in ["k".repeat(129).as_bytes(), b"", "caf\u{e9}".as_bytes()] {
        let reply = api
            .enqueue_keyed(&vic, key, &blitz(1500))
            .expect(400, "INVALID_REQUEST");
        assert_eq!(reply.body["error"]["field"], "idempotency_key");
    }
    // An unknown pool is its own error.
    api.enqueue(&vic, &with("time_control", json!("7+7")))
        .expect(400, "UNKNOWN_POOL");
    nothing_searching(&api, &vic);
    nothing_searching(&api, &service);

    // The bounds themselves are accepted.
    for (user, rating) in [("low", 0), ("high", 4000)] {
        let player = token(user);
        let entry = api.enqueue(&player, &blitz(rating)).ok(201);
        assert_eq!(entry["rating"], rating);
        api.cancel(&player, &id_of(&entry)).ok(200);
    }
}

#[test]
fn malformed_json_is_400_with_a_clear_message() {
    let server = Server::start();
    let api = server.api();
    let wes = token("wes");
    let json_type = Some("application/json");
    let cases: [(&str, &str); 9] = [
        (r#"{"time_control": "#, "malformed JSON body"),
        ("", "malformed JSON body"),
        ("[]", "malformed JSON body"),
        ("null", "malformed JSON body"),
        (
            r#"{"time_control": "5+3", "variant": "standard"}"#,
            "missing field `rated`",
        ),
        (
            r#"{"time_control": "5+3", "variant": "standard", "rated": "yes"}"#,
            "invalid type",
        ),
        (
            r#"{"time_control": "5+3", "variant": "standard", "rated": true, "rating": 1500.5}"#,
            "expected a whole number",
        ),
        (
            r#"{"time_control": "5+3", "variant": "standard", "rated": true, "rating": "1500"}"#,
            "invalid type",
        ),
        (
            r#"{"time_control": "5+3", "variant": "standard", "rated": true, "rated": true}"#,
            "duplicate field `rated`",
        ),
    ];
    for (body, message) in cases {
        let reply = raw_enqueue(&api, &wes, json_type, body).expect(400, "INVALID_REQUEST");
        assert!(reply.message().contains(message), "{body}: {reply:?}");
    }
    // Unknown fields are refused by name, on both bodies that take JSON.
    let mut body = blitz(1500);
    body["colour"] = json!("white");
    let reply = api.enqueue(&wes, &body).expect(400, "INVALID_REQUEST");
    assert!(
        reply.message().contains("unknown field `colour`"),
        "{reply:?}"
    );
    let mut body = support::challenge_of("xan");
    body["rating"] = json!(1500);
    let reply = api.challenge(&wes, &body).expect(400, "INVALID_REQUEST");
    assert!(
        reply.message().contains("unknown field `rating`"),
        "{reply:?}"
    );
    nothing_searching(&api, &wes);
    let outgoing = api.get("/v1/matchmaking/challenges/outgoing", &wes).ok(200);
    assert_eq!(outgoing, json!([]));
}

#[test]
fn bodies_that_are_not_json_are_415() {
    let server = Server::start();
    let api = server.api();
    let yan = token("yan");
    let body = serde_json::to_string(&blitz(1500)).unwrap();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("garbage"),
    ] {
        let reply = raw_enqueue(&api, &yan, content_type, body.clone())
            .expect(415, "UNSUPPORTED_MEDIA_TYPE");
        assert!(reply.message().contains("application/json"), "{reply:?}");
    }
    nothing_searching(&api, &yan);
    raw_enqueue(&api, &yan, Some("application/json; charset=utf-8"), body).ok(201);
}

/// Sends `request` (a `what`) until it is refused with 429; how many passed, and the refusal.
fn spend(what: &str, mut request: impl FnMut() -> Reply) -> (u64, Reply) {
    let mut allowed = 0;
    loop {
        let reply = request();
        if reply.status != 200 {
            return (allowed, reply.expect(429, "RATE_LIMITED"));
        }
        allowed += 1;
        assert!(allowed < 50, "no {what} was refused");
    }
}

/// The `Retry-After` of a refusal, in seconds.
fn retry_after(refused: &Reply) -> u64 {
    refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn writes_over_the_per_user_rate_are_429_with_retry_after() {
    let server = Server::options()
        .env("MATCHWELL_RATE_LIMIT_PER_S", "1")
        .env("MATCHWELL_RATE_LIMIT_BURST", "3")
        .start();
    let api = server.api();
    let (zed, service) = (token("zed"), token_with("backend", &["--role", "service"]));
    let started = std::time::Instant::now();
    let id = id_of(&api.enqueue(&zed, &blitz(1500)).ok(201));
    // Cancelling a cancelled entry is a write that changes nothing: spend the budget on it.
    let (cancels, refused) = spend("write", || api.cancel(&zed, &id));
    let allowed = 1 + cancels;
    // A service acting for zed spends zed's budget.
    let mut for_zed = blitz(1500);
    for_zed["user_id"] = json!("zed");
    api.enqueue(&service, &for_zed).expect(429, "RATE_LIMITED");
    let refilled = started.elapsed().as_secs();
    assert!(
        (3..=4 + refilled).contains(&allowed),
        "{allowed} writes allowed in {refilled} s"
    );
    assert!((1..=2).contains(&retry_after(&refused)), "{refused:?}");
    // The refused writes changed nothing; reads have a budget of their own.
    for _ in 0..10 {
        assert_eq!(api.entry(&zed, &id).ok(200)["status"], "cancelled");
    }
    nothing_searching(&api, &zed);
    // Other users have their own budget, also when a service acts for them.
    api.enqueue(&token("amy"), &blitz(1500)).ok(201);
    let mut for_bob = blitz(1500);
    for_bob["user_id"] = json!("bob");
    api.enqueue(&service, &for_bob).ok(201);
    // The same user id in another tenant is another budget.
    api.enqueue(&token_with("zed", &["--tenant", "acme"]), &blitz(1500))
        .ok(201);
    // The budget refills.
    let entry = support::poll("zed's budget to refill", || {
        let reply = api.enqueue(&zed, &blitz(1500));
        (reply.status == 201).then_some(reply.body)
    });
    assert_eq!(entry["status"], "searching");
}

#[test]
fn reads_over_the_per_user_rate_are_429_and_leave_the_write_budget_alone() {
    let server = Server::options()
        .env("MATCHWELL_READ_RATE_LIMIT_PER_S", "1")
        .env("MATCHWELL_READ_RATE_LIMIT_BURST", "5")
        .env("MATCHWELL_RATE_LIMIT_PER_S", "1")
        .env("MATCHWELL_RATE_LIMIT_BURST", "4")
        .start();
    let api = server.api();
    let zoe = token("zoe");
    let id = id_of(&api.enqueue(&zoe, &blitz(1500)).ok(201));
    let started = std::time::Instant::now();
    let (allowed, refused) = spend("read", || api.entry(&zoe, &id));
    let refilled = started.elapsed().as_secs();
    assert!(
        (5..=6 + refilled).contains(&allowed),
        "{allowed} reads allowed in {refilled} s"
    );
    assert!((1..=2).contains(&retry_after(&refused)), "{refused:?}");
    assert!(refused.message().contains("too many reads"), "{refused:?}");
    // Writes have a budget of their own: zoe's 2nd to 4th writes pass.
    api.cancel(&zoe, &id).ok(200);
    let id = id_of(&api.enqueue(&zoe, &blitz(1500)).ok(201));
    api.cancel(&zoe, &id).ok(200);
    // Every read route spends the same budget (the stream of a cancelled entry ends at once).
    for path in [
        format!("/v1/matchmaking/queue/{id}"),
        format!("/v1/matchmaking/queue/{id}/events"),
        "/v1/matchmaking/active".to_owned(),
        "/v1/matchmaking/challenges/incoming".to_owned(),
        "/v1/matchmaking/challenges/outgoing".to_owned(),
        "/v1/matchmaking/challenges/c_1".to_owned(),
    ] {
        let refused = support::poll(&format!("{path} to be refused"), || {
            let reply = api.get(&path, &zoe);
            (reply.status == 429).then_some(reply)
        });
        assert!(refused.message().contains("too many reads"), "{refused:?}");
        assert!(retry_after(&refused) >= 1, "{refused:?}");
    }
    // Spent writes leave the reads alone, and other users have budgets of their own.
    let ben = token("ben");
    support::poll("ben's writes to run out", || {
        (api.cancel(&ben, "q_ffffffff").status == 429).then_some(())
    });
    for _ in 0..5 {
        api.get("/v1/matchmaking/active", &ben).ok(200);
    }
    // The budget refills.
    let entry = support::poll("zoe's reads to refill", || {
        let reply = api.entry(&zoe, &id);
        (reply.status == 200).then_some(reply.body)
    });
    assert_eq!(entry["status"], "cancelled");
}

/// A server with the stream cap `variable` at `value`, where nobody is matched, so that
/// streams stay open. Reads are not limited: the tests open streams in loops without pause
/// (the read limit is tested above).
fn stream_server(variable: &str, value: &str) -> Server {
    Server::options()
        .env(variable, value)
        .env("MATCHWELL_READ_RATE_LIMIT_PER_S", "0")
        .env("MATCHWELL_TASK_MATCHING", "off")
        .start()
}

/// Asserts that `opened` was refused by the cap of event streams that `message` names.
fn refused_stream(opened: Result<EventStream, Box<Reply>>, message: &str) {
    let Err(refused) = opened else {
        panic!("a stream past the cap ({message}) was admitted");
    };
    let refused = refused.expect(429, "RATE_LIMITED");
    assert_eq!(retry_after(&refused), 5, "{refused:?}");
    assert!(refused.message().contains(message), "{refused:?}");
}

#[test]
fn event_streams_per_user_are_capped_and_give_their_slots_back() {
    let server = stream_server("MATCHWELL_SSE_MAX_PER_USER", "3");
    let api = server.api();
    let (ann, ben) = (token("ann"), token("ben"));
    let service = token_with("backend", &["--role", "service"]);
    let id = id_of(&api.enqueue(&ann, &blitz(1500)).ok(201));
    let mut streams: Vec<EventStream> =
        (0..3).map(|_| EventStream::open(&api, &ann, &id)).collect();
    refused_stream(
        EventStream::try_open(&api, &ann, &id),
        "event streams open for this user",
    );
    // A service acting for ann uses ann's slots; another user has slots of their own.
    let for_ann = format!("/v1/matchmaking/queue/{id}/events?user_id=ann");
    api.get(&for_ann, &service).expect(429, "RATE_LIMITED");
    let ben_entry = id_of(&api.enqueue(&ben, &blitz(1500)).ok(201));
    let _ben_stream = EventStream::open(&api, &ben, &ben_entry);

    // A client that goes away gives its slot back.
    drop(streams.pop());
    let again = support::poll("the closed stream's slot to come back", || {
        EventStream::try_open(&api, &ann, &id).ok()
    });
    streams.push(again);
    // So does a stream that ends: the entry is cancelled, its three streams end.
    api.cancel(&ann, &id).ok(200);
    for stream in streams {
        let events = stream.until_end();
        assert_eq!(events.last().unwrap()["status"], "cancelled");
    }
    let id = id_of(&api.enqueue(&ann, &blitz(1500)).ok(201));
    let _streams: Vec<EventStream> = (0..3).map(|_| EventStream::open(&api, &ann, &id)).collect();
}

#[test]
fn event_streams_in_total_are_capped() {
    let server = stream_server("MATCHWELL_SSE_MAX_TOTAL", "2");
    let api = server.api();
    let users: Vec<(String, String)> = ["ann", "ben", "cat"]
        .into_iter()
        .map(|user| {
            let token = token(user);
            let id = id_of(&api.enqueue(&token, &blitz(1500)).ok(201));
            (token, id)
        })
        .collect();
    let open = |(token, id): &(String, String)| EventStream::try_open(&api, token, id);
    let first = open(&users[0]).expect("a first stream");
    let _second = open(&users[1]).expect("a second stream");
    refused_stream(open(&users[2]), "event streams open on this server");
    drop(first);
    support::poll("the closed stream's slot to come back", || {
        open(&users[2]).ok()
    });
}

/// A wave that pairs many players at once reaches every stream, at the pace set: one worker
/// sending one event per millisecond cannot have sent the last of 200 players' events sooner
/// than 199 ms after their matches were made (unpaced, they all go within a few
/// milliseconds).
#[test]
fn a_wave_reaches_every_stream_at_the_event_pace() {
    const PLAYERS: usize = 200;
    // The first wave runs when the matching task first ticks, 6 s after the start: every
    // player is in the queue and watching by then.
    let server = Server::options()
        .without_rate_limits()
        .env("MATCHWELL_WORKERS", "1")
        .env("MATCHWELL_SSE_EVENTS_PER_MS", "1")
        .env("MATCHWELL_TASK_MATCHING_MS", "6000")
        .start();
    let api = server.api();
    let mut streams: Vec<EventStream> = (0..PLAYERS)
        .map(|player| {
            let token = token(&format!("player-{player}"));
            let id = id_of(&api.enqueue(&token, &blitz(1500)).ok(201));
            EventStream::open(&api, &token, &id)
        })
        .collect();
    for stream in &mut streams {
        let first = stream.next_entry().expect("the entry as it is");
        assert_eq!(
            first["status"], "searching",
            "the wave came before every player watched: setting up took over 6 s"
        );
    }
    let mut last_arrival = SystemTime::UNIX_EPOCH;
    let mut made_at = None;
    for stream in streams {
        let events = stream.until_end();
        let matched = events.last().expect("an event of the match");
        assert_eq!(matched["status"], "matched", "{events:?}");
        assert_eq!(matched["match"]["game_status"], "created", "{events:?}");
        last_arrival = last_arrival.max(SystemTime::now());
        let at =
            humantime::parse_rfc3339(matched["match"]["created_at"].as_str().unwrap()).unwrap();
        assert_eq!(*made_at.get_or_insert(at), at, "one wave made every match");
    }
    let spread = last_arrival
        .duration_since(made_at.unwrap())
        .expect("events come after their match");
    assert!(
        spread >= Duration::from_millis(PLAYERS as u64 - 1),
        "{PLAYERS} events went out within {spread:?} at one a millisecond"
    );
}
