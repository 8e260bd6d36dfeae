//! Creating games: the [`GameCreator`] trait and the durable jobs that drive it.
//!
//! When a pair is formed the engine asks a [`GameCreator`] for a game. That is a job: it is
//! remembered until it succeeds or fails for good, retried with exponential backoff on
//! transient failures, and always sent with the match id as idempotency key, so a retry (or a
//! retry after a restart) never creates a second game. When it fails for good the players go
//! back to the queue with their original waiting time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use compact_str::CompactString;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::ids::MatchId;
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
    /// Worth retrying: a timeout, a 5xx, a 429, a refused connection.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Retrying will not help: the service rejected the request.
    #[error("permanent failure: {0}")]
    Permanent(String),
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

/// How game-creation jobs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles at every further retry.
    pub first_backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
    /// Attempts before the job fails for good.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// Delay after `failed_attempts` failures.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let doubled = self
            .first_backoff
            .saturating_mul(1 << failed_attempts.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
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

/// What the outcome of an attempt means for its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobVerdict {
    /// The game exists.
    Created(CompactString),
    /// Try again at this time.
    Retry {
        failed_attempts: u32,
        next_attempt_ms: UnixMillis,
    },
    /// Give up: put the players back in the queue.
    Failed(String),
}

/// The pending jobs.
///
/// One mutex over the book: every operation is short, a dispatcher wants jobs in a stable
/// order, and after a big wave there are hundreds of thousands of them. A wave hands its jobs
/// over as one batch (`fresh`), so publishing half a million matches costs one push instead of
/// an ordered insert each; a job joins the ordered maps when it first starts. Finding the due
/// ones never means looking at every job: `waiting` orders the started jobs not in flight by
/// due time. Images of matches read a job while holding the match's slot, so nothing here
/// takes a lock of the index.
#[derive(Debug, Default)]
pub(crate) struct GameJobs {
    book: Mutex<JobBook>,
}

#[derive(Debug, Default)]
struct JobBook {
    /// Batches of jobs never started, each due at one time, match ids ascending.
    fresh: Vec<FreshJobs>,
    /// The jobs started at least once (or read back from disk).
    jobs: BTreeMap<MatchId, GameJob>,
    /// `(next_attempt_ms, match)` of every job of `jobs` not in flight.
    waiting: BTreeSet<(UnixMillis, MatchId)>,
}

#[derive(Debug)]
struct FreshJobs {
    due_ms: UnixMillis,
    match_ids: Vec<MatchId>,
}

impl FreshJobs {
    fn job(&self) -> GameJob {
        GameJob {
            failed_attempts: 0,
            next_attempt_ms: self.due_ms,
            in_flight: false,
        }
    }
}

impl JobBook {
    fn insert(&mut self, match_id: MatchId, job: GameJob) {
        for batch in &mut self.fresh {
            if let Ok(found) = batch.match_ids.binary_search(&match_id) {
                batch.match_ids.remove(found);
            }
        }
        if let Some(replaced) = self.jobs.insert(match_id, job) {
            self.waiting.remove(&(replaced.next_attempt_ms, match_id));
        }
        self.waiting.insert((job.next_attempt_ms, match_id));
    }
}

impl GameJobs {
    /// Schedules a job for each of `match_ids`, due at `due_ms`: a wave's matches as one
    /// batch.
    pub(crate) fn schedule(
        &self,
        match_ids: impl IntoIterator<Item = MatchId>,
        due_ms: UnixMillis,
    ) {
        let mut match_ids: Vec<MatchId> = match_ids.into_iter().collect();
        if match_ids.is_empty() {
            return;
        }
        // A wave's ids come in order already; the sort then only confirms it.
        match_ids.sort_unstable();
        self.book.lock().fresh.push(FreshJobs { due_ms, match_ids });
    }

    /// Puts back a job read from disk.
    pub(crate) fn restore(&self, match_id: MatchId, job: GameJob) {
        self.book.lock().insert(
            match_id,
            GameJob {
                in_flight: false,
                ..job
            },
        );
    }

