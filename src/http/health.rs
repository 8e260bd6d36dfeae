//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};

use crate::http::AppState;
use crate::http::views::{LiveView, ReadinessView};

/// The process runs and answers; it may still be recovering (see `/health/ready`).
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Alive", body = LiveView)),
)]
#[get("/health/live")]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(LiveView { status: "live" })
}

/// Whether to send traffic here, by component: `engine`, `journal`, `snapshots`, and any
/// other the server registers.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "`healthy`, or `degraded`: serving, with less than it should (a failing non-critical component, failing snapshots)", body = ReadinessView),
        (status = 503, description = "`unhealthy`: recovering, stopping, or a critical component fails", body = ReadinessView),
    ),
)]
#[get("/health/ready")]
pub(crate) async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let report = state.health.report();
    let mut answer = if report.status.is_ready() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    answer.json(ReadinessView::new(report))
}
