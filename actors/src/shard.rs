//! The pool-shard actor: owns the waiting players of its queues and runs their waves.
//!
//! A shard is the only writer of its queues' [`WaitingPool`]s and the only code that moves
//! their entries out of `searching` (paired, cancelled, expired) or back into it (a failed
//! game). Everything it decides is published to the shared index before the handler returns,
//! so lookups see it without asking the shard.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResponse};
use tokio::sync::oneshot;

use crate::clock::UnixMillis;
use crate::ids::{EntryId, MatchId};
use crate::index::{
    EntryRecord, EntryState, FastHasher, MatchRecord, MatchSeat, QueueKey, Settled, TenantId,
};
use crate::matching::{Candidate, Expired, Pairing, Waiting, WaitingPool, WaveScratch};
use crate::model::{Color, GameStatus, MatchEvent};
use crate::pools::MatchingParams;
use crate::sequence_table::ascending_order;
use crate::shared::Shared;

/// How long matches count towards a queue's recent figures.
const RECENT_WINDOW_MS: u64 = 60_000;

/// Periodic work a shard schedules for itself; `None` leaves it to manual ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardTimers {
    /// How often to look for pools whose wave is due.
    pub waves: Option<Duration>,
    /// How often to expire entries that waited too long (waves expire them too).
    pub expiry: Option<Duration>,
}

/// One queue of a shard.
#[derive(Debug)]
struct QueueState {
    params: MatchingParams,
    waiting: WaitingPool,
    last_wave_ms: Option<UnixMillis>,
    /// The matches formed in the last minute, by wave, oldest first: a wave's figures arrive
    /// and leave together, so they are kept as one item.
    recent_matches: VecDeque<(UnixMillis, RecentWave)>,
}

/// What the queue summary keeps of one wave's matches.
#[derive(Debug, Default)]
struct RecentWave {
    /// The rating gap of each match.
    gaps: Vec<u16>,
    /// How long each matched player had waited, in milliseconds: a `u32` is 49 days, beyond
    /// any pool's expiry.
    waits_ms: Vec<u32>,
}

impl QueueState {
    fn new(params: MatchingParams) -> Self {
        Self {
            params,
            waiting: WaitingPool::new(),
            last_wave_ms: None,
            recent_matches: VecDeque::new(),
        }
    }

    fn wave_due(&self, now_ms: UnixMillis) -> bool {
        self.last_wave_ms
            .is_none_or(|last| now_ms >= last.saturating_add(self.params.wave_interval_ms))
    }
}

/// The shard actor.
pub(crate) struct PoolShard {
    shared: Arc<Shared>,
    /// Ordered, so that waves run in the same order on every run of a manual clock.
    queues: BTreeMap<QueueKey, QueueState>,
    /// Entries cancelled while their `Enqueue` was still in this shard's mailbox: when it
    /// arrives, it is dropped.
    cancelled_in_flight: HashSet<EntryId, FastHasher>,
    scratch: WaveScratch,
    /// Breaks color ties, together with the match id (see [`low_color`]); from the engine's
    /// seed, so that runs on a manual clock repeat exactly.
    color_ties: ColorTies,
    timers: ShardTimers,
}

