//! The journal segment format: names, header, record frames, and decoding.
//!
//! The byte layout is described in the crate documentation.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::JournalError;
use super::error::FrameDefect;
use crate::format::{ByteReader, numbered_name, parse_numbered_name};

const SEGMENT_MAGIC: [u8; 8] = *b"\x89MWJRNL\n";
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
/// Magic, version, segment number, checksum.
pub(crate) const SEGMENT_HEADER_LEN: usize = 8 + 2 + 8 + 4;
/// Payload length and checksum.
const FRAME_HEADER_LEN: usize = 4 + 4;

const NAME_PREFIX: &str = "journal-";
const NAME_SUFFIX: &str = ".mwj";

/// `journal-{segment:020}.mwj`.
pub(crate) fn segment_file_name(segment: u64) -> String {
    numbered_name(NAME_PREFIX, segment, NAME_SUFFIX)
}

pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered_name(name, NAME_PREFIX, NAME_SUFFIX)
}

pub(crate) fn encode_segment_header(segment: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0; SEGMENT_HEADER_LEN];
    let (content, checksum) = header.split_at_mut(SEGMENT_HEADER_LEN - 4);
    let (magic, rest) = content.split_at_mut(SEGMENT_MAGIC.len());
    let (version, number) = rest.split_at_mut(2);
    magic.copy_from_slice(&SEGMENT_MAGIC);
    version.copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    number.copy_from_slice(&segment.to_le_bytes());
    checksum.copy_from_slice(&crc32c::crc32c(content).to_le_bytes());
    header
}

/// Encodes `record` as one frame, ready to be appended to a segment.
pub(crate) fn encode_frame<T: Serialize + ?Sized>(record: &T) -> Result<Vec<u8>, JournalError> {
    let mut frame = Vec::with_capacity(64);
    frame.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    rmp_serde::encode::write_named(&mut frame, record)?;
    let (header, payload) = frame.split_at_mut(FRAME_HEADER_LEN);
    let len = u32::try_from(payload.len())
        .map_err(|_| JournalError::RecordTooLarge { len: payload.len() })?;
    let (len_field, checksum_field) = header.split_at_mut(4);
    len_field.copy_from_slice(&len.to_le_bytes());
    checksum_field.copy_from_slice(&frame_checksum(len, payload).to_le_bytes());
    Ok(frame)
}

/// The frame checksum covers the length field too, so that a damaged length
/// is caught even when it happens to point at a plausible boundary.
fn frame_checksum(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Whether a segment is the newest one, the only one a crash can leave unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentPosition {
    /// The newest segment: a damaged final frame, or a header cut short, is a torn tail.
    Last,
    /// An older segment, synced before its successor was created: any damage is corruption.
    Sealed,
}

/// Bytes at the end of the last segment that a crash left unfinished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Offset of the first dropped byte; the segment's valid content ends here.
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes_dropped: u64,
}

/// A record read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRecord<T> {
    /// The segment it was read from.
    pub segment: u64,
    /// Byte offset of its frame within the segment file.
    pub offset: u64,
    /// The record.
    pub record: T,
}

/// The content of one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSegment<T> {
    /// The segment number from the header; `None` when the header itself was
    /// cut short by a crash (then the whole file is the torn tail).
    pub segment: Option<u64>,
    /// The records, in file order.
    pub records: Vec<RecoveredRecord<T>>,
    /// What was dropped from the end, if the segment ends in a torn frame.
    pub torn_tail: Option<TornTail>,
}

/// Validates a whole segment file and decodes its records.
///
/// `file` is only used in errors. Never panics and never allocates more than
/// the decoded records need, whatever `bytes` contains.
pub fn decode_segment<T: DeserializeOwned>(
    bytes: &[u8],
    file: &Path,
    position: SegmentPosition,
) -> Result<DecodedSegment<T>, JournalError> {
    let scanned = scan_segment(bytes, file, position)?;
    // Frames exist only when the header, and so the segment number, was read.
    let records = decode_frames(scanned.frames, scanned.segment.unwrap_or_default(), file)?;
    Ok(DecodedSegment {
        segment: scanned.segment,
        records,
        torn_tail: scanned.torn_tail,
    })
}

