//! Quality pacing measured the way the replay example measures it: seeded synthetic traces
//! shaped like `sample-2000.jsonl` (Poisson arrivals, ratings ~ N(1500, 300), 10% of the
//! players cancel 0.5–30 s after joining), replayed on the embedded engine and its manual
//! clock, under a pools file that sets the pacing.
//!
//! The traces are long (20,000 players at 40 a second over 3 pools): after the last arrival
//! the pools drain with nobody left to meet, and the players then waiting pair with whatever
//! is left; over a short trace that end weighs more than a running pool ever sees.
//! Set `MATCHWELL_TEST_SEED` to replay a run with another seed.

use matchwell::PoolCatalog;
use matchwell::replay::{ReplaySummary, SyntheticTrace, TraceOp, TracePhase, replay_ops};

/// The seed to use: `MATCHWELL_TEST_SEED` when set (to replay a failure), else `default`.
fn seed_or(default: u64) -> u64 {
    std::env::var("MATCHWELL_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(default)
}

/// A pools file serving `time_controls` (standard, rated) with `pacing` lines in
/// `[defaults]`.
fn pools(time_controls: &[String], pacing: &str) -> PoolCatalog {
    let mut text = format!("[defaults]\n{pacing}\n");
    for time_control in time_controls {
        text.push_str(&format!("[[pool]]\ntime_control = \"{time_control}\"\n"));
    }
    PoolCatalog::parse(&text, "pools.toml").expect("a valid pools file")
}

fn quality(target_wait_s: u64) -> String {
    format!("pacing = \"quality\"\ntarget_wait_s = {target_wait_s}")
}

/// Replays `ops` under `catalog` and returns its figures and output lines.
fn run(ops: &[TraceOp], catalog: PoolCatalog) -> (ReplaySummary, Vec<serde_json::Value>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut out = Vec::new();
    let summary = runtime
        .block_on(replay_ops(ops.iter().cloned(), &mut out, catalog, 7))
        .expect("the replay runs");
    let lines = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    (summary, lines)
}

/// The figures the targets are stated in.
#[derive(Debug)]
struct Figures {
    mean_gap: f64,
    wait_p95_ms: u64,
    matched_percent: f64,
}

fn figures(summary: &ReplaySummary) -> Figures {
    Figures {
        mean_gap: summary.mean_gap().expect("matches"),
        wait_p95_ms: summary.matched_wait_p95_ms.expect("matches"),
        matched_percent: summary.matched_percent().expect("players"),
    }
}

/// Quality pacing with `target_wait_s` against eager pacing on the same long trace.
fn check_target(seed: u64, target_wait_s: u64, max_gap: f64, matched_slack: f64) {
    let shape = SyntheticTrace::sample_shaped(20_000, 40.0);
    let ops = shape.generate(seed);
    let eager = figures(&run(&ops, pools(&shape.time_controls, "")).0);
    let paced = figures(&run(&ops, pools(&shape.time_controls, &quality(target_wait_s))).0);
    println!("seed {seed}, target {target_wait_s} s: eager {eager:?}, quality {paced:?}");
    assert!(
        paced.wait_p95_ms <= target_wait_s * 1_000,
        "seed {seed}: wait p95 {} ms beyond the target",
        paced.wait_p95_ms
    );
    assert!(
        paced.matched_percent >= eager.matched_percent - matched_slack,
        "seed {seed}: {:.2}% matched, eager {:.2}%",
        paced.matched_percent,
        eager.matched_percent
    );
    assert!(
        paced.mean_gap <= max_gap,
        "seed {seed}: mean gap {:.2} above {max_gap}",
        paced.mean_gap
    );
}

/// Simple policies reach about 18.4 to 19.6 at a wait p95 of 3 s on such traces.
#[test]
fn a_three_second_target_pairs_closer_than_simple_policies() {
    check_target(seed_or(1), 3, 17.0, 0.5);
}

/// A simple policy reaches about 6.0 at 11.9 s, lichess-style waves about 9.1.
#[test]
fn a_twelve_second_target_pairs_closer_than_simple_policies() {
    check_target(seed_or(2), 12, 5.0, 2.0);
}

/// Waits of the players matched in the output `lines` whose match came at or after
/// `from_ms`, sorted.
fn waits_from(lines: &[serde_json::Value], from_ms: u64) -> Vec<u64> {
    let mut waits: Vec<u64> = lines
        .iter()
        .filter(|line| line["match_id"].is_string())
        .filter(|line| line["t_ms"].as_u64().expect("t_ms") >= from_ms)
        .flat_map(|line| {
            line["waits_ms"]
                .as_array()
                .expect("waits")
                .iter()
                .map(|wait| wait.as_u64().expect("a wait"))
                .collect::<Vec<_>>()
        })
        .collect();
    waits.sort_unstable();
    waits
}

fn p95(sorted: &[u64]) -> u64 {
    sorted[(sorted.len() * 95).div_ceil(100) - 1]
}

/// A pool whose arrival rate jumps tenfold (2 to 20 players a second in each pool): once the
/// estimate has had 30 s to follow, the budget holds again, before and after the jump.
#[test]
fn the_budget_holds_when_the_rate_jumps_tenfold() {
    let seed = seed_or(3);
    let mut shape = SyntheticTrace::sample_shaped(0, 1.0);
    shape.phases = vec![
        TracePhase {
            players: 3_600,
            arrivals_per_s: 6.0,
        },
        TracePhase {
            players: 18_000,
            arrivals_per_s: 60.0,
        },
    ];
    let ops = shape.generate(seed);
    let jump_ms = ops
        .iter()
        .filter(|op| matches!(op, TraceOp::Enqueue { .. }))
        .nth(3_600)
        .expect("the second phase")
        .t_ms();
    let (summary, lines) = run(&ops, pools(&shape.time_controls, &quality(12)));
    let settled_before = waits_from(&lines, 60_000);
    let before: Vec<u64> = {
        let until = waits_from(&lines, jump_ms);
        let mut before = settled_before.clone();
        for wait in until {
            let at = before.binary_search(&wait).expect("a later wait is a wait");
            before.remove(at);
        }
        before
    };
    let after = waits_from(&lines, jump_ms + 30_000);
    println!(
        "seed {seed}: jump at {jump_ms} ms, p95 before {} ms, after {} ms, {summary:?}",
        p95(&before),
        p95(&after)
    );
    assert!(p95(&before) <= 12_000, "seed {seed}: before the jump");
    assert!(p95(&after) <= 12_000, "seed {seed}: after the jump");
}

/// A quiet pool (one player a second): the budget holds, and no player waits longer than
/// eager pacing would let them before expiring: a player with an acceptable opponent is
/// paired by the final budget at the latest, whatever the estimate says.
#[test]
fn a_quiet_pool_keeps_its_budget_and_expires_nobody_eager_pacing_pairs() {
    let seed = seed_or(4);
    let mut shape = SyntheticTrace::sample_shaped(3_000, 1.0);
    shape.time_controls.truncate(1);
    let ops = shape.generate(seed);
    let (eager, _) = run(&ops, pools(&shape.time_controls, ""));
    let (paced, _) = run(&ops, pools(&shape.time_controls, &quality(30)));
    println!("seed {seed}: eager {eager:?}, quality {paced:?}");
    assert!(
        paced.matched_wait_p95_ms.expect("matches") <= 30_000,
        "seed {seed}"
    );
    assert!(
        paced.expired <= eager.expired,
        "seed {seed}: {} expired, eager {}",
        paced.expired,
        eager.expired
    );
}

/// The queue summary shows each pool's pacing, its arrival estimate and the trade-off of the
/// last minute.
#[test]
fn the_summary_shows_pacing_arrivals_and_the_last_minute() {
    use matchwell::{Engine, EnqueueRequest, Pacing, PoolSpec};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let catalog = pools(&["5+3".into()], &quality(3));
        let (builder, clock) = Engine::builder().pools(catalog).manual(0);
        let engine = builder.start().await.expect("the engine starts");
        let pool = PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap();
        // Ten players a second for a minute, ratings spread over 1400..1600.
        for n in 0..600u64 {
            clock.advance_to(n * 100);
            let request = EnqueueRequest {
                tenant: "default".into(),
                user_id: format!("u{n}").into(),
                pool: pool.clone(),
                rating: 1_400 + (n * 37 % 200) as u16,
                idempotency_key: None,
            };
            engine.enqueue(request).await.expect("enqueued");
            if n % 2 == 0 {
                engine.tick().await.expect("a tick");
            }
        }
        let summary = engine.summary("default").await.expect("a summary");
        let queue = &summary[0];
        assert_eq!(
            queue.pacing,
            Pacing::Quality {
                target_wait_ms: 3_000
            }
        );
        let rate = queue.arrivals_per_s.expect("an estimate");
        assert!((8.5..=11.5).contains(&rate), "{rate} arrivals per second");
        assert!(queue.matches_last_minute > 0);
        assert!(queue.matched_wait_p95_ms.expect("matches") <= 3_000);
        assert!(queue.mean_rating_gap.is_some());
        engine.shutdown().await;
    });
}
