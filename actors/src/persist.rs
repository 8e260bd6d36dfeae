//! What the core writes to disk, and how it comes back.
//!
//! Every state change is journaled as one [`Change`]: the full new *images* of everything the
//! change touched (an entry, a match with its game job, a challenge, an idempotency key). Images
//! rather than deltas, because then replaying is "last image of each key wins", which makes a
//! snapshot taken while the engine keeps running ("fuzzy") safe: the journal is rotated first,
//! the state is captured after, and every change that the capture may have missed or half seen
//! is in the new segment and replayed over it. One change carries all the images of one
//! decision (a match and both its players), so a crash never leaves half of it on disk.
//!
//! Images name tenants and pools by their names, not by the process-local [`TenantId`] and
//! [`PoolId`](crate::pools::PoolId), so a snapshot survives a restart with an edited pools file.

use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::challenges::{ChallengeRecord, ChallengeState};
use crate::clock::UnixMillis;
use crate::games::GameJob;
use crate::ids::{ChallengeId, EntryId, MatchId};
use crate::index::{
    EntryRecord, EntryState, IdempotencyKey, MatchRecord, MatchSeat, Previous, QueueKey, Settled,
    StoredEntryState, TenantId, UserKey,
};
use crate::model::{ColorChoice, GameStatus, MatchPlayer};
use crate::pools::{PoolSpec, TimeControl};
use crate::shared::Shared;

/// One journal record: the images of everything one state change touched, applied together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// When the change was made; the newest one tells recovery when the engine stopped.
    pub at_ms: UnixMillis,
    /// The new images (none for a heartbeat).
    pub images: Vec<Image>,
}

/// The full state of one keyed item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Image {
    /// A queue entry.
    Entry(EntryImage),
    /// A match and its pending game job.
    Match(MatchImage),
    /// A challenge.
    Challenge(ChallengeImage),
    /// An idempotency key of an enqueue.
    IdempotencyKey(IdempotencyImage),
    /// The engine came back after being down for `downtime_ms`: every entry searching at this
    /// point of the journal had its waiting time shifted by that much, so that time spent down
    /// does not widen windows. Journaled rather than snapshotted at start, because a snapshot
    /// of a large state would delay readiness; only ever in the journal, never in a snapshot.
    /// Appended last so that older files decode unchanged.
    Resumed {
        /// How long the engine was down.
        downtime_ms: UnixMillis,
    },
}

/// A queue entry on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryImage {
    id: EntryId,
    tenant: CompactString,
    user: CompactString,
    pool: PoolSpec,
    rating: u16,
    joined_at_ms: UnixMillis,
    state: StoredEntryState,
}

/// A match on disk, with its game-creation job while the game is pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchImage {
    id: MatchId,
    tenant: CompactString,
    pool: PoolSpec,
    players: [MatchPlayer; 2],
    created_at_ms: UnixMillis,
    game_status: GameStatus,
    game_id: Option<CompactString>,
    job: Option<GameJob>,
}

/// A challenge on disk. An accept in progress is stored as pending: after a restart the
/// opponent accepts again, and the game request repeats under the same idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeImage {
    id: ChallengeId,
    tenant: CompactString,
    challenger: CompactString,
    opponent: CompactString,
    time_control: TimeControl,
    variant: CompactString,
    rated: bool,
    color: ColorChoice,
    state: ChallengeState,
    created_at_ms: UnixMillis,
    expires_at_ms: UnixMillis,
}

/// An idempotency key on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyImage {
    tenant: CompactString,
    user: CompactString,
    key: CompactString,
    entry: EntryId,
    at_ms: UnixMillis,
}

/// The body of a snapshot file: every live item, and where the id sequences stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// When the capture started.
    pub taken_at_ms: UnixMillis,
    /// Last entry, match and challenge sequence numbers handed out.
    pub last_ids: [u64; 3],
    /// Every item.
    pub images: Vec<Image>,
}

impl SnapshotBody {
    /// Counts of each kind of item, for snapshot headers and operators.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for image in &self.images {
            let kind = match image {
                Image::Entry(entry) if entry.state.is_searching() => "searching",
                Image::Entry(_) => "settled_entries",
                Image::Match(found) if found.game_status == GameStatus::Pending => "pending_games",
                Image::Match(_) => "matches",
                Image::Challenge(_) => "challenges",
                Image::IdempotencyKey(_) => "idempotency_keys",
                Image::Resumed { .. } => continue,
            };
            *counts.entry(kind.to_owned()).or_default() += 1;
        }
        counts
    }
}

