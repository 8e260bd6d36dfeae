//! Direct challenges: the state machine and the book that holds them.
//!
//! A challenge is `pending` until the opponent accepts or declines it, the challenger cancels
//! it, or it expires. Accepting is two steps, because creating the game means a call to the
//! live-game service: [`ChallengeBook::begin_accept`] moves it to an internal `accepting`
//! state that no other transition may touch, and [`ChallengeBook::finish_accept`] either
//! records the game or, when the service failed, puts the challenge back to `pending`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use compact_str::CompactString;
use dashmap::mapref::entry::Entry as MapEntry;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::ids::ChallengeId;
use crate::index::{FastMap, TenantId, UserKey};
use crate::model::{Challenge, ChallengeStatus, Color, ColorChoice};
use crate::pools::TimeControl;

/// Where a challenge stands, with what that state needs to remember.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChallengeState {
    /// Waiting for the opponent.
    Pending,
    /// The opponent accepted and the game is being created; shown as pending.
    Accepting,
    /// The game exists.
    Accepted {
        /// The game.
        game_id: CompactString,
        /// The challenger's color.
        challenger_color: Color,
    },
    /// Declined, cancelled or expired at a time.
    Closed {
        /// Which of the three.
        status: ChallengeStatus,
        /// When.
        at_ms: UnixMillis,
    },
}

/// One challenge as the book keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChallengeRecord {
    /// Whose challenge.
    pub tenant: TenantId,
    /// Who invites.
    pub challenger: CompactString,
    /// Who is invited.
    pub opponent: CompactString,
    /// Time control of the game.
    pub time_control: TimeControl,
    /// Variant of the game.
    pub variant: CompactString,
    /// Whether the game is rated.
    pub rated: bool,
    /// Color the challenger asked for.
    pub color: ColorChoice,
    /// Where it stands.
    pub state: ChallengeState,
    /// When it was made.
    pub created_at_ms: UnixMillis,
    /// When it expires if still pending.
    pub expires_at_ms: UnixMillis,
}

impl ChallengeRecord {
    /// The public status.
    pub(crate) fn status(&self) -> ChallengeStatus {
        match &self.state {
            ChallengeState::Pending | ChallengeState::Accepting => ChallengeStatus::Pending,
            ChallengeState::Accepted { .. } => ChallengeStatus::Accepted,
            ChallengeState::Closed { status, .. } => *status,
        }
    }

    /// The public view.
    pub(crate) fn view(&self, id: ChallengeId) -> Challenge {
        let (game_id, challenger_color) = match &self.state {
            ChallengeState::Accepted {
                game_id,
                challenger_color,
            } => (Some(game_id.clone()), Some(*challenger_color)),
            _ => (None, None),
        };
        Challenge {
            id,
            challenger_id: self.challenger.clone(),
            opponent_id: self.opponent.clone(),
            time_control: self.time_control,
            variant: self.variant.clone(),
            rated: self.rated,
            color: self.color,
            status: self.status(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            game_id,
            challenger_color,
        }
    }

    fn involves(&self, tenant: TenantId, user: &str) -> bool {
        self.tenant == tenant && (self.challenger == user || self.opponent == user)
    }
}

/// Why a challenge transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeRefusal {
    /// No such challenge for this caller (unknown, another tenant's, or not theirs).
    #[error("challenge not found")]
    NotFound,
    /// The caller takes part in the challenge but may not do this to it.
    #[error("only the {0} may do this")]
    WrongParty(&'static str),
    /// The challenge is no longer pending.
    #[error("challenge is {0:?}, not pending")]
    NotPending(ChallengeStatus),
    /// The challenge is being accepted right now.
    #[error("challenge is being accepted")]
    BeingAccepted,
    /// The challenger already has a pending challenge to this opponent.
    #[error("a pending challenge to this opponent exists: {0}")]
    Duplicate(ChallengeId),
    /// The challenger has sent, or the opponent has received, as many pending challenges as
    /// one user may have.
    #[error("the {party} already has {limit} pending challenges")]
    TooManyPending {
        /// `challenger` (outgoing challenges) or `opponent` (incoming ones).
        party: &'static str,
        /// The limit.
        limit: usize,
    },
}

/// How many pending challenges one user may have, so that no user (or client acting for
/// many) can grow the book, or another user's `active` view, without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeLimits {
    /// Pending challenges a user may have sent.
    pub max_outgoing: usize,
    /// Pending challenges a user may have received.
    pub max_incoming: usize,
}

