//! The `matchwell` command line: `serve`, `token`, `pools validate`. Every flag also reads a
//! `MATCHWELL_*` environment variable.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::rt::signal::unix::{SignalKind, signal};
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use prometheus::Registry;

use crate::cluster::{ClusterArgs, ClusterSettings, EngineFactory, Node, NodeError};
use crate::config::{ConfigError, ServeConfig};
use crate::health::HealthRegistry;
use crate::http::{self, EngineSlot, HttpError};
use crate::jwt::{self, Claims, JwtSecret, SecretError, SecretOrigin, TokenScope};
use crate::live_game::{HttpGameCreator, LiveGameError};
use crate::log_output::LogOutput;
use crate::persistence::{PersistenceConfig, PersistenceError, describe_snapshot};
use crate::{
    ChallengeLimits, Engine, EngineBuilder, EngineError, Pacing, PoolCatalog, RetryPolicy,
};
use matchwell_actors::matchmaker::partition_id_base;
use matchwell_actors::pools::PoolsFileError;
use matchwell_snapshots::FsyncMode;
use matchwell_snapshots::journal::ParseFsyncModeError;

pub use crate::log_output::FlushOnDrop;

/// The matchwell matchmaking server and its tools.
#[derive(Debug, Parser)]
#[command(name = "matchwell", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "MATCHWELL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Log filter, in `tracing` directive syntax (e.g. `info,matchwell=debug`).
    #[arg(long, env = "MATCHWELL_LOG", default_value = "info", global = true)]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the HTTP server.
    // Boxed: the server's flags are many, and the other commands should not carry their size.
    Serve(Box<ServeArgs>),
    /// Mints a JWT that a server with the same secret accepts.
    Token(TokenArgs),
    /// Pools files.
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// Snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `matchwell snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Validates a snapshot file and prints its header and counts.
    Inspect {
        /// The snapshot file (`snapshot-….mws` in the data directory).
        path: PathBuf,
    },
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// An on/off setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    #[value(alias = "true", alias = "1")]
    On,
    /// Disabled.
    #[value(alias = "false", alias = "0")]
    Off,
}

/// The JWT settings shared by `serve` and `token`: where the secret comes from, and the
/// audience and issuer that tokens name.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Data directory; holds the development JWT secret when no secret is configured.
    #[arg(long, env = "MATCHWELL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// HS256 secret (at least 32 bytes). When set, it is the only secret used. Without it,
    /// `serve` listens on loopback addresses only.
    #[arg(long, env = "MATCHWELL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Audience (`aud`) that tokens must name; `token` writes it into the tokens it mints.
    #[arg(long, env = "MATCHWELL_JWT_AUDIENCE", value_parser = NonEmptyStringValueParser::new())]
    pub jwt_audience: Option<String>,
    /// Issuer (`iss`) that tokens must carry; `token` writes it into the tokens it mints.
    #[arg(long, env = "MATCHWELL_JWT_ISSUER", value_parser = NonEmptyStringValueParser::new())]
    pub jwt_issuer: Option<String>,
}

impl SecretArgs {
    /// The audience and issuer that tokens name.
    pub fn token_scope(&self) -> TokenScope {
        TokenScope {
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        }
    }
}

