//! Quality pacing: which acceptable pairs a wave makes now, and which it defers because a
//! much closer opponent is likely to arrive within the players' budget.
//!
//! An eager wave pairs whatever is acceptable. A quality wave ([`Pacing::Quality`]) knows
//! each player's remaining budget — the pool's target wait minus the time waited — and what
//! the pool has learned of its arrivals (arrivals per second in each rating band), and
//! decides in three steps:
//!
//! 1. **Worth pairing now.** What waiting is worth to a player is the gap they can expect if
//!    left to wait ([`expected_gap`]): small where opponents of their rating arrive often and
//!    much budget is left, up to their whole window where they are rare or the budget is
//!    spent. Pairing two players now costs each of them the gap; deferring costs each what
//!    they can expect. So two adjacent players (in rating) pair when their two expectations
//!    together exceed twice their gap, and where such pairs overlap an exact dynamic
//!    programme keeps the set that saves the most.
//! 2. **Critical players.** A player who would pass their budget before the next wave is
//!    critical: the eager passes pair them with whatever is acceptable (both windows), as
//!    close as possible. This keeps the wait budget whatever the estimate says; a wrong
//!    estimate costs quality, never waiting time.
//! 3. **Overtime.** The target is a 95th percentile, so a few players may wait past it. A
//!    critical player whose best acceptable opponent is far worse than what waiting is worth
//!    may be granted overtime, while the pool's allowance ([`Overtime`]) lasts. A player
//!    past the target pairs by the same rule against a final budget of
//!    [`FINAL_BUDGET_FACTOR`] times the target; while the pool has gone well past its 5%
//!    (the allowance in debt, as when the target is too short for the pool), they pair with
//!    whatever is acceptable.
//!
//! Every pair still satisfies both players' windows at the wave's time: pacing only chooses
//! among acceptable pairs, so a wave never pairs what an eager wave could not.
//!
//! The constants below were fitted on simulated pools (`examples/frontier.rs`): Poisson
//! arrivals, normal ratings, cancels, targets from 1 to 12 seconds.

use crate::matching::Candidate;
use crate::pools::{MAX_RATING, MatchingParams, Pacing};

/// Width of the rating bands the arrival estimate counts in.
const BAND_WIDTH: u16 = 50;

/// Number of rating bands.
const BANDS: usize = MAX_RATING as usize / BAND_WIDTH as usize + 1;

/// Time constant of the arrival estimate, in seconds: short enough that a rate that jumps
/// tenfold is followed within half a minute, long enough that a band of a few arrivals per
/// second is counted within a few percent.
const ESTIMATE_TAU_S: f64 = 20.0;

/// Least observation time the estimate divides by, in seconds: a few arrivals in the first
/// instants (or a reading taken just after a fold) say little, and too low a rate only makes
/// the pool pair more eagerly.
const MIN_EXPOSURE_S: f64 = 5.0;

/// Thickness (arrivals per rating point within the target, averaged over players) at which
/// [`GAP_SCALE`] was fitted: 40 players a second over three pools, a 12-second target.
const REFERENCE_THICKNESS: f64 = 0.15;

/// How the expected gap grows as a pool gets thinner than the reference.
const THINNESS_EXPONENT: f64 = 0.3;

/// Scale of [`expected_gap`].
const GAP_SCALE: f64 = 0.8;

/// Exponent of [`expected_gap`]: flatter than the `1/x` of the nearest Poisson arrival
/// alone, because the players already waiting are options too.
const GAP_EXPONENT: f64 = 0.6;

/// A player past the target has this many targets of waiting in all before they pair with
/// whatever is acceptable.
pub const FINAL_BUDGET_FACTOR: u64 = 5;

/// Allowance earned by every player matched within the target: one in twenty may go past it,
/// and a little less is spent so that the 95th percentile keeps a margin.
const OVERTIME_SHARE: f64 = 0.04;

/// Overtime is granted when the best acceptable gap exceeds this multiple of what waiting to
/// the target is worth to the player…
const GRANT_FACTOR: f64 = 15.0;

/// …a threshold that halves every this much allowance saved beyond one grant, so that the
/// allowance goes to the worst cases when it is scarce and is not left unspent when it is
/// not.
const GRANT_EASE: f64 = 4.0;

/// Most allowance a pool saves up: about a minute's worth at forty players a second.
const ALLOWANCE_CAP: f64 = 30.0;

/// Deepest debt a pool keeps count of, so that a target the pool could not keep for a while
/// does not forbid overtime long after.
const ALLOWANCE_FLOOR: f64 = -10.0;

