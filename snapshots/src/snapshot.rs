//! Snapshot files: the whole state at one point, written atomically.

mod error;
pub(crate) mod format;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::SnapshotError;
pub use format::{SNAPSHOT_VERSION, SnapshotHeader, decode_snapshot, decode_snapshot_header};

use crate::format::{numbered_name, parse_numbered_name};
use crate::storage::{Storage, StorageError, StorageOp};
use format::{EncodedSnapshot, encode_snapshot};

const NAME_PREFIX: &str = "snapshot-";
const NAME_SUFFIX: &str = ".mws";
const TEMP_SUFFIX: &str = ".mws.tmp";

/// How a [`SnapshotStore`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// How many of the newest snapshots to keep; older ones are removed after
    /// a new one is durable.
    pub keep: NonZeroUsize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            keep: NonZeroUsize::new(3).expect("3 is not zero"),
        }
    }
}

/// A snapshot that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSnapshot {
    /// Its sequence number, the number in its file name.
    pub seq: u64,
    /// Its file.
    pub file: PathBuf,
    /// Its header.
    pub header: SnapshotHeader,
}

/// A snapshot that was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSnapshot<T> {
    /// Its sequence number, the number in its file name.
    pub seq: u64,
    /// Its file.
    pub file: PathBuf,
    /// Its header.
    pub header: SnapshotHeader,
    /// The decoded body.
    pub body: T,
    /// How many newer snapshots were skipped because they are damaged.
    pub skipped: usize,
}

/// The snapshot files `snapshot-{seq:020}.mws` in a [`Storage`].
#[derive(Debug)]
pub struct SnapshotStore {
    storage: Arc<dyn Storage>,
    keep: NonZeroUsize,
    /// The sequence number the next snapshot gets. Held for the whole of a
    /// write, which serializes writers: two snapshots never race for a number
    /// or prune each other's files.
    next_seq: Mutex<u64>,
}

impl SnapshotStore {
    /// Opens the snapshots in `storage`, removing temporary files that an
    /// interrupted write left behind.
    pub fn open(
        storage: Arc<dyn Storage>,
        options: SnapshotOptions,
    ) -> Result<Self, SnapshotError> {
        let stray: Vec<String> = storage
            .list()?
            .into_iter()
            .filter(|name| parse_numbered_name(name, NAME_PREFIX, TEMP_SUFFIX).is_some())
            .collect();
        for name in &stray {
            tracing::info!(file = %storage.path_of(name).display(), "removing unfinished snapshot");
            storage.remove(name)?;
        }
        if !stray.is_empty() {
            storage.sync_dir()?;
        }
        let next_seq = list_snapshots(&*storage)?.last().map_or(1, |last| last + 1);
        Ok(Self {
            storage,
            keep: options.keep,
            next_seq: Mutex::new(next_seq),
        })
    }

    /// Sequence numbers of the snapshots present, oldest first.
    pub fn list(&self) -> Result<Vec<u64>, SnapshotError> {
        Ok(list_snapshots(&*self.storage)?)
    }

    /// Where snapshot `seq` is (or would be) stored.
    pub fn path_of(&self, seq: u64) -> PathBuf {
        self.storage.path_of(&snapshot_file_name(seq))
    }

    /// Writes `body` as the newest snapshot and returns where it went.
    ///
    /// `replay_from` is the journal segment to replay on top of it (see
    /// [`Journal::rotate`](crate::Journal::rotate)); `summary` holds counts for
    /// display. The snapshot appears under its final name only once it is
    /// completely durable. Afterwards all but the newest
    /// [`keep`](SnapshotOptions::keep) snapshots are removed; failing to remove
    /// them is logged, not returned, as the new snapshot is safe either way.
    pub fn write<T: Serialize + ?Sized>(
        &self,
        body: &T,
        replay_from: u64,
        summary: BTreeMap<String, u64>,
    ) -> Result<WrittenSnapshot, SnapshotError> {
        let encoded = encode_snapshot(body, now_ms(), replay_from, summary)?;
        let mut next_seq = self.next_seq.lock();
        let seq = *next_seq;
        // Never reuse a number, even after a failure that may have left the file behind.
        *next_seq += 1;
        let temp = numbered_name(NAME_PREFIX, seq, TEMP_SUFFIX);
        let name = snapshot_file_name(seq);
        if let Err(error) = self.write_durably(&temp, &name, &encoded) {
            // Best effort: `open` removes whatever temporary file is left.
            let _ = self.storage.remove(&temp);
            return Err(error.into());
        }
        if let Err(error) = self.remove_old_snapshots() {
            tracing::warn!(%error, "could not remove old snapshots");
        }
        Ok(WrittenSnapshot {
            seq,
            file: self.storage.path_of(&name),
            header: encoded.header,
        })
    }

