//! The matchmaker: the one object through which callers use the core.
//!
//! It validates requests, writes new entries and challenges to the shared index, sends the
//! shards what they must know, answers lookups straight from the index, and drives the work
//! that is not a shard's: game creation, challenge expiry and retention.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use dashmap::mapref::entry::Entry as MapEntry;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{broadcast, oneshot, watch};

use crate::admission::{Admission, OverloadLimits};
use crate::challenges::{ChallengeBook, ChallengeLimits, ChallengeRecord, ChallengeState, Party};
use crate::change_log::ChangeLog;
use crate::clock::{SharedClock, SystemClock, UnixMillis};
use crate::error::{
    MAX_IDEMPOTENCY_KEY_LEN, MAX_TENANT_LEN, MAX_USER_ID_LEN, MatchmakerError, check_name,
};
use crate::game_dispatch;
use crate::game_jobs::GameJobs;
use crate::games::{
    GameCreator, GamePlayer, GameRequest, LiveGameHealth, LocalGameIds, RetryPolicy,
};
use crate::ids::{ChallengeId, EntryId, IdSequence};
use crate::index::{
    EntryRecord, EntryState, IdempotencyKey, Index, Previous, QueueKey, Settled, TenantId, UserKey,
};
use crate::metrics::Metrics;
use crate::model::{
    ActiveState, Challenge, Color, ColorChoice, Entry, EntryStatus, GameStatus, MatchEvent,
    QueueSummary,
};
use crate::persist::{Image, Installed, Restored, SnapshotBody};
use crate::pools::{MAX_RATING, PoolCatalog, PoolSpec, TimeControl};
use crate::router::{ActorSystem, ActorsStopped, RouteSummary, RouteTick};
use crate::shard::{
    Cancel, DueWork, Enqueue, QueueFigures, RunDue, ShardTimers, Summarize, TickCounts,
};
use crate::shared::{Ids, Shared};

/// How the matchmaker runs.
#[derive(Clone)]
pub struct MatchmakerConfig {
    /// The pools it serves.
    pub catalog: Arc<PoolCatalog>,
    /// Its time source.
    pub clock: SharedClock,
    /// Number of pool-shard actors (each on its own thread; default [`default_shards`]).
    pub shards: usize,
    /// What the shards do on their own timers.
    pub timers: ShardTimers,
    /// How long settled entries, matches and challenges stay readable.
    pub retention: Duration,
    /// How game creation is paced and retried.
    pub retry: RetryPolicy,
    /// Seed of every random choice (colors), so runs on a manual clock repeat exactly.
    pub seed: u64,
    /// Who creates games.
    pub game_creator: Arc<dyn GameCreator>,
    /// Where metrics go.
    pub metrics: Metrics,
    /// Challenge lifetime when the request does not give one.
    pub default_challenge_ttl: Duration,
    /// Longest challenge lifetime a request may ask for.
    pub max_challenge_ttl: Duration,
    /// How many pending challenges one user may have sent and received.
    pub challenge_limits: ChallengeLimits,
    /// Ids this matchmaker hands out come after this number: 0 for a single engine; a cluster
    /// gives each partition a range of its own (see [`partition_id_base`]), so that an id
    /// names its partition and match ids stay unique across the cluster.
    pub id_base: u64,
    /// Capacity of the event stream; a listener that falls further behind skips events.
    pub event_capacity: usize,
    /// Where changes are journaled; `None` keeps everything in memory only.
    pub journal: Option<Arc<dyn ChangeLog>>,
    /// Answer changes only once the journal has them on disk (fsync `always`).
    pub acknowledge_durable: bool,
    /// State read back from disk, installed before the actors start.
    pub restored: Option<Restored>,
    /// How far behind the shards and the journal may fall before changes are refused.
    pub overload: OverloadLimits,
}

impl MatchmakerConfig {
    /// Defaults for `catalog`: system clock, [`default_shards`], no timers, local
    /// game ids, one hour of retention.
    pub fn new(catalog: PoolCatalog) -> Self {
        let metrics = Metrics::unregistered(&catalog);
        Self {
            catalog: Arc::new(catalog),
            clock: Arc::new(SystemClock::new()),
            shards: default_shards(),
            timers: ShardTimers::default(),
            retention: Duration::from_secs(3_600),
            retry: RetryPolicy::default(),
            seed: 0,
            game_creator: Arc::new(LocalGameIds),
            metrics,
            default_challenge_ttl: Duration::from_secs(120),
            max_challenge_ttl: DEFAULT_MAX_CHALLENGE_TTL,
            challenge_limits: ChallengeLimits::default(),
            id_base: 0,
            event_capacity: 4_096,
            journal: None,
            acknowledge_durable: false,
            restored: None,
            overload: OverloadLimits::default(),
        }
    }
}

/// Longest challenge lifetime a request may ask for unless configured otherwise
/// ([`MatchmakerConfig::max_challenge_ttl`]); the OpenAPI document states it.
pub const DEFAULT_MAX_CHALLENGE_TTL: Duration = Duration::from_secs(86_400);

/// Bits of an id below its partition: each partition has 2^40 ids of each kind.
const PARTITION_ID_BITS: u32 = 40;

/// One shard per two cores: the HTTP workers (one per core) and the journal's writer share the
/// cores with the shards, and on a small machine a single shard, which hosts the router too,
/// handles a write with one hop between threads instead of two (measured on 2 cores: the
/// server's CPU per request of the enqueue-status-cancel round falls by about a tenth).
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().div_ceil(2))
}

/// The first id of partition `partition`'s range, less one: ids of that partition are
/// `partition_id_base(partition) + 1` and up.
pub fn partition_id_base(partition: u32) -> u64 {
    u64::from(partition) << PARTITION_ID_BITS
}

