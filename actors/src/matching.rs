//! The pairing algorithm: waiting players in sorted rating buckets, and one wave over them.
//!
//! This module is pure (no actors, no clocks, no locks) so that every rule of SPEC §3 can be
//! unit- and property-tested directly and benchmarked in isolation.
//!
//! # How a wave pairs
//! Two players are acceptable to each other when their rating gap is within both of their
//! current windows. Among acceptable pairings a wave prefers, in order: more pairs, players who
//! have waited more widening steps, smaller rating gaps. It gets there in four passes over the
//! players in rating order, each linear in practice:
//! 1. **Expiry.** Buckets keep their players in joining order, so the expired ones are a prefix
//!    of each bucket and leave without a scan.
//! 2. **Neighbour rounds.** An exact dynamic programme over the sorted list chooses the best set
//!    of non-overlapping *adjacent* pairs. With equal windows an optimal matching only ever pairs
//!    adjacent players, so this round alone is optimal; with unequal windows a wide-window player
//!    may have to reach over narrow-window players who are then paired among themselves, so the
//!    round is repeated over the players left until it pairs no one.
//! 3. **Sweep.** Longest-waiting first, every player still unpaired takes the nearest acceptable
//!    unpaired player. After the rounds unpaired neighbours are more than `initial_window`
//!    apart, so each looks at a handful of them; afterwards no two unpaired players are
//!    acceptable to each other.
//! 4. **Augmenting paths.** From each unpaired player, a short depth-first search looks for a
//!    chain of existing pairs that can be shifted to free a partner: `x ~ y = z ~ u` becomes
//!    `(x, y), (z, u)`. This recovers the crossing and nested pairings the earlier passes miss.
//!
//! The quality test in `tests/quality.rs` compares the result with an exact maximum-weight
//! matching of the same players.

use std::collections::BTreeMap;

use crate::ids::EntryId;
use crate::model::Color;
use crate::pacing::{Pace, PaceScratch, Pacer};
use crate::pools::{MatchingParams, Pacing};

/// One player waiting in a pool, as the pool stores it: 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The queue entry.
    pub id: EntryId,
    /// When the player joined (or, after a restart or a failed game, the time that keeps their
    /// original waiting time).
    pub joined_at_ms: u64,
    /// The player's color in their previous match, if remembered: kept here, so that a wave
    /// decides colors without reading every player's entry.
    pub last_color: Option<Color>,
}

/// A player as one wave sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The queue entry.
    pub id: EntryId,
    /// The player's rating.
    pub rating: u16,
    /// When the player joined.
    pub joined_at_ms: u64,
    /// The player's color in their previous match, if remembered.
    pub last_color: Option<Color>,
    /// Acceptable gap at the time of the wave.
    pub window: u16,
    /// Widening steps completed at the time of the wave: the unit in which "waited longest"
    /// is counted, so that a few hundred milliseconds of waiting never outweigh rating gaps.
    /// Counted up to `u16::MAX` (beyond any pool's expiry in practice), which keeps a
    /// candidate at 24 bytes: a wave scans its candidates several times.
    pub steps: u16,
}

impl Candidate {
    /// Whether `self` and `other` may be paired.
    pub fn accepts(&self, other: &Candidate) -> bool {
        let gap = self.rating.abs_diff(other.rating);
        gap <= self.window.min(other.window)
    }
}

/// Two players paired by a wave; `low.rating <= high.rating`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pairing {
    /// The lower-rated player.
    pub low: Candidate,
    /// The higher-rated player.
    pub high: Candidate,
}

impl Pairing {
    /// Rating gap between the two players.
    pub fn gap(&self) -> u16 {
        self.high.rating - self.low.rating
    }
}

/// An entry that expired, with the rating it was filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The player's rating.
    pub rating: u16,
    /// The entry as the pool stored it.
    pub waiting: Waiting,
}

/// What one wave did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WaveOutcome {
    /// New pairs; both players have left the pool.
    pub pairs: Vec<Pairing>,
    /// Entries that reached `max_wait` and have left the pool.
    pub expired: Vec<Expired>,
}