impl PoolShard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        seed: u64,
        timers: ShardTimers,
        restored: Vec<(QueueKey, u16, Waiting)>,
    ) -> Self {
        let mut shard = Self {
            shared,
            queues: BTreeMap::new(),
            cancelled_in_flight: HashSet::default(),
            scratch: WaveScratch::default(),
            color_ties: ColorTies::with_seed(seed),
            timers,
        };
        for (queue, rating, waiting) in restored {
            shard.queue(queue).waiting.insert(rating, waiting);
        }
        shard
    }

    fn queue(&mut self, key: QueueKey) -> &mut QueueState {
        let catalog = &self.shared.catalog;
        self.queues
            .entry(key)
            .or_insert_with(|| QueueState::new(catalog.get(key.pool).params))
    }

    fn run_due(&mut self, now_ms: UnixMillis, work: DueWork) -> TickCounts {
        let mut counts = TickCounts::default();
        // Without a working journal, a match or an expiry would be lost on restart.
        if self.shared.writable().is_err() {
            return counts;
        }
        let timer = self.shared.metrics.tick_seconds.start_timer();
        let keys: Vec<QueueKey> = self.queues.keys().copied().collect();
        for key in keys {
            let queue = self.queues.get_mut(&key).expect("key was just listed");
            let (pairs, expired) = if work.waves && (work.force || queue.wave_due(now_ms)) {
                queue.last_wave_ms = Some(now_ms);
                counts.waves += 1;
                let outcome = queue
                    .waiting
                    .run_wave(now_ms, &queue.params, &mut self.scratch);
                (outcome.pairs, outcome.expired)
            } else if work.expiry {
                (Vec::new(), queue.waiting.expire(now_ms, &queue.params))
            } else {
                continue;
            };
            counts.pairs += pairs.len();
            counts.expired += expired.len();
            self.publish_expired(key, &expired);
            self.publish_pairs(key, &pairs, now_ms);
            let queue = self.queues.get_mut(&key).expect("key was just listed");
            while queue
                .recent_matches
                .front()
                .is_some_and(|(at, _)| at + RECENT_WINDOW_MS <= now_ms)
            {
                queue.recent_matches.pop_front();
            }
            // A quiet pool may be empty between players: what it learned of its arrivals is
            // kept while it is recent.
            if queue.waiting.is_empty()
                && queue.recent_matches.is_empty()
                && !queue.waiting.pacer().is_informed(now_ms)
            {
                self.queues.remove(&key);
            }
        }
        if counts.pairs > 0 {
            self.shared.game_jobs_ready.notify_one();
        }
        timer.observe_duration();
        counts
    }

    fn publish_expired(&self, key: QueueKey, expired: &[Expired]) {
        let params = self.shared.catalog.get(key.pool).params;
        let listeners = self.shared.event_listeners();
        let mut settled = Vec::new();
        for gone in expired {
            let id = gone.waiting.id;
            let at_ms = gone.waiting.joined_at_ms.saturating_add(params.max_wait_ms);
            let state = EntryState::Expired { at_ms };
            if let Some(before) = self.shared.index.leave_searching(id, state) {
                self.shared.index.settle(at_ms, Settled::Entry(id));
                if let Some(entry) = listeners.then(|| self.shared.entry_view(id)).flatten() {
                    self.shared.emit(MatchEvent::Expired { entry });
                }
                settled.push((id, EntryRecord { state, ..before }));
            }
        }
        self.shared.record(|| {
            settled
                .iter()
                .map(|(id, after)| self.shared.entry_image(*id, after))
                .collect()
        });
        let metrics = &self.shared.metrics;
        metrics.expired.inc_by(settled.len() as u64);
        metrics.searching(key.pool).sub(settled.len() as i64);
    }

    /// Publishes a wave's pairs. Each match and its players' new states reach the index, then
    /// the journal as one record; only then are the game jobs scheduled, so no game is
    /// attempted for a match that is not journaled. Counters, match ids, game jobs and the
    /// queue's recent figures are taken once per wave rather than once per pair.
    ///
    /// Match ids follow pair order and colors come from what the pool keeps of each player
    /// (or a seeded coin per match id), so a wave is the same whatever the lanes, and the
    /// matches are written before any entry points at them: a reader who sees an entry
    /// matched also finds its match. The players' entries are then marked in one pass in id
    /// order rather than pair by pair: a wave pairs by rating, so its players' entries are
    /// scattered, and visiting them pair by pair would wait for memory at nearly every one.
    /// A big wave's pairs are split into lanes published on every core while the shard waits
    /// for them.
    fn publish_pairs(&mut self, key: QueueKey, pairs: &[Pairing], now_ms: UnixMillis) {
        let Some(first_match) = u64::try_from(pairs.len())
            .ok()
            .filter(|&count| count > 0)
            .map(|count| self.shared.ids.matches.next_block(count).get())
        else {
            return;
        };
        let match_id = |n: usize| nth_match(first_match, n);
        let color_ties = &self.color_ties;
        let shared = &self.shared;
        let index = &shared.index;
        let players: Vec<EntryId> = pairs
            .iter()
            .flat_map(|pairing| [pairing.low.id, pairing.high.id])
            .collect();
        let lane_pairs = pairs.len().div_ceil(publishing_lanes(pairs.len()));
        // Per lane, the pairs (by number in the wave) with a player whose entry was no longer
        // searching: only this shard moves entries out of `searching`, so this never happens
        // unless an invariant broke, but a wave must not match anybody twice.
        let broken: Vec<Vec<usize>> = on_lanes((0..pairs.len()).step_by(lane_pairs), |first| {
            let lane = first..(first + lane_pairs).min(pairs.len());
            index.matches.insert_run(match_id(first), lane.len(), |k| {
                let n = first + k;
                let pairing = &pairs[n];
                let low_color = low_color(
                    color_ties,
                    match_id(n),
                    pairing.low.last_color,
                    pairing.high.last_color,
                );
                let seat = |candidate: &Candidate, color| MatchSeat {
                    entry_id: candidate.id,
                    rating: candidate.rating,
                    color,
                };
                let low = seat(&pairing.low, low_color);
                let high = seat(&pairing.high, low_color.opposite());
                MatchRecord {
                    tenant: key.tenant,
                    pool: key.pool,
                    players: if low_color == Color::White {
                        [low, high]
                    } else {
                        [high, low]
                    },
                    created_at_ms: now_ms,
                    game_status: GameStatus::Pending,
                    game_id: None,
                }
            });
            let lane_players = &players[2 * lane.start..2 * lane.end];
            let mut broken = Vec::new();
            index.entries.update_in_order(
                lane_players,
                &ascending_order(lane_players),
                |position, record| {
                    let n = lane.start + position / 2;
                    match record {
                        Some(record) if record.state.is_searching() => {
                            record.state = EntryState::Matched(match_id(n));
                        }
                        _ => broken.push(n),
                    }
                },
            );
            broken.sort_unstable();
            broken.dedup();
            // Watchers and metrics in the lanes too: a big wave has a million players.
            let rating_gap = shared.metrics.rating_gap.local();
            let wait_seconds = shared.metrics.wait_seconds.local();
            for n in lane.filter(|n| broken.binary_search(n).is_err()) {
                let pairing = &pairs[n];
                for candidate in [&pairing.low, &pairing.high] {
                    index.notify(candidate.id);
                    wait_seconds
                        .observe(now_ms.saturating_sub(candidate.joined_at_ms) as f64 / 1_000.0);
                }
                rating_gap.observe(f64::from(pairing.gap()));
            }
            broken
        });
        let broken: Vec<usize> = broken.into_iter().flatten().collect();
        let unpaired = self.unpublish(&broken, pairs, first_match);
        let matched: Vec<usize> = (0..pairs.len())
            .filter(|n| broken.binary_search(n).is_err())
            .collect();
        let listeners = shared.event_listeners();
        for &n in &matched {
            let match_id = match_id(n);
            let pairing = &pairs[n];
            shared.record(|| {
                std::iter::once(shared.match_image(match_id))
                    .chain([&pairing.low, &pairing.high].map(|candidate| {
                        let after = shared.index.entries.get(candidate.id)?;
                        Some(shared.entry_image(candidate.id, &after))
                    }))
                    .flatten()
                    .collect()
            });
            if let Some(found) = listeners.then(|| shared.match_view(match_id)).flatten() {
                shared.emit(MatchEvent::Matched { found });
            }
        }
        let metrics = &shared.metrics;
        metrics.matches.inc_by(matched.len() as u64);
        metrics.searching(key.pool).sub(2 * matched.len() as i64);
        shared
            .games
            .schedule(key, matched.iter().map(|&n| match_id(n)), now_ms);
        let recent = RecentWave {
            gaps: matched.iter().map(|&n| pairs[n].gap()).collect(),
            waits_ms: matched
                .iter()
                .flat_map(|&n| [&pairs[n].low, &pairs[n].high])
                .map(|candidate| {
                    u32::try_from(now_ms.saturating_sub(candidate.joined_at_ms)).unwrap_or(u32::MAX)
                })
                .collect(),
        };
        let queue = self.queue(key);
        if !recent.gaps.is_empty() {
            queue.recent_matches.push_back((now_ms, recent));
        }
        for candidate in unpaired {
            queue.waiting.insert(
                candidate.rating,
                Waiting {
                    id: candidate.id,
                    joined_at_ms: candidate.joined_at_ms,
                    last_color: candidate.last_color,
                },
            );
        }
    }

    /// Takes back the matches of `broken` pairs (numbers in the wave, ascending), whose ids
    /// follow `first_match` in pair order; returns their players still searching before the
    /// wave, who go back to the pool.
    fn unpublish(&self, broken: &[usize], pairs: &[Pairing], first_match: u64) -> Vec<Candidate> {
        let index = &self.shared.index;
        let mut unpaired = Vec::new();
        for &n in broken {
            let pairing = &pairs[n];
            tracing::error!(low = %pairing.low.id, high = %pairing.high.id, "paired an entry that is not searching; pair dropped");
            let match_id = nth_match(first_match, n);
            index.matches.remove_if(match_id, |_| true);
            for candidate in [&pairing.low, &pairing.high] {
                // Its previous match is not remembered again: the entry was overwritten.
                let reverted = index.entries.update(candidate.id, |record| {
                    let marked = record.state == EntryState::Matched(match_id);
                    if marked {
                        record.state = EntryState::Searching { previous: None };
                    }
                    marked
                });
                if reverted == Some(true) {
                    index.notify(candidate.id);
                    unpaired.push(*candidate);
                }
            }
        }
        unpaired
    }
}

