//! The pending game-creation jobs, and what paces them: the in-flight limit, backoff with
//! jitter, `Retry-After` and the circuit breaker.
//!
//! [`GameJobs`] is bookkeeping only: it says which jobs may start now and what the outcome of
//! an attempt means for its job. Making the attempts is `game_dispatch`'s work.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

use compact_str::CompactString;
use parking_lot::Mutex;

use crate::breaker::Breaker;
use crate::clock::UnixMillis;
use crate::games::{GameCreationError, GameJob, LiveGameHealth, RetryPolicy};
use crate::ids::MatchId;
use crate::index::{QueueKey, TenantId};
use crate::metrics::Metrics;

/// Longest `Retry-After` honoured: a service that asks for more (or sends a date far ahead)
/// would otherwise hold a match's players in `matched` for as long as it likes.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

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

/// Where the outcome of an attempt came from: only what the service answered (or failed to)
/// moves the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The game creator was called.
    Service,
    /// The engine ended the attempt before calling it (the match is gone, the journal
    /// failed).
    Engine,
}

/// The pending jobs and the state that paces them.
///
/// One mutex over the book: every operation is short, the dispatcher wants jobs in a stable
/// order, and the in-flight count and the breaker must be read and changed together with the
/// jobs they admit, or two dispatchers could both take the last slot. Images of matches read a
/// job while holding the match's slot, so nothing here takes a lock of the index.
pub(crate) struct GameJobs {
    book: Mutex<JobBook>,
    policy: RetryPolicy,
    /// Draws the jitter of a delay from the engine's seed, the match and its failure count
    /// (or the breaker's trip and time) instead of from a generator advanced call by call:
    /// attempts finish in whatever order the service answers, and a run on a manual clock
    /// must still repeat exactly, restarts included.
    draws: foldhash::fast::FixedState,
    metrics: Metrics,
}

/// The book behind [`GameJobs`]'s mutex.
///
/// A wave hands its jobs over as one batch (`batches`), so publishing half a million matches
/// costs one insert instead of one per job, and the batch is taken from its front as slots
/// free up. A wave's matches take one block of consecutive ids, so batches never overlap:
/// keyed by their last id, they are in match order, and the batch holding an id is the first
/// one whose last id is not below it. A job joins `jobs` when it first starts. Due jobs that
/// found no slot stay due and not in flight (`ready`, in match order, and the batches);
/// finding the ones that come due never means looking at every job (`waiting` orders them by
/// due time).
#[derive(Debug)]
struct JobBook {
    /// Jobs never started, by the last match id of their batch.
    batches: BTreeMap<MatchId, FreshJobs>,
    /// The jobs started at least once (or read back from disk).
    jobs: BTreeMap<MatchId, Started>,
    /// `(next_attempt_ms, match)` of every job of `jobs` not in flight and not due yet at the
    /// last look.
    waiting: BTreeSet<(UnixMillis, MatchId)>,
    /// Jobs of `jobs` that are due and not in flight.
    ready: BTreeSet<MatchId>,
    /// Attempts running.
    in_flight: usize,
    /// Jobs not finished.
    pending: usize,
    /// Jobs not finished, by queue: what the queue summary shows.
    by_queue: HashMap<QueueKey, usize>,
    breaker: Breaker,
}

/// A wave's jobs not started yet, due at once: a wave schedules them at its own time.
#[derive(Debug)]
struct FreshJobs {
    /// The wave's queue.
    queue: QueueKey,
    /// The wave's time, when they fell due.
    scheduled_ms: UnixMillis,
    /// Ascending, never empty; taken from the front.
    match_ids: VecDeque<MatchId>,
}

impl FreshJobs {
    fn job(&self) -> GameJob {
        GameJob {
            failed_attempts: 0,
            next_attempt_ms: self.scheduled_ms,
            in_flight: false,
        }
    }

    fn first(&self) -> MatchId {
        *self.match_ids.front().expect("batches are never empty")
    }
}

/// A job that started at least once, with its queue, which the per-queue counts need when it
/// finishes.
#[derive(Debug, Clone, Copy)]
struct Started {
    job: GameJob,
    queue: QueueKey,
}

impl JobBook {
    /// Counts `jobs` more pending in `queue`.
    fn add_pending(&mut self, queue: QueueKey, jobs: usize) {
        self.pending += jobs;
        *self.by_queue.entry(queue).or_default() += jobs;
    }