impl Default for ChallengeLimits {
    fn default() -> Self {
        Self {
            max_outgoing: 20,
            max_incoming: 100,
        }
    }
}

/// Which side of a challenge a transition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Party {
    Challenger,
    Opponent,
}

impl Party {
    fn name(self) -> &'static str {
        match self {
            Self::Challenger => "challenger",
            Self::Opponent => "opponent",
        }
    }
}

/// Who acts on a challenge: a user of a tenant, as one of its two parties.
#[derive(Debug, Clone, Copy)]
struct Acting<'a> {
    tenant: TenantId,
    user: &'a str,
    party: Party,
}

/// Every challenge, plus per-user lists of pending ones.
///
/// The per-user lists make `incoming` and `outgoing` cheap and bound how many pending
/// challenges a user has; they may briefly hold ids of challenges that just stopped being
/// pending, so readers filter by state. The pending challenge of each challenger and opponent
/// sits in a map of its own, so refusing a duplicate is one lookup whatever the lists hold.
/// Deadlines sit in a heap so the expirer only looks at challenges that are due.
///
/// Lock order: `pending_pairs` → `outgoing` → `incoming` → `challenges`; nothing takes a
/// guard of a map while holding one of a map later in that order.
#[derive(Debug, Default)]
pub(crate) struct ChallengeBook {
    challenges: FastMap<ChallengeId, ChallengeRecord>,
    pending_pairs: FastMap<PairKey, ChallengeId>,
    outgoing: FastMap<UserKey, Vec<ChallengeId>>,
    incoming: FastMap<UserKey, Vec<ChallengeId>>,
    deadlines: Mutex<BinaryHeap<Reverse<(UnixMillis, ChallengeId)>>>,
    limits: ChallengeLimits,
}

/// A challenger and an opponent within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PairKey {
    tenant: TenantId,
    challenger: CompactString,
    opponent: CompactString,
}

impl ChallengeRecord {
    fn pair(&self) -> PairKey {
        PairKey {
            tenant: self.tenant,
            challenger: self.challenger.clone(),
            opponent: self.opponent.clone(),
        }
    }

    fn party(&self, party: Party) -> UserKey {
        UserKey {
            tenant: self.tenant,
            user: match party {
                Party::Challenger => self.challenger.clone(),
                Party::Opponent => self.opponent.clone(),
            },
        }
    }
}