/// Decodes intact frames of segment `segment` into records.
pub(crate) fn decode_frames<T: DeserializeOwned>(
    frames: Vec<Frame<'_>>,
    segment: u64,
    file: &Path,
) -> Result<Vec<RecoveredRecord<T>>, JournalError> {
    frames
        .into_iter()
        .map(|frame| match rmp_serde::from_slice(frame.payload) {
            Ok(record) => Ok(RecoveredRecord {
                segment,
                offset: frame.offset,
                record,
            }),
            Err(source) => Err(JournalError::UndecodableRecord {
                file: file.to_owned(),
                offset: frame.offset,
                source,
            }),
        })
        .collect()
}

/// One intact frame.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) offset: u64,
    pub(crate) payload: &'a [u8],
}

/// A segment whose framing and checksums were checked, records not yet decoded.
#[derive(Debug)]
pub(crate) struct ScannedSegment<'a> {
    pub(crate) segment: Option<u64>,
    pub(crate) frames: Vec<Frame<'a>>,
    pub(crate) torn_tail: Option<TornTail>,
}

/// Checks the header and every frame's framing and checksum.
pub(crate) fn scan_segment<'a>(
    bytes: &'a [u8],
    file: &Path,
    position: SegmentPosition,
) -> Result<ScannedSegment<'a>, JournalError> {
    let torn_from = |offset: u64, rest: &[u8]| TornTail {
        file: file.to_owned(),
        offset,
        bytes_dropped: rest.len() as u64,
    };
    if bytes.len() < SEGMENT_HEADER_LEN {
        return match position {
            // A crash right after the file was created, before its header was synced.
            SegmentPosition::Last => Ok(ScannedSegment {
                segment: None,
                frames: Vec::new(),
                torn_tail: Some(torn_from(0, bytes)),
            }),
            SegmentPosition::Sealed => Err(JournalError::SegmentTooShort {
                file: file.to_owned(),
                len: bytes.len() as u64,
            }),
        };
    }
    let mut reader = ByteReader::new(bytes);
    let segment = read_segment_header(&mut reader, file)?;
    let mut frames = Vec::new();
    while !reader.rest().is_empty() {
        let offset = reader.offset();
        match read_frame(&mut reader) {
            Ok(payload) => frames.push(Frame { offset, payload }),
            Err(bad) if bad.reaches_eof && position == SegmentPosition::Last => {
                return Ok(ScannedSegment {
                    segment: Some(segment),
                    frames,
                    torn_tail: Some(torn_from(offset, reader.rest())),
                });
            }
            Err(bad) => {
                return Err(JournalError::CorruptFrame {
                    file: file.to_owned(),
                    offset,
                    defect: bad.defect,
                });
            }
        }
    }
    Ok(ScannedSegment {
        segment: Some(segment),
        frames,
        torn_tail: None,
    })
}

