//! Request and response bodies of the HTTP API, with their OpenAPI schemas.
//!
//! The engine's values use milliseconds and internal shapes; these are the shapes pinned by the
//! API (SPEC §4): RFC 3339 times, `wait_s`, flat pool fields, and the tenant of the caller.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::health::{Criticality, HealthReport, HealthStatus};
use crate::{
    Challenge, ChallengeStatus, Color, ColorChoice, Entry, EntryStatus, GameStatus, Match,
    MatchPlayer, Pacing, PoolSpec, QueueSummary,
};

/// Body of `POST /v1/matchmaking/queue`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueBody {
    /// `"M+S"`: base minutes + increment seconds, e.g. `"5+3"`.
    #[schema(example = "5+3")]
    pub(crate) time_control: String,
    /// Short variant name.
    #[schema(example = "standard")]
    pub(crate) variant: String,
    /// Whether the game is rated.
    pub(crate) rated: bool,
    /// Optional short region name.
    #[serde(default)]
    pub(crate) region: Option<String>,
    /// Rating 0–4000. The token's `ratings` claim wins when it has this time control; 1500
    /// when neither gives one.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 4000)]
    pub(crate) rating: Option<i64>,
    /// The player to queue; only tokens with role `service` may name another user.
    #[serde(default)]
    pub(crate) user_id: Option<String>,
}

/// Body of `POST /v1/matchmaking/challenges`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChallengeBody {
    /// Who is challenged.
    pub(crate) opponent_id: String,
    /// `"M+S"`, e.g. `"5+3"`.
    #[schema(example = "5+3")]
    pub(crate) time_control: String,
    /// Short variant name.
    #[schema(example = "standard")]
    pub(crate) variant: String,
    /// Whether the game is rated.
    pub(crate) rated: bool,
    /// Color the challenger asks for: `white`, `black` or `random` (default).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "random")]
    pub(crate) color: Option<ColorChoice>,
    /// Lifetime in seconds (default 120).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1)]
    pub(crate) expires_in_s: Option<u64>,
    /// The challenger; only tokens with role `service` may name another user.
    #[serde(default)]
    pub(crate) user_id: Option<String>,
}

/// An integer field, however the JSON writes it: JSON has one type of number, and JSON
/// Schema's `integer` (what the document says of these fields) includes `1500.0`, which
/// clients whose numbers are floats write for 1500. A number with a fraction, or one that
/// `T` cannot hold, is refused.
fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    // Below 2^63 in magnitude, a whole f64 converts to i128 exactly.
    const EXACT: f64 = 9_223_372_036_854_775_808.0;
    let whole = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
        .or_else(|| {
            number
                .as_f64()
                .filter(|value| value.fract() == 0.0 && value.abs() < EXACT)
                .map(|value| value as i128)
        });
    whole
        .and_then(|whole| T::try_from(whole).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, not {number}")))
}

/// Query of the read and delete routes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ActAs {
    /// The user to act for; only tokens with role `service` may name another user than
    /// their own `sub`.
    pub(crate) user_id: Option<String>,
}

/// Query of `/internal/*`: none is accepted, so a misspelt parameter is an error.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

/// One player of a match.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct PlayerView {
    #[schema(value_type = String)]
    user_id: CompactString,
    rating: u16,
    /// The queue entry that was paired.
    entry_id: String,
    #[schema(value_type = String, example = "white")]
    color: Color,
}

impl From<&MatchPlayer> for PlayerView {
    fn from(player: &MatchPlayer) -> Self {
        Self {
            user_id: player.user_id.clone(),
            rating: player.rating,
            entry_id: player.entry_id.to_string(),
            color: player.color,
        }
    }
}

/// A match formed by the queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MatchView {
    match_id: String,
    time_control: String,
    #[schema(value_type = String)]
    variant: CompactString,
    rated: bool,
    #[schema(value_type = Option<String>)]
    region: Option<CompactString>,
    /// Both players, white first.
    players: Vec<PlayerView>,
    /// The other player, seen from the user the match is shown to.
    opponent: Option<PlayerView>,
    /// RFC 3339.
    created_at: String,
    /// `pending`, `created` or `failed`.
    #[schema(value_type = String, example = "created")]
    game_status: GameStatus,
    #[schema(value_type = Option<String>)]
    game_id: Option<CompactString>,
}

