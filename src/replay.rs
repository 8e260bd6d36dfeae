//! Trace replay (SPEC §9): a JSONL trace of enqueues and cancels run against the embedded
//! engine on a simulated clock, one JSON line out per match and per expired entry.
//!
//! Time only moves as the trace says: the clock jumps to each line's `t_ms`, and between lines
//! a tick runs at every multiple of the shortest wave interval, exactly as the background
//! matching task would. One shard and a fixed seed make the output the same on every run.
//! After the last line the clock keeps ticking until nobody is left searching.

use std::io::{BufRead, Write};

use compact_str::{CompactString, format_compact};
use matchwell_actors::model::MatchEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::TryRecvError;

use crate::{Engine, EngineError, EnqueueRequest, PoolCatalog, PoolSpec};
use matchwell_actors::pools::MAX_RATING;

/// Tenant the replayed players belong to.
const TENANT: &str = "default";

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum TraceOp {
    /// A player joins a pool.
    Enqueue {
        /// When, in milliseconds from the start of the trace.
        t_ms: u64,
        /// The player.
        user: CompactString,
        /// Their rating.
        rating: u16,
        /// `"M+S"`.
        time_control: String,
        /// Variant name.
        variant: CompactString,
        /// Rated or casual.
        rated: bool,
        /// Optional region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<CompactString>,
    },
    /// A player leaves the queue.
    Cancel {
        /// When.
        t_ms: u64,
        /// The player.
        user: CompactString,
    },
}

impl TraceOp {
    /// When the operation happens.
    pub fn t_ms(&self) -> u64 {
        match self {
            Self::Enqueue { t_ms, .. } | Self::Cancel { t_ms, .. } => *t_ms,
        }
    }
}

/// A seeded synthetic trace: players join standard rated pools at Poisson times with normal
/// ratings, and some of them cancel a while after joining.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticTrace {
    /// Stretches of the trace, one after the other: so many players at such a rate.
    pub phases: Vec<TracePhase>,
    /// Time controls of the pools (standard, rated), each player's chosen uniformly.
    pub time_controls: Vec<String>,
    /// Mean of the ratings.
    pub rating_mean: f64,
    /// Standard deviation of the ratings.
    pub rating_sd: f64,
    /// Share of the players who cancel.
    pub cancel_share: f64,
    /// A cancelling player cancels this long after joining, uniformly, in milliseconds.
    pub cancel_after_ms: std::ops::Range<u64>,
}

/// One stretch of a [`SyntheticTrace`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracePhase {
    /// Players joining during the stretch.
    pub players: usize,
    /// Their arrival rate, all pools together, per second.
    pub arrivals_per_s: f64,
}

impl SyntheticTrace {
    /// The shape of the sample trace (`sample-2000.jsonl`): three pools (5+3, 3+0, 15+10),
    /// ratings ~ N(1500, 300), 10% of the players cancel 0.5–30 s after joining.
    pub fn sample_shaped(players: usize, arrivals_per_s: f64) -> Self {
        Self {
            phases: vec![TracePhase {
                players,
                arrivals_per_s,
            }],
            time_controls: ["5+3", "3+0", "15+10"].map(String::from).to_vec(),
            rating_mean: 1_500.0,
            rating_sd: 300.0,
            cancel_share: 0.1,
            cancel_after_ms: 500..30_000,
        }
    }