/// Buffers one wave needs, kept between waves so a wave over a large pool does not allocate.
#[derive(Debug, Default)]
pub struct WaveScratch {
    candidates: Vec<Candidate>,
    /// `mate[i]` is the candidate paired with candidate `i`, or [`UNPAIRED`].
    mate: Vec<u32>,
    active: Vec<u32>,
    best: Vec<Score>,
    /// Quality waves: best saving of the first `k` candidates (see `pair_worthwhile`).
    saving: Vec<f32>,
    pair_ends_here: Vec<bool>,
    by_priority: Vec<u32>,
    /// Stamp of the last augmenting-path search that visited each candidate.
    visited: Vec<u32>,
    /// Quality waves: how each candidate stands.
    pace: PaceScratch,
}

const UNPAIRED: u32 = u32::MAX;

/// Paired neighbours on each side that one step of an augmenting-path search inspects.
const AUGMENT_REACH: usize = 64;

/// Pairs an augmenting path may run through.
const AUGMENT_DEPTH: u32 = 16;

/// Neighbours one augmenting-path search may inspect in all.
const AUGMENT_BUDGET: usize = 4_096;

impl WaveScratch {
    fn is_paired(&self, index: u32) -> bool {
        self.mate[index as usize] != UNPAIRED
    }

    fn pair(&mut self, a: u32, b: u32) {
        self.mate[a as usize] = b;
        self.mate[b as usize] = a;
    }
}

/// Score of a set of pairs in the neighbour rounds, compared lexicographically: more pairs,
/// then more widening steps among the paired players, then a smaller total gap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    pairs: u32,
    steps: u64,
    negative_gap: i64,
}

impl Score {
    fn with_pair(self, a: &Candidate, b: &Candidate) -> Self {
        Self {
            pairs: self.pairs + 1,
            steps: self.steps + u64::from(a.steps) + u64::from(b.steps),
            negative_gap: self.negative_gap - i64::from(a.rating.abs_diff(b.rating)),
        }
    }
}

/// Which pairs the passes of a wave may form.
trait Admission {
    /// Whether candidates `a` and `b` may be paired by this wave.
    fn admits(&self, candidates: &[Candidate], a: u32, b: u32) -> bool;

    /// Whether a search for a partner should start from `candidate`: every pair admitted
    /// has a player from whom it would be found.
    fn seeks(&self, candidate: u32) -> bool;
}

/// Eager waves: whatever both windows accept.
struct Windows;

impl Admission for Windows {
    fn admits(&self, candidates: &[Candidate], a: u32, b: u32) -> bool {
        candidates[a as usize].accepts(&candidates[b as usize])
    }

    fn seeks(&self, _: u32) -> bool {
        true
    }
}

/// The passes of a quality wave after its close pairs: what both windows accept, provided
/// one of the two players is critical.
struct Critical<'a>(&'a [Pace]);

impl Admission for Critical<'_> {
    fn admits(&self, candidates: &[Candidate], a: u32, b: u32) -> bool {
        (self.0[a as usize].critical || self.0[b as usize].critical)
            && candidates[a as usize].accepts(&candidates[b as usize])
    }

    /// Only critical players: a pair has one, and a search from a player who is not would
    /// scan the whole window for the few who are.
    fn seeks(&self, candidate: u32) -> bool {
        self.0[candidate as usize].critical
    }
}

/// The players waiting in one pool, in rating buckets, and what the pool has learned of its
/// arrivals.
///
/// A `BTreeMap` from rating to a bucket: iteration in rating order is what every wave needs,
/// and only ratings somebody holds take memory (a pool per tenant and time control must stay
/// cheap when nearly empty). Each bucket keeps joining order, which makes expiry a prefix cut.
/// The [`Pacer`] lives here because waves are what read it and arrivals (see
/// [`Self::arrive`]) what teach it.
#[derive(Debug, Default, Clone)]
pub struct WaitingPool {
    buckets: BTreeMap<u16, Vec<Waiting>>,
    len: usize,
    pacer: Pacer,
}

