//! The index's entries and matches, stored densely by sequence number.
//!
//! Entry and match ids are issued in sequence and forgotten roughly in the order they were
//! issued (a retention period after they settle), so a table is a directory of fixed-size
//! segments, each holding the records of a run of consecutive ids. Compared with a hash map
//! this is what the hottest paths need:
//!
//! - a lookup is one directory step and one slot, which is one cache line for an entry (its
//!   slot is exactly 64 bytes, lock included), instead of a control-byte probe and a slot in a
//!   large table;
//! - each slot has its own lock, so readers on different cores never write a shared lock word
//!   (a sharded map's shard lock is written by every read of any key in that shard);
//! - enqueues, and the matches of a wave, write slots in id order, next to each other, and
//!   nothing is ever rehashed.
//!
//! The directory is immutable behind an [`ArcSwap`] and replaced whole (a copy of a few
//! hundred pointers) when a segment is added or retired, so finding a segment takes no lock.
//! A segment is retired once it holds no record; an insert that finds its segment retired
//! (an id issued long ago and inserted late, or a quiet table emptied between two enqueues)
//! simply gets a fresh one.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use crate::ids::{EntryId, MatchId, SequenceNumbered};
use crate::index::{EntryRecord, MatchRecord};

/// The index's entries.
pub(crate) type EntryTable = SequenceTable<EntryId, EntryRecord>;

/// The index's matches.
pub(crate) type MatchTable = SequenceTable<MatchId, MatchRecord>;

/// Consecutive ids per segment: 256 KiB of slots, so a million entries need ~250 segments
/// and growing the directory copies little.
const SEGMENT_LEN: usize = 4_096;

/// `live` of a retired segment: no insert may count itself in any more.
const RETIRED: usize = usize::MAX;

/// One record's place, aligned to a cache line so that two cores writing neighbouring ids (two
/// enqueues at once) never share one.
#[derive(Debug)]
#[repr(align(64))]
struct Slot<R>(RwLock<Option<R>>);

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Self(RwLock::new(None))
    }
}

#[derive(Debug)]
struct Segment<R> {
    slots: Box<[Slot<R>]>,
    /// Records held, or [`RETIRED`].
    live: AtomicUsize,
}

impl<R> Segment<R> {
    fn new() -> Self {
        Self {
            slots: std::iter::repeat_with(Slot::default)
                .take(SEGMENT_LEN)
                .collect(),
            live: AtomicUsize::new(0),
        }
    }

    /// Counts `count` more records in, unless the segment is retired.
    fn enter(&self, count: usize) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| match live {
                RETIRED => None,
                live => Some(live + count),
            })
            .is_ok()
    }

    /// Counts `count` records out; whether they were the last.
    fn leave(&self, count: usize) -> bool {
        self.live.fetch_sub(count, Ordering::AcqRel) == count
    }
}

/// Which segments exist: `segments[i]` holds segment number `first + i`.
#[derive(Debug)]
struct Directory<R> {
    first: usize,
    segments: Vec<Option<Arc<Segment<R>>>>,
}

impl<R> Default for Directory<R> {
    fn default() -> Self {
        Self {
            first: 0,
            segments: Vec::new(),
        }
    }
}

impl<R> Clone for Directory<R> {
    fn clone(&self) -> Self {
        Self {
            first: self.first,
            segments: self.segments.clone(),
        }
    }
}

impl<R> Directory<R> {
    fn segment(&self, number: usize) -> Option<&Arc<Segment<R>>> {
        self.segments.get(number.checked_sub(self.first)?)?.as_ref()
    }

    /// The place of record `id`, if its segment exists.
    fn slot(&self, id: impl SequenceNumbered) -> Option<&RwLock<Option<R>>> {
        let (number, slot) = locate(id);
        Some(&self.segment(number)?.slots[slot].0)
    }
}