/// The partition whose range holds id number `id`.
pub fn partition_of_id(id: u64) -> u32 {
    u32::try_from(id.saturating_sub(1) >> PARTITION_ID_BITS).unwrap_or(u32::MAX)
}

/// A request to join a pool's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueRequest {
    /// The tenant.
    pub tenant: CompactString,
    /// The player.
    pub user_id: CompactString,
    /// The pool to join.
    pub pool: PoolSpec,
    /// The player's rating, 0 to 4000.
    pub rating: u16,
    /// Makes retries safe: the same key from the same user yields the same entry.
    pub idempotency_key: Option<CompactString>,
}

/// A request to challenge another player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRequest {
    /// The tenant.
    pub tenant: CompactString,
    /// Who challenges.
    pub challenger_id: CompactString,
    /// Who is challenged.
    pub opponent_id: CompactString,
    /// Time control of the game.
    pub time_control: TimeControl,
    /// Variant of the game.
    pub variant: CompactString,
    /// Whether the game is rated.
    pub rated: bool,
    /// Color the challenger asks for.
    pub color: ColorChoice,
    /// Lifetime; the configured default when `None`.
    pub expires_in: Option<Duration>,
}

/// What one manual tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Waves, pairs and expired entries across all shards.
    pub queues: TickCounts,
    /// Challenges that expired.
    pub expired_challenges: usize,
    /// Game-creation attempts made (and finished).
    pub game_attempts: usize,
    /// Settled records forgotten.
    pub pruned: usize,
}

/// Subscription to the changes of one entry; dropping it ends the subscription.
pub struct EntryWatch {
    shared: Arc<Shared>,
    id: EntryId,
    changes: watch::Receiver<u64>,
}

impl EntryWatch {
    /// The entry now.
    pub fn current(&self) -> Option<Entry> {
        self.shared.entry_view(self.id)
    }

    /// Waits for the next change; `false` when the engine has stopped.
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}

impl Drop for EntryWatch {
    fn drop(&mut self) {
        // Replace our receiver first so that the count the index checks no longer includes it.
        let (_, closed) = watch::channel(0);
        drop(std::mem::replace(&mut self.changes, closed));
        self.shared.index.unwatch(self.id);
    }
}

/// The matchmaking core.
pub struct Matchmaker {
    shared: Arc<Shared>,
    actors: ActorSystem,
    /// Draws colors of challenges that ask for `random`.
    challenge_rng: Mutex<ChaCha8Rng>,
    retention_ms: u64,
    default_challenge_ttl: Duration,
    max_challenge_ttl: Duration,
}