    /// Counts a job of `queue` as finished.
    fn finished(&mut self, queue: QueueKey) {
        self.pending -= 1;
        if let MapEntry::Occupied(mut count) = self.by_queue.entry(queue) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    /// The batch holding `match_id`, if any.
    fn batch_of(&self, match_id: MatchId) -> Option<&FreshJobs> {
        let (_, batch) = self.batches.range(match_id..).next()?;
        batch
            .match_ids
            .binary_search(&match_id)
            .is_ok()
            .then_some(batch)
    }

    /// Starts the next due job in match order, if any.
    fn start_next(&mut self) -> Option<MatchId> {
        let retry = self.ready.first().copied();
        let fresh = self
            .batches
            .first_key_value()
            .map(|(_, batch)| batch.first());
        match (retry, fresh) {
            (None, None) => None,
            (Some(retry), fresh) if fresh.is_none_or(|fresh| retry < fresh) => {
                self.ready.remove(&retry);
                let started = self.jobs.get_mut(&retry).expect("ready jobs are started");
                started.job.in_flight = true;
                Some(retry)
            }
            _ => {
                let mut first = self.batches.first_entry().expect("a batch was seen");
                let batch = first.get_mut();
                let match_id = batch.match_ids.pop_front().expect("never empty");
                let started = Started {
                    job: GameJob {
                        in_flight: true,
                        ..batch.job()
                    },
                    queue: batch.queue,
                };
                if batch.match_ids.is_empty() {
                    first.remove();
                }
                self.jobs.insert(match_id, started);
                Some(match_id)
            }
        }
    }
}

impl GameJobs {
    /// An empty book paced by `policy`, drawing jitter from `seed`, reporting to `metrics`.
    pub(crate) fn new(policy: RetryPolicy, seed: u64, metrics: Metrics) -> Self {
        let jobs = Self {
            book: Mutex::new(JobBook {
                batches: BTreeMap::new(),
                jobs: BTreeMap::new(),
                waiting: BTreeSet::new(),
                ready: BTreeSet::new(),
                in_flight: 0,
                pending: 0,
                by_queue: HashMap::new(),
                breaker: Breaker::new(policy.breaker_threshold),
            }),
            policy,
            draws: foldhash::fast::FixedState::with_seed(seed),
            metrics,
        };
        jobs.report(&jobs.book.lock(), 0);
        jobs
    }

    /// How the jobs are paced.
    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Schedules a job for each of `match_ids` of `queue`, due at `due_ms`: a wave's
    /// matches as one batch.
    pub(crate) fn schedule(
        &self,
        queue: QueueKey,
        match_ids: impl IntoIterator<Item = MatchId>,
        due_ms: UnixMillis,
    ) {
        let mut match_ids: Vec<MatchId> = match_ids.into_iter().collect();
        // A wave's ids come in order already; the sort then only confirms it.
        match_ids.sort_unstable();
        let (Some(&first), Some(&last)) = (match_ids.first(), match_ids.last()) else {
            return;
        };
        let count = match_ids.len();
        let mut book = self.book.lock();
        debug_assert!(
            book.batches
                .range(first..)
                .next()
                .is_none_or(|(_, next)| next.first() > last),
            "a wave's matches are one block of ids, apart from every other wave's"
        );
        book.batches.insert(
            last,
            FreshJobs {
                queue,
                scheduled_ms: due_ms,
                match_ids: match_ids.into(),
            },
        );
        book.add_pending(queue, count);
        self.report(&book, due_ms);
    }

    /// Puts back the job of `match_id` of `queue`, read from disk. Recovery calls it once per
    /// pending match, before any wave schedules jobs.
    pub(crate) fn restore(&self, queue: QueueKey, match_id: MatchId, job: GameJob) {
        let mut book = self.book.lock();
        debug_assert!(
            !book.jobs.contains_key(&match_id) && book.batch_of(match_id).is_none(),
            "a job is restored once"
        );
        let job = GameJob {
            in_flight: false,
            ..job
        };
        book.jobs.insert(match_id, Started { job, queue });
        book.waiting.insert((job.next_attempt_ms, match_id));
        book.add_pending(queue, 1);
        self.report(&book, job.next_attempt_ms);
    }

