//! The OpenAPI description, generated from the route handlers themselves (utoipa) and then
//! made to state every rule the server enforces on requests, and the table of routes that
//! tells a 405 from a 404 and names the route of a request's metrics.

use std::collections::HashMap;

use actix_web::dev::ResourceDef;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use serde_json::{Map, Value, json};
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::{ColorChoice, PoolCatalog};
use matchwell_actors::error::{MAX_IDEMPOTENCY_KEY_LEN, MAX_USER_ID_LEN};
use matchwell_actors::matchmaker::DEFAULT_MAX_CHALLENGE_TTL;
use matchwell_actors::pools::MAX_RATING;

/// What the handlers do not say about themselves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "matchwell",
        description = "Rating-based matchmaking queues and direct challenges. Every error answers `{\"error\": {\"code\", \"message\"}}`; unknown routes answer 404 `NOT_FOUND`, known routes with another method 405 `METHOD_NOT_ALLOWED`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "queue", description = "Rating-based queues"),
        (name = "challenges", description = "Direct challenges between players"),
        (name = "operations", description = "Health, metrics, operator views"),
    ),
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(
            "HS256 JWT. Claims: `sub` (user id, required), `exp` (required), `tenant` (default \"default\"), `role` (`service`: may act for any user of its tenant through `user_id`; `admin`: may read `/internal/*`), `ratings` (time control → rating, wins over a body's `rating`); `aud` and `iss` when the server is configured with an audience and an issuer.".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// This description.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3 description of the API", content_type = "application/json", body = Object)),
)]
#[get("/openapi.json")]
pub(crate) async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// The path templates of the API: the methods each accepts, and the template of each
/// handler by name.
pub(crate) struct RouteTable {
    /// Each path template, parsed, with its methods.
    routes: Vec<(ResourceDef, Vec<&'static str>)>,
    /// Path template by resource name. The route macros name each resource after its handler,
    /// and utoipa gives its operation the same name as id; so the name actix reports for a
    /// request (`HttpRequest::match_name`, a borrow) finds the template without building it
    /// again per request (`match_pattern` allocates a `String`).
    templates: HashMap<String, String>,
}

impl RouteTable {
    /// The routes of `document`.
    pub(crate) fn new(document: &OpenApiDocument) -> Self {
        let routes = document
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = operations(item).map(|(method, _)| method).collect();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        let templates = document
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                operations(item).filter_map(|(_, operation)| {
                    Some((operation.operation_id.clone()?, path.clone()))
                })
            })
            .collect();
        Self { routes, templates }
    }

    /// The methods allowed on `path`, if it is a route. A path that is itself a template
    /// (`/v1/matchmaking/challenges/incoming`) has that route's methods only, not also those
    /// of the templates it matches (`/v1/matchmaking/challenges/{id}`): OpenAPI matches
    /// concrete paths before templated ones, and the document lists them so.
    fn allowed(&self, path: &str) -> Option<Vec<&'static str>> {
        let concrete = self
            .routes
            .iter()
            .any(|(resource, _)| resource.pattern() == Some(path));
        let mut allowed: Vec<&'static str> = self
            .routes
            .iter()
            .filter(|(resource, _)| {
                if concrete {
                    resource.pattern() == Some(path)
                } else {
                    resource.is_match(path)
                }
            })
            .flat_map(|(.., methods)| methods.iter().copied())
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        (!allowed.is_empty()).then_some(allowed)
    }

    /// The route of `request` as logs and metrics name it: the path template of the handler
    /// that took it, or [`UNMATCHED`], so that clients' paths never become names.
    pub(crate) fn route_of(&self, request: &HttpRequest) -> &str {
        request
            .match_name()
            .and_then(|name| self.templates.get(name))
            .map_or(UNMATCHED, String::as_str)
    }
}

/// The route of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The operations of `item` with their methods.
fn operations(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_ref()?)))
}

/// Answers requests no route took: 405 when the path is a route, else 404.
pub(crate) async fn fallback(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let error = match state.routes.allowed(request.path()) {
        Some(allowed) => ApiError::MethodNotAllowed {
            allowed: allowed.join(", "),
        },
        None => ApiError::NotFound,
    };
    error.error_response()
}

