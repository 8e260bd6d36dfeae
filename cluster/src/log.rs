//! One partition's journal in the JetStream stream: the core's
//! [`ChangeLog`] on subject `matchwell.journal.<partition>`.
//!
//! The core appends from its actor threads, outside any async runtime, so
//! [`append`](ChangeLog::append) only encodes the record, queues it and wakes the publisher, a
//! task on the runtime the log was opened with. The publisher sends everything queued while the
//! previous message was in flight as one message (group commit: one round trip per batch, not
//! per record), bounded below the server's maximum payload, and waits for JetStream's
//! acknowledgment; then the batch's records are durable. There is one message in flight at a
//! time, because each names the sequence of the one before (below).
//!
//! Fencing: every message carries `Nats-Expected-Last-Subject-Sequence`, the stream sequence
//! of the partition's last message as this log knows it, and JetStream stores it only if that
//! is still the last one. A new owner replays the subject and publishes a fence (an empty
//! batch, [`JetStreamLog::fence`]); from then on an old owner's message is refused. Any
//! failure to publish (refused, unacknowledged in time, connection lost) poisons the log for
//! good: every record not durable by then fails, and so does every later append. The log never
//! retries: a batch whose acknowledgment was lost may or may not be stored, and only a new
//! owner's replay can tell; the node drops the partition.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use futures::future::BoxFuture;
use matchwell_actors::change_log::{ChangeLog, ChangeLogError};
use matchwell_actors::persist::Change;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot, watch};

use crate::batch::{self, HEADER_ROOM};
use crate::store::ClusterStore;

/// The largest message a NATS server takes unless configured otherwise.
const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Told of every batch JetStream stored, by the publisher task, for metrics: it must return at
/// once.
pub trait BatchObserver: Send + Sync + 'static {
    /// A batch of `records` records and `bytes` bytes was acknowledged `elapsed` after it was
    /// sent.
    fn stored(&self, records: usize, bytes: usize, elapsed: Duration);
}

/// A partition's journal in JetStream. Dropping it lets the publisher send what is queued and
/// stop.
pub struct JetStreamLog {
    shared: Arc<Shared>,
}

/// What the appending threads, the waiters and the publisher task share.
struct Shared {
    partition: u32,
    /// Records waiting for the publisher. One mutex, because an append must take its number
    /// and its place in the queue at once (records reach the stream in number order), and
    /// because the failure and the closing flag live under it too: an append or a fence either
    /// sees them or is queued before the publisher looks for the last time.
    queue: Mutex<Queue>,
    /// Wakes the publisher; a wake-up given while it is busy is kept for its next wait.
    wake: Notify,
    /// How far the publisher got, for [`ChangeLog::wait_durable`]'s futures, which may run on
    /// any runtime (a watch channel needs none) and must all wake when it moves.
    progress: watch::Sender<Progress>,
}

/// The appended records not yet taken by the publisher.
#[derive(Default)]
struct Queue {
    /// The last sequence number handed out.
    appended: u64,
    /// Encoded records, oldest first; the last has number `appended`.
    records: VecDeque<Vec<u8>>,
    /// Callers of [`JetStreamLog::fence`] waiting for the next message's stream sequence.
    fences: Vec<oneshot::Sender<Result<u64, ChangeLogError>>>,
    /// Why the log failed, once it did; never cleared.
    failure: Option<String>,
    /// No more appends: the log was closed or dropped.
    closing: bool,
}

/// What the publisher has done so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The highest record number JetStream acknowledged.
    durable: u64,
    /// The stream sequence of the partition's last message as this log knows it.
    last_stream_seq: u64,
    /// A copy of [`Queue::failure`], for waiters.
    failure: Option<String>,
}

/// One message's worth of queued work.
struct Batch {
    payload: Vec<u8>,
    records: usize,
    /// The number of the batch's last record.
    last: u64,
    fences: Vec<oneshot::Sender<Result<u64, ChangeLogError>>>,
}

