//! Owning one partition: taking it over (catch-up, replay and fence until the fence holds),
//! serving it while the lease is renewed, and letting it go (hand-over, lost lease, failed
//! journal).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use matchwell_actors::change_log::ChangeLog;
use matchwell_actors::matchmaker::Matchmaker;
use matchwell_actors::persist::Restored;
use matchwell_cluster::{
    ClusterStore, Follower, FollowerError, JetStreamLog, Lease, LeaseError, ReplayError,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::cluster::node::Context;
use crate::engine::{ExternalStore, StoreFailure};
use crate::{Engine, EngineError};

/// How often an owner checks that its partition's journal still works.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// How long a standby may take to catch up before the partition is loaded afresh instead.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(2);

/// Fence attempts of one take-over: each failure means the journal moved (or JetStream did
/// not answer) since the replay.
const FENCE_ATTEMPTS: usize = 5;

/// Until when this node certainly holds a partition's lease, by its monotonic clock. Shared by
/// the task that renews the lease, the requests that check it before serving, and the
/// snapshots that check it before storing: an atomic, because requests must never wait for
/// the renewal.
pub(crate) struct LeaseClock {
    epoch: Instant,
    /// `valid_until - epoch`, in nanoseconds.
    valid_until_ns: AtomicU64,
}

impl LeaseClock {
    fn new(valid_until: Instant) -> Self {
        let clock = Self {
            epoch: Instant::now(),
            valid_until_ns: AtomicU64::new(0),
        };
        clock.extend(valid_until);
        clock
    }

    fn extend(&self, valid_until: Instant) {
        let nanos = valid_until.saturating_duration_since(self.epoch).as_nanos();
        self.valid_until_ns
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Whether the lease is certainly still this node's.
    pub(crate) fn valid(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos();
        now < u128::from(self.valid_until_ns.load(Ordering::Acquire))
    }
}

/// A partition this node owns and serves.
pub(crate) struct Owned {
    pub(crate) engine: Arc<Engine>,
    pub(crate) lease: Arc<LeaseClock>,
    /// Cleared the moment the node stops serving the partition (hand-over, lost lease, failed
    /// journal): requests are refused from then on, before the engine is stopped.
    accepting: AtomicBool,
}

impl Owned {
    /// Whether requests for the partition are served here now.
    pub(crate) fn serving(&self) -> bool {
        self.accepting.load(Ordering::Acquire) && self.lease.valid()
    }
}

/// The partitions this node serves, by partition. Shared by the owner tasks, which put and
/// take their partition, and by every request, which looks its partition up with one
/// lock-free load.
pub(crate) struct Partitions(Vec<ArcSwapOption<Owned>>);

impl Partitions {
    pub(crate) fn new(partitions: u32) -> Self {
        Self((0..partitions).map(|_| ArcSwapOption::empty()).collect())
    }

    /// The partition, if this node serves it.
    pub(crate) fn get(&self, partition: u32) -> Option<Arc<Owned>> {
        self.0.get(partition as usize)?.load_full()
    }

    /// Every partition this node serves.
    pub(crate) fn owned(&self) -> impl Iterator<Item = Arc<Owned>> + '_ {
        self.0.iter().filter_map(ArcSwapOption::load_full)
    }

    fn set(&self, partition: u32, owned: Option<Arc<Owned>>) {
        if let Some(slot) = self.0.get(partition as usize) {
            slot.store(owned);
        }
    }
}

/// A partition's journal and snapshots as its engine's [`ExternalStore`].
struct PartitionJournal {
    store: ClusterStore,
    partition: u32,
    log: Arc<JetStreamLog>,
    lease: Arc<LeaseClock>,
}

/// Why a snapshot of a partition was not stored.
#[derive(Debug, thiserror::Error)]
enum SnapshotRefused {
    /// The lease may be someone else's: a snapshot stored now could replace a newer one.
    #[error("partition {0}'s lease may have passed to another node; no snapshot stored")]
    NotOwner(u32),
}

impl ExternalStore for PartitionJournal {
    fn log(&self) -> Arc<dyn ChangeLog> {
        self.log.clone()
    }

    fn snapshot(
        &self,
        matchmaker: Arc<Matchmaker>,
    ) -> BoxFuture<'static, Result<u64, StoreFailure>> {
        let (store, partition) = (self.store.clone(), self.partition);
        let (log, lease) = (Arc::clone(&self.log), Arc::clone(&self.lease));
        Box::pin(async move {
            let covered = log.last_stream_seq();
            let body = tokio::task::spawn_blocking(move || matchmaker.capture()).await?;
            // Nothing the capture holds may be missing from the journal, or a later owner
            // would load changes that were never acknowledged (refused by a fence).
            log.wait_durable(log.appended_seq()).await?;
            if !lease.valid() {
                return Err(SnapshotRefused::NotOwner(partition).into());
            }
            store.save_snapshot(partition, &body, covered).await?;
            let trimmed = store.trim_journal(partition, covered).await?;
            tracing::debug!(partition, covered, trimmed, "partition snapshot stored");
            Ok(covered)
        })
    }

    fn close(&self) -> BoxFuture<'static, Result<(), StoreFailure>> {
        let log = Arc::clone(&self.log);
        Box::pin(async move { Ok(log.close().await?) })
    }
}