/// Waves with at least this many pairs publish them on every core: below it, starting threads
/// costs more than it saves.
pub(crate) const PARALLEL_MIN_PAIRS: usize = 16_384;

/// How many lanes publish a wave of `pairs` pairs.
fn publishing_lanes(pairs: usize) -> usize {
    if pairs < PARALLEL_MIN_PAIRS {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |cores| cores.get().min(8))
}

/// Runs `work` on each lane, the last on the calling thread and every other on a thread of
/// its own, and returns what each lane returned, in order. A wave's lanes touch disjoint
/// entries and matches, and the tables take concurrent writers.
fn on_lanes<T: Send, R: Send>(
    lanes: impl Iterator<Item = T>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let mut lanes: Vec<T> = lanes.collect();
    let Some(own_lane) = lanes.pop() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = lanes
            .into_iter()
            .map(|lane| scope.spawn(move || work(lane)))
            .collect();
        let own = work(own_lane);
        let mut results: Vec<R> = others
            .into_iter()
            .map(|lane| {
                lane.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.push(own);
        results
    })
}

/// The id of the `n`-th match of a wave whose matches got ids from `first_match` on, in pair
/// order.
fn nth_match(first_match: u64, n: usize) -> MatchId {
    MatchId::new(first_match + n as u64).expect("sequences never yield zero")
}

