//! The shared index: every entry, match and idempotency key, readable from any thread.
//!
//! Lookups by entry id or by user must not need a round trip through the shard actors (SPEC
//! §3), so the live state sits in concurrent structures that HTTP workers and embedding
//! callers read directly: entries and matches in dense tables by id
//! ([`crate::sequence_table`]), users, idempotency keys and watchers in hash maps
//! ([`dashmap`]). Writes follow one rule, which is what keeps the maps
//! consistent without a global lock: **an entry is created by the caller that enqueues it, and
//! only the shard that owns its pool moves it out of `searching` (or back into it)**. Callers
//! that want to cancel ask the shard.
//!
//! Lock order, to rule out deadlocks between maps: `idempotency` → `users` → `entries` →
//! `matches`. No code holds a guard of one map while taking a guard of a map earlier in that
//! order, and no code holds two guards of the same map.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use compact_str::CompactString;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::UnixMillis;
use crate::ids::{ChallengeId, EntryId, MatchId};
use crate::matching::Waiting;
use crate::model::{Color, EntryStatus, GameStatus, MatchPlayer};
use crate::pools::PoolId;
use crate::sequence_table::{EntryTable, MatchTable};

/// Hasher of every map in the index: fast, and seeded per process so that keys chosen by
/// clients cannot be crafted to collide.
pub(crate) type FastHasher = foldhash::fast::RandomState;

/// A concurrent map with [`FastHasher`].
pub(crate) type FastMap<K, V> = DashMap<K, V, FastHasher>;

/// Shards of the map that every enqueue writes, the users' latest entries: many more than the
/// threads writing it, so that two writers seldom wait on one shard lock, and each shard's
/// table is small, so that growing one rehashes little at a time instead of stalling a writer
/// on a large table.
const HOT_MAP_SHARDS: usize = 128;

/// An empty map sharded for heavy concurrent writes (see [`HOT_MAP_SHARDS`]).
fn hot_map<K: Eq + Hash, V>() -> FastMap<K, V> {
    DashMap::with_capacity_and_hasher_and_shard_amount(0, FastHasher::default(), HOT_MAP_SHARDS)
}

/// An interned tenant name: four bytes in every record instead of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId(pub u32);

/// Interns tenant names.
///
/// Every lookup resolves its tenant's name and every journaled change writes it, while a new
/// tenant appears rarely and is never forgotten. So the table is immutable behind an
/// [`ArcSwap`] and replaced whole (a copy) when a tenant is added: readers on different cores
/// take no lock and write no shared counter, so they never contend, and ids stay valid for
/// the life of the process. `adding` serialises the writers, so that two first uses of one
/// name get one id.
#[derive(Debug, Default)]
pub(crate) struct Tenants {
    table: ArcSwap<TenantTable>,
    adding: Mutex<()>,
}

/// Name → id and id → name; see [`Tenants`].
#[derive(Debug, Default, Clone)]
struct TenantTable {
    by_name: HashMap<CompactString, TenantId, FastHasher>,
    names: Vec<CompactString>,
}

impl Tenants {
    /// The id of `name`, creating it on first use.
    pub(crate) fn intern(&self, name: &str) -> TenantId {
        if let Some(id) = self.find(name) {
            return id;
        }
        let _adding = self.adding.lock();
        let current = self.table.load();
        if let Some(&id) = current.by_name.get(name) {
            return id;
        }
        let mut table = TenantTable::clone(&current);
        let id = TenantId(u32::try_from(table.names.len()).expect("fewer than 2^32 tenants"));
        table.names.push(name.into());
        table.by_name.insert(name.into(), id);
        self.table.store(Arc::new(table));
        id
    }