    /// The pending job of `match_id`, if any.
    pub(crate) fn job(&self, match_id: MatchId) -> Option<GameJob> {
        let book = self.book.lock();
        book.jobs
            .get(&match_id)
            .map(|started| started.job)
            .or_else(|| book.batch_of(match_id).map(FreshJobs::job))
    }

    /// Marks due jobs as in flight, as many as the in-flight limit and the circuit breaker
    /// allow at `now_ms`, and returns their match ids in match order. The due jobs left over
    /// stay due, for a later call once slots are free.
    pub(crate) fn start_due(&self, now_ms: UnixMillis) -> Vec<MatchId> {
        let mut book = self.book.lock();
        let book = &mut *book;
        while let Some(&(due_ms, match_id)) = book.waiting.first() {
            if due_ms > now_ms {
                break;
            }
            book.waiting.pop_first();
            book.ready.insert(match_id);
        }
        let free = book
            .breaker
            .allowance(now_ms, self.policy.max_in_flight)
            .saturating_sub(book.in_flight);
        let started: Vec<MatchId> = std::iter::from_fn(|| book.start_next())
            .take(free)
            .collect();
        book.in_flight += started.len();
        self.report(book, now_ms);
        started
    }

    /// An attempt of `match_id` ended without an outcome (its future was dropped): its job is
    /// due again and its slot free.
    pub(crate) fn release(&self, match_id: MatchId, now_ms: UnixMillis) {
        let mut book = self.book.lock();
        let Some(started) = book.jobs.get_mut(&match_id).filter(|s| s.job.in_flight) else {
            return;
        };
        started.job.in_flight = false;
        book.in_flight -= 1;
        book.ready.insert(match_id);
        self.report(&book, now_ms);
    }

    /// Applies the outcome of an attempt and says what it means.
    pub(crate) fn finish(
        &self,
        match_id: MatchId,
        outcome: Result<CompactString, GameCreationError>,
        source: Source,
        now_ms: UnixMillis,
    ) -> Option<JobVerdict> {
        let mut book = self.book.lock();
        let book = &mut *book;
        let started = book.jobs.get_mut(&match_id)?;
        if std::mem::replace(&mut started.job.in_flight, false) {
            book.in_flight -= 1;
        }
        let retry_after = match &outcome {
            Err(GameCreationError::Transient { retry_after, .. }) => *retry_after,
            _ => None,
        };
        // `now_ms` is cut to the millisecond, so the answer may have come up to a millisecond
        // later than it says: one more keeps a retry from coming before the service's time.
        let asked = retry_after.map_or(Duration::ZERO, |after| {
            after.min(MAX_RETRY_AFTER) + Duration::from_millis(1)
        });
        let not_before = |delay: Duration| {
            let delay_ms = delay.max(asked).as_nanos().div_ceil(1_000_000);
            now_ms.saturating_add(u64::try_from(delay_ms).unwrap_or(u64::MAX))
        };
        if source == Source::Service {
            if matches!(outcome, Ok(_) | Err(GameCreationError::Permanent(_))) {
                book.breaker.answered();
            } else {
                book.breaker.failed(|trips| {
                    let draw = self.draws.hash_one((u64::MAX, trips, now_ms));
                    not_before(self.policy.jittered_backoff(trips, draw))
                });
            }
        }
        let verdict = match outcome {
            Ok(game_id) => JobVerdict::Created(game_id),
            Err(GameCreationError::Permanent(reason)) => JobVerdict::Failed(reason),
            Err(
                GameCreationError::Transient { reason, .. } | GameCreationError::TimedOut(reason),
            ) => {
                let failed_attempts = started.job.failed_attempts + 1;
                if failed_attempts >= self.policy.max_attempts {
                    JobVerdict::Failed(format!(
                        "gave up after {failed_attempts} attempts: {reason}"
                    ))
                } else {
                    let draw = self.draws.hash_one((match_id.get(), failed_attempts));
                    JobVerdict::Retry {
                        failed_attempts,
                        next_attempt_ms: not_before(
                            self.policy.jittered_backoff(failed_attempts, draw),
                        ),
                    }
                }
            }
        };
        match &verdict {
            JobVerdict::Retry {
                failed_attempts,
                next_attempt_ms,
            } => {
                started.job.failed_attempts = *failed_attempts;
                started.job.next_attempt_ms = *next_attempt_ms;
                book.waiting.insert((*next_attempt_ms, match_id));
            }
            JobVerdict::Created(_) | JobVerdict::Failed(_) => {
                let queue = started.queue;
                book.jobs.remove(&match_id);
                book.finished(queue);
            }
        }
        self.report(book, now_ms);
        Some(verdict)
    }