    /// The trace drawn with `seed`, in time order.
    ///
    /// # Panics
    /// When a rate, the standard deviation or the cancel range is not positive.
    pub fn generate(&self, seed: u64) -> Vec<TraceOp> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ratings =
            Normal::new(self.rating_mean, self.rating_sd).expect("a positive rating deviation");
        let mut ops = Vec::new();
        let mut t_s = 0.0;
        let mut user = 0;
        for phase in &self.phases {
            let gaps = Exp::new(phase.arrivals_per_s).expect("a positive arrival rate");
            for _ in 0..phase.players {
                t_s += gaps.sample(&mut rng);
                let t_ms = (t_s * 1_000.0) as u64;
                let rating: f64 = ratings.sample(&mut rng);
                let pool = rng.random_range(0..self.time_controls.len());
                let user_id = format_compact!("u{user}");
                user += 1;
                if rng.random_bool(self.cancel_share) {
                    ops.push(TraceOp::Cancel {
                        t_ms: t_ms + rng.random_range(self.cancel_after_ms.clone()),
                        user: user_id.clone(),
                    });
                }
                ops.push(TraceOp::Enqueue {
                    t_ms,
                    user: user_id,
                    rating: rating.round().clamp(0.0, f64::from(MAX_RATING)) as u16,
                    time_control: self.time_controls[pool].clone(),
                    variant: "standard".into(),
                    rated: true,
                    region: None,
                });
            }
        }
        // Stable: a user's enqueue comes before their cancel, which is later anyway.
        ops.sort_by_key(|op| (op.t_ms(), matches!(op, TraceOp::Cancel { .. })));
        ops
    }
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ReplayLine {
    /// A match was formed.
    Match {
        /// When.
        t_ms: u64,
        /// Its id.
        match_id: String,
        /// Its pool's time control.
        time_control: String,
        /// Its pool's variant.
        variant: CompactString,
        /// The players, white first.
        players: [CompactString; 2],
        /// Their ratings.
        ratings: [u16; 2],
        /// How long each had waited.
        waits_ms: [u64; 2],
    },
    /// An entry expired.
    Expired {
        /// When.
        t_ms: u64,
        /// The player.
        expired: CompactString,
    },
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read or the output written.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A trace line is not valid.
    #[error("trace line {line}: {message}")]
    Trace {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Figures of a finished replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Trace lines read.
    pub operations: usize,
    /// Operations the engine refused (reported on the warning log).
    pub refused: usize,
    /// Cancels of players who were no longer searching (already matched or expired).
    pub late_cancels: usize,
    /// Matches formed.
    pub matches: usize,
    /// Entries expired.
    pub expired: usize,
    /// Players queued (enqueues the engine took).
    pub players: usize,
    /// Sum of the matches' rating gaps.
    pub gap_sum: u64,
    /// 95th percentile of the matched players' waits, in milliseconds (nearest rank).
    pub matched_wait_p95_ms: Option<u64>,
}

impl ReplaySummary {
    /// Mean rating gap of the matches.
    pub fn mean_gap(&self) -> Option<f64> {
        (self.matches > 0).then(|| self.gap_sum as f64 / self.matches as f64)
    }

    /// Share of the queued players who were matched, in percent.
    pub fn matched_percent(&self) -> Option<f64> {
        (self.players > 0).then(|| 200.0 * self.matches as f64 / self.players as f64)
    }
}

/// Replays `trace` against a fresh engine serving `catalog`; writes the output lines to `out`.
pub async fn replay(
    trace: impl BufRead,
    out: &mut impl Write,
    catalog: PoolCatalog,
    seed: u64,
) -> Result<ReplaySummary, ReplayError> {
    let mut lines = trace.lines().enumerate();
    let ops = std::iter::from_fn(move || {
        lines.find_map(|(number, line)| {
            let op = match line {
                Err(error) => Err(ReplayError::Io(error)),
                Ok(line) if line.trim().is_empty() => return None,
                Ok(line) => serde_json::from_str(&line).map_err(|error| ReplayError::Trace {
                    line: number + 1,
                    message: error.to_string(),
                }),
            };
            Some(op.map(|op| (number + 1, op)))
        })
    });
    replay_numbered(ops, out, catalog, seed).await
}

/// Replays the operations `ops` (a generated trace, say) like [`replay`].
pub async fn replay_ops(
    ops: impl IntoIterator<Item = TraceOp>,
    out: &mut impl Write,
    catalog: PoolCatalog,
    seed: u64,
) -> Result<ReplaySummary, ReplayError> {
    let numbered = ops
        .into_iter()
        .zip(1..)
        .map(|(op, number)| Ok((number, op)));
    replay_numbered(numbered, out, catalog, seed).await
}

/// Replays operations numbered by their line.
async fn replay_numbered(
    ops: impl Iterator<Item = Result<(usize, TraceOp), ReplayError>>,
    out: &mut impl Write,
    catalog: PoolCatalog,
    seed: u64,
) -> Result<ReplaySummary, ReplayError> {
    let step_ms = catalog
        .iter()
        .map(|pool| pool.params.wave_interval_ms)
        .min()
        .unwrap_or(200);
    let (builder, clock) = Engine::builder()
        .pools(catalog)
        .shards(1)
        .seed(seed)
        .event_capacity(1 << 20)
        .manual(0);
    let engine = builder.start().await?;
    let mut run = Run {
        engine: &engine,
        events: engine.events(),
        out,
        summary: ReplaySummary::default(),
        searching: 0,
        waits_ms: Vec::new(),
    };
    let mut next_tick_ms = 0;
    let mut last_ms = 0;
    for numbered in ops {
        let (number, op) = numbered?;
        if op.t_ms() < last_ms {
            return Err(ReplayError::Trace {
                line: number,
                message: format!("t_ms {} goes back in time (previous {last_ms})", op.t_ms()),
            });
        }
        last_ms = op.t_ms();
        while next_tick_ms <= op.t_ms() {
            clock.advance_to(next_tick_ms);
            run.tick().await?;
            next_tick_ms += step_ms;
        }
        clock.advance_to(op.t_ms());
        run.apply(op).await;
    }
    while run.searching > 0 {
        clock.advance_to(next_tick_ms);
        run.tick().await?;
        next_tick_ms += step_ms;
    }
    let mut summary = run.summary;
    run.waits_ms.sort_unstable();
    let rank = (run.waits_ms.len() * 95).div_ceil(100);
    summary.matched_wait_p95_ms = rank.checked_sub(1).map(|at| run.waits_ms[at]);
    engine.shutdown().await;
    Ok(summary)
}

struct Run<'a, W> {
    engine: &'a Engine,
    events: tokio::sync::broadcast::Receiver<MatchEvent>,
    out: &'a mut W,
    summary: ReplaySummary,
    /// Entries enqueued and not yet matched, cancelled or expired.
    searching: usize,
    /// Waits of the matched players.
    waits_ms: Vec<u64>,
}

