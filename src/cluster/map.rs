//! The partition map as `GET /internal/cluster` shows it.

use serde::Serialize;
use utoipa::ToSchema;

/// One node's view of the cluster.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterMap {
    /// The id of the node that answered.
    pub node: String,
    /// Where other nodes forward to it.
    pub advertise: String,
    /// The cluster's partition count.
    pub partitions: u32,
    /// Whether its view of the leases is current (false while NATS is unreachable).
    pub view_fresh: bool,
    /// Whether it is leaving (handing its partitions over before it stops).
    pub leaving: bool,
    /// The nodes announced, as it sees them.
    pub nodes: Vec<NodeView>,
    /// Every partition.
    pub map: Vec<PartitionView>,
}

/// A live node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    /// Its id.
    pub id: String,
    /// Where requests are forwarded to it.
    pub http: String,
    /// When its announcement was last seen.
    pub announced_ms_ago: u64,
}

/// One partition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartitionView {
    /// The partition.
    pub partition: u32,
    /// The node holding its lease, if any: where its requests go.
    pub owner: Option<String>,
    /// The revision of the lease's last write.
    pub lease_revision: Option<u64>,
    /// How long ago the lease was last written (renewed every third of its TTL).
    pub lease_age_ms: Option<u64>,
    /// The node that should own it given the live nodes (rendezvous hashing).
    pub desired_owner: Option<String>,
    /// The node that should stand by for it.
    pub standby: Option<String>,
    /// Whether the answering node serves it now.
    pub serving_here: bool,
    /// What the answering node does with it: `owner`, `standby`, `starting_standby`, or
    /// nothing.
    pub role_here: Option<&'static str>,
}
