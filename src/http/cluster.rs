//! `GET /internal/cluster`: the partition map as the answering node sees it (cluster mode).

use actix_web::{HttpResponse, get, web};

use crate::cluster::ClusterMap;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::views::{ErrorBody, NoQuery};

/// Every partition's owner (the holder of its lease, with the lease's revision and age), the
/// node that should own it and the one that stands by for it, what the answering node does
/// with it, and the live nodes. Any node answers, each with its own view.
#[utoipa::path(
    tag = "operations",
    security(("bearer" = [])),
    params(NoQuery),
    responses(
        (status = 200, description = "The partition map as this node sees it", body = ClusterMap),
        (status = 400, description = "`INVALID_REQUEST`: unexpected query parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token's role is not `admin`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the node has not joined the cluster yet; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get("/internal/cluster")]
pub(crate) async fn cluster_map(
    state: web::Data<AppState>,
    caller: Caller,
    _query: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let node = state.slot.node().ok_or(ApiError::NotReady(
        "this node has not joined the cluster yet; retry later".into(),
    ))?;
    Ok(HttpResponse::Ok().json(node.map()))
}
