//! The harness's command line, and the checked plan it describes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use matchwell::{PoolCatalog, PoolSpec, TimeControl};

use crate::LoadTestError;
use crate::population::{PoolShare, Population};

/// `cargo run --release --example loadtest -- [OPTIONS]`
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadtest",
    about = "Drives matchwell with a simulated player population and reports throughput, latency and match quality"
)]
pub struct Settings {
    /// Where the players go.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Who the players are.
    #[command(flatten)]
    pub population: PopulationArgs,
    /// What each player does.
    #[arg(long, value_enum, default_value_t = Scenario::Players)]
    pub scenario: Scenario,
    /// How a waiting player learns of its match.
    #[arg(long, value_enum, default_value_t = Watch::Sse)]
    pub watch: Watch,
    /// Time between two status reads of a player that polls.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    pub poll_interval: Duration,
    /// How long players arrive (or rounds run).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub duration: Duration,
    /// How long players still waiting when arrivals stop may take to finish; those still
    /// waiting then cancel and count as unfinished.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain: Duration,
    /// HTTP connections for requests (server-sent event streams each hold one more); in the
    /// `round` scenario, the number of users going round at once.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draws latency, time-to-match and rating-gap histograms as SVG files in this directory.
    #[arg(long)]
    pub charts: Option<PathBuf>,
    /// Also reports the CPU time per request of this process (the server, on this machine).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Where the players go.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Base URL of a running server.
    #[arg(long, conflicts_with = "embedded")]
    pub url: Option<String>,
    /// The server's JWT secret: the harness mints a token per player.
    #[arg(long, requires = "url", conflicts_with = "token")]
    pub secret: Option<String>,
    /// A token of role `service`, which acts for every player (`user_id`).
    #[arg(long, requires = "url")]
    pub token: Option<String>,
    /// The tenant the players belong to (in minted tokens).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// The engine in this process instead of a server.
    #[arg(long)]
    pub embedded: bool,
    /// For `--embedded`: a data directory, so that the engine journals (memory only without).
    #[arg(long, requires = "embedded")]
    pub data_dir: Option<PathBuf>,
    /// For `--embedded` with a data directory: `always`, `batch` or `none`.
    #[arg(long, requires = "data_dir", default_value = "batch")]
    pub fsync: String,
}

/// Who the players are.
#[derive(Debug, Clone, Args)]
pub struct PopulationArgs {
    /// Players arriving per second (Poisson arrivals).
    #[arg(long, conflicts_with = "concurrent")]
    pub rate: Option<f64>,
    /// Instead of a rate: this many players at all times, each replaced when it leaves.
    #[arg(long)]
    pub concurrent: Option<usize>,
    /// Mean of the players' ratings (normally distributed).
    #[arg(long, default_value_t = 1500.0)]
    pub rating_mean: f64,
    /// Standard deviation of the players' ratings.
    #[arg(long, default_value_t = 300.0)]
    pub rating_sd: f64,
    /// A pool and its share of the players, `TIME_CONTROL VARIANT rated|casual [REGION][@SHARE]`
    /// (e.g. `"5+3 standard rated@2"`); repeat for several. Default: every pool of `--pools`
    /// with equal shares, or `5+3 standard rated`.
    #[arg(long = "pool")]
    pub pools: Vec<String>,
    /// The server's pools file: which pools exist (and, embedded, how they pair).
    #[arg(long = "pools")]
    pub pools_file: Option<PathBuf>,
    /// Share of players who cancel while they wait.
    #[arg(long, default_value_t = 0.1)]
    pub cancel_share: f64,
    /// Earliest cancel after joining.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub cancel_after_min: Duration,
    /// Latest cancel after joining (uniform in between).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub cancel_after_max: Duration,
}

/// What each simulated client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Players arrive, queue, wait for their match (or cancel), and leave.
    Players,
    /// Each connection goes round enqueue → status → cancel → status as fast as answers
    /// come, for the same user set: a closed loop that measures the cost of requests.
    Round,
}

