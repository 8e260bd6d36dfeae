//! Direct challenges over HTTP against the real binary, with the live-game service a real
//! HTTP server on loopback: create, list, accept, decline, cancel, expiry, and who may do what.

mod support;

use std::time::SystemTime;

use serde_json::{Value, json};
use support::{Api, FakeLiveGame, Server, challenge_of, id_of, token, token_with};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A server whose games the fake service creates.
fn start_with_games() -> (Server, FakeLiveGame) {
    let games = FakeLiveGame::start();
    let server = Server::options().live_game(&games).start();
    (server, games)
}

/// A challenge from `from` to `to` that expires after a second; the answer.
fn short_lived(api: &Api, from: &str, to: &str) -> Value {
    let mut body = challenge_of(to);
    body["expires_in_s"] = json!(1);
    api.challenge(&token(from), &body).ok(201)
}

/// Ids of the challenges of a list answer.
fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|challenge| challenge["id"].as_str().unwrap())
        .collect()
}

fn incoming(api: &Api, token: &str) -> Value {
    api.get("/v1/matchmaking/challenges/incoming", token)
        .ok(200)
}

fn outgoing(api: &Api, token: &str) -> Value {
    api.get("/v1/matchmaking/challenges/outgoing", token)
        .ok(200)
}

fn path(id: &str, action: &str) -> String {
    format!("/v1/matchmaking/challenges/{id}{action}")
}

fn act(api: &Api, token: &str, id: &str, action: &str) -> support::Reply {
    match action {
        "cancel" => api.delete(&path(id, ""), token),
        _ => api.post(&path(id, &format!("/{action}")), token, &json!({})),
    }
}

#[test]
fn a_challenge_is_listed_both_ways_and_accepted_into_a_game() {
    let (server, games) = start_with_games();
    let api = server.api();
    let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));
    let mut body = challenge_of("bob");
    body["color"] = json!("white");
    body["expires_in_s"] = json!(60);
    let created = api.challenge(&alice, &body).ok(201);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["challenger_id"], "alice");
    assert_eq!(created["opponent_id"], "bob");
    assert_eq!(created["color"], "white");
    assert_eq!(created["game_id"], Value::Null);

    assert_eq!(ids(&incoming(&api, &bob)), [id]);
    assert_eq!(ids(&outgoing(&api, &alice)), [id]);
    assert!(ids(&incoming(&api, &alice)).is_empty());
    assert!(ids(&outgoing(&api, &bob)).is_empty());
    let active = api.get("/v1/matchmaking/active", &bob).ok(200);
    assert_eq!(ids(&active["incoming"]), [id]);
    let active = api.get("/v1/matchmaking/active", &alice).ok(200);
    assert_eq!(ids(&active["outgoing"]), [id]);
    for token in [&alice, &bob] {
        assert_eq!(api.get(&path(id, ""), token).ok(200)["id"], id);
    }

    // Only the opponent accepts or declines, only the challenger cancels; strangers and
    // the same names in another tenant find nothing.
    act(&api, &alice, id, "accept").expect(403, "FORBIDDEN");
    act(&api, &alice, id, "decline").expect(403, "FORBIDDEN");
    act(&api, &bob, id, "cancel").expect(403, "FORBIDDEN");
    let foreign_bob = token_with("bob", &["--tenant", "acme"]);
    for stranger in [&carol, &foreign_bob] {
        api.get(&path(id, ""), stranger).expect(404, "NOT_FOUND");
        for action in ["accept", "decline", "cancel"] {
            act(&api, stranger, id, action).expect(404, "NOT_FOUND");
        }
        assert!(ids(&incoming(&api, stranger)).is_empty());
    }
    // One pending challenge per opponent.
    let duplicate = api
        .challenge(&alice, &challenge_of("bob"))
        .expect(409, "CHALLENGE_EXISTS");
    assert!(duplicate.message().contains(id));
    assert!(games.calls().is_empty());

    let accepted = act(&api, &bob, id, "accept").ok(200);
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["challenger_color"], "white");
    let game_id = accepted["game_id"].as_str().unwrap();
    let calls = games.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some(id));
    assert_eq!(calls[0].body["time_control"], "5+3");
    assert_eq!(
        calls[0].body["players"],
        json!([{"user_id": "alice", "rating": null, "color": "white"},
               {"user_id": "bob", "rating": null, "color": "black"}])
    );
    assert_eq!(game_id, "game-1");
    assert_eq!(api.get(&path(id, ""), &alice).ok(200)["game_id"], game_id);
    assert!(ids(&incoming(&api, &bob)).is_empty());
    assert!(ids(&outgoing(&api, &alice)).is_empty());

    // Settled: nothing more can happen to it, and no second game is made.
    act(&api, &bob, id, "accept").expect(409, "CHALLENGE_NOT_PENDING");
    act(&api, &bob, id, "decline").expect(409, "CHALLENGE_NOT_PENDING");
    act(&api, &alice, id, "cancel").expect(409, "CHALLENGE_NOT_PENDING");
    assert_eq!(games.calls().len(), 1);
    // A new challenge to the same opponent is allowed again.
    api.challenge(&alice, &challenge_of("bob")).ok(201);
}

