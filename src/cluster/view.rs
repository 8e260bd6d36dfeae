//! What this node knows of the cluster: every partition's lease holder and every announced
//! node, kept current by a watch on the lease bucket.
//!
//! JetStream drops an expired key without telling watchers, so a key counts as live while it
//! was written within the lease TTL, by this node's clock: holders renew every third of it,
//! so a live key is written again long before. When the watch itself delivers nothing for a
//! while (this node's own announcement, renewed as often, should come back), the view is
//! stale: the watch is made again, and meanwhile nobody should act on what looks expired.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use matchwell_cluster::{ClusterStore, LeaseKey, LeaseUpdate, NodeInfo};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// A partition's lease as this node last saw it written.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    /// Who holds it, and where to forward to.
    pub(crate) node: NodeInfo,
    /// The write's revision (every renewal writes a new one).
    pub(crate) revision: u64,
    /// When this node saw the write.
    pub(crate) seen_at: Instant,
}

/// The view. Shared (`Arc`) by the task that follows the watch, the controller that acts on
/// it, and every request that routes by it: a request reads its partition's holder with one
/// lock-free load, while the node list, read by the controller only, sits behind a mutex.
pub(crate) struct View {
    ttl: Duration,
    /// Each partition's last known holder; `None` after a release, or before any was seen.
    holders: Vec<ArcSwapOption<Holder>>,
    /// Announced nodes by id, with when each was last seen announced.
    nodes: Mutex<BTreeMap<String, (NodeInfo, Instant)>>,
    /// When the watch last delivered anything, and whether it delivered this node's own
    /// announcement since it was made.
    fresh: Mutex<Freshness>,
    /// Wakes the controller when something changed.
    pub(crate) changed: Notify,
}

#[derive(Debug)]
struct Freshness {
    last_update: Instant,
    current: bool,
}

impl View {
    pub(crate) fn new(partitions: u32, ttl: Duration) -> Self {
        Self {
            ttl,
            holders: (0..partitions).map(|_| ArcSwapOption::empty()).collect(),
            nodes: Mutex::new(BTreeMap::new()),
            fresh: Mutex::new(Freshness {
                last_update: Instant::now(),
                current: false,
            }),
            changed: Notify::new(),
        }
    }

    /// Applies one write seen by the watch; `me` is this node's id.
    pub(crate) fn apply(&self, update: LeaseUpdate, me: &str) {
        let now = Instant::now();
        match update.key {
            LeaseKey::Partition(partition) => {
                if let Some(slot) = self.holders.get(partition as usize) {
                    slot.store(update.value.map(|node| {
                        Arc::new(Holder {
                            node,
                            revision: update.revision,
                            seen_at: now,
                        })
                    }));
                }
            }
            LeaseKey::Node(id) => {
                let mut nodes = self.nodes.lock();
                let mine = id == me;
                match update.value {
                    Some(node) => {
                        nodes.insert(id, (node, now));
                    }
                    None => {
                        nodes.remove(&id);
                    }
                }
                if mine {
                    self.fresh.lock().current = true;
                }
            }
        }
        self.fresh.lock().last_update = now;
        self.changed.notify_one();
    }

    /// A new watch is about to deliver every key again.
    pub(crate) fn rewatching(&self) {
        self.fresh.lock().current = false;
    }

    /// Whether the view can be acted on: the watch delivered this node's own announcement
    /// (so everything written before it) and has delivered something within the TTL.
    pub(crate) fn is_fresh(&self) -> bool {
        let fresh = self.fresh.lock();
        fresh.current && fresh.last_update.elapsed() < self.ttl
    }

    /// How long since the watch delivered anything.
    pub(crate) fn quiet_for(&self) -> Duration {
        self.fresh.lock().last_update.elapsed()
    }

    /// Partition `partition`'s holder, if its lease was written within the TTL (or, while
    /// the view is stale, whoever held it last).
    pub(crate) fn holder(&self, partition: u32) -> Option<Arc<Holder>> {
        let holder = self.holders.get(partition as usize)?.load_full()?;
        (holder.seen_at.elapsed() < self.ttl || !self.is_fresh()).then_some(holder)
    }

