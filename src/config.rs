//! The validated configuration of `matchwell serve`, built from its flags and environment.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::PoolCatalog;
use crate::RetryPolicy;
use crate::cli::{ServeArgs, Switch, TaskArgs};
use crate::cluster::{ClusterConfigError, ClusterSettings};
use crate::http::{EventPace, HttpSettings, RateLimit, StreamLimits};
use crate::jwt::MIN_SECRET_LEN;
use crate::live_game::LiveGameSettings;
use crate::tasks::{BackgroundTasks, TaskSettingsError};
use matchwell_actors::pools::PoolsFileError;
use matchwell_actors::{ChallengeLimits, OverloadLimits};
use matchwell_snapshots::FsyncMode;

/// Most worker threads accepted.
const MAX_WORKERS: usize = 256;
/// Largest body limit accepted.
const MAX_BODY_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// Most event streams accepted as a cap, per user or in total: far beyond what one process
/// can hold open.
const MAX_STREAMS: u64 = 1_000_000;
/// Fastest event pace accepted, per worker and millisecond: a worker cannot write faster.
const MAX_EVENTS_PER_MS: u64 = 10_000;
/// Longest graceful stop accepted, in seconds: an hour, far beyond what orchestrators grant.
const MAX_SHUTDOWN_TIMEOUT_S: u64 = 3_600;
/// Longest live-game timeout accepted.
const MAX_LIVE_GAME_TIMEOUT_MS: u64 = 120_000;
/// Most attempts per game accepted.
const MAX_LIVE_GAME_ATTEMPTS: u64 = 1_000;
/// Longest backoff ceiling accepted: an hour.
const MAX_LIVE_GAME_BACKOFF_MS: u64 = 3_600_000;
/// Most calls to the live-game service at once accepted.
const MAX_LIVE_GAME_IN_FLIGHT: u64 = 10_000;
/// Most pending challenges per user and direction accepted as a limit.
const MAX_CHALLENGE_LIMIT: u64 = 10_000;
/// Largest backlog bound accepted, of a shard's messages or the journal's records: far beyond
/// what a bound that keeps latency in check can be.
const MAX_BACKLOG: u64 = 100_000_000;

/// A flag or variable with a value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A number out of range.
    #[error("{name} must be from {min} to {max}, not {value}")]
    OutOfRange {
        /// The flag and variable.
        name: &'static str,
        /// Its value.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A background task interval out of range.
    #[error(transparent)]
    Tasks(#[from] TaskSettingsError),
    /// The pools file is unreadable or invalid.
    #[error(transparent)]
    Pools(#[from] PoolsFileError),
    /// The listen address does not resolve to any address.
    #[error("--listen / MATCHWELL_LISTEN `{listen}` is not an address to listen on: {source}")]
    Listen {
        /// The value.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No JWT secret is configured and the server would be reachable from other machines.
    #[error(
        "refusing to listen on {listen} with the development JWT secret, which is for local \
         use only (anyone who can read the data directory can mint tokens with it): set \
         MATCHWELL_JWT_SECRET (or --jwt-secret) to a secret of at least {MIN_SECRET_LEN} bytes, \
         e.g. `export MATCHWELL_JWT_SECRET=$(openssl rand -hex 32)`, and mint tokens with the \
         same secret; or listen on a loopback address (127.0.0.1, ::1, localhost)"
    )]
    DevSecretOffLoopback {
        /// The listen address.
        listen: String,
    },
    /// A cluster flag is invalid.
    #[error(transparent)]
    Cluster(#[from] ClusterConfigError),
    /// The live-game URL does not parse.
    #[error("--live-game-api-url / MATCHWELL_LIVE_GAME_API_URL `{url}` is not a URL: {reason}")]
    LiveGameUrl {
        /// The value.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Everything `serve` needs, checked.
#[derive(Debug)]
pub struct ServeConfig {
    /// The HTTP server.
    pub http: HttpSettings,
    /// Where the development JWT secret (and later, snapshots) live.
    pub data_dir: PathBuf,
    /// `MATCHWELL_JWT_SECRET`, which when set is the only secret used.
    pub jwt_secret: Option<String>,
    /// When the journal syncs.
    pub fsync: FsyncMode,
    /// The pools file, if one was given.
    pub pools_file: Option<PathBuf>,
    /// The pools served.
    pub catalog: PoolCatalog,
    /// The background tasks.
    pub tasks: BackgroundTasks,
    /// The live-game service; `None` lets the engine make game ids itself.
    pub live_game: Option<LiveGameSettings>,
    /// How game creation is paced and retried.
    pub retry: RetryPolicy,
    /// Pending challenges per user.
    pub challenge_limits: ChallengeLimits,
    /// How long a graceful stop may take, from the signal to the exit.
    pub shutdown_timeout: Duration,
    /// How far behind the shards and the journal may fall before writes are refused.
    pub overload: OverloadLimits,
    /// Cluster mode, when `--cluster` is given.
    pub cluster: Option<ClusterSettings>,
}

/// `value` of the flag and variable `name` if it is from `min` to `max`.
pub(crate) fn in_range(
    name: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            name,
            value,
            min,
            max,
        })
    }
}

/// A backlog bound of `value`, or none when it is 0.
fn backlog_bound(name: &'static str, value: u64) -> Result<Option<NonZeroU64>, ConfigError> {
    Ok(NonZeroU64::new(in_range(name, value, 0, MAX_BACKLOG)?))
}

/// A rate of `per_s` with `burst`, or none when `per_s` is 0; `burst_name` names the burst's
/// flag and variable, which must not be 0 while the rate is on.
fn checked_rate(
    per_s: u32,
    burst: u32,
    burst_name: &'static str,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(per_s) = NonZeroU32::new(per_s) else {
        return Ok(None);
    };
    let burst = NonZeroU32::new(burst).ok_or(ConfigError::OutOfRange {
        name: burst_name,
        value: 0,
        min: 1,
        max: u64::from(u32::MAX),
    })?;
    Ok(Some(RateLimit { per_s, burst }))
}

