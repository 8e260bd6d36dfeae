//! Identifiers of entries, matches and challenges.
//!
//! Identifiers are sequence numbers inside the engine (cheap to hash, 8 bytes in every record)
//! and prefixed hexadecimal strings outside it (`q_1f`, `m_a0`, `c_3`), so that an id of one kind
//! can never be mistaken for another in a URL.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An identifier string that does not parse as the expected kind of id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {kind} id")]
pub struct InvalidId {
    kind: &'static str,
    text: String,
}

/// An id that is a sequence number, for tables indexed by it.
pub(crate) trait SequenceNumbered: Copy {
    /// The sequence number.
    fn sequence(self) -> u64;
    /// The id with sequence number `sequence`; `None` for zero.
    fn from_sequence(sequence: u64) -> Option<Self>;
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(NonZeroU64);

        impl $name {
            /// The smallest id, sequence number one.
            pub const MIN: Self = Self(NonZeroU64::MIN);

            /// The id with sequence number `value`; `None` for zero, which is never issued.
            pub fn new(value: u64) -> Option<Self> {
                NonZeroU64::new(value).map(Self)
            }

            /// The sequence number behind the id.
            pub fn get(self) -> u64 {
                self.0.get()
            }
        }

        impl SequenceNumbered for $name {
            fn sequence(self) -> u64 {
                self.get()
            }

            fn from_sequence(sequence: u64) -> Option<Self> {
                Self::new(sequence)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:x}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<Self, InvalidId> {
                parse_prefixed_hex(text, $prefix)
                    .and_then(Self::new)
                    .ok_or_else(|| InvalidId { kind: $kind, text: text.chars().take(64).collect() })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_u64(self.get())
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                if deserializer.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                    text.parse().map_err(D::Error::custom)
                } else {
                    let value = u64::deserialize(deserializer)?;
                    Self::new(value).ok_or_else(|| D::Error::custom(concat!("zero ", $kind, " id")))
                }
            }
        }
    };
}

define_id!(
    /// Identifies one queue entry (`q_…`).
    EntryId,
    "q_",
    "entry"
);
define_id!(
    /// Identifies one match formed by the queue (`m_…`).
    MatchId,
    "m_",
    "match"
);
define_id!(
    /// Identifies one direct challenge (`c_…`).
    ChallengeId,
    "c_",
    "challenge"
);

fn parse_prefixed_hex(text: &str, prefix: &str) -> Option<u64> {
    let digits = text.strip_prefix(prefix)?;
    // One spelling per id: no leading zeros, so `q_01` never names what `q_1` names.
    let well_formed = !digits.is_empty()
        && !digits.starts_with('0')
        && digits.len() <= 16
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed
        .then(|| u64::from_str_radix(digits, 16).ok())
        .flatten()
}

/// Hands out increasing sequence numbers for one kind of id.
///
/// An atomic counter rather than a lock: callers on every HTTP worker and every shard take ids
/// concurrently, and recovery only ever needs to move it past the largest id it has seen.
#[derive(Debug)]
pub struct IdSequence {
    last: AtomicU64,
}

impl IdSequence {
    /// A sequence whose next value is `last + 1`.
    pub fn starting_after(last: u64) -> Self {
        Self {
            last: AtomicU64::new(last),
        }
    }

    /// The next sequence number (never zero).
    pub fn next(&self) -> NonZeroU64 {
        self.next_block(1)
    }

    /// The first of `count` consecutive sequence numbers reserved at once (`count` ≥ 1).
    pub fn next_block(&self, count: u64) -> NonZeroU64 {
        let first = self.last.fetch_add(count, Ordering::Relaxed) + 1;
        NonZeroU64::new(first).expect("a sequence starting at zero never returns zero")
    }

    /// Makes sure later values are greater than `seen`.
    pub fn observe(&self, seen: u64) {
        self.last.fetch_max(seen, Ordering::Relaxed);
    }

    /// The largest value handed out or observed so far.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reserves_consecutive_numbers() {
        let sequence = IdSequence::starting_after(4);
        assert_eq!(sequence.next_block(3).get(), 5);
        assert_eq!(
            sequence.next().get(),
            8,
            "the block's numbers are not handed out again"
        );
        assert_eq!(sequence.last(), 8);
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = EntryId::new(0x1f).unwrap();
        assert_eq!(id.to_string(), "q_1f");
        assert_eq!("q_1f".parse::<EntryId>(), Ok(id));
        assert_eq!(MatchId::new(10).unwrap().to_string(), "m_a");
        assert_eq!(ChallengeId::new(3).unwrap().to_string(), "c_3");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for text in [
            "",
            "q_",
            "m_1",
            "q_0",
            "q_01",
            "q_00a",
            "q_+1",
            "q_1F",
            "q_12345678901234567",
            "q_zz",
            "q_-1",
        ] {
            assert!(
                text.parse::<EntryId>().is_err(),
                "{text:?} must not parse as an entry id"
            );
        }
    }

    #[test]
    fn ids_serialize_as_text_for_humans_and_numbers_for_machines() {
        let id = ChallengeId::new(255).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"c_ff\"");
        assert_eq!(serde_json::from_str::<ChallengeId>("\"c_ff\"").unwrap(), id);
        assert!(serde_json::from_str::<ChallengeId>("\"q_ff\"").is_err());
    }

    #[test]
    fn sequence_moves_past_observed_values() {
        let sequence = IdSequence::starting_after(0);
        assert_eq!(sequence.next().get(), 1);
        sequence.observe(41);
        assert_eq!(sequence.next().get(), 42);
        sequence.observe(7);
        assert_eq!(sequence.next().get(), 43);
    }
}