    /// The name of `id` (empty for an id this process never handed out).
    pub(crate) fn name(&self, id: TenantId) -> CompactString {
        self.table
            .load()
            .names
            .get(id.0 as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// The id of `name` if any entry, match or challenge ever used it.
    pub(crate) fn find(&self, name: &str) -> Option<TenantId> {
        self.table.load().by_name.get(name).copied()
    }
}

/// The queue of one pool within one tenant: the unit a shard owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueKey {
    /// Whose queue.
    pub tenant: TenantId,
    /// Which pool.
    pub pool: PoolId,
}

/// A user within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The user id.
    pub user: CompactString,
}

/// Where an entry stands, with what that state needs to remember.
///
/// On disk it is a [`StoredEntryState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredEntryState", into = "StoredEntryState")]
pub enum EntryState {
    /// Waiting in its shard's pool.
    Searching {
        /// The player's match before this search, if still remembered.
        previous: Option<PreviousMatch>,
    },
    /// Paired into this match.
    Matched(MatchId),
    /// Withdrawn at this time.
    Cancelled {
        /// When.
        at_ms: UnixMillis,
    },
    /// Expired at this time.
    Expired {
        /// When.
        at_ms: UnixMillis,
    },
}

/// A player's previous match, carried by their next entry while it searches: the wave that
/// pairs the entry reads it for fair colors without another lookup, and the `active` view
/// shows it as the recent match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousMatch {
    /// The match.
    pub match_id: MatchId,
    /// The player's color in it.
    pub color: Color,
}

impl EntryState {
    /// The public status.
    pub fn status(self) -> EntryStatus {
        match self {
            Self::Searching { .. } => EntryStatus::Searching,
            Self::Matched(_) => EntryStatus::Matched,
            Self::Cancelled { .. } => EntryStatus::Cancelled,
            Self::Expired { .. } => EntryStatus::Expired,
        }
    }

    /// Whether the entry waits in its pool.
    pub fn is_searching(self) -> bool {
        matches!(self, Self::Searching { .. })
    }
}

/// [`EntryState`] as journal records and snapshots store it.
///
/// A searching entry is stored with its previous match (`SearchingAfter`), which the engine
/// decided when the entry started searching, so that recovery installs that decision rather
/// than making one of its own. Files written before hold `Searching`, without it: recovery
/// then finds the previous match again from the user's earlier entry. New variants go last,
/// so that older files decode unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "EntryState")]
pub(crate) enum StoredEntryState {
    /// Searching, its previous match not stored (older files).
    Searching,
    /// Paired into this match.
    Matched(MatchId),
    /// Withdrawn at this time.
    Cancelled {
        /// When.
        at_ms: UnixMillis,
    },
    /// Expired at this time.
    Expired {
        /// When.
        at_ms: UnixMillis,
    },
    /// Searching, with the player's previous match as the engine decided it.
    SearchingAfter(Option<PreviousMatch>),
}

impl StoredEntryState {
    /// Whether the entry searches.
    pub(crate) fn is_searching(self) -> bool {
        matches!(self, Self::Searching | Self::SearchingAfter(_))
    }
}

impl From<StoredEntryState> for EntryState {
    fn from(stored: StoredEntryState) -> Self {
        match stored {
            StoredEntryState::Searching => Self::Searching { previous: None },
            StoredEntryState::SearchingAfter(previous) => Self::Searching { previous },
            StoredEntryState::Matched(id) => Self::Matched(id),
            StoredEntryState::Cancelled { at_ms } => Self::Cancelled { at_ms },
            StoredEntryState::Expired { at_ms } => Self::Expired { at_ms },
        }
    }
}

impl From<EntryState> for StoredEntryState {
    fn from(state: EntryState) -> Self {
        match state {
            EntryState::Searching { previous } => Self::SearchingAfter(previous),
            EntryState::Matched(id) => Self::Matched(id),
            EntryState::Cancelled { at_ms } => Self::Cancelled { at_ms },
            EntryState::Expired { at_ms } => Self::Expired { at_ms },
        }
    }
}

/// Where the previous match of an entry that starts searching comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Previous {
    /// The match of the user's latest entry, if it was matched: a new search.
    FromUserSlot,
    /// Already decided (recovery installs what the engine decided before the stop).
    Known(Option<PreviousMatch>),
}