impl Shared {
    fn tenant_name(&self, tenant: TenantId) -> CompactString {
        self.index.tenants.name(tenant)
    }

    /// The image of entry `id` as `record` describes it.
    pub(crate) fn entry_image(&self, id: EntryId, record: &EntryRecord) -> Image {
        Image::Entry(EntryImage {
            id,
            tenant: self.tenant_name(record.tenant),
            user: record.user.clone(),
            pool: self.catalog.get(record.pool).spec.clone(),
            rating: record.rating,
            joined_at_ms: record.joined_at_ms,
            state: record.state.into(),
        })
    }

    /// The image of match `id` as the index holds it now, with its job if one is pending.
    pub(crate) fn match_image(&self, id: MatchId) -> Option<Image> {
        let record = self.index.matches.get(id)?;
        self.match_image_of(id, &record)
    }

    /// The image of match `id` as `record` describes it, with its job if one is pending;
    /// `None` once its entries are being forgotten with it.
    fn match_image_of(&self, id: MatchId, record: &MatchRecord) -> Option<Image> {
        Some(Image::Match(MatchImage {
            id,
            tenant: self.tenant_name(record.tenant),
            pool: self.catalog.get(record.pool).spec.clone(),
            players: self.index.match_players(record)?,
            created_at_ms: record.created_at_ms,
            game_status: record.game_status,
            game_id: record.game_id.clone(),
            job: self.games.job(id),
        }))
    }

    /// The image of challenge `id` as `record` describes it.
    pub(crate) fn challenge_image(&self, id: ChallengeId, record: &ChallengeRecord) -> Image {
        let state = match &record.state {
            ChallengeState::Accepting => ChallengeState::Pending,
            state => state.clone(),
        };
        Image::Challenge(ChallengeImage {
            id,
            tenant: self.tenant_name(record.tenant),
            challenger: record.challenger.clone(),
            opponent: record.opponent.clone(),
            time_control: record.time_control,
            variant: record.variant.clone(),
            rated: record.rated,
            color: record.color,
            state,
            created_at_ms: record.created_at_ms,
            expires_at_ms: record.expires_at_ms,
        })
    }

    /// The image of an idempotency key.
    pub(crate) fn idempotency_image(
        &self,
        key: &IdempotencyKey,
        entry: EntryId,
        at_ms: UnixMillis,
    ) -> Image {
        Image::IdempotencyKey(IdempotencyImage {
            tenant: self.tenant_name(key.user.tenant),
            user: key.user.user.clone(),
            key: key.key.clone(),
            entry,
            at_ms,
        })
    }

    /// Everything live, for a snapshot. Safe while the engine runs, provided the journal was
    /// rotated before the call (see the module documentation).
    pub(crate) fn capture(&self) -> SnapshotBody {
        let taken_at_ms = self.clock.now_ms();
        let last_ids = [
            self.ids.entries.last(),
            self.ids.matches.last(),
            self.ids.challenges.last(),
        ];
        let mut images = Vec::with_capacity(self.index.entries.len());
        self.index
            .entries
            .for_each(|id, record| images.push(self.entry_image(id, record)));
        // Copied out first: a match's image reads its entries, and no entry may be read
        // while a match is held (the index's lock order).
        let mut matches = Vec::with_capacity(self.index.matches.len());
        self.index
            .matches
            .for_each(|id, record| matches.push((id, record.clone())));
        for (id, record) in &matches {
            images.extend(self.match_image_of(*id, record));
        }
        for (id, record) in self.challenges.all() {
            images.push(self.challenge_image(id, &record));
        }
        for item in &self.index.idempotency {
            let (entry, at_ms) = *item.value();
            images.push(self.idempotency_image(item.key(), entry, at_ms));
        }
        SnapshotBody {
            taken_at_ms,
            last_ids,
            images,
        }
    }
}

/// State read back from disk: the snapshot with the journal replayed over it, last image of
/// each key winning.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    entries: BTreeMap<EntryId, EntryImage>,
    matches: BTreeMap<MatchId, MatchImage>,
    challenges: BTreeMap<ChallengeId, ChallengeImage>,
    idempotency: HashMap<(CompactString, CompactString, CompactString), IdempotencyImage>,
    last_ids: [u64; 3],
    last_seen_ms: UnixMillis,
}

/// What recovery installed, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Entries searching again.
    pub searching: usize,
    /// Matches whose game is still to be created.
    pub pending_games: usize,
    /// Pending challenges.
    pub pending_challenges: usize,
    /// How far waiting times were shifted, so that time spent down does not count.
    pub downtime_ms: u64,
    /// Items dropped because their pool is no longer served.
    pub dropped_unknown_pool: usize,
}

