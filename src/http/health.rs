//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::views::{ErrorBody, HealthView};

/// The process answers.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Alive", body = HealthView)),
)]
#[get("/health/live")]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthView { status: "live" })
}

/// The engine takes traffic (see `Engine::is_ready`).
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthView),
        (status = 503, description = "`UNAVAILABLE`: starting or stopping", body = ErrorBody),
    ),
)]
#[get("/health/ready")]
pub(crate) async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.engine.is_ready() {
        Ok(HttpResponse::Ok().json(HealthView { status: "ready" }))
    } else {
        Err(ApiError::Unavailable("the engine is not ready".into()))
    }
}
