//! The OpenAPI description, generated from the route handlers themselves (utoipa), and the
//! table of routes that tells a 405 from a 404 and names the route of a request's metrics.

use std::collections::HashMap;

use actix_web::dev::ResourceDef;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::AppState;
use crate::http::error::ApiError;

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

    /// The methods allowed on `path`, if it is a route.
    fn allowed(&self, path: &str) -> Option<Vec<&'static str>> {
        let mut allowed: Vec<&'static str> = self
            .routes
            .iter()
            .filter(|(resource, _)| resource.is_match(path))
            .flat_map(|(_, methods)| methods.iter().copied())
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