impl Matchmaker {
    /// Starts the shard and router actors on their own threads.
    pub fn start(config: MatchmakerConfig) -> std::io::Result<Self> {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let admission = Admission::new(config.overload, config.shards, &config.metrics);
        let shared = Arc::new(Shared {
            catalog: config.catalog,
            clock: config.clock,
            index: Index::default(),
            challenges: ChallengeBook::new(config.challenge_limits),
            games: GameJobs::new(config.retry, config.seed, config.metrics.clone()),
            ids: Ids {
                entries: IdSequence::starting_after(config.id_base),
                matches: IdSequence::starting_after(config.id_base),
                challenges: IdSequence::starting_after(config.id_base),
            },
            events,
            game_jobs_ready: tokio::sync::Notify::new(),
            metrics: config.metrics,
            game_creator: config.game_creator,
            journal: config.journal,
            acknowledge_durable: config.acknowledge_durable,
            admission,
        });
        if let Some(restored) = config.restored {
            let Installed { report, finished } = restored.install(&shared);
            tracing::info!(
                searching = report.searching,
                pending_games = report.pending_games,
                pending_challenges = report.pending_challenges,
                downtime_ms = report.downtime_ms,
                dropped_unknown_pool = report.dropped_unknown_pool,
                finished = finished.len(),
                "state recovered"
            );
            // Before the actors start, so it precedes every change made from now on. The
            // shift comes first: it applies to what searched before, and the images after it
            // are already shifted.
            shared.record(|| {
                (report.downtime_ms > 0)
                    .then_some(Image::Resumed {
                        downtime_ms: report.downtime_ms,
                    })
                    .into_iter()
                    .chain(
                        finished
                            .iter()
                            .map(|(id, record)| shared.entry_image(*id, record)),
                    )
                    .collect()
            });
        }
        let actors = ActorSystem::start(
            Arc::clone(&shared),
            config.shards,
            config.seed,
            config.timers,
        )?;
        let matchmaker = Self {
            shared,
            actors,
            challenge_rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0xC4A1_1E46E)),
            retention_ms: u64::try_from(config.retention.as_millis()).unwrap_or(u64::MAX),
            default_challenge_ttl: config.default_challenge_ttl,
            max_challenge_ttl: config.max_challenge_ttl,
        };
        // What recovery brought back that the retention period already let go of, as the
        // engine before the stop would have by now.
        matchmaker.prune();
        Ok(matchmaker)
    }

    /// The pools served.
    pub fn catalog(&self) -> &PoolCatalog {
        &self.shared.catalog
    }

    /// The clock in use.
    pub fn now_ms(&self) -> UnixMillis {
        self.shared.clock.now_ms()
    }

    /// Joins a pool's queue.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<Entry, MatchmakerError> {
        check_name("tenant", &request.tenant, MAX_TENANT_LEN)?;
        check_name("user_id", &request.user_id, MAX_USER_ID_LEN)?;
        if let Some(key) = &request.idempotency_key {
            check_name("idempotency_key", key, MAX_IDEMPOTENCY_KEY_LEN)?;
        }
        if request.rating > MAX_RATING {
            return Err(MatchmakerError::invalid(
                "rating",
                format!("must be from 0 to {MAX_RATING}"),
            ));
        }
        let pool = self
            .shared
            .catalog
            .resolve(&request.pool)
            .ok_or_else(|| MatchmakerError::UnknownPool(request.pool.to_string()))?;
        self.shared.writable()?;
        let tenant = self.shared.index.tenants.intern(&request.tenant);
        let user = UserKey {
            tenant,
            user: request.user_id,
        };
        let now_ms = self.now_ms();
        let record = EntryRecord {
            user: user.user.clone(),
            joined_at_ms: now_ms,
            state: EntryState::Searching { previous: None },
            tenant,
            pool,
            rating: request.rating,
        };
        let created = match request.idempotency_key {
            None => self.create_entry(&user, record, None)?,
            Some(key) => {
                let index = &self.shared.index;
                match index.idempotency.entry(IdempotencyKey {
                    user: user.clone(),
                    key,
                }) {
                    MapEntry::Occupied(slot) => {
                        let earlier = slot.get().0;
                        drop(slot);
                        let same_request = index.entries.read(earlier, |first| {
                            first.pool == pool && first.rating == request.rating
                        });
                        if same_request == Some(false) {
                            return Err(MatchmakerError::IdempotencyKeyReused);
                        }
                        // The first request may still be on its way to disk.
                        self.shared.durable().await?;
                        return self
                            .shared
                            .entry_view(earlier)
                            .ok_or(MatchmakerError::NotFound);
                    }
                    MapEntry::Vacant(slot) => {
                        let created = self.create_entry(&user, record, Some(slot.key()))?;
                        let settled_key = slot.key().clone();
                        slot.insert((created.0, now_ms));
                        index.settle(now_ms, Settled::IdempotencyKey(settled_key));
                        created
                    }
                }
            }
        };
        let (id, record) = created;
        self.shared.metrics.enqueues.inc();
        self.shared.admission.sent(record.queue());
        self.actors.router().do_send(Enqueue {
            queue: record.queue(),
            rating: record.rating,
            waiting: record.waiting(id),
        });
        self.shared.durable().await?;
        Ok(self.shared.entry_view_of(id, &record, now_ms))
    }

    /// Creates the entry if the user has none searching and the engine is not behind, and
    /// journals it together with the idempotency key that names it.
    fn create_entry(
        &self,
        user: &UserKey,
        record: EntryRecord,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<(EntryId, EntryRecord), MatchmakerError> {
        self.shared.admit(Some(record.queue()))?;
        let id =
            EntryId::new(self.shared.ids.entries.next().get()).expect("sequences never yield zero");
        let index = &self.shared.index;
        match index.claim(user, id, record, Previous::FromUserSlot) {
            Ok(record) => {
                self.shared.record(|| {
                    let mut images = vec![self.shared.entry_image(id, &record)];
                    if let Some(key) = idempotency_key {
                        images.push(self.shared.idempotency_image(key, id, record.joined_at_ms));
                    }
                    images
                });
                Ok((id, record))
            }
            Err(existing) => match self.shared.entry_view(existing.0) {
                Some(entry) => Err(MatchmakerError::AlreadyQueued(Box::new(entry))),
                None => Err(MatchmakerError::NotFound),
            },
        }
    }

    fn tenant(&self, tenant: &str) -> Result<TenantId, MatchmakerError> {
        self.shared
            .index
            .tenants
            .find(tenant)
            .ok_or(MatchmakerError::NotFound)
    }

    fn record(&self, tenant: TenantId, id: EntryId) -> Result<EntryRecord, MatchmakerError> {
        self.shared
            .index
            .entries
            .get(id)
            .filter(|record| record.tenant == tenant)
            .ok_or(MatchmakerError::NotFound)
    }

    /// Entry `id` of `tenant`, straight from the index.
    pub fn entry(&self, tenant: &str, id: EntryId) -> Option<Entry> {
        let tenant = self.tenant(tenant).ok()?;
        let record = self.record(tenant, id).ok()?;
        Some(self.shared.entry_view_of(id, &record, self.now_ms()))
    }

    /// Withdraws entry `id` of `tenant`. Cancelling a cancelled entry succeeds again; a matched
    /// or expired one is [`MatchmakerError::NotCancellable`].
    pub async fn cancel(&self, tenant: &str, id: EntryId) -> Result<Entry, MatchmakerError> {
        let tenant = self.tenant(tenant)?;
        let record = self.record(tenant, id)?;
        if self.cancel_reaches_shard(&record) {
            self.shared.admit(Some(record.queue()))?;
            let (done, handled) = oneshot::channel();
            self.shared.admission.sent(record.queue());
            self.actors.router().do_send(Cancel {
                queue: record.queue(),
                rating: record.rating,
                id,
                done,
            });
            // Dropped unsignalled: the actors stopped before handling it.
            handled.await.map_err(|_| ActorsStopped)?;
        }
        self.shared.durable().await?;
        let record = self.record(tenant, id)?;
        let entry = self.shared.entry_view_of(id, &record, self.now_ms());
        match entry.status {
            EntryStatus::Cancelled => Ok(entry),
            status => Err(MatchmakerError::NotCancellable(status)),
        }
    }

    /// Whether a cancel of `record` must go to its shard: it searches, or its match's game is
    /// not created yet, so its shard may still put it back in the queue (a game that failed
    /// for good). The shard handles a failure and a cancel in the order they reach it, so a
    /// cancel that comes after the failure finds the entry searching again and wins, instead
    /// of answering `matched` for a player about to search.
    fn cancel_reaches_shard(&self, record: &EntryRecord) -> bool {
        match record.state {
            EntryState::Searching { .. } => true,
            EntryState::Matched(match_id) => self
                .shared
                .index
                .matches
                .read(match_id, |found| found.game_status != GameStatus::Created)
                .unwrap_or(false),
            EntryState::Cancelled { .. } | EntryState::Expired { .. } => false,
        }
    }

    /// Everything `user` of `tenant` has going on.
    pub fn active(&self, tenant: &str, user: &str) -> ActiveState {
        let Ok(tenant) = self.tenant(tenant) else {
            return ActiveState {
                searching: None,
                recent_match: None,
                incoming: Vec::new(),
                outgoing: Vec::new(),
            };
        };
        let index = &self.shared.index;
        let key = UserKey {
            tenant,
            user: user.into(),
        };
        let latest = index.users.latest(&key, &index.entries);
        let searching = latest
            .as_ref()
            .filter(|(_, record)| record.state.is_searching())
            .map(|(id, record)| self.shared.entry_view_of(*id, record, self.now_ms()));
        let recent_match = latest
            .and_then(|(_, record)| match record.state {
                EntryState::Matched(match_id) => Some(match_id),
                EntryState::Searching { previous } => previous.map(|previous| previous.match_id),
                EntryState::Cancelled { .. } | EntryState::Expired { .. } => None,
            })
            .and_then(|id| self.shared.match_view(id));
        ActiveState {
            searching,
            recent_match,
            incoming: self
                .shared
                .challenges
                .pending_for(tenant, user, Party::Opponent),
            outgoing: self
                .shared
                .challenges
                .pending_for(tenant, user, Party::Challenger),
        }
    }

    /// Subscribes to the changes of entry `id` of `tenant`.
    pub fn watch_entry(&self, tenant: &str, id: EntryId) -> Option<EntryWatch> {
        let tenant = self.tenant(tenant).ok()?;
        self.record(tenant, id).ok()?;
        let changes = self.shared.index.watch(id);
        Some(EntryWatch {
            shared: Arc::clone(&self.shared),
            id,
            changes,
        })
    }

    /// The stream of match events. A listener more than `event_capacity` events behind skips
    /// ahead (and is told how many it missed).
    pub fn events(&self) -> broadcast::Receiver<MatchEvent> {
        self.shared.events.subscribe()
    }

    /// Sends a challenge.
    pub async fn create_challenge(
        &self,
        request: ChallengeRequest,
    ) -> Result<Challenge, MatchmakerError> {
        check_name("tenant", &request.tenant, MAX_TENANT_LEN)?;
        check_name("challenger_id", &request.challenger_id, MAX_USER_ID_LEN)?;
        check_name("opponent_id", &request.opponent_id, MAX_USER_ID_LEN)?;
        if request.challenger_id == request.opponent_id {
            return Err(MatchmakerError::invalid(
                "opponent_id",
                "a player cannot challenge themselves",
            ));
        }
        let ttl = request.expires_in.unwrap_or(self.default_challenge_ttl);
        if ttl < Duration::from_secs(1) || ttl > self.max_challenge_ttl {
            return Err(MatchmakerError::invalid(
                "expires_in_s",
                format!(
                    "must be from 1 to {} seconds",
                    self.max_challenge_ttl.as_secs()
                ),
            ));
        }
        let known = self.shared.catalog.iter().any(|pool| {
            pool.spec.time_control == request.time_control
                && pool.spec.variant == request.variant
                && pool.spec.rated == request.rated
        });
        if !known {
            let rated = if request.rated { "rated" } else { "casual" };
            return Err(MatchmakerError::UnknownPool(format!(
                "{} {} {rated}",
                request.time_control, request.variant
            )));
        }
        self.shared.admit(None)?;
        let tenant = self.shared.index.tenants.intern(&request.tenant);
        let now_ms = self.now_ms();
        let id = ChallengeId::new(self.shared.ids.challenges.next().get())
            .expect("sequences never yield zero");
        let record = ChallengeRecord {
            tenant,
            challenger: request.challenger_id,
            opponent: request.opponent_id,
            time_control: request.time_control,
            variant: request.variant,
            rated: request.rated,
            color: request.color,
            state: ChallengeState::Pending,
            created_at_ms: now_ms,
            expires_at_ms: now_ms
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        };
        let challenge = record.view(id);
        self.shared
            .challenges
            .create(id, record, self.journal_challenge(id))?;
        self.shared.durable().await?;
        self.shared
            .metrics
            .challenges
            .with_label_values(&["pending"])
            .inc();
        Ok(challenge)
    }

    /// Challenge `id` if `user` of `tenant` takes part in it.
    pub fn challenge(&self, tenant: &str, user: &str, id: ChallengeId) -> Option<Challenge> {
        let tenant = self.tenant(tenant).ok()?;
        self.shared
            .challenges
            .get(id, tenant, user)
            .map(|record| record.view(id))
    }

    /// Pending challenges addressed to `user`.
    pub fn incoming_challenges(&self, tenant: &str, user: &str) -> Vec<Challenge> {
        self.tenant(tenant)
            .map(|tenant| {
                self.shared
                    .challenges
                    .pending_for(tenant, user, Party::Opponent)
            })
            .unwrap_or_default()
    }

    /// Pending challenges `user` sent.
    pub fn outgoing_challenges(&self, tenant: &str, user: &str) -> Vec<Challenge> {
        self.tenant(tenant)
            .map(|tenant| {
                self.shared
                    .challenges
                    .pending_for(tenant, user, Party::Challenger)
            })
            .unwrap_or_default()
    }

    /// The opponent accepts: the game is created before this returns. When the live-game
    /// service fails, the challenge stays pending and the error says why.
    pub async fn accept_challenge(
        &self,
        tenant: &str,
        user: &str,
        id: ChallengeId,
    ) -> Result<Challenge, MatchmakerError> {
        let tenant = self.tenant(tenant)?;
        self.shared.admit(None)?;
        let record = self.shared.challenges.begin_accept(
            id,
            tenant,
            user,
            self.now_ms(),
            self.journal_challenge(id),
        )?;
        let in_progress = AcceptInProgress {
            matchmaker: self,
            id,
            abandoned: true,
        };
        let challenger_color = match record.color {
            ColorChoice::White => Color::White,
            ColorChoice::Black => Color::Black,
            ColorChoice::Random if self.challenge_rng.lock().random_bool(0.5) => Color::White,
            ColorChoice::Random => Color::Black,
        };
        let challenger = GamePlayer {
            user_id: record.challenger.clone(),
            rating: None,
            color: challenger_color,
        };
        let opponent = GamePlayer {
            user_id: record.opponent.clone(),
            rating: None,
            color: challenger_color.opposite(),
        };
        let players = if challenger_color == Color::White {
            vec![challenger, opponent]
        } else {
            vec![opponent, challenger]
        };
        let request = GameRequest {
            match_id: id.to_string(),
            time_control: record.time_control,
            variant: record.variant.clone(),
            rated: record.rated,
            players,
        };
        let outcome = self.shared.game_creator.create_game(request).await;
        let game = outcome
            .as_ref()
            .ok()
            .map(|game_id| (game_id.clone(), challenger_color));
        let after = in_progress.finish(game).ok_or(MatchmakerError::NotFound)?;
        match outcome {
            Ok(_) => {
                self.shared.durable().await?;
                self.shared
                    .index
                    .settle(self.now_ms(), Settled::Challenge(id));
                self.shared
                    .metrics
                    .challenges
                    .with_label_values(&["accepted"])
                    .inc();
                Ok(after.view(id))
            }
            Err(error) => Err(MatchmakerError::GameService(error)),
        }
    }

    /// The opponent declines.
    pub async fn decline_challenge(
        &self,
        tenant: &str,
        user: &str,
        id: ChallengeId,
    ) -> Result<Challenge, MatchmakerError> {
        self.close_challenge(tenant, user, id, Party::Opponent)
            .await
    }

    /// The challenger withdraws.
    pub async fn cancel_challenge(
        &self,
        tenant: &str,
        user: &str,
        id: ChallengeId,
    ) -> Result<Challenge, MatchmakerError> {
        self.close_challenge(tenant, user, id, Party::Challenger)
            .await
    }

    async fn close_challenge(
        &self,
        tenant: &str,
        user: &str,
        id: ChallengeId,
        party: Party,
    ) -> Result<Challenge, MatchmakerError> {
        let tenant = self.tenant(tenant)?;
        self.shared.admit(None)?;
        let now_ms = self.now_ms();
        let record = self.shared.challenges.close(
            id,
            tenant,
            user,
            party,
            now_ms,
            self.journal_challenge(id),
        )?;
        self.shared.durable().await?;
        self.shared.index.settle(now_ms, Settled::Challenge(id));
        let status = if party == Party::Opponent {
            "declined"
        } else {
            "cancelled"
        };
        self.shared
            .metrics
            .challenges
            .with_label_values(&[status])
            .inc();
        Ok(record.view(id))
    }

    /// Per-pool figures of `tenant`'s queues that have players, recent matches or pending
    /// games.
    pub async fn summary(&self, tenant: &str) -> Result<Vec<QueueSummary>, MatchmakerError> {
        let Ok(tenant) = self.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let figures = self
            .actors
            .router()
            .send(RouteSummary(Summarize {
                tenant,
                now_ms: self.now_ms(),
            }))
            .await
            .map_err(ActorsStopped::from)??;
        // One tenant's queues: in key order, they are in pool order.
        let mut by_queue: BTreeMap<QueueKey, (QueueFigures, usize)> = figures
            .into_iter()
            .map(|figures| (figures.queue, (figures, 0)))
            .collect();
        for (queue, pending) in self.shared.games.pending_in(tenant) {
            by_queue
                .entry(queue)
                .or_insert_with(|| (QueueFigures::empty(queue), 0))
                .1 = pending;
        }
        Ok(by_queue
            .into_values()
            .map(|(mut figures, pending_games)| {
                figures.waits_ms.sort_unstable();
                figures.recent_waits_ms.sort_unstable();
                let gaps = &figures.recent_gaps;
                let pool = self.shared.catalog.get(figures.queue.pool);
                QueueSummary {
                    pool: pool.spec.clone(),
                    searching: figures.waits_ms.len(),
                    oldest_wait_ms: figures.waits_ms.last().copied().unwrap_or(0),
                    wait_p50_ms: percentile(&figures.waits_ms, 0.5).unwrap_or(0),
                    wait_p95_ms: percentile(&figures.waits_ms, 0.95).unwrap_or(0),
                    matches_last_minute: gaps.len() as u64,
                    mean_rating_gap: (!gaps.is_empty()).then(|| {
                        gaps.iter().map(|&gap| f64::from(gap)).sum::<f64>() / gaps.len() as f64
                    }),
                    pending_games,
                    matched_wait_p95_ms: percentile(&figures.recent_waits_ms, 0.95).map(u64::from),
                    pacing: pool.params.pacing,
                    arrivals_per_s: figures.arrivals_per_s,
                }
            })
            .collect())
    }

    /// Runs every pool's wave that is due, expires what is due, makes the game-creation
    /// attempts that are due and waits for them, and forgets what settled more than the
    /// retention period ago. For manual clocks: background timers do the same on their own.
    /// The attempts run no more at once than the in-flight limit allows, the next due one
    /// starting as one ends, until none is due at the tick's time (or the circuit breaker
    /// holds the rest back).
    pub async fn tick(&self) -> Result<TickReport, MatchmakerError> {
        let queues = self.run_waves(false).await?;
        let expired_challenges = self.expire_challenges();
        let game_attempts =
            game_dispatch::run_due(&self.shared, self.actors.router(), self.now_ms()).await;
        Ok(TickReport {
            queues,
            expired_challenges,
            game_attempts,
            pruned: self.prune(),
        })
    }

    /// Runs due waves now (every pool's wave with `force`).
    pub async fn run_waves(&self, force: bool) -> Result<TickCounts, MatchmakerError> {
        let work = DueWork {
            waves: true,
            expiry: true,
            force,
        };
        Ok(self
            .actors
            .router()
            .send(RouteTick(RunDue {
                now_ms: self.now_ms(),
                work,
            }))
            .await
            .map_err(ActorsStopped::from)??)
    }

    /// Journals a challenge's new image. Handed to the [`ChallengeBook`], which calls it before
    /// the challenge can change again, so its images reach the journal in order.
    fn journal_challenge(&self, id: ChallengeId) -> impl FnOnce(&ChallengeRecord) + '_ {
        move |record| {
            self.shared
                .record(|| vec![self.shared.challenge_image(id, record)]);
        }
    }

    /// Expires the challenges that are due; returns how many.
    pub fn expire_challenges(&self) -> usize {
        let expired = self
            .shared
            .challenges
            .expire_due(self.now_ms(), |id, record| {
                self.journal_challenge(id)(record)
            });
        for (id, record) in &expired {
            if let ChallengeState::Closed { at_ms, .. } = record.state {
                self.shared.index.settle(at_ms, Settled::Challenge(*id));
            }
        }
        self.shared
            .metrics
            .challenges
            .with_label_values(&["expired"])
            .inc_by(expired.len() as u64);
        expired.len()
    }

    /// Starts the game-creation attempts that are due, as many as the in-flight limit and the
    /// circuit breaker allow, and returns them; each resolves when its attempt is over and its
    /// outcome applied. The due jobs left over stay due, in match order, for a later call. An
    /// attempt dropped unfinished gives its slot back.
    pub fn due_game_attempts(&self) -> Vec<BoxFuture<'static, ()>> {
        game_dispatch::start_due(&self.shared, self.actors.router(), self.now_ms())
    }

    /// Resolves when game jobs may be waiting to start (for background dispatchers): a wave
    /// has scheduled some, or an attempt has ended and freed its slot.
    pub async fn game_jobs_scheduled(&self) {
        self.shared.game_jobs_ready.notified().await;
    }

    /// When the next game-creation job not already running is due, if any (a time already
    /// past when due jobs wait for a slot).
    pub fn next_game_job_due(&self) -> Option<UnixMillis> {
        self.shared.games.next_due()
    }

    /// How the game dispatcher sees the live-game service: whether it answered last, the
    /// circuit breaker's state, the jobs pending and running. Matching goes on whatever it
    /// says; for readiness to report the service as degraded.
    pub fn live_game_health(&self) -> LiveGameHealth {
        self.shared.games.health(self.now_ms())
    }

    /// Forgets what settled more than the retention period ago; returns how many records.
    pub fn prune(&self) -> usize {
        // Nothing can have settled a whole retention period ago yet.
        let Some(cutoff) = self.now_ms().checked_sub(self.retention_ms) else {
            return 0;
        };
        let index = &self.shared.index;
        let settled = index.take_settled(cutoff);
        for item in &settled {
            match item {
                Settled::Entry(id) => {
                    index.forget_entry(*id, |record| !record.state.is_searching());
                }
                Settled::Match(id) => {
                    if let Some(record) = index.matches.remove_if(*id, |_| true) {
                        for player in &record.players {
                            index.forget_entry(player.entry_id, |entry| {
                                entry.state == EntryState::Matched(*id)
                            });
                        }
                    }
                }
                Settled::Challenge(id) => self.shared.challenges.remove(*id),
                Settled::IdempotencyKey(key) => {
                    index.idempotency.remove(key);
                }
            }
        }
        settled.len()
    }

    /// Everything live, for a snapshot; rotate the journal first (see [`crate::persist`]).
    pub fn capture(&self) -> SnapshotBody {
        self.shared.capture()
    }

    /// Waits until every change made so far is durable, when changes are acknowledged only
    /// once durable (fsync `always`); for readers who must not see what a crash could undo.
    pub async fn durable(&self) -> Result<(), MatchmakerError> {
        self.shared.durable().await
    }

    /// Whether changes are accepted: false once the journal has failed.
    pub fn is_writable(&self) -> bool {
        self.shared.writable().is_ok()
    }

    /// Stops the actors. Further calls that need them fail with [`ActorsStopped`].
    pub fn shutdown(&self) {
        self.actors.stop();
    }
}

