//! Errors of snapshot files.

use std::path::PathBuf;

use thiserror::Error;

use crate::storage::StorageError;

/// Everything that can go wrong while writing, validating or loading a snapshot.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// The body or header could not be encoded as MessagePack.
    #[error("encoding snapshot: {0}")]
    Encode(#[from] rmp_serde::encode::Error),

    /// The encoded header does not fit its 32-bit length field.
    #[error("snapshot header of {len} bytes exceeds the 4 GiB limit")]
    HeaderTooLarge {
        /// Encoded size of the header.
        len: usize,
    },

    /// The file has no bytes at all.
    #[error("snapshot {} is empty", file.display())]
    Empty {
        /// The file.
        file: PathBuf,
    },

    /// The file does not start with the snapshot magic bytes.
    #[error("{} is not a snapshot file: bad magic bytes at offset 0", file.display())]
    BadMagic {
        /// The file.
        file: PathBuf,
    },

    /// The file was written by a newer (or unknown) format version.
    #[error(
        "snapshot {} has format version {found} at offset 8; this build reads version {supported}",
        file.display()
    )]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },

    /// The file ends before a part it declares.
    #[error(
        "snapshot {} is truncated: its {part} at byte offset {offset} needs {needed} bytes, but only {available} remain",
        file.display()
    )]
    Truncated {
        /// The file.
        file: PathBuf,
        /// Which part is cut short: `fixed header`, `header` or `body`.
        part: &'static str,
        /// Where that part starts.
        offset: u64,
        /// Bytes the part needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// The header checksum does not match.
    #[error(
        "snapshot {} has a corrupt header: checksum at offset {offset} is {stored:#010x}, content hashes to {computed:#010x}",
        file.display()
    )]
    HeaderChecksum {
        /// The file.
        file: PathBuf,
        /// Offset of the stored checksum.
        offset: u64,
        /// The stored checksum.
        stored: u32,
        /// The checksum of the version, header length and header.
        computed: u32,
    },

    /// The header has a valid checksum but does not decode.
    #[error("snapshot {}: header at byte offset {offset} does not decode: {source}", file.display())]
    HeaderDecode {
        /// The file.
        file: PathBuf,
        /// Where the header starts.
        offset: u64,
        /// The decoding error.
        #[source]
        source: rmp_serde::decode::Error,
    },

    /// The file is longer than its header declares.
    #[error("snapshot {} has {extra} unexpected bytes after its body, at byte offset {offset}", file.display())]
    TrailingBytes {
        /// The file.
        file: PathBuf,
        /// Where the unexpected bytes start.
        offset: u64,
        /// How many there are.
        extra: u64,
    },

    /// The body checksum does not match the header's.
    #[error(
        "snapshot {} has a corrupt body at byte offset {offset}: header says checksum {stored:#010x}, body hashes to {computed:#010x}",
        file.display()
    )]
    BodyChecksum {
        /// The file.
        file: PathBuf,
        /// Where the body starts.
        offset: u64,
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the body.
        computed: u32,
    },

    /// The body is intact but does not decode as the requested type.
    #[error("snapshot {}: body at byte offset {offset} does not decode: {source}", file.display())]
    BodyDecode {
        /// The file.
        file: PathBuf,
        /// Where the body starts.
        offset: u64,
        /// The decoding error.
        #[source]
        source: rmp_serde::decode::Error,
    },

    /// Snapshots exist but none of them is valid.
    #[error("none of the {count} snapshots is valid; the newest failed with: {newest}")]
    NoValidSnapshot {
        /// How many snapshots were tried.
        count: usize,
        /// Why the newest one was rejected.
        #[source]
        newest: Box<SnapshotError>,
    },
}