/// One entry as the index keeps it: 56 bytes, because a million of them must fit in well under
/// 256 bytes each together with their map slots and their place in a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// The player.
    pub user: CompactString,
    /// When the player joined (shifted by downtime, see [`crate::model::Entry::joined_at_ms`]).
    pub joined_at_ms: UnixMillis,
    /// Where it stands.
    pub state: EntryState,
    /// Whose entry.
    pub tenant: TenantId,
    /// Which pool.
    pub pool: PoolId,
    /// The player's rating in the pool.
    pub rating: u16,
}

impl EntryRecord {
    /// The queue the entry belongs to.
    pub fn queue(&self) -> QueueKey {
        QueueKey {
            tenant: self.tenant,
            pool: self.pool,
        }
    }

    /// How the entry's pool keeps it while it searches.
    pub fn waiting(&self, id: EntryId) -> Waiting {
        Waiting {
            id,
            joined_at_ms: self.joined_at_ms,
            last_color: match self.state {
                EntryState::Searching { previous } => previous.map(|previous| previous.color),
                _ => None,
            },
        }
    }

    /// The user who owns the entry.
    pub fn user_key(&self) -> UserKey {
        UserKey {
            tenant: self.tenant,
            user: self.user.clone(),
        }
    }
}

/// One match as the index keeps it.
///
/// Its players are named by their entries, not by user: a wave then writes its matches
/// without reading the users from the entries first (a cache miss per player in a pass of its
/// own), and copies no user id per player. A match's entries live as long as it does: they
/// are forgotten with it (see `Matchmaker::prune`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRecord {
    /// Whose match.
    pub tenant: TenantId,
    /// Which pool.
    pub pool: PoolId,
    /// White first.
    pub players: [MatchSeat; 2],
    /// When it was formed.
    pub created_at_ms: UnixMillis,
    /// Where game creation stands.
    pub game_status: GameStatus,
    /// The game, once created.
    pub game_id: Option<CompactString>,
}

/// One player of a [`MatchRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchSeat {
    /// The queue entry that was paired, which names the user.
    pub entry_id: EntryId,
    /// Their rating when paired.
    pub rating: u16,
    /// The color they play.
    pub color: Color,
}

/// An idempotency key as the caller scoped it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct IdempotencyKey {
    /// Who sent it.
    pub user: UserKey,
    /// The key itself.
    pub key: CompactString,
}

/// Something that stopped changing and is to be forgotten after the retention period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    Entry(EntryId),
    Match(MatchId),
    Challenge(ChallengeId),
    IdempotencyKey(IdempotencyKey),
}

/// Each user's latest entry, of which at most one may be searching.
///
/// A user's slot keeps pointing at their entry after it stops searching (a wave does not
/// touch it, which keeps pairing cheap), until the user enqueues again or the entry is
/// forgotten: so the slot also answers "what did this user do last" for the `active` view, and
/// hands a new entry its player's previous match.
///
/// Keyed by a 64-bit hash of the user id rather than the id itself: the primary map then holds
/// 24-byte slots instead of 40-byte ones, which is what keeps a million waiting players under
/// the memory budget. The entry record holds the real user id, so a hash collision is detected
/// by comparing against it, and the colliding user goes to `overflow`, keyed by the full id.
/// Every operation on a user first locks that user's primary slot, which serialises all
/// changes for one user across both maps.
#[derive(Debug)]
pub(crate) struct UserEntries<S = foldhash::quality::RandomState> {
    primary: FastMap<(TenantId, u64), EntryId>,
    overflow: FastMap<UserKey, EntryId>,
    /// Whether `overflow` may hold anything: an atomic, because asking a `DashMap` whether it
    /// is empty locks every one of its shards, and this question is asked on every enqueue.
    overflow_used: AtomicBool,
    user_hasher: S,
}

impl Default for UserEntries {
    fn default() -> Self {
        Self::with_user_hasher(foldhash::quality::RandomState::default())
    }
}

