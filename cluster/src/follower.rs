//! The hot standby of a partition: its state, kept current as the owner writes it.
//!
//! A [`Follower`] loads the partition's latest snapshot, then applies every journal message to
//! a [`Restored`] (the single node's recovery structure: last image of each item wins) as it
//! is written. Taking the partition over is then [`Follower::catch_up`] (the last few messages)
//! and installing the state into a new `Matchmaker`, not a full load. Should the owner trim the
//! journal past the follower (after a snapshot, while the follower lagged), the follower
//! notices the gap in the chain of messages and starts again from that snapshot.

use std::time::Duration;

use matchwell_actors::persist::Restored;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::replay::{JournalReader, ReplayError};
use crate::snapshot::SnapshotError;
use crate::store::ClusterStore;

/// How long the follower waits before reading again after a failed read, so that a NATS
/// outage does not turn it into a busy loop.
const RETRY_READ_AFTER: Duration = Duration::from_millis(100);

/// Why a follower stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The snapshot could not be loaded.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The journal cannot be followed: a damaged message, or a gap no snapshot covers.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The following task panicked.
    #[error("the follower of partition {0} stopped unexpectedly")]
    Stopped(u32),
}

/// Follows one partition's journal on the runtime it was started on; stops when dropped.
pub struct Follower {
    partition: u32,
    store: ClusterStore,
    /// The stream sequence applied last; the task publishes it, [`Follower::applied_seq`]
    /// reads it.
    applied: watch::Receiver<u64>,
    /// Where to stop: set by [`Follower::catch_up`] to the journal's end at that moment.
    stop_at: watch::Sender<Option<u64>>,
    /// Ends with the state once the task reached `stop_at`.
    task: Option<JoinHandle<Result<(Restored, u64), FollowerError>>>,
}

impl Follower {
    /// Loads `partition`'s latest snapshot and starts following its journal after it.
    pub async fn start(store: &ClusterStore, partition: u32) -> Result<Self, FollowerError> {
        let (restored, position) = from_snapshot(store, partition).await?;
        let reader = JournalReader::open(store, partition, position).await?;
        let (applied_sender, applied) = watch::channel(position);
        let (stop_at, stop_receiver) = watch::channel(None);
        let following = Following {
            store: store.clone(),
            partition,
            restored,
            reader,
            applied: applied_sender,
            stop_at: stop_receiver,
        };
        Ok(Self {
            partition,
            store: store.clone(),
            applied,
            stop_at,
            task: Some(tokio::spawn(following.run())),
        })
    }

