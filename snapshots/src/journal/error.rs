//! Errors of the journal.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use super::format::SEGMENT_HEADER_LEN;
use crate::storage::StorageError;

/// Everything that can go wrong while writing or reading the journal.
#[derive(Debug, Error)]
pub enum JournalError {
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// A record could not be encoded as MessagePack.
    #[error("encoding journal record: {0}")]
    Encode(#[from] rmp_serde::encode::Error),

    /// An encoded record does not fit the frame's 32-bit length field.
    #[error("journal record of {len} bytes exceeds the 4 GiB frame limit")]
    RecordTooLarge {
        /// Encoded size of the record.
        len: usize,
    },

    /// An earlier write or sync failed; the journal accepts nothing any more.
    #[error("journal is poisoned and accepts no writes after an earlier failure: {cause}")]
    Poisoned {
        /// The failure that poisoned the journal.
        #[source]
        cause: Arc<StorageError>,
    },

    /// The journal was closed.
    #[error("journal is closed")]
    Closed,

    /// A wait for a sequence number that has not been handed out yet.
    #[error("journal sequence number {seq} has not been appended (last appended: {appended})")]
    NotAppended {
        /// The requested sequence number.
        seq: u64,
        /// The last sequence number handed out.
        appended: u64,
    },

    /// [`Journal::remove_segments_before`](super::Journal::remove_segments_before)
    /// was asked to remove the segment in use or a later one.
    #[error("cannot remove journal segments before {requested}: segment {active} is in use")]
    ActiveSegment {
        /// The requested bound.
        requested: u64,
        /// The segment new records go to.
        active: u64,
    },

    /// The journal writer thread could not be started.
    #[error("starting the journal writer thread: {0}")]
    WriterThread(#[source] std::io::Error),

    /// A segment other than the last one is shorter than a segment header.
    #[error(
        "journal segment {} is {len} bytes long, shorter than its {SEGMENT_HEADER_LEN}-byte header",
        file.display()
    )]
    SegmentTooShort {
        /// The segment file.
        file: PathBuf,
        /// Its length.
        len: u64,
    },

    /// A segment does not start with the journal magic bytes.
    #[error("{} is not a journal segment: bad magic bytes at offset 0", file.display())]
    SegmentMagic {
        /// The file.
        file: PathBuf,
    },

    /// A segment was written by a newer (or unknown) format version.
    #[error(
        "journal segment {} has format version {found} at offset 8; this build reads version {supported}",
        file.display()
    )]
    UnsupportedVersion {
        /// The segment file.
        file: PathBuf,
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },

    /// A segment header's checksum does not match its content.
    #[error(
        "journal segment {} has a corrupt header: checksum at offset 18 is {stored:#010x}, content hashes to {computed:#010x}",
        file.display()
    )]
    SegmentHeaderChecksum {
        /// The segment file.
        file: PathBuf,
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the header's content.
        computed: u32,
    },

    /// A segment's header names another segment number than its file name.
    #[error(
        "journal segment {} says it is segment {found} at offset 10, but its name says {expected}",
        file.display()
    )]
    SegmentNumberMismatch {
        /// The segment file.
        file: PathBuf,
        /// The number in the file name.
        expected: u64,
        /// The number in the header.
        found: u64,
    },

    /// A damaged record frame that cannot be a torn tail.
    #[error("journal segment {} is corrupt at byte offset {offset}: {defect}", file.display())]
    CorruptFrame {
        /// The segment file.
        file: PathBuf,
        /// Offset of the frame's first byte.
        offset: u64,
        /// What is wrong with the frame.
        defect: FrameDefect,
    },

    /// A frame with a valid checksum whose payload does not decode as the record type.
    #[error(
        "journal segment {}: record at byte offset {offset} does not decode: {source}",
        file.display()
    )]
    UndecodableRecord {
        /// The segment file.
        file: PathBuf,
        /// Offset of the frame's first byte.
        offset: u64,
        /// The decoding error.
        #[source]
        source: rmp_serde::decode::Error,
    },

    /// A segment needed for replay does not exist.
    #[error(
        "journal segment {} is missing{}",
        file.display(),
        match next_present { Some(n) => format!(" (the next one present is segment {n})"), None => String::new() }
    )]
    MissingSegment {
        /// Where the segment should be.
        file: PathBuf,
        /// The next higher segment that does exist, if any.
        next_present: Option<u64>,
    },
}

impl JournalError {
    pub(crate) fn poisoned(cause: &Arc<StorageError>) -> Self {
        Self::Poisoned {
            cause: Arc::clone(cause),
        }
    }
}

/// What is wrong with a record frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDefect {
    /// The frame needs more bytes than the segment has left.
    Incomplete {
        /// Bytes the frame needs (header and payload).
        needed: u64,
        /// Bytes left in the segment.
        available: u64,
    },
    /// The length field is zero, which no encoded record has.
    ZeroLength,
    /// The stored checksum does not match the frame's length and payload.
    Checksum {
        /// The checksum stored in the frame.
        stored: u32,
        /// The checksum of the frame's content.
        computed: u32,
    },
}

impl fmt::Display for FrameDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete { needed, available } => write!(
                f,
                "incomplete frame: needs {needed} bytes, {available} left in the file"
            ),
            Self::ZeroLength => f.write_str("frame length is zero"),
            Self::Checksum { stored, computed } => write!(
                f,
                "frame checksum is {stored:#010x}, content hashes to {computed:#010x}"
            ),
        }
    }
}

/// A string that names no [`FsyncMode`](super::FsyncMode).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown fsync mode {input:?}: expected `always`, `batch` or `none`")]
pub struct ParseFsyncModeError {
    /// The rejected input.
    pub input: String,
}