/// Reads the header of a segment at least [`SEGMENT_HEADER_LEN`] bytes long.
fn read_segment_header(reader: &mut ByteReader<'_>, file: &Path) -> Result<u64, JournalError> {
    let len = reader.rest().len() as u64;
    let content = reader
        .rest()
        .get(..SEGMENT_HEADER_LEN - 4)
        .unwrap_or_default();
    let (Some(magic), Some(version), Some(segment), Some(stored)) = (
        reader.array::<8>(),
        reader.u16_le(),
        reader.u64_le(),
        reader.u32_le(),
    ) else {
        return Err(JournalError::SegmentTooShort {
            file: file.to_owned(),
            len,
        });
    };
    if magic != SEGMENT_MAGIC {
        return Err(JournalError::SegmentMagic {
            file: file.to_owned(),
        });
    }
    if version != SEGMENT_VERSION {
        return Err(JournalError::UnsupportedVersion {
            file: file.to_owned(),
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    let computed = crc32c::crc32c(content);
    if stored != computed {
        return Err(JournalError::SegmentHeaderChecksum {
            file: file.to_owned(),
            stored,
            computed,
        });
    }
    Ok(segment)
}

/// A frame that failed validation.
struct BadFrame {
    defect: FrameDefect,
    /// Whether nothing valid can follow the frame: it is incomplete, or it is
    /// exactly the final frame of the file, or the file is zeros from here on
    /// (a crash after the file grew but before its data reached the disk).
    reaches_eof: bool,
}

/// Reads one frame; on failure, consumes nothing.
fn read_frame<'a>(reader: &mut ByteReader<'a>) -> Result<&'a [u8], BadFrame> {
    let rest = reader.rest();
    let incomplete = |needed: u64| BadFrame {
        defect: FrameDefect::Incomplete {
            needed,
            available: rest.len() as u64,
        },
        reaches_eof: true,
    };
    let mut frame = reader.clone();
    let (Some(len), Some(stored)) = (frame.u32_le(), frame.u32_le()) else {
        return Err(incomplete(FRAME_HEADER_LEN as u64));
    };
    if len == 0 {
        return Err(BadFrame {
            defect: FrameDefect::ZeroLength,
            reaches_eof: rest.iter().all(|&byte| byte == 0),
        });
    }
    let Some(payload) = frame.bytes(len as usize) else {
        return Err(incomplete(FRAME_HEADER_LEN as u64 + u64::from(len)));
    };
    let computed = frame_checksum(len, payload);
    if stored != computed {
        return Err(BadFrame {
            defect: FrameDefect::Checksum { stored, computed },
            reaches_eof: frame.rest().is_empty(),
        });
    }
    *reader = frame;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(records: &[&str]) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = encode_segment_header(7).to_vec();
        let mut offsets = Vec::new();
        for record in records {
            offsets.push(bytes.len() as u64);
            bytes.extend(encode_frame(record).unwrap());
        }
        (bytes, offsets)
    }

    fn decode(
        bytes: &[u8],
        position: SegmentPosition,
    ) -> Result<DecodedSegment<String>, JournalError> {
        decode_segment(bytes, Path::new("seg.mwj"), position)
    }

    fn values(segment: &DecodedSegment<String>) -> Vec<&str> {
        segment.records.iter().map(|r| r.record.as_str()).collect()
    }

    #[test]
    fn records_round_trip_with_offsets() {
        let (bytes, offsets) = segment_with(&["a", "bb", "ccc"]);
        for position in [SegmentPosition::Last, SegmentPosition::Sealed] {
            let decoded = decode(&bytes, position).unwrap();
            assert_eq!(decoded.segment, Some(7));
            assert_eq!(values(&decoded), ["a", "bb", "ccc"]);
            let read_offsets: Vec<u64> = decoded.records.iter().map(|r| r.offset).collect();
            assert_eq!(read_offsets, offsets);
            assert!(decoded.records.iter().all(|r| r.segment == 7));
            assert_eq!(decoded.torn_tail, None);
        }
    }

    #[test]
    fn every_cut_through_the_last_frame_is_a_torn_tail_of_the_last_segment() {
        let (bytes, offsets) = segment_with(&["first", "second"]);
        let last = offsets[1] as usize;
        for cut in last + 1..bytes.len() {
            let decoded = decode(&bytes[..cut], SegmentPosition::Last).unwrap();
            assert_eq!(values(&decoded), ["first"], "cut at {cut}");
            let torn = decoded.torn_tail.unwrap();
            assert_eq!(
                (torn.offset, torn.bytes_dropped),
                (last as u64, (cut - last) as u64)
            );

            let err = decode(&bytes[..cut], SegmentPosition::Sealed).unwrap_err();
            assert!(
                matches!(err, JournalError::CorruptFrame { offset, defect: FrameDefect::Incomplete { .. }, .. } if offset == last as u64),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_short_header_is_torn_only_in_the_last_segment() {
        let (bytes, _) = segment_with(&[]);
        for cut in 0..SEGMENT_HEADER_LEN {
            let decoded = decode(&bytes[..cut], SegmentPosition::Last).unwrap();
            assert_eq!(decoded.segment, None);
            assert_eq!(decoded.torn_tail.unwrap().bytes_dropped, cut as u64);
            assert!(matches!(
                decode(&bytes[..cut], SegmentPosition::Sealed),
                Err(JournalError::SegmentTooShort { len, .. }) if len == cut as u64
            ));
        }
    }

    #[test]
    fn a_bad_checksum_on_the_final_frame_is_torn_but_before_other_data_is_corrupt() {
        let (mut bytes, offsets) = segment_with(&["first", "second", "third"]);
        let last_payload = offsets[2] as usize + FRAME_HEADER_LEN;
        bytes[last_payload] ^= 1;
        let decoded = decode(&bytes, SegmentPosition::Last).unwrap();
        assert_eq!(values(&decoded), ["first", "second"]);
        assert_eq!(decoded.torn_tail.unwrap().offset, offsets[2]);

        let (mut bytes, offsets) = segment_with(&["first", "second", "third"]);
        bytes[offsets[1] as usize + FRAME_HEADER_LEN] ^= 1;
        let err = decode(&bytes, SegmentPosition::Last).unwrap_err();
        assert!(
            matches!(err, JournalError::CorruptFrame { offset, defect: FrameDefect::Checksum { .. }, .. } if offset == offsets[1]),
            "{err}"
        );
        assert!(err.to_string().contains("seg.mwj"), "{err}");
        assert!(
            err.to_string().contains(&format!("offset {}", offsets[1])),
            "{err}"
        );
    }

    #[test]
    fn a_zero_filled_tail_is_torn_but_a_zero_length_before_data_is_corrupt() {
        let (mut bytes, offsets) = segment_with(&["first"]);
        let end = bytes.len() as u64;
        bytes.extend([0; 100]);
        let decoded = decode(&bytes, SegmentPosition::Last).unwrap();
        assert_eq!(values(&decoded), ["first"]);
        assert_eq!(decoded.torn_tail.unwrap().offset, end);

        bytes.push(1);
        let err = decode(&bytes, SegmentPosition::Last).unwrap_err();
        assert!(matches!(
            err,
            JournalError::CorruptFrame { defect: FrameDefect::ZeroLength, offset, .. } if offset == end
        ));
        assert_eq!(offsets, [SEGMENT_HEADER_LEN as u64]);
    }

    #[test]
    fn a_damaged_length_is_caught_by_the_checksum() {
        let (mut bytes, offsets) = segment_with(&["first", "second"]);
        // Shrink the first frame's length by one: it still points inside the file.
        bytes[offsets[0] as usize] -= 1;
        let err = decode(&bytes, SegmentPosition::Last).unwrap_err();
        assert!(matches!(
            err,
            JournalError::CorruptFrame { defect: FrameDefect::Checksum { .. }, offset, .. } if offset == offsets[0]
        ));
    }

    #[test]
    fn header_defects_are_reported() {
        let (good, _) = segment_with(&["x"]);
        let mut bad_magic = good.clone();
        bad_magic[1] = b'X';
        assert!(matches!(
            decode(&bad_magic, SegmentPosition::Last),
            Err(JournalError::SegmentMagic { .. })
        ));

        let mut future = good.clone();
        future[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(
            decode(&future, SegmentPosition::Last),
            Err(JournalError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            })
        ));

        let mut flipped = good.clone();
        flipped[12] ^= 0x10;
        assert!(matches!(
            decode(&flipped, SegmentPosition::Last),
            Err(JournalError::SegmentHeaderChecksum { .. })
        ));
    }

    #[test]
    fn a_valid_frame_that_is_not_a_record_is_corruption() {
        let mut bytes = encode_segment_header(1).to_vec();
        bytes.extend(encode_frame(&42u32).unwrap());
        let err = decode(&bytes, SegmentPosition::Last).unwrap_err();
        assert!(matches!(
            err,
            JournalError::UndecodableRecord { offset, .. } if offset == SEGMENT_HEADER_LEN as u64
        ));
    }
}
