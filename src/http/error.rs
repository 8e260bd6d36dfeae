//! The API's errors: one typed enum, one JSON shape (`{"error": {"code", "message"}}`), also
//! for the errors of actix's own extractors and for unknown routes.

use std::borrow::Cow;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::http::views::{EntryView, ErrorBody, ErrorDetail};
use crate::{EntryStatus, GameCreationError, MatchmakerError, Overload};
use matchwell_actors::ChallengeRefusal;

/// Why a request was refused. A refused request changes nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Malformed input; `field` names the culprit when known.
    #[error("{message}")]
    InvalidRequest {
        field: Option<&'static str>,
        message: String,
    },
    /// No pool matches the request.
    #[error("no such pool: {0}")]
    UnknownPool(String),
    /// No valid token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid token without the right.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such entry, challenge or route for this caller.
    #[error("not found")]
    NotFound,
    /// The route exists, not with this method.
    #[error("method not allowed; allowed: {allowed}")]
    MethodNotAllowed { allowed: String },
    /// The user already has a searching entry.
    #[error("already queued as {id}")]
    AlreadyQueued { id: String, entry: Box<EntryView> },
    /// The entry was matched or has expired.
    #[error("entry is {} and can no longer be cancelled", wire_name(.0))]
    NotCancellable(EntryStatus),
    /// The challenge is no longer pending (or is being accepted right now).
    #[error("{0}")]
    ChallengeNotPending(String),
    /// A pending challenge to the same opponent exists.
    #[error("a pending challenge to this opponent exists: {0}")]
    ChallengeExists(String),
    /// The challenger or the opponent has as many pending challenges as a user may have.
    #[error("{0}")]
    TooManyChallenges(String),
    /// An `Idempotency-Key` sent again with a different body.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    /// The body is over the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// A per-user limit (or the server's limit of event streams) refused the request.
    #[error("{}; retry in {retry_after_s} s", .limit.describe())]
    RateLimited { limit: Limit, retry_after_s: u64 },
    /// A dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// The engine takes no such request now: it is recovering, stopping, or its journal
    /// failed (see `/health/ready`).
    #[error("{0}")]
    NotReady(Cow<'static, str>),
    /// The engine is behind (its shards' mailboxes or its journal past their bounds) and
    /// refused the change at once rather than queue it.
    #[error("the engine is overloaded; retry later ({0})")]
    Overloaded(Overload),
}

/// `Retry-After` of a [`ApiError::NotReady`] or [`ApiError::Overloaded`] answer. Readiness
/// can come at any moment (a recovery that ends, a restart behind a load balancer), a backlog
/// drains in milliseconds once a burst is over, and a refusal costs the server next to
/// nothing, so clients may come back soon.
const UNAVAILABLE_RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The user's write budget.
    Writes,
    /// The user's read budget.
    Reads,
    /// The event streams one user may have open.
    UserStreams,
    /// The event streams the server keeps open.
    Streams,
}

impl Limit {
    /// What was too much, for the refusal's message.
    fn describe(self) -> &'static str {
        match self {
            Self::Writes => "too many writes",
            Self::Reads => "too many reads",
            Self::UserStreams => "too many event streams open for this user",
            Self::Streams => "too many event streams open on this server",
        }
    }
}