    /// Earliest time a job not in flight is due, if any; a time already past when some are
    /// due and wait for a slot. Walks the due jobs: for tests and simulations.
    pub(crate) fn next_due(&self) -> Option<UnixMillis> {
        let book = self.book.lock();
        let fresh = book.batches.values().map(|batch| batch.scheduled_ms);
        let ready = book
            .ready
            .iter()
            .map(|id| book.jobs[id].job.next_attempt_ms);
        let waiting = book.waiting.first().map(|&(due_ms, _)| due_ms);
        fresh.chain(ready).chain(waiting).min()
    }

    /// Jobs not finished, by queue of `tenant`.
    pub(crate) fn pending_in(&self, tenant: TenantId) -> Vec<(QueueKey, usize)> {
        let book = self.book.lock();
        book.by_queue
            .iter()
            .filter(|(queue, _)| queue.tenant == tenant)
            .map(|(&queue, &count)| (queue, count))
            .collect()
    }

    /// How the service looks from here at `now_ms`.
    pub(crate) fn health(&self, now_ms: UnixMillis) -> LiveGameHealth {
        let book = self.book.lock();
        LiveGameHealth {
            reachable: book.breaker.reachable(),
            circuit: book.breaker.state(now_ms),
            pending_jobs: book.pending,
            in_flight: book.in_flight,
        }
    }

