//! Creating games: the [`GameCreator`] trait, what it is asked and how it fails, and how
//! failed attempts are retried.
//!
//! When a pair is formed the engine asks a [`GameCreator`] for a game. That is a job: it is
//! remembered until it succeeds or fails for good, retried with exponential backoff on
//! transient failures, and always sent with the match id as idempotency key, so a retry (or a
//! retry after a restart) never creates a second game. When it fails for good the players go
//! back to the queue with their original waiting time. The jobs themselves are kept and paced
//! by the engine (`game_jobs`, `game_dispatch`); this module is what an embedder sees of them.

use std::time::Duration;

use compact_str::CompactString;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::model::Color;
use crate::pools::TimeControl;

/// What the live-game service needs to create a game (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GameRequest {
    /// The match id (`m_…`) or, for an accepted challenge, the challenge id (`c_…`); also the
    /// idempotency key of the request.
    pub match_id: String,
    /// Time control of the game.
    pub time_control: TimeControl,
    /// Variant of the game.
    pub variant: CompactString,
    /// Whether the game is rated.
    pub rated: bool,
    /// The two players, white first.
    pub players: Vec<GamePlayer>,
}

/// One player of a game request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GamePlayer {
    /// The player.
    pub user_id: CompactString,
    /// Their rating in the pool (challenges carry none).
    pub rating: Option<u16>,
    /// Their color.
    pub color: Color,
}

/// Why a game was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameCreationError {
    /// Worth retrying: a 5xx, a 429, a refused connection.
    #[error("transient failure: {reason}")]
    Transient {
        /// What happened.
        reason: String,
        /// The service asked not to be called again before this much time has passed
        /// (`Retry-After`); the job's next attempt waits at least that long.
        retry_after: Option<Duration>,
    },
    /// No answer in time; worth retrying too. The game may exist: the retry's idempotency key
    /// finds it instead of creating another.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// Retrying will not help: the service rejected the request.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl GameCreationError {
    /// A transient failure with no word on when to retry.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A transient failure that the service asked not to retry before `after` has passed.
    pub fn retry_after(reason: impl Into<String>, after: Duration) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: Some(after),
        }
    }
}

/// Creates games for matches and accepted challenges.
///
/// Implementations must be idempotent on `request.match_id`: the engine may send the same
/// request again after a timeout or a restart.
pub trait GameCreator: Send + Sync + 'static {
    /// Creates the game and returns its id.
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>>;
}

/// The default creator when no live-game service is configured: the game id is derived from
/// the match id (`m_1f` → `g_m_1f`), so it is unique and a retry yields the same id.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalGameIds;

impl GameCreator for LocalGameIds {
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        Box::pin(std::future::ready(Ok(compact_str::format_compact!(
            "g_{}",
            request.match_id
        ))))
    }
}

/// How game-creation jobs are paced and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Longest delay before the first retry; the ceiling doubles at every further retry.
    pub first_backoff: Duration,
    /// Ceiling of the delay between two attempts.
    pub max_backoff: Duration,
    /// Attempts before the job fails for good.
    pub max_attempts: u32,
    /// Attempts running at once, however many jobs are due (at least one).
    pub max_in_flight: usize,
    /// Longest wait for the game creator's answer; then the attempt counts as timed out.
    pub attempt_timeout: Duration,
    /// Consecutive transient failures (timeouts included) that open the circuit: the backlog
    /// then waits, and one attempt at a time probes the service until one gets an answer.
    pub breaker_threshold: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_attempts: 8,
            max_in_flight: 64,
            attempt_timeout: Duration::from_secs(5),
            breaker_threshold: 5,
        }
    }
}

impl RetryPolicy {
    /// Ceiling of the delay after `failed_attempts` failures: `first_backoff`, doubled at
    /// every further failure, up to `max_backoff`. The delay itself is drawn below it (full
    /// jitter), so that jobs that failed together do not come back together.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let doubled = self
            .first_backoff
            .saturating_mul(1 << failed_attempts.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
    }

    /// The delay after `failed_attempts` failures for a uniform random `draw`: from 1 ms up to
    /// [`Self::backoff`], never zero, so that a retry is never due at the instant it failed.
    pub(crate) fn jittered_backoff(&self, failed_attempts: u32, draw: u64) -> Duration {
        let ceiling_ms = u64::try_from(self.backoff(failed_attempts).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(1 + draw % ceiling_ms)
    }
}

/// One pending game-creation job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameJob {
    /// Failed attempts so far.
    pub failed_attempts: u32,
    /// Earliest time of the next attempt.
    pub next_attempt_ms: UnixMillis,
    /// Whether an attempt is running now (never persisted as true: after a restart the
    /// attempt is simply made again, under the same idempotency key).
    #[serde(skip)]
    pub in_flight: bool,
}

/// The circuit breaker in front of the live-game service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Attempts run up to the in-flight limit.
    Closed,
    /// The service failed repeatedly: one attempt at a time probes it.
    HalfOpen,
    /// The service failed repeatedly: no attempt until the next probe is due.
    Open,
}

impl CircuitState {
    /// Every state, in the order of [`Self::as_str`]'s metric labels.
    pub(crate) const ALL: [Self; 3] = [Self::Closed, Self::HalfOpen, Self::Open];

    /// `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// How the game dispatcher sees the live-game service. Matching goes on whatever it says;
/// games for the matches formed meanwhile are created once the service answers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveGameHealth {
    /// Whether the last attempt got an answer: false after a transient failure or a timeout,
    /// true again once a game is created or a request is refused for good (true before any
    /// attempt).
    pub reachable: bool,
    /// The circuit breaker's state.
    pub circuit: CircuitState,
    /// Game jobs not finished yet, running or waiting.
    pub pending_jobs: usize,
    /// Attempts running now.
    pub in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_ceiling_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
            ..RetryPolicy::default()
        };
        let delays: Vec<_> = (1..=6).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jittered_delays_stay_within_one_millisecond_and_the_ceiling_and_spread_over_it() {
        let policy = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
            ..RetryPolicy::default()
        };
        let draws = [0, 1, 99, 100, 12_345, u64::MAX - 1, u64::MAX];
        for failed in 1..=8 {
            let ceiling = policy.backoff(failed);
            for draw in draws {
                let delay = policy.jittered_backoff(failed, draw);
                assert!(
                    Duration::from_millis(1) <= delay && delay <= ceiling,
                    "{failed} failures, draw {draw}: {delay:?} above {ceiling:?}"
                );
            }
            assert_eq!(policy.jittered_backoff(failed, 0), Duration::from_millis(1));
            assert_eq!(
                policy.jittered_backoff(failed, ceiling.as_millis() as u64 - 1),
                ceiling
            );
        }
        let no_backoff = RetryPolicy {
            first_backoff: Duration::ZERO,
            ..policy
        };
        assert_eq!(
            no_backoff.jittered_backoff(1, 7),
            Duration::from_millis(1),
            "a retry is never due at the instant it failed"
        );
    }

    #[tokio::test]
    async fn local_game_ids_are_derived_from_the_match() {
        let request = GameRequest {
            match_id: "m_1f".into(),
            time_control: TimeControl::new(3, 2).unwrap(),
            variant: "standard".into(),
            rated: true,
            players: vec![],
        };
        assert_eq!(
            LocalGameIds.create_game(request.clone()).await.unwrap(),
            "g_m_1f"
        );
        assert_eq!(
            LocalGameIds.create_game(request).await.unwrap(),
            "g_m_1f",
            "a retry yields the same game"
        );
    }
}
