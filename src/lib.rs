//! # matchwell
//!
//! An actor-based, in-memory matchmaking engine. Players join rating-based queues and are
//! paired with close-rated opponents, the acceptable gap widening while they wait; each pair
//! becomes a game through a live-game service. Players can also challenge each other directly.
//!
//! This crate is the engine's outer layer: the embeddable [`Engine`] (builder, background
//! tasks), and the service around it. The matchmaking itself lives in `matchwell-actors`,
//! whose main types are re-exported here.
//!
//! # Layout
//! - [`engine`]: [`Engine`] and [`EngineBuilder`]: start the core with working defaults, run
//!   its background tasks, expose its operations.
//! - [`persistence`]: the data directory: recovery, journal, snapshots.
//! - [`cluster`]: cluster mode: partitions of tenants owned by nodes through leases in NATS
//!   JetStream, a replicated journal per partition, hot standbys, forwarding.
//! - [`tasks`]: background task settings and the master switch.
//! - [`health`]: readiness by component, and how components plug in.
//! - [`replay`]: trace replay on a simulated clock (the `replay` example).
//! - [`http`]: the HTTP API on actix-web (SPEC §4): routes, JWT auth, rate limits, request ids,
//!   metrics, server-sent events, the generated OpenAPI document.
//! - [`live_game`]: the live-game service client, a [`GameCreator`] over HTTP (SPEC §5).
//! - [`jwt`]: the token secret (configured, or a development secret in the data directory),
//!   claims and minting.
//! - [`cli`] and [`config`]: the `matchwell` command line (`serve`, `token`, `pools
//!   validate`) and the validated server configuration.
//! - `log_output`: where log lines go (standard error, access-log lines in batches).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod health;
pub mod http;
pub mod jwt;
pub mod live_game;
mod log_output;
pub mod persistence;
pub mod replay;
pub mod tasks;

pub use engine::{Engine, EngineBuilder, EngineError, ExternalStore, StoreFailure};
pub use matchwell_actors::clock::{Clock, ManualClock, SystemClock};
pub use matchwell_actors::error::MatchmakerError;
pub use matchwell_actors::games::{
    CircuitState, GameCreationError, GameCreator, GamePlayer, GameRequest, LiveGameHealth,
    LocalGameIds, RetryPolicy,
};
pub use matchwell_actors::ids::{ChallengeId, EntryId, MatchId};
pub use matchwell_actors::matchmaker::{
    ChallengeRequest, EnqueueRequest, EntryWatch, Matchmaker, TickReport,
};
pub use matchwell_actors::model::{
    ActiveState, Challenge, ChallengeStatus, Color, ColorChoice, Entry, EntryStatus, GameStatus,
    Match, MatchEvent, MatchPlayer, QueueSummary,
};
pub use matchwell_actors::pools::{MatchingParams, Pacing, PoolCatalog, PoolSpec, TimeControl};
pub use matchwell_actors::{ChallengeLimits, Overload, OverloadLimits};
pub use matchwell_snapshots::FsyncMode;
pub use persistence::{
    JournalVitals, PersistenceConfig, PersistenceError, RecoveryReport, SnapshotVitals,
};
pub use tasks::{BackgroundTasks, TaskSettings};