/// `matchwell serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// When the journal syncs: `always` (nothing acknowledged is ever lost), `batch` (sync
    /// every 5 ms) or `none`; see the README for what each can lose.
    #[arg(long, env = "MATCHWELL_FSYNC", default_value = "always", value_parser = parse_fsync)]
    pub fsync: FsyncMode,
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "MATCHWELL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// JWT secret and data directory.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Pools file (TOML); the built-in chess pools when absent.
    #[arg(long, env = "MATCHWELL_POOLS")]
    pub pools: Option<PathBuf>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "MATCHWELL_WORKERS")]
    pub workers: Option<usize>,
    /// Writes per second allowed to each user (0 turns the limit off).
    #[arg(long, env = "MATCHWELL_RATE_LIMIT_PER_S", default_value_t = 20)]
    pub rate_limit_per_s: u32,
    /// Writes a user may make at once above the sustained rate.
    #[arg(long, env = "MATCHWELL_RATE_LIMIT_BURST", default_value_t = 40)]
    pub rate_limit_burst: u32,
    /// Reads per second allowed to each user (0 turns the limit off): entry status, event
    /// streams, active state, challenges. Apart from the write budget.
    #[arg(long, env = "MATCHWELL_READ_RATE_LIMIT_PER_S", default_value_t = 200)]
    pub read_rate_limit_per_s: u32,
    /// Reads a user may make at once above the sustained rate.
    #[arg(long, env = "MATCHWELL_READ_RATE_LIMIT_BURST", default_value_t = 400)]
    pub read_rate_limit_burst: u32,
    /// Event streams (`/v1/matchmaking/queue/{id}/events`) one user may have open at once.
    #[arg(long, env = "MATCHWELL_SSE_MAX_PER_USER", default_value_t = 8)]
    pub sse_max_per_user: usize,
    /// Event streams the server keeps open at once; keep it below the process's limit of open
    /// files, since each stream holds a connection.
    #[arg(long, env = "MATCHWELL_SSE_MAX_TOTAL", default_value_t = 10_000)]
    pub sse_max_total: usize,
    /// Change events each worker thread sends per millisecond, and at once, when many entries
    /// change together (a wave): the rest wait a little, so that requests are not stuck behind
    /// them.
    #[arg(long, env = "MATCHWELL_SSE_EVENTS_PER_MS", default_value_t = 10)]
    pub sse_events_per_ms: u32,
    /// Largest JSON body accepted, in bytes.
    #[arg(long, env = "MATCHWELL_BODY_LIMIT_BYTES", default_value_t = 16 * 1024)]
    pub body_limit_bytes: usize,
    /// Base URL of the live-game service; without it the engine makes game ids itself.
    #[arg(long, env = "MATCHWELL_LIVE_GAME_API_URL")]
    pub live_game_api_url: Option<String>,
    /// Bearer token sent to the live-game service.
    #[arg(long, env = "MATCHWELL_LIVE_GAME_API_TOKEN", hide_env_values = true)]
    pub live_game_api_token: Option<String>,
    /// Timeout of one call to the live-game service, in milliseconds.
    #[arg(long, env = "MATCHWELL_LIVE_GAME_TIMEOUT_MS", default_value_t = 5_000)]
    pub live_game_timeout_ms: u64,
    /// Attempts to create a queue match's game before its players go back to the queue.
    #[arg(long, env = "MATCHWELL_LIVE_GAME_MAX_ATTEMPTS", default_value_t = RetryPolicy::default().max_attempts)]
    pub live_game_max_attempts: u32,
    /// Ceiling of the delay before the first retry, in milliseconds; it doubles at every
    /// further retry, and each delay is drawn at random below its ceiling.
    #[arg(long, env = "MATCHWELL_LIVE_GAME_BACKOFF_MS", default_value_t = 200)]
    pub live_game_backoff_ms: u64,
    /// Largest ceiling of the delay between two attempts, in milliseconds.
    #[arg(
        long,
        env = "MATCHWELL_LIVE_GAME_MAX_BACKOFF_MS",
        default_value_t = 10_000
    )]
    pub live_game_max_backoff_ms: u64,
    /// Calls to the live-game service at once, however many games wait to be created.
    #[arg(long, env = "MATCHWELL_LIVE_GAME_MAX_IN_FLIGHT", default_value_t = RetryPolicy::default().max_in_flight)]
    pub live_game_max_in_flight: usize,
    /// Bound on a graceful stop (SIGTERM, SIGINT), from the signal to the exit, in seconds:
    /// requests in flight get up to half of it, the final snapshot the rest. A stop that
    /// runs out of time exits with status 1 without the final snapshot (the journal has every
    /// acknowledged change, and the next start replays it).
    #[arg(long, env = "MATCHWELL_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,
    /// Pending challenges one user may have sent.
    #[arg(long, env = "MATCHWELL_MAX_OUTGOING_CHALLENGES", default_value_t = ChallengeLimits::default().max_outgoing)]
    pub max_outgoing_challenges: usize,
    /// Pending challenges one user may have received.
    #[arg(long, env = "MATCHWELL_MAX_INCOMING_CHALLENGES", default_value_t = ChallengeLimits::default().max_incoming)]
    pub max_incoming_challenges: usize,
    /// Enqueues and cancels one shard may have waiting; past it, those of its queues answer
    /// 503 with `Retry-After` at once instead of queueing (0: no bound).
    #[arg(long, env = "MATCHWELL_MAX_SHARD_BACKLOG", default_value_t = 50_000)]
    pub max_shard_backlog: u64,
    /// Journal records waiting to be durable; past it, every write answers 503 with
    /// `Retry-After` at once instead of queueing (0: no bound).
    #[arg(long, env = "MATCHWELL_MAX_JOURNAL_BACKLOG", default_value_t = 10_000)]
    pub max_journal_backlog: u64,
    /// Background tasks.
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Cluster mode.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Background task switches and intervals. The master switch sets every task; a task's own
/// switch overrides it (`--tasks off --task-challenges on` runs only the challenge expirer).
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Master switch of every background task.
    #[arg(long = "tasks", env = "MATCHWELL_TASKS", value_enum, default_value_t = Switch::On)]
    pub all: Switch,
    /// Matching waves.
    #[arg(long, env = "MATCHWELL_TASK_MATCHING", value_enum)]
    pub task_matching: Option<Switch>,
    /// Interval of the matching check, in ms (each pool has its own wave interval).
    #[arg(long, env = "MATCHWELL_TASK_MATCHING_MS")]
    pub task_matching_ms: Option<u64>,
    /// Expiry of entries that waited too long.
    #[arg(long, env = "MATCHWELL_TASK_EXPIRY", value_enum)]
    pub task_expiry: Option<Switch>,
    /// Interval of the expiry sweep, in ms.
    #[arg(long, env = "MATCHWELL_TASK_EXPIRY_MS")]
    pub task_expiry_ms: Option<u64>,
    /// Game-creation job dispatch and retries.
    #[arg(long, env = "MATCHWELL_TASK_GAMES", value_enum)]
    pub task_games: Option<Switch>,
    /// Interval of the game-job dispatcher, in ms.
    #[arg(long, env = "MATCHWELL_TASK_GAMES_MS")]
    pub task_games_ms: Option<u64>,
    /// Expiry of pending challenges.
    #[arg(long, env = "MATCHWELL_TASK_CHALLENGES", value_enum)]
    pub task_challenges: Option<Switch>,
    /// Interval of the challenge expirer, in ms.
    #[arg(long, env = "MATCHWELL_TASK_CHALLENGES_MS")]
    pub task_challenges_ms: Option<u64>,
    /// Forgetting settled records after the retention period.
    #[arg(long, env = "MATCHWELL_TASK_RETENTION", value_enum)]
    pub task_retention: Option<Switch>,
    /// Interval of the retention sweep, in ms.
    #[arg(long, env = "MATCHWELL_TASK_RETENTION_MS")]
    pub task_retention_ms: Option<u64>,
    /// Snapshots.
    #[arg(long, env = "MATCHWELL_TASK_SNAPSHOTS", value_enum)]
    pub task_snapshots: Option<Switch>,
    /// Interval between snapshots, in ms.
    #[arg(long, env = "MATCHWELL_TASK_SNAPSHOTS_MS")]
    pub task_snapshots_ms: Option<u64>,
    /// Journal heartbeat, which bounds what recovery counts as downtime.
    #[arg(long, env = "MATCHWELL_TASK_HEARTBEAT", value_enum)]
    pub task_heartbeat: Option<Switch>,
    /// Interval of the journal heartbeat, in ms.
    #[arg(long, env = "MATCHWELL_TASK_HEARTBEAT_MS")]
    pub task_heartbeat_ms: Option<u64>,
    /// Forgetting the rate-limit state of users whose budgets are full again.
    #[arg(long, env = "MATCHWELL_TASK_LIMITERS", value_enum)]
    pub task_limiters: Option<Switch>,
    /// Interval of the rate-limit cleanup, in ms.
    #[arg(long, env = "MATCHWELL_TASK_LIMITERS_MS")]
    pub task_limiters_ms: Option<u64>,
}