impl WaitingPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the pool has learned of its arrivals.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Number of waiting players.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nobody is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a player; a player who joined earlier than others in the bucket (one put back after
    /// a failed game) is placed by joining time.
    pub fn insert(&mut self, rating: u16, waiting: Waiting) {
        let bucket = self.buckets.entry(rating).or_default();
        match bucket.last() {
            Some(last) if last.joined_at_ms > waiting.joined_at_ms => {
                let at = bucket.partition_point(|other| other.joined_at_ms <= waiting.joined_at_ms);
                bucket.insert(at, waiting);
            }
            _ => bucket.push(waiting),
        }
        self.len += 1;
    }

    /// Adds a player who has just joined, and counts them as an arrival: unlike [`Self::insert`],
    /// which also serves players put back after a failed game or restored after a restart.
    pub fn arrive(&mut self, rating: u16, waiting: Waiting) {
        self.pacer.record_arrival(rating, waiting.joined_at_ms);
        self.insert(rating, waiting);
    }

    /// Removes the player with entry `id` filed under `rating`.
    pub fn remove(&mut self, rating: u16, id: EntryId) -> Option<Waiting> {
        let bucket = self.buckets.get_mut(&rating)?;
        let at = bucket.iter().position(|waiting| waiting.id == id)?;
        let removed = bucket.remove(at);
        if bucket.is_empty() {
            self.buckets.remove(&rating);
        }
        self.len -= 1;
        Some(removed)
    }

    /// Whether the player with entry `id` is waiting under `rating`.
    pub fn contains(&self, rating: u16, id: EntryId) -> bool {
        self.buckets
            .get(&rating)
            .is_some_and(|bucket| bucket.iter().any(|waiting| waiting.id == id))
    }

    /// Every waiting player with their rating, in rating order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, Waiting)> + '_ {
        self.buckets
            .iter()
            .flat_map(|(&rating, bucket)| bucket.iter().map(move |&waiting| (rating, waiting)))
    }

    /// Removes and returns every entry that has waited `max_wait` or longer at `now_ms`.
    pub fn expire(&mut self, now_ms: u64, params: &MatchingParams) -> Vec<Expired> {
        let mut expired = Vec::new();
        self.drain_expired(now_ms, params, &mut expired);
        expired
    }

    fn drain_expired(&mut self, now_ms: u64, params: &MatchingParams, expired: &mut Vec<Expired>) {
        let before = expired.len();
        for (&rating, bucket) in &mut self.buckets {
            let cut = bucket.partition_point(|waiting| {
                params.is_expired(now_ms.saturating_sub(waiting.joined_at_ms))
            });
            expired.extend(
                bucket
                    .drain(..cut)
                    .map(|waiting| Expired { rating, waiting }),
            );
        }
        if expired.len() > before {
            self.len -= expired.len() - before;
            self.buckets.retain(|_, bucket| !bucket.is_empty());
        }
    }

    /// Runs one wave at `now_ms`: expires, pairs, and removes everyone it expired or paired.
    pub fn run_wave(
        &mut self,
        now_ms: u64,
        params: &MatchingParams,
        scratch: &mut WaveScratch,
    ) -> WaveOutcome {
        let mut outcome = WaveOutcome::default();
        self.drain_expired(now_ms, params, &mut outcome.expired);
        self.collect_candidates(now_ms, params, scratch);
        self.pacer.fold(now_ms);
        match params.pacing {
            Pacing::Eager => pair_eagerly(scratch, &Windows),
            Pacing::Quality { target_wait_ms } => {
                let mut pace = std::mem::take(&mut scratch.pace);
                self.pacer.prepare(
                    now_ms,
                    params,
                    target_wait_ms,
                    &scratch.candidates,
                    &mut pace,
                );
                pair_worthwhile(scratch, &pace.paces);
                pair_eagerly(scratch, &Critical(&pace.paces));
                let paired = scratch.mate.iter().map(|&mate| mate != UNPAIRED);
                self.pacer.settle(&pace.paces, paired);
                scratch.pace = pace;
            }
        }
        collect_pairs(scratch, &mut outcome.pairs);
        if !outcome.pairs.is_empty() {
            self.remove_paired(&scratch.mate);
        }
        outcome
    }

    fn collect_candidates(&self, now_ms: u64, params: &MatchingParams, scratch: &mut WaveScratch) {
        scratch.candidates.clear();
        scratch.candidates.reserve(self.len);
        for (&rating, bucket) in &self.buckets {
            scratch.candidates.extend(bucket.iter().map(|waiting| {
                let waited = now_ms.saturating_sub(waiting.joined_at_ms);
                Candidate {
                    id: waiting.id,
                    rating,
                    joined_at_ms: waiting.joined_at_ms,
                    last_color: waiting.last_color,
                    window: params.window(waited),
                    steps: u16::try_from(params.steps(waited)).unwrap_or(u16::MAX),
                }
            }));
        }
        scratch.mate.clear();
        scratch.mate.resize(scratch.candidates.len(), UNPAIRED);
        scratch.active.clear();
        scratch.active.extend(0..scratch.candidates.len() as u32);
    }

    /// Drops paired players; `mate` is aligned with the bucket iteration order.
    fn remove_paired(&mut self, mate: &[u32]) {
        let mut mates = mate.iter();
        for bucket in self.buckets.values_mut() {
            bucket.retain(|_| mates.next().is_some_and(|&mate| mate == UNPAIRED));
        }
        self.buckets.retain(|_, bucket| !bucket.is_empty());
        self.len = mate.iter().filter(|&&mate| mate == UNPAIRED).count();
    }
}

