//! The OpenAPI document against the server it describes, without Python. At every edge the
//! document's schemas state (lengths, ranges, patterns, enums, nulls, required and unknown
//! fields) and for every mix of a pool's fields, the schema and the server give the same
//! verdict: what the schema allows the server takes, what it refuses the server refuses as
//! invalid. Every body the server is known to refuse, the schema refuses too. So a client
//! generated from `/openapi.json` never sends a request the server rejects as invalid, and
//! validation that changes without the document (or the reverse) fails here.
//! `scripts/schemathesis.sh` checks the same with generated requests.

mod support;

use std::cell::Cell;

use jsonschema::Validator;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use support::{Api, Reply, Server, token_with};

/// Pools of which few mixes of the fields are a pool, so that the document must say which:
/// one game with a region and without, and two games in one region each.
const SPARSE_POOLS: &str = r#"
[[pool]]
time_control = "5+3"
variant = "standard"
rated = true
region = "eu"

[[pool]]
time_control = "5+3"
variant = "standard"
rated = true

[[pool]]
time_control = "10+0"
variant = "chess960"
rated = false
region = "us"

[[pool]]
time_control = "1+0"
variant = "standard"
rated = false
region = "eu"
"#;

/// Values of a pool's fields that name no pool of either catalog, yet are well formed.
const NO_POOL: [(&str, &str); 3] = [
    ("time_control", "7+7"),
    ("variant", "atomic"),
    ("region", "mars"),
];

/// A route that takes a JSON body.
#[derive(Clone, Copy, Debug)]
enum Route {
    Enqueue,
    Challenge,
}

impl Route {
    const ALL: [Route; 2] = [Route::Enqueue, Route::Challenge];

    fn path(self) -> &'static str {
        match self {
            Route::Enqueue => "/v1/matchmaking/queue",
            Route::Challenge => "/v1/matchmaking/challenges",
        }
    }

    /// The fields that together name a pool (a challenge names no region).
    fn pool_fields(self) -> &'static [&'static str] {
        match self {
            Route::Enqueue => &["time_control", "variant", "rated", "region"],
            Route::Challenge => &["time_control", "variant", "rated"],
        }
    }
}

/// A server, its document, and a service token, which may act for any user: each request
/// acts for a user of its own, so that no state (a user already queued, a challenge already
/// sent) refuses it.
struct Probe {
    _server: Server,
    api: Api,
    service: String,
    document: Value,
    /// Requests sent, which numbers the users.
    sent: Cell<usize>,
}

impl Probe {
    fn start(pools: Option<&str>) -> Self {
        // No matching, so that an accepted entry is still searching when it is cancelled;
        // no rate limit, as one token sends every request.
        let mut options = Server::options()
            .env("MATCHWELL_TASK_MATCHING", "off")
            .without_rate_limits();
        if let Some(pools) = pools {
            options = options.pools(pools);
        }
        let server = options.start();
        let api = server.api();
        let document = api.send(api.request("GET", "/openapi.json", None)).ok(200);
        Self {
            _server: server,
            api,
            service: token_with("openapi-service", &["--role", "service"]),
            document,
            sent: Cell::new(0),
        }
    }

    /// A user no request acted for yet.
    fn fresh_user(&self, role: &str) -> String {
        self.sent.set(self.sent.get() + 1);
        format!("{role}-{}", self.sent.get())
    }

    /// The schema of `route`'s body as the document states it, `$ref`s included.
    fn body_schema(&self, route: Route) -> Value {
        let reference = &self.document["paths"][route.path()]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"];
        let name = reference
            .as_str()
            .and_then(|reference| reference.strip_prefix("#/components/schemas/"))
            .unwrap_or_else(|| panic!("{route:?}'s body is no component: {reference}"));
        self.document["components"]["schemas"][name].clone()
    }