impl MatchView {
    /// `found` as shown to `viewer`.
    pub(crate) fn new(found: &Match, viewer: &str) -> Self {
        Self {
            match_id: found.match_id.to_string(),
            time_control: found.pool.time_control.to_string(),
            variant: found.pool.variant.clone(),
            rated: found.pool.rated,
            region: found.pool.region.clone(),
            players: found.players.iter().map(PlayerView::from).collect(),
            opponent: found
                .players
                .iter()
                .find(|player| player.user_id != viewer)
                .map(PlayerView::from),
            created_at: rfc3339(found.created_at_ms),
            game_status: found.game_status,
            game_id: found.game_id.clone(),
        }
    }
}

/// A queue entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct EntryView {
    id: String,
    #[schema(value_type = String)]
    tenant: CompactString,
    #[schema(value_type = String)]
    user_id: CompactString,
    time_control: String,
    #[schema(value_type = String)]
    variant: CompactString,
    rated: bool,
    #[schema(value_type = Option<String>)]
    region: Option<CompactString>,
    rating: u16,
    /// RFC 3339.
    joined_at: String,
    /// RFC 3339; when the entry expires if still searching.
    expires_at: String,
    /// `searching`, `matched`, `cancelled` or `expired`.
    #[schema(value_type = String, example = "searching")]
    pub(crate) status: EntryStatus,
    /// Acceptable rating gap now (or when the entry stopped searching).
    window: u16,
    /// Seconds spent searching (until the entry stopped searching).
    wait_s: f64,
    /// The match, once matched.
    #[serde(rename = "match")]
    found: Option<MatchView>,
}

impl EntryView {
    /// `entry` of `tenant`.
    pub(crate) fn new(entry: &Entry, tenant: &str) -> Self {
        Self {
            id: entry.id.to_string(),
            tenant: tenant.into(),
            user_id: entry.user_id.clone(),
            time_control: entry.pool.time_control.to_string(),
            variant: entry.pool.variant.clone(),
            rated: entry.pool.rated,
            region: entry.pool.region.clone(),
            rating: entry.rating,
            joined_at: rfc3339(entry.joined_at_ms),
            expires_at: rfc3339(entry.expires_at_ms),
            status: entry.status,
            window: entry.window,
            wait_s: entry.wait_ms as f64 / 1_000.0,
            found: entry
                .found
                .as_ref()
                .map(|found| MatchView::new(found, &entry.user_id)),
        }
    }

    /// Whether nothing more will happen to the entry: cancelled, expired, or matched with the
    /// game created. A matched entry whose game is still pending may go back to searching if
    /// creation fails for good.
    pub(crate) fn is_final(&self) -> bool {
        match self.status {
            EntryStatus::Searching => false,
            EntryStatus::Cancelled | EntryStatus::Expired => true,
            EntryStatus::Matched => self
                .found
                .as_ref()
                .is_some_and(|found| found.game_status == GameStatus::Created),
        }
    }
}

/// A direct challenge.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChallengeView {
    id: String,
    #[schema(value_type = String)]
    tenant: CompactString,
    #[schema(value_type = String)]
    challenger_id: CompactString,
    #[schema(value_type = String)]
    opponent_id: CompactString,
    time_control: String,
    #[schema(value_type = String)]
    variant: CompactString,
    rated: bool,
    /// Color the challenger asked for: `white`, `black` or `random`.
    #[schema(value_type = String, example = "random")]
    color: ColorChoice,
    /// `pending`, `accepted`, `declined`, `cancelled` or `expired`.
    #[schema(value_type = String, example = "pending")]
    status: ChallengeStatus,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339; when the challenge expires if still pending.
    expires_at: String,
    /// The live game, once accepted.
    #[schema(value_type = Option<String>)]
    game_id: Option<CompactString>,
    /// The challenger's color in the game, once accepted.
    #[schema(value_type = Option<String>)]
    challenger_color: Option<Color>,
}

impl ChallengeView {
    /// `challenge` of `tenant`.
    pub(crate) fn new(challenge: &Challenge, tenant: &str) -> Self {
        Self {
            id: challenge.id.to_string(),
            tenant: tenant.into(),
            challenger_id: challenge.challenger_id.clone(),
            opponent_id: challenge.opponent_id.clone(),
            time_control: challenge.time_control.to_string(),
            variant: challenge.variant.clone(),
            rated: challenge.rated,
            color: challenge.color,
            status: challenge.status,
            created_at: rfc3339(challenge.created_at_ms),
            expires_at: rfc3339(challenge.expires_at_ms),
            game_id: challenge.game_id.clone(),
            challenger_color: challenge.challenger_color,
        }
    }