/// A challenge between [`ChallengeBook::begin_accept`] and its finish. The accept waits for
/// the live-game service, and its caller may stop waiting (a timeout or a `select!` drops the
/// future): the challenge then goes back to pending instead of staying `accepting` for ever,
/// where nobody could decline, cancel or accept it again. The game may exist by then; a later
/// accept asks for it again under the same idempotency key and gets the same game.
struct AcceptInProgress<'a> {
    matchmaker: &'a Matchmaker,
    id: ChallengeId,
    abandoned: bool,
}

impl AcceptInProgress<'_> {
    /// Ends the accept with the game, or back to pending when there is none.
    fn finish(mut self, game: Option<(CompactString, Color)>) -> Option<ChallengeRecord> {
        self.abandoned = false;
        self.matchmaker.shared.challenges.finish_accept(
            self.id,
            game,
            self.matchmaker.journal_challenge(self.id),
        )
    }
}

impl Drop for AcceptInProgress<'_> {
    fn drop(&mut self) {
        if self.abandoned {
            self.matchmaker.shared.challenges.finish_accept(
                self.id,
                None,
                self.matchmaker.journal_challenge(self.id),
            );
        }
    }
}

/// The `p` quantile of `sorted` (nearest rank); `None` when it is empty.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    (!sorted.is_empty()).then(|| sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Overload;
    use crate::clock::ManualClock;
    use crate::shard::{GameFailed, ShardTimers};

    fn request(user: &str, rating: u16) -> EnqueueRequest {
        EnqueueRequest {
            tenant: "acme".into(),
            user_id: user.into(),
            pool: PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap(),
            rating,
            idempotency_key: None,
        }
    }

    /// An engine on a manual clock with no timers: waves run when a test asks.
    fn manual_engine() -> Matchmaker {
        let mut config = MatchmakerConfig::new(PoolCatalog::builtin());
        config.clock = Arc::new(ManualClock::new(1_000_000));
        config.timers = ShardTimers::default();
        Matchmaker::start(config).unwrap()
    }

    #[tokio::test]
    async fn a_wave_too_big_for_one_lane_publishes_every_pair_once() {
        let engine = manual_engine();
        let players = 2 * crate::shard::PARALLEL_MIN_PAIRS + 10;
        let mut entries = Vec::with_capacity(players);
        for n in 0..players {
            let rating = 1_000 + (n % 1_000) as u16;
            entries.push(
                engine
                    .enqueue(request(&format!("p{n}"), rating))
                    .await
                    .unwrap(),
            );
        }
        let counts = engine.run_waves(true).await.unwrap();
        assert_eq!(counts.pairs, players / 2);
        let mut seen = std::collections::HashMap::new();
        for entry in &entries {
            let now = engine.entry("acme", entry.id).unwrap();
            assert_eq!(now.status, EntryStatus::Matched, "{}", entry.id);
            let found = now.found.expect("a matched entry's match is in the index");
            let mine = found
                .players
                .iter()
                .find(|player| player.entry_id == entry.id)
                .expect("the match names the entry");
            assert_eq!(mine.user_id, entry.user_id);
            assert_ne!(found.players[0].color, found.players[1].color);
            *seen.entry(found.match_id).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), players / 2);
        assert!(seen.values().all(|&count| count == 2));
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_match_is_shown_and_captured_only_while_its_entries_name_its_users() {
        let engine = manual_engine();
        let alice = engine.enqueue(request("alice", 1500)).await.unwrap();
        let bob = engine.enqueue(request("bob", 1500)).await.unwrap();
        engine.run_waves(true).await.unwrap();
        let captured_matches = |engine: &Matchmaker| {
            engine
                .capture()
                .images
                .iter()
                .filter(|image| matches!(image, crate::persist::Image::Match(_)))
                .count()
        };
        assert_eq!(captured_matches(&engine), 1);
        assert!(engine.entry("acme", alice.id).unwrap().found.is_some());
        // What a reader holding a copy of the match sees once retention has forgotten the
        // match and then its entries: here bob's entry alone is gone.
        engine.shared.index.forget_entry(bob.id, |_| true);
        assert_eq!(
            captured_matches(&engine),
            0,
            "a match image needs both users"
        );
        assert_eq!(engine.entry("acme", alice.id).unwrap().found, None);
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_cancel_after_a_game_failed_for_good_wins_over_the_return_to_the_queue() {
        let engine = manual_engine();
        let alice = engine.enqueue(request("alice", 1500)).await.unwrap();
        engine.enqueue(request("bob", 1500)).await.unwrap();
        engine.run_waves(true).await.unwrap();
        let found = engine.entry("acme", alice.id).unwrap().found.unwrap();
        let queue = engine.shared.index.entries.get(alice.id).unwrap().queue();
        // What the game job does once the service refused for good, and then the player's
        // cancel, which the player sends having seen the failure.
        engine.actors.router().do_send(GameFailed {
            queue,
            match_id: found.match_id,
        });
        let cancelled = engine.cancel("acme", alice.id).await.unwrap();
        assert_eq!(cancelled.status, EntryStatus::Cancelled);
        let counts = engine.run_waves(true).await.unwrap();
        assert_eq!(counts.pairs, 0, "alice is not back in the pool");
        assert_eq!(
            engine.active("acme", "bob").searching.map(|entry| entry.id),
            found
                .players
                .iter()
                .map(|p| p.entry_id)
                .find(|&id| id != alice.id)
        );
        engine.shutdown();
    }

    /// The wall clock steps an hour forward and back (an NTP step and its correction) while
    /// the monotonic clock does not: waits, windows and retention follow the monotonic clock.
    #[tokio::test]
    async fn a_wall_clock_step_moves_neither_waits_nor_retention() {
        use crate::clock::ScriptedTime;
        use std::sync::atomic::Ordering;

        const HOUR_MS: u64 = 3_600_000;
        let time = Arc::new(ScriptedTime::default());
        time.wall_ms.store(1_700_000_000_000, Ordering::SeqCst);
        let mut config = MatchmakerConfig::new(PoolCatalog::builtin());
        config.clock = Arc::new(SystemClock::with_source(Arc::clone(&time)));
        config.timers = ShardTimers::default();
        config.retention = Duration::from_secs(1);
        let engine = Matchmaker::start(config).unwrap();
        let cancel_someone = |user: &'static str| {
            let engine = &engine;
            async move {
                let entry = engine.enqueue(request(user, 3_000)).await.unwrap();
                engine.cancel("acme", entry.id).await.unwrap();
            }
        };
        let alice = engine.enqueue(request("alice", 1_000)).await.unwrap();
        cancel_someone("first").await;
        time.wall_ms.fetch_add(HOUR_MS, Ordering::SeqCst);
        let bob = engine.enqueue(request("bob", 2_000)).await.unwrap();
        cancel_someone("second").await;
        time.wall_ms.fetch_sub(HOUR_MS, Ordering::SeqCst);
        cancel_someone("third").await;
        for clock in [&time.wall_ms, &time.monotonic_ms] {
            clock.fetch_add(20_000, Ordering::SeqCst);
        }
        for id in [alice.id, bob.id] {
            let entry = engine.entry("acme", id).unwrap();
            assert_eq!((entry.wait_ms, entry.window), (20_000, 150), "{id}");
        }
        assert_eq!(engine.prune(), 3, "every cancelled entry is forgotten");
        engine.shutdown();
    }

    #[tokio::test]
    async fn changes_refused_while_a_shard_is_behind_change_nothing() {
        let mut config = MatchmakerConfig::new(PoolCatalog::builtin());
        config.clock = Arc::new(ManualClock::new(1_000_000));
        config.overload.max_shard_backlog = std::num::NonZeroU64::new(1);
        let engine = Matchmaker::start(config).unwrap();
        let alice = engine.enqueue(request("alice", 1500)).await.unwrap();
        // A tick reaches the shard after the enqueue, so the shard has handled it by then.
        engine.run_waves(true).await.unwrap();
        let queue = engine.shared.index.entries.get(alice.id).unwrap().queue();
        // One message on its way to the shard, as a burst would leave it.
        engine.shared.admission.sent(queue);
        let overloaded = |result: Result<Entry, MatchmakerError>| {
            matches!(
                result,
                Err(MatchmakerError::Overloaded(Overload::Shard {
                    backlog: 1,
                    limit: 1
                }))
            )
        };
        let entries = engine.shared.index.entries.len();
        let mut keyed = request("bob", 1500);
        keyed.idempotency_key = Some("k1".into());
        assert!(overloaded(engine.enqueue(keyed.clone()).await));
        assert!(overloaded(engine.cancel("acme", alice.id).await));
        assert_eq!(engine.shared.index.entries.len(), entries, "no entry made");
        assert_eq!(engine.active("acme", "bob").searching, None);
        assert_eq!(
            engine.entry("acme", alice.id).unwrap().status,
            EntryStatus::Searching,
            "the cancel was not applied"
        );
        // Challenges send nothing to a shard.
        let challenge = ChallengeRequest {
            tenant: "acme".into(),
            challenger_id: "carol".into(),
            opponent_id: "dave".into(),
            time_control: "5+3".parse().unwrap(),
            variant: "standard".into(),
            rated: true,
            color: ColorChoice::Random,
            expires_in: None,
        };
        engine.create_challenge(challenge).await.unwrap();

        engine.shared.admission.handled(queue);
        // The refused request left no idempotency key behind: another rating is no reuse.
        keyed.rating = 1600;
        let bob = engine.enqueue(keyed).await.unwrap();
        assert_eq!(bob.rating, 1600);
        engine.run_waves(false).await.unwrap();
        let cancelled = engine.cancel("acme", alice.id).await.unwrap();
        assert_eq!(cancelled.status, EntryStatus::Cancelled);
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_partitions_ids_come_from_its_own_range() {
        let mut config = MatchmakerConfig::new(PoolCatalog::builtin());
        config.clock = Arc::new(ManualClock::new(1_000_000));
        config.id_base = partition_id_base(5);
        let engine = Matchmaker::start(config).unwrap();
        let alice = engine.enqueue(request("alice", 1500)).await.unwrap();
        engine.enqueue(request("bob", 1500)).await.unwrap();
        engine.run_waves(true).await.unwrap();
        let found = engine.entry("acme", alice.id).unwrap().found.unwrap();
        assert_eq!(alice.id.get(), partition_id_base(5) + 1);
        assert_eq!(partition_of_id(alice.id.get()), 5);
        assert_eq!(partition_of_id(found.match_id.get()), 5);
        assert_eq!(
            partition_of_id(partition_id_base(6)),
            5,
            "the last id of the range"
        );
        assert_eq!(partition_of_id(1), 0);
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_pair_whose_partner_stopped_searching_puts_the_other_player_back() {
        let engine = manual_engine();
        let alice = engine.enqueue(request("alice", 1500)).await.unwrap();
        let bob = engine.enqueue(request("bob", 1500)).await.unwrap();
        // Behind the shard's back, which owns that change: the wave still pairs alice.
        engine.shared.index.entries.update(alice.id, |record| {
            record.state = EntryState::Cancelled { at_ms: 1 }
        });
        engine.run_waves(true).await.unwrap();
        let bob_now = engine.entry("acme", bob.id).unwrap();
        assert_eq!(bob_now.status, EntryStatus::Searching);
        assert_eq!(bob_now.found, None);
        assert_eq!(
            engine.shared.index.matches.len(),
            0,
            "the match is taken back"
        );
        assert_eq!(
            engine.next_game_job_due(),
            None,
            "and no game is created for it"
        );

        let carol = engine.enqueue(request("carol", 1500)).await.unwrap();
        let counts = engine.run_waves(true).await.unwrap();
        assert_eq!(counts.pairs, 1, "bob is back in the pool and meets carol");
        let found = engine.entry("acme", carol.id).unwrap().found.unwrap();
        assert!(found.players.iter().any(|player| player.entry_id == bob.id));
        engine.shutdown();
    }
}