/// Below this balance the pool is in debt: more players went past the target than it allows.
const DEBT_LEVEL: f64 = -9.0;

/// The gap a player can expect if left to wait `remaining_s` more seconds where players of
/// their rating arrive at `density` per second and rating point, in a pool `thinness` times
/// thinner than the reference. A function of the expected arrivals per rating point within
/// the remaining budget; its shape was measured on simulated pools under this very policy
/// (the mean gap players got, against the expected arrivals when they were left to wait).
fn expected_gap(density: f64, remaining_s: f64, thinness: f64) -> f64 {
    thinness * GAP_SCALE * power(density) * power(remaining_s)
}

/// `x^-GAP_EXPONENT`, finite at zero: [`expected_gap`] factorised, so that a wave computes the
/// density's factor once per band and the budget's once per distinct remaining budget.
fn power(x: f64) -> f64 {
    x.max(f64::MIN_POSITIVE).powf(-GAP_EXPONENT)
}

/// Remaining budgets are rounded to this step when a wave looks up their factor of
/// [`expected_gap`] (at least; see [`BUDGET_STEPS`]).
const BUDGET_STEP_MS: u64 = 20;

/// Most distinct remaining budgets one wave computes a factor for.
const BUDGET_STEPS: u64 = 4_096;

/// What a pool has learned of its arrivals: how many players join per second in each rating
/// band, as exponentially decayed counts.
///
/// Counts are kept per band of [`BAND_WIDTH`] rating points because pacing needs the density
/// of arrivals *around a player's rating*, and a pool's ratings are far from uniform; decayed
/// ([`ESTIMATE_TAU_S`]) so that the same configuration follows a busy evening and a quiet
/// night. An arrival only bumps an integer (enqueues are the hot path); the pool folds them
/// into the decayed counts once per wave.
///
/// The estimate is not snapshotted: it forgets what is older than a minute or so anyway, so
/// after any real downtime a saved one would describe traffic that is gone. After a restart
/// it is rebuilt from the arrivals it sees. It divides by the time it has observed (the
/// exposure), so it is unbiased from the first seconds on; while it has seen few players it
/// knows too little to defer, and the pool pairs more eagerly rather than less.
#[derive(Debug, Clone, PartialEq)]
struct ArrivalEstimate {
    /// Arrivals since the last fold, per band.
    pending: [u32; BANDS],
    /// Decayed arrival counts per band, as of `folded_ms`.
    counts: [f32; BANDS],
    /// Decayed observation time behind `counts`, in seconds: the integral of the decay
    /// weight over the time observed, so that `counts / exposure_s` is a rate.
    exposure_s: f64,
    /// When the counts were last folded; `None` before the first arrival.
    folded_ms: Option<u64>,
}

impl Default for ArrivalEstimate {
    fn default() -> Self {
        Self {
            pending: [0; BANDS],
            counts: [0.0; BANDS],
            exposure_s: 0.0,
            folded_ms: None,
        }
    }
}

fn band(rating: u16) -> usize {
    usize::from(rating.min(MAX_RATING) / BAND_WIDTH)
}

impl ArrivalEstimate {
    fn record(&mut self, rating: u16, at_ms: u64) {
        self.folded_ms.get_or_insert(at_ms);
        let pending = &mut self.pending[band(rating)];
        *pending = pending.saturating_add(1);
    }

    /// The decay weight of what was folded last, at `now_ms`.
    fn decay(&self, now_ms: u64) -> f64 {
        let elapsed_s = self
            .folded_ms
            .map_or(0.0, |folded| now_ms.saturating_sub(folded) as f64 / 1_000.0);
        (-elapsed_s / ESTIMATE_TAU_S).exp()
    }

    /// The exposure at `now_ms`, given the decay weight of the last fold.
    fn exposure_at(&self, decay: f64) -> f64 {
        self.exposure_s * decay + ESTIMATE_TAU_S * (1.0 - decay)
    }

    fn fold(&mut self, now_ms: u64) {
        let Some(folded) = self.folded_ms else { return };
        let decay = self.decay(now_ms);
        for (count, pending) in self.counts.iter_mut().zip(&mut self.pending) {
            *count = (f64::from(*count) * decay + f64::from(*pending)) as f32;
            *pending = 0;
        }
        self.exposure_s = self.exposure_at(decay);
        self.folded_ms = Some(folded.max(now_ms));
    }

