//! The queue over HTTP against the real binary: matching seen by polling and by the event
//! stream, idempotent enqueue, cancel, expiry, the active view, and who may see which entry.

mod support;

use serde_json::{Value, json};
use support::{Api, EventStream, FakeLiveGame, Server, blitz, id_of, token, token_with};

/// Enqueues `token`'s user in 5+3 at `rating`; the entry id.
fn enqueue(api: &Api, token: &str, rating: u16) -> String {
    let entry = api.enqueue(token, &blitz(rating)).ok(201);
    assert_eq!(entry["status"], "searching");
    id_of(&entry)
}

#[test]
fn two_players_polling_see_the_same_match_and_each_other() {
    let games = FakeLiveGame::start();
    let server = Server::options()
        .live_game(&games)
        .env("MATCHWELL_LIVE_GAME_API_TOKEN", "live-secret")
        .start();
    let api = server.api();
    let (alice, bob) = (token("alice"), token("bob"));
    let alice_entry = enqueue(&api, &alice, 1500);
    let bob_entry = enqueue(&api, &bob, 1540);

    let created = |token: &str, id: &str| {
        api.watch(token, id, "matched with a game", |entry| {
            entry["match"]["game_status"] == "created"
        })
    };
    let seen_by_alice = created(&alice, &alice_entry);
    let seen_by_bob = created(&bob, &bob_entry);
    for (entry, me, other, my_entry, other_entry) in [
        (&seen_by_alice, "alice", "bob", &alice_entry, &bob_entry),
        (&seen_by_bob, "bob", "alice", &bob_entry, &alice_entry),
    ] {
        assert_eq!(entry["status"], "matched");
        assert_eq!(entry["user_id"], me);
        let found = &entry["match"];
        assert_eq!(found["opponent"]["user_id"], other);
        assert_eq!(found["opponent"]["entry_id"], json!(other_entry));
        let players: Vec<&Value> = found["players"].as_array().unwrap().iter().collect();
        assert_eq!(players.len(), 2);
        assert!(players.iter().any(|p| p["entry_id"] == json!(my_entry)));
        assert_ne!(players[0]["color"], players[1]["color"]);
    }
    assert_eq!(
        seen_by_alice["match"]["match_id"],
        seen_by_bob["match"]["match_id"]
    );
    let match_id = seen_by_alice["match"]["match_id"].as_str().unwrap();
    let game_id = seen_by_alice["match"]["game_id"].as_str().unwrap();
    assert_eq!(seen_by_bob["match"]["game_id"], game_id);

    // The live-game service was asked once per match, with the match as idempotency key.
    let calls = games.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.idempotency_key.as_deref(), Some(match_id));
    assert_eq!(call.authorization.as_deref(), Some("Bearer live-secret"));
    assert_eq!(call.body["match_id"], match_id);
    assert_eq!(call.body["time_control"], "5+3");
    assert_eq!(call.body["variant"], "standard");
    assert_eq!(call.body["rated"], true);
    let mut users: Vec<&str> = call.body["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|player| player["user_id"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);

    // Both see the match as their recent one, and no longer search.
    for token in [&alice, &bob] {
        let active = api.get("/v1/matchmaking/active", token).ok(200);
        assert_eq!(active["searching"], Value::Null);
        assert_eq!(active["recent_match"]["match_id"], match_id);
    }
    // A matched entry can no longer be cancelled; the answer names its status.
    let refused = api
        .delete(&format!("/v1/matchmaking/queue/{alice_entry}"), &alice)
        .expect(409, "NOT_CANCELLABLE");
    assert!(
        refused.message().contains("entry is matched"),
        "{refused:?}"
    );
}

#[test]
fn two_players_see_the_match_through_the_event_stream() {
    let server = Server::start();
    let api = server.api();
    let (alice, bob) = (token("stream-alice"), token("stream-bob"));
    let alice_entry = enqueue(&api, &alice, 1800);
    let bob_entry = enqueue(&api, &bob, 1790);
    let (alice_events, bob_events) = std::thread::scope(|scope| {
        let alice_stream =
            scope.spawn(|| EventStream::open(&api, &alice, &alice_entry).until_end());
        let bob_events = EventStream::open(&api, &bob, &bob_entry).until_end();
        (alice_stream.join().unwrap(), bob_events)
    });
    let mut match_ids = Vec::new();
    for (events, me, other) in [
        (&alice_events, "stream-alice", "stream-bob"),
        (&bob_events, "stream-bob", "stream-alice"),
    ] {
        assert!(events.iter().all(|entry| entry["user_id"] == me));
        // The stream ended on its own, after the game was created.
        let last = events.last().expect("at least one event");
        assert_eq!(last["status"], "matched", "{events:?}");
        assert_eq!(last["match"]["game_status"], "created");
        assert!(last["match"]["game_id"].is_string());
        assert_eq!(last["match"]["opponent"]["user_id"], other);
        match_ids.push(last["match"]["match_id"].clone());
    }
    assert_eq!(match_ids[0], match_ids[1]);
}