/// What a user id may be ([`matchwell_actors::error::check_name`]): no control character
/// (Unicode `Cc`) anywhere, and no white space (Unicode `White_Space`, which Rust's `trim`
/// removes) at either end; the length is `minLength` and `maxLength`. Written with explicit
/// ranges rather than `\s` or `\p{…}`, which the regex engines of JSON Schema tools read
/// differently.
pub(crate) const USER_ID_PATTERN: &str = concat!(
    r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    r"([^\u0000-\u001f\u007f-\u009f]*",
    r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$",
);

/// What an `Idempotency-Key` may be: visible ASCII (what a header value must be to be read as
/// text), with inner spaces only, as [`matchwell_actors::error::check_name`] refuses control
/// characters and spaces at either end.
pub(crate) const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]([ -~]*[!-~])?$";

/// The schema of a user id, `null` allowed or not.
fn user_id_schema(nullable: bool) -> Value {
    json!({
        "type": if nullable { json!(["string", "null"]) } else { json!("string") },
        "minLength": 1,
        "maxLength": MAX_USER_ID_LEN,
        "pattern": USER_ID_PATTERN,
    })
}

/// Adds (or replaces) the keywords of `rules` in `schema`, keeping what it said already
/// (its description, above all).
fn merge(schema: &mut Value, rules: Value) {
    if let (Some(schema), Value::Object(rules)) = (schema.as_object_mut(), rules) {
        schema.extend(rules);
    }
}

/// The values, in first-seen order without repeats, of field `n` of `combinations`.
fn distinct(combinations: &[Vec<Value>], n: usize) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::new();
    for combination in combinations {
        if !values.contains(&combination[n]) {
            values.push(combination[n].clone());
        }
    }
    values
}

/// Restricts the fields `fields` of the object schema `body` to the `combinations` of their
/// values that name a pool: each field to the values it has in some combination, and when
/// not every mix of those names a pool, the object to the mixes that do (`anyOf`, one branch
/// per values of the fields after the first, which lists its own). A field whose values never
/// include `null` becomes required and non-null: leaving it out would name no pool.
fn restrict_to_pools(body: &mut Value, fields: &[&str], combinations: &[Vec<Value>]) {
    let values: Vec<Vec<Value>> = (0..fields.len())
        .map(|n| distinct(combinations, n))
        .collect();
    for (field, values) in fields.iter().zip(&values) {
        if !values.contains(&Value::Null) {
            let property = &mut body["properties"][field];
            if let Some(types) = property["type"].as_array() {
                let kept = types.iter().find(|kind| *kind != "null").cloned();
                property["type"] = kept.unwrap_or_default();
            }
            if let Some(required) = body["required"].as_array_mut() {
                if !required.iter().any(|name| name == field) {
                    required.push(json!(field));
                }
            }
        }
        body["properties"][field]["enum"] = Value::Array(values.clone());
    }
    let every_mix: usize = values.iter().map(Vec::len).product();
    if every_mix == combinations.len() {
        return;
    }
    let mut branches: Vec<(&[Value], Vec<&Value>)> = Vec::new();
    for combination in combinations {
        let Some((first, rest)) = combination.split_first() else {
            continue;
        };
        match branches.iter_mut().find(|(key, _)| *key == rest) {
            Some((_, firsts)) => firsts.push(first),
            None => branches.push((rest, vec![first])),
        }
    }
    let any_of = branches
        .into_iter()
        .map(|(rest, firsts)| {
            let mut properties = Map::new();
            properties.insert(fields[0].to_owned(), json!({ "enum": firsts }));
            let mut required = Vec::new();
            for (field, value) in fields[1..].iter().zip(rest) {
                if !value.is_null() {
                    required.push(json!(field));
                }
                properties.insert((*field).to_owned(), json!({ "const": value }));
            }
            json!({ "properties": properties, "required": required })
        })
        .collect();
    body["anyOf"] = Value::Array(any_of);
}