/// Seeded hashing of match ids, which draws a fair coin per match.
type ColorTies = foldhash::fast::FixedState;

/// The lower-rated player's color (the other gets the opposite) given the colors both had in
/// their previous matches: whoever had white gets black. A tie is a coin drawn from the match
/// id, rather than from a generator advanced pair by pair, so that each publishing lane
/// decides its own pairs and the outcome still does not depend on the lanes.
fn low_color(
    ties: &ColorTies,
    match_id: MatchId,
    low_last: Option<Color>,
    high_last: Option<Color>,
) -> Color {
    match (low_last, high_last) {
        (Some(a), Some(b)) if a != b => a.opposite(),
        (Some(a), None) => a.opposite(),
        (None, Some(b)) => b,
        _ if ties.hash_one(match_id.get()) & 1 == 0 => Color::White,
        _ => Color::Black,
    }
}

impl Actor for PoolShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(every) = self.timers.waves {
            ctx.run_interval(every, |shard, _| {
                let now_ms = shard.shared.clock.now_ms();
                shard.run_due(
                    now_ms,
                    DueWork {
                        waves: true,
                        expiry: false,
                        force: false,
                    },
                );
            });
        }
        if let Some(every) = self.timers.expiry {
            ctx.run_interval(every, |shard, _| {
                let now_ms = shard.shared.clock.now_ms();
                shard.run_due(
                    now_ms,
                    DueWork {
                        waves: false,
                        expiry: true,
                        force: false,
                    },
                );
            });
        }
    }
}

/// A new searching entry for one of the shard's queues.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Enqueue {
    pub(crate) queue: QueueKey,
    pub(crate) rating: u16,
    pub(crate) waiting: Waiting,
}