/// Passes 2 to 4 over the players still active, forming only pairs `admission` admits.
fn pair_eagerly(scratch: &mut WaveScratch, admission: &impl Admission) {
    pair_neighbours(scratch, admission);
    sweep_leftovers(scratch, admission);
    augment(scratch, admission);
}

/// The first pass of a quality wave: among adjacent players (in rating) who accept each
/// other and are not critical, the set of non-overlapping pairs that saves the most, where a
/// pair saves what waiting is worth to its two players less twice their gap (see
/// [`crate::pacing`]); pairs that save nothing are deferred. An exact dynamic programme
/// over the candidates in rating order (all of them are active still), linear like the
/// neighbour rounds.
fn pair_worthwhile(scratch: &mut WaveScratch, paces: &[Pace]) {
    let n = scratch.active.len();
    scratch.saving.clear();
    scratch.saving.resize(n + 1, 0.0);
    scratch.pair_ends_here.clear();
    scratch.pair_ends_here.resize(n + 1, false);
    for k in 2..=n {
        let (a, b) = (
            scratch.active[k - 2] as usize,
            scratch.active[k - 1] as usize,
        );
        let skip = scratch.saving[k - 1];
        scratch.saving[k] = skip;
        let (low, high) = (&scratch.candidates[a], &scratch.candidates[b]);
        if paces[a].critical || paces[b].critical || !low.accepts(high) {
            continue;
        }
        let gap = f32::from(high.rating - low.rating);
        let saving = paces[a].worth + paces[b].worth - 2.0 * gap;
        let take = scratch.saving[k - 2] + saving;
        if saving > 0.0 && take > skip {
            scratch.saving[k] = take;
            scratch.pair_ends_here[k] = true;
        }
    }
    pair_chosen(scratch);
}

/// Pairs the adjacent active players whose pair a dynamic programme chose (`pair_ends_here`
/// at the second of the two), and drops them from the active players.
fn pair_chosen(scratch: &mut WaveScratch) {
    let mut k = scratch.active.len();
    while k >= 2 {
        if scratch.pair_ends_here[k] {
            let (first, second) = (scratch.active[k - 2], scratch.active[k - 1]);
            scratch.pair(first, second);
            k -= 2;
        } else {
            k -= 1;
        }
    }
    let mate = &scratch.mate;
    scratch
        .active
        .retain(|&index| mate[index as usize] == UNPAIRED);
}

/// Pass 2: best non-overlapping adjacent pairs, repeated over the players left.
fn pair_neighbours(scratch: &mut WaveScratch, admission: &impl Admission) {
    loop {
        let n = scratch.active.len();
        scratch.best.clear();
        scratch.best.resize(n + 1, Score::default());
        scratch.pair_ends_here.clear();
        scratch.pair_ends_here.resize(n + 1, false);
        for k in 2..=n {
            let a = &scratch.candidates[scratch.active[k - 2] as usize];
            let b = &scratch.candidates[scratch.active[k - 1] as usize];
            let skip = scratch.best[k - 1];
            scratch.best[k] = skip;
            if admission.admits(
                &scratch.candidates,
                scratch.active[k - 2],
                scratch.active[k - 1],
            ) {
                let take = scratch.best[k - 2].with_pair(a, b);
                if take > skip {
                    scratch.best[k] = take;
                    scratch.pair_ends_here[k] = true;
                }
            }
        }
        if scratch.best[n].pairs == 0 {
            return;
        }
        pair_chosen(scratch);
    }
}