    fn arrivals_per_s(&self, now_ms: u64) -> Option<f64> {
        self.folded_ms?;
        let decay = self.decay(now_ms);
        let counts: f64 = self.counts.iter().map(|&count| f64::from(count)).sum();
        let pending: f64 = self.pending.iter().map(|&pending| f64::from(pending)).sum();
        Some((counts * decay + pending) / self.exposure_at(decay).max(MIN_EXPOSURE_S))
    }

    /// Arrivals per second and rating point around each band's ratings, smoothed over the
    /// neighbouring bands (a band of a thin pool sees few arrivals); written to `densities`.
    /// Until the estimate has observed [`MIN_EXPOSURE_S`], it divides by that much: a few
    /// arrivals in the first instants say little, and too low a density only makes the pool
    /// pair more eagerly.
    /// How much thinner than the reference ([`REFERENCE_THICKNESS`]) the pool is, as the
    /// factor that scales [`expected_gap`]: players of a thin pool meet fewer opponents
    /// while they wait, so waiting is worth less to them (measured: a pool four times
    /// thinner gives about 1.7 times the gap for the same arrivals per rating point within
    /// the remaining budget). The pool's thickness is the arrivals per rating point a player
    /// sees within the target, averaged over players; 1 while nothing is known.
    fn thinness(&self, densities: &[f64], target_wait_ms: u64) -> f64 {
        let total: f64 = self.counts.iter().map(|&count| f64::from(count)).sum();
        if total <= 0.0 {
            return 1.0;
        }
        let mean_density = self
            .counts
            .iter()
            .zip(densities)
            .map(|(&count, &density)| f64::from(count) * density)
            .sum::<f64>()
            / total;
        let thickness = mean_density * target_wait_ms as f64 / 1_000.0;
        (thickness / REFERENCE_THICKNESS)
            .powf(-THINNESS_EXPONENT)
            .clamp(0.25, 4.0)
    }

    fn densities(&self, densities: &mut Vec<f64>) {
        densities.clear();
        let per_point = 1.0 / (self.exposure_s.max(MIN_EXPOSURE_S) * f64::from(BAND_WIDTH));
        densities.extend((0..BANDS).map(|k| {
            let at = |k: usize| f64::from(self.counts[k]);
            let below = if k > 0 { at(k - 1) } else { at(k) };
            let above = if k + 1 < BANDS { at(k + 1) } else { at(k) };
            (below + 2.0 * at(k) + above) / 4.0 * per_point
        }));
    }
}

/// The pool's allowance of players who may wait past the target: the target is a 95th
/// percentile, so one player in twenty may. A balance rather than a count over a window:
/// every player matched within the target adds [`OVERTIME_SHARE`], every player who goes
/// past it (granted overtime, or with no acceptable opponent at all) takes one. Bounded both
/// ways, so that a quiet hour does not save up a burst of overtime and a bad spell does not
/// forbid it for long.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Overtime {
    balance: f64,
}

/// What a pool keeps between waves for pacing: what it has learned of its arrivals and its
/// overtime allowance. Every pool keeps one (the queue summary shows every pool's arrival
/// rate); only quality waves read more than the rate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pacer {
    estimate: ArrivalEstimate,
    overtime: Overtime,
}

/// How one player stands in a quality wave.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Pace {
    /// The gap this player can expect if left to wait, at most their window.
    pub(crate) worth: f32,
    /// Would pass their budget before the next wave: takes whatever is acceptable.
    pub(crate) critical: bool,
    /// Within the target until this wave (for the allowance).
    pub(crate) within_target: bool,
    /// Will be past the target at the next wave if left unpaired now, and was not granted
    /// overtime (which is paid when granted).
    pub(crate) crossing: bool,
}

/// Buffers of the quality passes, kept between waves with the rest of the wave's scratch.
#[derive(Debug, Default)]
pub(crate) struct PaceScratch {
    /// Per candidate, in candidate order.
    pub(crate) paces: Vec<Pace>,
    /// Per rating band: arrivals per second and rating point.
    densities: Vec<f64>,
    /// Per rating band: the band's factor of [`expected_gap`], with the pool's thinness and
    /// the scale.
    band_factors: Vec<f64>,
    /// Per remaining budget, in steps: its factor of [`expected_gap`], NaN until a candidate
    /// needs it. A power per candidate would cost a big wave more than its pairing; its
    /// players share a few thousand remaining budgets at most.
    budget_factors: Vec<f64>,
}

impl Pacer {
    /// Counts a player who joined at `at_ms` with `rating`.
    pub(crate) fn record_arrival(&mut self, rating: u16, at_ms: u64) {
        self.estimate.record(rating, at_ms);
    }