#[test]
fn the_event_stream_ends_after_a_cancel() {
    let server = Server::start();
    let api = server.api();
    let carol = token("carol");
    let id = enqueue(&api, &carol, 1200);
    let mut stream = EventStream::open(&api, &carol, &id);
    assert_eq!(stream.next_entry().unwrap()["status"], "searching");
    api.cancel(&carol, &id).ok(200);
    let events = stream.until_end();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "cancelled");
}

#[test]
fn an_idempotency_key_replays_the_first_entry() {
    let server = Server::start();
    let api = server.api();
    let dave = token("dave");
    let keyed_as = |token: &str, key: &str| api.enqueue_keyed(token, key.as_bytes(), &blitz(1600));
    let keyed = |key: &str| keyed_as(&dave, key);
    let first = keyed("k-1").ok(201);
    let again = keyed("k-1").ok(201);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["status"], "searching");

    // Without the key (or with another) the user is already queued, as the first entry.
    let refused = api
        .enqueue(&dave, &blitz(1600))
        .expect(409, "ALREADY_QUEUED");
    assert_eq!(refused.body["error"]["entry"]["id"], first["id"]);
    assert!(refused.message().contains(first["id"].as_str().unwrap()));
    let refused = keyed("k-2").expect(409, "ALREADY_QUEUED");
    assert_eq!(refused.body["error"]["entry"]["id"], first["id"]);

    // The key stays bound to its entry after a cancel; a new key makes a new entry.
    let id = first["id"].as_str().unwrap();
    api.cancel(&dave, id).ok(200);
    let replayed = keyed("k-1").ok(201);
    assert_eq!(replayed["id"], first["id"]);
    assert_eq!(replayed["status"], "cancelled");
    let fresh = keyed("k-3").ok(201);
    assert_ne!(fresh["id"], first["id"]);

    // Keys belong to their user: another user's same key is another entry.
    let erin = token("erin");
    let theirs = keyed_as(&erin, "k-1").ok(201);
    assert_eq!(theirs["user_id"], "erin");
    assert_ne!(theirs["id"], first["id"]);
}

#[test]
fn an_idempotency_key_reused_with_another_body_is_refused_and_changes_nothing() {
    let server = Server::start();
    let api = server.api();
    let dave = token("dave");
    let first = api.enqueue_keyed(&dave, b"k-1", &blitz(1600)).ok(201);
    let mut other_pool = blitz(1600);
    other_pool["time_control"] = serde_json::json!("3+0");
    for body in [blitz(1650), other_pool] {
        let refused = api
            .enqueue_keyed(&dave, b"k-1", &body)
            .expect(422, "IDEMPOTENCY_KEY_REUSED");
        assert!(
            refused.message().contains("different"),
            "{}",
            refused.message()
        );
    }
    let active = api.get("/v1/matchmaking/active", &dave).ok(200);
    assert_eq!(active["searching"]["id"], first["id"]);
    assert_eq!(active["searching"]["rating"], 1600);
    // The same body still replays the entry.
    let again = api.enqueue_keyed(&dave, b"k-1", &blitz(1600)).ok(201);
    assert_eq!(again["id"], first["id"]);
}

