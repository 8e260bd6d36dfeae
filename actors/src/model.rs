//! What the engine tells the outside world: entries, matches and challenges as plain values.
//!
//! These are snapshots taken at the moment of a lookup. The live state they are built from is
//! in [`crate::index`]; nothing here is shared or mutable.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::ids::{ChallengeId, EntryId, MatchId};
use crate::pools::{Pacing, PoolSpec, TimeControl};

/// Where a queue entry stands (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Waiting for an opponent.
    Searching,
    /// Paired; see the entry's match.
    Matched,
    /// Withdrawn by the player.
    Cancelled,
    /// Waited `max_wait` without an acceptable opponent.
    Expired,
}

/// A piece color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// Moves first.
    White,
    /// Moves second.
    Black,
}

impl Color {
    /// The other color.
    pub fn opposite(self) -> Self {
        match self {
            Self::White => Self::Black,
            Self::Black => Self::White,
        }
    }
}

/// Whether the live-game service has created a match's game (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GameStatus {
    /// Not created yet; the engine is trying.
    Pending,
    /// Created; the match has a game id.
    Created,
    /// Creation failed for good; the players were put back in the queue.
    Failed,
}

/// One queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its id.
    pub id: EntryId,
    /// The player.
    pub user_id: CompactString,
    /// The pool it waits in.
    pub pool: PoolSpec,
    /// The player's rating in this pool.
    pub rating: u16,
    /// When the player joined, shifted forward by any downtime of the engine so that waiting
    /// time only counts while the engine runs.
    pub joined_at_ms: UnixMillis,
    /// When the entry expires if still searching.
    pub expires_at_ms: UnixMillis,
    /// Where it stands.
    pub status: EntryStatus,
    /// Acceptable rating gap now (or when the entry stopped searching).
    pub window: u16,
    /// Time spent searching so far (or until the entry stopped searching), in milliseconds.
    pub wait_ms: u64,
    /// The match, once matched.
    #[serde(rename = "match")]
    pub found: Option<Match>,
}

/// One player of a match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchPlayer {
    /// The player.
    pub user_id: CompactString,
    /// Their rating when paired.
    pub rating: u16,
    /// The queue entry that was paired.
    pub entry_id: EntryId,
    /// The color they play.
    pub color: Color,
}

/// A pair formed by the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// Its id, also the idempotency key of its game creation.
    pub match_id: MatchId,
    /// The pool it came from.
    pub pool: PoolSpec,
    /// The two players, white first.
    pub players: [MatchPlayer; 2],
    /// When it was formed.
    pub created_at_ms: UnixMillis,
    /// Where game creation stands.
    pub game_status: GameStatus,
    /// The live game, once created.
    pub game_id: Option<CompactString>,
}

impl Match {
    /// Rating gap between the two players.
    pub fn rating_gap(&self) -> u16 {
        self.players[0].rating.abs_diff(self.players[1].rating)
    }

    /// The player `user_id`, if they play in this match.
    pub fn player(&self, user_id: &str) -> Option<&MatchPlayer> {
        self.players.iter().find(|player| player.user_id == user_id)
    }
}

/// Color the challenger asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorChoice {
    /// The challenger plays white.
    White,
    /// The challenger plays black.
    Black,
    /// Drawn when the challenge is accepted.
    #[default]
    Random,
}

/// Where a challenge stands (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStatus {
    /// Waiting for the opponent.
    Pending,
    /// Accepted; the game exists.
    Accepted,
    /// Declined by the opponent.
    Declined,
    /// Withdrawn by the challenger.
    Cancelled,
    /// Not answered in time.
    Expired,
}

/// A direct invitation from one player to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Its id, also the idempotency key of its game creation.
    pub id: ChallengeId,
    /// Who invites.
    pub challenger_id: CompactString,
    /// Who is invited.
    pub opponent_id: CompactString,
    /// Time control of the game.
    pub time_control: TimeControl,
    /// Variant of the game.
    pub variant: CompactString,
    /// Whether the game is rated.
    pub rated: bool,
    /// Color the challenger asked for.
    pub color: ColorChoice,
    /// Where it stands.
    pub status: ChallengeStatus,
    /// When it was made.
    pub created_at_ms: UnixMillis,
    /// When it expires if still pending.
    pub expires_at_ms: UnixMillis,
    /// The game, once accepted.
    pub game_id: Option<CompactString>,
    /// The challenger's color in the game, once accepted.
    pub challenger_color: Option<Color>,
}

/// Something that happened to a match, as the event stream reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MatchEvent {
    /// Two players were paired.
    Matched {
        /// The new match.
        #[serde(rename = "match")]
        found: Match,
    },
    /// The live-game service created the match's game.
    GameCreated {
        /// The match with its game id.
        #[serde(rename = "match")]
        found: Match,
    },
    /// Game creation failed for good; the players went back to the queue.
    GameFailed {
        /// The match.
        #[serde(rename = "match")]
        found: Match,
    },
    /// An entry waited `max_wait` without an acceptable opponent.
    Expired {
        /// The expired entry.
        entry: Entry,
    },
}

/// Everything one player has going on (the `active` view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveState {
    /// Their searching entry, if any.
    pub searching: Option<Entry>,
    /// Their most recent match, if any is remembered.
    pub recent_match: Option<Match>,
    /// Pending challenges addressed to them.
    pub incoming: Vec<Challenge>,
    /// Pending challenges they sent.
    pub outgoing: Vec<Challenge>,
}

/// Per-pool figures for operators (`/internal/queues/summary`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueSummary {
    /// The pool.
    pub pool: PoolSpec,
    /// Entries searching now.
    pub searching: usize,
    /// Longest current wait, in milliseconds.
    pub oldest_wait_ms: u64,
    /// Median current wait, in milliseconds.
    pub wait_p50_ms: u64,
    /// 95th percentile of current waits, in milliseconds.
    pub wait_p95_ms: u64,
    /// Matches formed in the last minute.
    pub matches_last_minute: u64,
    /// Mean rating gap of those matches (`None` without matches).
    pub mean_rating_gap: Option<f64>,
    /// Matches of the pool whose game is not created yet (its job runs or waits).
    pub pending_games: usize,
    /// 95th percentile of the waits of the players matched in the last minute, in
    /// milliseconds (`None` without matches): with `mean_rating_gap`, the trade-off the
    /// pool's pacing is getting.
    pub matched_wait_p95_ms: Option<u64>,
    /// How the pool paces its waves (`"pacing"`, and `"target_wait_ms"` for quality).
    #[serde(flatten)]
    pub pacing: Pacing,
    /// The pool's current estimate of its arrivals per second (`None` before any).
    pub arrivals_per_s: Option<f64>,
}
