//! The snapshot file format: encoding and validation.
//!
//! The byte layout is described in the crate documentation.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::SnapshotError;
use crate::format::ByteReader;

const SNAPSHOT_MAGIC: [u8; 8] = *b"\x89MWSNAP\n";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Offset of the header checksum: after magic, version and header length.
const HEADER_CHECKSUM_OFFSET: u64 = 8 + 2 + 4;
/// Magic, version, header length, header checksum.
const FIXED_HEADER_LEN: u64 = HEADER_CHECKSUM_OFFSET + 4;

/// What a snapshot file says about itself, readable without decoding the body.
///
/// Encoded as a MessagePack map with field names, so later versions can add
/// fields that this version ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotHeader {
    /// When the snapshot was written, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The first journal segment to replay on top of this snapshot.
    pub replay_from: u64,
    /// Counts supplied by the writer, for display only.
    pub summary: BTreeMap<String, u64>,
    /// Length of the body in bytes.
    pub body_len: u64,
    /// CRC-32C of the body.
    pub body_crc32c: u32,
}

/// A snapshot encoded in memory, ready to be written.
#[derive(Debug)]
pub(crate) struct EncodedSnapshot {
    pub(crate) header: SnapshotHeader,
    /// Everything before the body: fixed header and encoded header.
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn encode_snapshot<T: Serialize + ?Sized>(
    body: &T,
    created_at_ms: u64,
    replay_from: u64,
    summary: BTreeMap<String, u64>,
) -> Result<EncodedSnapshot, SnapshotError> {
    // Positional: see "File formats" in the crate documentation.
    let body = rmp_serde::to_vec(body)?;
    let header = SnapshotHeader {
        created_at_ms,
        replay_from,
        summary,
        body_len: body.len() as u64,
        body_crc32c: crc32c::crc32c(&body),
    };
    let encoded_header = rmp_serde::to_vec_named(&header)?;
    let header_len =
        u32::try_from(encoded_header.len()).map_err(|_| SnapshotError::HeaderTooLarge {
            len: encoded_header.len(),
        })?;
    let mut head = Vec::with_capacity(FIXED_HEADER_LEN as usize + encoded_header.len());
    head.extend_from_slice(&SNAPSHOT_MAGIC);
    head.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    head.extend_from_slice(&header_len.to_le_bytes());
    head.extend_from_slice(
        &header_checksum(SNAPSHOT_VERSION, header_len, &encoded_header).to_le_bytes(),
    );
    head.extend_from_slice(&encoded_header);
    Ok(EncodedSnapshot { header, head, body })
}

/// The header checksum covers the version and header length as well as the
/// header, so that no bit before the body goes unchecked.
fn header_checksum(version: u16, header_len: u32, header: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&version.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &header_len.to_le_bytes());
    crc32c::crc32c_append(crc, header)
}

/// Validates a whole snapshot file, including the body checksum, and returns
/// its header without decoding the body.
///
/// `file` is only used in errors. Never panics and never allocates based on an
/// unchecked length field, whatever `bytes` contains.
pub fn decode_snapshot_header(bytes: &[u8], file: &Path) -> Result<SnapshotHeader, SnapshotError> {
    validate(bytes, file).map(|(header, _)| header)
}

/// Validates a whole snapshot file and decodes its body as `T`.
///
/// `file` is only used in errors. Never panics, whatever `bytes` contains.
pub fn decode_snapshot<T: DeserializeOwned>(
    bytes: &[u8],
    file: &Path,
) -> Result<(SnapshotHeader, T), SnapshotError> {
    let (header, body) = validate(bytes, file)?;
    let body_offset = (bytes.len() - body.len()) as u64;
    let value = rmp_serde::from_slice(body).map_err(|source| SnapshotError::BodyDecode {
        file: file.to_owned(),
        offset: body_offset,
        source,
    })?;
    Ok((header, value))
}

