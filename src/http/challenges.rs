//! The challenge routes.

use std::time::Duration;

use actix_web::{HttpResponse, delete, get, post, web};

use crate::http::AppState;
use crate::http::auth::{Acting, Caller};
use crate::http::error::ApiError;
use crate::http::queue::pool_spec;
use crate::http::views::{ActAs, ChallengeBody, ChallengeView, ErrorBody};
use crate::{ChallengeId, ChallengeRequest};

fn challenge_id(id: &str) -> Result<ChallengeId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

fn challenge_answer(
    result: Result<crate::Challenge, crate::MatchmakerError>,
    acting: &Acting<'_>,
) -> Result<HttpResponse, ApiError> {
    let challenge = result.map_err(|error| ApiError::from_engine(error, acting.tenant))?;
    Ok(HttpResponse::Ok().json(ChallengeView::new(&challenge, acting.tenant)))
}

/// Challenges another player of the same tenant.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    request_body = ChallengeBody,
    responses(
        (status = 201, description = "The challenge, `pending`", body = ChallengeView),
        (status = 400, description = "`INVALID_REQUEST` (malformed body, self-challenge, `expires_in_s` out of range; `field` names it) or `UNKNOWN_POOL`", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `user_id` names another user and the token is not a service's", body = ErrorBody),
        (status = 409, description = "`CHALLENGE_EXISTS`: a pending challenge to this opponent exists; `TOO_MANY_CHALLENGES`: the challenger has sent, or the opponent has received, as many pending challenges as a user may have (`--max-outgoing-challenges`, `--max-incoming-challenges`)", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is not ready (recovering, stopping, or its journal failed) or is overloaded (its journal past `--max-journal-backlog`); see `Retry-After`", body = ErrorBody),
    ),
)]
#[post(
    "/v1/matchmaking/challenges",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn create_challenge(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<ChallengeBody>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(body.user_id.as_deref())?;
    let engine = state.admit_write(&acting)?;
    let pool = pool_spec(&body.time_control, &body.variant, body.rated, None)?;
    let challenge = engine
        .create_challenge(ChallengeRequest {
            tenant: acting.tenant.into(),
            challenger_id: acting.user.into(),
            opponent_id: body.opponent_id.as_str().into(),
            time_control: pool.time_control,
            variant: pool.variant,
            rated: pool.rated,
            color: body.color.unwrap_or_default(),
            expires_in: body.expires_in_s.map(Duration::from_secs),
        })
        .await
        .map_err(|error| ApiError::from_engine(error, acting.tenant))?;
    Ok(HttpResponse::Created().json(ChallengeView::new(&challenge, acting.tenant)))
}

/// Pending challenges addressed to the caller.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    params(ActAs),
    responses(
        (status = 200, description = "Pending challenges addressed to the user", body = Vec<ChallengeView>),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: too many reads; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/v1/matchmaking/challenges/incoming",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn incoming_challenges(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let challenges = state
        .admit_read(&acting)?
        .incoming_challenges(acting.tenant, acting.user);
    Ok(HttpResponse::Ok().json(ChallengeView::list(&challenges, acting.tenant)))
}

/// Pending challenges the caller sent.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    params(ActAs),
    responses(
        (status = 200, description = "Pending challenges the user sent", body = Vec<ChallengeView>),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: too many reads; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/v1/matchmaking/challenges/outgoing",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn outgoing_challenges(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let challenges = state
        .admit_read(&acting)?
        .outgoing_challenges(acting.tenant, acting.user);
    Ok(HttpResponse::Ok().json(ChallengeView::list(&challenges, acting.tenant)))
}

/// One challenge the caller takes part in, in any status.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Challenge id (`c_…`)"), ActAs),
    responses(
        (status = 200, description = "The challenge", body = ChallengeView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such challenge involving this user in this tenant", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: too many reads; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/v1/matchmaking/challenges/{id}",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn get_challenge(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let challenge = state
        .admit_read(&acting)?
        .challenge(acting.tenant, acting.user, challenge_id(&id)?)
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(ChallengeView::new(&challenge, acting.tenant)))
}

/// The opponent accepts: the live-game service creates the game before this answers.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Challenge id (`c_…`)"), ActAs),
    responses(
        (status = 200, description = "The challenge, `accepted`, with `game_id`", body = ChallengeView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: only the opponent may accept", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CHALLENGE_NOT_PENDING`: accepted, declined, cancelled, expired, or being accepted", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the live-game service did not create the game (the challenge stays pending), or the engine is not ready (recovering, stopping, or its journal failed) or is overloaded (its journal past `--max-journal-backlog`); see `Retry-After`", body = ErrorBody),
    ),
)]
#[post(
    "/v1/matchmaking/challenges/{id}/accept",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn accept_challenge(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let engine = state.admit_write(&acting)?;
    let id = challenge_id(&id)?;
    let result = engine
        .accept_challenge(acting.tenant, acting.user, id)
        .await;
    challenge_answer(result, &acting)
}

/// The opponent declines.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Challenge id (`c_…`)"), ActAs),
    responses(
        (status = 200, description = "The challenge, `declined`", body = ChallengeView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: only the opponent may decline", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CHALLENGE_NOT_PENDING`", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is not ready (recovering, stopping, or its journal failed) or is overloaded (its journal past `--max-journal-backlog`); see `Retry-After`", body = ErrorBody),
    ),
)]
#[post(
    "/v1/matchmaking/challenges/{id}/decline",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn decline_challenge(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let result = state
        .admit_write(&acting)?
        .decline_challenge(acting.tenant, acting.user, challenge_id(&id)?)
        .await;
    challenge_answer(result, &acting)
}

/// The challenger withdraws.
#[utoipa::path(
    tag = "challenges",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Challenge id (`c_…`)"), ActAs),
    responses(
        (status = 200, description = "The challenge, `cancelled`", body = ChallengeView),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: only the challenger may cancel", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CHALLENGE_NOT_PENDING`", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is not ready (recovering, stopping, or its journal failed) or is overloaded (its journal past `--max-journal-backlog`); see `Retry-After`", body = ErrorBody),
    ),
)]
#[delete(
    "/v1/matchmaking/challenges/{id}",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn cancel_challenge(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let result = state
        .admit_write(&acting)?
        .cancel_challenge(acting.tenant, acting.user, challenge_id(&id)?)
        .await;
    challenge_answer(result, &acting)
}
