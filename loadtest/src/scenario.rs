//! What the simulated clients do: players who arrive, queue, wait and leave; or connections
//! going round enqueue → status → cancel → status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinSet;
use tokio::time::sleep_until;

use crate::LoadTestError;
use crate::cpu;
use crate::population::{Arrivals, Player, Population};
use crate::report::{Outcome, Recorder, Report, RunInfo};
use crate::settings::{Plan, Scenario};
use crate::target::{Caller, Cancelled, Seen, Status, Target};

/// What every player task shares.
struct Run {
    plan: Plan,
    target: Target,
    recorder: Recorder,
    /// Players still waiting then cancel and count as unfinished.
    give_up_at: Instant,
    /// Numbers of the players that arrived.
    next_player: AtomicU64,
}

/// Runs `plan` and reports.
pub(crate) async fn run(plan: &Plan) -> Result<Report, LoadTestError> {
    let target = Target::open(plan).await?;
    let started = Instant::now();
    let run = Arc::new(Run {
        plan: plan.clone(),
        target,
        recorder: Recorder::default(),
        give_up_at: started + plan.duration + plan.drain,
        next_player: AtomicU64::new(0),
    });
    let harness_cpu = cpu::of_self();
    let server_cpu = plan.server_pid.and_then(cpu::of_process);
    let progress = plan.progress.then(|| progress_line(Arc::clone(&run)));
    let outcome = match plan.scenario {
        Scenario::Players => players(&run, started).await,
        Scenario::Round => rounds(&run, started).await,
    };
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    outcome?;
    let since = |before: Option<Duration>, now: Option<Duration>| {
        before
            .zip(now)
            .map(|(before, now)| now.saturating_sub(before))
    };
    let report = run.recorder.report(
        RunInfo {
            target: run.target.describe(),
            scenario: match plan.scenario {
                Scenario::Players => "players".into(),
                Scenario::Round => "round".into(),
            },
            seed: plan.seed,
        },
        elapsed,
        since(harness_cpu, cpu::of_self()).unwrap_or_default(),
        since(server_cpu, plan.server_pid.and_then(cpu::of_process)),
    );
    if let Ok(run) = Arc::try_unwrap(run) {
        run.target.close().await;
    }
    Ok(report)
}

/// A progress line on standard error, redrawn a few times a second (hidden when standard
/// error is not a terminal).
fn progress_line(run: Arc<Run>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        loop {
            ticks.tick().await;
            let (arrived, gone, requests) = run.recorder.progress();
            let seconds = started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{arrived} players arrived, {} waiting, {requests} requests ({:.0}/s)",
                arrived.saturating_sub(gone),
                requests as f64 / seconds
            ));
            bar.tick();
        }
    })
}

/// Players arrive until the run's duration is over; then the ones still waiting get the
/// drain period to finish.
async fn players(run: &Arc<Run>, started: Instant) -> Result<(), LoadTestError> {
    let arrivals_end = started + run.plan.duration;
    let mut live = JoinSet::new();
    match run.plan.population.arrivals {
        Arrivals::Rate(rate) => {
            let mut rng = ChaCha8Rng::seed_from_u64(run.plan.seed);
            let mut next = started;
            loop {
                next += Population::next_gap(rate, &mut rng);
                if next >= arrivals_end {
                    break;
                }
                sleep_until(next.into()).await;
                let run = Arc::clone(run);
                live.spawn(async move { run.one_player().await });
                // Collect the finished ones as we go, so the set stays the size of the
                // players waiting.
                while let Some(done) = live.try_join_next() {
                    done.map_err(|error| LoadTestError::Settings(error.to_string()))??;
                }
            }
        }
        Arrivals::Concurrent(players) => {
            for _ in 0..players {
                let run = Arc::clone(run);
                live.spawn(async move {
                    while Instant::now() < arrivals_end {
                        run.one_player().await?;
                    }
                    Ok(())
                });
            }
        }
    }
    while let Some(done) = live.join_next().await {
        done.map_err(|error| LoadTestError::Settings(error.to_string()))??;
    }
    Ok(())
}

