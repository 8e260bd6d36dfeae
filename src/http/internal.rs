//! Operator routes under `/internal`, for admin tokens only.

use actix_web::{HttpResponse, get, web};

use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::views::{ErrorBody, NoQuery, SummaryView};

/// Per pool of the caller's tenant: searching count, oldest wait, wait p50/p95, matches in
/// the last minute, mean rating gap, matches whose game is not created yet.
#[utoipa::path(
    tag = "operations",
    security(("bearer" = [])),
    params(NoQuery),
    responses(
        (status = 200, description = "Pools of the token's tenant with players, recent matches or pending games", body = SummaryView),
        (status = 400, description = "`INVALID_REQUEST`: unexpected query parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token's role is not `admin`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering or stopping; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/internal/queues/summary",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn queues_summary(
    state: web::Data<AppState>,
    caller: Caller,
    _query: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let summaries = state
        .engine_for(&caller.tenant)?
        .summary(&caller.tenant)
        .await
        .map_err(|error| ApiError::from_engine(error, &caller.tenant))?;
    Ok(HttpResponse::Ok().json(SummaryView::new(&summaries, &caller.tenant)))
}
