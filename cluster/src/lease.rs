//! Partition leases and node announcements, in the key-value bucket
//! [`LEASES_BUCKET`](crate::store::LEASES_BUCKET) whose `max_age` is the lease TTL: a key not
//! written again within the TTL disappears.
//!
//! Partition `p`'s owner holds key `lease.<p>`: it creates the key (which fails while anyone
//! holds it), renews it by compare-and-set on the revision it last wrote (which fails once
//! anyone else wrote it, or once it expired), and deletes it on hand-over if it still holds
//! it. Its value names the holder and its HTTP address, for forwarding.
//!
//! The holder also keeps time itself: a lease written at instant `t` (the moment the write was
//! sent, by the holder's monotonic clock, which is no later than when JetStream stored it)
//! cannot expire before `t + TTL`. Past that instant, without a successful renewal, the holder
//! must assume someone else may hold the partition ([`Lease::may_be_held`]), even if it cannot
//! reach NATS to find out.
//!
//! Nodes announce themselves under `node.<id>` with a plain put, renewed the same way: a node
//! that restarts announces itself at once, without waiting for its old announcement to expire.
//!
//! A [`LeaseWatch`] follows the bucket: every key's current value first, then every write as it
//! happens. A key that expires is not told (JetStream drops it silently), but as every live key
//! is written again each renewal, a key not written for a TTL is gone: watchers judge that by
//! their own clock.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::store::{ClusterStore, ephemeral_consumer, ephemeral_consumer_timed_out};

/// A node as other nodes see it: in leases and announcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    id: String,
    http: String,
}

impl NodeInfo {
    /// A node with id `id` (letters, digits, `-` and `_`: it is part of a key) whose HTTP
    /// service is at `http` (where other nodes forward requests, e.g. `http://10.0.0.5:8080`).
    pub fn new(id: impl Into<String>, http: impl Into<String>) -> Result<Self, LeaseError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid {
            return Err(LeaseError::InvalidNodeId(id));
        }
        Ok(Self {
            id,
            http: http.into(),
        })
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's HTTP address.
    pub fn http(&self) -> &str {
        &self.http
    }

    fn encode(&self) -> bytes::Bytes {
        rmp_serde::to_vec_named(self)
            .expect("two strings always encode")
            .into()
    }

    fn decode(key: &str, value: &[u8]) -> Result<Self, LeaseError> {
        rmp_serde::from_slice(value).map_err(|error| LeaseError::Request {
            key: key.to_owned(),
            reason: format!("the value does not decode: {error}"),
        })
    }
}

/// Why a lease or an announcement could not be taken, kept or read.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A node id that cannot be part of a key.
    #[error("invalid node id {0:?}: use 1 to 64 letters, digits, `-` or `_`")]
    InvalidNodeId(String),
    /// Someone holds the lease.
    #[error("lease {key} is held by {}", holder.as_ref().map_or("another node", |holder| holder.id()))]
    Held {
        /// The lease's key.
        key: String,
        /// Who holds it, if that could be read.
        holder: Option<NodeInfo>,
    },
    /// The lease is no longer ours: someone else wrote it, or it expired.
    #[error("lease {key} was lost: it expired or another node took it")]
    Lost {
        /// The lease's key.
        key: String,
    },
    /// A renewal did not complete before the lease's TTL ran out, by the holder's clock.
    #[error("lease {key} could not be renewed before it expired")]
    Expired {
        /// The lease's key.
        key: String,
    },
    /// NATS could not be asked, or answered something unreadable.
    #[error("lease bucket request on {key} failed: {reason}")]
    Request {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

fn request_error(key: &str, error: impl std::fmt::Display) -> LeaseError {
    LeaseError::Request {
        key: key.to_owned(),
        reason: error.to_string(),
    }
}

fn lease_key(partition: u32) -> String {
    format!("lease.{partition}")
}

fn node_key(id: &str) -> String {
    format!("node.{id}")
}

/// A key of the lease bucket, as a [`LeaseWatch`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseKey {
    /// Partition `p`'s lease (`lease.<p>`).
    Partition(u32),
    /// Node `id`'s announcement (`node.<id>`).
    Node(String),
}

impl LeaseKey {
    /// The key named `key`, if it is a lease or an announcement.
    fn parse(key: &str) -> Option<Self> {
        if let Some(partition) = key.strip_prefix("lease.") {
            return partition.parse().ok().map(Self::Partition);
        }
        key.strip_prefix("node.")
            .map(|id| Self::Node(id.to_owned()))
    }
}

/// One write to the lease bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseUpdate {
    /// What was written.
    pub key: LeaseKey,
    /// The lease's holder, or the node announced; `None` when the key was deleted (a release,
    /// a withdrawal).
    pub value: Option<NodeInfo>,
    /// The write's revision: a lease's revision changes with every renewal.
    pub revision: u64,
}

/// Every write to the lease bucket, starting with the current value of every key; see the
/// module documentation for keys that expire.
pub struct LeaseWatch {
    entries: kv::Watch,
}