/// How a waiting player learns of its match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Watch {
    /// The entry's server-sent events.
    Sse,
    /// Status reads every `--poll-interval`.
    Poll,
}

/// How players authenticate over HTTP.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// A token minted per player with the server's secret.
    Secret(std::sync::Arc<matchwell::jwt::JwtSecret>),
    /// One service token acting for every player.
    Service(String),
    /// No token (a server that checks none, such as the empty control server).
    None,
}

/// Where the players go, checked.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// A server over HTTP.
    Http {
        base: String,
        credentials: Credentials,
    },
    /// The engine in this process.
    Embedded {
        catalog: PoolCatalog,
        data_dir: Option<PathBuf>,
        fsync: matchwell::FsyncMode,
    },
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) destination: Destination,
    pub(crate) tenant: String,
    pub(crate) population: Population,
    pub(crate) scenario: Scenario,
    pub(crate) watch: Watch,
    pub(crate) poll_interval: Duration,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) connections: usize,
    pub(crate) seed: u64,
    pub(crate) server_pid: Option<u32>,
    pub(crate) progress: bool,
}

fn refuse(reason: impl Into<String>) -> LoadTestError {
    LoadTestError::Settings(reason.into())
}

/// `TIME_CONTROL VARIANT rated|casual [REGION][@SHARE]`.
fn parse_pool(text: &str) -> Result<PoolShare, LoadTestError> {
    let (spec, share) = match text.rsplit_once('@') {
        Some((spec, share)) => (
            spec,
            share
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|share| share.is_finite() && *share > 0.0)
                .ok_or_else(|| refuse(format!("--pool `{text}`: the share must be positive")))?,
        ),
        None => (text, 1.0),
    };
    let words: Vec<&str> = spec.split_whitespace().collect();
    let (time_control, variant, rated, region) = match words.as_slice() {
        [time_control, variant, rated] => (time_control, variant, rated, None),
        [time_control, variant, rated, region] => (time_control, variant, rated, Some(*region)),
        _ => {
            return Err(refuse(format!(
                "--pool `{text}`: expected `TIME_CONTROL VARIANT rated|casual [REGION][@SHARE]`"
            )));
        }
    };
    let time_control: TimeControl = time_control
        .parse()
        .map_err(|error| refuse(format!("--pool `{text}`: {error}")))?;
    let rated = match *rated {
        "rated" => true,
        "casual" => false,
        other => {
            return Err(refuse(format!(
                "--pool `{text}`: `{other}` is neither rated nor casual"
            )));
        }
    };
    let spec = PoolSpec::new(time_control, variant, rated, region)
        .map_err(|error| refuse(format!("--pool `{text}`: {error}")))?;
    Ok(PoolShare { spec, share })
}

