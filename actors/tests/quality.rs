//! Pairing quality against the optimum.
//!
//! A seeded synthetic population (Poisson arrivals, ratings ~ N(1500, 300)) flows through one
//! pool. Before every wave the same players are handed to an exact maximum-weight matching
//! (blossom algorithm, `mwmatching`) whose weights encode the same preference order as the
//! wave: maximum cardinality, then widening steps of the paired players, then smallest gaps.
//! The wave must pair as many players as the optimum and keep its mean gap within 5 % of it.
//! Set `MATCHWELL_TEST_SEED` to replay a run with another seed.

use matchwell_actors::ids::EntryId;
use matchwell_actors::matching::{Waiting, WaitingPool, WaveScratch};
use matchwell_actors::pools::MatchingParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};

struct Totals {
    waves: u64,
    pairs: u64,
    gap_sum: u64,
    optimal_pairs: u64,
    optimal_gap_sum: u64,
}

/// The optimum for the players waiting at `now_ms`: (pairs, total gap).
fn optimum(pool: &WaitingPool, now_ms: u64, params: &MatchingParams) -> (u64, u64) {
    let players: Vec<(u16, u16, u64)> = pool
        .iter()
        .map(|(rating, waiting)| {
            let waited = now_ms - waiting.joined_at_ms;
            (rating, params.window(waited), params.steps(waited))
        })
        .collect();
    // Lexicographic weights: a widening step is worth more than any possible sum of gap terms.
    let step_weight = 1 + (players.len() as i32 / 2 + 1) * i32::from(params.max_window + 1);
    let mut edges = Vec::new();
    for (i, a) in players.iter().enumerate() {
        for (j, b) in players.iter().enumerate().skip(i + 1) {
            let gap = a.0.abs_diff(b.0);
            if gap <= a.1.min(b.1) {
                let steps = (a.2 + b.2) as i32;
                edges.push((
                    i,
                    j,
                    step_weight * steps + i32::from(params.max_window + 1 - gap),
                ));
            }
        }
    }
    if edges.is_empty() {
        return (0, 0);
    }
    let mates = mwmatching::Matching::new(edges).max_cardinality().solve();
    let (mut pairs, mut gap_sum) = (0, 0);
    for (i, &j) in mates.iter().enumerate() {
        if j != mwmatching::SENTINEL && i < j {
            pairs += 1;
            gap_sum += u64::from(players[i].0.abs_diff(players[j].0));
        }
    }
    (pairs, gap_sum)
}

fn simulate(seed: u64, players: u64, arrivals_per_s: f64, params: MatchingParams) -> Totals {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gaps_ms = Exp::new(arrivals_per_s / 1_000.0).unwrap();
    let ratings = Normal::new(1500.0, 300.0).unwrap();
    let mut arrivals = Vec::with_capacity(players as usize);
    let mut t = 0.0;
    for n in 1..=players {
        let gap: f64 = gaps_ms.sample(&mut rng);
        t += gap;
        let rating: f64 = ratings.sample(&mut rng);
        let rating = rating.round().clamp(0.0, 4000.0) as u16;
        arrivals.push((t as u64, rating, EntryId::new(n).unwrap()));
    }
    let mut pool = WaitingPool::new();
    let mut scratch = WaveScratch::default();
    let mut totals = Totals {
        waves: 0,
        pairs: 0,
        gap_sum: 0,
        optimal_pairs: 0,
        optimal_gap_sum: 0,
    };
    let mut next = arrivals.iter().peekable();
    let mut now_ms = 0;
    while next.peek().is_some() || !pool.is_empty() {
        now_ms += params.wave_interval_ms;
        while let Some(&&(at, rating, id)) = next.peek() {
            if at > now_ms {
                break;
            }
            pool.insert(
                rating,
                Waiting {
                    id,
                    joined_at_ms: at,
                    last_color: None,
                },
            );
            next.next();
        }
        pool.expire(now_ms, &params);
        let (optimal_pairs, optimal_gap_sum) = optimum(&pool, now_ms, &params);
        let outcome = pool.run_wave(now_ms, &params, &mut scratch);
        assert!(
            outcome.expired.is_empty(),
            "expired entries were removed before the wave"
        );
        totals.waves += 1;
        totals.pairs += outcome.pairs.len() as u64;
        totals.gap_sum += outcome
            .pairs
            .iter()
            .map(|pair| u64::from(pair.gap()))
            .sum::<u64>();
        totals.optimal_pairs += optimal_pairs;
        totals.optimal_gap_sum += optimal_gap_sum;
    }
    totals
}

