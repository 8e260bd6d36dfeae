//! The OpenAPI description, generated from the route handlers themselves (utoipa), and the
//! table of routes that tells a 405 from a 404.

use actix_web::dev::ResourceDef;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::openapi::path::PathItem;
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
            "HS256 JWT. Claims: `sub` (user id, required), `exp` (required), `tenant` (default \"default\"), `role` (`service`: may act for any user of its tenant through `user_id`; `admin`: may read `/internal/*`), `ratings` (time control → rating, wins over a body's `rating`).".into(),
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

/// The path templates of the API with the methods each accepts.
pub(crate) struct RouteTable {
    routes: Vec<(ResourceDef, Vec<&'static str>)>,
}

impl RouteTable {
    /// The routes of `document`.
    pub(crate) fn new(document: &OpenApiDocument) -> Self {
        let routes = document
            .paths
            .paths
            .iter()
            .map(|(path, item)| (ResourceDef::new(path.as_str()), methods(item)))
            .collect();
        Self { routes }
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
}

fn methods(item: &PathItem) -> Vec<&'static str> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter(|(_, operation)| operation.is_some())
    .map(|(method, _)| method)
    .collect()
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