    /// The pending job of `match_id`, if any.
    pub(crate) fn job(&self, match_id: MatchId) -> Option<GameJob> {
        let book = self.book.lock();
        book.jobs.get(&match_id).copied().or_else(|| {
            book.fresh
                .iter()
                .find(|batch| batch.match_ids.binary_search(&match_id).is_ok())
                .map(FreshJobs::job)
        })
    }

    /// Marks every job due at `now_ms` as in flight and returns their match ids, in match
    /// order.
    pub(crate) fn start_due(&self, now_ms: UnixMillis) -> Vec<MatchId> {
        let mut book = self.book.lock();
        let not_due = match now_ms.checked_add(1) {
            Some(later) => book.waiting.split_off(&(later, MatchId::MIN)),
            None => BTreeSet::new(),
        };
        let due = std::mem::replace(&mut book.waiting, not_due);
        let mut started: Vec<MatchId> = due.into_iter().map(|(_, match_id)| match_id).collect();
        for match_id in &started {
            if let Some(job) = book.jobs.get_mut(match_id) {
                job.in_flight = true;
            }
        }
        let (due_batches, later): (Vec<FreshJobs>, Vec<FreshJobs>) =
            std::mem::take(&mut book.fresh)
                .into_iter()
                .partition(|batch| batch.due_ms <= now_ms);
        book.fresh = later;
        for batch in due_batches {
            let job = GameJob {
                in_flight: true,
                ..batch.job()
            };
            // Ascending ids: a batch as big as the book goes in as one bulk build and merge.
            let mut batch_jobs: BTreeMap<MatchId, GameJob> = batch
                .match_ids
                .iter()
                .map(|&match_id| (match_id, job))
                .collect();
            if batch_jobs.len() >= book.jobs.len() {
                book.jobs.append(&mut batch_jobs);
            } else {
                book.jobs.extend(batch_jobs);
            }
            started.extend(batch.match_ids);
        }
        started.sort_unstable();
        started
    }

    /// Applies the outcome of an attempt and says what it means.
    pub(crate) fn finish(
        &self,
        match_id: MatchId,
        outcome: Result<CompactString, GameCreationError>,
        now_ms: UnixMillis,
        policy: &RetryPolicy,
    ) -> Option<JobVerdict> {
        let mut book = self.book.lock();
        let job = book.jobs.get_mut(&match_id)?;
        job.in_flight = false;
        let verdict = match outcome {
            Ok(game_id) => JobVerdict::Created(game_id),
            Err(GameCreationError::Permanent(reason)) => JobVerdict::Failed(reason),
            Err(GameCreationError::Transient(reason)) => {
                let failed_attempts = job.failed_attempts + 1;
                if failed_attempts >= policy.max_attempts {
                    JobVerdict::Failed(format!(
                        "gave up after {failed_attempts} attempts: {reason}"
                    ))
                } else {
                    let backoff_ms = u64::try_from(policy.backoff(failed_attempts).as_millis())
                        .unwrap_or(u64::MAX);
                    JobVerdict::Retry {
                        failed_attempts,
                        next_attempt_ms: now_ms.saturating_add(backoff_ms),
                    }
                }
            }
        };
        match &verdict {
            JobVerdict::Retry {
                failed_attempts,
                next_attempt_ms,
            } => {
                job.failed_attempts = *failed_attempts;
                job.next_attempt_ms = *next_attempt_ms;
                book.waiting.insert((*next_attempt_ms, match_id));
            }
            JobVerdict::Created(_) | JobVerdict::Failed(_) => {
                book.jobs.remove(&match_id);
            }
        }
        Some(verdict)
    }