    /// The stream sequence of the last message applied.
    pub fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Applies the journal up to its current end and hands back the state and the stream
    /// sequence of the partition's last message, for a new owner: it opens its
    /// [`JetStreamLog`](crate::JetStreamLog) after that sequence and fences. Should the fence
    /// fail because the old owner wrote in between, the rest is one
    /// [`ClusterStore::replay`] after that sequence away.
    pub async fn catch_up(mut self) -> Result<(Restored, u64), FollowerError> {
        let end = self.store.journal_end(self.partition).await?;
        self.stop_at.send_replace(Some(end));
        let task = self
            .task
            .take()
            .ok_or(FollowerError::Stopped(self.partition))?;
        task.await
            .map_err(|_| FollowerError::Stopped(self.partition))?
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// `partition`'s latest snapshot as a [`Restored`], and the stream sequence it covers.
async fn from_snapshot(
    store: &ClusterStore,
    partition: u32,
) -> Result<(Restored, u64), SnapshotError> {
    let snapshot = store.load_latest_snapshot(partition).await?;
    let covered = snapshot.as_ref().map_or(0, |snapshot| snapshot.covered_seq);
    Ok((
        Restored::from_snapshot(snapshot.map(|snapshot| snapshot.body)),
        covered,
    ))
}

/// The following task's state.
struct Following {
    store: ClusterStore,
    partition: u32,
    restored: Restored,
    reader: JournalReader,
    applied: watch::Sender<u64>,
    stop_at: watch::Receiver<Option<u64>>,
}

impl Following {
    async fn run(mut self) -> Result<(Restored, u64), FollowerError> {
        loop {
            let position = self.reader.position();
            if self.stop_at.borrow().is_some_and(|end| position >= end) {
                return Ok((self.restored, position));
            }
            let message = tokio::select! {
                message = self.reader.next() => message,
                // A closed channel means the follower was dropped, which aborts this task.
                _ = self.stop_at.changed() => continue,
            };
            match message {
                Ok(message) => {
                    for change in message.changes {
                        self.restored.apply(change);
                    }
                    self.applied.send_replace(message.seq);
                }
                Err(gap @ ReplayError::Gap { found, .. }) => self.restart(found, gap).await?,
                Err(error @ ReplayError::Damaged { .. }) => return Err(error.into()),
                Err(error @ ReplayError::Read { .. }) => {
                    tracing::warn!(partition = self.partition, %error, "reading the journal again");
                    tokio::time::sleep(RETRY_READ_AFTER).await;
                    self.reader =
                        JournalReader::open(&self.store, self.partition, position).await?;
                }
            }
        }
    }

    /// Starts again from the latest snapshot after `gap`, the journal trimmed up to a message
    /// that follows `found`: that snapshot must cover `found`, or the gap stands.
    async fn restart(&mut self, found: u64, gap: ReplayError) -> Result<(), FollowerError> {
        let (restored, covered) = from_snapshot(&self.store, self.partition).await?;
        if covered < found {
            return Err(gap.into());
        }
        tracing::info!(
            partition = self.partition,
            covered,
            "the journal was trimmed past this follower; starting again from the snapshot"
        );
        self.restored = restored;
        self.reader = JournalReader::open(&self.store, self.partition, covered).await?;
        self.applied.send_replace(covered);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use matchwell_actors::change_log::ChangeLog;
    use matchwell_actors::persist::{Change, SnapshotBody};
    use tokio::runtime::Handle;

    use super::*;
    use crate::JetStreamLog;
    use crate::store::ClusterConfig;
    use crate::testkit::NatsCluster;

    fn heartbeat(at_ms: u64) -> Change {
        Change {
            at_ms,
            images: Vec::new(),
        }
    }

    /// Built by hand rather than through `Follower::start` (which starts after the latest
    /// snapshot), to be behind a trim for sure: its reader opens on the journal's start after
    /// the journal was trimmed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_behind_a_trim_starts_again_from_the_snapshot() {
        let nats = NatsCluster::start(1).unwrap();
        let config = ClusterConfig {
            replicas: 1,
            ..ClusterConfig::new(nats.urls())
        };
        let store = ClusterStore::connect(config).await.unwrap();
        let log = JetStreamLog::open(&store, 0, 0, &Handle::current());
        for at_ms in 1..=5 {
            let seq = log.append(&heartbeat(at_ms)).unwrap();
            log.wait_durable(seq).await.unwrap();
        }
        let covered = log.last_stream_seq();
        let body = SnapshotBody {
            taken_at_ms: 50,
            last_ids: [7, 0, 0],
            images: Vec::new(),
        };
        store.save_snapshot(0, &body, covered).await.unwrap();
        assert!(store.trim_journal(0, covered).await.unwrap() > 0);
        for at_ms in 60..=62 {
            log.append(&heartbeat(at_ms)).unwrap();
        }
        log.wait_durable(8).await.unwrap();

        let (applied, _) = watch::channel(0);
        let (_stop, stop_at) = watch::channel(Some(log.last_stream_seq()));
        let following = Following {
            store: store.clone(),
            partition: 0,
            restored: Restored::default(),
            reader: JournalReader::open(&store, 0, 0).await.unwrap(),
            applied,
            stop_at,
        };
        let (restored, last_seq) = following.run().await.unwrap();

        assert_eq!(last_seq, log.last_stream_seq());
        let mut expected = Restored::from_snapshot(Some(body));
        for at_ms in 60..=62 {
            expected.apply(heartbeat(at_ms));
        }
        assert_eq!(format!("{restored:?}"), format!("{expected:?}"));
        assert_eq!(restored.last_seen_ms(), 62);
    }
}