/// Refuses to serve the development secret on `listen` unless every address it resolves to is
/// a loopback address: the development secret is made without anyone choosing it, lies in the
/// data directory, and would let whoever reads it act as any user or admin.
fn check_dev_secret_listen(listen: &str) -> Result<(), ConfigError> {
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|source| ConfigError::Listen {
            listen: listen.to_owned(),
            source,
        })?
        .collect();
    let loopback = |addr: &SocketAddr| addr.ip().to_canonical().is_loopback();
    if !addrs.is_empty() && addrs.iter().all(loopback) {
        Ok(())
    } else {
        Err(ConfigError::DevSecretOffLoopback {
            listen: listen.to_owned(),
        })
    }
}

impl ServeConfig {
    /// Checks `args`, loading the pools file if any.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        if args.secret.jwt_secret.is_none() {
            check_dev_secret_listen(&args.listen)?;
        }
        let workers = match args.workers {
            Some(workers) => {
                in_range(
                    "--workers / MATCHWELL_WORKERS",
                    workers as u64,
                    1,
                    MAX_WORKERS as u64,
                )?;
                workers
            }
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let body_limit_bytes = in_range(
            "--body-limit-bytes / MATCHWELL_BODY_LIMIT_BYTES",
            args.body_limit_bytes as u64,
            1,
            MAX_BODY_LIMIT_BYTES as u64,
        )? as usize;
        let rate_limit = checked_rate(
            args.rate_limit_per_s,
            args.rate_limit_burst,
            "--rate-limit-burst / MATCHWELL_RATE_LIMIT_BURST",
        )?;
        let read_rate_limit = checked_rate(
            args.read_rate_limit_per_s,
            args.read_rate_limit_burst,
            "--read-rate-limit-burst / MATCHWELL_READ_RATE_LIMIT_BURST",
        )?;
        let streams = StreamLimits {
            per_user: in_range(
                "--sse-max-per-user / MATCHWELL_SSE_MAX_PER_USER",
                args.sse_max_per_user as u64,
                1,
                MAX_STREAMS,
            )? as usize,
            total: in_range(
                "--sse-max-total / MATCHWELL_SSE_MAX_TOTAL",
                args.sse_max_total as u64,
                1,
                MAX_STREAMS,
            )? as usize,
        };
        let events_per_ms = in_range(
            "--sse-events-per-ms / MATCHWELL_SSE_EVENTS_PER_MS",
            u64::from(args.sse_events_per_ms),
            1,
            MAX_EVENTS_PER_MS,
        )? as u32;
        let event_pace = EventPace::per_ms(NonZeroU32::new(events_per_ms).expect("checked above"));
        let catalog = match &args.pools {
            Some(path) => PoolCatalog::load(path)?,
            None => PoolCatalog::builtin(),
        };
        let retry = retry_policy(args)?;
        let live_game = match &args.live_game_api_url {
            None => None,
            Some(url) => Some(LiveGameSettings {
                url: Url::parse(url).map_err(|error| ConfigError::LiveGameUrl {
                    url: url.clone(),
                    reason: error.to_string(),
                })?,
                token: args.live_game_api_token.clone(),
                timeout: retry.attempt_timeout,
            }),
        };
        let tasks = background_tasks(&args.tasks)?;
        let cluster = ClusterSettings::from_args(&args.cluster, args.secret.jwt_secret.is_some())?;
        Ok(Self {
            cluster,
            http: HttpSettings {
                listen: args.listen.clone(),
                workers,
                body_limit_bytes,
                tokens: args.secret.token_scope(),
                rate_limit,
                read_rate_limit,
                streams,
                event_pace,
                limiter_cleanup: tasks.limiters.when_enabled(),
                catalog: Arc::new(catalog.clone()),
            },
            shutdown_timeout: Duration::from_secs(in_range(
                "--shutdown-timeout-s / MATCHWELL_SHUTDOWN_TIMEOUT_S",
                args.shutdown_timeout_s,
                1,
                MAX_SHUTDOWN_TIMEOUT_S,
            )?),
            overload: OverloadLimits {
                max_shard_backlog: backlog_bound(
                    "--max-shard-backlog / MATCHWELL_MAX_SHARD_BACKLOG",
                    args.max_shard_backlog,
                )?,
                max_journal_backlog: backlog_bound(
                    "--max-journal-backlog / MATCHWELL_MAX_JOURNAL_BACKLOG",
                    args.max_journal_backlog,
                )?,
            },
            data_dir: args.secret.data_dir.clone(),
            jwt_secret: args.secret.jwt_secret.clone(),
            fsync: args.fsync,
            pools_file: args.pools.clone(),
            catalog,
            tasks,
            live_game,
            retry,
            challenge_limits: ChallengeLimits {
                max_outgoing: in_range(
                    "--max-outgoing-challenges / MATCHWELL_MAX_OUTGOING_CHALLENGES",
                    args.max_outgoing_challenges as u64,
                    1,
                    MAX_CHALLENGE_LIMIT,
                )? as usize,
                max_incoming: in_range(
                    "--max-incoming-challenges / MATCHWELL_MAX_INCOMING_CHALLENGES",
                    args.max_incoming_challenges as u64,
                    1,
                    MAX_CHALLENGE_LIMIT,
                )? as usize,
            },
        })
    }
}