impl TaskArgs {
    /// Each task's name with its own switch and interval, if given.
    pub fn overrides(&self) -> [(&'static str, Option<Switch>, Option<u64>); 8] {
        [
            ("matching", self.task_matching, self.task_matching_ms),
            ("expiry", self.task_expiry, self.task_expiry_ms),
            ("games", self.task_games, self.task_games_ms),
            ("challenges", self.task_challenges, self.task_challenges_ms),
            ("retention", self.task_retention, self.task_retention_ms),
            ("snapshots", self.task_snapshots, self.task_snapshots_ms),
            ("heartbeat", self.task_heartbeat, self.task_heartbeat_ms),
            ("limiters", self.task_limiters, self.task_limiters_ms),
        ]
    }
}

/// `matchwell token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user (`sub`).
    #[arg(long, env = "MATCHWELL_TOKEN_USER")]
    pub user: String,
    /// `service` or `admin`.
    #[arg(long, env = "MATCHWELL_TOKEN_ROLE")]
    pub role: Option<String>,
    /// The tenant (default "default").
    #[arg(long, env = "MATCHWELL_TOKEN_TENANT")]
    pub tenant: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, env = "MATCHWELL_TOKEN_TTL_S", default_value_t = 3_600)]
    pub ttl_s: u64,
    /// A rating for a time control, `TC=RATING` (e.g. `5+3=1800`); repeatable.
    #[arg(long = "rating", env = "MATCHWELL_TOKEN_RATINGS", value_delimiter = ',', value_parser = parse_rating)]
    pub ratings: Vec<(String, i64)>,
    /// JWT secret and data directory.
    #[command(flatten)]
    pub secret: SecretArgs,
}