/// What [`Restored::install`] did, and the decisions it had to finish, which the caller
/// journals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    /// Figures for logs and metrics.
    pub(crate) report: RestoreReport,
    /// Entries that recovery moved: players of a failed match whose return to the queue was
    /// not on disk. Only files from before a failure and its players' return were one record
    /// leave such entries.
    pub(crate) finished: Vec<(EntryId, EntryRecord)>,
}

impl Restored {
    /// Starts from a snapshot's body (or nothing).
    pub fn from_snapshot(body: Option<SnapshotBody>) -> Self {
        let mut restored = Self::default();
        if let Some(body) = body {
            restored.last_ids = body.last_ids;
            restored.last_seen_ms = body.taken_at_ms;
            for image in body.images {
                restored.apply_image(image);
            }
        }
        restored
    }

    /// Replays one journaled change.
    pub fn apply(&mut self, change: Change) {
        self.last_seen_ms = self.last_seen_ms.max(change.at_ms);
        for image in change.images {
            self.apply_image(image);
        }
    }

    fn apply_image(&mut self, image: Image) {
        match image {
            Image::Entry(entry) => {
                self.last_ids[0] = self.last_ids[0].max(entry.id.get());
                self.entries.insert(entry.id, entry);
            }
            Image::Match(found) => {
                self.last_ids[1] = self.last_ids[1].max(found.id.get());
                self.matches.insert(found.id, found);
            }
            Image::Challenge(challenge) => {
                self.last_ids[2] = self.last_ids[2].max(challenge.id.get());
                self.challenges.insert(challenge.id, challenge);
            }
            Image::IdempotencyKey(key) => {
                self.idempotency
                    .insert((key.tenant.clone(), key.user.clone(), key.key.clone()), key);
            }
            Image::Resumed { downtime_ms } => {
                for entry in self.entries.values_mut() {
                    if entry.state.is_searching() {
                        entry.joined_at_ms = entry.joined_at_ms.saturating_add(downtime_ms);
                    }
                }
            }
        }
    }

    /// When the engine last wrote anything: the newest change or snapshot.
    pub fn last_seen_ms(&self) -> UnixMillis {
        self.last_seen_ms
    }