    /// Arrivals per second at `now_ms`, all ratings together; `None` before any arrival.
    pub fn arrivals_per_s(&self, now_ms: u64) -> Option<f64> {
        self.estimate.arrivals_per_s(now_ms)
    }

    /// Whether the pacer still knows something worth keeping at `now_ms`: an arrival within
    /// the last few time constants.
    pub fn is_informed(&self, now_ms: u64) -> bool {
        self.estimate.folded_ms.is_some_and(|folded| {
            now_ms.saturating_sub(folded) < (5.0 * ESTIMATE_TAU_S * 1_000.0) as u64
        }) && self.arrivals_per_s(now_ms).is_some_and(|rate| rate > 0.01)
    }

    /// Folds the arrivals since the last wave; every wave does it, whatever its pacing, so
    /// that the pending counters stay small.
    pub(crate) fn fold(&mut self, now_ms: u64) {
        self.estimate.fold(now_ms);
    }

    /// Works out every candidate's [`Pace`] at `now_ms` into `scratch.paces`, granting
    /// overtime to critical players whose best acceptable gap is poor while the allowance
    /// lasts.
    pub(crate) fn prepare(
        &mut self,
        now_ms: u64,
        params: &MatchingParams,
        target_wait_ms: u64,
        candidates: &[Candidate],
        scratch: &mut PaceScratch,
    ) {
        debug_assert!(matches!(params.pacing, Pacing::Quality { .. }));
        self.estimate.densities(&mut scratch.densities);
        let thinness = self.estimate.thinness(&scratch.densities, target_wait_ms);
        let final_ms = (target_wait_ms * FINAL_BUDGET_FACTOR)
            .min(params.max_wait_ms.saturating_sub(params.wave_interval_ms))
            .max(target_wait_ms);
        let in_debt = self.overtime.balance < DEBT_LEVEL;
        scratch.band_factors.clear();
        scratch.band_factors.extend(
            scratch
                .densities
                .iter()
                .map(|&density| thinness * GAP_SCALE * power(density)),
        );
        let step_ms = BUDGET_STEP_MS.max(final_ms.div_ceil(BUDGET_STEPS));
        scratch.budget_factors.clear();
        scratch
            .budget_factors
            .resize((final_ms / step_ms + 1) as usize, f64::NAN);
        let PaceScratch {
            paces,
            band_factors,
            budget_factors,
            ..
        } = scratch;
        paces.clear();
        paces.extend(candidates.iter().map(|candidate| {
            let waited_ms = now_ms.saturating_sub(candidate.joined_at_ms);
            let within_target = waited_ms <= target_wait_ms;
            let budget_ms = if within_target {
                target_wait_ms
            } else {
                final_ms
            };
            let next_wave_ms = waited_ms + params.wave_interval_ms;
            let critical = next_wave_ms > budget_ms || in_debt;
            // A critical player's worth is never read.
            let worth = if critical {
                0.0
            } else {
                let remaining_ms = budget_ms - waited_ms;
                let factor = &mut budget_factors[(remaining_ms / step_ms) as usize];
                if factor.is_nan() {
                    *factor = power(((remaining_ms / step_ms) * step_ms) as f64 / 1_000.0);
                }
                let worth = band_factors[band(candidate.rating)] * *factor;
                worth.min(f64::from(candidate.window)) as f32
            };
            Pace {
                worth,
                critical,
                within_target,
                crossing: within_target && next_wave_ms > target_wait_ms,
            }
        }));
        let target_s = target_wait_ms as f64 / 1_000.0;
        for (index, candidate) in candidates.iter().enumerate() {
            // A player crossing the target is critical: the next wave would be too late.
            if !scratch.paces[index].crossing || self.overtime.balance < 1.0 {
                continue;
            }
            let Some(best_gap) = nearest_acceptable_gap(candidates, index) else {
                continue;
            };
            let eased = 2f64.powf((1.0 - self.overtime.balance) / GRANT_EASE);
            let density = scratch.densities[band(candidate.rating)];
            if f64::from(best_gap)
                > GRANT_FACTOR * eased * expected_gap(density, target_s, thinness)
            {
                self.overtime.balance -= 1.0;
                scratch.paces[index] = Pace {
                    worth: 0.0,
                    critical: false,
                    within_target: true,
                    crossing: false,
                };
            }
        }
    }