    /// `challenges` of `tenant`.
    pub(crate) fn list(challenges: &[Challenge], tenant: &str) -> Vec<Self> {
        challenges
            .iter()
            .map(|challenge| Self::new(challenge, tenant))
            .collect()
    }
}

/// Everything the caller has going on.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActiveView {
    /// The searching entry, or null.
    pub(crate) searching: Option<EntryView>,
    /// The most recent match still remembered, or null.
    pub(crate) recent_match: Option<MatchView>,
    /// Pending challenges addressed to the caller.
    pub(crate) incoming: Vec<ChallengeView>,
    /// Pending challenges the caller sent.
    pub(crate) outgoing: Vec<ChallengeView>,
}

/// Figures of one pool.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PoolSummaryView {
    time_control: String,
    #[schema(value_type = String)]
    variant: CompactString,
    rated: bool,
    #[schema(value_type = Option<String>)]
    region: Option<CompactString>,
    /// Entries searching now.
    searching: usize,
    /// Longest current wait, seconds.
    oldest_wait_s: f64,
    /// Median current wait, seconds.
    wait_p50_s: f64,
    /// 95th percentile of current waits, seconds.
    wait_p95_s: f64,
    /// Matches formed in the last minute.
    matches_last_minute: u64,
    /// Mean rating gap of those matches; null without matches.
    mean_rating_gap: Option<f64>,
    /// Matches whose game is not created yet: the live-game service is being asked, or will
    /// be asked again.
    pending_games: usize,
    /// 95th percentile of the waits of the players matched in the last minute, seconds;
    /// null without matches.
    matched_wait_p95_s: Option<f64>,
    /// How the pool paces its waves: `eager` or `quality`.
    #[schema(example = "quality")]
    pacing: &'static str,
    /// The wait 95% of matched players should not exceed, seconds (quality pacing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    target_wait_s: Option<f64>,
    /// The pool's current estimate of its arrivals per second; null before any.
    arrivals_per_s: Option<f64>,
}

/// `/internal/queues/summary`: the pools of the caller's tenant that have players or recent
/// matches.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SummaryView {
    #[schema(value_type = String)]
    tenant: CompactString,
    pools: Vec<PoolSummaryView>,
}

impl SummaryView {
    /// `summaries` of `tenant`.
    pub(crate) fn new(summaries: &[QueueSummary], tenant: &str) -> Self {
        let seconds = |ms: u64| ms as f64 / 1_000.0;
        Self {
            tenant: tenant.into(),
            pools: summaries
                .iter()
                .map(|summary| {
                    let PoolSpec {
                        time_control,
                        variant,
                        rated,
                        region,
                    } = &summary.pool;
                    PoolSummaryView {
                        time_control: time_control.to_string(),
                        variant: variant.clone(),
                        rated: *rated,
                        region: region.clone(),
                        searching: summary.searching,
                        oldest_wait_s: seconds(summary.oldest_wait_ms),
                        wait_p50_s: seconds(summary.wait_p50_ms),
                        wait_p95_s: seconds(summary.wait_p95_ms),
                        matches_last_minute: summary.matches_last_minute,
                        mean_rating_gap: summary.mean_rating_gap,
                        pending_games: summary.pending_games,
                        matched_wait_p95_s: summary.matched_wait_p95_ms.map(seconds),
                        pacing: summary.pacing.name(),
                        target_wait_s: match summary.pacing {
                            Pacing::Eager => None,
                            Pacing::Quality { target_wait_ms } => Some(seconds(target_wait_ms)),
                        },
                        arrivals_per_s: summary.arrivals_per_s,
                    }
                })
                .collect(),
        }
    }
}

/// Body of `/health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LiveView {
    /// Always `live`: the process answers.
    #[schema(example = "live")]
    pub(crate) status: &'static str,
}

