//! A node's cluster metrics, and its partitions' engine metrics in the node's registry.

use std::sync::Arc;
use std::time::Duration;

use matchwell_cluster::BatchObserver;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, Opts, Registry, exponential_buckets,
    register_histogram_with_registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_with_registry,
};

use crate::cluster::partition::Partitions;

/// The node's metrics. Cloned into every task that counts (prometheus handles share their
/// values).
#[derive(Clone)]
pub(crate) struct ClusterMetrics {
    pub(crate) owned: IntGauge,
    pub(crate) standby: IntGauge,
    pub(crate) renewals: IntCounter,
    pub(crate) lease_losses: IntCounter,
    /// By kind: `failover` (the last owner's lease expired) or `handover` (it released it).
    pub(crate) takeovers: IntCounterVec,
    /// By outcome: `relayed` (the owner answered), `unreachable` (it did not), `refused`
    /// (a body over the limit, answered here), `no_owner` (nobody serves the partition now).
    pub(crate) forwarded: IntCounterVec,
    batches: Histogram,
}

impl ClusterMetrics {
    /// Creates the metrics and registers them in `registry`, with the collector of the
    /// engines of `partitions`.
    pub(crate) fn register(
        registry: &Registry,
        partitions: Arc<Partitions>,
    ) -> Result<Self, prometheus::Error> {
        registry.register(Box::new(PartitionEngines(partitions)))?;
        Ok(Self {
            owned: register_int_gauge_with_registry!(
                "matchwell_cluster_partitions_owned",
                "Partitions this node owns and serves",
                registry
            )?,
            standby: register_int_gauge_with_registry!(
                "matchwell_cluster_partitions_standby",
                "Partitions whose journal this node follows, to take them over",
                registry
            )?,
            renewals: register_int_counter_with_registry!(
                "matchwell_cluster_lease_renewals_total",
                "Partition leases renewed",
                registry
            )?,
            lease_losses: register_int_counter_with_registry!(
                "matchwell_cluster_lease_losses_total",
                "Partitions dropped because their lease could not be renewed in time or was taken",
                registry
            )?,
            takeovers: register_int_counter_vec_with_registry!(
                Opts::new(
                    "matchwell_cluster_takeovers_total",
                    "Partitions this node took over: after a failed owner's lease expired (failover) or a release (handover)"
                ),
                &["kind"],
                registry
            )?,
            forwarded: register_int_counter_vec_with_registry!(
                Opts::new(
                    "matchwell_cluster_forwarded_requests_total",
                    "Requests for partitions of other nodes, by outcome"
                ),
                &["outcome"],
                registry
            )?,
            batches: register_histogram_with_registry!(
                "matchwell_cluster_journal_batch_seconds",
                "JetStream append latency: from sending a journal batch to its acknowledgment",
                exponential_buckets(0.000_1, 2.0, 16)?,
                registry
            )?,
        })
    }

    /// What tells the journal batch metric of each batch.
    pub(crate) fn batch_observer(&self) -> Arc<dyn BatchObserver> {
        Arc::new(BatchLatency(self.batches.clone()))
    }
}

struct BatchLatency(Histogram);

impl BatchObserver for BatchLatency {
    fn stored(&self, _records: usize, _bytes: usize, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// The metrics of the engines of the partitions this node owns now, each in its own registry
/// labelled with its partition, gathered when the node's registry is. No descriptors: which
/// partitions there are changes while the node runs, and prometheus checks nothing of a
/// collector that declares none.
struct PartitionEngines(Arc<Partitions>);

impl Collector for PartitionEngines {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0
            .owned()
            .flat_map(|owned| owned.engine.metrics_registry().gather())
            .collect()
    }
}