/// Makes the generated `document` state what the server enforces on requests beyond the
/// types: the time controls, variants, regions and their combinations that `catalog` serves,
/// the rating range, the lengths and characters of user ids and `Idempotency-Key`, the
/// challenge lifetime, the colors, and the shape of the events of an entry's stream. The
/// generated document knows only the Rust types, and the catalog is known only at start.
pub(crate) fn state_the_rules(document: &mut Value, catalog: &PoolCatalog) {
    let pools: Vec<Vec<Value>> = catalog
        .iter()
        .map(|pool| {
            let spec = &pool.spec;
            vec![
                json!(spec.time_control.to_string()),
                json!(spec.variant.as_str()),
                json!(spec.rated),
                json!(spec.region.as_deref()),
            ]
        })
        .collect();
    // A challenge names no region: any pool of its time control, variant and rating will do.
    let mut games: Vec<Vec<Value>> = Vec::new();
    for pool in &pools {
        if !games.iter().any(|game| game[..] == pool[..3]) {
            games.push(pool[..3].to_vec());
        }
    }
    let schemas = &mut document["components"]["schemas"];

    let enqueue = &mut schemas["EnqueueBody"];
    restrict_to_pools(
        enqueue,
        &["time_control", "variant", "rated", "region"],
        &pools,
    );
    merge(
        &mut enqueue["properties"]["rating"],
        json!({ "minimum": 0, "maximum": MAX_RATING }),
    );
    merge(&mut enqueue["properties"]["user_id"], user_id_schema(true));

    let challenge = &mut schemas["ChallengeBody"];
    restrict_to_pools(challenge, &["time_control", "variant", "rated"], &games);
    let colors: Vec<Value> = [ColorChoice::White, ColorChoice::Black, ColorChoice::Random]
        .iter()
        .map(|color| serde_json::to_value(color).unwrap_or_default())
        .chain([Value::Null])
        .collect();
    let properties = &mut challenge["properties"];
    merge(&mut properties["color"], json!({ "enum": colors }));
    merge(
        &mut properties["expires_in_s"],
        json!({ "minimum": 1, "maximum": DEFAULT_MAX_CHALLENGE_TTL.as_secs() }),
    );
    merge(&mut properties["user_id"], user_id_schema(true));
    merge(&mut properties["opponent_id"], user_id_schema(false));
    merge(
        &mut properties["opponent_id"],
        json!({ "description": "Who is challenged: another user than the challenger (`user_id`, or the token's `sub`)." }),
    );

    let operations = document["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(Map::values_mut)
        .flat_map(|item| item.as_object_mut().into_iter().flat_map(Map::values_mut));
    for operation in operations {
        let parameters = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for parameter in parameters {
            parameter["schema"] = match (parameter["in"].as_str(), parameter["name"].as_str()) {
                (Some("query"), Some("user_id")) => user_id_schema(false),
                (Some("header"), Some("Idempotency-Key")) => json!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_IDEMPOTENCY_KEY_LEN,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                }),
                _ => continue,
            };
        }
    }

    link_created_items(document);

    // Each event of an entry's stream: `event: entry`, and the entry as JSON in `data`.
    let stream = &mut document["paths"]["/v1/matchmaking/queue/{id}/events"]["get"]["responses"]["200"]
        ["content"]["text/event-stream"];
    stream["schema"] = json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": { "const": "entry" },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": { "$ref": "#/components/schemas/EntryView" },
            },
        },
    });
}

/// Links from the answer that creates an entry or a challenge to the operations on it, each
/// made by the user who may make it: an entry's owner reads, watches and cancels it, a
/// challenge's challenger reads and cancels it, its opponent accepts or declines it. A
/// client (or a test generator) following them acts as that user; without them, tools guess
/// which field of the answer goes where.
fn link_created_items(document: &mut Value) {
    let links = |operations: &[(&str, &str)]| -> Value {
        operations
            .iter()
            .map(|(operation, user)| {
                let link = json!({
                    "operationId": operation,
                    "parameters": {
                        "id": "$response.body#/id",
                        "user_id": format!("$response.body#/{user}"),
                    },
                });
                ((*operation).to_owned(), link)
            })
            .collect::<Map<String, Value>>()
            .into()
    };
    let paths = &mut document["paths"];
    paths["/v1/matchmaking/queue"]["post"]["responses"]["201"]["links"] = links(&[
        ("get_entry", "user_id"),
        ("cancel_entry", "user_id"),
        ("entry_events", "user_id"),
    ]);
    paths["/v1/matchmaking/challenges"]["post"]["responses"]["201"]["links"] = links(&[
        ("get_challenge", "challenger_id"),
        ("cancel_challenge", "challenger_id"),
        ("accept_challenge", "opponent_id"),
        ("decline_challenge", "opponent_id"),
    ]);
}