    fn write_durably(
        &self,
        temp: &str,
        name: &str,
        encoded: &EncodedSnapshot,
    ) -> Result<(), StorageError> {
        let mut file = self.storage.create(temp)?;
        file.write_all(&encoded.head)?;
        file.write_all(&encoded.body)?;
        file.sync()?;
        drop(file);
        self.storage.rename(temp, name)?;
        self.storage.sync_dir()
    }

    fn remove_old_snapshots(&self) -> Result<(), StorageError> {
        let snapshots = list_snapshots(&*self.storage)?;
        let excess = snapshots.len().saturating_sub(self.keep.get());
        for &seq in &snapshots[..excess] {
            self.storage.remove(&snapshot_file_name(seq))?;
        }
        if excess > 0 {
            self.storage.sync_dir()?;
        }
        Ok(())
    }

    /// Reads snapshot `seq` and validates it, including the body checksum,
    /// without decoding the body.
    pub fn read_header(&self, seq: u64) -> Result<SnapshotHeader, SnapshotError> {
        let name = snapshot_file_name(seq);
        let bytes = self.storage.read(&name)?;
        decode_snapshot_header(&bytes, &self.storage.path_of(&name))
    }

    /// Loads the newest valid snapshot, or `None` if there is no snapshot.
    ///
    /// A snapshot that fails validation or decoding is logged and skipped in
    /// favour of the next older one; [`LoadedSnapshot::skipped`] counts them.
    /// Fails with [`SnapshotError::NoValidSnapshot`] if snapshots exist but
    /// none is valid, and at once on a storage error.
    pub fn load_latest<T: DeserializeOwned>(
        &self,
    ) -> Result<Option<LoadedSnapshot<T>>, SnapshotError> {
        let mut newest_error = None;
        let mut skipped = 0;
        for seq in list_snapshots(&*self.storage)?.into_iter().rev() {
            let name = snapshot_file_name(seq);
            let file = self.storage.path_of(&name);
            let bytes = self.storage.read(&name)?;
            match decode_snapshot(&bytes, &file) {
                Ok((header, body)) => {
                    if skipped > 0 {
                        tracing::warn!(file = %file.display(), skipped, "loaded an older snapshot; newer ones are damaged");
                    }
                    return Ok(Some(LoadedSnapshot {
                        seq,
                        file,
                        header,
                        body,
                        skipped,
                    }));
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping damaged snapshot");
                    skipped += 1;
                    newest_error.get_or_insert(error);
                }
            }
        }
        match newest_error {
            None => Ok(None),
            Some(newest) => Err(SnapshotError::NoValidSnapshot {
                count: skipped,
                newest: Box::new(newest),
            }),
        }
    }
}

/// Reads the snapshot file at `path` and validates it, including the body
/// checksum, without decoding the body. For operator tools.
pub fn inspect_snapshot(path: &Path) -> Result<SnapshotHeader, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|e| StorageError::io(StorageOp::Read, path, e))?;
    decode_snapshot_header(&bytes, path)
}

fn snapshot_file_name(seq: u64) -> String {
    numbered_name(NAME_PREFIX, seq, NAME_SUFFIX)
}

fn list_snapshots(storage: &dyn Storage) -> Result<Vec<u64>, StorageError> {
    let mut snapshots: Vec<u64> = storage
        .list()?
        .iter()
        .filter_map(|name| parse_numbered_name(name, NAME_PREFIX, NAME_SUFFIX))
        .collect();
    snapshots.sort_unstable();
    Ok(snapshots)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FaultyStorage;

    #[test]
    fn only_final_snapshot_names_are_listed() {
        let storage = FaultyStorage::new(0);
        for name in [
            "snapshot-00000000000000000002.mws",
            "snapshot-00000000000000000010.mws",
            "snapshot-00000000000000000011.mws.tmp",
            "journal-00000000000000000003.mwj",
            "snapshot-3.mws",
        ] {
            storage.create(name).unwrap();
        }
        assert_eq!(list_snapshots(&storage).unwrap(), [2, 10]);
        assert_eq!(snapshot_file_name(10), "snapshot-00000000000000000010.mws");
    }

    #[test]
    fn sequence_numbers_continue_after_the_newest_snapshot() {
        let storage = FaultyStorage::new(0);
        storage.create("snapshot-00000000000000000041.mws").unwrap();
        let store = SnapshotStore::open(Arc::new(storage), SnapshotOptions::default()).unwrap();
        assert_eq!(*store.next_seq.lock(), 42);
    }
}