impl ApiError {
    /// An invalid field.
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: Some(field),
            message: message.into(),
        }
    }

    /// The stable code of the error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "INVALID_REQUEST",
            Self::UnknownPool(_) => "UNKNOWN_POOL",
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::AlreadyQueued { .. } => "ALREADY_QUEUED",
            Self::NotCancellable(_) => "NOT_CANCELLABLE",
            Self::ChallengeNotPending(_) => "CHALLENGE_NOT_PENDING",
            Self::ChallengeExists(_) => "CHALLENGE_EXISTS",
            Self::TooManyChallenges(_) => "TOO_MANY_CHALLENGES",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Unavailable(_) | Self::NotReady(_) | Self::Overloaded(_) => "UNAVAILABLE",
        }
    }

    /// Maps an engine refusal; `tenant` is the caller's, for the entry an `ALREADY_QUEUED`
    /// answer carries.
    pub(crate) fn from_engine(error: MatchmakerError, tenant: &str) -> Self {
        match error {
            MatchmakerError::Invalid { field, reason } => Self::InvalidRequest {
                field: Some(field),
                message: format!("invalid `{field}`: {reason}"),
            },
            MatchmakerError::UnknownPool(pool) => Self::UnknownPool(pool),
            MatchmakerError::AlreadyQueued(entry) => Self::AlreadyQueued {
                id: entry.id.to_string(),
                entry: Box::new(EntryView::new(&entry, tenant)),
            },
            MatchmakerError::NotFound | MatchmakerError::Challenge(ChallengeRefusal::NotFound) => {
                Self::NotFound
            }
            MatchmakerError::NotCancellable(status) => Self::NotCancellable(status),
            MatchmakerError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            MatchmakerError::Challenge(ChallengeRefusal::WrongParty(party)) => {
                Self::Forbidden(match party {
                    "opponent" => "only the opponent may do this",
                    _ => "only the challenger may do this",
                })
            }
            MatchmakerError::Challenge(ChallengeRefusal::NotPending(status)) => {
                Self::ChallengeNotPending(format!("challenge is {}", wire_name(status)))
            }
            MatchmakerError::Challenge(ChallengeRefusal::BeingAccepted) => {
                Self::ChallengeNotPending("challenge is being accepted".into())
            }
            MatchmakerError::Challenge(ChallengeRefusal::Duplicate(id)) => {
                Self::ChallengeExists(id.to_string())
            }
            MatchmakerError::Challenge(refusal @ ChallengeRefusal::TooManyPending { .. }) => {
                Self::TooManyChallenges(refusal.to_string())
            }
            MatchmakerError::GameService(
                GameCreationError::Transient { reason, .. }
                | GameCreationError::TimedOut(reason)
                | GameCreationError::Permanent(reason),
            ) => Self::Unavailable(format!(
                "the live-game service did not create the game ({reason}); the challenge is still pending"
            )),
            MatchmakerError::Stopped(_) => Self::NotReady("the engine is stopping".into()),
            MatchmakerError::Persistence(reason) => Self::NotReady(reason.into()),
            MatchmakerError::Overloaded(overload) => Self::Overloaded(overload),
        }
    }

    fn body(&self) -> ErrorBody {
        let (field, entry) = match self {
            Self::InvalidRequest { field, .. } => (*field, None),
            Self::AlreadyQueued { entry, .. } => (None, Some(entry)),
            _ => (None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field,
                entry: entry.cloned(),
            },
        }
    }
}

/// The name `value` has in JSON bodies (`"matched"`, `"expired"`, …).
fn wire_name(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::UnknownPool(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyQueued { .. }
            | Self::NotCancellable(_)
            | Self::ChallengeNotPending(_)
            | Self::ChallengeExists(_)
            | Self::TooManyChallenges(_) => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::NotReady(_) | Self::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::RateLimited { retry_after_s, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            Self::NotReady(_) | Self::Overloaded(_) => {
                response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER));
            }
            Self::Unauthorized(_) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            Self::MethodNotAllowed { allowed } => {
                if let Ok(value) = HeaderValue::from_str(allowed) {
                    response.insert_header((header::ALLOW, value));
                }
            }
            _ => {}
        }
        response.json(self.body())
    }
}

/// Turns the JSON extractor's errors into API errors (413 for an oversize body).
pub(crate) fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit: *limit },
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(inner) => ApiError::InvalidRequest {
            field: None,
            message: format!("malformed JSON body: {inner}"),
        },
        other => ApiError::InvalidRequest {
            field: None,
            message: format!("unreadable body: {other}"),
        },
    };
    api.into()
}

/// Turns the query extractor's errors into API errors.
pub(crate) fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidRequest {
        field: None,
        message: format!("malformed query: {error}"),
    }
    .into()
}

/// Turns the path extractor's errors into API errors: a malformed id cannot name anything.
pub(crate) fn path_error(_: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound.into()
}