    /// Settles the allowance after a quality wave: `paired` tells, per candidate, whether the
    /// wave paired them.
    pub(crate) fn settle(&mut self, paces: &[Pace], paired: impl Iterator<Item = bool>) {
        for (pace, paired) in paces.iter().zip(paired) {
            if paired && pace.within_target {
                self.overtime.balance += OVERTIME_SHARE;
            } else if !paired && pace.crossing {
                self.overtime.balance -= 1.0;
            }
        }
        self.overtime.balance = self.overtime.balance.clamp(ALLOWANCE_FLOOR, ALLOWANCE_CAP);
    }
}

/// The smallest gap between candidate `index` and a candidate acceptable to them: the nearest
/// acceptable one on each side, candidates being in rating order.
fn nearest_acceptable_gap(candidates: &[Candidate], index: usize) -> Option<u16> {
    let mine = &candidates[index];
    let within = |other: &&Candidate| other.rating.abs_diff(mine.rating) <= mine.window;
    let below = candidates[..index]
        .iter()
        .rev()
        .take_while(within)
        .find(|other| mine.accepts(other));
    let above = candidates[index + 1..]
        .iter()
        .take_while(within)
        .find(|other| mine.accepts(other));
    below
        .into_iter()
        .chain(above)
        .map(|other| other.rating.abs_diff(mine.rating))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An estimate that saw `per_s` arrivals a second at ratings 1000–1999 from `from_ms` to
    /// `to_ms`, folded every 200 ms as waves fold it.
    fn observe(estimate: &mut ArrivalEstimate, per_s: u64, from_ms: u64, to_ms: u64) {
        let every_ms = 1_000 / per_s;
        let mut next_fold = from_ms;
        for (n, at_ms) in (from_ms..to_ms).step_by(every_ms as usize).enumerate() {
            while next_fold <= at_ms {
                estimate.fold(next_fold);
                next_fold += 200;
            }
            estimate.record(1_000 + (n as u16 * 37) % 1_000, at_ms);
        }
        estimate.fold(to_ms);
    }

    #[test]
    fn a_new_estimate_is_close_within_seconds() {
        // As after a restart: nothing known, then arrivals.
        let mut estimate = ArrivalEstimate::default();
        assert_eq!(estimate.arrivals_per_s(0), None);
        observe(&mut estimate, 20, 0, 6_000);
        let rate = estimate.arrivals_per_s(6_000).unwrap();
        assert!((18.0..=22.0).contains(&rate), "{rate} after 6 s");
    }

    #[test]
    fn the_estimate_follows_a_tenfold_jump_within_half_a_minute() {
        let mut estimate = ArrivalEstimate::default();
        observe(&mut estimate, 4, 0, 120_000);
        let before = estimate.arrivals_per_s(120_000).unwrap();
        assert!((3.6..=4.4).contains(&before), "{before}");
        observe(&mut estimate, 40, 120_000, 150_000);
        let after = estimate.arrivals_per_s(150_000).unwrap();
        assert!(after >= 30.0, "{after} 30 s after the jump");
    }

    #[test]
    fn densities_follow_the_ratings() {
        let mut estimate = ArrivalEstimate::default();
        observe(&mut estimate, 20, 0, 60_000);
        let mut densities = Vec::new();
        estimate.densities(&mut densities);
        // 20 a second over 1000 points: 0.02 per second and point inside, none far outside.
        let inside = densities[band(1_500)];
        assert!((0.017..=0.023).contains(&inside), "{inside}");
        assert_eq!(densities[band(3_000)], 0.0);
    }

    #[test]
    fn the_allowance_earns_one_in_twenty_five_and_is_bounded() {
        let mut pacer = Pacer::default();
        let matched = Pace {
            within_target: true,
            ..Pace::default()
        };
        pacer.settle(&[matched; 50], std::iter::repeat(true));
        assert!((pacer.overtime.balance - 2.0).abs() < 1e-9);
        pacer.settle(&[matched; 10_000], std::iter::repeat(true));
        assert_eq!(pacer.overtime.balance, ALLOWANCE_CAP);
        let crossing = Pace {
            within_target: true,
            crossing: true,
            ..Pace::default()
        };
        pacer.settle(&[crossing; 100], std::iter::repeat(false));
        assert_eq!(pacer.overtime.balance, ALLOWANCE_FLOOR);
    }

    #[test]
    fn waiting_is_worth_less_with_more_arrivals_or_less_budget() {
        assert!(expected_gap(0.02, 3.0, 1.0) < expected_gap(0.002, 3.0, 1.0));
        assert!(expected_gap(0.02, 3.0, 1.0) < expected_gap(0.02, 0.5, 1.0));
        assert!(expected_gap(0.0, 3.0, 1.0).is_finite());
    }
}