#[test]
fn a_declined_or_cancelled_challenge_is_settled() {
    let (server, games) = start_with_games();
    let api = server.api();
    let (dan, eve) = (token("dan"), token("eve"));
    for (action, actor, status) in [("decline", &eve, "declined"), ("cancel", &dan, "cancelled")] {
        let id = id_of(&api.challenge(&dan, &challenge_of("eve")).ok(201));
        let closed = act(&api, actor, &id, action).ok(200);
        assert_eq!(closed["status"], status);
        assert_eq!(closed["game_id"], Value::Null);
        assert!(ids(&incoming(&api, &eve)).is_empty());
        assert!(ids(&outgoing(&api, &dan)).is_empty());
        assert_eq!(api.get(&path(&id, ""), &eve).ok(200)["status"], status);
        let refused = act(&api, &eve, &id, "accept").expect(409, "CHALLENGE_NOT_PENDING");
        assert!(refused.message().contains(status), "{refused:?}");
        act(&api, actor, &id, action).expect(409, "CHALLENGE_NOT_PENDING");
    }
    assert!(games.calls().is_empty());
}

#[test]
fn an_expired_challenge_cannot_be_accepted() {
    let games = FakeLiveGame::start();
    // The challenge is polled without pause, faster than the read limit allows.
    let server = Server::options()
        .live_game(&games)
        .env("MATCHWELL_TASK_CHALLENGES_MS", "50")
        .env("MATCHWELL_READ_RATE_LIMIT_PER_S", "0")
        .start();
    let api = server.api();
    let id = id_of(&short_lived(&api, "fay", "gus"));
    let (fay, gus) = (token("fay"), token("gus"));
    support::poll("the challenge to expire", || {
        let challenge = api.get(&path(&id, ""), &gus).ok(200);
        (challenge["status"] == "expired").then_some(())
    });
    assert!(ids(&incoming(&api, &gus)).is_empty());
    assert!(ids(&outgoing(&api, &fay)).is_empty());
    act(&api, &gus, &id, "accept").expect(409, "CHALLENGE_NOT_PENDING");
    act(&api, &fay, &id, "cancel").expect(409, "CHALLENGE_NOT_PENDING");
    assert!(games.calls().is_empty());
}

#[test]
fn accepting_after_the_deadline_is_refused_before_the_expirer_runs() {
    let games = FakeLiveGame::start();
    let server = Server::options()
        .live_game(&games)
        .env("MATCHWELL_TASK_CHALLENGES", "off")
        .start();
    let api = server.api();
    let created = short_lived(&api, "hal", "ida");
    let id = &id_of(&created);
    let (hal, ida) = (token("hal"), token("ida"));
    let deadline =
        OffsetDateTime::parse(created["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    support::poll("the deadline to pass", || {
        (OffsetDateTime::from(SystemTime::now()) > deadline).then_some(())
    });
    let refused = act(&api, &ida, id, "accept").expect(409, "CHALLENGE_NOT_PENDING");
    assert!(refused.message().contains("expired"));
    assert_eq!(api.get(&path(id, ""), &hal).ok(200)["status"], "expired");
    assert!(games.calls().is_empty());
}

#[test]
fn accept_while_the_live_game_service_is_down_leaves_the_challenge_pending() {
    let (server, games) = start_with_games();
    let api = server.api();
    let (jo, kay) = (token("jo"), token("kay"));
    let id = id_of(&api.challenge(&jo, &challenge_of("kay")).ok(201));
    games.set_down(true);
    act(&api, &kay, &id, "accept").expect(503, "UNAVAILABLE");
    assert_eq!(api.get(&path(&id, ""), &kay).ok(200)["status"], "pending");
    assert_eq!(ids(&incoming(&api, &kay)), [id.as_str()]);
    games.set_down(false);
    let accepted = act(&api, &kay, &id, "accept").ok(200);
    assert_eq!(accepted["status"], "accepted");
    // Both calls carried the same key; the service made one game.
    let calls = games.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|call| call.idempotency_key.as_deref() == Some(id.as_str()))
    );
}

#[test]
fn a_live_game_service_that_refuses_or_hangs_is_a_503() {
    // One port where nothing listens, one where connections are never served.
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for addr in [refusing, hanging.local_addr().unwrap()] {
        let server = Server::options()
            .env("MATCHWELL_LIVE_GAME_API_URL", format!("http://{addr}"))
            .env("MATCHWELL_LIVE_GAME_TIMEOUT_MS", "300")
            .start();
        let api = server.api();
        let (lee, max) = (token("lee"), token("max"));
        let id = id_of(&api.challenge(&lee, &challenge_of("max")).ok(201));
        let refused = act(&api, &max, &id, "accept").expect(503, "UNAVAILABLE");
        assert!(refused.message().contains("still pending"), "{refused:?}");
        assert_eq!(api.get(&path(&id, ""), &max).ok(200)["status"], "pending");
    }
}