    /// Partition `partition`'s last known holder, however old.
    pub(crate) fn last_holder(&self, partition: u32) -> Option<Arc<Holder>> {
        self.holders.get(partition as usize)?.load_full()
    }

    /// The ids of the nodes announced within the TTL.
    pub(crate) fn live_nodes(&self) -> Vec<String> {
        let stale = !self.is_fresh();
        self.nodes
            .lock()
            .iter()
            .filter(|(_, (_, seen_at))| stale || seen_at.elapsed() < self.ttl)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The nodes announced within the TTL, with how long ago each was seen.
    pub(crate) fn live_node_infos(&self) -> Vec<(NodeInfo, Duration)> {
        self.nodes
            .lock()
            .values()
            .filter(|(_, seen_at)| seen_at.elapsed() < self.ttl)
            .map(|(node, seen_at)| (node.clone(), seen_at.elapsed()))
            .collect()
    }
}

/// Follows the lease bucket into `view` for as long as the task runs; `me` is this node's id.
/// The watch is made again whenever it fails or stays quiet for `quiet` (the owner of a
/// watch's consumer may be a NATS server that died, and the client would notice only after
/// ten seconds of missed heartbeats).
pub(crate) async fn follow(store: ClusterStore, view: Arc<View>, me: String, quiet: Duration) {
    loop {
        view.rewatching();
        match store.watch_leases().await {
            Ok(mut watch) => loop {
                match tokio::time::timeout(quiet, watch.next()).await {
                    Ok(Some(Ok(update))) => view.apply(update, &me),
                    Ok(Some(Err(error))) => {
                        tracing::warn!(%error, "lease watch failed; watching again");
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(
                            quiet_ms = quiet.as_millis() as u64,
                            "no lease update for a while; watching again"
                        );
                        break;
                    }
                }
            },
            Err(error) => tracing::warn!(%error, "cannot watch the leases"),
        }
        // A pause, so that an unreachable NATS does not turn this into a busy loop.
        tokio::time::sleep(quiet / 10).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeInfo {
        NodeInfo::new(id, format!("http://{id}")).unwrap()
    }

    fn update(key: LeaseKey, value: Option<NodeInfo>, revision: u64) -> LeaseUpdate {
        LeaseUpdate {
            key,
            value,
            revision,
        }
    }

    #[test]
    fn the_view_follows_writes_and_is_fresh_once_it_saw_this_node() {
        let view = View::new(4, Duration::from_secs(60));
        assert!(!view.is_fresh());
        view.apply(update(LeaseKey::Partition(2), Some(node("b")), 7), "a");
        view.apply(update(LeaseKey::Node("b".into()), Some(node("b")), 8), "a");
        assert!(!view.is_fresh(), "its own announcement not seen yet");
        view.apply(update(LeaseKey::Node("a".into()), Some(node("a")), 9), "a");
        assert!(view.is_fresh());
        assert_eq!(view.holder(2).unwrap().node, node("b"));
        assert_eq!(view.holder(2).unwrap().revision, 7);
        assert!(view.holder(1).is_none());
        assert_eq!(view.live_nodes(), ["a", "b"]);

        view.apply(update(LeaseKey::Partition(2), None, 10), "a");
        view.apply(update(LeaseKey::Node("b".into()), None, 11), "a");
        assert!(view.holder(2).is_none());
        assert_eq!(view.live_nodes(), ["a"]);
        view.rewatching();
        assert!(!view.is_fresh());
    }

    #[test]
    fn keys_not_written_within_the_ttl_are_gone_unless_the_view_is_stale() {
        let view = View::new(1, Duration::ZERO);
        view.apply(update(LeaseKey::Node("a".into()), Some(node("a")), 1), "a");
        view.apply(update(LeaseKey::Partition(0), Some(node("a")), 2), "a");
        // With a TTL of zero every write is old at once, and so is the view: it is stale,
        // and keeps what it saw last.
        assert!(!view.is_fresh());
        assert!(view.holder(0).is_some());
        assert_eq!(view.live_nodes(), ["a"]);
        assert!(view.live_node_infos().is_empty());
    }
}