fn parse_rating(text: &str) -> Result<(String, i64), String> {
    let (time_control, rating) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not TC=RATING"))?;
    let rating = rating
        .parse()
        .map_err(|_| format!("`{rating}` is not a number"))?;
    Ok((time_control.to_owned(), rating))
}

fn parse_fsync(value: &str) -> Result<FsyncMode, String> {
    value
        .parse()
        .map_err(|error: ParseFsyncModeError| error.to_string())
}

/// `matchwell pools …`.
#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    /// Checks a pools file and lists its pools.
    Validate {
        /// The file.
        file: PathBuf,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or variables.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No usable JWT secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The cluster node did not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The HTTP server did not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The live-game client could not be built.
    #[error(transparent)]
    LiveGame(#[from] LiveGameError),
    /// The pools file is invalid.
    #[error(transparent)]
    Pools(#[from] PoolsFileError),
    /// A token could not be signed.
    #[error("could not sign the token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    /// The snapshot file is unreadable or damaged.
    #[error(transparent)]
    Persistence(#[from] PersistenceError),
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// A graceful stop ran out of time.
    #[error(
        "the stop took longer than --shutdown-timeout-s / MATCHWELL_SHUTDOWN_TIMEOUT_S ({timeout_s} s): exited without the final snapshot; the journal has every acknowledged change and the next start replays it"
    )]
    StopTimedOut {
        /// The bound.
        timeout_s: u64,
    },
}

/// How a server that did not fail ended.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    /// Requests in flight answered, final snapshot written, journal closed.
    Cleanly,
    /// Stopped while recovering: the recovery was abandoned where it stood (nothing had been
    /// acknowledged yet, and the next start recovers the same data directory).
    DuringRecovery,
}

/// Runs the command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => {
            let config = ServeConfig::from_args(&args)?;
            let system = actix_web::rt::System::new();
            let outcome = system.block_on(serve(config));
            if !matches!(outcome, Ok(Stopped::Cleanly)) {
                // A blocking thread may still be at work (an abandoned recovery, a final
                // snapshot past the bound), and dropping the runtime would wait for it: the
                // process is ending, so the exit ends it instead.
                std::mem::forget(system);
            }
            outcome.map(drop)
        }
        Command::Token(args) => {
            println!("{}", token(&args)?);
            Ok(())
        }
        Command::Snapshot(SnapshotCommand::Inspect { path }) => {
            print!("{}", describe_snapshot(&path)?);
            Ok(())
        }
        Command::Pools(PoolsCommand::Validate { file }) => {
            let catalog = PoolCatalog::load(&file)?;
            println!("{}: {} pools", file.display(), catalog.len());
            for pool in catalog.iter() {
                match pool.params.pacing {
                    Pacing::Eager => println!("  {}  pacing eager", pool.spec),
                    Pacing::Quality { target_wait_ms } => println!(
                        "  {}  pacing quality, target wait {} s",
                        pool.spec,
                        target_wait_ms as f64 / 1_000.0
                    ),
                }
            }
            Ok(())
        }
    }
}

/// The configured secret, or the development secret of `data_dir`.
fn load_secret(configured: Option<&str>, data_dir: &Path) -> Result<JwtSecret, SecretError> {
    let secret = JwtSecret::resolve(configured, data_dir)?;
    match &secret.origin {
        SecretOrigin::Configured => tracing::info!("JWT secret from MATCHWELL_JWT_SECRET"),
        SecretOrigin::DevFile(path) => tracing::warn!(
            path = %path.display(),
            "using the development JWT secret; set MATCHWELL_JWT_SECRET in production"
        ),
        SecretOrigin::GeneratedDevFile(path) => tracing::warn!(
            path = %path.display(),
            "generated a development JWT secret (mode 0600); set MATCHWELL_JWT_SECRET in production"
        ),
    }
    Ok(secret)
}