/// How game creation is paced and retried: the live-game flags, checked.
fn retry_policy(args: &ServeArgs) -> Result<RetryPolicy, ConfigError> {
    let first_backoff_ms = in_range(
        "--live-game-backoff-ms / MATCHWELL_LIVE_GAME_BACKOFF_MS",
        args.live_game_backoff_ms,
        1,
        MAX_LIVE_GAME_BACKOFF_MS,
    )?;
    Ok(RetryPolicy {
        first_backoff: Duration::from_millis(first_backoff_ms),
        // Below the first ceiling, the doubling would never start.
        max_backoff: Duration::from_millis(in_range(
            "--live-game-max-backoff-ms / MATCHWELL_LIVE_GAME_MAX_BACKOFF_MS",
            args.live_game_max_backoff_ms,
            first_backoff_ms,
            MAX_LIVE_GAME_BACKOFF_MS,
        )?),
        max_attempts: in_range(
            "--live-game-max-attempts / MATCHWELL_LIVE_GAME_MAX_ATTEMPTS",
            args.live_game_max_attempts.into(),
            1,
            MAX_LIVE_GAME_ATTEMPTS,
        )? as u32,
        max_in_flight: in_range(
            "--live-game-max-in-flight / MATCHWELL_LIVE_GAME_MAX_IN_FLIGHT",
            args.live_game_max_in_flight as u64,
            1,
            MAX_LIVE_GAME_IN_FLIGHT,
        )? as usize,
        attempt_timeout: Duration::from_millis(in_range(
            "--live-game-timeout-ms / MATCHWELL_LIVE_GAME_TIMEOUT_MS",
            args.live_game_timeout_ms,
            1,
            MAX_LIVE_GAME_TIMEOUT_MS,
        )?),
        ..RetryPolicy::default()
    })
}

/// The master switch sets every task; a task's own switch and interval override it.
fn background_tasks(args: &TaskArgs) -> Result<BackgroundTasks, ConfigError> {
    let mut tasks = match args.all {
        Switch::On => BackgroundTasks::default(),
        Switch::Off => BackgroundTasks::all_off(),
    };
    for (name, switch, interval_ms) in args.overrides() {
        if let Some(settings) = tasks.get_mut(name) {
            if let Some(switch) = switch {
                settings.enabled = switch == Switch::On;
            }
            if let Some(interval_ms) = interval_ms {
                settings.interval = Duration::from_millis(interval_ms);
            }
        }
    }
    tasks.validate()?;
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_secret_serves_loopback_addresses_only() {
        for listen in ["127.0.0.1:0", "127.0.0.2:8080", "[::1]:0", "localhost:0"] {
            assert!(check_dev_secret_listen(listen).is_ok(), "{listen}");
        }
        for listen in ["0.0.0.0:8080", "[::]:0", "192.0.2.7:80", "[2001:db8::1]:0"] {
            let refused = check_dev_secret_listen(listen)
                .expect_err(listen)
                .to_string();
            assert!(
                refused.contains("MATCHWELL_JWT_SECRET") && refused.contains(listen),
                "{refused}"
            );
        }
        assert!(matches!(
            check_dev_secret_listen("127.0.0.1:99999"),
            Err(ConfigError::Listen { .. })
        ));
    }
}
