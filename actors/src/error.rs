//! The typed errors of the matchmaker's public API.

use crate::admission::Overload;
use crate::challenges::ChallengeRefusal;
use crate::games::GameCreationError;
use crate::model::{Entry, EntryStatus};
use crate::pools::PoolSpecError;
use crate::router::ActorsStopped;

/// Why a matchmaker operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatchmakerError {
    /// A field of the request is malformed or out of range.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No pool matches the request.
    #[error("no such pool: {0}")]
    UnknownPool(String),
    /// The user already has a searching entry in this tenant.
    #[error("already queued as {}", .0.id)]
    AlreadyQueued(Box<Entry>),
    /// The idempotency key was used before for a different request (another pool or rating).
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// No such entry or challenge for this caller.
    #[error("not found")]
    NotFound,
    /// The entry has been paired or has expired.
    #[error("entry is {0:?} and can no longer be cancelled")]
    NotCancellable(EntryStatus),
    /// A challenge transition was refused.
    #[error(transparent)]
    Challenge(#[from] ChallengeRefusal),
    /// The live-game service did not create the game.
    #[error("live-game service: {0}")]
    GameService(#[from] GameCreationError),
    /// The engine is shutting down.
    #[error(transparent)]
    Stopped(#[from] ActorsStopped),
    /// The journal failed; the engine accepts no more changes until it is restarted.
    #[error("persistence failed, changes are refused: {0}")]
    Persistence(String),
    /// The engine is behind and refused the change rather than queue it; it may be sent
    /// again a moment later.
    #[error("overloaded, retry later: {0}")]
    Overloaded(#[from] Overload),
}

impl MatchmakerError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<(&'static str, PoolSpecError)> for MatchmakerError {
    fn from((field, error): (&'static str, PoolSpecError)) -> Self {
        Self::invalid(field, error.to_string())
    }
}

/// Longest user id accepted.
pub const MAX_USER_ID_LEN: usize = 64;

/// Longest tenant name accepted.
pub const MAX_TENANT_LEN: usize = 64;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Checks an identifier-like string: not empty, at most `max_len` characters, no control
/// characters and no surrounding white space. Characters rather than bytes, as JSON Schema's
/// `maxLength` counts them, so that the OpenAPI document states the same limit.
pub fn check_name(field: &'static str, text: &str, max_len: usize) -> Result<(), MatchmakerError> {
    if text.is_empty() {
        return Err(MatchmakerError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > max_len {
        return Err(MatchmakerError::invalid(
            field,
            format!("must be at most {max_len} characters"),
        ));
    }
    if text.chars().any(char::is_control) || text.trim() != text {
        return Err(MatchmakerError::invalid(
            field,
            "must not contain control characters or surrounding spaces",
        ));
    }
    Ok(())
}