/// A user already has a searching entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlreadySearching(pub(crate) EntryId);

/// What a user's slot points at, as far as a new claim cares.
enum Occupant {
    /// The user's own searching entry.
    Searching,
    /// Another user's searching entry (their ids' hashes collide).
    CollidingSearching,
    /// The user's own entry, no longer searching; it was matched in this match, if any.
    Done(Option<MatchId>),
    /// Nothing that matters any more: forgotten, or another user's finished entry.
    Stale,
}

impl<S: BuildHasher> UserEntries<S> {
    pub(crate) fn with_user_hasher(user_hasher: S) -> Self {
        Self {
            primary: hot_map(),
            overflow: FastMap::default(),
            overflow_used: AtomicBool::new(false),
            user_hasher,
        }
    }

    fn slot(&self, user: &UserKey) -> (TenantId, u64) {
        (user.tenant, self.user_hasher.hash_one(user.user.as_str()))
    }

    fn occupant(user: &UserKey, occupant: EntryId, entries: &EntryTable) -> Occupant {
        entries
            .read(occupant, |record| {
                match (record.user == user.user, record.state) {
                    (true, EntryState::Searching { .. }) => Occupant::Searching,
                    (false, EntryState::Searching { .. }) => Occupant::CollidingSearching,
                    (true, EntryState::Matched(match_id)) => Occupant::Done(Some(match_id)),
                    (true, _) => Occupant::Done(None),
                    (false, _) => Occupant::Stale,
                }
            })
            .unwrap_or(Occupant::Stale)
    }

    /// Records `id` as `user`'s latest entry and inserts its record as searching, unless the
    /// user already has a searching entry. The new entry carries the match of the user's
    /// previous entry, if that one was matched. Returns the record as inserted.
    pub(crate) fn claim(
        &self,
        user: &UserKey,
        id: EntryId,
        mut record: EntryRecord,
        previous: Previous,
        entries: &EntryTable,
        matches: &MatchTable,
    ) -> Result<EntryRecord, AlreadySearching> {
        // Held to the end: it serialises every change for this user.
        let slot = self.primary.entry(self.slot(user));
        let latest_match = match &slot {
            MapEntry::Occupied(occupied) => {
                let occupant = *occupied.get();
                match Self::occupant(user, occupant, entries) {
                    Occupant::Searching => return Err(AlreadySearching(occupant)),
                    Occupant::CollidingSearching => {
                        return self.claim_overflow(user, id, record, previous, entries);
                    }
                    Occupant::Done(Some(match_id)) => Some((match_id, occupant)),
                    Occupant::Done(None) | Occupant::Stale => None,
                }
            }
            MapEntry::Vacant(_) => None,
        };
        self.claim_overflow_free(user, entries)?;
        let previous = match previous {
            Previous::FromUserSlot => {
                latest_match.and_then(|(match_id, entry)| previous_match(matches, match_id, entry))
            }
            Previous::Known(previous) => previous,
        };
        record.state = EntryState::Searching { previous };
        entries.insert(id, record.clone());
        slot.insert(id);
        Ok(record)
    }

    /// Fails when `user` has a searching entry in `overflow` (from a time their primary slot
    /// was taken by a colliding user); an overflow slot whose entry stopped searching is freed.
    fn claim_overflow_free(
        &self,
        user: &UserKey,
        entries: &EntryTable,
    ) -> Result<(), AlreadySearching> {
        if !self.overflow_used.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.overflow.entry(user.clone()) {
            MapEntry::Occupied(slot) => {
                let occupant = *slot.get();
                if let Occupant::Searching = Self::occupant(user, occupant, entries) {
                    return Err(AlreadySearching(occupant));
                }
                slot.remove();
                Ok(())
            }
            MapEntry::Vacant(_) => Ok(()),
        }
    }