/// Where id `id` lives: segment number and slot.
fn locate(id: impl SequenceNumbered) -> (usize, usize) {
    // Sequence numbers start at 1; ids beyond the address space cannot have been issued.
    let sequence = usize::try_from(id.sequence() - 1).unwrap_or(usize::MAX);
    (sequence / SEGMENT_LEN, sequence % SEGMENT_LEN)
}

/// Positions of `ids` in ascending id order: visiting scattered ids (the players of a wave,
/// paired by rating) this way walks the table's memory forward, which the processor's
/// prefetcher streams ahead of the walk, instead of jumping at random and waiting for memory
/// at every record. A counting sort: linear, where a comparison sort of a million ids would
/// cost more than the work it orders.
pub(crate) fn ascending_order(ids: &[impl SequenceNumbered]) -> Vec<usize> {
    let (Some(lowest), Some(highest)) = (
        ids.iter().map(|id| id.sequence()).min(),
        ids.iter().map(|id| id.sequence()).max(),
    ) else {
        return Vec::new();
    };
    let span = usize::try_from(highest - lowest).unwrap_or(usize::MAX);
    if span > 4 * ids.len() + 1_024 {
        // Ids this far apart are few and old; a counter per id would cost more.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&position| ids[position].sequence());
        return order;
    }
    let offset = |position: usize| (ids[position].sequence() - lowest) as usize;
    let mut next = vec![0_u32; span + 2];
    for position in 0..ids.len() {
        next[offset(position) + 1] += 1;
    }
    for at in 1..next.len() {
        next[at] += next[at - 1];
    }
    let mut order = vec![0; ids.len()];
    for position in 0..ids.len() {
        let slot = &mut next[offset(position)];
        order[*slot as usize] = position;
        *slot += 1;
    }
    order
}

/// Records of type `R` by id of type `I`; see the module documentation.
#[derive(Debug)]
pub(crate) struct SequenceTable<I, R> {
    directory: ArcSwap<Directory<R>>,
    /// Serialises replacing the directory (adding and retiring segments).
    reshaping: Mutex<()>,
    ids: PhantomData<fn(I)>,
}

impl<I, R> Default for SequenceTable<I, R> {
    fn default() -> Self {
        Self {
            directory: ArcSwap::default(),
            reshaping: Mutex::default(),
            ids: PhantomData,
        }
    }
}

impl<I: SequenceNumbered, R: Clone> SequenceTable<I, R> {
    /// Reads record `id`, if held.
    pub(crate) fn read<T>(&self, id: I, read: impl FnOnce(&R) -> T) -> Option<T> {
        let directory = self.directory.load();
        let record = directory.slot(id)?.read();
        record.as_ref().map(read)
    }

    /// A copy of record `id`, if held.
    pub(crate) fn get(&self, id: I) -> Option<R> {
        self.read(id, R::clone)
    }

    /// Changes record `id` in place, if held.
    pub(crate) fn update<T>(&self, id: I, update: impl FnOnce(&mut R) -> T) -> Option<T> {
        let directory = self.directory.load();
        let mut record = directory.slot(id)?.write();
        record.as_mut().map(update)
    }

    /// Stores `record` as record `id`, replacing any record it had.
    pub(crate) fn insert(&self, id: I, record: R) {
        let (number, slot) = locate(id);
        self.fill_segment(number, 1, |segment| {
            usize::from(segment.slots[slot].0.write().replace(record).is_some())
        });
    }

    /// Inserts `count` records under consecutive ids from `first`, the `k`th made by
    /// `record(k)`: the directory is read and the records counted in once per segment rather
    /// than once per record (a wave's matches have consecutive ids).
    pub(crate) fn insert_run(&self, first: I, count: usize, mut record: impl FnMut(usize) -> R) {
        let mut done = 0;
        while done < count {
            let id = I::from_sequence(first.sequence() + done as u64)
                .expect("sequence numbers start at one");
            let (number, start) = locate(id);
            let here = (SEGMENT_LEN - start).min(count - done);
            self.fill_segment(number, here, |segment| {
                let mut replaced = 0;
                for (offset, slot) in segment.slots[start..start + here].iter().enumerate() {
                    if slot.0.write().replace(record(done + offset)).is_some() {
                        replaced += 1;
                    }
                }
                replaced
            });
            done += here;
        }
    }