#[test]
fn cancel_is_repeatable_and_frees_the_user() {
    let server = Server::start();
    let api = server.api();
    let frank = token("frank");
    let id = enqueue(&api, &frank, 2100);
    let entry = api.entry(&frank, &id).ok(200);
    assert_eq!(entry["window"], 100);
    assert!(entry["wait_s"].as_f64().unwrap() >= 0.0);
    assert!(entry["match"].is_null());
    let active = api.get("/v1/matchmaking/active", &frank).ok(200);
    assert_eq!(active["searching"]["id"], json!(id));

    let path = format!("/v1/matchmaking/queue/{id}");
    let cancelled = api.delete(&path, &frank).ok(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(api.delete(&path, &frank).ok(200)["status"], "cancelled");
    let active = api.get("/v1/matchmaking/active", &frank).ok(200);
    assert_eq!(active["searching"], Value::Null);
    assert_ne!(enqueue(&api, &frank, 2100), id);
}

#[test]
fn an_entry_that_waits_too_long_expires_and_cannot_be_cancelled() {
    let server = Server::options()
        .pools(
            "[[pool]]\ntime_control = \"1+0\"\nvariant = \"standard\"\nrated = true\nmax_wait_s = 1\n",
        )
        .env("MATCHWELL_TASK_EXPIRY_MS", "50")
        .start();
    let api = server.api();
    let gina = token("gina");
    let body = json!({"time_control": "1+0", "variant": "standard", "rated": true});
    let id = id_of(&api.enqueue(&gina, &body).ok(201));
    // Pools outside the file are unknown now.
    api.enqueue(&gina, &blitz(1500)).expect(400, "UNKNOWN_POOL");
    let expired = api.wait_for_status(&gina, &id, "expired");
    assert!(expired["match"].is_null());
    api.cancel(&gina, &id).expect(409, "NOT_CANCELLABLE");
    let stream = api
        .send(api.request(
            "GET",
            &format!("/v1/matchmaking/queue/{id}/events"),
            Some(&gina),
        ))
        .status;
    assert_eq!(stream, 200);
}

#[test]
fn entries_are_invisible_to_other_users_and_tenants() {
    let server = Server::start();
    let api = server.api();
    let hank = token("hank");
    let id = enqueue(&api, &hank, 1500);
    let entry_path = format!("/v1/matchmaking/queue/{id}");
    let events_path = format!("{entry_path}/events");
    // Another user, and the same user id in another tenant: not found, and nothing changes.
    for stranger in [token("ivan"), token_with("hank", &["--tenant", "acme"])] {
        api.get(&entry_path, &stranger).expect(404, "NOT_FOUND");
        api.get(&events_path, &stranger).expect(404, "NOT_FOUND");
        api.delete(&entry_path, &stranger).expect(404, "NOT_FOUND");
        let active = api.get("/v1/matchmaking/active", &stranger).ok(200);
        assert_eq!(active["searching"], Value::Null);
    }
    // Malformed and unknown ids are not found either.
    for bad in ["nope", "q_", "q_zzzz", "q_999999", "c_1"] {
        api.get(&format!("/v1/matchmaking/queue/{bad}"), &hank)
            .expect(404, "NOT_FOUND");
    }
    assert_eq!(api.entry(&hank, &id).ok(200)["status"], "searching");

    // The other tenant has its own hank, queued independently.
    let other_hank = token_with("hank", &["--tenant", "acme"]);
    let theirs = api.enqueue(&other_hank, &blitz(1500)).ok(201);
    assert_eq!(theirs["tenant"], "acme");
    assert_ne!(theirs["id"], json!(id));
    assert_eq!(api.entry(&hank, &id).ok(200)["tenant"], "default");
}

#[test]
fn a_service_acts_for_users_of_its_tenant_only() {
    let server = Server::start();
    let api = server.api();
    let service = token_with("backend", &["--role", "service", "--rating", "5+3=3000"]);
    let body = json!({"time_control": "5+3", "variant": "standard", "rated": true,
                      "rating": 1234, "user_id": "jill"});
    let entry = api.enqueue(&service, &body).ok(201);
    assert_eq!(entry["user_id"], "jill");
    // A service's own ratings are not the user's.
    assert_eq!(entry["rating"], 1234);
    let id = entry["id"].as_str().unwrap();
    let path = format!("/v1/matchmaking/queue/{id}");
    api.get(&format!("{path}?user_id=jill"), &service).ok(200);
    api.get(&path, &service).expect(404, "NOT_FOUND");
    let active = api
        .get("/v1/matchmaking/active?user_id=jill", &service)
        .ok(200);
    assert_eq!(active["searching"]["id"], json!(id));
    // Jill herself sees it.
    assert_eq!(api.entry(&token("jill"), id).ok(200)["id"], json!(id));
    // A plain user may not name another; a service of another tenant sees nothing.
    let kim = token("kim");
    api.enqueue(&kim, &body).expect(403, "FORBIDDEN");
    api.get(&format!("{path}?user_id=jill"), &kim)
        .expect(403, "FORBIDDEN");
    let foreign = token_with("backend", &["--role", "service", "--tenant", "acme"]);
    api.get(&format!("{path}?user_id=jill"), &foreign)
        .expect(404, "NOT_FOUND");
    api.delete(&format!("{path}?user_id=jill"), &foreign)
        .expect(404, "NOT_FOUND");
    // The service cancels for jill.
    let cancelled = api
        .delete(&format!("{path}?user_id=jill"), &service)
        .ok(200);
    assert_eq!(cancelled["status"], "cancelled");
}

#[test]
fn the_ratings_claim_wins_for_its_time_control() {
    let server = Server::start();
    let api = server.api();
    let lou = token_with("lou", &["--rating", "5+3=1800", "--rating", "1+0=900"]);
    let entry = api.enqueue(&lou, &blitz(1200)).ok(201);
    assert_eq!(entry["rating"], 1800);
    let path = format!("/v1/matchmaking/queue/{}", entry["id"].as_str().unwrap());
    api.delete(&path, &lou).ok(200);
    // Another time control: the body's rating, else 1500.
    let body = json!({"time_control": "3+2", "variant": "standard", "rated": true, "rating": 1200});
    let entry = api.enqueue(&lou, &body).ok(201);
    assert_eq!(entry["rating"], 1200);
    let path = format!("/v1/matchmaking/queue/{}", entry["id"].as_str().unwrap());
    api.delete(&path, &lou).ok(200);
    let body = json!({"time_control": "3+2", "variant": "standard", "rated": true});
    assert_eq!(api.enqueue(&lou, &body).ok(201)["rating"], 1500);
}
