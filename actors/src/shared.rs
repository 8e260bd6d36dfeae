//! State shared by the matchmaker facade and every shard.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::challenges::ChallengeBook;
use crate::clock::{SharedClock, UnixMillis};
use crate::games::{GameCreator, GameJobs, RetryPolicy};
use crate::ids::{EntryId, IdSequence, MatchId};
use crate::index::{EntryRecord, EntryState, Index};
use crate::metrics::Metrics;
use crate::model::{Entry, Match, MatchEvent};
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
    /// Wakes the game dispatcher as soon as a wave schedules new jobs.
    pub(crate) game_jobs_ready: Notify,
    pub(crate) metrics: Metrics,
    pub(crate) game_creator: Arc<dyn GameCreator>,
    pub(crate) retry: RetryPolicy,
}

impl Shared {
    /// Whether anybody listens to the event stream (events are only built when somebody does).
    pub(crate) fn event_listeners(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub(crate) fn emit(&self, event: MatchEvent) {
        // An error only means every listener has gone; the event is not needed then.
        let _ = self.events.send(event);
    }

    /// The public view of entry `id` now.
    pub(crate) fn entry_view(&self, id: EntryId) -> Option<Entry> {
        let record = self.index.entries.get(&id)?.clone();
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
            EntryState::Searching => (now_ms, None),
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
        let record = self.index.matches.get(&id)?;
        Some(Match {
            match_id: id,
            pool: self.catalog.get(record.pool).spec.clone(),
            players: record.players.clone(),
            created_at_ms: record.created_at_ms,
            game_status: record.game_status,
            game_id: record.game_id.clone(),
        })
    }
}
