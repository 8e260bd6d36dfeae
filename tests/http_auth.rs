//! Authentication against the real binary: every endpoint refuses a missing, expired,
//! forged or malformed token and leaks nothing; `/internal/*` is for admins of their own
//! tenant; a configured audience and issuer are required of every token; `matchwell serve`
//! without configuration makes a development secret that `matchwell token` signs with, but
//! serves it on loopback addresses only, and a configured secret is the only one used.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Api, Reply, SECRET, Server, blitz, challenge_of, id_of, mint, token, token_with};

/// A token over `claims`, signed with `secret` by `algorithm`.
fn forge(claims: &Value, secret: &str, algorithm: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every route that needs a token, as (method, path, JSON body), on `entry` and `challenge`.
fn protected_routes(entry: &str, challenge: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let queue = format!("/v1/matchmaking/queue/{entry}");
    let challenge = format!("/v1/matchmaking/challenges/{challenge}");
    vec![
        ("POST", "/v1/matchmaking/queue".into(), Some(blitz(1500))),
        ("GET", queue.clone(), None),
        ("DELETE", queue.clone(), None),
        ("GET", format!("{queue}/events"), None),
        ("GET", "/v1/matchmaking/active".into(), None),
        (
            "POST",
            "/v1/matchmaking/challenges".into(),
            Some(challenge_of("someone")),
        ),
        ("GET", "/v1/matchmaking/challenges/incoming".into(), None),
        ("GET", "/v1/matchmaking/challenges/outgoing".into(), None),
        ("GET", challenge.clone(), None),
        ("POST", format!("{challenge}/accept"), Some(json!({}))),
        ("POST", format!("{challenge}/decline"), Some(json!({}))),
        ("DELETE", challenge, None),
        ("GET", "/internal/queues/summary".into(), None),
    ]
}

/// Sends one protected route with `authorization` as the whole header, if any.
fn call(api: &Api, route: &(&str, String, Option<Value>), authorization: Option<&str>) -> Reply {
    let (method, path, body) = route;
    let mut request = api.request(method, path, None);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    api.send(request)
}

#[test]
fn every_protected_route_refuses_bad_tokens_and_changes_nothing() {
    let server = Server::start();
    let api = server.api();
    let (alice, bob) = (token("alice"), token("bob"));
    let entry = id_of(&api.enqueue(&alice, &blitz(1500)).ok(201));
    let challenge = id_of(&api.challenge(&alice, &challenge_of("bob")).ok(201));

    let claims = |exp: u64| json!({"sub": "alice", "exp": exp});
    let valid = claims(now_s() + 600);
    let alg_none = {
        let payload = alice.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    let other_secret = "another-secret-of-at-least-thirty-two-bytes";
    let signed_elsewhere = String::from_utf8(
        mint(
            &["--user", "alice"],
            &[("MATCHWELL_JWT_SECRET", other_secret)],
        )
        .stdout,
    )
    .unwrap();
    let mut tampered = alice.clone();
    tampered.pop();
    tampered.push(if alice.ends_with('A') { 'B' } else { 'A' });
    let bad: Vec<(Option<String>, &str)> = vec![
        (None, "missing bearer token"),
        (Some(String::new()), "Authorization must be"),
        (Some("Bearer".into()), "Authorization must be"),
        (Some("Bearer ".into()), "Authorization must be"),
        (Some(format!("Basic {alice}")), "Authorization must be"),
        (Some("Bearer not-a-token".into()), "malformed token"),
        (Some("Bearer a.b.c".into()), "malformed token"),
        (Some(format!("Bearer {alg_none}")), "malformed token"),
        (
            Some(format!(
                "Bearer {}",
                forge(&valid, SECRET, Algorithm::HS512)
            )),
            "malformed token",
        ),
        (
            Some(format!(
                "Bearer {}",
                forge(&claims(now_s() - 60), SECRET, Algorithm::HS256)
            )),
            "token expired",
        ),
        (
            Some(format!("Bearer {}", signed_elsewhere.trim())),
            "bad token signature",
        ),
        (Some(format!("Bearer {tampered}")), "bad token signature"),
        (
            Some(format!(
                "Bearer {}",
                forge(&json!({"sub": "alice"}), SECRET, Algorithm::HS256)
            )),
            "`sub` and `exp` are required",
        ),
        (
            Some(format!(
                "Bearer {}",
                forge(&json!({"exp": now_s() + 600}), SECRET, Algorithm::HS256)
            )),
            "`sub` and `exp` are required",
        ),
        (
            Some(format!(
                "Bearer {}",
                forge(
                    &json!({"sub": "", "exp": now_s() + 600}),
                    SECRET,
                    Algorithm::HS256
                )
            )),
            "`sub` must be",
        ),
        (
            Some(format!("Bearer {}", token_with(&"u".repeat(65), &[]))),
            "`sub` must be",
        ),
        (
            Some(format!(
                "Bearer {}",
                token_with("alice", &["--tenant", &"t".repeat(65)])
            )),
            "`tenant` must be",
        ),
        (
            Some(format!(
                "Bearer {}",
                forge(
                    &json!({"sub": "alice", "exp": now_s() + 600, "tenant": 7}),
                    SECRET,
                    Algorithm::HS256
                )
            )),
            "malformed token",
        ),
    ];
    for route in protected_routes(&entry, &challenge) {
        for (authorization, message) in &bad {
            let reply = call(&api, &route, authorization.as_deref()).expect(401, "UNAUTHORIZED");
            assert!(
                reply.message().contains(message),
                "{route:?} with {authorization:?}: {reply:?}"
            );
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        }
    }
    // Nothing changed.
    assert_eq!(api.entry(&alice, &entry).ok(200)["status"], "searching");
    let path = format!("/v1/matchmaking/challenges/{challenge}");
    assert_eq!(api.get(&path, &bob).ok(200)["status"], "pending");
    let outgoing = api
        .get("/v1/matchmaking/challenges/outgoing", &alice)
        .ok(200);
    assert_eq!(outgoing.as_array().unwrap().len(), 1);
    // And a token within its lifetime still works, also in lower-case scheme.
    let reply = api.send(
        api.request("GET", "/v1/matchmaking/active", None)
            .header("Authorization", format!("bearer {alice}")),
    );
    assert_eq!(reply.ok(200)["searching"]["id"], json!(entry));
}

#[test]
fn the_summary_is_for_admins_and_their_own_tenant_only() {
    let server = Server::start();
    let api = server.api();
    // Ratings too far apart for a match.
    for (user, tenant, rating) in [
        ("p1", "default", 1000),
        ("p2", "acme", 2000),
        ("p3", "acme", 3000),
    ] {
        let player = token_with(user, &["--tenant", tenant]);
        api.enqueue(&player, &blitz(rating)).ok(201);
    }
    let summary = "/internal/queues/summary";
    for role in [None, Some("service"), Some("Admin"), Some("root")] {
        let mut args = vec!["--tenant", "acme"];
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        api.get(summary, &token_with("ops", &args))
            .expect(403, "FORBIDDEN");
    }
    let searching = |tenant: &str| {
        let admin = token_with("ops", &["--role", "admin", "--tenant", tenant]);
        let view = api.get(summary, &admin).ok(200);
        assert_eq!(view["tenant"], tenant);
        view["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pool| pool["searching"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(searching("acme"), 2);
    assert_eq!(searching("default"), 1);
    assert_eq!(searching("nobody"), 0);
    // An admin is a user like any other outside /internal: no one else's entries.
    let admin = token_with("ops", &["--role", "admin"]);
    api.get("/v1/matchmaking/queue/q_1", &admin)
        .expect(404, "NOT_FOUND");
    api.enqueue(
        &admin,
        &json!({"time_control": "5+3", "variant": "standard",
                                "rated": true, "user_id": "p1"}),
    )
    .expect(403, "FORBIDDEN");
}

#[test]
fn without_configuration_the_server_makes_a_private_development_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir_text = data_dir.to_str().unwrap();
    let server = Server::options()
        .without_secret()
        .data_dir(&data_dir)
        .start();
    let secret_file = data_dir.join("jwt-dev-secret");
    assert!(
        server.log().iter().any(|line| line
            .contains("generated a development JWT secret (mode 0600)")
            && line.contains(secret_file.to_str().unwrap())),
        "{:#?}",
        server.log()
    );
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let minted = mint(
        &["--user", "alice"],
        &[("MATCHWELL_DATA_DIR", data_dir_text)],
    );
    assert!(minted.status.success());
    let dev_token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let api = server.api();
    let active = |token: &str| api.get("/v1/matchmaking/active", token);
    active(&dev_token).ok(200);
    // A token signed with anything else is refused.
    active(&token("alice")).expect(401, "UNAUTHORIZED");

    // A restart keeps the secret, and with it the tokens.
    server.kill();
    let server = Server::options()
        .without_secret()
        .data_dir(&data_dir)
        .start();
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("using the development JWT secret")),
        "{:#?}",
        server.log()
    );
    server
        .api()
        .get("/v1/matchmaking/active", &dev_token)
        .ok(200);
    server.kill();

    // A configured secret is the only one used, even beside a development secret.
    let server = Server::options().data_dir(&data_dir).start();
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("JWT secret from MATCHWELL_JWT_SECRET"))
    );
    let api = server.api();
    api.get("/v1/matchmaking/active", &dev_token)
        .expect(401, "UNAUTHORIZED");
    api.get("/v1/matchmaking/active", &token("alice")).ok(200);
}

