//! # matchwell-actors
//!
//! The matchmaking core of matchwell: the domain model, the pairing algorithm, and the actors
//! that run it. It knows nothing of HTTP, JSON bodies or files; the `matchwell` crate puts it
//! behind an HTTP API, persists it and embeds it.
//!
//! # Layout
//! - [`pools`]: pool specs, matching parameters, the catalog and its TOML file format.
//! - [`matching`]: the pure pairing algorithm over sorted rating buckets.
//! - [`pacing`]: quality pacing: which acceptable pairs a wave defers, and what a pool learns
//!   of its arrivals to decide it.
//! - [`model`]: the values the engine hands out (entries, matches, challenges, events).
//! - [`matchmaker`]: the facade: validates requests, writes the index, talks to the actors.
//! - `index`: the concurrent maps that answer lookups without an actor round trip, and
//!   `sequence_table`, the dense tables of entries and matches among them.
//! - `shard` / `router`: the pool-shard actors that own the waiting players and run the waves,
//!   and the router actor that dispatches to them, on a dedicated actix system.
//! - `challenges`: the challenge state machine and book.
//! - `admission`: the refusal of changes while the shards' mailboxes or the journal are
//!   behind ([`OverloadLimits`], [`Overload`]).
//! - [`games`]: the [`games::GameCreator`] trait, its errors, the retry policy and the
//!   live-game health the engine reports.
//! - `game_jobs`: the durable game-creation jobs and what paces them (in-flight limit,
//!   jittered backoff, `Retry-After`, the circuit breaker of `breaker`); `game_dispatch`: the
//!   attempts themselves.
//! - [`change_log`]: the interface of the journal the core appends to ([`change_log::ChangeLog`]),
//!   so that it does not know where its journal lives.
//! - [`persist`]: journal records and snapshot bodies (images of changed items), and
//!   recovery from them.
//! - [`clock`], [`ids`], [`metrics`], [`error`]: time, identifiers, Prometheus metrics, errors.
//!
//! # Runtime guarantees
//! - Every message about one queue passes through the router and then that queue's shard, in
//!   order: a cancel never overtakes its enqueue.
//! - Only the shard owning a queue mutates its waiting players and moves its entries out of
//!   (or back into) `searching`; so an entry is paired at most once, and never after it was
//!   cancelled or expired.
//! - A user has at most one searching entry per tenant, enforced in the index under the
//!   user's slot lock.
//! - Lookups read the index only; they never wait for an actor.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod admission;
mod breaker;
mod challenges;
pub mod change_log;
pub mod clock;
pub mod error;
mod game_dispatch;
mod game_jobs;
pub mod games;
pub mod ids;
mod index;
pub mod matching;
pub mod matchmaker;
pub mod metrics;
pub mod model;
pub mod pacing;
pub mod persist;
pub mod pools;
mod router;
mod sequence_table;
mod shard;
mod shared;

pub use admission::{Overload, OverloadLimits};
pub use challenges::{ChallengeLimits, ChallengeRefusal};
pub use index::{EntryRecord, EntryState, MatchRecord, QueueKey, TenantId, UserKey};
pub use router::ActorsStopped;
pub use shard::{ShardTimers, TickCounts};