    fn claim_overflow(
        &self,
        user: &UserKey,
        id: EntryId,
        mut record: EntryRecord,
        previous: Previous,
        entries: &EntryTable,
    ) -> Result<EntryRecord, AlreadySearching> {
        self.overflow_used.store(true, Ordering::Release);
        let slot = self.overflow.entry(user.clone());
        if let MapEntry::Occupied(occupied) = &slot {
            let occupant = *occupied.get();
            if let Occupant::Searching = Self::occupant(user, occupant, entries) {
                return Err(AlreadySearching(occupant));
            }
        }
        // Colliding users are rare enough not to look for their previous match.
        let previous = match previous {
            Previous::FromUserSlot => None,
            Previous::Known(previous) => previous,
        };
        record.state = EntryState::Searching { previous };
        entries.insert(id, record.clone());
        slot.insert(id);
        Ok(record)
    }

    /// Puts `record`, the entry `id` matched in `match_id`, back to searching if it is still
    /// `user`'s latest entry: a user who queued again since (whatever became of that search)
    /// has moved on, and the old entry does not come back. So the entry a user searches with is
    /// always their latest one, which is what lets recovery find a user's latest entry by id
    /// alone. Returns the record as inserted.
    pub(crate) fn reclaim(
        &self,
        user: &UserKey,
        id: EntryId,
        match_id: MatchId,
        mut record: EntryRecord,
        entries: &EntryTable,
        matches: &MatchTable,
    ) -> Option<EntryRecord> {
        // Held to the end: it serialises every change for this user.
        let slot = self.primary.get(&self.slot(user));
        let latest = *slot.as_deref()? == id
            || (self.overflow_used.load(Ordering::Acquire)
                && self.overflow.get(user).is_some_and(|latest| *latest == id));
        if !latest {
            return None;
        }
        record.state = EntryState::Searching {
            previous: previous_match(matches, match_id, id),
        };
        entries.insert(id, record.clone());
        Some(record)
    }

    /// Records `id`, an entry that no longer searches, as `user`'s latest entry unless the
    /// user's slot already holds a searching entry or one of another user. For recovery,
    /// which installs entries in id order.
    pub(crate) fn note_finished(&self, user: &UserKey, id: EntryId, entries: &EntryTable) {
        match self.primary.entry(self.slot(user)) {
            MapEntry::Occupied(mut slot) => {
                if let Occupant::Done(_) | Occupant::Stale =
                    Self::occupant(user, *slot.get(), entries)
                {
                    slot.insert(id);
                }
            }
            MapEntry::Vacant(slot) => {
                slot.insert(id);
            }
        }
    }

    /// `user`'s latest entry and its record, if still held (callers check its state).
    pub(crate) fn latest(
        &self,
        user: &UserKey,
        entries: &EntryTable,
    ) -> Option<(EntryId, EntryRecord)> {
        let primary = self.primary.get(&self.slot(user)).map(|id| *id);
        if let Some(id) = primary {
            if let Some(record) = entries.get(id).filter(|record| record.user == user.user) {
                return Some((id, record));
            }
        }
        if !self.overflow_used.load(Ordering::Acquire) {
            return None;
        }
        let id = self.overflow.get(user).map(|id| *id)?;
        Some((id, entries.get(id)?))
    }

    /// Forgets `id` as `user`'s latest entry (a no-op if the user has moved on to another).
    pub(crate) fn release(&self, user: &UserKey, id: EntryId) {
        if self
            .primary
            .remove_if(&self.slot(user), |_, occupant| *occupant == id)
            .is_none()
            && self.overflow_used.load(Ordering::Acquire)
        {
            self.overflow.remove_if(user, |_, occupant| *occupant == id);
        }
    }
}

/// The match `match_id` as the previous match of the player whose entry was `entry`.
fn previous_match(
    matches: &MatchTable,
    match_id: MatchId,
    entry: EntryId,
) -> Option<PreviousMatch> {
    matches
        .read(match_id, |found| {
            found
                .players
                .iter()
                .find(|player| player.entry_id == entry)
                .map(|player| PreviousMatch {
                    match_id,
                    color: player.color,
                })
        })
        .flatten()
}