#[test]
fn a_configured_secret_writes_no_development_secret() {
    let server = Server::start();
    assert!(!server.data_dir.join("jwt-dev-secret").exists());
    let minted = mint(
        &["--user", "bob"],
        &[("MATCHWELL_DATA_DIR", server.data_dir.to_str().unwrap())],
    );
    // Without the secret, `token` makes its own development secret, which the server ignores.
    let dev_token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    server
        .api()
        .get("/v1/matchmaking/active", &dev_token)
        .expect(401, "UNAUTHORIZED");
}

#[test]
fn a_short_secret_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MATCHWELL_JWT_SECRET", "too-short"),
        ("MATCHWELL_DATA_DIR", dir.path().to_str().unwrap()),
    ];
    let log = support::refused_start(&env);
    assert!(log.contains("at least 32 bytes"), "{log}");
    let minted = mint(&["--user", "alice"], &env);
    assert!(!minted.status.success());
    assert!(String::from_utf8_lossy(&minted.stderr).contains("at least 32 bytes"));
    assert!(!dir.path().join("jwt-dev-secret").exists());
}

#[test]
fn a_configured_audience_and_issuer_are_required() {
    let scope = [
        ("MATCHWELL_JWT_AUDIENCE", "matchwell"),
        ("MATCHWELL_JWT_ISSUER", "https://id.example"),
    ];
    let server = Server::options()
        .env(scope[0].0, scope[0].1)
        .env(scope[1].0, scope[1].1)
        .start();
    let api = server.api();
    let active = |token: &str| api.get("/v1/matchmaking/active", token);
    let signed = |claims: Value| {
        let mut all = json!({"sub": "alice", "exp": now_s() + 600});
        all.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        forge(&all, SECRET, Algorithm::HS256)
    };
    let issuer = "https://id.example";
    for right in [
        json!({"aud": "matchwell", "iss": issuer}),
        json!({"aud": ["billing", "matchwell"], "iss": issuer}),
    ] {
        active(&signed(right)).ok(200);
    }
    for (wrong, named) in [
        (json!({"aud": "billing", "iss": issuer}), "`aud`"),
        (json!({"aud": ["billing"], "iss": issuer}), "`aud`"),
        (json!({"iss": issuer}), "`aud`"),
        (
            json!({"aud": "matchwell", "iss": "https://other.example"}),
            "`iss`",
        ),
        (json!({"aud": "matchwell"}), "`iss`"),
    ] {
        let refused = active(&signed(wrong.clone())).expect(401, "UNAUTHORIZED");
        assert!(refused.message().contains(named), "{wrong}: {refused:?}");
    }
    active(&token("alice")).expect(401, "UNAUTHORIZED");

    // `matchwell token` with the same settings, as variables or flags, mints accepted tokens.
    let with_secret = [scope[0], scope[1], ("MATCHWELL_JWT_SECRET", SECRET)];
    let minted = mint(&["--user", "alice"], &with_secret);
    assert!(minted.status.success(), "{minted:?}");
    active(String::from_utf8(minted.stdout).unwrap().trim()).ok(200);
    let flags = [
        "--user",
        "bob",
        "--jwt-audience",
        "matchwell",
        "--jwt-issuer",
        issuer,
    ];
    let minted = mint(&flags, &[("MATCHWELL_JWT_SECRET", SECRET)]);
    assert!(minted.status.success(), "{minted:?}");
    active(String::from_utf8(minted.stdout).unwrap().trim()).ok(200);

    // A server without them takes tokens with or without an audience and an issuer.
    let plain = Server::start();
    let api = plain.api();
    api.get(
        "/v1/matchmaking/active",
        &signed(json!({"aud": "billing", "iss": issuer})),
    )
    .ok(200);
    api.get("/v1/matchmaking/active", &token("alice")).ok(200);
}

#[test]
fn the_development_secret_is_served_on_loopback_addresses_only() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let log = support::refused_start(&[
            ("MATCHWELL_LISTEN", listen),
            ("MATCHWELL_DATA_DIR", data_dir),
        ]);
        for needle in [
            listen,
            "development JWT secret",
            "MATCHWELL_JWT_SECRET",
            "at least 32 bytes",
            "openssl rand -hex 32",
        ] {
            assert!(log.contains(needle), "{listen}: no {needle} in {log}");
        }
    }
    assert!(!dir.path().join("jwt-dev-secret").exists());
    // With a secret the same address serves.
    let server = Server::options()
        .env("MATCHWELL_LISTEN", "0.0.0.0:0")
        .start();
    server
        .api()
        .get("/v1/matchmaking/active", &token("alice"))
        .ok(200);
}