impl Run {
    /// One player's stay: queue, wait for the match (or give up), leave.
    async fn one_player(&self) -> Result<(), LoadTestError> {
        let number = self.next_player.fetch_add(1, Ordering::Relaxed);
        let player = self.plan.population.player(self.plan.seed, number);
        let caller = self.target.caller(&player.user)?;
        let recorder = &self.recorder;
        recorder.arrived();
        let sent = Instant::now();
        let entry = match self.target.enqueue(&caller, &player, recorder).await {
            Ok(entry) => entry,
            Err(failure) => {
                recorder.error(failure);
                recorder.left(Outcome::Failed);
                return Ok(());
            }
        };
        // A player who planned to cancel before the run ends does; the others give up when
        // it ends, and count as unfinished.
        let cancel_at = player
            .cancel_after
            .map(|after| sent + after)
            .filter(|&at| at < self.give_up_at);
        let waited = tokio::select! {
            settled = self.target.settled(&caller, &entry.id, &self.plan, recorder) => Some(settled),
            () = sleep_until(cancel_at.unwrap_or(self.give_up_at).into()) => None,
        };
        let settled = match waited {
            Some(settled) => settled,
            None => match self.target.cancel(&caller, &entry.id, recorder).await {
                Ok(Cancelled::Done) => {
                    recorder.left(if cancel_at.is_some() {
                        Outcome::Cancelled
                    } else {
                        Outcome::Unfinished
                    });
                    return Ok(());
                }
                // Matched (or expired) meanwhile: what it became.
                Ok(Cancelled::TooLate) => self.target.status(&caller, &entry.id, recorder).await,
                Err(failure) => Err(failure),
            },
        };
        match settled {
            Ok(seen) => self.leave(&seen, sent),
            Err(failure) => {
                recorder.error(failure);
                recorder.left(Outcome::Unfinished);
            }
        }
        Ok(())
    }

    /// Records how the stay of a player who sent its enqueue at `sent` ended.
    fn leave(&self, seen: &Seen, sent: Instant) {
        let recorder = &self.recorder;
        match (seen.status, &seen.found) {
            (Status::Matched, Some((match_id, gap))) => {
                recorder.matched(match_id, sent.elapsed(), seen.server_wait, *gap);
            }
            (Status::Cancelled, _) => recorder.left(Outcome::Cancelled),
            (Status::Expired, _) => recorder.left(Outcome::Expired),
            _ => {
                recorder.error("body");
                recorder.left(Outcome::Unfinished);
            }
        }
    }
}

/// Each connection goes round enqueue → status → cancel → status until the run's duration
/// is over, for users of its own (enough that no user meets the server's per-user limits).
async fn rounds(run: &Arc<Run>, started: Instant) -> Result<(), LoadTestError> {
    const USERS_PER_CONNECTION: u64 = 50;
    let end = started + run.plan.duration;
    let mut lanes = JoinSet::new();
    for lane in 0..run.plan.connections as u64 {
        let run = Arc::clone(run);
        lanes.spawn(async move {
            let callers: Vec<(Player, Caller)> = (0..USERS_PER_CONNECTION)
                .map(|n| {
                    let player = run
                        .plan
                        .population
                        .player(run.plan.seed, lane * USERS_PER_CONNECTION + n);
                    let caller = run.target.caller(&player.user)?;
                    Ok((player, caller))
                })
                .collect::<Result<_, LoadTestError>>()?;
            let recorder = &run.recorder;
            for (player, caller) in callers.iter().cycle() {
                if Instant::now() >= end {
                    break;
                }
                let entry = match run.target.enqueue(caller, player, recorder).await {
                    Ok(entry) => entry,
                    Err(failure) => {
                        recorder.error(failure);
                        continue;
                    }
                };
                for step in 0..3 {
                    let outcome = match step {
                        1 => run
                            .target
                            .cancel(caller, &entry.id, recorder)
                            .await
                            .map(drop),
                        _ => run
                            .target
                            .status(caller, &entry.id, recorder)
                            .await
                            .map(drop),
                    };
                    if let Err(failure) = outcome {
                        recorder.error(failure);
                    }
                }
            }
            Ok::<(), LoadTestError>(())
        });
    }
    while let Some(done) = lanes.join_next().await {
        done.map_err(|error| LoadTestError::Settings(error.to_string()))??;
    }
    Ok(())
}