impl JetStreamLog {
    /// A log for `partition` whose last message, as the caller knows it from a replay, has
    /// stream sequence `last_stream_seq` (0: the subject is empty). Its publisher runs on
    /// `runtime`. Call [`fence`](Self::fence) before appending when taking a partition over.
    pub fn open(
        store: &ClusterStore,
        partition: u32,
        last_stream_seq: u64,
        runtime: &Handle,
    ) -> Self {
        Self::open_observed(store, partition, last_stream_seq, runtime, None)
    }

    /// [`open`](Self::open), with `observer` told of every batch stored.
    pub fn open_observed(
        store: &ClusterStore,
        partition: u32,
        last_stream_seq: u64,
        runtime: &Handle,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> Self {
        let (progress, _) = watch::channel(Progress {
            last_stream_seq,
            ..Progress::default()
        });
        let shared = Arc::new(Shared {
            partition,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            progress,
        });
        // The server tells its limit when the client connects; NATS's default until then.
        let max_payload = match store.jetstream.client().server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            told => told,
        };
        let publisher = Publisher {
            shared: Arc::clone(&shared),
            jetstream: store.jetstream.clone(),
            subject: ClusterStore::journal_subject(partition),
            last_stream_seq,
            max_batch_bytes: max_payload.saturating_sub(HEADER_ROOM),
            observer,
        };
        runtime.spawn(publisher.run());
        Self { shared }
    }

    /// The partition this log journals.
    pub fn partition(&self) -> u32 {
        self.shared.partition
    }

    /// The stream sequence of the partition's last message as this log knows it: what a
    /// snapshot captured after this call covers (every record appended later, or not yet
    /// acknowledged, will have a higher one).
    pub fn last_stream_seq(&self) -> u64 {
        self.shared.progress.borrow().last_stream_seq
    }

