//! The gap/wait frontier of pacing policies on seeded synthetic traces shaped like the sample
//! trace: eager pacing with several windows, lichess-style waves, quality pacing with several
//! targets, and the simple policies quality pacing is measured against.
//!
//! ```text
//! cargo run --release --example frontier                       # 4 traces of 20,000 players
//! cargo run --release --example frontier -- --seeds 8 --players 6000 --rate 40
//! ```
//!
//! Eager and quality pacing run through the replay (the embedded engine on its manual clock,
//! a pools file per row), exactly as `examples/replay.rs` measures them. The simple policies
//! are not engine modes: they run here, over the same traces, on the same clock (a wave every
//! 200 ms, operations applied between waves as the replay applies them), with the SPEC
//! windows. Each row is the mean over the traces of: mean rating gap, 95th percentile of the
//! matched players' waits, share of players matched.

use std::collections::HashMap;

use clap::Parser;
use matchwell::replay::{SyntheticTrace, TraceOp, replay_ops};
use matchwell::{EntryId, MatchingParams, PoolCatalog};
use matchwell_actors::matching::{Waiting, WaitingPool};

#[derive(Parser)]
#[command(about = "Mean gap, wait p95 and share matched of pacing policies on synthetic traces")]
struct Args {
    /// Traces (seeds 1 to N).
    #[arg(long, default_value_t = 4)]
    seeds: u64,
    /// Players per trace.
    #[arg(long, default_value_t = 20_000)]
    players: usize,
    /// Arrivals per second, all three pools together.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
}

/// What a policy did on one trace.
#[derive(Debug, Default)]
struct Figures {
    mean_gap: f64,
    wait_p95_s: f64,
    matched_percent: f64,
}

/// A simple policy, run outside the engine.
#[derive(Debug, Clone, Copy)]
enum Simple {
    /// Each player accepts gaps up to `points_per_s` × waited seconds ÷ (relative rating
    /// density)^`exponent`; each wave pairs the closest mutually acceptable neighbours first.
    Threshold { points_per_s: f64, exponent: f64 },
    /// Pairs gaps of at most `tiny` at once; a player who has waited `deadline_ms` takes the
    /// nearest acceptable player.
    Patient { tiny: u16, deadline_ms: u64 },
}

const WAVE_MS: u64 = 200;

/// Relative density of the trace's ratings at `rating` (1 at the mean): the policies know
/// the true distribution, which only flatters them.
fn relative_density(rating: u16) -> f64 {
    let z = (f64::from(rating) - 1_500.0) / 300.0;
    (-z * z / 2.0).exp()
}

/// One wave of `policy` over `pool` at `now`; returns (gap, wait, wait) per pair.
fn simple_wave(
    pool: &mut WaitingPool,
    now: u64,
    params: &MatchingParams,
    policy: Simple,
) -> Vec<(u16, u64, u64)> {
    pool.expire(now, params);
    let players: Vec<(u16, Waiting)> = pool.iter().collect();
    let waited = |i: usize| now - players[i].1.joined_at_ms;
    let acceptable = |i: usize, j: usize| {
        players[i].0.abs_diff(players[j].0)
            <= params.window(waited(i)).min(params.window(waited(j)))
    };
    let mut paired = vec![false; players.len()];
    let mut pairs = Vec::new();
    let mut closest_first = |ok: &dyn Fn(usize, usize, u16) -> bool, paired: &mut Vec<bool>| {
        let mut edges = Vec::new();
        for i in 0..players.len() {
            for j in i + 1..players.len().min(i + 9) {
                let gap = players[j].0 - players[i].0;
                if acceptable(i, j) && ok(i, j, gap) {
                    edges.push((
                        gap,
                        players[i].1.joined_at_ms + players[j].1.joined_at_ms,
                        i,
                        j,
                    ));
                }
            }
        }
        edges.sort_unstable();
        for (_, _, i, j) in edges {
            if !paired[i] && !paired[j] {
                paired[i] = true;
                paired[j] = true;
                pairs.push((i, j));
            }
        }
    };
    match policy {
        Simple::Threshold {
            points_per_s,
            exponent,
        } => {
            let limit: Vec<f64> = (0..players.len())
                .map(|i| {
                    points_per_s * waited(i) as f64
                        / 1_000.0
                        / relative_density(players[i].0).powf(exponent)
                })
                .collect();
            closest_first(
                &|i, j, gap| f64::from(gap) <= limit[i].min(limit[j]),
                &mut paired,
            );
        }
        Simple::Patient { tiny, deadline_ms } => {
            closest_first(&|_, _, gap| gap <= tiny, &mut paired);
            let mut due: Vec<usize> = (0..players.len())
                .filter(|&i| !paired[i] && waited(i) >= deadline_ms)
                .collect();
            due.sort_by_key(|&i| (players[i].1.joined_at_ms, i));
            for i in due {
                if paired[i] {
                    continue;
                }
                let nearest = (0..players.len())
                    .filter(|&j| j != i && !paired[j] && acceptable(i, j))
                    .min_by_key(|&j| {
                        (
                            players[i].0.abs_diff(players[j].0),
                            players[j].1.joined_at_ms,
                        )
                    });
                if let Some(j) = nearest {
                    paired[i] = true;
                    paired[j] = true;
                    pairs.push((i, j));
                }
            }
        }
    }
    pairs
        .into_iter()
        .map(|(i, j)| {
            pool.remove(players[i].0, players[i].1.id);
            pool.remove(players[j].0, players[j].1.id);
            (players[i].0.abs_diff(players[j].0), waited(i), waited(j))
        })
        .collect()
}