/// Settled items by `(time, arrival)`; see [`Index::settle`].
#[derive(Debug, Default)]
pub(crate) struct SettledQueue {
    items: BTreeMap<(UnixMillis, u64), Settled>,
    arrivals: u64,
}

/// The index itself.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) tenants: Tenants,
    pub(crate) entries: EntryTable,
    pub(crate) users: UserEntries,
    pub(crate) matches: MatchTable,
    pub(crate) idempotency: FastMap<IdempotencyKey, (EntryId, UnixMillis)>,
    /// Version counters for the entries somebody is watching (SSE streams); only watched
    /// entries have one.
    watchers: FastMap<EntryId, watch::Sender<u64>>,
    /// Number of watched entries, so that a change of an unwatched entry (the common case)
    /// costs one atomic load rather than a map lookup.
    watched: AtomicUsize,
    /// What settled when, for the retention sweep: ordered by time (then by arrival), because
    /// items do not settle in time order (an entry expires at the end of its wait, found by a
    /// sweep later), and a sweep must take everything due whatever came before it.
    settled: Mutex<SettledQueue>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            tenants: Tenants::default(),
            entries: EntryTable::default(),
            users: UserEntries::default(),
            matches: MatchTable::default(),
            idempotency: FastMap::default(),
            watchers: FastMap::default(),
            watched: AtomicUsize::new(0),
            settled: Mutex::default(),
        }
    }
}

impl Index {
    /// Inserts `record` as entry `id`, searching, unless its user has a searching entry; see
    /// [`UserEntries::claim`].
    pub(crate) fn claim(
        &self,
        user: &UserKey,
        id: EntryId,
        record: EntryRecord,
        previous: Previous,
    ) -> Result<EntryRecord, AlreadySearching> {
        self.users
            .claim(user, id, record, previous, &self.entries, &self.matches)
    }

    /// Moves a searching entry to `state`. Returns the record as it was, or `None` if the
    /// entry was not searching.
    pub(crate) fn leave_searching(&self, id: EntryId, state: EntryState) -> Option<EntryRecord> {
        let before = self.entries.update(id, |record| {
            record.state.is_searching().then(|| {
                let before = record.clone();
                record.state = state;
                before
            })
        })??;
        self.notify(id);
        Some(before)
    }

    /// Returns an entry to `searching` after its match failed, if its user has not queued
    /// again meanwhile (see [`UserEntries::reclaim`]). Returns the record on success.
    pub(crate) fn return_to_searching(
        &self,
        id: EntryId,
        match_id: MatchId,
    ) -> Option<EntryRecord> {
        let record = self
            .entries
            .get(id)
            .filter(|record| record.state == EntryState::Matched(match_id))?;
        // Under the user's slot lock, which is what makes "one searching entry per user" hold
        // against a concurrent enqueue.
        let searching = self.users.reclaim(
            &record.user_key(),
            id,
            match_id,
            record,
            &self.entries,
            &self.matches,
        )?;
        self.notify(id);
        Some(searching)
    }

    /// Ends an entry matched in `match_id` in `state` (a final one) when it cannot return to
    /// searching because its user searches again. Returns the record after the change.
    pub(crate) fn supersede(
        &self,
        id: EntryId,
        match_id: MatchId,
        state: EntryState,
    ) -> Option<EntryRecord> {
        let after = self
            .entries
            .update(id, |record| {
                (record.state == EntryState::Matched(match_id)).then(|| {
                    record.state = state;
                    record.clone()
                })
            })
            .flatten()?;
        self.notify(id);
        Some(after)
    }

    /// The players of `record` with their users, read from their entries; `None` if an
    /// entry is already forgotten (the match is being forgotten with it).
    pub(crate) fn match_players(&self, record: &MatchRecord) -> Option<[MatchPlayer; 2]> {
        let player = |seat: &MatchSeat| {
            Some(MatchPlayer {
                user_id: self
                    .entries
                    .read(seat.entry_id, |entry| entry.user.clone())?,
                rating: seat.rating,
                entry_id: seat.entry_id,
                color: seat.color,
            })
        };
        Some([player(&record.players[0])?, player(&record.players[1])?])
    }