#[test]
fn malformed_challenges_are_refused_and_change_nothing() {
    let server = Server::start();
    let api = server.api();
    let ned = token("ned");
    let with = |field: &str, value: Value| {
        let mut body = challenge_of("oli");
        body[field] = value;
        body
    };
    let cases = [
        (challenge_of("ned"), "INVALID_REQUEST", Some("opponent_id")),
        (
            with("opponent_id", json!("")),
            "INVALID_REQUEST",
            Some("opponent_id"),
        ),
        (
            with("opponent_id", json!("o".repeat(65))),
            "INVALID_REQUEST",
            Some("opponent_id"),
        ),
        (
            with("expires_in_s", json!(0)),
            "INVALID_REQUEST",
            Some("expires_in_s"),
        ),
        (
            with("expires_in_s", json!(86_401)),
            "INVALID_REQUEST",
            Some("expires_in_s"),
        ),
        (with("expires_in_s", json!(-1)), "INVALID_REQUEST", None),
        (with("color", json!("green")), "INVALID_REQUEST", None),
        (
            with("time_control", json!("5+")),
            "INVALID_REQUEST",
            Some("time_control"),
        ),
        (with("time_control", json!("7+7")), "UNKNOWN_POOL", None),
        (
            with("variant", json!("Standard!")),
            "INVALID_REQUEST",
            Some("variant"),
        ),
        (with("rated", json!("yes")), "INVALID_REQUEST", None),
        (with("region", json!("eu")), "INVALID_REQUEST", None),
        (with("user_id", json!("pam")), "FORBIDDEN", None),
    ];
    for (body, code, field) in cases {
        let status = if code == "FORBIDDEN" { 403 } else { 400 };
        let reply = api.challenge(&ned, &body).expect(status, code);
        assert_eq!(
            reply.body["error"]["field"].as_str(),
            field,
            "{body}: {reply:?}"
        );
    }
    assert!(ids(&outgoing(&api, &ned)).is_empty());
    assert!(ids(&incoming(&api, &token("oli"))).is_empty());
}

#[test]
fn a_service_challenges_for_a_user_of_its_tenant() {
    let server = Server::start();
    let api = server.api();
    let service = token_with("backend", &["--role", "service"]);
    let mut body = challenge_of("rex");
    body["user_id"] = json!("quin");
    let created = api.challenge(&service, &body).ok(201);
    assert_eq!(created["challenger_id"], "quin");
    let id = created["id"].as_str().unwrap();
    assert_eq!(ids(&incoming(&api, &token("rex"))), [id]);
    let listed = api
        .get("/v1/matchmaking/challenges/outgoing?user_id=quin", &service)
        .ok(200);
    assert_eq!(ids(&listed), [id]);
    let accepted = api
        .post(&path(id, "/accept?user_id=rex"), &service, &json!({}))
        .ok(200);
    assert_eq!(accepted["status"], "accepted");
}

/// Pending challenges are limited per user both ways, so that nobody can grow the server or
/// another user's views without bound; a refusal stores nothing, and a challenge that ends
/// frees its place.
#[test]
fn pending_challenges_per_user_are_limited_both_ways() {
    let server = Server::options()
        .env("MATCHWELL_MAX_OUTGOING_CHALLENGES", "3")
        .env("MATCHWELL_MAX_INCOMING_CHALLENGES", "2")
        .start();
    let api = server.api();
    let alice = token("alice");
    let sent: Vec<String> = ["p1", "p2", "p3"]
        .iter()
        .map(|opponent| id_of(&api.challenge(&alice, &challenge_of(opponent)).ok(201)))
        .collect();
    let refused = api
        .challenge(&alice, &challenge_of("p4"))
        .expect(409, "TOO_MANY_CHALLENGES");
    assert!(
        refused.message().contains("challenger"),
        "{}",
        refused.message()
    );
    assert_eq!(ids(&outgoing(&api, &alice)), sent);
    assert!(ids(&incoming(&api, &token("p4"))).is_empty());

    let bob = token("bob");
    api.challenge(&token("carol"), &challenge_of("bob")).ok(201);
    api.challenge(&token("dave"), &challenge_of("bob")).ok(201);
    api.challenge(&token("erin"), &challenge_of("bob"))
        .expect(409, "TOO_MANY_CHALLENGES");
    assert_eq!(ids(&incoming(&api, &bob)).len(), 2);
    assert!(ids(&outgoing(&api, &token("erin"))).is_empty());

    act(&api, &alice, &sent[0], "cancel").ok(200);
    api.challenge(&alice, &challenge_of("p4")).ok(201);
}