impl ChallengeBook {
    /// An empty book enforcing `limits`.
    pub(crate) fn new(limits: ChallengeLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Adds a pending challenge unless the challenger already has one pending to the same
    /// opponent, or either party has as many pending challenges as [`ChallengeLimits`] allow.
    ///
    /// Every change calls `journal` with the new record before anyone else can change the
    /// challenge again (under the map's guard, or before the record is visible), so the journal
    /// holds a challenge's images in the order of its changes.
    pub(crate) fn create(
        &self,
        id: ChallengeId,
        record: ChallengeRecord,
        journal: impl FnOnce(&ChallengeRecord),
    ) -> Result<(), ChallengeRefusal> {
        let (challenger, opponent) = (
            record.party(Party::Challenger),
            record.party(Party::Opponent),
        );
        let expires_at_ms = record.expires_at_ms;
        let refused = {
            let pair = match self.pending_pairs.entry(record.pair()) {
                MapEntry::Occupied(existing) => {
                    return Err(ChallengeRefusal::Duplicate(*existing.get()));
                }
                MapEntry::Vacant(pair) => pair,
            };
            let mut sent = self.outgoing.entry(challenger.clone()).or_default();
            let mut received = self.incoming.entry(opponent.clone()).or_default();
            if sent.len() >= self.limits.max_outgoing {
                Some((Party::Challenger, self.limits.max_outgoing))
            } else if received.len() >= self.limits.max_incoming {
                Some((Party::Opponent, self.limits.max_incoming))
            } else {
                journal(&record);
                self.challenges.insert(id, record);
                sent.push(id);
                received.push(id);
                pair.insert(id);
                None
            }
        };
        if let Some((party, limit)) = refused {
            // The refusal may have made an empty list for the other party.
            self.outgoing
                .remove_if(&challenger, |_, ids| ids.is_empty());
            self.incoming.remove_if(&opponent, |_, ids| ids.is_empty());
            return Err(ChallengeRefusal::TooManyPending {
                party: party.name(),
                limit,
            });
        }
        self.deadlines.lock().push(Reverse((expires_at_ms, id)));
        Ok(())
    }

    /// The challenge `id` if `user` of `tenant` takes part in it.
    pub(crate) fn get(
        &self,
        id: ChallengeId,
        tenant: TenantId,
        user: &str,
    ) -> Option<ChallengeRecord> {
        self.challenges
            .get(&id)
            .filter(|record| record.involves(tenant, user))
            .map(|record| record.clone())
    }

    /// Moves a pending challenge `id` that `acting` may act on to `next`, and returns the
    /// record after the change. Closing transitions also clear the challenge from the per-user
    /// lists.
    fn transition(
        &self,
        id: ChallengeId,
        Acting {
            tenant,
            user,
            party,
        }: Acting<'_>,
        now_ms: UnixMillis,
        next: ChallengeState,
        journal: impl FnOnce(&ChallengeRecord),
    ) -> Result<ChallengeRecord, ChallengeRefusal> {
        let after = {
            let mut record = self
                .challenges
                .get_mut(&id)
                .filter(|record| record.involves(tenant, user))
                .ok_or(ChallengeRefusal::NotFound)?;
            let acting = match party {
                Party::Challenger => &record.challenger,
                Party::Opponent => &record.opponent,
            };
            if acting != user {
                return Err(ChallengeRefusal::WrongParty(party.name()));
            }
            match record.state {
                ChallengeState::Pending if now_ms >= record.expires_at_ms => {
                    record.state = ChallengeState::Closed {
                        status: ChallengeStatus::Expired,
                        at_ms: record.expires_at_ms,
                    };
                    journal(&record);
                    drop(record);
                    self.forget_pending(id);
                    return Err(ChallengeRefusal::NotPending(ChallengeStatus::Expired));
                }
                ChallengeState::Pending => {}
                ChallengeState::Accepting => return Err(ChallengeRefusal::BeingAccepted),
                _ => return Err(ChallengeRefusal::NotPending(record.status())),
            }
            record.state = next;
            journal(&record);
            record.clone()
        };
        if after.state != ChallengeState::Accepting {
            self.forget_pending(id);
        }
        Ok(after)
    }

    /// Opponent accepts: the challenge moves to `accepting` until [`Self::finish_accept`].
    pub(crate) fn begin_accept(
        &self,
        id: ChallengeId,
        tenant: TenantId,
        user: &str,
        now_ms: UnixMillis,
        journal: impl FnOnce(&ChallengeRecord),
    ) -> Result<ChallengeRecord, ChallengeRefusal> {
        self.transition(
            id,
            Acting {
                tenant,
                user,
                party: Party::Opponent,
            },
            now_ms,
            ChallengeState::Accepting,
            journal,
        )
    }

    /// Ends an accept: records the game, or puts the challenge back to pending when `game`
    /// is `None`. Returns the record after the change.
    pub(crate) fn finish_accept(
        &self,
        id: ChallengeId,
        game: Option<(CompactString, Color)>,
        journal: impl FnOnce(&ChallengeRecord),
    ) -> Option<ChallengeRecord> {
        let after = {
            let mut record = self.challenges.get_mut(&id)?;
            if record.state != ChallengeState::Accepting {
                return None;
            }
            record.state = match game {
                Some((game_id, challenger_color)) => ChallengeState::Accepted {
                    game_id,
                    challenger_color,
                },
                None => ChallengeState::Pending,
            };
            journal(&record);
            record.clone()
        };
        if after.state != ChallengeState::Pending {
            self.forget_pending(id);
        }
        Some(after)
    }

    /// Opponent declines or challenger cancels.
    pub(crate) fn close(
        &self,
        id: ChallengeId,
        tenant: TenantId,
        user: &str,
        party: Party,
        now_ms: UnixMillis,
        journal: impl FnOnce(&ChallengeRecord),
    ) -> Result<ChallengeRecord, ChallengeRefusal> {
        let status = match party {
            Party::Opponent => ChallengeStatus::Declined,
            Party::Challenger => ChallengeStatus::Cancelled,
        };
        self.transition(
            id,
            Acting {
                tenant,
                user,
                party,
            },
            now_ms,
            ChallengeState::Closed {
                status,
                at_ms: now_ms,
            },
            journal,
        )
    }

    /// Expires every pending challenge whose deadline is at or before `now_ms`; returns them.
    pub(crate) fn expire_due(
        &self,
        now_ms: UnixMillis,
        mut journal: impl FnMut(ChallengeId, &ChallengeRecord),
    ) -> Vec<(ChallengeId, ChallengeRecord)> {
        let mut due = Vec::new();
        {
            let mut deadlines = self.deadlines.lock();
            while let Some(&Reverse((at_ms, id))) = deadlines.peek() {
                if at_ms > now_ms {
                    break;
                }
                deadlines.pop();
                due.push(id);
            }
        }
        let mut expired = Vec::new();
        for id in due {
            let closed = self.challenges.get_mut(&id).and_then(|mut record| {
                (record.state == ChallengeState::Pending).then(|| {
                    record.state = ChallengeState::Closed {
                        status: ChallengeStatus::Expired,
                        at_ms: record.expires_at_ms,
                    };
                    journal(id, &record);
                    record.clone()
                })
            });
            match closed {
                Some(record) => {
                    self.forget_pending(id);
                    expired.push((id, record));
                }
                // Being accepted: look again later, in case the accept fails.
                None if self
                    .challenges
                    .get(&id)
                    .is_some_and(|record| record.state == ChallengeState::Accepting) =>
                {
                    self.deadlines.lock().push(Reverse((now_ms + 1, id)));
                }
                None => {}
            }
        }
        expired
    }

    /// Pending challenges where `user` of `tenant` plays `party`, oldest first.
    pub(crate) fn pending_for(&self, tenant: TenantId, user: &str, party: Party) -> Vec<Challenge> {
        let key = UserKey {
            tenant,
            user: user.into(),
        };
        let ids = self
            .lists(party)
            .get(&key)
            .map(|ids| ids.clone())
            .unwrap_or_default();
        let mut found: Vec<Challenge> = ids
            .into_iter()
            .filter_map(|id| {
                let record = self.challenges.get(&id)?;
                (record.status() == ChallengeStatus::Pending).then(|| record.view(id))
            })
            .collect();
        found.sort_by_key(|challenge| challenge.id);
        found
    }

    /// The per-user lists of pending challenges where users play `party`.
    fn lists(&self, party: Party) -> &FastMap<UserKey, Vec<ChallengeId>> {
        match party {
            Party::Challenger => &self.outgoing,
            Party::Opponent => &self.incoming,
        }
    }

    /// Every challenge, for a snapshot.
    pub(crate) fn all(&self) -> Vec<(ChallengeId, ChallengeRecord)> {
        self.challenges
            .iter()
            .map(|item| (*item.key(), item.value().clone()))
            .collect()
    }

    /// Puts back a challenge read from disk (before anything else uses the book). Limits are
    /// not applied: what was accepted before the restart stays.
    pub(crate) fn restore(&self, id: ChallengeId, record: ChallengeRecord) {
        if matches!(
            record.state,
            ChallengeState::Pending | ChallengeState::Accepting
        ) {
            self.pending_pairs.insert(record.pair(), id);
            for party in [Party::Challenger, Party::Opponent] {
                self.lists(party)
                    .entry(record.party(party))
                    .or_default()
                    .push(id);
            }
            self.deadlines
                .lock()
                .push(Reverse((record.expires_at_ms, id)));
        }
        self.challenges.insert(id, record);
    }

    /// Removes a challenge for good (retention).
    pub(crate) fn remove(&self, id: ChallengeId) {
        self.forget_pending(id);
        self.challenges.remove(&id);
    }

    fn forget_pending(&self, id: ChallengeId) {
        let Some(record) = self.challenges.get(&id).map(|record| record.clone()) else {
            return;
        };
        self.pending_pairs
            .remove_if(&record.pair(), |_, pending| *pending == id);
        for party in [Party::Challenger, Party::Opponent] {
            if let MapEntry::Occupied(mut slot) = self.lists(party).entry(record.party(party)) {
                slot.get_mut().retain(|other| *other != id);
                if slot.get().is_empty() {
                    slot.remove();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: TenantId = TenantId(0);

    fn id(n: u64) -> ChallengeId {
        ChallengeId::new(n).unwrap()
    }

    fn challenge(from: &str, to: &str, expires_at_ms: UnixMillis) -> ChallengeRecord {
        ChallengeRecord {
            tenant: TENANT,
            challenger: from.into(),
            opponent: to.into(),
            time_control: TimeControl::new(5, 3).unwrap(),
            variant: "standard".into(),
            rated: true,
            color: ColorChoice::Random,
            state: ChallengeState::Pending,
            created_at_ms: 0,
            expires_at_ms,
        }
    }

    fn listed(book: &ChallengeBook, user: &str, party: Party) -> Vec<ChallengeId> {
        book.pending_for(TENANT, user, party)
            .into_iter()
            .map(|challenge| challenge.id)
            .collect()
    }

    #[test]
    fn pending_challenges_are_listed_both_ways_and_duplicates_refused() {
        let book = ChallengeBook::default();
        book.create(id(1), challenge("alice", "bob", 100), |_| {})
            .unwrap();
        book.create(id(2), challenge("carol", "bob", 100), |_| {})
            .unwrap();
        assert_eq!(
            book.create(id(3), challenge("alice", "bob", 100), |_| {}),
            Err(ChallengeRefusal::Duplicate(id(1)))
        );
        book.create(id(4), challenge("bob", "alice", 100), |_| {})
            .unwrap();
        assert_eq!(listed(&book, "bob", Party::Opponent), vec![id(1), id(2)]);
        assert_eq!(listed(&book, "bob", Party::Challenger), vec![id(4)]);
        assert_eq!(listed(&book, "alice", Party::Challenger), vec![id(1)]);
        assert_eq!(listed(&book, "alice", Party::Opponent), vec![id(4)]);
        assert!(
            book.pending_for(TenantId(1), "bob", Party::Opponent)
                .is_empty(),
            "other tenants see nothing"
        );
    }

    #[test]
    fn pending_challenges_per_user_are_limited_both_ways() {
        let book = ChallengeBook::new(ChallengeLimits {
            max_outgoing: 2,
            max_incoming: 3,
        });
        let create =
            |n: u64, from: &str, to: &str| book.create(id(n), challenge(from, to, 100), |_| {});
        create(1, "alice", "bob").unwrap();
        create(2, "alice", "carol").unwrap();
        assert_eq!(
            create(3, "alice", "dave"),
            Err(ChallengeRefusal::TooManyPending {
                party: "challenger",
                limit: 2
            })
        );
        create(4, "erin", "bob").unwrap();
        create(5, "frank", "bob").unwrap();
        assert_eq!(
            create(6, "gina", "bob"),
            Err(ChallengeRefusal::TooManyPending {
                party: "opponent",
                limit: 3
            })
        );
        assert!(
            book.challenges.get(&id(3)).is_none() && book.challenges.get(&id(6)).is_none(),
            "a refusal stores nothing"
        );
        assert!(
            !book
                .outgoing
                .contains_key(&challenge("gina", "bob", 0).party(Party::Challenger)),
            "nor leaves an empty list behind"
        );
        assert!(
            !book
                .incoming
                .contains_key(&challenge("alice", "dave", 0).party(Party::Opponent))
        );
        // A challenge that stops being pending frees its place on both sides.
        book.close(id(1), TENANT, "bob", Party::Opponent, 10, |_| {})
            .unwrap();
        create(7, "alice", "dave").unwrap();
        create(8, "gina", "bob").unwrap();
        assert_eq!(
            listed(&book, "bob", Party::Opponent),
            vec![id(4), id(5), id(8)]
        );
        // The same pair may challenge again once the first challenge is over.
        book.close(id(2), TENANT, "alice", Party::Challenger, 10, |_| {})
            .unwrap();
        create(9, "alice", "carol").unwrap();
    }

    #[test]
    fn only_the_right_party_may_act() {
        let book = ChallengeBook::default();
        book.create(id(1), challenge("alice", "bob", 100), |_| {})
            .unwrap();
        assert_eq!(
            book.begin_accept(id(1), TENANT, "alice", 0, |_| {}),
            Err(ChallengeRefusal::WrongParty("opponent"))
        );
        assert_eq!(
            book.close(id(1), TENANT, "bob", Party::Challenger, 0, |_| {}),
            Err(ChallengeRefusal::WrongParty("challenger"))
        );
        assert_eq!(
            book.begin_accept(id(1), TENANT, "mallory", 0, |_| {}),
            Err(ChallengeRefusal::NotFound)
        );
        assert_eq!(
            book.begin_accept(id(1), TenantId(1), "bob", 0, |_| {}),
            Err(ChallengeRefusal::NotFound)
        );
        assert_eq!(
            book.get(id(1), TENANT, "bob").unwrap().status(),
            ChallengeStatus::Pending
        );
    }

    #[test]
    fn accept_records_the_game_and_a_failed_accept_stays_pending() {
        let book = ChallengeBook::default();
        book.create(id(1), challenge("alice", "bob", 100), |_| {})
            .unwrap();
        book.begin_accept(id(1), TENANT, "bob", 10, |_| {}).unwrap();
        assert_eq!(
            book.begin_accept(id(1), TENANT, "bob", 10, |_| {}),
            Err(ChallengeRefusal::BeingAccepted)
        );
        assert_eq!(
            book.close(id(1), TENANT, "alice", Party::Challenger, 10, |_| {}),
            Err(ChallengeRefusal::BeingAccepted)
        );
        assert_eq!(
            book.finish_accept(id(1), None, |_| {}).unwrap().state,
            ChallengeState::Pending
        );
        assert_eq!(listed(&book, "bob", Party::Opponent), vec![id(1)]);
        book.begin_accept(id(1), TENANT, "bob", 20, |_| {}).unwrap();
        let accepted = book
            .finish_accept(id(1), Some(("g_1".into(), Color::Black)), |_| {})
            .unwrap();
        assert_eq!(accepted.view(id(1)).game_id.as_deref(), Some("g_1"));
        assert_eq!(accepted.status(), ChallengeStatus::Accepted);
        assert!(listed(&book, "bob", Party::Opponent).is_empty());
        assert_eq!(
            book.close(id(1), TENANT, "bob", Party::Opponent, 30, |_| {}),
            Err(ChallengeRefusal::NotPending(ChallengeStatus::Accepted))
        );
    }

    #[test]
    fn decline_and_cancel_close_the_challenge() {
        let book = ChallengeBook::default();
        book.create(id(1), challenge("alice", "bob", 100), |_| {})
            .unwrap();
        book.create(id(2), challenge("alice", "carol", 100), |_| {})
            .unwrap();
        assert_eq!(
            book.close(id(1), TENANT, "bob", Party::Opponent, 5, |_| {})
                .unwrap()
                .status(),
            ChallengeStatus::Declined
        );
        assert_eq!(
            book.close(id(2), TENANT, "alice", Party::Challenger, 5, |_| {})
                .unwrap()
                .status(),
            ChallengeStatus::Cancelled
        );
        assert!(listed(&book, "alice", Party::Challenger).is_empty());
        assert_eq!(
            book.close(id(2), TENANT, "alice", Party::Challenger, 6, |_| {}),
            Err(ChallengeRefusal::NotPending(ChallengeStatus::Cancelled))
        );
        book.create(id(3), challenge("alice", "bob", 100), |_| {})
            .unwrap();
    }

    #[test]
    fn challenges_expire_at_their_deadline_and_cannot_be_accepted_after() {
        let book = ChallengeBook::default();
        book.create(id(1), challenge("alice", "bob", 100), |_| {})
            .unwrap();
        book.create(id(2), challenge("alice", "carol", 200), |_| {})
            .unwrap();
        assert!(book.expire_due(99, |_, _| {}).is_empty());
        let expired = book.expire_due(100, |_, _| {});
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, id(1));
        assert_eq!(
            book.begin_accept(id(1), TENANT, "bob", 100, |_| {}),
            Err(ChallengeRefusal::NotPending(ChallengeStatus::Expired))
        );
        // Past its deadline but before the expirer ran: refused and expired on the spot.
        assert_eq!(
            book.begin_accept(id(2), TENANT, "carol", 250, |_| {}),
            Err(ChallengeRefusal::NotPending(ChallengeStatus::Expired))
        );
        assert_eq!(
            book.get(id(2), TENANT, "alice").unwrap().status(),
            ChallengeStatus::Expired
        );
        assert!(
            book.expire_due(300, |_, _| {}).is_empty(),
            "already expired challenges are not reported twice"
        );
    }

    #[test]
    fn every_change_is_handed_to_the_journal_in_order() {
        let book = ChallengeBook::default();
        let journaled = std::cell::RefCell::new(Vec::new());
        let journal = |id: ChallengeId| {
            let journaled = &journaled;
            move |record: &ChallengeRecord| journaled.borrow_mut().push((id, record.status()))
        };
        book.create(id(1), challenge("alice", "bob", 100), journal(id(1)))
            .unwrap();
        book.create(id(2), challenge("alice", "carol", 100), journal(id(2)))
            .unwrap();
        book.create(id(3), challenge("alice", "dave", 100), journal(id(3)))
            .unwrap();
        // A refused duplicate journals nothing.
        assert!(
            book.create(id(4), challenge("alice", "bob", 100), journal(id(4)))
                .is_err()
        );
        book.begin_accept(id(1), TENANT, "bob", 10, journal(id(1)))
            .unwrap();
        book.finish_accept(id(1), Some(("g_1".into(), Color::White)), journal(id(1)))
            .unwrap();
        book.close(id(2), TENANT, "carol", Party::Opponent, 20, journal(id(2)))
            .unwrap();
        // Expired by a late accept: journaled too, not only the expirer's expiries.
        assert!(
            book.begin_accept(id(3), TENANT, "dave", 150, journal(id(3)))
                .is_err()
        );
        use ChallengeStatus::{Accepted, Declined, Expired, Pending};
        assert_eq!(
            journaled.into_inner(),
            vec![
                (id(1), Pending),
                (id(2), Pending),
                (id(3), Pending),
                (id(1), Pending),
                (id(1), Accepted),
                (id(2), Declined),
                (id(3), Expired),
            ]
        );
    }
}