impl LeaseWatch {
    /// The next write, waiting for one; `None` if the watch ended (the connection closed for
    /// good). Keys other than leases and announcements are skipped.
    pub async fn next(&mut self) -> Option<Result<LeaseUpdate, LeaseError>> {
        loop {
            let entry = match self.entries.next().await? {
                Ok(entry) => entry,
                Err(error) => return Some(Err(request_error("lease bucket watch", error))),
            };
            let Some(key) = LeaseKey::parse(&entry.key) else {
                continue;
            };
            let value = match entry.operation {
                kv::Operation::Put => match NodeInfo::decode(&entry.key, &entry.value) {
                    Ok(node) => Some(node),
                    Err(error) => return Some(Err(error)),
                },
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            return Some(Ok(LeaseUpdate {
                key,
                value,
                revision: entry.revision,
            }));
        }
    }
}

/// A partition lease this node holds (or held: see [`may_be_held`](Self::may_be_held)).
#[derive(Debug)]
pub struct Lease {
    bucket: kv::Store,
    key: String,
    partition: u32,
    holder: NodeInfo,
    ttl: Duration,
    /// The revision this node last wrote: a renewal or release succeeds only while it is
    /// still the key's latest.
    revision: u64,
    /// When the last successful write was sent, by this node's monotonic clock.
    written_at: Instant,
}

impl Lease {
    /// Takes `partition`'s lease for `holder`, if nobody holds it.
    pub async fn acquire(
        store: &ClusterStore,
        partition: u32,
        holder: &NodeInfo,
    ) -> Result<Self, LeaseError> {
        let key = lease_key(partition);
        let written_at = Instant::now();
        match store.leases.create(&key, holder.encode()).await {
            Ok(revision) => Ok(Self {
                bucket: store.leases.clone(),
                key,
                partition,
                holder: holder.clone(),
                ttl: store.config().lease_ttl,
                revision,
                written_at,
            }),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                let holder = store.lease_holder(partition).await.ok().flatten();
                Err(LeaseError::Held { key, holder })
            }
            Err(error) => Err(request_error(&key, error)),
        }
    }

    /// Writes the lease again if it is still ours, restarting its TTL, and returns the new
    /// revision. Gives up when the TTL runs out by this node's clock before JetStream answers.
    pub async fn renew(&mut self) -> Result<u64, LeaseError> {
        let written_at = Instant::now();
        let update = self
            .bucket
            .update(&self.key, self.holder.encode(), self.revision);
        let updated = tokio::time::timeout_at(self.valid_until().into(), update)
            .await
            .map_err(|_| LeaseError::Expired {
                key: self.key.clone(),
            })?;
        match updated {
            Ok(revision) => {
                self.revision = revision;
                self.written_at = written_at;
                Ok(revision)
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(LeaseError::Lost {
                    key: self.key.clone(),
                })
            }
            Err(error) => Err(request_error(&self.key, error)),
        }
    }

    /// Deletes the lease if it is still ours, so that another node can take the partition at
    /// once rather than after the TTL.
    pub async fn release(self) -> Result<(), LeaseError> {
        match self
            .bucket
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(LeaseError::Lost { key: self.key })
            }
            Err(error) => Err(request_error(&self.key, error)),
        }
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The revision this node last wrote.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Until when the lease is certainly this node's, by its monotonic clock: the TTL after
    /// the last successful write was sent.
    pub fn valid_until(&self) -> Instant {
        self.written_at + self.ttl
    }

    /// Whether the lease may still be this node's: false once the TTL has passed since the
    /// last successful write, when the key may have expired and another node may own the
    /// partition. The holder stops taking writes for the partition then.
    pub fn may_be_held(&self) -> bool {
        Instant::now() < self.valid_until()
    }
}

impl ClusterStore {
    /// Who holds `partition`'s lease, if anyone does: where to forward its requests.
    pub async fn lease_holder(&self, partition: u32) -> Result<Option<NodeInfo>, LeaseError> {
        self.read_node(&lease_key(partition)).await
    }

    /// Announces `node` as live (or renews its announcement), for the TTL.
    pub async fn announce(&self, node: &NodeInfo) -> Result<u64, LeaseError> {
        let key = node_key(node.id());
        self.leases
            .put(&key, node.encode())
            .await
            .map_err(|error| request_error(&key, error))
    }

    /// Withdraws `node`'s announcement, on a graceful stop.
    pub async fn withdraw(&self, node: &NodeInfo) -> Result<(), LeaseError> {
        let key = node_key(node.id());
        self.leases
            .delete(&key)
            .await
            .map_err(|error| request_error(&key, error))
    }

    /// Watches every lease and announcement: their current values, then every write.
    pub async fn watch_leases(&self) -> Result<LeaseWatch, LeaseError> {
        let entries = ephemeral_consumer(|| self.leases.watch_with_history(">"))
            .await
            .ok_or_else(|| LeaseError::Request {
                key: "lease bucket watch".to_owned(),
                reason: ephemeral_consumer_timed_out(),
            })?
            .map_err(|error| request_error("lease bucket watch", error))?;
        Ok(LeaseWatch { entries })
    }

    async fn read_node(&self, key: &str) -> Result<Option<NodeInfo>, LeaseError> {
        match self.leases.get(key).await {
            Ok(Some(value)) => NodeInfo::decode(key, &value).map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(request_error(key, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_must_fit_in_a_key() {
        assert!(NodeInfo::new("node-1_a", "http://127.0.0.1:8080").is_ok());
        for bad in ["", "a.b", "a b", "ä", &"x".repeat(65)] {
            assert!(matches!(
                NodeInfo::new(bad, "http://x"),
                Err(LeaseError::InvalidNodeId(_))
            ));
        }
    }

    #[test]
    fn watched_keys_are_leases_and_announcements() {
        assert_eq!(LeaseKey::parse("lease.7"), Some(LeaseKey::Partition(7)));
        assert_eq!(
            LeaseKey::parse("node.n-1"),
            Some(LeaseKey::Node("n-1".to_owned()))
        );
        for other in ["lease.x", "partitions", "leases.1", ""] {
            assert_eq!(LeaseKey::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_node_round_trips_through_its_value() {
        let node = NodeInfo::new("n1", "http://10.0.0.5:8080").unwrap();
        assert_eq!(NodeInfo::decode("k", &node.encode()).unwrap(), node);
        assert!(matches!(
            NodeInfo::decode("k", b"\xc1"),
            Err(LeaseError::Request { .. })
        ));
    }
}
