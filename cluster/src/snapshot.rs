//! Partition snapshots in the object store, and trimming the journal behind them.
//!
//! Partition `p`'s snapshot is the object `partition-<p>`: the same body as a single node's
//! snapshot file (rmp-serde), with the stream sequence it covers in the object's metadata. A
//! new one replaces the old only once it is stored whole (the object store writes the chunks,
//! then the description that names them), and the object store checks the body's digest when
//! it is read back.
//!
//! The capture follows the single node's rotate-then-capture rule, "rotate" meaning "note the
//! log's [`last_stream_seq`](crate::JetStreamLog::last_stream_seq)": every record the capture
//! may have missed or half seen comes after that sequence, and a replay from it applies it
//! again (last image wins).

use std::collections::HashMap;

use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata};
use matchwell_actors::persist::SnapshotBody;
use tokio::io::AsyncReadExt;

use crate::store::ClusterStore;

/// The metadata key holding the stream sequence a snapshot covers.
const COVERED_SEQ: &str = "matchwell-covered-seq";
/// The metadata key holding the encoding's version.
const FORMAT: &str = "matchwell-format";
/// The version this build writes and reads.
const FORMAT_VERSION: &str = "1";

/// A partition's snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The state.
    pub body: SnapshotBody,
    /// The partition's journal up to this stream sequence is in the body; replay after it.
    pub covered_seq: u64,
}

/// Why a snapshot could not be stored, read or trimmed behind.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The body does not encode.
    #[error("the snapshot of partition {partition} does not encode: {source}")]
    Encode {
        /// The partition.
        partition: u32,
        /// Why.
        source: rmp_serde::encode::Error,
    },
    /// The stored object is unreadable: bad metadata, a body that does not decode, or a digest
    /// that does not match.
    #[error("the snapshot of partition {partition} is damaged: {reason}")]
    Damaged {
        /// The partition.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
    /// JetStream could not be asked.
    #[error("cannot {action} for partition {partition}: {reason}")]
    Request {
        /// What was attempted.
        action: &'static str,
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
}

fn object_name(partition: u32) -> String {
    format!("partition-{partition}")
}

impl ClusterStore {
    /// Stores `body` as `partition`'s snapshot, covering the journal up to `covered_seq`,
    /// in place of the previous one.
    pub async fn save_snapshot(
        &self,
        partition: u32,
        body: &SnapshotBody,
        covered_seq: u64,
    ) -> Result<(), SnapshotError> {
        let encoded = rmp_serde::to_vec(body)
            .map_err(|source| SnapshotError::Encode { partition, source })?;
        let metadata = HashMap::from([
            (COVERED_SEQ.to_owned(), covered_seq.to_string()),
            (FORMAT.to_owned(), FORMAT_VERSION.to_owned()),
        ]);
        let object = ObjectMetadata {
            name: object_name(partition),
            description: Some(format!(
                "matchwell partition {partition}, journal covered to stream sequence {covered_seq}"
            )),
            metadata,
            ..Default::default()
        };
        self.snapshots
            .put(object, &mut encoded.as_slice())
            .await
            .map_err(|error| SnapshotError::Request {
                action: "store the snapshot",
                partition,
                reason: error.to_string(),
            })?;
        Ok(())
    }

    /// `partition`'s snapshot, if one was stored.
    pub async fn load_latest_snapshot(
        &self,
        partition: u32,
    ) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let request = |error: &dyn std::fmt::Display| SnapshotError::Request {
            action: "read the snapshot",
            partition,
            reason: error.to_string(),
        };
        let damaged = |reason: String| SnapshotError::Damaged { partition, reason };
        let mut object = match self.snapshots.get(object_name(partition)).await {
            Ok(object) => object,
            Err(error) if error.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(request(&error)),
        };
        let metadata = &object.info().metadata;
        if metadata.get(FORMAT).map(String::as_str) != Some(FORMAT_VERSION) {
            return Err(damaged(format!(
                "format {:?}, this build reads {FORMAT_VERSION}",
                metadata.get(FORMAT)
            )));
        }
        let covered_seq = metadata
            .get(COVERED_SEQ)
            .and_then(|seq| seq.parse().ok())
            .ok_or_else(|| damaged(format!("no covered sequence in {metadata:?}")))?;
        let mut encoded = Vec::new();
        // The object checks its digest as the end of the body is read.
        object
            .read_to_end(&mut encoded)
            .await
            .map_err(|error| damaged(error.to_string()))?;
        let body = rmp_serde::from_slice(&encoded).map_err(|error| damaged(error.to_string()))?;
        Ok(Some(StoredSnapshot { body, covered_seq }))
    }

    /// Deletes `partition`'s journal messages that a snapshot covering `covered_seq` makes
    /// unnecessary, and returns how many it deleted. The partition's last message always
    /// stays: the next message's expected last subject sequence names it.
    pub async fn trim_journal(
        &self,
        partition: u32,
        covered_seq: u64,
    ) -> Result<u64, SnapshotError> {
        let subject = ClusterStore::journal_subject(partition);
        let request =
            |action: &'static str, error: &dyn std::fmt::Display| SnapshotError::Request {
                action,
                partition,
                reason: error.to_string(),
            };
        let last = self
            .journal_end(partition)
            .await
            .map_err(|error| request("find the last journal message", &error))?;
        if last == 0 {
            return Ok(0);
        }
        // Purging deletes the subject's messages below the sequence given; JetStream reads 0
        // and 1 as "no bound" and would delete them all, but below 2 there is nothing to
        // delete anyway.
        let keep_from = covered_seq.saturating_add(1).min(last);
        if keep_from < 2 {
            return Ok(0);
        }
        let purged = self
            .journal
            .purge()
            .filter(subject)
            .sequence(keep_from)
            .await
            .map_err(|error| request("trim the journal", &error))?;
        Ok(purged.purged)
    }
}