/// The admitted unpaired player nearest in rating to `me` among `scratch.active` (ties: the
/// longer-waiting one), other than `me` and `excluded`.
fn nearest_unpaired_partner(
    scratch: &WaveScratch,
    admission: &impl Admission,
    me: u32,
    excluded: u32,
) -> Option<u32> {
    let mine = &scratch.candidates[me as usize];
    let start = scratch.active.partition_point(|&index| {
        scratch.candidates[index as usize].rating < mine.rating.saturating_sub(mine.window)
    });
    scratch.active[start..]
        .iter()
        .map(|&index| (index, &scratch.candidates[index as usize]))
        .take_while(|(_, other)| other.rating <= mine.rating.saturating_add(mine.window))
        .filter(|&(index, _)| {
            index != me
                && index != excluded
                && !scratch.is_paired(index)
                && admission.admits(&scratch.candidates, me, index)
        })
        .min_by_key(|&(index, other)| {
            (
                other.rating.abs_diff(mine.rating),
                other.joined_at_ms,
                index,
            )
        })
        .map(|(index, _)| index)
}

/// Pass 3: longest-waiting first, each unpaired player takes the nearest admitted unpaired
/// player. Afterwards no two unpaired players admit each other.
fn sweep_leftovers(scratch: &mut WaveScratch, admission: &impl Admission) {
    if scratch.active.len() < 2 {
        return;
    }
    let mut by_priority = std::mem::take(&mut scratch.by_priority);
    by_priority.clear();
    by_priority.extend(
        scratch
            .active
            .iter()
            .copied()
            .filter(|&index| admission.seeks(index)),
    );
    by_priority.sort_unstable_by_key(|&index| {
        let candidate = &scratch.candidates[index as usize];
        (
            std::cmp::Reverse(candidate.steps),
            candidate.joined_at_ms,
            index,
        )
    });
    for &me in &by_priority {
        if !scratch.is_paired(me) {
            if let Some(partner) = nearest_unpaired_partner(scratch, admission, me, me) {
                scratch.pair(me, partner);
            }
        }
    }
    scratch.by_priority = by_priority;
    let mate = &scratch.mate;
    scratch
        .active
        .retain(|&index| mate[index as usize] == UNPAIRED);
}

/// Pass 4: augmenting paths. From an unpaired player `x`, a chain `x ~ y1 = z1 ~ y2 = z2 … ~ u`
/// (where `=` is a current pair, `~` an acceptable pairing and `u` another unpaired player) is
/// re-paired as `(x, y1), (z1, y2), …, (zk, u)`: one more pair. The search is depth-first,
/// visits each player at most once per start, looks at most [`AUGMENT_REACH`] paired
/// neighbours on each side and follows at most [`AUGMENT_DEPTH`] pairs, so it stays cheap on
/// dense pools where it almost never finds anything.
fn augment(scratch: &mut WaveScratch, admission: &impl Admission) {
    let mut visited = std::mem::take(&mut scratch.visited);
    visited.clear();
    visited.resize(scratch.candidates.len(), 0);
    let mut path = Vec::new();
    for (turn, stamp) in (0..scratch.active.len()).zip(1u32..) {
        let x = scratch.active[turn];
        if scratch.is_paired(x) || !admission.seeks(x) {
            continue;
        }
        visited[x as usize] = stamp;
        path.clear();
        let mut search = PathSearch {
            scratch,
            admission,
            visited: &mut visited,
            stamp,
            origin: x,
            budget: AUGMENT_BUDGET,
        };
        if search.extend(x, AUGMENT_DEPTH, &mut path) {
            for &(a, b) in &path {
                scratch.pair(a, b);
            }
        }
    }
    scratch.visited = visited;
    let mate = &scratch.mate;
    scratch
        .active
        .retain(|&index| mate[index as usize] == UNPAIRED);
}

/// One augmenting-path search from `origin`.
struct PathSearch<'a, A> {
    scratch: &'a WaveScratch,
    admission: &'a A,
    visited: &'a mut Vec<u32>,
    stamp: u32,
    origin: u32,
    budget: usize,
}