impl Settings {
    /// Checks the settings and resolves what they name.
    pub(crate) fn plan(&self) -> Result<Plan, LoadTestError> {
        let catalog = match &self.population.pools_file {
            Some(path) => {
                PoolCatalog::load(path).map_err(|error| refuse(format!("--pools: {error}")))?
            }
            None => PoolCatalog::builtin(),
        };
        let mut pools = self
            .population
            .pools
            .iter()
            .map(|text| parse_pool(text))
            .collect::<Result<Vec<_>, _>>()?;
        if pools.is_empty() {
            pools = match &self.population.pools_file {
                Some(_) => catalog
                    .iter()
                    .map(|pool| PoolShare {
                        spec: pool.spec.clone(),
                        share: 1.0,
                    })
                    .collect(),
                None => vec![parse_pool("5+3 standard rated")?],
            };
        }
        for pool in &pools {
            if catalog.resolve(&pool.spec).is_none() {
                return Err(refuse(format!(
                    "pool {} is not served (give the server's pools file with --pools)",
                    pool.spec
                )));
            }
        }
        let destination = match (&self.target.url, self.target.embedded) {
            (Some(url), false) => {
                let base = url.trim_end_matches('/').to_owned();
                reqwest::Url::parse(&base)
                    .map_err(|error| refuse(format!("--url `{url}`: {error}")))?;
                let credentials = match (&self.target.secret, &self.target.token) {
                    (Some(secret), _) => Credentials::Secret(std::sync::Arc::new(
                        matchwell::jwt::JwtSecret::resolve(Some(secret), std::path::Path::new("."))
                            .map_err(|error| refuse(format!("--secret: {error}")))?,
                    )),
                    (None, Some(token)) => Credentials::Service(token.clone()),
                    (None, None) => Credentials::None,
                };
                Destination::Http { base, credentials }
            }
            (None, true) => Destination::Embedded {
                catalog,
                data_dir: self.target.data_dir.clone(),
                fsync: self
                    .target
                    .fsync
                    .parse()
                    .map_err(|error| refuse(format!("--fsync: {error}")))?,
            },
            _ => {
                return Err(refuse(
                    "give either --url (with --secret or --token) or --embedded",
                ));
            }
        };
        let arrivals = match (self.population.rate, self.population.concurrent) {
            (Some(rate), None) if rate.is_finite() && rate > 0.0 => {
                crate::population::Arrivals::Rate(rate)
            }
            (None, Some(players)) if players > 0 => {
                crate::population::Arrivals::Concurrent(players)
            }
            (None, None) if self.scenario == Scenario::Round => {
                crate::population::Arrivals::Concurrent(self.connections)
            }
            _ => return Err(refuse("give a positive --rate or --concurrent")),
        };
        if !(0.0..=1.0).contains(&self.population.cancel_share) {
            return Err(refuse("--cancel-share must be from 0 to 1"));
        }
        if self.population.cancel_after_min > self.population.cancel_after_max {
            return Err(refuse(
                "--cancel-after-min must not exceed --cancel-after-max",
            ));
        }
        if !(self.population.rating_sd.is_finite() && self.population.rating_sd >= 0.0) {
            return Err(refuse("--rating-sd must be a non-negative number"));
        }
        if self.connections == 0 {
            return Err(refuse("--connections must be at least 1"));
        }
        Ok(Plan {
            destination,
            tenant: self.target.tenant.clone(),
            population: Population {
                arrivals,
                rating_mean: self.population.rating_mean,
                rating_sd: self.population.rating_sd,
                pools,
                cancel_share: self.population.cancel_share,
                cancel_after: self.population.cancel_after_min..=self.population.cancel_after_max,
            },
            scenario: self.scenario,
            watch: self.watch,
            poll_interval: self.poll_interval,
            duration: self.duration,
            drain: self.drain,
            connections: self.connections,
            seed: self.seed,
            server_pid: self.server_pid,
            progress: !self.quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_parsed_with_their_shares() {
        let pool = parse_pool("5+3 standard rated@2.5").unwrap();
        assert_eq!(
            pool.spec.to_string(),
            parse_pool("5+3 standard rated").unwrap().spec.to_string()
        );
        assert_eq!(pool.share, 2.5);
        assert!(
            parse_pool("3+0 chess960 casual eu")
                .unwrap()
                .spec
                .region
                .is_some()
        );
        for bad in [
            "5+3",
            "5+3 standard maybe",
            "x standard rated",
            "5+3 standard rated@0",
        ] {
            assert!(parse_pool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_target_and_a_population_are_required() {
        let parse = |args: &[&str]| {
            Settings::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
        };
        let settings = parse(&["--embedded", "--rate", "100"]).unwrap();
        assert!(settings.plan().is_ok());
        assert!(
            parse(&["--rate", "100"]).unwrap().plan().is_err(),
            "no target"
        );
        assert!(
            parse(&["--embedded"]).unwrap().plan().is_err(),
            "no population"
        );
        assert!(parse(&["--embedded", "--url", "http://x", "--rate", "1"]).is_err());
        assert!(
            parse(&["--embedded", "--rate", "1", "--pool", "7+7 standard rated"])
                .unwrap()
                .plan()
                .is_err(),
            "a pool the catalog does not serve"
        );
    }
}