/// Checks everything but the body's decoding; returns the header and the body bytes.
fn validate<'a>(bytes: &'a [u8], file: &Path) -> Result<(SnapshotHeader, &'a [u8]), SnapshotError> {
    let file_name = || file.to_owned();
    let truncated = |part, offset, needed, available: &[u8]| SnapshotError::Truncated {
        file: file_name(),
        part,
        offset,
        needed,
        available: available.len() as u64,
    };
    if bytes.is_empty() {
        return Err(SnapshotError::Empty { file: file_name() });
    }
    if !bytes.starts_with(&SNAPSHOT_MAGIC) && !SNAPSHOT_MAGIC.starts_with(bytes) {
        return Err(SnapshotError::BadMagic { file: file_name() });
    }
    let mut reader = ByteReader::new(bytes);
    let truncated_fixed_header = truncated("fixed header", 0, FIXED_HEADER_LEN, bytes);
    let (Some(_magic), Some(version)) = (reader.array::<8>(), reader.u16_le()) else {
        return Err(truncated_fixed_header);
    };
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            file: file_name(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let (Some(header_len), Some(stored)) = (reader.u32_le(), reader.u32_le()) else {
        return Err(truncated_fixed_header);
    };

    let header_offset = reader.offset();
    let Some(encoded_header) = reader.bytes(header_len as usize) else {
        return Err(truncated(
            "header",
            header_offset,
            header_len.into(),
            reader.rest(),
        ));
    };
    let computed = header_checksum(version, header_len, encoded_header);
    if stored != computed {
        return Err(SnapshotError::HeaderChecksum {
            file: file_name(),
            offset: HEADER_CHECKSUM_OFFSET,
            stored,
            computed,
        });
    }
    let header: SnapshotHeader =
        rmp_serde::from_slice(encoded_header).map_err(|source| SnapshotError::HeaderDecode {
            file: file_name(),
            offset: header_offset,
            source,
        })?;

    let body_offset = reader.offset();
    let body = reader.rest();
    let actual_len = body.len() as u64;
    if header.body_len > actual_len {
        return Err(truncated("body", body_offset, header.body_len, body));
    }
    if header.body_len < actual_len {
        return Err(SnapshotError::TrailingBytes {
            file: file_name(),
            offset: body_offset + header.body_len,
            extra: actual_len - header.body_len,
        });
    }
    let computed = crc32c::crc32c(body);
    if computed != header.body_crc32c {
        return Err(SnapshotError::BodyChecksum {
            file: file_name(),
            offset: body_offset,
            stored: header.body_crc32c,
            computed,
        });
    }
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(body: &[u32]) -> Vec<u8> {
        let summary = BTreeMap::from([("items".to_owned(), body.len() as u64)]);
        let snapshot = encode_snapshot(body, 1_700_000_000_000, 4, summary).unwrap();
        [snapshot.head, snapshot.body].concat()
    }

    fn decode(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<u32>), SnapshotError> {
        decode_snapshot(bytes, Path::new("snap.mws"))
    }

    #[test]
    fn round_trips_header_and_body() {
        let bytes = encoded(&[1, 2, 3]);
        let (header, body) = decode(&bytes).unwrap();
        assert_eq!(body, [1, 2, 3]);
        assert_eq!(header.created_at_ms, 1_700_000_000_000);
        assert_eq!(header.replay_from, 4);
        assert_eq!(header.summary["items"], 3);
        assert_eq!(
            decode_snapshot_header(&bytes, Path::new("x")).unwrap(),
            header
        );
    }

    #[test]
    fn every_truncation_is_rejected_as_truncated() {
        let bytes = encoded(&[1, 2, 3]);
        for cut in 1..bytes.len() {
            let err = decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, SnapshotError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
        assert!(matches!(decode(&[]), Err(SnapshotError::Empty { .. })));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = encoded(&[1, 2, 3]);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = decode(&flipped).unwrap_err();
            assert!(err.to_string().contains("snap.mws"), "bit {bit}: {err}");
        }
    }

    #[test]
    fn trailing_bytes_are_rejected_with_their_offset() {
        let mut bytes = encoded(&[1]);
        let end = bytes.len() as u64;
        bytes.push(0);
        assert!(matches!(
            decode(&bytes),
            Err(SnapshotError::TrailingBytes { offset, extra: 1, .. }) if offset == end
        ));
    }

    #[test]
    fn an_intact_body_of_another_type_is_a_decode_error_at_the_body_offset() {
        let snapshot = encode_snapshot("text", 0, 0, BTreeMap::new()).unwrap();
        let body_offset = snapshot.head.len() as u64;
        let bytes = [snapshot.head, snapshot.body].concat();
        assert!(matches!(
            decode(&bytes),
            Err(SnapshotError::BodyDecode { offset, .. }) if offset == body_offset
        ));
    }

    #[test]
    fn a_huge_declared_header_length_is_checked_against_the_file() {
        let mut bytes = encoded(&[1]);
        bytes[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(SnapshotError::Truncated { part: "header", offset: 18, needed, .. }) if needed == u64::from(u32::MAX)
        ));
    }
}
