//! # matchwell-cluster
//!
//! The foundations of matchwell's cluster mode on NATS JetStream (see ARCHITECTURE.md,
//! "Cluster mode"): we build no consensus of our own; JetStream's replicated stream, key-value
//! buckets and object store hold everything, and a node's memory can be rebuilt from them.
//! This crate knows nothing of HTTP or actix; it gives the engine a replicated journal behind
//! the core's [`ChangeLog`](matchwell_actors::change_log::ChangeLog) interface, partition
//! leases, node membership, snapshots, and a hot standby.
//!
//! # Layout
//! - [`store`]: [`ClusterStore`], the connection and the JetStream assets every node shares
//!   (the journal stream, the cluster and lease buckets, the snapshot object store), and the
//!   partition count fixed at the cluster's first start.
//! - [`log`]: [`JetStreamLog`], one partition's journal with group commit and fencing by
//!   expected subject sequence, and a [`BatchObserver`] told of every batch; `batch` is the
//!   encoding of one journal message.
//! - [`replay`]: reading a partition's journal back ([`ClusterStore::replay`]), and the
//!   integrity chain every reader checks.
//! - [`lease`]: [`Lease`] (one partition's owner), node announcements and the live nodes,
//!   and [`LeaseWatch`], every write to the lease bucket as it happens.
//! - [`assignment`](mod@assignment): the desired owner and standby of every partition
//!   (rendezvous hashing), and the partition of a tenant.
//! - [`snapshot`]: partition snapshots in the object store, and trimming the journal behind
//!   them.
//! - [`follower`]: [`Follower`], the hot standby that applies a partition's journal as it is
//!   written.
//! - `testkit` (feature `testkit`): real `nats-server` processes for tests, one server or a
//!   three-server cluster, with per-server kill, pause, resume and restart.
//!
//! # Guarantees
//! - A record counts as durable only once JetStream acknowledged the message holding it; on a
//!   cluster with three replicas that is a quorum's copy.
//! - Every journal message names the subject sequence it follows, and JetStream refuses it
//!   otherwise: of two nodes that both believe they own a partition, only the one that fenced
//!   last can write, and the other's log fails for good.
//! - Every reader checks that chain, so a journal trimmed behind a reader is noticed, never
//!   silently skipped.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod assignment;
mod batch;
pub mod follower;
pub mod lease;
pub mod log;
pub mod replay;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use assignment::{Placement, assignment, partition_of_tenant};
pub use batch::BatchError;
pub use follower::{Follower, FollowerError};
pub use lease::{Lease, LeaseError, LeaseKey, LeaseUpdate, LeaseWatch, NodeInfo};
pub use log::{BatchObserver, JetStreamLog};
pub use replay::{ReplayError, Replayed};
pub use snapshot::{SnapshotError, StoredSnapshot};
pub use store::{ClusterConfig, ClusterStore, StoreError};
