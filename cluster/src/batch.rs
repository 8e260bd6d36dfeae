//! One journal message: the records of one group commit.
//!
//! The payload is the records one after another, each a MessagePack map as
//! [`encode_record`] makes it (the local journal's encoding, so both evolve alike). The headers
//! say how many records the payload holds and which subject sequence the message follows,
//! twice: once for JetStream, which stores the message only if that is still the subject's
//! last (`Nats-Expected-Last-Subject-Sequence`, which it does not store), and once for readers
//! (`Matchwell-Previous`). So every stored message names its predecessor, and a reader can tell
//! a gap in a partition's journal from its end.

use async_nats::HeaderMap;
use matchwell_actors::persist::Change;
use serde::Deserialize;

/// The header JetStream checks: the subject sequence the message must follow.
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// The subject sequence a stored message follows, for readers.
const PREVIOUS_HEADER: &str = "Matchwell-Previous";

/// How many records a message holds.
const RECORDS_HEADER: &str = "Matchwell-Records";

/// Room left in a message for its headers and the protocol's framing: a batch's payload stays
/// this far below the server's maximum payload.
pub(crate) const HEADER_ROOM: usize = 1024;

/// Why a journal message could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A header is missing or not a number.
    #[error("header {0} is missing or malformed")]
    Header(&'static str),
    /// A record does not decode.
    #[error("record {index} does not decode: {source}")]
    Record {
        /// Its position in the message.
        index: usize,
        /// Why.
        source: rmp_serde::decode::Error,
    },
    /// Bytes are left after the announced records.
    #[error("{0} bytes follow the last record")]
    Trailing(usize),
}

/// Encodes one record for a batch.
pub(crate) fn encode_record(change: &Change) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(change)
}

/// The headers of a message holding `records` records and following subject sequence
/// `previous` (0: the first message of the subject).
pub(crate) fn headers(records: usize, previous: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let previous = previous.to_string();
    headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, previous.as_str());
    headers.insert(PREVIOUS_HEADER, previous.as_str());
    headers.insert(RECORDS_HEADER, records.to_string().as_str());
    headers
}

/// The subject sequence a stored message follows.
pub(crate) fn previous(headers: Option<&HeaderMap>) -> Result<u64, BatchError> {
    number(headers, PREVIOUS_HEADER)
}

/// The records of a message.
pub(crate) fn decode(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Vec<Change>, BatchError> {
    let count = number(headers, RECORDS_HEADER)?;
    let mut decoder = rmp_serde::Deserializer::new(payload);
    let records = (0..count)
        .map(|index| {
            Change::deserialize(&mut decoder).map_err(|source| BatchError::Record {
                index: index as usize,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match decoder.get_ref().len() {
        0 => Ok(records),
        trailing => Err(BatchError::Trailing(trailing)),
    }
}

fn number(headers: Option<&HeaderMap>, name: &'static str) -> Result<u64, BatchError> {
    headers
        .and_then(|headers| headers.get(name))
        .and_then(|value| value.as_str().parse().ok())
        .ok_or(BatchError::Header(name))
}

#[cfg(test)]
mod tests {
    use matchwell_actors::persist::Image;

    use super::*;

    fn change(at_ms: u64) -> Change {
        Change {
            at_ms,
            images: vec![Image::Resumed {
                downtime_ms: at_ms * 2,
            }],
        }
    }

    fn payload(changes: &[Change]) -> Vec<u8> {
        changes
            .iter()
            .flat_map(|change| encode_record(change).unwrap())
            .collect()
    }

    #[test]
    fn a_batch_round_trips_and_names_its_predecessor() {
        let changes = [change(1), change(2), change(3)];
        let headers = headers(3, 41);
        assert_eq!(decode(Some(&headers), &payload(&changes)).unwrap(), changes);
        assert_eq!(previous(Some(&headers)).unwrap(), 41);
    }

    #[test]
    fn an_empty_batch_is_a_fence() {
        assert!(decode(Some(&headers(0, 7)), &[]).unwrap().is_empty());
    }

    #[test]
    fn a_miscounted_or_damaged_batch_is_refused() {
        let bytes = payload(&[change(1), change(2)]);
        assert!(matches!(
            decode(Some(&headers(1, 0)), &bytes),
            Err(BatchError::Trailing(_))
        ));
        assert!(matches!(
            decode(Some(&headers(3, 0)), &bytes),
            Err(BatchError::Record { index: 2, .. })
        ));
        assert!(matches!(
            decode(None, &bytes),
            Err(BatchError::Header(RECORDS_HEADER))
        ));
    }
}