impl<W: Write> Run<'_, W> {
    async fn apply(&mut self, op: TraceOp) {
        self.summary.operations += 1;
        let outcome = match op {
            TraceOp::Enqueue {
                user,
                rating,
                time_control,
                variant,
                rated,
                region,
                ..
            } => {
                let pool = time_control
                    .parse()
                    .map_err(|error| format!("{error}"))
                    .and_then(|time_control| {
                        PoolSpec::new(time_control, &variant, rated, region.as_deref())
                            .map_err(|error| error.to_string())
                    });
                match pool {
                    Ok(pool) => {
                        let request = EnqueueRequest {
                            tenant: TENANT.into(),
                            user_id: user,
                            pool,
                            rating,
                            idempotency_key: None,
                        };
                        self.engine
                            .enqueue(request)
                            .await
                            .map(|_| {
                                self.searching += 1;
                                self.summary.players += 1;
                            })
                            .map_err(|error| error.to_string())
                    }
                    Err(error) => Err(error),
                }
            }
            TraceOp::Cancel { user, .. } => match self.engine.active(TENANT, &user).searching {
                Some(entry) => self
                    .engine
                    .cancel(TENANT, entry.id)
                    .await
                    .map(|_| self.searching -= 1)
                    .map_err(|error| error.to_string()),
                None => {
                    self.summary.late_cancels += 1;
                    Ok(())
                }
            },
        };
        if let Err(reason) = outcome {
            self.summary.refused += 1;
            tracing::warn!(%reason, "trace operation refused");
        }
    }

    async fn tick(&mut self) -> Result<(), ReplayError> {
        self.engine.tick().await.map_err(EngineError::from)?;
        loop {
            let line = match self.events.try_recv() {
                Ok(MatchEvent::Matched { found }) => {
                    self.summary.matches += 1;
                    self.searching -= 2;
                    let wait = |index: usize| {
                        let player = &found.players[index];
                        let joined = self
                            .engine
                            .entry(TENANT, player.entry_id)
                            .map_or(found.created_at_ms, |entry| entry.joined_at_ms);
                        found.created_at_ms - joined
                    };
                    let waits_ms = [wait(0), wait(1)];
                    self.waits_ms.extend(waits_ms);
                    self.summary.gap_sum +=
                        u64::from(found.players[0].rating.abs_diff(found.players[1].rating));
                    ReplayLine::Match {
                        t_ms: found.created_at_ms,
                        match_id: found.match_id.to_string(),
                        time_control: found.pool.time_control.to_string(),
                        variant: found.pool.variant.clone(),
                        players: [
                            found.players[0].user_id.clone(),
                            found.players[1].user_id.clone(),
                        ],
                        ratings: [found.players[0].rating, found.players[1].rating],
                        waits_ms,
                    }
                }
                Ok(MatchEvent::Expired { entry }) => {
                    self.summary.expired += 1;
                    self.searching -= 1;
                    ReplayLine::Expired {
                        t_ms: entry.joined_at_ms + entry.wait_ms,
                        expired: entry.user_id,
                    }
                }
                Ok(MatchEvent::GameCreated { .. } | MatchEvent::GameFailed { .. }) => continue,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(error) => {
                    return Err(ReplayError::Io(std::io::Error::other(format!(
                        "event stream: {error}"
                    ))));
                }
            };
            serde_json::to_writer(&mut *self.out, &line).map_err(std::io::Error::from)?;
            self.out.write_all(b"\n")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn replay_text(trace: &str) -> (ReplaySummary, Vec<serde_json::Value>) {
        let mut out = Vec::new();
        let summary = replay(trace.as_bytes(), &mut out, PoolCatalog::builtin(), 7)
            .await
            .unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (summary, lines)
    }

    #[tokio::test]
    async fn pairs_expires_and_honours_cancels() {
        let trace = r#"
{"t_ms": 0, "op": "enqueue", "user": "u1", "rating": 1500, "time_control": "5+3", "variant": "standard", "rated": true}
{"t_ms": 900, "op": "enqueue", "user": "u2", "rating": 1530, "time_control": "5+3", "variant": "standard", "rated": true}
{"t_ms": 1000, "op": "enqueue", "user": "u3", "rating": 2500, "time_control": "5+3", "variant": "standard", "rated": true}
{"t_ms": 1100, "op": "enqueue", "user": "u4", "rating": 900, "time_control": "3+0", "variant": "standard", "rated": true}
{"t_ms": 1150, "op": "cancel", "user": "u4"}
"#;
        let (summary, lines) = replay_text(trace).await;
        assert_eq!(
            summary,
            ReplaySummary {
                operations: 5,
                refused: 0,
                late_cancels: 0,
                matches: 1,
                expired: 1,
                players: 4,
                gap_sum: 30,
                matched_wait_p95_ms: Some(1_000),
            }
        );
        assert_eq!(
            lines[0],
            serde_json::json!({"t_ms": 1000, "match_id": "m_1", "time_control": "5+3", "variant": "standard",
                "players": lines[0]["players"], "ratings": lines[0]["ratings"], "waits_ms": lines[0]["waits_ms"]})
        );
        let mut players: Vec<_> = lines[0]["players"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        let waits = lines[0]["waits_ms"].clone();
        let first_white = players[0] == "u1";
        players.sort();
        assert_eq!(players, vec!["u1", "u2"]);
        assert_eq!(
            waits,
            if first_white {
                serde_json::json!([1000, 100])
            } else {
                serde_json::json!([100, 1000])
            }
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"t_ms": 601_000, "expired": "u3"})
        );
    }

    #[tokio::test]
    async fn the_same_trace_gives_the_same_output() {
        let trace: String = (0..200)
            .map(|n| format!("{{\"t_ms\": {}, \"op\": \"enqueue\", \"user\": \"u{n}\", \"rating\": {}, \"time_control\": \"3+2\", \"variant\": \"standard\", \"rated\": true}}\n", n * 37, 1000 + (n * 7919) % 1000))
            .collect();
        assert_eq!(replay_text(&trace).await.1, replay_text(&trace).await.1);
    }

    #[tokio::test]
    async fn malformed_lines_stop_the_replay_with_their_number() {
        let trace = "{\"t_ms\": 0, \"op\": \"enqueue\", \"user\": \"u1\", \"rating\": 1500, \"time_control\": \"5+3\", \"variant\": \"standard\", \"rated\": true}\n{\"t_ms\": 5, \"op\": \"dance\"}\n";
        let error = replay(trace.as_bytes(), &mut Vec::new(), PoolCatalog::builtin(), 0)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ReplayError::Trace { line: 2, .. }),
            "{error}"
        );
        let backwards = "{\"t_ms\": 10, \"op\": \"cancel\", \"user\": \"u1\"}\n{\"t_ms\": 5, \"op\": \"cancel\", \"user\": \"u1\"}\n";
        let error = replay(
            backwards.as_bytes(),
            &mut Vec::new(),
            PoolCatalog::builtin(),
            0,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("goes back in time"), "{error}");
    }

    #[tokio::test]
    async fn refused_operations_are_counted_not_fatal() {
        let trace = "{\"t_ms\": 0, \"op\": \"enqueue\", \"user\": \"u1\", \"rating\": 1500, \"time_control\": \"7+7\", \"variant\": \"standard\", \"rated\": true}\n{\"t_ms\": 1, \"op\": \"cancel\", \"user\": \"u9\"}\n";
        let (summary, lines) = replay_text(trace).await;
        assert_eq!(
            (summary.operations, summary.refused, summary.late_cancels),
            (2, 1, 1)
        );
        assert!(lines.is_empty());
    }
}
