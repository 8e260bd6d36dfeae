//! State shared by the matchmaker facade and every shard.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::admission::Admission;
use crate::challenges::ChallengeBook;
use crate::change_log::ChangeLog;
use crate::clock::{SharedClock, UnixMillis};
use crate::error::MatchmakerError;
use crate::game_jobs::GameJobs;
use crate::games::GameCreator;
use crate::ids::{EntryId, IdSequence, MatchId};
use crate::index::{EntryRecord, EntryState, Index, QueueKey};
use crate::metrics::Metrics;
use crate::model::{Entry, Match, MatchEvent};
use crate::persist::{Change, Image};
use crate::pools::PoolCatalog;

/// Sequences of the three kinds of ids.
#[derive(Debug)]
pub(crate) struct Ids {
    pub(crate) entries: IdSequence,
    pub(crate) matches: IdSequence,
    pub(crate) challenges: IdSequence,
}

/// Everything the facade and the shards both need.
///
/// One `Arc` handed to every shard at start: the fields are either immutable (catalog,
/// policies), internally synchronised (index, books, sequences) or channels, so no lock wraps
/// the whole.
pub(crate) struct Shared {
    pub(crate) catalog: Arc<PoolCatalog>,
    pub(crate) clock: SharedClock,
    pub(crate) index: Index,
    pub(crate) challenges: ChallengeBook,
    pub(crate) games: GameJobs,
    pub(crate) ids: Ids,
    pub(crate) events: broadcast::Sender<MatchEvent>,
    /// Wakes the game dispatcher as soon as a wave schedules new jobs or an attempt frees its
    /// slot.
    pub(crate) game_jobs_ready: Notify,
    pub(crate) metrics: Metrics,
    pub(crate) game_creator: Arc<dyn GameCreator>,
    /// Where every change is journaled, when the engine persists. Appends are made by whoever
    /// made the change, right after making it, so the journal's order is the order of changes
    /// to each item.
    pub(crate) journal: Option<Arc<dyn ChangeLog>>,
    /// Whether a change is answered only once durable (fsync `always`).
    pub(crate) acknowledge_durable: bool,
    /// Refuses changes while the shards or the journal are behind; the shards report here
    /// what they have handled.
    pub(crate) admission: Admission,
}

impl Shared {
    /// Whether anybody listens to the event stream (events are only built when somebody does).
    pub(crate) fn event_listeners(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Refuses changes once the journal has failed: what is not journaled would be lost.
    pub(crate) fn writable(&self) -> Result<(), MatchmakerError> {
        match self.journal.as_ref().and_then(|journal| journal.failure()) {
            Some(failure) => Err(MatchmakerError::Persistence(failure)),
            None => Ok(()),
        }
    }

    /// Admits a change from a caller: refused once the journal has failed, or while the
    /// engine is behind (the shard of `queue`, when the change sends it a message, or the
    /// journal). Waves and other work of the engine's own are never refused this way.
    pub(crate) fn admit(&self, queue: Option<QueueKey>) -> Result<(), MatchmakerError> {
        self.writable()?;
        Ok(self.admission.admit(queue, self.journal.as_deref())?)
    }

    /// Journals one change made of the images `images` builds. They are built only when there
    /// is a journal: an engine that keeps everything in memory pays nothing for them on its
    /// hot paths. A failed append poisons the journal, which [`Self::writable`] then reports;
    /// it is logged here and never retried. No images, no change.
    pub(crate) fn record(&self, images: impl FnOnce() -> Vec<Image>) {
        let Some(journal) = &self.journal else {
            return;
        };
        let images = images();
        if images.is_empty() {
            return;
        }
        let change = Change {
            at_ms: self.clock.now_ms(),
            images,
        };
        if let Err(error) = journal.append(&change) {
            tracing::error!(%error, "journal append failed; changes are refused from now on");
        }
    }

    /// Waits until every change recorded so far is durable, when changes are acknowledged
    /// only once durable; returns at once otherwise.
    pub(crate) async fn durable(&self) -> Result<(), MatchmakerError> {
        let Some(journal) = self.journal.as_ref().filter(|_| self.acknowledge_durable) else {
            return Ok(());
        };
        let seq = journal.appended_seq();
        if seq == 0 || journal.durable_seq() >= seq {
            return Ok(());
        }
        journal
            .wait_durable(seq)
            .await
            .map_err(|error| MatchmakerError::Persistence(error.0))
    }

    pub(crate) fn emit(&self, event: MatchEvent) {
        // An error only means every listener has gone; the event is not needed then.
        let _ = self.events.send(event);
    }

    /// The public view of entry `id` now.
    pub(crate) fn entry_view(&self, id: EntryId) -> Option<Entry> {
        let record = self.index.entries.get(id)?;
        Some(self.entry_view_of(id, &record, self.clock.now_ms()))
    }

    /// The public view of `record` at `now_ms`.
    pub(crate) fn entry_view_of(
        &self,
        id: EntryId,
        record: &EntryRecord,
        now_ms: UnixMillis,
    ) -> Entry {
        let pool = self.catalog.get(record.pool);
        let (searched_until, found) = match record.state {
            EntryState::Searching { .. } => (now_ms, None),
            EntryState::Matched(match_id) => {
                let found = self.match_view(match_id);
                (
                    found.as_ref().map_or(now_ms, |found| found.created_at_ms),
                    found,
                )
            }
            EntryState::Cancelled { at_ms } | EntryState::Expired { at_ms } => (at_ms, None),
        };
        let wait_ms = searched_until.saturating_sub(record.joined_at_ms);
        Entry {
            id,
            user_id: record.user.clone(),
            pool: pool.spec.clone(),
            rating: record.rating,
            joined_at_ms: record.joined_at_ms,
            expires_at_ms: record.joined_at_ms.saturating_add(pool.params.max_wait_ms),
            status: record.state.status(),
            window: pool.params.window(wait_ms),
            wait_ms,
            found,
        }
    }

    /// The public view of match `id` now.
    pub(crate) fn match_view(&self, id: MatchId) -> Option<Match> {
        let record = self.index.matches.get(id)?;
        Some(Match {
            match_id: id,
            pool: self.catalog.get(record.pool).spec.clone(),
            players: self.index.match_players(&record)?,
            created_at_ms: record.created_at_ms,
            game_status: record.game_status,
            game_id: record.game_id.clone(),
        })
    }
}
