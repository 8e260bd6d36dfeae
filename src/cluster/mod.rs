//! Cluster mode (`matchwell serve --cluster nats://…`): several nodes share the tenants'
//! state through NATS JetStream, reached only through the `matchwell-cluster` crate. See
//! ARCHITECTURE.md, "Cluster mode".
//!
//! Tenants are spread over a fixed number of partitions; each partition is one [`Engine`]
//! on the node holding its lease, journaling to the partition's replicated log and
//! snapshotting to the object store. Another node stands by for it, following its journal.
//! Any node takes any request and forwards it to the owner of the caller's partition.
//!
//! - `config`: the flags and their checks.
//! - `view`: the leases and nodes this node sees, from a watch on the lease bucket.
//! - `node`: [`Node`]: joining, the controller that owns, follows and hands over
//!   partitions, routing, the map, health, leaving.
//! - `partition`: owning one partition: take-over, lease renewal, hand-over; its journal as
//!   the engine's [`ExternalStore`](crate::engine::ExternalStore).
//! - `metrics`, `map`: what the node reports.
//!
//! [`Engine`]: crate::Engine

mod config;
mod map;
mod metrics;
mod node;
mod partition;
mod view;

pub use config::{ClusterArgs, ClusterConfigError, ClusterSettings};
pub use map::{ClusterMap, NodeView, PartitionView};
pub(crate) use node::Route;
pub use node::{EngineFactory, Node, NodeError};