    /// Forgets entry `id` if `condition` holds for it, and its user's slot if it points there.
    pub(crate) fn forget_entry(&self, id: EntryId, condition: impl FnOnce(&EntryRecord) -> bool) {
        if let Some(record) = self.entries.remove_if(id, condition) {
            self.users.release(&record.user_key(), id);
        }
    }

    /// Subscribes to changes of entry `id`.
    pub(crate) fn watch(&self, id: EntryId) -> watch::Receiver<u64> {
        self.watchers
            .entry(id)
            .or_insert_with(|| {
                self.watched.fetch_add(1, Ordering::AcqRel);
                watch::channel(0).0
            })
            .subscribe()
    }

    /// Drops the change counter of `id` once nobody watches it.
    pub(crate) fn unwatch(&self, id: EntryId) {
        if self
            .watchers
            .remove_if(&id, |_, sender| sender.receiver_count() == 0)
            .is_some()
        {
            self.watched.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Tells watchers of `id` that it changed.
    pub(crate) fn notify(&self, id: EntryId) {
        if self.watched.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(sender) = self.watchers.get(&id) {
            sender.send_modify(|version| *version += 1);
        }
    }

    /// Remembers that `what` settled at `at_ms`.
    pub(crate) fn settle(&self, at_ms: UnixMillis, what: Settled) {
        let mut settled = self.settled.lock();
        settled.arrivals += 1;
        let arrival = settled.arrivals;
        settled.items.insert((at_ms, arrival), what);
    }

    /// Removes everything that settled at or before `cutoff_ms`; returns what it removed,
    /// oldest first.
    pub(crate) fn take_settled(&self, cutoff_ms: UnixMillis) -> Vec<Settled> {
        let mut settled = self.settled.lock();
        let later = match cutoff_ms.checked_add(1) {
            Some(after) => settled.items.split_off(&(after, 0)),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut settled.items, later)
            .into_values()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    /// A hasher under which every user id collides.
    #[derive(Default, Clone)]
    struct Colliding;

    impl BuildHasher for Colliding {
        type Hasher = ConstantHasher;
        fn build_hasher(&self) -> ConstantHasher {
            ConstantHasher
        }
    }

    struct ConstantHasher;

    impl Hasher for ConstantHasher {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    fn key(user: &str) -> UserKey {
        UserKey {
            tenant: TenantId(0),
            user: user.into(),
        }
    }

    fn record(user: &str) -> EntryRecord {
        EntryRecord {
            user: user.into(),
            joined_at_ms: 0,
            state: EntryState::Searching { previous: None },
            tenant: TenantId(0),
            pool: PoolId(0),
            rating: 1500,
        }
    }

    fn id(n: u64) -> EntryId {
        EntryId::new(n).unwrap()
    }

    fn exercise<S: BuildHasher>(users: UserEntries<S>) {
        let entries = EntryTable::default();
        let matches = MatchTable::default();
        let find = |user: &str| users.latest(&key(user), &entries).map(|(id, _)| id);
        let claim = |user: &str, n: u64| {
            users
                .claim(
                    &key(user),
                    id(n),
                    record(user),
                    Previous::FromUserSlot,
                    &entries,
                    &matches,
                )
                .map(|_| ())
        };
        assert_eq!(claim("alice", 1), Ok(()));
        assert_eq!(claim("bob", 2), Ok(()));
        assert_eq!(claim("alice", 3), Err(AlreadySearching(id(1))));
        assert_eq!(claim("bob", 4), Err(AlreadySearching(id(2))));
        assert!(
            entries.get(id(3)).is_none() && entries.get(id(4)).is_none(),
            "a refused claim inserts nothing"
        );
        assert_eq!(find("alice"), Some(id(1)));
        assert_eq!(find("bob"), Some(id(2)));
        assert_eq!(find("carol"), None);

        // Alice stops searching; her slot still names that entry, Bob must still be found and
        // still be refused a second entry.
        entries.update(id(1), |record| {
            record.state = EntryState::Cancelled { at_ms: 1 }
        });
        assert_eq!(find("alice"), Some(id(1)));
        assert_eq!(find("bob"), Some(id(2)));
        assert_eq!(claim("bob", 5), Err(AlreadySearching(id(2))));
        assert_eq!(claim("alice", 6), Ok(()));
        assert_eq!(find("alice"), Some(id(6)));

        // Forgetting an old entry keeps the newer one.
        entries.update(id(2), |record| {
            record.state = EntryState::Expired { at_ms: 2 }
        });
        assert_eq!(claim("bob", 7), Ok(()));
        users.release(&key("bob"), id(2));
        assert_eq!(find("bob"), Some(id(7)));
        users.release(&key("bob"), id(7));
        assert_eq!(find("bob"), None);
    }

    #[test]
    fn a_new_entry_carries_its_players_previous_match() {
        let index = Index::default();
        index
            .claim(
                &key("alice"),
                id(1),
                record("alice"),
                Previous::FromUserSlot,
            )
            .unwrap();
        index
            .claim(&key("bob"), id(2), record("bob"), Previous::FromUserSlot)
            .unwrap();
        let match_id = MatchId::new(9).unwrap();
        let player = |n: u64, color| MatchSeat {
            rating: 1500,
            entry_id: id(n),
            color,
        };
        index.matches.insert(
            match_id,
            MatchRecord {
                tenant: TenantId(0),
                pool: PoolId(0),
                players: [player(2, Color::White), player(1, Color::Black)],
                created_at_ms: 0,
                game_status: GameStatus::Pending,
                game_id: None,
            },
        );
        for n in [1, 2] {
            index.leave_searching(id(n), EntryState::Matched(match_id));
        }
        let again = index
            .claim(
                &key("alice"),
                id(3),
                record("alice"),
                Previous::FromUserSlot,
            )
            .unwrap();
        assert_eq!(
            again.state,
            EntryState::Searching {
                previous: Some(PreviousMatch {
                    match_id,
                    color: Color::Black
                })
            }
        );
        assert_eq!(
            index
                .users
                .latest(&key("bob"), &index.entries)
                .map(|(id, _)| id),
            Some(id(2))
        );
    }

    #[test]
    fn one_searching_entry_per_user() {
        exercise(UserEntries::default());
    }

    #[test]
    fn one_searching_entry_per_user_when_every_user_id_collides() {
        exercise(UserEntries::with_user_hasher(Colliding));
    }

    #[test]
    fn tenants_are_interned_once() {
        let tenants = Tenants::default();
        let a = tenants.intern("acme");
        assert_eq!(tenants.intern("acme"), a);
        let b = tenants.intern("globex");
        assert_ne!(a, b);
        assert_eq!(tenants.find("globex"), Some(b));
        assert_eq!(tenants.find("initech"), None);
    }

    #[test]
    fn entry_record_stays_small() {
        assert_eq!(std::mem::size_of::<EntryRecord>(), 56);
    }

    #[test]
    fn settled_items_leave_in_time_order_whatever_order_they_came_in() {
        let index = Index::default();
        index.settle(10, Settled::Entry(id(1)));
        index.settle(30, Settled::Entry(id(3)));
        index.settle(20, Settled::Entry(id(2)));
        index.settle(10, Settled::Entry(id(4)));
        assert_eq!(
            index.take_settled(25),
            vec![
                Settled::Entry(id(1)),
                Settled::Entry(id(4)),
                Settled::Entry(id(2))
            ]
        );
        assert_eq!(index.take_settled(25), vec![]);
        assert_eq!(index.take_settled(u64::MAX), vec![Settled::Entry(id(3))]);
    }
}
