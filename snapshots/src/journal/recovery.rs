//! Reading the journal back after a restart, and repairing a torn last segment.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::JournalError;
use super::format::{
    Frame, RecoveredRecord, SegmentPosition, TornTail, decode_frames, parse_segment_file_name,
    scan_segment, segment_file_name,
};
use crate::storage::{Storage, StorageError};

/// Everything [`read_segments`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered<T> {
    /// All intact records, in append order.
    pub records: Vec<RecoveredRecord<T>>,
    /// The unfinished end of the last segment that was dropped, if any. The
    /// file has already been cut there (or removed, if not even its header
    /// was complete).
    pub torn_tail: Option<TornTail>,
}

/// Reads every record in segments `from_segment` and later, in order.
///
/// `from_segment` is normally a snapshot's `replay_from`, or 0 without a
/// snapshot. The segments must be numbered `from_segment, from_segment + 1, …`
/// without gaps, and all but the last must be intact. A torn tail of the last
/// segment is cut off (see [`Recovered::torn_tail`]) so that a journal opened
/// afterwards starts from a clean file; any other damage is an error naming
/// the file and byte offset, and nothing is modified then.
pub fn read_segments<T: DeserializeOwned>(
    storage: &dyn Storage,
    from_segment: u64,
) -> Result<Recovered<T>, JournalError> {
    let segments = segments_to_replay(storage, from_segment)?;
    let mut records = Vec::new();
    let mut torn_tail = None;
    for (index, &segment) in segments.iter().enumerate() {
        let position = if index + 1 == segments.len() {
            SegmentPosition::Last
        } else {
            SegmentPosition::Sealed
        };
        let (decoded, torn) = load_segment(storage, segment, position, |frames, file| {
            decode_frames::<T>(frames, segment, file)
        })?;
        records.extend(decoded);
        torn_tail = torn;
    }
    Ok(Recovered { records, torn_tail })
}

/// Repairs the newest segment before a journal continues after it: a torn
/// tail is cut off, a segment whose header never became durable is removed.
/// Returns the number the journal's new segment gets.
pub(crate) fn prepare_next_segment(storage: &dyn Storage) -> Result<u64, JournalError> {
    let Some(&last) = list_segments(storage)?.last() else {
        return Ok(0);
    };
    let ((), torn) = load_segment(storage, last, SegmentPosition::Last, |_, _| Ok(()))?;
    let removed = torn.is_some_and(|torn| torn.offset == 0);
    Ok(if removed { last } else { last + 1 })
}

/// Journal segment numbers present in `storage`, ascending.
pub(crate) fn list_segments(storage: &dyn Storage) -> Result<Vec<u64>, StorageError> {
    let mut segments: Vec<u64> = storage
        .list()?
        .iter()
        .filter_map(|name| parse_segment_file_name(name))
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

/// The segments from `from_segment` on, checked to be contiguous.
fn segments_to_replay(storage: &dyn Storage, from_segment: u64) -> Result<Vec<u64>, JournalError> {
    let segments: Vec<u64> = list_segments(storage)?
        .into_iter()
        .filter(|&segment| segment >= from_segment)
        .collect();
    let missing = |segment: u64, next_present: Option<u64>| JournalError::MissingSegment {
        file: storage.path_of(&segment_file_name(segment)),
        next_present,
    };
    // Segment 0 is the first a journal ever creates; any later starting point
    // comes from a snapshot, taken after that segment was durably created.
    if segments.is_empty() && from_segment > 0 {
        return Err(missing(from_segment, None));
    }
    for (expected, &present) in (from_segment..).zip(&segments) {
        if present != expected {
            return Err(missing(expected, Some(present)));
        }
    }
    Ok(segments)
}

/// Reads and validates one segment, hands its intact frames to `use_frames`,
/// and then — only if that succeeded — cuts off a torn tail.
fn load_segment<R>(
    storage: &dyn Storage,
    segment: u64,
    position: SegmentPosition,
    use_frames: impl FnOnce(Vec<Frame<'_>>, &Path) -> Result<R, JournalError>,
) -> Result<(R, Option<TornTail>), JournalError> {
    let name = segment_file_name(segment);
    let file = storage.path_of(&name);
    let bytes = storage.read(&name)?;
    let scanned = scan_segment(&bytes, &file, position)?;
    if let Some(found) = scanned.segment.filter(|&found| found != segment) {
        return Err(JournalError::SegmentNumberMismatch {
            file,
            expected: segment,
            found,
        });
    }
    let used = use_frames(scanned.frames, &file)?;
    if let Some(torn) = &scanned.torn_tail {
        cut_torn_tail(storage, &name, torn)?;
    }
    Ok((used, scanned.torn_tail))
}

/// Removes a torn tail durably: truncates the file where the tail starts, or
/// removes the file if the tail starts at 0 (its header never became durable).
fn cut_torn_tail(storage: &dyn Storage, name: &str, torn: &TornTail) -> Result<(), StorageError> {
    tracing::warn!(
        file = %torn.file.display(),
        offset = torn.offset,
        bytes_dropped = torn.bytes_dropped,
        "dropping the torn tail of the last journal segment, left by a crash"
    );
    if torn.offset == 0 {
        storage.remove(name)?;
        storage.sync_dir()
    } else {
        storage.truncate(name, torn.offset)
    }
}
