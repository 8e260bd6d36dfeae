//! Pieces shared by the snapshot and journal file formats.

/// Width of the zero-padded number in file names, enough for any `u64`, so
/// that names sort in numeric order.
const NUMBER_WIDTH: usize = 20;

/// `{prefix}{number:020}{suffix}`.
pub(crate) fn numbered_name(prefix: &str, number: u64, suffix: &str) -> String {
    format!("{prefix}{number:0NUMBER_WIDTH$}{suffix}")
}

/// The number in a name made by [`numbered_name`] with the same prefix and suffix.
pub(crate) fn parse_numbered_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != NUMBER_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads little-endian fields from the front of a byte slice and remembers how
/// far it got, so that decoders can name the offset of whatever is wrong.
///
/// Every read returns `None` instead of panicking when too few bytes remain,
/// and consumes nothing in that case.
#[derive(Debug, Clone)]
pub(crate) struct ByteReader<'a> {
    rest: &'a [u8],
    offset: u64,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            offset: 0,
        }
    }

    /// Offset of the next unread byte from the start of the input.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Everything not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        self.offset += len as u64;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        self.offset += N as u64;
        Some(*head)
    }

    pub(crate) fn u16_le(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64_le(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_round_trip_and_sort_numerically() {
        let names: Vec<String> = [0, 9, 10, u64::MAX]
            .iter()
            .map(|&n| numbered_name("journal-", n, ".mwj"))
            .collect();
        assert_eq!(names[0], "journal-00000000000000000000.mwj");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        for (name, n) in names.iter().zip([0, 9, 10, u64::MAX]) {
            assert_eq!(parse_numbered_name(name, "journal-", ".mwj"), Some(n));
        }
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "journal-1.mwj",
            "journal-0000000000000000000x.mwj",
            "journal-00000000000000000001.mwj.tmp",
            "snapshot-00000000000000000001.mws",
            "journal-+0000000000000000001.mwj",
            "journal-99999999999999999999.mwj",
        ] {
            assert_eq!(
                parse_numbered_name(name, "journal-", ".mwj"),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn reader_reports_offsets_and_refuses_short_reads() {
        let mut reader = ByteReader::new(&[1, 0, 2, 0, 0, 0, 9]);
        assert_eq!(reader.u16_le(), Some(1));
        assert_eq!(reader.u32_le(), Some(2));
        assert_eq!(reader.offset(), 6);
        assert_eq!(reader.u64_le(), None);
        assert_eq!(reader.bytes(2), None);
        assert_eq!(reader.offset(), 6, "failed reads consume nothing");
        assert_eq!(reader.rest(), &[9]);
        assert_eq!(reader.bytes(1), Some(&[9][..]));
    }
}