    /// A validator of `schema`, a part of the document that may refer to its components.
    fn validator(&self, schema: &Value) -> Validator {
        let mut root = schema.clone();
        root["components"] = self.document["components"].clone();
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("{schema} is no JSON Schema: {error}"))
    }

    /// The schema of parameter `name` of `method path`.
    fn parameter_schema(&self, method: &str, path: &str, name: &str) -> Value {
        self.document["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|parameter| parameter["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    }

    /// A body of `route` in the pool `pool` (its fields by name), for fresh users.
    fn body(&self, route: Route, pool: &Value) -> Value {
        let mut body = pool.clone();
        if matches!(route, Route::Challenge) {
            body.as_object_mut().unwrap().remove("region");
            body["opponent_id"] = json!(self.fresh_user("rival"));
        }
        body["user_id"] = json!(self.fresh_user("player"));
        body
    }

    /// Sends `body` to `route` with `key` as Idempotency-Key when given; whether the server
    /// took it (201), after undoing it, or refused it as invalid (400). Any other answer
    /// fails the test: only validation may refuse these requests.
    fn server_takes(&self, route: Route, body: &Value, key: Option<&[u8]>) -> bool {
        let mut request = self
            .api
            .request("POST", route.path(), Some(&self.service))
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", HeaderValue::from_bytes(key).unwrap());
        }
        let reply = self.api.send(request);
        match reply.status {
            201 => {
                self.undo(route, &reply);
                true
            }
            400 => {
                assert!(
                    ["INVALID_REQUEST", "UNKNOWN_POOL"].contains(&reply.code()),
                    "{body}: {reply:?}"
                );
                false
            }
            _ => panic!("{route:?} {body}: neither taken nor refused as invalid: {reply:?}"),
        }
    }

    /// Cancels what `created` created, acting as its owner, so that the next request of the
    /// same user is not refused for it.
    fn undo(&self, route: Route, created: &Reply) {
        let (path, owner) = match route {
            Route::Enqueue => ("/v1/matchmaking/queue", "user_id"),
            Route::Challenge => ("/v1/matchmaking/challenges", "challenger_id"),
        };
        let id = created.body["id"].as_str().unwrap();
        let request = self
            .api
            .request("DELETE", &format!("{path}/{id}"), Some(&self.service))
            .query(&[("user_id", created.body[owner].as_str().unwrap())]);
        self.api.send(request).ok(200);
    }

    /// Asserts that the schema of `route`'s body and the server agree on `body`; their
    /// verdict.
    fn agree(&self, route: Route, body: &Value) -> bool {
        let allowed = self.validator(&self.body_schema(route)).is_valid(body);
        let taken = self.server_takes(route, body, None);
        assert_eq!(
            allowed,
            taken,
            "{route:?} {body}: the schema {} it, the server {} it",
            verdict(allowed),
            verdict(taken)
        );
        taken
    }

    /// Asserts that schema and server both take `body`.
    fn both_take(&self, route: Route, body: &Value) {
        assert!(self.agree(route, body), "{route:?} {body}: both refuse it");
    }

    /// Asserts that schema and server both refuse `body`.
    fn both_refuse(&self, route: Route, body: &Value) {
        assert!(!self.agree(route, body), "{route:?} {body}: both take it");
    }

    /// Every mix of the values the schema lists for the pool fields, and of one value beyond
    /// each: the schema allows exactly the mixes the server takes, `pools` of them.
    fn pools_agree(&self, route: Route, pools: usize) {
        let schema = self.body_schema(route);
        let mut mixes = vec![json!({})];
        for field in route.pool_fields() {
            let mut values = schema["properties"][field]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{route:?}: `{field}` lists no values"))
                .clone();
            values.extend(
                NO_POOL
                    .iter()
                    .filter(|(name, _)| name == field)
                    .map(|(_, value)| json!(value)),
            );
            mixes = mixes
                .iter()
                .flat_map(|mix| {
                    values.iter().map(move |value| {
                        let mut mix = mix.clone();
                        mix[field] = value.clone();
                        mix
                    })
                })
                .collect();
        }
        let taken = mixes
            .iter()
            .filter(|pool| self.agree(route, &self.body(route, pool)))
            .count();
        assert_eq!(taken, pools, "{route:?}: {taken} of the mixes taken");
    }

    /// At each edge the schema of `route`'s body states, schema and server agree, and
    /// inside it both take the body, just outside both refuse it.
    fn edges_agree(&self, route: Route, pool: &Value) {
        let schema = self.body_schema(route);
        let properties = schema["properties"].as_object().unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        let with = |field: &str, value: Value| {
            let mut body = self.body(route, pool);
            body[field] = value;
            body
        };
        self.both_take(route, &self.body(route, pool));
        assert_eq!(schema["additionalProperties"], false, "{route:?}");
        self.both_refuse(route, &with("unknown_field", json!(1)));
        for (field, property) in properties {
            let mut without = self.body(route, pool);
            without.as_object_mut().unwrap().remove(field);
            let pool_field = route.pool_fields().contains(&field.as_str());
            if required.contains(&field.as_str()) {
                self.both_refuse(route, &without);
            } else if pool_field {
                // Without a region, the pool may be another one, or none.
                self.agree(route, &without);
            } else {
                self.both_take(route, &without);
            }
            if pool_field {
                // Mixed with the other pool fields by `pools_agree`.
                continue;
            }
            let types = property["type"].clone();
            let nullable =
                types == "null" || types.as_array().is_some_and(|t| t.contains(&json!("null")));
            if nullable {
                self.both_take(route, &with(field, Value::Null));
            }
            if let Some(values) = property["enum"].as_array() {
                for value in values {
                    self.both_take(route, &with(field, value.clone()));
                }
                self.both_refuse(route, &with(field, json!("not-listed")));
            }
            if let (Some(min), Some(max)) =
                (property["minimum"].as_i64(), property["maximum"].as_i64())
            {
                for inside in [json!(min), json!(max), json!(max as f64)] {
                    self.both_take(route, &with(field, inside));
                }
                for outside in [json!(min - 1), json!(max + 1), json!(min as f64 + 0.5)] {
                    self.both_refuse(route, &with(field, outside));
                }
            }
            for (text, inside) in string_edges(property) {
                let body = with(field, json!(text));
                assert_eq!(self.agree(route, &body), inside, "{route:?} {body}");
            }
        }
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "takes" } else { "refuses" }
}