impl<A: Admission> PathSearch<'_, A> {
    /// Looks for a path continuing from `from` (who would take a new partner); on success
    /// `path` holds the new pairs.
    fn extend(&mut self, from: u32, depth: u32, path: &mut Vec<(u32, u32)>) -> bool {
        let scratch = self.scratch;
        let mine = scratch.candidates[from as usize];
        let within_reach =
            |index: &usize| scratch.candidates[*index].rating.abs_diff(mine.rating) <= mine.window;
        let is_paired = |index: &usize| scratch.mate[*index] != UNPAIRED;
        let below = (0..from as usize)
            .rev()
            .take_while(within_reach)
            .filter(is_paired)
            .take(AUGMENT_REACH);
        let above = (from as usize + 1..scratch.candidates.len())
            .take_while(within_reach)
            .filter(is_paired)
            .take(AUGMENT_REACH);
        for y in below.chain(above) {
            if self.budget == 0 {
                return false;
            }
            self.budget -= 1;
            let z = scratch.mate[y] as usize;
            if self.visited[y] == self.stamp
                || self.visited[z] == self.stamp
                || !self.admission.admits(&scratch.candidates, from, y as u32)
            {
                continue;
            }
            self.visited[y] = self.stamp;
            self.visited[z] = self.stamp;
            path.push((from, y as u32));
            if let Some(u) =
                nearest_unpaired_partner(scratch, self.admission, z as u32, self.origin)
            {
                path.push((z as u32, u));
                return true;
            }
            if depth > 1 && self.extend(z as u32, depth - 1, path) {
                return true;
            }
            path.pop();
        }
        false
    }
}

