//! Where the core journals its changes: an interface, so that the core does not know whether
//! its journal is a file on a local disk ([`matchwell_snapshots::Journal`]) or a replicated
//! stream of a cluster.
//!
//! The contract the core relies on: records reach the log in the order of their `append`
//! calls; sequence numbers grow by one per record; once `durable_seq` reaches a record's number
//! the record survives every failure the log is built for; and a log that failed stays failed
//! (it reports why), so nothing appended after a failure is ever acknowledged.

use futures::future::BoxFuture;
use matchwell_snapshots::Journal;

use crate::persist::Change;

/// Why the log refused or lost a record; the text is shown to operators and clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChangeLogError(pub String);

/// An append-only log of [`Change`]s.
pub trait ChangeLog: Send + Sync + 'static {
    /// Appends `change` and returns its sequence number; does not wait for durability.
    fn append(&self, change: &Change) -> Result<u64, ChangeLogError>;

    /// The last sequence number handed out (0 if none was).
    fn appended_seq(&self) -> u64;

    /// The highest sequence number that is durable (0 if none is).
    fn durable_seq(&self) -> u64;

    /// Resolves once record `seq` is durable, or fails if the log failed first.
    fn wait_durable(&self, seq: u64) -> BoxFuture<'static, Result<(), ChangeLogError>>;

    /// Why the log takes no more records, if it does not: it failed, or it was closed.
    fn failure(&self) -> Option<String>;
}

impl ChangeLog for Journal<Change> {
    fn append(&self, change: &Change) -> Result<u64, ChangeLogError> {
        Journal::append(self, change)
            .map(|ticket| ticket.seq())
            .map_err(|error| ChangeLogError(error.to_string()))
    }

    fn appended_seq(&self) -> u64 {
        Journal::appended_seq(self)
    }

    fn durable_seq(&self) -> u64 {
        Journal::durable_seq(self)
    }

    fn wait_durable(&self, seq: u64) -> BoxFuture<'static, Result<(), ChangeLogError>> {
        let durable = Journal::wait_durable(self, seq);
        Box::pin(async move {
            durable
                .await
                .map_err(|error| ChangeLogError(error.to_string()))
        })
    }

    fn failure(&self) -> Option<String> {
        if self.is_healthy() {
            return None;
        }
        Some(Journal::failure(self).map_or_else(
            || "the journal is closed".to_owned(),
            |cause| cause.to_string(),
        ))
    }
}