/// Strings at the edges `schema` states, each with whether it lies inside: lengths at and
/// just beyond `minLength` and `maxLength`, in a letter of two bytes (lengths count
/// characters); and, when it has a `pattern`, the characters a name may and may not have
/// (control characters nowhere, white space not at either end).
fn string_edges(schema: &Value) -> Vec<(String, bool)> {
    let mut edges = Vec::new();
    let letters = |n: u64| "é".repeat(n as usize);
    if let Some(min) = schema["minLength"].as_u64() {
        edges.push((letters(min), true));
        if min > 0 {
            edges.push((letters(min - 1), false));
        }
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        edges.push((letters(max), true));
        edges.push((letters(max + 1), false));
    }
    if schema["pattern"].is_string() {
        for inside in ["a", "in ner", "a\u{a0}b", "zero\u{200b}", "東京"] {
            edges.push((inside.to_owned(), true));
        }
        for outside in [
            " lead",
            "trail ",
            "\u{a0}nbsp",
            "line\u{2028}",
            "tab\tin",
            "nul\u{0}",
            "del\u{7f}ete",
            "next\u{85}line",
        ] {
            edges.push((outside.to_owned(), false));
        }
    }
    edges
}

/// Bodies the server refuses as invalid, known from its own rules rather than from the
/// document: each must be refused by the schema too.
fn refused_by_the_server(route: Route, body: &Value) -> Vec<Value> {
    let with = |field: &str, value: Value| {
        let mut body = body.clone();
        body[field] = value;
        body
    };
    let mut refused = vec![
        json!([]),
        json!(null),
        with("time_control", json!("181+0")),
        with("time_control", json!("0+0")),
        with("time_control", json!("5")),
        with("time_control", json!("")),
        with("variant", json!("")),
        with("variant", json!("v".repeat(100))),
        with("rated", json!("yes")),
        with("user_id", json!("")),
        with("user_id", json!("u".repeat(65))),
        with("user_id", json!("a\u{1}b")),
        with("user_id", json!(" padded ")),
        with("user_id", json!(7)),
    ];
    match route {
        Route::Enqueue => refused.extend([
            with("rating", json!(4001)),
            with("rating", json!(-1)),
            with("rating", json!(i64::MAX)),
            with("rating", json!(1500.5)),
            with("rating", json!("1500")),
            with("region", json!("")),
            with("region", json!("r".repeat(100))),
            with("colour", json!("white")),
        ]),
        Route::Challenge => refused.extend([
            with("opponent_id", json!("")),
            with("opponent_id", json!("o".repeat(65))),
            with("color", json!("green")),
            with("expires_in_s", json!(0)),
            with("expires_in_s", json!(86_401)),
            with("expires_in_s", json!(-1)),
            with("rating", json!(1500)),
            with("region", json!("eu")),
        ]),
    }
    refused
}