    /// Earliest time a job not in flight is due, if any.
    pub(crate) fn next_due(&self) -> Option<UnixMillis> {
        let book = self.book.lock();
        let fresh = book.fresh.iter().map(|batch| batch.due_ms);
        let waiting = book.waiting.first().map(|&(due_ms, _)| due_ms);
        fresh.chain(waiting).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MatchId {
        MatchId::new(n).unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
            max_attempts: 10,
        };
        let delays: Vec<_> = (1..=6).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn transient_failures_retry_until_the_attempts_run_out() {
        let jobs = GameJobs::default();
        let policy = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_attempts: 3,
        };
        jobs.schedule([id(1)], 0);
        assert_eq!(jobs.start_due(0), vec![id(1)]);
        assert_eq!(
            jobs.start_due(0),
            vec![],
            "a job in flight is not started twice"
        );
        let failure = || Err(GameCreationError::Transient("503".into()));
        assert_eq!(
            jobs.finish(id(1), failure(), 0, &policy),
            Some(JobVerdict::Retry {
                failed_attempts: 1,
                next_attempt_ms: 100
            })
        );
        assert_eq!(jobs.start_due(99), vec![]);
        assert_eq!(jobs.next_due(), Some(100));
        assert_eq!(jobs.start_due(100), vec![id(1)]);
        assert_eq!(
            jobs.finish(id(1), failure(), 100, &policy),
            Some(JobVerdict::Retry {
                failed_attempts: 2,
                next_attempt_ms: 300
            })
        );
        assert_eq!(jobs.start_due(300), vec![id(1)]);
        assert!(matches!(
            jobs.finish(id(1), failure(), 300, &policy),
            Some(JobVerdict::Failed(_))
        ));
        assert_eq!(jobs.next_due(), None, "no job is left");
    }

    #[test]
    fn only_due_jobs_start_and_each_once() {
        let jobs = GameJobs::default();
        jobs.schedule((1..=1_000).map(id), 50);
        jobs.schedule([id(1_001)], 10);
        // A job read back from disk replaces the scheduled one instead of doubling it.
        jobs.restore(
            id(7),
            GameJob {
                failed_attempts: 2,
                next_attempt_ms: 80,
                in_flight: false,
            },
        );
        assert_eq!(jobs.next_due(), Some(10));
        let unstarted = GameJob {
            failed_attempts: 0,
            next_attempt_ms: 50,
            in_flight: false,
        };
        assert_eq!(jobs.job(id(3)), Some(unstarted));
        assert_eq!(jobs.job(id(7)).map(|job| job.failed_attempts), Some(2));
        assert_eq!(jobs.job(id(5_000)), None);
        assert_eq!(jobs.start_due(9), vec![]);
        assert_eq!(jobs.start_due(10), vec![id(1_001)]);
        assert_eq!(jobs.next_due(), Some(50));
        let started = jobs.start_due(79);
        assert_eq!(started.len(), 999);
        assert!(!started.contains(&id(7)));
        assert!(started.is_sorted());
        let in_flight = GameJob {
            in_flight: true,
            ..unstarted
        };
        assert_eq!(jobs.job(id(3)), Some(in_flight));
        assert_eq!(
            jobs.start_due(79),
            vec![],
            "in flight jobs do not start again"
        );
        assert_eq!(jobs.start_due(u64::MAX), vec![id(7)]);
        assert_eq!(jobs.next_due(), None);
    }

    #[test]
    fn success_and_permanent_failure_end_the_job() {
        let jobs = GameJobs::default();
        let policy = RetryPolicy::default();
        jobs.schedule([id(1), id(2)], 0);
        assert_eq!(jobs.start_due(0), vec![id(1), id(2)]);
        assert_eq!(
            jobs.finish(id(1), Ok("g".into()), 0, &policy),
            Some(JobVerdict::Created("g".into()))
        );
        assert_eq!(
            jobs.finish(
                id(2),
                Err(GameCreationError::Permanent("400".into())),
                0,
                &policy
            ),
            Some(JobVerdict::Failed("400".into()))
        );
        assert_eq!(jobs.finish(id(2), Ok("late".into()), 0, &policy), None);
        assert_eq!(jobs.next_due(), None, "no job is left");
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