/// Mints the token `args` describe.
fn token(args: &TokenArgs) -> Result<String, CliError> {
    let secret = load_secret(args.secret.jwt_secret.as_deref(), &args.secret.data_dir)?;
    let mut claims =
        Claims::new(&args.user, Duration::from_secs(args.ttl_s)).scoped(&args.secret.token_scope());
    claims.role = args.role.clone();
    claims.tenant = args.tenant.clone();
    if !args.ratings.is_empty() {
        claims.ratings = Some(args.ratings.iter().cloned().collect::<BTreeMap<_, _>>());
    }
    Ok(jwt::mint(&secret, &claims)?)
}

/// Listens first, then recovers the engine and serves it until SIGTERM or SIGINT, then stops
/// within the configured bound: writes refused, requests in flight answered, connections
/// closed, final snapshot written.
async fn serve(config: ServeConfig) -> Result<Stopped, CliError> {
    let mut stop = pin!(stop_signal()?);
    let secret = load_secret(config.jwt_secret.as_deref(), &config.data_dir)?;
    match &config.pools_file {
        Some(path) => {
            tracing::info!(path = %path.display(), pools = config.catalog.len(), "pools file")
        }
        None => tracing::info!(pools = config.catalog.len(), "built-in pools"),
    }
    let shown = |limit: Option<std::num::NonZeroU64>| limit.map_or(0, std::num::NonZeroU64::get);
    tracing::info!(
        max_shard_backlog = shown(config.overload.max_shard_backlog),
        max_journal_backlog = shown(config.overload.max_journal_backlog),
        "writes past these backlogs answer 503 (0: no bound)"
    );
    let mode = match config.cluster {
        None => Mode::Single(PersistenceConfig {
            fsync: config.fsync,
            ..PersistenceConfig::new(&config.data_dir)
        }),
        Some(settings) => Mode::Cluster(settings),
    };
    let registry = Registry::new();
    let mut builder = Engine::builder()
        .pools(config.catalog)
        .tasks(config.tasks)
        .challenge_limits(config.challenge_limits)
        .retry(config.retry)
        .overload(config.overload);
    match &config.live_game {
        Some(live_game) => {
            let retry = &config.retry;
            tracing::info!(
                url = %live_game.url,
                timeout_ms = live_game.timeout.as_millis(),
                max_attempts = retry.max_attempts,
                backoff_ms = retry.first_backoff.as_millis(),
                max_backoff_ms = retry.max_backoff.as_millis(),
                max_in_flight = retry.max_in_flight,
                "live-game service"
            );
            builder = builder.game_creator(Arc::new(HttpGameCreator::new(live_game)?));
        }
        None => tracing::info!("no live-game service configured; game ids are made locally"),
    }
    let mut health = HealthRegistry::default();
    let slot = Arc::new(match &mode {
        Mode::Single(_) => EngineSlot::default(),
        Mode::Cluster(_) => EngineSlot::clustered(),
    });
    slot.register_health(&mut health);
    let server = http::start(
        Arc::clone(&slot),
        registry.clone(),
        health,
        &secret,
        &config.http,
    )?;
    for addr in &server.addrs {
        tracing::info!(
            workers = config.http.workers,
            "matchwell listening on http://{addr}"
        );
    }
    let recovering = Instant::now();
    let serving = tokio::select! {
        serving = start_serving(builder, mode, &slot, &registry, server.addrs[0]) => serving,
        received = &mut stop => {
            tracing::info!(signal = %received, "stopping during recovery; nothing was acknowledged yet");
            server.drain(Duration::ZERO).await?;
            return Ok(Stopped::DuringRecovery);
        }
    };
    let serving = match serving {
        Ok(serving) => serving,
        Err(error) => {
            server.handle().stop(false).await;
            return Err(error);
        }
    };
    tracing::info!(
        recovery_ms = recovering.elapsed().as_millis() as u64,
        "matchwell ready"
    );

    let received = stop.await;
    let stopping = Instant::now();
    let bound = config.shutdown_timeout;
    tracing::info!(
        signal = %received,
        timeout_s = bound.as_secs(),
        "stopping: refusing writes, finishing the requests in flight"
    );
    if let Serving::Node(node) = &serving {
        // Requests go on being forwarded to the new owners meanwhile.
        if node.leave(bound / 2).await {
            tracing::info!(
                took_ms = stopping.elapsed().as_millis() as u64,
                "every partition handed over"
            );
        } else {
            tracing::warn!("partitions not handed over in time are lost with their leases' expiry");
        }
    }
    slot.begin_stop();
    let draining = bound.saturating_sub(stopping.elapsed()) / 2;
    if !server.drain(draining).await? {
        tracing::warn!(
            waited_ms = draining.as_millis() as u64,
            "requests still in flight were cut off"
        );
    }
    let remaining = bound.saturating_sub(stopping.elapsed());
    if tokio::time::timeout(remaining, serving.stop())
        .await
        .is_err()
    {
        return Err(CliError::StopTimedOut {
            timeout_s: bound.as_secs(),
        });
    }
    tracing::info!(
        took_ms = stopping.elapsed().as_millis() as u64,
        "matchwell stopped cleanly"
    );
    Ok(Stopped::Cleanly)
}