    /// Puts everything into the (empty) shared state, before the actors start; shifts the
    /// waits of searching entries by the time the engine was down.
    pub(crate) fn install(self, shared: &Shared) -> Installed {
        let now_ms = shared.clock.now_ms();
        let mut report = RestoreReport {
            downtime_ms: if self.last_seen_ms == 0 {
                0
            } else {
                now_ms.saturating_sub(self.last_seen_ms)
            },
            ..RestoreReport::default()
        };
        let index = &shared.index;
        shared.ids.entries.observe(self.last_ids[0]);
        shared.ids.matches.observe(self.last_ids[1]);
        shared.ids.challenges.observe(self.last_ids[2]);
        let mut settled = Vec::new();

        for (id, found) in &self.matches {
            let Some(pool) = shared.catalog.resolve(&found.pool) else {
                report.dropped_unknown_pool += 1;
                continue;
            };
            let tenant = index.tenants.intern(&found.tenant);
            index.matches.insert(
                *id,
                MatchRecord {
                    tenant,
                    pool,
                    players: found.players.each_ref().map(|player| MatchSeat {
                        entry_id: player.entry_id,
                        rating: player.rating,
                        color: player.color,
                    }),
                    created_at_ms: found.created_at_ms,
                    game_status: found.game_status,
                    game_id: found.game_id.clone(),
                },
            );
            if found.game_status == GameStatus::Pending {
                report.pending_games += 1;
                let job = found.job.unwrap_or(GameJob {
                    failed_attempts: 0,
                    next_attempt_ms: now_ms,
                    in_flight: false,
                });
                shared.games.restore(QueueKey { tenant, pool }, *id, job);
            } else {
                settled.push((found.created_at_ms, Settled::Match(*id)));
            }
        }

        let mut unfinished = Vec::new();
        let mut finished = Vec::new();
        for (id, entry) in self.entries {
            let Some(pool) = shared.catalog.resolve(&entry.pool) else {
                report.dropped_unknown_pool += 1;
                continue;
            };
            let tenant = index.tenants.intern(&entry.tenant);
            let mut record = EntryRecord {
                user: entry.user,
                joined_at_ms: entry.joined_at_ms,
                state: entry.state.into(),
                tenant,
                pool,
                rating: entry.rating,
            };
            let previous = match entry.state {
                StoredEntryState::SearchingAfter(previous) => Previous::Known(previous),
                // Older files: entries come in id order, so the user's slot holds their entry
                // before this one, which gives this one its previous match.
                _ => Previous::FromUserSlot,
            };
            match record.state {
                EntryState::Searching { .. } => {
                    record.joined_at_ms = record.joined_at_ms.saturating_add(report.downtime_ms);
                    let user = record.user_key();
                    if index.claim(&user, id, record.clone(), previous).is_ok() {
                        report.searching += 1;
                        shared.metrics.searching(pool).inc();
                        continue;
                    }
                    // The files say a user searched twice at once, which the engine never
                    // journals: the older entry stands, and this one's end is journaled.
                    tracing::error!(entry = %id, "a second searching entry of one user; cancelled");
                    record.state = EntryState::Cancelled { at_ms: now_ms };
                    settled.push((now_ms, Settled::Entry(id)));
                    finished.push((id, record.clone()));
                }
                EntryState::Cancelled { at_ms } | EntryState::Expired { at_ms } => {
                    settled.push((at_ms, Settled::Entry(id)));
                }
                EntryState::Matched(match_id) if failed(&self.matches, match_id) => {
                    unfinished.push((id, match_id));
                }
                EntryState::Matched(_) => {}
            }
            let user = record.user_key();
            index.entries.insert(id, record);
            index.users.note_finished(&user, id, &index.entries);
        }

        // After every entry is in place, so that a player who queued again keeps that entry
        // and their entry of the failed match ends instead.
        for (id, match_id) in unfinished {
            let returned = index.return_to_searching(id, match_id).and_then(|_| {
                index.entries.update(id, |record| {
                    record.joined_at_ms = record.joined_at_ms.saturating_add(report.downtime_ms);
                    record.clone()
                })
            });
            if let Some(searching) = returned {
                report.searching += 1;
                shared.metrics.searching(searching.pool).inc();
                finished.push((id, searching));
                continue;
            }
            let cancelled = EntryState::Cancelled { at_ms: now_ms };
            if let Some(after) = index.supersede(id, match_id, cancelled) {
                settled.push((now_ms, Settled::Entry(id)));
                finished.push((id, after));
            }
        }

        for (id, challenge) in self.challenges {
            let tenant = index.tenants.intern(&challenge.tenant);
            match &challenge.state {
                ChallengeState::Pending | ChallengeState::Accepting => {
                    report.pending_challenges += 1;
                }
                ChallengeState::Accepted { .. } => {
                    settled.push((challenge.created_at_ms, Settled::Challenge(id)));
                }
                ChallengeState::Closed { at_ms, .. } => {
                    settled.push((*at_ms, Settled::Challenge(id)));
                }
            }
            shared.challenges.restore(
                id,
                ChallengeRecord {
                    tenant,
                    challenger: challenge.challenger,
                    opponent: challenge.opponent,
                    time_control: challenge.time_control,
                    variant: challenge.variant,
                    rated: challenge.rated,
                    color: challenge.color,
                    state: challenge.state,
                    created_at_ms: challenge.created_at_ms,
                    expires_at_ms: challenge.expires_at_ms,
                },
            );
        }

        for (_, image) in self.idempotency {
            let key = IdempotencyKey {
                user: UserKey {
                    tenant: index.tenants.intern(&image.tenant),
                    user: image.user,
                },
                key: image.key,
            };
            index
                .idempotency
                .insert(key.clone(), (image.entry, image.at_ms));
            settled.push((image.at_ms, Settled::IdempotencyKey(key)));
        }

        settled.sort_by_key(|(at_ms, _)| *at_ms);
        for (at_ms, what) in settled {
            index.settle(at_ms, what);
        }
        Installed { report, finished }
    }
}

