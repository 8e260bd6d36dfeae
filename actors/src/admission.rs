//! Admission of changes under overload: a change the engine cannot take on promptly is refused
//! at once instead of queueing behind the others.
//!
//! Two queues can grow without bound when callers outpace the engine: the mailboxes of the
//! shard actors (an enqueue answers before its shard has handled it, and actix's `do_send`
//! ignores mailbox capacity) and the journal's records waiting to be durable (under fsync
//! `always` every change waits for them). Past a bound on either, a change is refused with
//! [`Overload`], which the HTTP layer answers with 503 and `Retry-After`; reads never pass
//! through here.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntCounter;

use crate::change_log::ChangeLog;
use crate::index::QueueKey;
use crate::metrics::Metrics;
use crate::router::shard_index;

/// How far behind the engine may fall before it refuses changes. `None` leaves a queue
/// unbounded, which is the default: an embedding program's callers are its own code, which
/// paces itself; a server facing traffic it does not control sets both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverloadLimits {
    /// Enqueues and cancels sent to one shard and not yet handled by it: at this many, the
    /// enqueues and cancels of that shard's queues are refused.
    pub max_shard_backlog: Option<NonZeroU64>,
    /// Journal records appended and not yet durable: at this many, every change is refused.
    pub max_journal_backlog: Option<NonZeroU64>,
}

/// Why a change was refused: the engine is behind. Nothing was changed; the same request may
/// be sent again a moment later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overload {
    /// The shard of the request's queue has too many messages waiting.
    #[error("the queue's shard has {backlog} messages waiting (bound {limit})")]
    Shard {
        /// Messages waiting when the request came.
        backlog: u64,
        /// The bound.
        limit: u64,
    },
    /// The journal has too many records waiting to be durable.
    #[error("the journal has {backlog} records waiting to be durable (bound {limit})")]
    Journal {
        /// Records waiting when the request came.
        backlog: u64,
        /// The bound.
        limit: u64,
    },
}

impl Overload {
    /// The reasons, as `/metrics` labels them, in the order of [`Overload::reason`].
    pub(crate) const REASONS: [&'static str; 2] = ["shard", "journal"];

    fn reason(self) -> usize {
        match self {
            Self::Shard { .. } => 0,
            Self::Journal { .. } => 1,
        }
    }
}

/// One shard's count of messages sent and not yet handled, alone on its cache line: every
/// caller of that shard adds to it and the shard subtracts from it, and counters of two
/// shards sharing a line would make their traffic contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Backlog(AtomicU64);

/// The admission check and the counts it reads.
///
/// Shared by every caller and every shard (inside [`crate::shared::Shared`]). The shard
/// counts are atomics, one per shard, rather than anything asked of the actors: actix's
/// `Addr` tells no mailbox length, and a round trip to a shard is exactly the wait this check
/// exists to avoid. A count is raised by the sender just before it sends and lowered by the
/// shard's handler, so it covers the router's mailbox as well as the shard's. The check reads
/// the count and the send raises it separately: concurrent callers may overshoot a bound by
/// their number, which keeps the hot path to one load and one add.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: OverloadLimits,
    /// Per shard slot, indexed as the router picks shards; empty without a shard bound, so
    /// that an unbounded engine counts nothing.
    backlogs: Box<[Backlog]>,
    /// Refusals by reason, in the order of [`Overload::REASONS`].
    shed: [IntCounter; 2],
}

impl Admission {
    /// The admission of an engine of `shards` shards.
    pub(crate) fn new(limits: OverloadLimits, shards: usize, metrics: &Metrics) -> Self {
        let slots = if limits.max_shard_backlog.is_some() {
            shards.max(1)
        } else {
            0
        };
        Self {
            limits,
            backlogs: (0..slots).map(|_| Backlog::default()).collect(),
            shed: metrics.shed.clone(),
        }
    }

    fn backlog(&self, queue: QueueKey) -> Option<&AtomicU64> {
        if self.backlogs.is_empty() {
            return None;
        }
        Some(&self.backlogs[shard_index(queue, self.backlogs.len())].0)
    }

    /// Admits a change that sends a message to the shard of `queue` (when given) and
    /// journals through `journal` (when the engine has one), or says which queue is too long.
    pub(crate) fn admit(
        &self,
        queue: Option<QueueKey>,
        journal: Option<&dyn ChangeLog>,
    ) -> Result<(), Overload> {
        let shard = queue
            .and_then(|queue| self.backlog(queue))
            .zip(self.limits.max_shard_backlog)
            .map(|(backlog, limit)| (backlog.load(Ordering::Relaxed), limit.get()))
            .filter(|&(backlog, limit)| backlog >= limit)
            .map(|(backlog, limit)| Overload::Shard { backlog, limit });
        let refused = shard.or_else(|| {
            let (journal, limit) = journal.zip(self.limits.max_journal_backlog)?;
            let backlog = journal.appended_seq().saturating_sub(journal.durable_seq());
            (backlog >= limit.get()).then_some(Overload::Journal {
                backlog,
                limit: limit.get(),
            })
        });
        match refused {
            None => Ok(()),
            Some(overload) => {
                self.shed[overload.reason()].inc();
                Err(overload)
            }
        }
    }