/// What a server serves: its one engine, or its partitions as a node of a cluster.
enum Serving {
    Engine(Arc<Engine>),
    Node(Arc<Node>),
}

impl Serving {
    /// Once the server has stopped: the engine's final snapshot, or the node's tasks.
    async fn stop(&self) {
        match self {
            Self::Engine(engine) => engine.shutdown().await,
            Self::Node(node) => node.shutdown(),
        }
    }
}

/// How a server keeps its state.
enum Mode {
    /// One engine, persisted in a local data directory.
    Single(PersistenceConfig),
    /// A node of a cluster, its partitions persisted in NATS JetStream.
    Cluster(ClusterSettings),
}

/// Starts what the server serves and puts it in `slot`: the engine `builder` makes (its
/// metrics in `registry`), recovered from its data directory; or a cluster node whose
/// partitions each get an engine from `builder` (their metrics in `registry`, labelled by
/// partition), advertising the address `bound` unless told another.
async fn start_serving(
    builder: EngineBuilder,
    mode: Mode,
    slot: &EngineSlot,
    registry: &Registry,
    bound: SocketAddr,
) -> Result<Serving, CliError> {
    let settings = match mode {
        Mode::Single(persistence) => {
            let builder = builder
                .metrics_registry(registry.clone())
                .persistence(persistence);
            let engine = Arc::new(builder.start().await?);
            slot.fill(Arc::clone(&engine));
            return Ok(Serving::Engine(engine));
        }
        Mode::Cluster(settings) => settings,
    };
    let advertise = settings
        .advertise_url(bound)
        .map_err(|error| CliError::Config(error.into()))?;
    tracing::info!(
        nats = %settings.store.urls,
        node = %settings.node_id,
        advertise = %advertise,
        partitions = settings.store.partitions,
        replicas = settings.store.replicas,
        lease_ttl_ms = settings.store.lease_ttl.as_millis() as u64,
        "joining the cluster"
    );
    let engines: EngineFactory = Arc::new(move |partition| {
        let labels = HashMap::from([("partition".to_owned(), partition.to_string())]);
        builder
            .clone()
            // A partition is one tenant's share of a node: partitions, not shards, spread
            // the work over the cores.
            .shards(1)
            .id_base(partition_id_base(partition))
            .seed(partition.into())
            .metrics_registry(
                Registry::new_custom(None, Some(labels)).expect("`partition` is a label name"),
            )
    });
    let node = Arc::new(Node::start(settings, advertise, engines, registry).await?);
    slot.fill_node(Arc::clone(&node));
    Ok(Serving::Node(node))
}

/// Resolves with the name of the first SIGTERM or SIGINT. Listening starts at once, so that a
/// signal from then on is never the default one that kills the process.
fn stop_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

/// Sets up logging to stderr. JSON lines carry each event's fields at the top level, beside
/// `timestamp`, `level` and `target`, so that log tools read them without unwrapping.
/// Access-log lines are written in batches (see `log_output`): the returned guard writes the
/// last of them when it is dropped, so `main` holds it until the end.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<FlushOnDrop, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|error| format!("invalid --log / MATCHWELL_LOG `{filter}`: {error}"))?;
    let (output, guard) = LogOutput::new(std::io::stderr());
    output
        .start_flusher()
        .map_err(|error| format!("cannot start the log's thread: {error}"))?;
    let colored = std::io::stderr().is_terminal();
    if !colored {
        output.install_access_output(format);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colored)
        .with_writer(output);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|error| error.to_string())?;
    Ok(guard)
}