impl Handler<Enqueue> for PoolShard {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) {
        self.shared.admission.handled(msg.queue);
        if !self.cancelled_in_flight.remove(&msg.waiting.id) {
            self.queue(msg.queue)
                .waiting
                .arrive(msg.rating, msg.waiting);
            self.shared.metrics.searching(msg.queue.pool).inc();
        }
    }
}

/// Withdraw a searching entry. The shard signals `done` itself once handled, so that the
/// answer goes straight to the waiting caller instead of back through the router's mailbox;
/// the caller then reads the entry's state from the index.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Cancel {
    pub(crate) queue: QueueKey,
    pub(crate) rating: u16,
    pub(crate) id: EntryId,
    pub(crate) done: oneshot::Sender<()>,
}

impl Handler<Cancel> for PoolShard {
    type Result = ();

    fn handle(&mut self, msg: Cancel, _: &mut Self::Context) {
        self.shared.admission.handled(msg.queue);
        self.cancel(msg.queue, msg.rating, msg.id);
        // The caller may have gone away (its request was dropped); the cancel stands.
        let _ = msg.done.send(());
    }
}

impl PoolShard {
    fn cancel(&mut self, queue: QueueKey, rating: u16, id: EntryId) {
        let now_ms = self.shared.clock.now_ms();
        let in_pool = self
            .queues
            .get_mut(&queue)
            .and_then(|state| state.waiting.remove(rating, id))
            .is_some();
        let cancelled = EntryState::Cancelled { at_ms: now_ms };
        let Some(before) = self.shared.index.leave_searching(id, cancelled) else {
            return;
        };
        self.shared.record(|| {
            vec![self.shared.entry_image(
                id,
                &EntryRecord {
                    state: cancelled,
                    ..before
                },
            )]
        });
        if in_pool {
            self.shared.metrics.searching(queue.pool).dec();
        } else {
            // Searching in the index but not in the pool: its `Enqueue` is still on the way.
            self.cancelled_in_flight.insert(id);
        }
        self.shared.index.settle(now_ms, Settled::Entry(id));
        self.shared.metrics.cancels.inc();
    }
}

/// A match's game failed for good: the match is marked failed and its players go back to the
/// queue with their original waiting time, all in one journal record, so that recovery never
/// has to finish the decision itself. A player whose user started another search meanwhile
/// cannot go back (one searching entry per user): that entry ends cancelled instead of
/// staying matched to a failed match.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct GameFailed {
    pub(crate) queue: QueueKey,
    pub(crate) match_id: MatchId,
}

impl Handler<GameFailed> for PoolShard {
    type Result = ();

    fn handle(&mut self, msg: GameFailed, _: &mut Self::Context) {
        let now_ms = self.shared.clock.now_ms();
        let shared = Arc::clone(&self.shared);
        let index = &shared.index;
        let Some(record) = index
            .matches
            .update(msg.match_id, |record| {
                (record.game_status == GameStatus::Pending).then(|| {
                    record.game_status = GameStatus::Failed;
                    record.clone()
                })
            })
            .flatten()
        else {
            return;
        };
        let mut after = Vec::with_capacity(2);
        for seat in &record.players {
            let id = seat.entry_id;
            if let Some(searching) = index.return_to_searching(id, msg.match_id) {
                self.queue(msg.queue)
                    .waiting
                    .insert(searching.rating, searching.waiting(id));
                shared.metrics.searching(msg.queue.pool).inc();
                after.push((id, searching));
            } else if let Some(superseded) =
                index.supersede(id, msg.match_id, EntryState::Cancelled { at_ms: now_ms })
            {
                index.settle(now_ms, Settled::Entry(id));
                after.push((id, superseded));
            }
        }
        shared.record(|| {
            std::iter::once(shared.match_image(msg.match_id))
                .flatten()
                .chain(
                    after
                        .iter()
                        .map(|(id, record)| shared.entry_image(*id, record)),
                )
                .collect()
        });
        index.settle(now_ms, Settled::Match(msg.match_id));
    }
}

/// What a tick asks of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DueWork {
    /// Run the waves that are due.
    pub(crate) waves: bool,
    /// Expire entries in queues that get no wave.
    pub(crate) expiry: bool,
    /// Run a wave in every queue whether due or not.
    pub(crate) force: bool,
}