    /// Counts `count` records into segment `number` (adding the segment if it is missing or
    /// retired), then lets `fill` store them; `fill` returns how many replaced a record that
    /// was already counted in.
    fn fill_segment(&self, number: usize, count: usize, fill: impl FnOnce(&Segment<R>) -> usize) {
        loop {
            let directory = self.directory.load();
            if let Some(segment) = directory.segment(number) {
                if segment.enter(count) {
                    let replaced = fill(segment);
                    if replaced > 0 {
                        // Never the last: they are among the `count` just counted in.
                        segment.leave(replaced);
                    }
                    return;
                }
            }
            drop(directory);
            self.add_segment(number);
        }
    }

    /// Removes record `id` if `condition` holds for it; returns the record removed.
    pub(crate) fn remove_if(&self, id: I, condition: impl FnOnce(&R) -> bool) -> Option<R> {
        let (number, slot) = locate(id);
        let directory = self.directory.load();
        let segment = directory.segment(number)?;
        let removed = {
            let mut record = segment.slots[slot].0.write();
            if !condition(record.as_ref()?) {
                return None;
            }
            record.take()
        };
        if segment.leave(1) {
            let segment = Arc::clone(segment);
            drop(directory);
            self.retire_if_empty(number, &segment);
        }
        removed
    }

    /// Changes records `ids` in place, in the order `order` gives; `update` gets each one's
    /// position in `ids` and the record (`None` if not held).
    pub(crate) fn update_in_order(
        &self,
        ids: &[I],
        order: &[usize],
        mut update: impl FnMut(usize, Option<&mut R>),
    ) {
        let directory = self.directory.load_full();
        for &position in order {
            match directory.slot(ids[position]) {
                Some(slot) => update(position, slot.write().as_mut()),
                None => update(position, None),
            }
        }
    }

    /// Calls `visit` with every record held, in id order. Records inserted or removed during
    /// the walk may or may not be seen; each record seen is seen whole.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(I, &R)) {
        let directory = self.directory.load_full();
        for (number, segment) in directory.segments.iter().enumerate() {
            let Some(segment) = segment else { continue };
            let first_sequence = (directory.first + number) * SEGMENT_LEN + 1;
            for (offset, slot) in segment.slots.iter().enumerate() {
                if let Some(record) = slot.0.read().as_ref() {
                    let id = I::from_sequence((first_sequence + offset) as u64)
                        .expect("sequence numbers start at one");
                    visit(id, record);
                }
            }
        }
    }

    /// Number of records held.
    pub(crate) fn len(&self) -> usize {
        self.directory
            .load()
            .segments
            .iter()
            .flatten()
            .map(|segment| match segment.live.load(Ordering::Acquire) {
                RETIRED => 0,
                live => live,
            })
            .sum()
    }

    /// Makes sure segment `number` exists and takes records.
    fn add_segment(&self, number: usize) {
        let _reshaping = self.reshaping.lock();
        let current = self.directory.load();
        if current
            .segment(number)
            .is_some_and(|segment| segment.live.load(Ordering::Acquire) != RETIRED)
        {
            return;
        }
        let mut directory = Directory::clone(&current);
        if directory.segments.iter().all(Option::is_none) {
            directory = Directory {
                first: number,
                segments: Vec::new(),
            };
        }
        if number < directory.first {
            let missing = directory.first - number;
            directory
                .segments
                .splice(0..0, std::iter::repeat_n(None, missing));
            directory.first = number;
        }
        let at = number - directory.first;
        if directory.segments.len() <= at {
            directory.segments.resize(at + 1, None);
        }
        directory.segments[at] = Some(Arc::new(Segment::new()));
        self.directory.store(Arc::new(directory));
    }

    /// Drops `segment` from the directory if it still holds nothing. Retiring is a
    /// compare-and-swap on its count, so an insert racing with it either counts itself in
    /// first (and the segment stays) or finds it retired (and adds a fresh one).
    fn retire_if_empty(&self, number: usize, segment: &Arc<Segment<R>>) {
        let _reshaping = self.reshaping.lock();
        if segment
            .live
            .compare_exchange(0, RETIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let current = self.directory.load();
        if !current
            .segment(number)
            .is_some_and(|held| Arc::ptr_eq(held, segment))
        {
            return;
        }
        let mut directory = Directory::clone(&current);
        directory.segments[number - directory.first] = None;
        let leading_gaps = directory
            .segments
            .iter()
            .take_while(|segment| segment.is_none())
            .count();
        directory.segments.drain(..leading_gaps);
        directory.first += leading_gaps;
        self.directory.store(Arc::new(directory));
    }
}

