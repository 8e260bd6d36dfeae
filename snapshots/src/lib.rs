//! Snapshot files and an append-only journal on local disk, generic over serde types.
//!
//! The crate persists the state of an in-memory server: now and then the whole
//! state goes into a snapshot file, and every change in between goes into a
//! journal. After a restart, the newest valid snapshot is loaded and the
//! journal replayed on top of it. Everything stored is a serde type chosen by
//! the caller; the crate knows nothing about what it stores.
//!
//! # Layout
//!
//! * [`storage`] — the [`Storage`] trait, a flat directory of named files with
//!   explicit sync points, and its two implementations: [`FileStorage`] (real
//!   files) and [`FaultyStorage`] (an in-memory disk for tests that loses
//!   unsynced data on a simulated power cut and fails operations on request).
//! * [`snapshot`] — [`SnapshotStore`] writes snapshot files atomically, keeps
//!   the newest few and loads the newest valid one;
//!   [`inspect_snapshot`] validates a file for operator tools.
//! * [`journal`] — [`Journal`] appends records through a background writer
//!   thread with group commit ([`FsyncMode`]); each append returns a [`Ticket`]
//!   to wait (blocking or async) until the record is durable.
//!   [`read_segments`] reads the journal back after a restart.
//! * `format` (private) — file-name numbering and a bounds-checked byte reader
//!   shared by both file formats.
//! * `fixtures` (tests only) — the generator of the committed format fixtures
//!   in `tests/fixtures/`.
//!
//! # Usage
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use matchwell_snapshots::{
//!     FaultyStorage, FsyncMode, Journal, JournalOptions, SnapshotOptions, SnapshotStore,
//!     Storage, read_segments,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A real server would use `FileStorage::open("data")?`.
//! let storage: Arc<dyn Storage> = Arc::new(FaultyStorage::new(0));
//!
//! // Recovery: newest valid snapshot, then the journal from where it ends.
//! let snapshots = SnapshotStore::open(Arc::clone(&storage), SnapshotOptions::default())?;
//! let loaded = snapshots.load_latest::<Vec<String>>()?;
//! let replay_from = loaded.as_ref().map_or(0, |snapshot| snapshot.header.replay_from);
//! let mut state = loaded.map(|snapshot| snapshot.body).unwrap_or_default();
//! for change in read_segments::<String>(&*storage, replay_from)?.records {
//!     state.push(change.record);
//! }
//!
//! // Running: journal every change, acknowledge it once it is durable.
//! let journal = Journal::<String>::open(Arc::clone(&storage), JournalOptions::with_fsync(FsyncMode::Always))?;
//! let change = "alice joined".to_owned();
//! let ticket = journal.append(&change)?;
//! state.push(change);
//! ticket.wait()?; // or `ticket.await?` in async code
//!
//! // Snapshot: rotate at the point in the change stream where the state is captured.
//! let replay_from = journal.rotate()?;
//! let summary = BTreeMap::from([("members".to_owned(), state.len() as u64)]);
//! snapshots.write(&state, replay_from, summary)?;
//! // Keep the journal that the oldest kept snapshot needs, for falling back to it.
//! let oldest = snapshots.list()?[0];
//! journal.remove_segments_before(snapshots.read_header(oldest)?.replay_from)?;
//! journal.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! # File formats
//!
//! All integers are little-endian. CRC-32C is the Castagnoli CRC
//! (hardware-accelerated through the `crc32c` crate). Everything is MessagePack
//! as rmp-serde writes it. Journal records and snapshot headers are written with
//! `rmp_serde::encode::write_named` / `rmp_serde::to_vec_named`: structs are
//! maps keyed by field name, so later versions can add fields (with
//! `#[serde(default)]`) or drop them without breaking old files. Snapshot bodies
//! are written with `rmp_serde::to_vec`: structs are arrays of their fields in
//! order, which halves a body of a million small items and the time to write
//! it; later versions may append fields with `#[serde(default)]` but not drop or
//! reorder them. Readers accept either form anywhere (bodies written before
//! were maps), so the choice needs no format version of its own.
//!
//! ## Snapshot file `snapshot-{seq:020}.mws`
//!
//! | offset   | size       | content                                                        |
//! |----------|------------|----------------------------------------------------------------|
//! | 0        | 8          | magic `89 4D 57 53 4E 41 50 0A` (`\x89MWSNAP\n`)               |
//! | 8        | 2          | format version, `u16` (currently 1)                            |
//! | 10       | 4          | header length `H`, `u32`                                       |
//! | 14       | 4          | CRC-32C of bytes 8..14 followed by the header, `u32`           |
//! | 18       | `H`        | header: [`SnapshotHeader`] as a MessagePack map                |
//! | 18 + `H` | `body_len` | body: the caller's value as MessagePack                        |
//!
//! The header holds `created_at_ms`, `replay_from`, `summary`, `body_len` and
//! `body_crc32c` (CRC-32C of the body). The file must end exactly where the
//! body ends. It is written as `snapshot-{seq:020}.mws.tmp` and renamed.
//!
//! ## Journal segment `journal-{segment:020}.mwj`
//!
//! A 22-byte header, then record frames back to back:
//!
//! | offset | size | content                                               |
//! |--------|------|-------------------------------------------------------|
//! | 0      | 8    | magic `89 4D 57 4A 52 4E 4C 0A` (`\x89MWJRNL\n`)      |
//! | 8      | 2    | format version, `u16` (currently 1)                   |
//! | 10     | 8    | segment number, `u64` (must match the file name)      |
//! | 18     | 4    | CRC-32C of bytes 0..18, `u32`                         |
//!
//! Each frame:
//!
//! | offset | size | content                                                     |
//! |--------|------|-------------------------------------------------------------|
//! | 0      | 4    | payload length `L`, `u32`, at least 1                       |
//! | 4      | 4    | CRC-32C of the 4 length bytes followed by the payload, `u32` |
//! | 8      | `L`  | payload: one record as MessagePack                          |
//!
//! The checksum covers the length so that a damaged length is caught even
//! when it points at a plausible frame boundary.
//!
//! # Recovery rules
//!
//! Segments from the snapshot's `replay_from` on must be numbered without
//! gaps. Damage in the last segment is a *torn tail* — dropped, logged,
//! counted and cut off the file — when nothing valid can follow it: its header
//! is shorter than 22 bytes (a crash right after the file was created; the
//! file is removed), its final frame is incomplete, its final frame ends
//! exactly at the end of the file but fails its checksum, or the file holds
//! only zeros from the bad frame on (a crash after the file grew but before
//! its data reached the disk). Any other damage — in an older segment, a bad
//! frame followed by more data, a wrong header, an intact frame that does not
//! decode as the record type — is corruption: an error naming the file and
//! byte offset, with nothing modified. [`Journal::open`] applies the same
//! repair to the newest segment before continuing in a new one.
//!
//! # What each fsync mode can lose
//!
//! A record is *acknowledged* once its ticket reports it durable. Records
//! still queued in the process, not yet handed to the OS, are lost by any
//! crash in every mode; they were never acknowledged.
//!
//! | mode          | ticket durable after          | process crash (kill -9)           | power loss / OS crash                                   |
//! |---------------|-------------------------------|-----------------------------------|---------------------------------------------------------|
//! | `Always`      | the group's `fdatasync`       | nothing acknowledged              | nothing acknowledged                                     |
//! | `Batch`       | the next sync, ≤ `interval` later | nothing acknowledged          | nothing acknowledged; up to one interval unacknowledged |
//! | `None`        | the write to the OS           | nothing acknowledged (page cache survives) | anything the OS had not written back, acknowledged or not |
//!
//! All modes sync when a segment is sealed by [`Journal::rotate`] and when the
//! journal is closed, so only the newest segment is ever at risk. Recovery
//! assumes that a power cut loses a suffix of the unsynced bytes (or leaves it
//! zeroed). A file system that persists later unsynced pages but not earlier
//! ones — likeliest in `None` mode, where much is unsynced — leaves a hole that
//! recovery reports as corruption at its offset instead of guessing.
//!
//! # Invariants
//!
//! * A snapshot is visible under its final name only once it is fully
//!   durable: it is written to a temporary file, synced, renamed, and the
//!   directory synced. Stray temporary files are removed when a store opens.
//! * Records reach the file in the order their `append` returned, which is
//!   the order of their sequence numbers; the durable sequence number only
//!   grows, so the durable records are always a prefix of the append order.
//! * A segment is synced before its successor is created, and a new
//!   segment's header and directory entry are durable before any record is
//!   written to it: only the last segment can have a torn tail.
//! * The journal never appends to a file it did not create in this process.
//! * A poisoned journal never accepts or writes another record: after a
//!   failed write or sync it does not retry (a failed fsync may have
//!   discarded the dirty pages, so a later "successful" sync would lie).
//! * Decoders never panic and never allocate from a length field that was not
//!   checked against the bytes actually present.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(test)]
mod fixtures;
mod format;
pub mod journal;
pub mod snapshot;
pub mod storage;

pub use journal::{
    Commit, CommitObserver, FsyncMode, Journal, JournalError, JournalOptions, Recovered,
    RecoveredRecord, Ticket, TornTail, WaitDurable, read_segments,
};
pub use snapshot::{
    LoadedSnapshot, SnapshotError, SnapshotHeader, SnapshotOptions, SnapshotStore, WrittenSnapshot,
    inspect_snapshot,
};
pub use storage::{CrashMode, FaultyStorage, FileStorage, Storage, StorageError, StorageFile};
