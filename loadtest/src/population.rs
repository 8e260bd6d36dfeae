//! Who arrives, when, with which rating, into which pool, and who cancels after how long.
//!
//! Every draw comes from one seeded generator per player (seeded from the run's seed and the
//! player's number), so a player is the same on every run of a seed whatever the order in
//! which tasks happen to run.

use std::ops::RangeInclusive;
use std::time::Duration;

use matchwell::PoolSpec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};

/// How players arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// Poisson arrivals at this many players per second.
    Rate(f64),
    /// This many players at all times; each one that leaves is replaced at once.
    Concurrent(usize),
}

/// A pool and its share of the arrivals.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolShare {
    /// The pool.
    pub spec: PoolSpec,
    /// Relative weight among the pools.
    pub share: f64,
}

/// The simulated population.
#[derive(Debug, Clone)]
pub struct Population {
    /// How players arrive.
    pub arrivals: Arrivals,
    /// Mean rating.
    pub rating_mean: f64,
    /// Standard deviation of the ratings.
    pub rating_sd: f64,
    /// Pools and their shares.
    pub pools: Vec<PoolShare>,
    /// Share of players who cancel while they wait.
    pub cancel_share: f64,
    /// When after joining those cancel (uniform).
    pub cancel_after: RangeInclusive<Duration>,
}

/// One simulated player.
#[derive(Debug, Clone, PartialEq)]
pub struct Player {
    /// Number of the player in the run.
    pub number: u64,
    /// User id, unique per seed and player.
    pub user: String,
    /// The pool joined.
    pub pool: PoolSpec,
    /// Rating, 0–4000.
    pub rating: u16,
    /// When, after joining, the player gives up if still waiting.
    pub cancel_after: Option<Duration>,
}

impl Population {
    /// Player `number` of the run seeded `seed`.
    pub fn player(&self, seed: u64, number: u64) -> Player {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let total: f64 = self.pools.iter().map(|pool| pool.share).sum();
        let mut pick = rng.random_range(0.0..total);
        let pool = self
            .pools
            .iter()
            .find(|pool| {
                pick -= pool.share;
                pick < 0.0
            })
            .unwrap_or(&self.pools[self.pools.len() - 1]);
        let rating = Normal::new(self.rating_mean, self.rating_sd)
            .map_or(self.rating_mean, |ratings| ratings.sample(&mut rng))
            .round()
            .clamp(0.0, 4_000.0) as u16;
        let cancel_after = rng.random_bool(self.cancel_share).then(|| {
            let (from, to) = (*self.cancel_after.start(), *self.cancel_after.end());
            from + (to - from).mul_f64(rng.random_range(0.0..=1.0))
        });
        Player {
            number,
            user: format!("lt{seed}-{number}"),
            pool: pool.spec.clone(),
            rating,
            cancel_after,
        }
    }

    /// Time between two arrivals at `rate` players per second, drawn from `rng`.
    pub fn next_gap(rate: f64, rng: &mut ChaCha8Rng) -> Duration {
        Exp::new(rate).map_or(Duration::ZERO, |gaps| {
            Duration::from_secs_f64(gaps.sample(rng))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn population(cancel_share: f64) -> Population {
        let pool = |tc: &str, share| PoolShare {
            spec: PoolSpec::new(tc.parse().unwrap(), "standard", true, None).unwrap(),
            share,
        };
        Population {
            arrivals: Arrivals::Rate(100.0),
            rating_mean: 1500.0,
            rating_sd: 300.0,
            pools: vec![pool("5+3", 3.0), pool("3+0", 1.0)],
            cancel_share,
            cancel_after: Duration::from_millis(500)..=Duration::from_secs(30),
        }
    }

    #[test]
    fn players_follow_the_shares_and_the_rating_distribution() {
        let population = population(0.1);
        let players: Vec<Player> = (0..20_000).map(|n| population.player(7, n)).collect();
        let blitz = players
            .iter()
            .filter(|player| player.pool == population.pools[0].spec)
            .count();
        assert!(
            (14_500..15_500).contains(&blitz),
            "{blitz} of 20,000 in the 3/4 pool"
        );
        let mean = players.iter().map(|p| f64::from(p.rating)).sum::<f64>() / 20_000.0;
        assert!((1_490.0..1_510.0).contains(&mean), "mean rating {mean}");
        let cancelling: Vec<Duration> = players.iter().filter_map(|p| p.cancel_after).collect();
        assert!(
            (1_800..2_200).contains(&cancelling.len()),
            "{} cancel",
            cancelling.len()
        );
        assert!(
            cancelling
                .iter()
                .all(|after| population.cancel_after.contains(after))
        );
        assert_eq!(
            population.player(7, 12),
            players[12],
            "a player is a function of the seed"
        );
        assert_ne!(population.player(8, 12), players[12]);
    }

    #[test]
    fn arrival_gaps_average_the_inverse_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let total: Duration = (0..10_000)
            .map(|_| Population::next_gap(500.0, &mut rng))
            .sum();
        let mean_ms = total.as_secs_f64() * 1_000.0 / 10_000.0;
        assert!(
            (1.9..2.1).contains(&mean_ms),
            "{mean_ms} ms between arrivals"
        );
    }
}