/// Why a take-over failed; the partition is released and tried again later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TakeoverError {
    /// The partition's state could not be loaded or caught up.
    #[error(transparent)]
    Load(#[from] FollowerError),
    /// The rest of the journal could not be replayed after a failed fence.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Every fence failed.
    #[error("partition {partition}: no fence held after {FENCE_ATTEMPTS} attempts: {last}")]
    Fence {
        /// The partition.
        partition: u32,
        /// The last fence's error.
        last: String,
    },
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What an owner task hands back when it ends: the standby's follower when it never got the
/// lease, so that it goes on following.
pub(crate) type OwnerOutcome = Option<Follower>;

/// Owns `partition` for as long as possible: takes its lease, takes it over (from
/// `follower` when this node stood by), serves it while renewing the lease, and lets it go
/// when `hand_over` turns true (closing its journal before releasing the lease), when the
/// lease cannot be renewed in time, or when its journal fails.
pub(crate) async fn own(
    context: Arc<Context>,
    partition: u32,
    follower: Option<Follower>,
    mut hand_over: watch::Receiver<bool>,
) -> OwnerOutcome {
    let released = context
        .view
        .last_holder(partition)
        .is_none_or(|holder| holder.seen_at.elapsed() < context.settings.store.lease_ttl);
    let mut lease = match Lease::acquire(&context.store, partition, &context.me).await {
        Ok(lease) => lease,
        Err(error) => {
            tracing::debug!(partition, %error, "lease not taken");
            return follower;
        }
    };
    let clock = Arc::new(LeaseClock::new(lease.valid_until()));
    let started = Instant::now();
    let renew_every = context.renew_every();
    let mut renewals = tokio::time::interval_at((Instant::now() + renew_every).into(), renew_every);
    let takeover = take_over(&context, partition, follower, Arc::clone(&clock));
    tokio::pin!(takeover);
    let engine = loop {
        tokio::select! {
            taken = &mut takeover => match taken {
                Ok(engine) => break engine,
                Err(error) => {
                    tracing::warn!(partition, %error, "take-over failed; releasing the lease");
                    release(lease).await;
                    return None;
                }
            },
            _ = renewals.tick() => if !renew(&context, &mut lease, &clock).await {
                return None;
            },
            () = handed_over(&mut hand_over) => {
                release(lease).await;
                return None;
            }
        }
    };
    let owned = Arc::new(Owned {
        engine,
        lease: Arc::clone(&clock),
        accepting: AtomicBool::new(true),
    });
    context.partitions.set(partition, Some(Arc::clone(&owned)));
    context.metrics.owned.inc();
    let kind = if released { "handover" } else { "failover" };
    context.metrics.takeovers.with_label_values(&[kind]).inc();
    tracing::info!(
        partition,
        kind,
        took_ms = started.elapsed().as_millis() as u64,
        "partition taken over"
    );

    let mut checks = tokio::time::interval(CHECK_EVERY);
    let release_lease = loop {
        tokio::select! {
            _ = renewals.tick() => if !renew(&context, &mut lease, &clock).await {
                break false;
            },
            _ = checks.tick() => if !owned.engine.is_ready() {
                tracing::error!(partition, "the partition's journal failed; dropping the partition");
                break true;
            },
            () = handed_over(&mut hand_over) => break true,
        }
    };
    owned.accepting.store(false, Ordering::Release);
    context.partitions.set(partition, None);
    context.metrics.owned.dec();
    // Closes the journal once everything appended is acknowledged (or refused).
    owned.engine.shutdown().await;
    if release_lease {
        release(lease).await;
    }
    tracing::info!(partition, "partition let go");
    None
}

/// Renews `lease`, and says whether it may still be held. A request that fails while the
/// lease is still certainly held is tried again at the next renewal (a NATS server that
/// restarts, a client that reconnects); a lease lost or run out is dropped.
async fn renew(context: &Context, lease: &mut Lease, clock: &LeaseClock) -> bool {
    match lease.renew().await {
        Ok(_) => {
            clock.extend(lease.valid_until());
            context.metrics.renewals.inc();
            true
        }
        Err(error @ LeaseError::Request { .. }) if lease.may_be_held() => {
            tracing::warn!(partition = lease.partition(), %error, "lease renewal failed; trying again");
            true
        }
        Err(error) => {
            tracing::error!(partition = lease.partition(), %error, "partition lease lost; dropping the partition");
            context.metrics.lease_losses.inc();
            false
        }
    }
}

/// Resolves once the controller asks for the partition to be handed over, or is gone.
async fn handed_over(hand_over: &mut watch::Receiver<bool>) {
    let _ = hand_over.wait_for(|&go| go).await;
}

async fn release(lease: Lease) {
    let partition = lease.partition();
    if let Err(error) = lease.release().await {
        tracing::warn!(partition, %error, "lease not released; it expires on its own");
    }
}

/// Brings `partition`'s state up to date (from `follower` when there is one, else from its
/// snapshot and journal), then replays and fences until a fence holds: a replay is trusted
/// only once the fence after it succeeds, as a replay right after a JetStream election may
/// miss the newest records. Starts the partition's engine on the fenced journal.
async fn take_over(
    context: &Context,
    partition: u32,
    follower: Option<Follower>,
    lease: Arc<LeaseClock>,
) -> Result<Arc<Engine>, TakeoverError> {
    let store = &context.store;
    let (mut restored, mut last_seq) = catch_up(store, partition, follower).await?;
    let mut attempts = 0;
    let log = loop {
        let log = JetStreamLog::open_observed(
            store,
            partition,
            last_seq,
            &Handle::current(),
            Some(context.metrics.batch_observer()),
        );
        match log.fence().await {
            Ok(_) => break log,
            Err(error) => {
                attempts += 1;
                if attempts == FENCE_ATTEMPTS {
                    return Err(TakeoverError::Fence {
                        partition,
                        last: error.0,
                    });
                }
                tracing::debug!(partition, %error, "fence refused; replaying the rest");
                let rest = store.replay(partition, last_seq).await?;
                for change in rest.changes {
                    restored.apply(change);
                }
                last_seq = rest.last_seq;
            }
        }
    };
    let journal = Arc::new(PartitionJournal {
        store: store.clone(),
        partition,
        log: Arc::new(log),
        lease,
    });
    let engine = (context.engines)(partition)
        .external_store(journal, restored)
        .start()
        .await?;
    Ok(Arc::new(engine))
}

/// The state of `partition` and the stream sequence it reflects: the standby's when it
/// catches up in time, else loaded afresh.
async fn catch_up(
    store: &ClusterStore,
    partition: u32,
    follower: Option<Follower>,
) -> Result<(Restored, u64), FollowerError> {
    if let Some(follower) = follower {
        match tokio::time::timeout(CATCH_UP_WITHIN, follower.catch_up()).await {
            Ok(Ok(state)) => return Ok(state),
            Ok(Err(error)) => {
                tracing::warn!(partition, %error, "the standby failed; loading the partition");
            }
            Err(_) => tracing::warn!(
                partition,
                "the standby did not catch up in time; loading the partition"
            ),
        }
    }
    Follower::start(store, partition).await?.catch_up().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_clock_is_valid_until_its_deadline() {
        let clock = LeaseClock::new(Instant::now() + Duration::from_secs(60));
        assert!(clock.valid());
        clock.extend(Instant::now());
        assert!(!clock.valid());
        clock.extend(Instant::now() + Duration::from_secs(60));
        assert!(clock.valid());
    }
}