/// Body of `/health/ready`: the service's status and each component's.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "status": "healthy",
    "components": {
        "engine": {"status": "healthy", "critical": true,
                   "details": {"state": "running", "accepts_changes": true}},
        "journal": {"status": "healthy", "critical": true,
                    "details": {"writable": true, "stalled": false, "last_commit_age_ms": 412,
                                "pending_records": 0, "error": null}},
        "snapshots": {"status": "healthy", "critical": true,
                      "details": {"last_success_at": "2025-01-01T12:00:00.000Z",
                                  "last_success_age_ms": 31000, "consecutive_failures": 0,
                                  "last_error": null}}
    }
}))]
pub(crate) struct ReadinessView {
    /// The worst of the components' statuses, a non-critical component counting as
    /// `degraded` at worst. `unhealthy` answers 503, the others 200.
    pub(crate) status: HealthStatus,
    /// Each component by name. `engine`: `state` (`recovering`, `running`, `stopping`) and
    /// `accepts_changes`. `journal`: `writable`, `stalled` (records waiting with nothing
    /// committed for a heartbeat interval plus 5 s), `last_commit_age_ms`, `pending_records`,
    /// `error`. `snapshots`: `last_success_at`, `last_success_age_ms`,
    /// `consecutive_failures` (any makes it `degraded`), `last_error`. Until the engine has
    /// recovered, `journal` and `snapshots` are `unhealthy` with the engine's `state`.
    pub(crate) components: BTreeMap<&'static str, ComponentView>,
}

/// One component of `/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ComponentView {
    /// How it is doing.
    pub(crate) status: HealthStatus,
    /// Whether the service's status follows it all the way to `unhealthy`; a non-critical
    /// component makes it `degraded` at worst.
    pub(crate) critical: bool,
    /// What the component reports about itself; each has its own fields.
    #[schema(value_type = Object)]
    pub(crate) details: serde_json::Value,
}

impl ReadinessView {
    pub(crate) fn new(report: HealthReport) -> Self {
        Self {
            status: report.status,
            components: report
                .components
                .into_iter()
                .map(|component| {
                    let view = ComponentView {
                        status: component.health.status,
                        critical: component.criticality == Criticality::Critical,
                        details: component.health.details,
                    };
                    (component.name, view)
                })
                .collect(),
        }
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code: `INVALID_REQUEST`, `UNKNOWN_POOL`, `UNAUTHORIZED`,
    /// `FORBIDDEN`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `ALREADY_QUEUED`, `NOT_CANCELLABLE`,
    /// `CHALLENGE_NOT_PENDING`, `CHALLENGE_EXISTS`, `PAYLOAD_TOO_LARGE`,
    /// `UNSUPPORTED_MEDIA_TYPE`, `RATE_LIMITED`, `UNAVAILABLE`.
    #[schema(example = "INVALID_REQUEST")]
    pub(crate) code: &'static str,
    /// For people.
    pub(crate) message: String,
    /// The request field at fault (`INVALID_REQUEST`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<&'static str>,
    /// The existing searching entry (`ALREADY_QUEUED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) entry: Option<Box<EntryView>>,
}

/// Ratings from a token's `ratings` claim.
pub(crate) type RatingsClaim = BTreeMap<String, i64>;

/// `ms` since the Unix epoch as RFC 3339 (UTC), always with milliseconds. Every entry view
/// carries two or three of these, so the formatter is a fixed-layout one.
pub(crate) fn rfc3339(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_however_json_writes_them() {
        let rating = |json: &str| {
            serde_json::from_str::<EnqueueBody>(&format!(
                r#"{{"time_control": "5+3", "variant": "standard", "rated": true, "rating": {json}}}"#
            ))
            .map(|body| body.rating)
            .map_err(|error| error.to_string())
        };
        assert_eq!(rating("1500"), Ok(Some(1500)));
        assert_eq!(rating("1500.0"), Ok(Some(1500)));
        assert_eq!(rating("15e2"), Ok(Some(1500)));
        assert_eq!(rating("-0.0"), Ok(Some(0)));
        assert_eq!(rating("null"), Ok(None));
        assert_eq!(rating("9223372036854775807"), Ok(Some(i64::MAX)));
        for refused in ["1500.5", "1e300", "18446744073709551615", "\"1500\""] {
            assert!(rating(refused).is_err(), "{refused}");
        }
        let lifetime = |json: &str| {
            serde_json::from_str::<ChallengeBody>(&format!(
                r#"{{"opponent_id": "bo", "time_control": "5+3", "variant": "standard", "rated": true, "expires_in_s": {json}}}"#
            ))
            .map(|body| body.expires_in_s)
            .map_err(|error| error.to_string())
        };
        assert_eq!(lifetime("60.0"), Ok(Some(60)));
        assert!(lifetime("-1").is_err());
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