#[cfg(test)]
mod tests {
    use compact_str::format_compact;

    use super::*;
    use crate::index::{EntryState, TenantId};
    use crate::pools::PoolId;

    fn id(sequence: usize) -> EntryId {
        EntryId::new(sequence as u64).expect("non-zero")
    }

    fn record(n: usize) -> EntryRecord {
        EntryRecord {
            user: format_compact!("user-{n}"),
            joined_at_ms: n as u64,
            state: EntryState::Searching { previous: None },
            tenant: TenantId(0),
            pool: PoolId(0),
            rating: 1_500,
        }
    }

    fn segments(table: &EntryTable) -> usize {
        table.directory.load().segments.iter().flatten().count()
    }

    #[test]
    fn an_entry_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot<EntryRecord>>(), 64);
    }

    #[test]
    fn records_are_found_changed_and_removed_by_id() {
        let table = EntryTable::default();
        for n in [1, 2, SEGMENT_LEN, SEGMENT_LEN + 1, 5 * SEGMENT_LEN + 7] {
            table.insert(id(n), record(n));
        }
        assert_eq!(table.len(), 5);
        assert_eq!(
            table.get(id(SEGMENT_LEN + 1)),
            Some(record(SEGMENT_LEN + 1))
        );
        assert_eq!(table.get(id(3)), None);
        assert_eq!(table.get(id(100 * SEGMENT_LEN)), None);

        table.update(id(2), |record| record.rating = 1_234);
        assert_eq!(table.read(id(2), |record| record.rating), Some(1_234));
        assert_eq!(table.update(id(3), |record| record.rating = 1), None);

        assert_eq!(table.remove_if(id(1), |record| record.rating == 1), None);
        assert_eq!(table.remove_if(id(1), |_| true), Some(record(1)));
        assert_eq!(table.get(id(1)), None);
        assert_eq!(table.len(), 4);

        let mut seen = Vec::new();
        table.for_each(|id, record| seen.push((id.get(), record.joined_at_ms)));
        let expected: Vec<(u64, u64)> = [2, SEGMENT_LEN, SEGMENT_LEN + 1, 5 * SEGMENT_LEN + 7]
            .map(|n| (n as u64, n as u64))
            .to_vec();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_pass_in_order_visits_every_id_once_ascending() {
        let table = EntryTable::default();
        let held = [
            3 * SEGMENT_LEN + 1,
            1,
            2 * SEGMENT_LEN,
            2,
            3 * SEGMENT_LEN + 2,
        ];
        for n in held {
            table.insert(id(n), record(n));
        }
        let ids: Vec<EntryId> = held.iter().chain(&[7]).map(|&n| id(n)).collect();
        let mut visited = Vec::new();
        table.update_in_order(&ids, &ascending_order(&ids), |position, record| {
            visited.push((position, record.as_ref().map(|record| record.joined_at_ms)));
            if let Some(record) = record {
                record.rating = position as u16;
            }
        });
        assert!(visited.is_sorted_by_key(|&(position, _)| ids[position]));
        visited.sort_unstable();
        let expected: Vec<(usize, Option<u64>)> = held
            .iter()
            .map(|&n| Some(record(n).joined_at_ms))
            .chain([None])
            .enumerate()
            .collect();
        assert_eq!(visited, expected, "each id once, the one not held as None");
        for (position, &n) in held.iter().enumerate() {
            assert_eq!(
                table.read(id(n), |record| record.rating),
                Some(position as u16)
            );
        }
        assert_eq!(table.get(id(7)), None, "an id not held stays absent");
    }

    #[test]
    fn ids_far_apart_are_still_ordered() {
        let ids = [
            id(1),
            id(10_000 * SEGMENT_LEN),
            id(2),
            id(500 * SEGMENT_LEN),
        ];
        let order = ascending_order(&ids);
        assert_eq!(order, vec![0, 2, 3, 1]);
    }

    #[test]
    fn a_run_spans_segments_and_counts_each_record_once() {
        let table = EntryTable::default();
        let first = SEGMENT_LEN - 2;
        table.insert(id(first + 1), record(0));
        let mut made = Vec::new();
        table.insert_run(id(first), 5, |k| {
            made.push(k);
            record(first + k)
        });
        assert_eq!(made, vec![0, 1, 2, 3, 4], "each record made once, in order");
        assert_eq!(table.len(), 5, "the record replaced is counted once");
        for n in first..first + 5 {
            assert_eq!(table.get(id(n)), Some(record(n)));
        }
        // Emptying the new segment retires it, and a later run brings it back.
        for n in SEGMENT_LEN + 1..first + 5 {
            table.remove_if(id(n), |_| true);
        }
        assert_eq!(
            table.len(),
            3,
            "ids up to SEGMENT_LEN live in the first segment"
        );
        table.insert_run(id(SEGMENT_LEN + 1), 1, |_| record(7));
        assert_eq!(table.get(id(SEGMENT_LEN + 1)), Some(record(7)));
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn replacing_a_record_counts_it_once() {
        let table = EntryTable::default();
        table.insert(id(9), record(9));
        table.insert(id(9), record(10));
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(id(9)), Some(record(10)));
    }

    #[test]
    fn empty_segments_are_retired_and_come_back_when_needed() {
        let table = EntryTable::default();
        for n in 1..=3 * SEGMENT_LEN {
            table.insert(id(n), record(n));
        }
        assert_eq!(segments(&table), 3);
        for n in 1..=SEGMENT_LEN {
            table.remove_if(id(n), |_| true);
        }
        assert_eq!(segments(&table), 2);
        assert_eq!(table.directory.load().first, 1, "leading gaps are dropped");

        // A late insert into the retired range gets a fresh segment.
        table.insert(id(5), record(5));
        assert_eq!(table.get(id(5)), Some(record(5)));
        assert_eq!(segments(&table), 3);
        assert_eq!(table.len(), 2 * SEGMENT_LEN + 1);
    }

    #[test]
    fn concurrent_inserts_and_removals_lose_nothing() {
        let table = EntryTable::default();
        let per_thread = 2 * SEGMENT_LEN;
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let table = &table;
                scope.spawn(move || {
                    for n in 0..per_thread {
                        let sequence = 1 + n * 4 + thread;
                        table.insert(id(sequence), record(sequence));
                        // All but each thread's last record leave again, so segments keep
                        // emptying (and being retired) while other threads insert into them.
                        if n + 1 < per_thread {
                            assert!(table.remove_if(id(sequence), |_| true).is_some());
                        }
                    }
                });
            }
        });
        let mut held = Vec::new();
        table.for_each(|id, record| {
            assert_eq!(id.get(), record.joined_at_ms);
            held.push(id.get() as usize);
        });
        let last = (0..4).map(|thread| 1 + (per_thread - 1) * 4 + thread);
        assert_eq!(held, last.collect::<Vec<_>>());
        assert_eq!(table.len(), 4);
    }
}