fn collect_pairs(scratch: &WaveScratch, pairs: &mut Vec<Pairing>) {
    for (index, &mate) in scratch.mate.iter().enumerate() {
        if mate != UNPAIRED && (index as u32) < mate {
            let (a, b) = (scratch.candidates[index], scratch.candidates[mate as usize]);
            let (low, high) = if a.rating <= b.rating { (a, b) } else { (b, a) };
            pairs.push(Pairing { low, high });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> EntryId {
        EntryId::new(n).unwrap()
    }

    fn params() -> MatchingParams {
        MatchingParams::default()
    }

    #[test]
    fn a_pool_keeps_a_player_in_24_bytes_and_a_wave_sees_one_in_24() {
        assert_eq!(std::mem::size_of::<Waiting>(), 24);
        assert_eq!(std::mem::size_of::<Candidate>(), 24);
    }

    /// A pool with (id, rating, joined_at) players.
    fn pool(players: &[(u64, u16, u64)]) -> WaitingPool {
        let mut pool = WaitingPool::new();
        for &(n, rating, joined_at_ms) in players {
            pool.insert(
                rating,
                Waiting {
                    id: id(n),
                    joined_at_ms,
                    last_color: None,
                },
            );
        }
        pool
    }

    fn wave(pool: &mut WaitingPool, now_ms: u64) -> WaveOutcome {
        pool.run_wave(now_ms, &params(), &mut WaveScratch::default())
    }

    fn pair_ids(outcome: &WaveOutcome) -> Vec<(u64, u64)> {
        let mut pairs: Vec<_> = outcome
            .pairs
            .iter()
            .map(|pair| {
                let (a, b) = (pair.low.id.get(), pair.high.id.get());
                (a.min(b), a.max(b))
            })
            .collect();
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn close_players_are_paired_within_one_wave() {
        let mut pool = pool(&[(1, 1500, 0), (2, 1560, 0)]);
        let outcome = wave(&mut pool, 0);
        assert_eq!(pair_ids(&outcome), vec![(1, 2)]);
        assert!(pool.is_empty());
    }

    #[test]
    fn a_gap_beyond_the_window_waits_until_the_window_widens() {
        let mut pool = pool(&[(1, 1500, 0), (2, 1620, 0)]);
        assert!(
            wave(&mut pool, 9_999).pairs.is_empty(),
            "gap 120 is beyond the initial window of 100"
        );
        assert_eq!(pool.len(), 2);
        assert_eq!(
            pair_ids(&wave(&mut pool, 10_000)),
            vec![(1, 2)],
            "after one step both windows are 125"
        );
    }

    #[test]
    fn windows_must_be_mutual() {
        // Player 1 has waited 100 s (window 350); player 2 just joined (window 100).
        let mut pool = pool(&[(1, 1500, 0), (2, 1700, 100_000)]);
        assert!(
            wave(&mut pool, 100_000).pairs.is_empty(),
            "gap 200 is within only one of the two windows"
        );
        assert_eq!(
            pair_ids(&wave(&mut pool, 140_000)),
            vec![(1, 2)],
            "player 2's window reaches 200 after 40 s"
        );
    }

    #[test]
    fn windows_stop_at_the_maximum() {
        let mut pool = pool(&[(1, 1000, 0), (2, 1501, 0)]);
        for now in [160_000, 300_000, 599_000] {
            assert!(
                wave(&mut pool, now).pairs.is_empty(),
                "gap 501 exceeds max_window 500 at {now} ms"
            );
        }
    }

    #[test]
    fn entries_expire_at_max_wait_and_are_never_paired() {
        let mut pool = pool(&[(1, 1500, 0), (2, 1500, 1)]);
        let outcome = wave(&mut pool, 600_000);
        assert!(outcome.pairs.is_empty());
        assert_eq!(
            outcome.expired,
            vec![Expired {
                rating: 1500,
                waiting: Waiting {
                    id: id(1),
                    joined_at_ms: 0,
                    last_color: None,
                }
            }]
        );
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.expire(600_001, &params()).len(), 1);
        assert!(pool.is_empty());
    }

    #[test]
    fn removed_players_are_not_paired() {
        let mut pool = pool(&[(1, 1500, 0), (2, 1510, 0), (3, 1900, 0)]);
        assert_eq!(
            pool.remove(1510, id(2)).map(|waiting| waiting.id),
            Some(id(2))
        );
        assert_eq!(pool.remove(1510, id(2)), None);
        assert!(wave(&mut pool, 0).pairs.is_empty());
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn more_pairs_beat_smaller_gaps() {
        // Pairing 2-3 (gap 10) would strand 1 and 4; 1-2 and 3-4 pair everyone.
        let mut pool = pool(&[(1, 1400, 0), (2, 1490, 0), (3, 1500, 0), (4, 1590, 0)]);
        assert_eq!(pair_ids(&wave(&mut pool, 0)), vec![(1, 2), (3, 4)]);
    }

    #[test]
    fn longer_waiting_players_are_preferred() {
        // 2 and 3 are closest, but 1 has waited three widening steps and 3 has just joined.
        let mut pool = pool(&[(1, 1500, 0), (2, 1560, 20_000), (3, 1570, 30_000)]);
        assert_eq!(pair_ids(&wave(&mut pool, 30_000)), vec![(1, 2)]);
        assert_eq!(
            pool.iter()
                .map(|(_, waiting)| waiting.id.get())
                .collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn smaller_gaps_decide_among_equal_waits() {
        let mut pool = pool(&[(1, 1500, 0), (2, 1560, 0), (3, 1570, 0)]);
        assert_eq!(pair_ids(&wave(&mut pool, 0)), vec![(2, 3)]);
    }

    #[test]
    fn a_wide_window_reaches_over_narrow_windows() {
        // 1 and 4 have waited long (window 500); 2 and 3 just joined (window 100).
        let mut pool = pool(&[
            (1, 1000, 0),
            (2, 1150, 200_000),
            (3, 1200, 200_000),
            (4, 1290, 0),
        ]);
        assert_eq!(pair_ids(&wave(&mut pool, 200_000)), vec![(1, 4), (2, 3)]);
    }

    #[test]
    fn the_sweep_pairs_across_an_unpaired_narrow_window() {
        // 2 sits between 1 and 3 but accepts neither; 1 and 3 accept each other.
        let mut pool = pool(&[(1, 1000, 0), (2, 1150, 200_000), (3, 1290, 0)]);
        assert_eq!(pair_ids(&wave(&mut pool, 200_000)), vec![(1, 3)]);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn equal_ratings_pair_oldest_first_in_bucket_order() {
        let mut pool = pool(&[(3, 1500, 30), (1, 1500, 10), (2, 1500, 20)]);
        assert_eq!(
            pool.iter()
                .map(|(_, waiting)| waiting.id.get())
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let outcome = wave(&mut pool, 100);
        assert_eq!(outcome.pairs.len(), 1);
        assert_eq!(pool.len(), 1);
    }

    fn quality(target_wait_ms: u64) -> MatchingParams {
        MatchingParams {
            pacing: Pacing::Quality { target_wait_ms },
            ..params()
        }
    }

    /// A pool that saw 20 players a second join at ratings 1000 to 1999 during the minute
    /// before `at_ms` (each withdrawn again), and has run its waves.
    fn busy_pool(at_ms: u64) -> WaitingPool {
        let mut pool = WaitingPool::new();
        let mut scratch = WaveScratch::default();
        for n in 0..1_200u64 {
            let joined_at_ms = at_ms - 60_000 + n * 50;
            let rating = 1_000 + (n * 7_919 % 1_000) as u16;
            pool.arrive(
                rating,
                Waiting {
                    id: id(1_000_000 + n),
                    joined_at_ms,
                    last_color: None,
                },
            );
            pool.remove(rating, id(1_000_000 + n));
            if n % 4 == 0 {
                pool.run_wave(joined_at_ms, &quality(3_000), &mut scratch);
            }
        }
        pool
    }

    fn join(pool: &mut WaitingPool, players: &[(u64, u16, u64)]) {
        for &(n, rating, joined_at_ms) in players {
            pool.arrive(
                rating,
                Waiting {
                    id: id(n),
                    joined_at_ms,
                    last_color: None,
                },
            );
        }
    }

    #[test]
    fn a_pool_learns_its_arrival_rate() {
        let pool = busy_pool(60_000);
        let rate = pool.pacer().arrivals_per_s(60_000).unwrap();
        assert!((18.0..22.0).contains(&rate), "{rate} arrivals per second");
        assert_eq!(WaitingPool::new().pacer().arrivals_per_s(0), None);
    }

    #[test]
    fn quality_pacing_defers_a_far_pair_until_a_player_is_critical() {
        let mut pool = busy_pool(60_000);
        join(&mut pool, &[(1, 1_500, 60_000), (2, 1_560, 60_000)]);
        let mut scratch = WaveScratch::default();
        for now in (60_000..=62_800).step_by(200) {
            let outcome = pool.run_wave(now, &quality(3_000), &mut scratch);
            assert!(outcome.pairs.is_empty(), "paired at {now} ms");
        }
        let outcome = pool.run_wave(63_000, &quality(3_000), &mut scratch);
        assert_eq!(
            pair_ids(&outcome),
            vec![(1, 2)],
            "the next wave would be past the target"
        );
        assert!(
            pool.pacer().arrivals_per_s(63_000).is_some(),
            "eager or not, every wave keeps the estimate"
        );
    }

    #[test]
    fn quality_pacing_pairs_a_close_pair_at_once() {
        let mut pool = busy_pool(60_000);
        join(
            &mut pool,
            &[(1, 1_500, 60_000), (2, 1_501, 60_000), (3, 1_580, 60_000)],
        );
        let outcome = pool.run_wave(60_000, &quality(3_000), &mut WaveScratch::default());
        assert_eq!(pair_ids(&outcome), vec![(1, 2)]);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn quality_pacing_pairs_eagerly_while_it_knows_no_arrivals() {
        // Players restored after a restart are no arrivals: the pool knows nothing yet.
        let mut pool = pool(&[(1, 1_500, 0), (2, 1_590, 0)]);
        let outcome = pool.run_wave(0, &quality(3_000), &mut WaveScratch::default());
        assert_eq!(pair_ids(&outcome), vec![(1, 2)]);
    }

    #[test]
    fn quality_pacing_never_pairs_beyond_the_windows() {
        let mut pool = busy_pool(60_000);
        // Past the target and critical, but 150 apart: beyond both windows.
        join(&mut pool, &[(1, 1_500, 50_000), (2, 1_650, 50_000)]);
        let outcome = pool.run_wave(60_000, &quality(3_000), &mut WaveScratch::default());
        assert!(outcome.pairs.is_empty());
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn put_back_players_keep_joining_order() {
        let mut pool = pool(&[(1, 1500, 100), (2, 1500, 300)]);
        pool.insert(
            1500,
            Waiting {
                id: id(3),
                joined_at_ms: 200,
                last_color: None,
            },
        );
        pool.insert(
            1500,
            Waiting {
                id: id(4),
                joined_at_ms: 50,
                last_color: None,
            },
        );
        let order: Vec<_> = pool.iter().map(|(_, waiting)| waiting.id.get()).collect();
        assert_eq!(order, vec![4, 1, 3, 2]);
        assert!(pool.contains(1500, id(3)));
        assert!(!pool.contains(1501, id(3)));
    }
}
