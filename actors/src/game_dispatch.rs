//! Making game-creation attempts: each asks the game creator for one match's game and applies
//! what it answered: the game on the match, a retry later, or, when it failed for good, the
//! players back in the queue. Which jobs may start, and when, is the job book's to say
//! ([`crate::game_jobs`]).

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::clock::UnixMillis;
use crate::game_jobs::{JobVerdict, Source};
use crate::games::{GameCreationError, GamePlayer, GameRequest};
use crate::ids::MatchId;
use crate::index::{QueueKey, Settled};
use crate::metrics::AttemptOutcome;
use crate::model::{GameStatus, MatchEvent};
use crate::router::Router;
use crate::shard::GameFailed;
use crate::shared::Shared;

/// Starts the attempts that the job book lets start at `now_ms` and returns them; each
/// resolves when its attempt is over and its outcome applied.
pub(crate) fn start_due(
    shared: &Arc<Shared>,
    router: &Addr<Router>,
    now_ms: UnixMillis,
) -> Vec<BoxFuture<'static, ()>> {
    shared
        .games
        .start_due(now_ms)
        .into_iter()
        .map(|match_id| {
            let attempt = InFlight {
                shared: Arc::clone(shared),
                match_id,
                ended: false,
            };
            Box::pin(attempt_game(attempt, router.clone())) as BoxFuture<'static, ()>
        })
        .collect()
}

/// Makes every attempt due at `now_ms`, never more at once than the job book allows: as one
/// ends, the due jobs that were waiting for its slot start. Returns how many were made.
pub(crate) async fn run_due(
    shared: &Arc<Shared>,
    router: &Addr<Router>,
    now_ms: UnixMillis,
) -> usize {
    let mut running = FuturesUnordered::new();
    let mut made = 0;
    loop {
        let started = start_due(shared, router, now_ms);
        made += started.len();
        running.extend(started);
        if running.next().await.is_none() {
            return made;
        }
    }
}

/// An attempt between its start and its outcome. Dropped before [`Self::finish`] (whoever
/// polled the attempt stopped, say a manual tick's caller), it gives its slot back and leaves
/// its job due: with a bounded number of slots, a slot kept by an attempt nobody runs would be
/// lost for good.
struct InFlight {
    shared: Arc<Shared>,
    match_id: MatchId,
    ended: bool,
}

impl InFlight {
    /// Applies `outcome` to the job, frees the slot and wakes the dispatcher to fill it.
    fn finish(
        mut self,
        outcome: Result<compact_str::CompactString, GameCreationError>,
        source: Source,
    ) -> Option<JobVerdict> {
        self.ended = true;
        let now_ms = self.shared.clock.now_ms();
        let verdict = self
            .shared
            .games
            .finish(self.match_id, outcome, source, now_ms);
        self.shared.game_jobs_ready.notify_one();
        verdict
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.ended {
            let now_ms = self.shared.clock.now_ms();
            self.shared.games.release(self.match_id, now_ms);
            self.shared.game_jobs_ready.notify_one();
        }
    }
}

/// One game-creation attempt and the application of its outcome.
async fn attempt_game(attempt: InFlight, router: Addr<Router>) {
    let shared = Arc::clone(&attempt.shared);
    let match_id = attempt.match_id;
    let Some(request) = game_request(&shared, match_id) else {
        let gone = GameCreationError::Permanent("match no longer exists".into());
        attempt.finish(Err(gone), Source::Engine);
        return;
    };
    // A game is only ever created for a match that is on disk (under fsync `always`): after a
    // crash the match and its job come back, and the retry reuses the idempotency key.
    if shared.durable().await.is_err() {
        attempt.finish(
            Err(GameCreationError::transient("journal failed")),
            Source::Engine,
        );
        return;
    }
    let timeout = shared.games.policy().attempt_timeout;
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, shared.game_creator.create_game(request))
        .await
        .unwrap_or_else(|_| {
            Err(GameCreationError::TimedOut(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))
        });
    let metrics = &shared.metrics;
    metrics
        .live_game_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics
        .attempt(match &outcome {
            Ok(_) => AttemptOutcome::Created,
            Err(GameCreationError::Transient { .. }) => AttemptOutcome::Transient,
            Err(GameCreationError::TimedOut(_)) => AttemptOutcome::Timeout,
            Err(GameCreationError::Permanent(_)) => AttemptOutcome::Permanent,
        })
        .inc();
    let Some(verdict) = attempt.finish(outcome, Source::Service) else {
        return;
    };
    let game_id = match verdict {
        JobVerdict::Retry {
            failed_attempts,
            next_attempt_ms,
        } => {
            tracing::warn!(%match_id, failed_attempts, next_attempt_ms, "game creation failed; will retry");
            shared.record(|| shared.match_image(match_id).into_iter().collect());
            shared.metrics.game_jobs.with_label_values(&["retry"]).inc();
            return;
        }
        JobVerdict::Created(game_id) => game_id,
        JobVerdict::Failed(reason) => {
            tracing::warn!(%match_id, %reason, "game creation failed for good; players go back to the queue");
            shared
                .metrics
                .game_jobs
                .with_label_values(&["failed"])
                .inc();
            let Some(queue) = shared.index.matches.read(match_id, |record| QueueKey {
                tenant: record.tenant,
                pool: record.pool,
            }) else {
                return;
            };
            // The match's shard marks it failed and puts its players back, as one change.
            // Awaited, so that a manual tick returns with the players back in the queue.
            if router.send(GameFailed { queue, match_id }).await.is_err() {
                tracing::warn!(%match_id, "engine stopping; the players of a failed match were not put back");
            }
            emit_game_event(&shared, match_id);
            return;
        }
    };
    shared
        .metrics
        .game_jobs
        .with_label_values(&["created"])
        .inc();
    let now_ms = shared.clock.now_ms();
    let Some(record) = shared.index.matches.update(match_id, |record| {
        record.game_status = GameStatus::Created;
        record.game_id = Some(game_id);
        record.clone()
    }) else {
        return;
    };
    shared.record(|| shared.match_image(match_id).into_iter().collect());
    shared.index.settle(now_ms, Settled::Match(match_id));
    for player in &record.players {
        shared.index.notify(player.entry_id);
    }
    emit_game_event(&shared, match_id);
}

/// Tells event listeners how game creation for `match_id` ended.
fn emit_game_event(shared: &Shared, match_id: MatchId) {
    if !shared.event_listeners() {
        return;
    }
    if let Some(found) = shared.match_view(match_id) {
        shared.emit(if found.game_status == GameStatus::Created {
            MatchEvent::GameCreated { found }
        } else {
            MatchEvent::GameFailed { found }
        });
    }
}

/// What the game creator is asked for `match_id`, while the match and its players are known.
fn game_request(shared: &Shared, match_id: MatchId) -> Option<GameRequest> {
    let record = shared.index.matches.get(match_id)?;
    let pool = &shared.catalog.get(record.pool).spec;
    Some(GameRequest {
        match_id: match_id.to_string(),
        time_control: pool.time_control,
        variant: pool.variant.clone(),
        rated: pool.rated,
        players: shared
            .index
            .match_players(&record)?
            .into_iter()
            .map(|player| GamePlayer {
                user_id: player.user_id,
                rating: Some(player.rating),
                color: player.color,
            })
            .collect(),
    })
}
