//! What a run saw: the recorder that the players write to while it runs, and the report made
//! from it at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The routes the harness calls, named as `/metrics` names them (method and path template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Enqueue,
    Status,
    Cancel,
    Events,
}

impl Route {
    pub(crate) const ALL: [Self; 4] = [Self::Enqueue, Self::Status, Self::Cancel, Self::Events];

    /// `METHOD /path/{template}`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Enqueue => "POST /v1/matchmaking/queue",
            Self::Status => "GET /v1/matchmaking/queue/{id}",
            Self::Cancel => "DELETE /v1/matchmaking/queue/{id}",
            Self::Events => "GET /v1/matchmaking/queue/{id}/events",
        }
    }
}

/// How a player's stay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Matched,
    Cancelled,
    Expired,
    /// Still waiting when the run ended.
    Unfinished,
    /// Its enqueue was refused or failed.
    Failed,
}

/// A histogram of values from 1 to an hour's worth of microseconds, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Everything the players report while the run goes on.
///
/// Shared by every player task: histograms behind short locks (one record is a few
/// nanoseconds, far below the cost of the request it times), counters as atomics.
pub(crate) struct Recorder {
    /// Microseconds per request, by [`Route`].
    latency: [Mutex<Histogram<u64>>; 4],
    /// Microseconds from sending the enqueue to learning of the match.
    time_to_match: Mutex<Histogram<u64>>,
    /// Microseconds from joining to the match, as the server records them (`wait_s`).
    server_time_to_match: Mutex<Histogram<u64>>,
    rating_gap: Mutex<Histogram<u64>>,
    outcomes: [AtomicU64; 5],
    arrived: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Players seen in each match, so that the report can say whether each match was seen
    /// by both of its players and by nobody else.
    matches: Mutex<HashMap<String, u8>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: std::array::from_fn(|_| Mutex::new(histogram())),
            time_to_match: Mutex::new(histogram()),
            server_time_to_match: Mutex::new(histogram()),
            rating_gap: Mutex::new(histogram()),
            outcomes: Default::default(),
            arrived: AtomicU64::new(0),
            errors: Mutex::default(),
            matches: Mutex::default(),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Recorder {
    pub(crate) fn request(&self, route: Route, took: Duration) {
        let index = Route::ALL.iter().position(|&r| r == route).unwrap_or(0);
        self.latency[index].lock().saturating_record(micros(took));
    }

    pub(crate) fn error(&self, what: impl Into<String>) {
        *self.errors.lock().entry(what.into()).or_default() += 1;
    }

    pub(crate) fn arrived(&self) {
        self.arrived.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn left(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A player learned of its match `match_id` after `waited` (client side), `server_wait`
    /// after joining (server side), paired against a rating `gap` away.
    pub(crate) fn matched(
        &self,
        match_id: &str,
        waited: Duration,
        server_wait: Duration,
        gap: u16,
    ) {
        self.time_to_match.lock().saturating_record(micros(waited));
        self.server_time_to_match
            .lock()
            .saturating_record(micros(server_wait));
        self.rating_gap
            .lock()
            .saturating_record(u64::from(gap).max(1));
        *self.matches.lock().entry(match_id.to_owned()).or_default() += 1;
        self.left(Outcome::Matched);
    }

    /// Players arrived and players gone so far: for the progress line.
    pub(crate) fn progress(&self) -> (u64, u64, u64) {
        let gone: u64 = self
            .outcomes
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum();
        let requests: u64 = self.latency.iter().map(|h| h.lock().len()).sum();
        (self.arrived.load(Ordering::Relaxed), gone, requests)
    }

    /// The report of a run that lasted `elapsed` and cost the harness `harness_cpu`
    /// (and the server `server_cpu`, when measured).
    pub(crate) fn report(
        &self,
        about: RunInfo,
        elapsed: Duration,
        harness_cpu: Duration,
        server_cpu: Option<Duration>,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        let latency: Vec<Histogram<u64>> = self.latency.iter().map(|h| h.lock().clone()).collect();
        let requests: u64 = latency.iter().map(Histogram::len).sum();
        let per_request = |cpu: Duration| {
            if requests == 0 {
                0.0
            } else {
                cpu.as_secs_f64() * 1e6 / requests as f64
            }
        };
        let outcome = |outcome: Outcome| self.outcomes[outcome as usize].load(Ordering::Relaxed);
        let matches = self.matches.lock();
        let gaps = self.rating_gap.lock().clone();
        let histograms = Histograms {
            latency: Route::ALL
                .iter()
                .zip(&latency)
                .map(|(route, histogram)| (route.name().to_owned(), histogram.clone()))
                .collect(),
            time_to_match: self.time_to_match.lock().clone(),
            rating_gap: gaps.clone(),
        };
        Report {
            target: about.target,
            scenario: about.scenario,
            seed: about.seed,
            duration_s: seconds,
            requests,
            requests_per_s: requests as f64 / seconds,
            requests_per_s_by_route: Route::ALL
                .iter()
                .zip(&latency)
                .filter(|(_, histogram)| !histogram.is_empty())
                .map(|(route, histogram)| {
                    (route.name().to_owned(), histogram.len() as f64 / seconds)
                })
                .collect(),
            latency_ms: Route::ALL
                .iter()
                .zip(&latency)
                .filter(|(_, histogram)| !histogram.is_empty())
                .map(|(route, histogram)| (route.name().to_owned(), Percentiles::of(histogram)))
                .collect(),
            time_to_match_ms: Percentiles::of(&histograms.time_to_match),
            server_time_to_match_ms: Percentiles::of(&self.server_time_to_match.lock()),
            rating_gap: RatingGap {
                mean: if gaps.is_empty() { 0.0 } else { gaps.mean() },
                p95: gaps.value_at_quantile(0.95),
                max: gaps.max(),
            },
            players: Players {
                arrived: self.arrived.load(Ordering::Relaxed),
                matched: outcome(Outcome::Matched),
                cancelled: outcome(Outcome::Cancelled),
                expired: outcome(Outcome::Expired),
                unfinished: outcome(Outcome::Unfinished),
                failed: outcome(Outcome::Failed),
            },
            matches: matches.len() as u64,
            matches_seen_by_both: matches.values().filter(|&&seen| seen == 2).count() as u64,
            errors: self.errors.lock().clone(),
            harness_cpu_us_per_request: per_request(harness_cpu),
            server_cpu_us_per_request: server_cpu.map(per_request),
            histograms: Some(histograms),
        }
    }
}

/// What the report says about the run itself.
pub(crate) struct RunInfo {
    pub(crate) target: String,
    pub(crate) scenario: String,
    pub(crate) seed: u64,
}

/// Percentiles of a histogram of microseconds, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.5)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Rating gaps of the matches, in rating points (each match counted once per player who saw
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatingGap {
    /// Mean.
    pub mean: f64,
    /// 95th percentile.
    pub p95: u64,
    /// Largest.
    pub max: u64,
}

/// What became of the players.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Players {
    /// Players who arrived.
    pub arrived: u64,
    /// Learned of their match.
    pub matched: u64,
    /// Gave up while waiting.
    pub cancelled: u64,
    /// Waited past their pool's `max_wait_s`.
    pub expired: u64,
    /// Still waiting when the run ended (they cancel then).
    pub unfinished: u64,
    /// Could not queue (an error; see `errors`).
    pub failed: u64,
}

/// The distributions behind the report, for charts.
#[derive(Debug, Clone)]
pub(crate) struct Histograms {
    pub(crate) latency: Vec<(String, Histogram<u64>)>,
    pub(crate) time_to_match: Histogram<u64>,
    pub(crate) rating_gap: Histogram<u64>,
}

/// The report of a run; `--json` writes it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `http://…` or `embedded`.
    pub target: String,
    /// `players` or `round`.
    pub scenario: String,
    /// The seed of the run.
    pub seed: u64,
    /// How long requests were sent, in seconds.
    pub duration_s: f64,
    /// Requests answered (or failed) in that time.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Requests per second by route.
    pub requests_per_s_by_route: BTreeMap<String, f64>,
    /// Latency by route (`METHOD /path/{template}`), in milliseconds.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// From sending the enqueue to learning of the match, as the player saw it.
    pub time_to_match_ms: Percentiles,
    /// From joining to the match, as the server recorded it (`wait_s` of the matched entry).
    pub server_time_to_match_ms: Percentiles,
    /// Rating gaps of the matches.
    pub rating_gap: RatingGap,
    /// What became of the players.
    pub players: Players,
    /// Matches the players learned of.
    pub matches: u64,
    /// Of those, the matches both of whose players learned of them (all, once a run has
    /// drained).
    pub matches_seen_by_both: u64,
    /// Failed requests by status code (or `connect`, `timeout`, `body`).
    pub errors: BTreeMap<String, u64>,
    /// CPU time of the harness per request, in microseconds.
    pub harness_cpu_us_per_request: f64,
    /// CPU time of the server per request, in microseconds, when `--server-pid` was given.
    pub server_cpu_us_per_request: Option<f64>,
    #[serde(skip)]
    pub(crate) histograms: Option<Histograms>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}, seed {}): {} requests in {:.1} s, {:.0} requests/s",
            self.target,
            self.scenario,
            self.seed,
            self.requests,
            self.duration_s,
            self.requests_per_s
        )?;
        writeln!(
            f,
            "{:<40} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms)", "req/s", "p50", "p95", "p99", "max"
        )?;
        for (route, latency) in &self.latency_ms {
            let rate = self
                .requests_per_s_by_route
                .get(route)
                .copied()
                .unwrap_or(0.0);
            writeln!(
                f,
                "{route:<40} {rate:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                latency.p50, latency.p95, latency.p99, latency.max
            )?;
        }
        for (what, figures) in [
            ("time to match, client (ms)", &self.time_to_match_ms),
            ("time to match, server (ms)", &self.server_time_to_match_ms),
        ] {
            writeln!(
                f,
                "{what:<40} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                figures.count, figures.p50, figures.p95, figures.p99, figures.max
            )?;
        }
        writeln!(
            f,
            "rating gap: mean {:.1}, p95 {}, max {}",
            self.rating_gap.mean, self.rating_gap.p95, self.rating_gap.max
        )?;
        let p = &self.players;
        writeln!(
            f,
            "players: {} arrived, {} matched, {} cancelled, {} expired, {} unfinished, {} failed; {} matches ({} seen by both players)",
            p.arrived,
            p.matched,
            p.cancelled,
            p.expired,
            p.unfinished,
            p.failed,
            self.matches,
            self.matches_seen_by_both
        )?;
        if !self.errors.is_empty() {
            writeln!(f, "errors: {:?}", self.errors)?;
        }
        write!(
            f,
            "CPU per request: harness {:.1} µs",
            self.harness_cpu_us_per_request
        )?;
        if let Some(server) = self.server_cpu_us_per_request {
            write!(f, ", server {server:.1} µs")?;
        }
        Ok(())
    }
}