    /// Sets the gauges from `book`; under its lock, so that they never go back to an older
    /// figure.
    fn report(&self, book: &JobBook, now_ms: UnixMillis) {
        let metrics = &self.metrics;
        metrics.game_jobs_pending.set(book.pending as i64);
        metrics.game_jobs_in_flight.set(book.in_flight as i64);
        metrics.circuit(book.breaker.state(now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::games::CircuitState;
    use crate::pools::{PoolCatalog, PoolId};

    fn id(n: u64) -> MatchId {
        MatchId::new(n).unwrap()
    }

    const QUEUE: QueueKey = QueueKey {
        tenant: TenantId(0),
        pool: PoolId(0),
    };

    fn book(policy: RetryPolicy) -> GameJobs {
        GameJobs::new(policy, 7, Metrics::unregistered(&PoolCatalog::builtin()))
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_attempts: 3,
            breaker_threshold: 1_000,
            ..RetryPolicy::default()
        }
    }

    fn transient() -> Result<CompactString, GameCreationError> {
        Err(GameCreationError::transient("503"))
    }

    fn retry_at(verdict: Option<JobVerdict>) -> UnixMillis {
        match verdict {
            Some(JobVerdict::Retry {
                next_attempt_ms, ..
            }) => next_attempt_ms,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn transient_failures_retry_after_a_jittered_backoff_until_the_attempts_run_out() {
        let jobs = book(policy());
        jobs.schedule(QUEUE, [id(1)], 0);
        assert_eq!(jobs.start_due(0), vec![id(1)]);
        assert_eq!(
            jobs.start_due(0),
            vec![],
            "a job in flight is not started twice"
        );
        let first = retry_at(jobs.finish(id(1), transient(), Source::Service, 0));
        assert!((1..=100).contains(&first), "{first}");
        assert_eq!(jobs.start_due(first - 1), vec![]);
        assert_eq!(jobs.next_due(), Some(first));
        assert_eq!(jobs.start_due(first), vec![id(1)]);
        let second = retry_at(jobs.finish(id(1), transient(), Source::Service, first));
        assert!((first + 1..=first + 200).contains(&second), "{second}");
        assert_eq!(jobs.job(id(1)).map(|job| job.failed_attempts), Some(2));
        assert_eq!(jobs.start_due(second), vec![id(1)]);
        assert!(matches!(
            jobs.finish(id(1), transient(), Source::Service, second),
            Some(JobVerdict::Failed(reason)) if reason.starts_with("gave up after 3 attempts")
        ));
        assert_eq!(jobs.next_due(), None, "no job is left");
        assert_eq!(jobs.health(second).pending_jobs, 0);
    }

    #[test]
    fn jitter_spreads_jobs_that_failed_together_and_repeats_with_the_seed() {
        let run = |seed| {
            let jobs = GameJobs::new(
                policy(),
                seed,
                Metrics::unregistered(&PoolCatalog::builtin()),
            );
            jobs.schedule(QUEUE, (1..=200).map(id), 0);
            let mut delays = Vec::new();
            loop {
                let started = jobs.start_due(0);
                if started.is_empty() {
                    return delays;
                }
                for match_id in started {
                    delays.push(retry_at(jobs.finish(
                        match_id,
                        transient(),
                        Source::Service,
                        0,
                    )));
                }
            }
        };
        let delays = run(7);
        assert_eq!(delays, run(7), "the same seed draws the same delays");
        assert_ne!(delays, run(8), "another seed draws others");
        assert!(delays.iter().all(|delay| (1..=100).contains(delay)));
        let quarters = delays.iter().fold([0; 4], |mut quarters, delay| {
            quarters[((delay - 1) / 25) as usize] += 1;
            quarters
        });
        assert!(
            quarters.iter().all(|&n| n >= 25),
            "200 delays spread over the ceiling: {quarters:?}"
        );
    }

    #[test]
    fn retry_after_holds_the_job_back_at_least_that_long_and_at_most_an_hour() {
        let jobs = book(policy());
        jobs.schedule(QUEUE, [id(1), id(2)], 0);
        assert_eq!(jobs.start_due(0).len(), 2);
        let asked = GameCreationError::retry_after("429", Duration::from_secs(2));
        let first = retry_at(jobs.finish(id(1), Err(asked), Source::Service, 10));
        assert_eq!(
            first, 2_011,
            "2 s (and the millisecond the clock may lag) is longer than any backoff"
        );
        let greedy = GameCreationError::retry_after("503", Duration::from_secs(86_400));
        let second = retry_at(jobs.finish(id(2), Err(greedy), Source::Service, 10));
        assert_eq!(second, 11 + MAX_RETRY_AFTER.as_millis() as u64);
        let fraction = GameCreationError::retry_after("429", Duration::from_micros(1_500_001));
        jobs.schedule(QUEUE, [id(3)], 0);
        assert_eq!(jobs.start_due(0), vec![id(3)]);
        let third = retry_at(jobs.finish(id(3), Err(fraction), Source::Service, 10));
        assert_eq!(
            third,
            10 + 1_502,
            "a fraction of a millisecond counts as a whole one"
        );
    }

    #[test]
    fn no_more_than_the_limit_run_and_due_jobs_wait_in_match_order() {
        let jobs = book(RetryPolicy {
            max_in_flight: 3,
            ..policy()
        });
        jobs.schedule(QUEUE, (10..=19).map(id), 0);
        jobs.schedule(QUEUE, (1..=5).map(id), 0);
        assert_eq!(jobs.start_due(0), vec![id(1), id(2), id(3)]);
        assert_eq!(jobs.start_due(0), vec![], "every slot is taken");
        assert_eq!(jobs.health(0).in_flight, 3);
        assert_eq!(
            jobs.job(id(4)),
            Some(GameJob {
                failed_attempts: 0,
                next_attempt_ms: 0,
                in_flight: false
            }),
            "due, not in flight"
        );
        // Job 2 fails and comes back due before 4 and 5 are done: it goes first again.
        let retry = retry_at(jobs.finish(id(2), transient(), Source::Service, 0));
        assert_eq!(jobs.start_due(0), vec![id(4)]);
        jobs.finish(id(1), Ok("g1".into()), Source::Service, retry);
        assert_eq!(jobs.start_due(retry), vec![id(2)]);
        jobs.finish(id(3), Ok("g3".into()), Source::Service, retry);
        jobs.finish(id(4), Ok("g4".into()), Source::Service, retry);
        assert_eq!(jobs.start_due(retry), vec![id(5), id(10)]);
        // An attempt dropped before it ended gives its slot back; its job is due again.
        jobs.release(id(10), retry);
        assert_eq!(jobs.health(retry).in_flight, 2);
        assert_eq!(jobs.start_due(retry), vec![id(10)]);
        assert_eq!(jobs.health(retry).pending_jobs, 12);
        assert_eq!(jobs.pending_in(TenantId(0)), vec![(QUEUE, 12)]);
        assert_eq!(jobs.pending_in(TenantId(1)), vec![]);
    }

    #[test]
    fn a_wave_of_half_a_million_jobs_is_scheduled_at_once_and_taken_from_its_front() {
        let jobs = book(policy());
        let wave = 500_000;
        jobs.schedule(QUEUE, (1..=wave).map(id), 0);
        assert_eq!(jobs.job(id(wave)).map(|job| job.in_flight), Some(false));
        let first = jobs.start_due(0);
        assert_eq!(first, (1..=64).map(id).collect::<Vec<_>>());
        assert_eq!(jobs.job(id(64)).map(|job| job.in_flight), Some(true));
        assert_eq!(jobs.job(id(65)).map(|job| job.in_flight), Some(false));
        assert_eq!(jobs.health(0).pending_jobs, wave as usize);
    }

    #[test]
    fn restored_jobs_wait_for_their_time_and_finished_ones_leave() {
        let jobs = book(policy());
        let restored = GameJob {
            failed_attempts: 2,
            next_attempt_ms: 80,
            in_flight: true,
        };
        jobs.restore(QUEUE, id(7), restored);
        jobs.schedule(QUEUE, (10..=12).map(id), 50);
        assert_eq!(
            jobs.job(id(7)),
            Some(GameJob {
                in_flight: false,
                ..restored
            }),
            "an attempt is never in flight after a restart"
        );
        assert_eq!(jobs.job(id(13)), None);
        assert_eq!(jobs.next_due(), Some(50));
        assert_eq!(jobs.start_due(79), (10..=12).map(id).collect::<Vec<_>>());
        assert_eq!(jobs.next_due(), Some(80));
        assert_eq!(jobs.start_due(80), vec![id(7)]);
        assert_eq!(
            jobs.finish(id(7), Ok("g".into()), Source::Service, 80),
            Some(JobVerdict::Created("g".into()))
        );
        assert_eq!(
            jobs.finish(
                id(10),
                Err(GameCreationError::Permanent("400".into())),
                Source::Service,
                80
            ),
            Some(JobVerdict::Failed("400".into()))
        );
        assert_eq!(
            jobs.finish(id(10), Ok("late".into()), Source::Service, 80),
            None
        );
        assert_eq!(jobs.health(80).pending_jobs, 2);
    }

    #[test]
    fn an_open_circuit_holds_the_backlog_and_probes_one_at_a_time() {
        let jobs = book(RetryPolicy {
            breaker_threshold: 2,
            max_attempts: 100,
            ..policy()
        });
        jobs.schedule(QUEUE, (1..=100).map(id), 0);
        assert_eq!(jobs.start_due(0).len(), 64);
        for n in 1..=64 {
            jobs.finish(id(n), transient(), Source::Service, 0);
        }
        let health = jobs.health(0);
        assert_eq!(
            (health.circuit, health.reachable),
            (CircuitState::Open, false)
        );
        assert_eq!(jobs.start_due(0), vec![], "the backlog waits while open");
        let probe_at = (1..=1_000)
            .find(|&t| jobs.health(t).circuit == CircuitState::HalfOpen)
            .expect("the circuit half-opens within the backoff ceiling");
        assert!(probe_at <= 100, "{probe_at}");
        let probe = jobs.start_due(probe_at);
        assert_eq!(probe.len(), 1, "one probe");
        assert_eq!(
            jobs.start_due(probe_at),
            vec![],
            "and nothing else while it runs"
        );
        // What the engine ends itself says nothing of the service.
        jobs.finish(
            probe[0],
            Err(GameCreationError::transient("journal failed")),
            Source::Engine,
            probe_at,
        );
        assert_eq!(jobs.health(probe_at).circuit, CircuitState::HalfOpen);
        let probe = jobs.start_due(probe_at);
        assert_eq!(probe.len(), 1);
        jobs.finish(probe[0], Ok("g".into()), Source::Service, probe_at);
        let health = jobs.health(probe_at);
        assert_eq!(
            (health.circuit, health.reachable),
            (CircuitState::Closed, true)
        );
        assert_eq!(
            jobs.start_due(u64::MAX).len(),
            64,
            "closed: up to the limit at once"
        );
    }
}