fn check(seed: u64, players: u64, arrivals_per_s: f64) {
    let totals = simulate(seed, players, arrivals_per_s, MatchingParams::default());
    let mean = totals.gap_sum as f64 / totals.pairs as f64;
    let optimal_mean = totals.optimal_gap_sum as f64 / totals.optimal_pairs as f64;
    println!(
        "seed {seed}, {players} players at {arrivals_per_s}/s: {} waves, {} pairs (optimum {}), mean gap {mean:.2} (optimum {optimal_mean:.2}, ratio {:.4})",
        totals.waves,
        totals.pairs,
        totals.optimal_pairs,
        mean / optimal_mean
    );
    assert!(
        totals.pairs >= totals.optimal_pairs,
        "seed {seed}: paired {} players, the optimum {}",
        2 * totals.pairs,
        2 * totals.optimal_pairs
    );
    assert!(
        mean <= optimal_mean * 1.05,
        "seed {seed}: mean gap {mean:.2} is more than 5% above the optimum {optimal_mean:.2}"
    );
}

#[test]
fn waves_are_within_five_percent_of_the_optimum_at_a_steady_rate() {
    check(seed_or(7), 20_000, 25.0);
}

#[test]
fn waves_are_within_five_percent_of_the_optimum_under_bursts() {
    check(seed_or(11), 20_000, 250.0);
}

/// The seed to use: `MATCHWELL_TEST_SEED` when set (to replay a failure), else `default`.
fn seed_or(default: u64) -> u64 {
    std::env::var("MATCHWELL_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(default)
}

/// Waves over players with very different waiting times (and so very different windows): the
/// case where adjacent pairing alone is not optimal.
#[test]
fn waves_with_mixed_waiting_times_are_within_five_percent_of_the_optimum() {
    let seed = seed_or(23);
    let params = MatchingParams::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ratings = Normal::new(1500.0, 300.0).unwrap();
    let mut scratch = WaveScratch::default();
    let now_ms = 1_000_000;
    let (mut pairs, mut gap_sum, mut optimal_pairs, mut optimal_gap_sum) = (0, 0, 0, 0);
    let mut next_id = 1;
    for _ in 0..400 {
        let mut pool = WaitingPool::new();
        for _ in 0..rng.random_range(2..120) {
            let rating: f64 = ratings.sample(&mut rng);
            let waited_ms = rng.random_range(0..300_000);
            let id = EntryId::new(next_id).unwrap();
            next_id += 1;
            pool.insert(
                rating.round().clamp(0.0, 4000.0) as u16,
                Waiting {
                    id,
                    joined_at_ms: now_ms - waited_ms,
                    last_color: None,
                },
            );
        }
        let (best_pairs, best_gap_sum) = optimum(&pool, now_ms, &params);
        let outcome = pool.run_wave(now_ms, &params, &mut scratch);
        pairs += outcome.pairs.len() as u64;
        gap_sum += outcome
            .pairs
            .iter()
            .map(|pair| u64::from(pair.gap()))
            .sum::<u64>();
        optimal_pairs += best_pairs;
        optimal_gap_sum += best_gap_sum;
    }
    let mean = gap_sum as f64 / pairs as f64;
    let optimal_mean = optimal_gap_sum as f64 / optimal_pairs as f64;
    println!(
        "seed {seed}, mixed waits: {pairs} pairs (optimum {optimal_pairs}), mean gap {mean:.2} (optimum {optimal_mean:.2}, ratio {:.4})",
        mean / optimal_mean
    );
    // The augmenting-path pass does not shrink odd cycles (blossoms), so on waves built to be
    // hard it may miss a pair in many thousands.
    assert!(
        pairs * 10_000 >= optimal_pairs * 9_995,
        "seed {seed}: {pairs} pairs, the optimum {optimal_pairs}"
    );
    assert!(
        mean <= optimal_mean * 1.05,
        "seed {seed}: mean gap {mean:.2} vs optimum {optimal_mean:.2}"
    );
}