/// What a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, MessageResponse)]
pub struct TickCounts {
    /// Waves run.
    pub waves: usize,
    /// Pairs formed.
    pub pairs: usize,
    /// Entries expired.
    pub expired: usize,
}

impl std::ops::AddAssign for TickCounts {
    fn add_assign(&mut self, other: Self) {
        self.waves += other.waves;
        self.pairs += other.pairs;
        self.expired += other.expired;
    }
}

/// Run due work at a given time (manual ticks).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "TickCounts")]
pub(crate) struct RunDue {
    pub(crate) now_ms: UnixMillis,
    pub(crate) work: DueWork,
}

impl Handler<RunDue> for PoolShard {
    type Result = TickCounts;

    fn handle(&mut self, msg: RunDue, _: &mut Self::Context) -> TickCounts {
        self.run_due(msg.now_ms, msg.work)
    }
}

/// Figures of one queue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueFigures {
    pub(crate) queue: QueueKey,
    /// Current waits in milliseconds, unsorted.
    pub(crate) waits_ms: Vec<u64>,
    /// Rating gaps of the matches of the last minute.
    pub(crate) recent_gaps: Vec<u16>,
    /// Waits of the players matched in the last minute, in milliseconds, unsorted.
    pub(crate) recent_waits_ms: Vec<u32>,
    /// The pool's current estimate of its arrivals per second.
    pub(crate) arrivals_per_s: Option<f64>,
}

impl QueueFigures {
    /// The figures of a queue with no players and no recent matches.
    pub(crate) fn empty(queue: QueueKey) -> Self {
        Self {
            queue,
            waits_ms: Vec::new(),
            recent_gaps: Vec::new(),
            recent_waits_ms: Vec::new(),
            arrivals_per_s: None,
        }
    }
}

/// Report the figures of every queue of a tenant.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<QueueFigures>")]
pub(crate) struct Summarize {
    pub(crate) tenant: TenantId,
    pub(crate) now_ms: UnixMillis,
}

impl Handler<Summarize> for PoolShard {
    type Result = Vec<QueueFigures>;

    fn handle(&mut self, msg: Summarize, _: &mut Self::Context) -> Vec<QueueFigures> {
        self.queues
            .iter()
            .filter(|(key, _)| key.tenant == msg.tenant)
            .map(|(&queue, state)| {
                let recent = || {
                    state
                        .recent_matches
                        .iter()
                        .filter(|(at, _)| at + RECENT_WINDOW_MS > msg.now_ms)
                        .map(|(_, wave)| wave)
                };
                QueueFigures {
                    queue,
                    waits_ms: state
                        .waiting
                        .iter()
                        .map(|(_, waiting)| msg.now_ms.saturating_sub(waiting.joined_at_ms))
                        .collect(),
                    recent_gaps: recent()
                        .flat_map(|wave| wave.gaps.iter().copied())
                        .collect(),
                    recent_waits_ms: recent()
                        .flat_map(|wave| wave.waits_ms.iter().copied())
                        .collect(),
                    arrivals_per_s: state.waiting.pacer().arrivals_per_s(msg.now_ms),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoever_had_white_gets_black_and_ties_are_a_fair_coin_per_match() {
        let ties = ColorTies::with_seed(7);
        let id = |n: u64| MatchId::new(n).unwrap();
        let (white, black) = (Some(Color::White), Some(Color::Black));
        assert_eq!(low_color(&ties, id(1), white, black), Color::Black);
        assert_eq!(low_color(&ties, id(1), black, white), Color::White);
        assert_eq!(low_color(&ties, id(1), white, None), Color::Black);
        assert_eq!(low_color(&ties, id(1), None, white), Color::White);

        let draws = 10_000;
        let low_white = (1..=draws)
            .filter(|&n| low_color(&ties, id(n), None, None) == Color::White)
            .count();
        assert!(
            (4_700..=5_300).contains(&low_white),
            "{low_white} of {draws}"
        );
        assert!(
            (1..=draws)
                .all(|n| low_color(&ties, id(n), white, white)
                    == low_color(&ties, id(n), None, None)),
            "a tie is the same coin whatever made it"
        );
        let other = ColorTies::with_seed(8);
        assert!(
            (1..=64).any(
                |n| low_color(&ties, id(n), None, None) != low_color(&other, id(n), None, None)
            ),
            "the seed changes the coins"
        );
    }
}