#[test]
fn openapi_states_the_server_rules() {
    let catalogs = [
        (
            None,
            json!({"time_control": "5+3", "variant": "standard", "rated": true}),
            44,
            44,
        ),
        (
            Some(SPARSE_POOLS),
            json!({"time_control": "10+0", "variant": "chess960", "rated": false, "region": "us"}),
            4,
            3,
        ),
    ];
    for (pools, pool, queues, games) in catalogs {
        let probe = Probe::start(pools);
        probe.pools_agree(Route::Enqueue, queues);
        probe.pools_agree(Route::Challenge, games);
        for route in Route::ALL {
            probe.edges_agree(route, &pool);
            let body = probe.body(route, &pool);
            for refused in refused_by_the_server(route, &body) {
                probe.both_refuse(route, &refused);
            }
        }

        // The one rule no JSON Schema can state, between two fields (and the token): the
        // document says it in words.
        let opponent = &probe.body_schema(Route::Challenge)["properties"]["opponent_id"];
        assert!(
            opponent["description"]
                .as_str()
                .unwrap()
                .contains("another user than the challenger"),
            "{opponent}"
        );
        let mut own = probe.body(Route::Challenge, &pool);
        own["opponent_id"] = own["user_id"].clone();
        assert!(!probe.server_takes(Route::Challenge, &own, None), "{own}");

        // The user to act for, in a query.
        let user =
            probe.validator(&probe.parameter_schema("get", "/v1/matchmaking/active", "user_id"));
        for (text, inside) in
            string_edges(&probe.parameter_schema("get", "/v1/matchmaking/active", "user_id"))
        {
            let request = probe
                .api
                .request("GET", "/v1/matchmaking/active", Some(&probe.service))
                .query(&[("user_id", &text)]);
            let reply = probe.api.send(request);
            assert_eq!(
                (user.is_valid(&json!(text)), reply.status),
                (inside, if inside { 200 } else { 400 }),
                "user_id {text:?}: {reply:?}"
            );
        }

        // Idempotency-Key, as HTTP carries it: spaces at either end are not part of a
        // header's value, and bytes beyond ASCII are not text.
        let key_schema = probe.parameter_schema("post", Route::Enqueue.path(), "Idempotency-Key");
        let key = probe.validator(&key_schema);
        let longest = vec![b'~'; key_schema["maxLength"].as_u64().unwrap() as usize + 1];
        let keys: [(&[u8], bool); 7] = [
            (b"k", true),
            (&longest[1..], true),
            (b"a b", true),
            (&longest, false),
            (b"", false),
            (b"tab\tin", false),
            ("cl\u{e9}".as_bytes(), false),
        ];
        for (text, inside) in keys {
            let body = probe.body(Route::Enqueue, &pool);
            let allowed = key.is_valid(&json!(String::from_utf8_lossy(text)));
            let taken = probe.server_takes(Route::Enqueue, &body, Some(text));
            assert_eq!(
                (allowed, taken),
                (inside, inside),
                "Idempotency-Key {:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