    /// Publishes a message, empty unless records are queued, right after the last message this
    /// log knows of, and returns its stream sequence once stored. A new owner calls it right
    /// after replaying: any message the old owner sends after it is refused. If it fails, for
    /// instance because the old owner wrote after the replay, the log is poisoned; replay the
    /// rest and open a new log.
    pub async fn fence(&self) -> Result<u64, ChangeLogError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut queue = self.shared.lock();
            if let Some(failure) = self.shared.refusal(&queue) {
                return Err(ChangeLogError(failure));
            }
            queue.fences.push(sender);
        }
        self.shared.wake.notify_one();
        receiver
            .await
            .unwrap_or_else(|_| Err(self.shared.stopped()))
    }

    /// Stops taking records and resolves once everything appended before is durable (or the
    /// log failed): a node handing a partition over closes its log before releasing the
    /// lease.
    pub async fn close(&self) -> Result<(), ChangeLogError> {
        let appended = {
            let mut queue = self.shared.lock();
            queue.closing = true;
            queue.appended
        };
        self.shared.wake.notify_one();
        if appended == 0 {
            return Ok(());
        }
        self.wait_durable(appended).await
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

impl ChangeLog for JetStreamLog {
    fn append(&self, change: &Change) -> Result<u64, ChangeLogError> {
        let record = batch::encode_record(change).map_err(|error| {
            ChangeLogError(format!("a journal record does not encode: {error}"))
        })?;
        let seq = {
            let mut queue = self.shared.lock();
            if let Some(failure) = self.shared.refusal(&queue) {
                return Err(ChangeLogError(failure));
            }
            queue.appended += 1;
            queue.records.push_back(record);
            queue.appended
        };
        self.shared.wake.notify_one();
        Ok(seq)
    }

    fn appended_seq(&self) -> u64 {
        self.shared.lock().appended
    }

    fn durable_seq(&self) -> u64 {
        self.shared.progress.borrow().durable
    }

    fn wait_durable(&self, seq: u64) -> BoxFuture<'static, Result<(), ChangeLogError>> {
        let appended = self.appended_seq();
        let mut progress = self.shared.progress.subscribe();
        let stopped = self.shared.stopped();
        Box::pin(async move {
            if seq > appended {
                return Err(ChangeLogError(format!(
                    "record {seq} was never appended (the last is {appended})"
                )));
            }
            let reached = progress
                .wait_for(|progress| progress.durable >= seq || progress.failure.is_some())
                .await
                .map_err(|_| stopped)?;
            match &reached.failure {
                Some(failure) if reached.durable < seq => Err(ChangeLogError(failure.clone())),
                _ => Ok(()),
            }
        })
    }

    fn failure(&self) -> Option<String> {
        self.shared.refusal(&self.shared.lock())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every change is one
        // push or one field), so a poisoned lock is used as it is.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the log takes no more records, if it does not.
    fn refusal(&self, queue: &Queue) -> Option<String> {
        queue.failure.clone().or_else(|| {
            queue
                .closing
                .then(|| format!("the journal of partition {} is closed", self.partition))
        })
    }

    /// The error of a waiter whose publisher is gone.
    fn stopped(&self) -> ChangeLogError {
        ChangeLogError(format!(
            "the journal of partition {} stopped",
            self.partition
        ))
    }

    /// Takes the next batch: as many queued records as fit in `max_bytes` (at least one), and
    /// every waiting fence. `Err` when nothing is queued, with whether the log is closing.
    fn take_batch(&self, max_bytes: usize) -> Result<Batch, bool> {
        let mut queue = self.lock();
        if queue.records.is_empty() && queue.fences.is_empty() {
            return Err(queue.closing);
        }
        let mut payload = Vec::new();
        let mut records = 0;
        while let Some(record) = queue.records.front() {
            if records > 0 && payload.len() + record.len() > max_bytes {
                break;
            }
            payload.extend_from_slice(record);
            queue.records.pop_front();
            records += 1;
        }
        Ok(Batch {
            payload,
            records,
            last: queue.appended - queue.records.len() as u64,
            fences: std::mem::take(&mut queue.fences),
        })
    }

    /// Fails the log for good: every fence waiting fails now, every record not durable fails
    /// through its waiters, and later appends are refused.
    fn poison(
        &self,
        failure: String,
        mut fences: Vec<oneshot::Sender<Result<u64, ChangeLogError>>>,
    ) {
        tracing::error!(partition = self.partition, %failure, "partition journal failed");
        {
            let mut queue = self.lock();
            queue.failure = Some(failure.clone());
            fences.append(&mut queue.fences);
        }
        for fence in fences {
            let _ = fence.send(Err(ChangeLogError(failure.clone())));
        }
        self.progress
            .send_modify(|progress| progress.failure = Some(failure));
    }
}

/// The task that publishes a log's batches, one at a time.
struct Publisher {
    shared: Arc<Shared>,
    jetstream: jetstream::Context,
    subject: String,
    last_stream_seq: u64,
    max_batch_bytes: usize,
    observer: Option<Arc<dyn BatchObserver>>,
}

impl Publisher {
    async fn run(mut self) {
        loop {
            let Batch {
                payload,
                records,
                last,
                fences,
            } = match self.shared.take_batch(self.max_batch_bytes) {
                Ok(batch) => batch,
                Err(true) => return,
                Err(false) => {
                    self.shared.wake.notified().await;
                    continue;
                }
            };
            let bytes = payload.len();
            if bytes > self.max_batch_bytes {
                let failure = format!(
                    "a journal record of {bytes} bytes does not fit in a message of at most {} \
                     bytes",
                    self.max_batch_bytes
                );
                return self.shared.poison(failure, fences);
            }
            let started = Instant::now();
            match self.publish(records, payload).await {
                Ok(stream_seq) => {
                    let elapsed = started.elapsed();
                    tracing::debug!(
                        partition = self.shared.partition,
                        records,
                        bytes,
                        stream_seq,
                        ?elapsed,
                        "journal batch stored"
                    );
                    if let Some(observer) = &self.observer {
                        observer.stored(records, bytes, elapsed);
                    }
                    self.last_stream_seq = stream_seq;
                    self.shared.progress.send_modify(|progress| {
                        progress.durable = progress.durable.max(last);
                        progress.last_stream_seq = stream_seq;
                    });
                    for fence in fences {
                        let _ = fence.send(Ok(stream_seq));
                    }
                }
                Err(failure) => return self.shared.poison(failure, fences),
            }
        }
    }

    /// Publishes one batch of `records` records after `last_stream_seq` and returns its stream
    /// sequence.
    async fn publish(&self, records: usize, payload: Vec<u8>) -> Result<u64, String> {
        let headers = batch::headers(records, self.last_stream_seq);
        let describe = |error: jetstream::context::PublishError| match error.kind() {
            PublishErrorKind::WrongLastSequence => format!(
                "another owner wrote to the journal of partition {} after stream sequence {} \
                 (this node no longer owns it): {error}",
                self.shared.partition, self.last_stream_seq
            ),
            PublishErrorKind::TimedOut => format!(
                "JetStream did not acknowledge a journal batch of partition {} in time; it may \
                 or may not be stored",
                self.shared.partition
            ),
            _ => format!(
                "a journal batch of partition {} could not be stored: {error}",
                self.shared.partition
            ),
        };
        let ack = self
            .jetstream
            .publish_with_headers(self.subject.clone(), headers, payload.into())
            .await
            .map_err(describe)?
            .await
            .map_err(describe)?;
        Ok(ack.sequence)
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use matchwell_actors::persist::Image;

    use super::*;

    /// A log with no publisher: what it queues stays queued until a test takes it.
    fn unpublished() -> JetStreamLog {
        let (progress, _) = watch::channel(Progress::default());
        JetStreamLog {
            shared: Arc::new(Shared {
                partition: 9,
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                progress,
            }),
        }
    }

    fn change(images: usize) -> Change {
        Change {
            at_ms: 1,
            images: vec![Image::Resumed { downtime_ms: 1 }; images],
        }
    }

    #[test]
    fn a_batch_takes_what_fits_and_at_least_one_record() {
        let log = unpublished();
        let size = batch::encode_record(&change(10)).unwrap().len();
        for _ in 0..5 {
            log.append(&change(10)).unwrap();
        }
        let first = log.shared.take_batch(size * 2 + 1).ok().unwrap();
        assert_eq!(
            (first.records, first.last, first.payload.len()),
            (2, 2, size * 2)
        );
        let second = log.shared.take_batch(1).ok().unwrap();
        assert_eq!(
            (second.records, second.last),
            (1, 3),
            "one record even if too big"
        );
        let rest = log.shared.take_batch(usize::MAX).ok().unwrap();
        assert_eq!((rest.records, rest.last), (2, 5));
        assert!(matches!(log.shared.take_batch(usize::MAX), Err(false)));
    }

    #[test]
    fn a_fence_is_a_batch_even_without_records() {
        let log = unpublished();
        let (sender, _receiver) = oneshot::channel();
        log.shared.lock().fences.push(sender);
        let fence = log.shared.take_batch(usize::MAX).ok().unwrap();
        assert_eq!((fence.records, fence.fences.len()), (0, 1));
    }

    #[test]
    fn a_poisoned_log_fails_every_waiter_and_refuses_everything() {
        let log = unpublished();
        log.append(&change(1)).unwrap();
        log.append(&change(1)).unwrap();
        log.shared
            .progress
            .send_modify(|progress| progress.durable = 1);
        let (fence, fenced) = oneshot::channel();
        log.shared.poison("refused".to_owned(), vec![fence]);

        assert!(
            block_on(log.wait_durable(1)).is_ok(),
            "durable before the failure"
        );
        assert_eq!(block_on(log.wait_durable(2)).unwrap_err().0, "refused");
        assert!(block_on(log.wait_durable(3)).is_err(), "never appended");
        assert!(block_on(fenced).unwrap().is_err());
        assert!(block_on(log.fence()).is_err());
        assert!(log.append(&change(1)).is_err());
        assert_eq!(log.failure().as_deref(), Some("refused"));
    }

    #[test]
    fn a_dropped_log_lets_its_publisher_finish_and_stop() {
        let log = unpublished();
        let shared = Arc::clone(&log.shared);
        log.append(&change(1)).unwrap();
        drop(log);
        assert!(
            shared.take_batch(usize::MAX).is_ok(),
            "what was queued is still sent"
        );
        assert!(matches!(shared.take_batch(usize::MAX), Err(true)));
    }
}
