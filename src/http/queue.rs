//! The queue routes: enqueue, status, cancel, and the caller's active state.

use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use compact_str::CompactString;

use crate::http::AppState;
use crate::http::auth::{Acting, Caller};
use crate::http::error::ApiError;
use crate::http::views::{
    ActAs, ActiveView, ChallengeView, EnqueueBody, EntryView, ErrorBody, MatchView,
};
use crate::{Engine, EnqueueRequest, Entry, EntryId, PoolSpec, TimeControl};
use matchwell_actors::pools::{MAX_RATING, PoolSpecError};

/// Rating of a player whose request and token give none.
const DEFAULT_RATING: i64 = 1500;

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A validated pool from the fields of a request body.
pub(crate) fn pool_spec(
    time_control: &str,
    variant: &str,
    rated: bool,
    region: Option<&str>,
) -> Result<PoolSpec, ApiError> {
    let invalid = |error: PoolSpecError| {
        let field = match error {
            PoolSpecError::TimeControl => "time_control",
            PoolSpecError::Variant => "variant",
            PoolSpecError::Region => "region",
        };
        ApiError::invalid(field, error.to_string())
    };
    let time_control: TimeControl = time_control.parse().map_err(invalid)?;
    PoolSpec::new(time_control, variant, rated, region).map_err(invalid)
}

/// Entry `id` if it belongs to `acting`; anything else (malformed id, another tenant's or
/// another user's entry) is not found.
pub(crate) fn owned_entry(
    engine: &Engine,
    acting: &Acting<'_>,
    id: &str,
) -> Result<Entry, ApiError> {
    let id: EntryId = id.parse().map_err(|_| ApiError::NotFound)?;
    engine
        .entry(acting.tenant, id)
        .filter(|entry| entry.user_id == acting.user)
        .ok_or(ApiError::NotFound)
}

fn idempotency_key(request: &HttpRequest) -> Result<Option<CompactString>, ApiError> {
    request
        .headers()
        .get(&IDEMPOTENCY_KEY)
        .map(|value| {
            value.to_str().map(CompactString::from).map_err(|_| {
                ApiError::invalid("idempotency_key", "Idempotency-Key must be visible ASCII")
            })
        })
        .transpose()
}

/// Joins a pool's queue.
///
/// With an `Idempotency-Key`, a repeated request answers 201 with the entry the first one
/// created (whatever its status now) and creates nothing; the same key with a different
/// request (another pool or rating) answers 422, as the IETF Idempotency-Key draft suggests.
#[utoipa::path(
    tag = "queue",
    security(("bearer" = [])),
    request_body = EnqueueBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 characters of visible ASCII, no space at either end; the same key from the same user yields the same entry")),
    responses(
        (status = 201, description = "Queued, or the entry of an earlier request with the same Idempotency-Key", body = EntryView),
        (status = 400, description = "`INVALID_REQUEST` (malformed body, field out of range; `field` names it) or `UNKNOWN_POOL`", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: missing, expired or invalid token", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `user_id` names another user and the token is not a service's", body = ErrorBody),
        (status = 409, description = "`ALREADY_QUEUED`: the user has a searching entry; `entry` is that entry", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`", body = ErrorBody),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: the Idempotency-Key was used with a different request (another pool or rating)", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is not ready (recovering, stopping, or its journal failed) or is overloaded (its shards' mailboxes or its journal past their bounds, `--max-shard-backlog`, `--max-journal-backlog`); see `Retry-After`", body = ErrorBody),
    ),
)]
#[post(
    "/v1/matchmaking/queue",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn enqueue(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Json<EnqueueBody>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(body.user_id.as_deref())?;
    let engine = state.admit_write(&acting)?;
    let pool = pool_spec(
        &body.time_control,
        &body.variant,
        body.rated,
        body.region.as_deref(),
    )?;
    let rating = acting
        .claimed_rating(&pool.time_control.to_string())
        .or(body.rating)
        .unwrap_or(DEFAULT_RATING);
    let rating = u16::try_from(rating)
        .ok()
        .filter(|&rating| rating <= MAX_RATING)
        .ok_or_else(|| ApiError::invalid("rating", format!("must be from 0 to {MAX_RATING}")))?;
    let entry = engine
        .enqueue(EnqueueRequest {
            tenant: acting.tenant.into(),
            user_id: acting.user.into(),
            pool,
            rating,
            idempotency_key: idempotency_key(&request)?,
        })
        .await
        .map_err(|error| ApiError::from_engine(error, acting.tenant))?;
    Ok(HttpResponse::Created().json(EntryView::new(&entry, acting.tenant)))
}

/// One entry of the caller: status, current window, wait and, once matched, the match.
#[utoipa::path(
    tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Entry id (`q_…`)"), ActAs),
    responses(
        (status = 200, description = "The entry", body = EntryView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `user_id` names another user and the token is not a service's", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such entry of this user in this tenant", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: too many reads; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/v1/matchmaking/queue/{id}",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn get_entry(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let engine = state.admit_read(&acting)?;
    let entry = owned_entry(&engine, &acting, &id)?;
    Ok(HttpResponse::Ok().json(EntryView::new(&entry, acting.tenant)))
}

/// Leaves the queue. Cancelling a cancelled entry answers 200 again.
#[utoipa::path(
    tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Entry id (`q_…`)"), ActAs),
    responses(
        (status = 200, description = "The entry, `cancelled`", body = EntryView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `user_id` names another user and the token is not a service's", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`NOT_CANCELLABLE`: the entry was matched or has expired", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is not ready (recovering, stopping, or its journal failed) or is overloaded (its shards' mailboxes or its journal past their bounds, `--max-shard-backlog`, `--max-journal-backlog`); see `Retry-After`", body = ErrorBody),
    ),
)]
#[delete(
    "/v1/matchmaking/queue/{id}",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn cancel_entry(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let engine = state.admit_write(&acting)?;
    let entry = owned_entry(&engine, &acting, &id)?;
    let entry = engine
        .cancel(acting.tenant, entry.id)
        .await
        .map_err(|error| ApiError::from_engine(error, acting.tenant))?;
    Ok(HttpResponse::Ok().json(EntryView::new(&entry, acting.tenant)))
}

/// The caller's searching entry, most recent match, and pending challenges both ways.
#[utoipa::path(
    tag = "queue",
    security(("bearer" = [])),
    params(ActAs),
    responses(
        (status = 200, description = "What the user has going on", body = ActiveView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `user_id` names another user and the token is not a service's", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: too many reads; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/v1/matchmaking/active",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn active(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let active = state
        .admit_read(&acting)?
        .active(acting.tenant, acting.user);
    Ok(HttpResponse::Ok().json(ActiveView {
        searching: active
            .searching
            .as_ref()
            .map(|entry| EntryView::new(entry, acting.tenant)),
        recent_match: active
            .recent_match
            .as_ref()
            .map(|found| MatchView::new(found, acting.user)),
        incoming: ChallengeView::list(&active.incoming, acting.tenant),
        outgoing: ChallengeView::list(&active.outgoing, acting.tenant),
    }))
}