/// Whether `match_id` is known and its game failed for good.
fn failed(matches: &BTreeMap<MatchId, MatchImage>, match_id: MatchId) -> bool {
    matches
        .get(&match_id)
        .is_some_and(|found| found.game_status == GameStatus::Failed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use matchwell_snapshots::{
        FaultyStorage, FsyncMode, Journal, JournalOptions, SnapshotOptions, SnapshotStore,
        read_segments,
    };

    use super::*;
    use crate::model::{ChallengeStatus, Color};

    fn one_of_each_image() -> Vec<Image> {
        let pool = PoolSpec::new(TimeControl::new(5, 3).unwrap(), "standard", true, None).unwrap();
        let entry = |id: u64, state: EntryState| {
            Image::Entry(EntryImage {
                id: EntryId::new(id).unwrap(),
                tenant: "acme".into(),
                user: format!("user-{id}").into(),
                pool: pool.clone(),
                rating: 1500,
                joined_at_ms: 1_000,
                state: state.into(),
            })
        };
        let match_id = MatchId::new(1).unwrap();
        let player = |id: u64, color: Color| MatchPlayer {
            user_id: format!("user-{id}").into(),
            rating: 1500,
            entry_id: EntryId::new(id).unwrap(),
            color,
        };
        let challenge = |id: u64, state: ChallengeState| {
            Image::Challenge(ChallengeImage {
                id: ChallengeId::new(id).unwrap(),
                tenant: "acme".into(),
                challenger: "erin".into(),
                opponent: "frank".into(),
                time_control: TimeControl::new(3, 2).unwrap(),
                variant: "chess960".into(),
                rated: false,
                color: ColorChoice::Black,
                state,
                created_at_ms: 2_000,
                expires_at_ms: 62_000,
            })
        };
        vec![
            entry(1, EntryState::Searching { previous: None }),
            entry(2, EntryState::Matched(match_id)),
            entry(3, EntryState::Cancelled { at_ms: 3_000 }),
            entry(4, EntryState::Expired { at_ms: 4_000 }),
            Image::Match(MatchImage {
                id: match_id,
                tenant: "acme".into(),
                pool: pool.clone(),
                players: [player(2, Color::White), player(5, Color::Black)],
                created_at_ms: 2_500,
                game_status: GameStatus::Pending,
                game_id: None,
                job: Some(GameJob {
                    failed_attempts: 2,
                    next_attempt_ms: 9_000,
                    in_flight: false,
                }),
            }),
            challenge(1, ChallengeState::Pending),
            challenge(2, ChallengeState::Accepting),
            challenge(
                3,
                ChallengeState::Accepted {
                    game_id: "game-7".into(),
                    challenger_color: Color::White,
                },
            ),
            challenge(
                4,
                ChallengeState::Closed {
                    status: ChallengeStatus::Declined,
                    at_ms: 5_000,
                },
            ),
            Image::IdempotencyKey(IdempotencyImage {
                tenant: "acme".into(),
                user: "user-1".into(),
                key: "k1".into(),
                entry: EntryId::new(1).unwrap(),
                at_ms: 1_000,
            }),
            Image::Resumed { downtime_ms: 600 },
        ]
    }

    #[test]
    fn every_image_round_trips_through_the_journal() {
        let storage = Arc::new(FaultyStorage::new(7));
        let journal = Journal::<Change>::open(
            storage.clone(),
            JournalOptions::with_fsync(FsyncMode::Always),
        )
        .unwrap();
        let changes: Vec<Change> = one_of_each_image()
            .into_iter()
            .enumerate()
            .map(|(n, image)| Change {
                at_ms: n as u64,
                images: vec![image],
            })
            .collect();
        for change in &changes {
            journal.append(change).unwrap();
        }
        journal.close().unwrap();
        let read: Vec<Change> = read_segments::<Change>(&*storage, 0)
            .unwrap()
            .records
            .into_iter()
            .map(|record| record.record)
            .collect();
        assert_eq!(read, changes);
    }

    #[test]
    fn a_snapshot_body_round_trips() {
        let storage = Arc::new(FaultyStorage::new(7));
        let store = SnapshotStore::open(storage, SnapshotOptions::default()).unwrap();
        let mut images = one_of_each_image();
        images.retain(|image| !matches!(image, Image::Resumed { .. }));
        let body = SnapshotBody {
            taken_at_ms: 6_000,
            last_ids: [5, 1, 4],
            images,
        };
        store.write(&body, 0, body.counts()).unwrap();
        let loaded = store.load_latest::<SnapshotBody>().unwrap().unwrap();
        assert_eq!(loaded.body, body);
        assert_eq!(loaded.header.summary.get("searching"), Some(&1));
        assert_eq!(loaded.header.summary.get("pending_games"), Some(&1));
    }

    #[test]
    fn a_resumption_shifts_only_the_entries_searching_at_that_point() {
        let mut restored = Restored::from_snapshot(None);
        let mut images = one_of_each_image();
        let resumed = images.pop().unwrap();
        restored.apply(Change { at_ms: 10, images });
        restored.apply(Change {
            at_ms: 20,
            images: vec![resumed],
        });
        let joined: Vec<(u64, UnixMillis)> = restored
            .entries
            .values()
            .map(|entry| (entry.id.get(), entry.joined_at_ms))
            .collect();
        assert_eq!(joined, vec![(1, 1_600), (2, 1_000), (3, 1_000), (4, 1_000)]);
        assert_eq!(restored.last_seen_ms(), 20);
    }
}