/// Runs `policy` over `ops` as the replay would: operations between waves, a wave every
/// 200 ms, until nobody is left.
fn run_simple(ops: &[TraceOp], policy: Simple) -> Figures {
    let params = MatchingParams::default();
    let mut pools: HashMap<String, WaitingPool> = HashMap::new();
    let mut users: HashMap<&str, (String, u16, EntryId)> = HashMap::new();
    let (mut players, mut gap_sum, mut waits) = (0usize, 0u64, Vec::new());
    let mut next_wave = 0;
    let mut wave = |now: u64, pools: &mut HashMap<String, WaitingPool>| {
        let mut keys: Vec<String> = pools.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let pool = pools.get_mut(&key).expect("listed");
            for (gap, a, b) in simple_wave(pool, now, &params, policy) {
                gap_sum += u64::from(gap);
                waits.extend([a, b]);
            }
        }
    };
    for (n, op) in ops.iter().enumerate() {
        while next_wave <= op.t_ms() {
            wave(next_wave, &mut pools);
            next_wave += WAVE_MS;
        }
        match op {
            TraceOp::Enqueue {
                t_ms,
                user,
                rating,
                time_control,
                ..
            } => {
                let id = EntryId::new(n as u64 + 1).expect("ids start at one");
                players += 1;
                let waiting = Waiting {
                    id,
                    joined_at_ms: *t_ms,
                    last_color: None,
                };
                pools
                    .entry(time_control.clone())
                    .or_default()
                    .insert(*rating, waiting);
                users.insert(user.as_str(), (time_control.clone(), *rating, id));
            }
            TraceOp::Cancel { user, .. } => {
                // A player already paired is no longer in the pool: nothing to remove.
                if let Some((pool, rating, id)) = users.get(user.as_str()) {
                    if let Some(pool) = pools.get_mut(pool) {
                        pool.remove(*rating, *id);
                    }
                }
            }
        }
    }
    while pools.values().any(|pool| !pool.is_empty()) {
        wave(next_wave, &mut pools);
        next_wave += WAVE_MS;
    }
    waits.sort_unstable();
    Figures {
        mean_gap: 2.0 * gap_sum as f64 / waits.len() as f64,
        wait_p95_s: waits[(waits.len() * 95).div_ceil(100) - 1] as f64 / 1_000.0,
        matched_percent: 100.0 * waits.len() as f64 / players as f64,
    }
}

/// Runs `ops` through the replay under a pools file with `settings` in `[defaults]`.
async fn run_engine(
    ops: &[TraceOp],
    time_controls: &[String],
    settings: &str,
) -> anyhow::Result<Figures> {
    let mut text = format!("[defaults]\n{settings}\n");
    for time_control in time_controls {
        text.push_str(&format!("[[pool]]\ntime_control = \"{time_control}\"\n"));
    }
    let catalog = PoolCatalog::parse(&text, "frontier")?;
    let summary = replay_ops(ops.iter().cloned(), &mut std::io::sink(), catalog, 0).await?;
    Ok(Figures {
        mean_gap: summary.mean_gap().unwrap_or(0.0),
        wait_p95_s: summary.matched_wait_p95_ms.unwrap_or(0) as f64 / 1_000.0,
        matched_percent: summary.matched_percent().unwrap_or(0.0),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = SyntheticTrace::sample_shaped(args.players, args.rate);
    let traces: Vec<Vec<TraceOp>> = (1..=args.seeds).map(|seed| shape.generate(seed)).collect();
    let mut rows: Vec<(String, String)> = Vec::new();
    for window in [25, 50, 100, 200] {
        rows.push((
            format!("eager, initial window {window}"),
            format!("initial_window = {window}"),
        ));
    }
    rows.push((
        "eager, 12 s waves (lichess-style)".into(),
        "wave_interval_ms = 12000".into(),
    ));
    for target in [1, 2, 3, 5, 8, 12] {
        rows.push((
            format!("quality, target {target} s"),
            format!("pacing = \"quality\"\ntarget_wait_s = {target}"),
        ));
    }
    let simple = [
        (
            "simple threshold 30/s ÷ density",
            Simple::Threshold {
                points_per_s: 30.0,
                exponent: 1.0,
            },
        ),
        (
            "simple threshold 2.8/s",
            Simple::Threshold {
                points_per_s: 2.8,
                exponent: 0.0,
            },
        ),
        (
            "patient: gap ≤ 2 early, nearest at 2.8 s",
            Simple::Patient {
                tiny: 2,
                deadline_ms: 2_800,
            },
        ),
    ];
    println!(
        "{} traces of {} players at {}/s over 3 pools (seeds 1..={})\n",
        args.seeds, args.players, args.rate, args.seeds
    );
    println!("| policy | mean gap | wait p95 (s) | matched % |\n|---|---|---|---|");
    let print = |name: &str, figures: &[Figures]| {
        let mean =
            |f: fn(&Figures) -> f64| figures.iter().map(f).sum::<f64>() / figures.len() as f64;
        println!(
            "| {name} | {:.1} | {:.2} | {:.2} |",
            mean(|f| f.mean_gap),
            mean(|f| f.wait_p95_s),
            mean(|f| f.matched_percent)
        );
    };
    for (name, settings) in rows {
        let mut figures = Vec::new();
        for ops in &traces {
            figures.push(run_engine(ops, &shape.time_controls, &settings).await?);
        }
        print(&name, &figures);
    }
    for (name, policy) in simple {
        let figures: Vec<Figures> = traces.iter().map(|ops| run_simple(ops, policy)).collect();
        print(name, &figures);
    }
    Ok(())
}