    /// A message for the shard of `queue` is about to be sent.
    pub(crate) fn sent(&self, queue: QueueKey) {
        if let Some(backlog) = self.backlog(queue) {
            backlog.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The shard of `queue` has handled a message that [`Admission::sent`] counted.
    pub(crate) fn handled(&self, queue: QueueKey) {
        if let Some(backlog) = self.backlog(queue) {
            backlog.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change_log::ChangeLogError;
    use crate::index::TenantId;
    use crate::persist::Change;
    use crate::pools::{PoolCatalog, PoolId};
    use futures::future::BoxFuture;

    fn queue(pool: u16) -> QueueKey {
        QueueKey {
            tenant: TenantId(0),
            pool: PoolId(pool),
        }
    }

    fn limits(shard: u64, journal: u64) -> OverloadLimits {
        OverloadLimits {
            max_shard_backlog: NonZeroU64::new(shard),
            max_journal_backlog: NonZeroU64::new(journal),
        }
    }

    /// A journal whose sequence numbers the test sets.
    #[derive(Default)]
    struct Behind {
        appended: AtomicU64,
        durable: AtomicU64,
    }

    impl ChangeLog for Behind {
        fn append(&self, _: &Change) -> Result<u64, ChangeLogError> {
            Ok(self.appended.fetch_add(1, Ordering::Relaxed) + 1)
        }

        fn appended_seq(&self) -> u64 {
            self.appended.load(Ordering::Relaxed)
        }

        fn durable_seq(&self) -> u64 {
            self.durable.load(Ordering::Relaxed)
        }

        fn wait_durable(&self, _: u64) -> BoxFuture<'static, Result<(), ChangeLogError>> {
            Box::pin(async { Ok(()) })
        }

        fn failure(&self) -> Option<String> {
            None
        }
    }

    fn shed(metrics: &Metrics) -> [u64; 2] {
        metrics.shed.each_ref().map(IntCounter::get)
    }

    #[test]
    fn a_shard_at_its_bound_refuses_until_it_has_handled_a_message() {
        let metrics = Metrics::unregistered(&PoolCatalog::builtin());
        let admission = Admission::new(limits(2, 0), 4, &metrics);
        let busy = queue(1);
        for _ in 0..2 {
            assert_eq!(admission.admit(Some(busy), None), Ok(()));
            admission.sent(busy);
        }
        assert_eq!(
            admission.admit(Some(busy), None),
            Err(Overload::Shard {
                backlog: 2,
                limit: 2
            })
        );
        assert_eq!(shed(&metrics), [1, 0]);
        // Another shard's queue, and a change that sends nothing to a shard, pass.
        let elsewhere = (2..64)
            .map(queue)
            .find(|other| shard_index(*other, 4) != shard_index(busy, 4))
            .unwrap();
        assert_eq!(admission.admit(Some(elsewhere), None), Ok(()));
        assert_eq!(admission.admit(None, None), Ok(()));
        admission.handled(busy);
        assert_eq!(admission.admit(Some(busy), None), Ok(()));
        assert_eq!(shed(&metrics), [1, 0]);
    }

    #[test]
    fn a_journal_at_its_bound_refuses_every_change() {
        let metrics = Metrics::unregistered(&PoolCatalog::builtin());
        let admission = Admission::new(limits(0, 3), 2, &metrics);
        let journal = Behind::default();
        journal.appended.store(10, Ordering::Relaxed);
        journal.durable.store(8, Ordering::Relaxed);
        assert_eq!(admission.admit(Some(queue(0)), Some(&journal)), Ok(()));
        journal.appended.store(11, Ordering::Relaxed);
        for queue in [Some(queue(0)), None] {
            assert_eq!(
                admission.admit(queue, Some(&journal)),
                Err(Overload::Journal {
                    backlog: 3,
                    limit: 3
                })
            );
        }
        assert_eq!(shed(&metrics), [0, 2]);
        journal.durable.store(11, Ordering::Relaxed);
        assert_eq!(admission.admit(None, Some(&journal)), Ok(()));
    }

    #[test]
    fn without_bounds_nothing_is_counted_or_refused() {
        let metrics = Metrics::unregistered(&PoolCatalog::builtin());
        let admission = Admission::new(OverloadLimits::default(), 2, &metrics);
        let journal = Behind::default();
        journal.appended.store(1_000_000, Ordering::Relaxed);
        for _ in 0..1_000 {
            admission.sent(queue(0));
        }
        assert!(admission.backlogs.is_empty());
        assert_eq!(admission.admit(Some(queue(0)), Some(&journal)), Ok(()));
        assert_eq!(shed(&metrics), [0, 0]);
    }
}
