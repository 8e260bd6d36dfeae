//! Reading a partition's journal back, from a stream sequence to the end (a new owner) or for
//! ever (a standby).
//!
//! Both read through an ordered consumer (ephemeral, filtered to the partition's subject,
//! recreated by the client after a lost connection without skipping or repeating anything),
//! and both check the chain: each message names the subject sequence it follows (see
//! `batch`), which must be the previous message read. A mismatch means the journal was trimmed
//! behind the reader, after a snapshot newer than the reader's starting point: it must start
//! again from that snapshot, and is told so rather than skipping changes.

use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use matchwell_actors::persist::Change;

use crate::batch::{self, BatchError};
use crate::store::{ClusterStore, ephemeral_consumer, ephemeral_consumer_timed_out};

/// A partition's journal from a point to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Every record, in order.
    pub changes: Vec<Change>,
    /// The stream sequence of the partition's last message: what a new owner's log starts
    /// after.
    pub last_seq: u64,
}

/// Why a partition's journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// JetStream could not be asked.
    #[error("cannot read the journal of partition {partition}: {reason}")]
    Read {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
    /// A message does not decode.
    #[error("journal message {seq} of partition {partition} is damaged: {source}")]
    Damaged {
        /// The partition.
        partition: u32,
        /// The message's stream sequence.
        seq: u64,
        /// What is wrong with it.
        source: BatchError,
    },
    /// Messages between the reader's position and the next message are gone.
    #[error(
        "the journal of partition {partition} was trimmed past stream sequence {expected}: \
         message {seq} follows {found}; start again from the partition's latest snapshot"
    )]
    Gap {
        /// The partition.
        partition: u32,
        /// The message read.
        seq: u64,
        /// The sequence it should follow: the reader's position.
        expected: u64,
        /// The sequence it follows.
        found: u64,
    },
}

/// One journal message, checked and decoded.
pub(crate) struct Message {
    /// Its stream sequence.
    pub(crate) seq: u64,
    /// How many messages of the subject followed it when it was delivered.
    pub(crate) pending: u64,
    pub(crate) changes: Vec<Change>,
}

/// Reads a partition's journal in order from a stream sequence on.
pub(crate) struct JournalReader {
    partition: u32,
    messages: push::Ordered,
    /// The stream sequence of the last message read, or the starting point.
    position: u64,
    /// Messages of the subject after the starting point when the reader was opened.
    pending_at_open: u64,
}

impl JournalReader {
    /// A reader of `partition`'s messages after stream sequence `after_seq`, which must be 0
    /// or the sequence of one of its messages (a replay's `last_seq`, a snapshot's covered
    /// sequence, a log's `last_stream_seq`).
    pub(crate) async fn open(
        store: &ClusterStore,
        partition: u32,
        after_seq: u64,
    ) -> Result<Self, ReplayError> {
        let read = |reason: String| ReplayError::Read { partition, reason };
        let deliver_policy = match after_seq {
            0 => DeliverPolicy::All,
            _ => DeliverPolicy::ByStartSequence {
                start_sequence: after_seq + 1,
            },
        };
        // A fresh inbox per attempt: a creation given up on may still be carried out later
        // (once a missing server is back), and must not deliver into this reader.
        let consumer = ephemeral_consumer(|| {
            store.journal.create_consumer(push::OrderedConfig {
                deliver_subject: store.jetstream.client().new_inbox(),
                filter_subject: ClusterStore::journal_subject(partition),
                deliver_policy,
                ..Default::default()
            })
        })
        .await
        .ok_or_else(|| read(ephemeral_consumer_timed_out()))?
        .map_err(|error| read(error.to_string()))?;
        let pending_at_open = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|error| read(error.to_string()))?;
        Ok(Self {
            partition,
            messages,
            position: after_seq,
            pending_at_open,
        })
    }

    /// The stream sequence of the last message read, or the starting point.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Whether the subject had no message after the starting point when the reader opened.
    pub(crate) fn empty_at_open(&self) -> bool {
        self.pending_at_open == 0
    }

    /// The next message; waits for one to be written if the reader is at the end.
    pub(crate) async fn next(&mut self) -> Result<Message, ReplayError> {
        let partition = self.partition;
        let message = match self.messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                return Err(ReplayError::Read {
                    partition,
                    reason: error.to_string(),
                });
            }
            None => {
                return Err(ReplayError::Read {
                    partition,
                    reason: "the consumer ended".to_owned(),
                });
            }
        };
        let info = message.info().map_err(|error| ReplayError::Read {
            partition,
            reason: error.to_string(),
        })?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let damaged = |source| ReplayError::Damaged {
            partition,
            seq,
            source,
        };
        let found = batch::previous(message.headers.as_ref()).map_err(damaged)?;
        if found != self.position {
            return Err(ReplayError::Gap {
                partition,
                seq,
                expected: self.position,
                found,
            });
        }
        let changes = batch::decode(message.headers.as_ref(), &message.payload).map_err(damaged)?;
        self.position = seq;
        Ok(Message {
            seq,
            pending,
            changes,
        })
    }
}

impl ClusterStore {
    /// Every record of `partition`'s journal after stream sequence `after_seq` (0: from the
    /// start; otherwise a snapshot's covered sequence or an earlier replay's `last_seq`), up
    /// to the last message when the replay started.
    pub async fn replay(&self, partition: u32, after_seq: u64) -> Result<Replayed, ReplayError> {
        let mut reader = JournalReader::open(self, partition, after_seq).await?;
        let mut changes = Vec::new();
        if !reader.empty_at_open() {
            loop {
                let message = reader.next().await?;
                changes.extend(message.changes);
                if message.pending == 0 {
                    break;
                }
            }
        }
        Ok(Replayed {
            changes,
            last_seq: reader.position(),
        })
    }

    /// The stream sequence of `partition`'s last journal message (0 if it has none): where a
    /// reader that started earlier has caught up.
    pub async fn journal_end(&self, partition: u32) -> Result<u64, ReplayError> {
        let subject = ClusterStore::journal_subject(partition);
        match self.journal.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(message.sequence),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(error) => Err(ReplayError::Read {
                partition,
                reason: error.to_string(),
            }),
        }
    }
}
