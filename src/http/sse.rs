//! Server-sent events of one queue entry.
//!
//! The stream waits on the engine's change notification for the entry (a tokio watch
//! channel), so it holds no actor thread and no worker thread while nothing happens. It holds
//! a slot of the caps on open streams (per user and in total) until it is dropped: when it
//! ends, or when its client goes away.
//!
//! A wave changes every entry it pairs at once, and each worker thread would then write a
//! thousand events before it reads the next request, while the clients read them on the same
//! machines. So each worker spreads its events at a steady [`EventPace`] beyond a burst of a
//! millisecond's worth: a request waits behind a millisecond of events at most, and a wave's
//! last event goes out some tens of milliseconds after its first.

use std::cell::Cell;
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, get, web};
use compact_str::CompactString;
use futures::stream;
use tokio::time::Instant;

use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::queue::owned_entry;
use crate::http::rate_limit::StreamSlot;
use crate::http::views::{ActAs, EntryView, ErrorBody};
use crate::{Entry, EntryWatch};

/// A comment line sent when nothing happened for this long, so that idle proxies keep the
/// connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How fast one worker thread sends change events while more are due than it sends at once:
/// the time between two events at the steady pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPace(Duration);

impl EventPace {
    /// `events` per millisecond per worker thread, and as many at once.
    pub fn per_ms(events: NonZeroU32) -> Self {
        Self(Duration::from_nanos(1_000_000 / u64::from(events.get())))
    }
}

/// The pace of change events on one worker thread: a generic cell rate algorithm whose
/// horizon each event moves one spacing further, so every waiting event holds its own slot
/// (a limiter that only says "not yet" would wake every waiting stream at each free slot).
#[derive(Debug, Default)]
struct EventPacer {
    /// When the events already let through would all have gone at the steady pace.
    horizon: Option<Instant>,
}

impl EventPacer {
    /// How far ahead of the steady pace a burst may run: a millisecond's events.
    const BURST: Duration = Duration::from_millis(1);

    /// Takes the next slot for an event due at `now`: `None` when it may go at once, or when
    /// it may go.
    fn reserve(&mut self, now: Instant, pace: EventPace) -> Option<Instant> {
        let idle_since = now.checked_sub(Self::BURST).unwrap_or(now);
        let horizon = self
            .horizon
            .map_or(idle_since, |horizon| horizon.max(idle_since))
            + pace.0;
        self.horizon = Some(horizon);
        (horizon > now).then_some(horizon)
    }
}

thread_local! {
    /// Each worker thread's pacer: a stream is only ever polled by the worker that accepted
    /// its connection, and it is that worker's time the pace shares out.
    static PACER: Cell<EventPacer> = Cell::default();
}

/// Waits for this worker's next slot to send a change event.
async fn event_slot(pace: EventPace) {
    let slot = PACER.with(|pacer| {
        let mut state = pacer.take();
        let slot = state.reserve(Instant::now(), pace);
        pacer.set(state);
        slot
    });
    if let Some(slot) = slot {
        tokio::time::sleep_until(slot).await;
    }
}

/// Where a stream stands between two events.
struct Progress {
    /// The stream's slot, held for as long as the stream lives.
    _slot: StreamSlot,
    watch: EntryWatch,
    pace: EventPace,
    tenant: CompactString,
    /// The entry last sent, without what moves with the clock alone (see [`unclocked`]).
    last: Option<Entry>,
}

/// `entry` without its wait and window, which grow with time and are no change of the entry:
/// a stream polled again a millisecond after an event must not send the entry again.
fn unclocked(entry: &Entry) -> Entry {
    Entry {
        wait_ms: 0,
        window: 0,
        ..entry.clone()
    }
}

impl Progress {
    /// The next chunk to send, or `None` when the stream is over.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Option<Self>)> {
        loop {
            let entry = self.watch.current()?;
            let unclocked = unclocked(&entry);
            if self.last.as_ref() != Some(&unclocked) {
                self.last = Some(unclocked);
                let view = EntryView::new(&entry, &self.tenant);
                let event = Bytes::from(format!(
                    "event: entry\ndata: {}\n\n",
                    serde_json::to_string(&view).unwrap_or_default()
                ));
                let next = (!view.is_final()).then_some(self);
                return Some((Ok(event), next));
            }
            tokio::select! {
                running = self.watch.changed() => {
                    if !running {
                        return None;
                    }
                    // What changes while the event waits for its slot goes out with it.
                    event_slot(self.pace).await;
                },
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), Some(self)));
                }
            }
        }
    }
}

/// Streams the entry as `text/event-stream`: an `entry` event with the entry JSON now and on
/// every change; the stream ends once nothing more can happen to the entry (cancelled,
/// expired, or matched with its game created).
#[utoipa::path(
    tag = "queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Entry id (`q_…`)"), ActAs),
    responses(
        (status = 200, description = "`event: entry` / `data: <entry JSON>` on every change", content_type = "text/event-stream", body = String),
        (status = 400, description = "`INVALID_REQUEST`: malformed query", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `user_id` names another user and the token is not a service's", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: too many reads, or too many event streams open for this user or on the server; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: the engine is recovering; see `Retry-After`", body = ErrorBody),
    ),
)]
#[get(
    "/v1/matchmaking/queue/{id}/events",
    wrap = "actix_web::middleware::from_fn(crate::http::forward::to_owner)"
)]
pub(crate) async fn entry_events(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<ActAs>,
) -> Result<HttpResponse, ApiError> {
    let acting = caller.act_as(query.user_id.as_deref())?;
    let engine = state.admit_read(&acting)?;
    let entry = owned_entry(&engine, &acting, &id)?;
    let watch = engine
        .watch_entry(acting.tenant, entry.id)
        .ok_or(ApiError::NotFound)?;
    let first = Progress {
        _slot: state.open_stream(&acting)?,
        watch,
        pace: state.event_pace,
        tenant: acting.tenant.into(),
        last: None,
    };
    let events = stream::unfold(
        Some(first),
        |progress| async move { progress?.next().await },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS_PER_MS: u32 = 10;

    fn pace() -> EventPace {
        EventPace::per_ms(NonZeroU32::new(EVENTS_PER_MS).unwrap())
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_steady_pace() {
        let mut pacer = EventPacer::default();
        let now = Instant::now();
        for sent in 0..EVENTS_PER_MS {
            assert_eq!(
                pacer.reserve(now, pace()),
                None,
                "event {sent} of the burst"
            );
        }
        let slots: Vec<_> = (0..3).map(|_| pacer.reserve(now, pace())).collect();
        assert_eq!(
            slots,
            [1, 2, 3].map(|n| Some(now + Duration::from_micros(100) * n)),
            "each waiting event holds its own slot"
        );
    }

    #[test]
    fn an_idle_worker_has_its_burst_back() {
        let mut pacer = EventPacer::default();
        let now = Instant::now();
        for _ in 0..2 * EVENTS_PER_MS {
            pacer.reserve(now, pace());
        }
        let a_burst_later = now + Duration::from_millis(1);
        assert!(
            pacer.reserve(a_burst_later, pace()).is_some(),
            "still behind"
        );
        let later = now + Duration::from_millis(3);
        for sent in 0..EVENTS_PER_MS {
            assert_eq!(
                pacer.reserve(later, pace()),
                None,
                "event {sent} after the pause"
            );
        }
        assert!(pacer.reserve(later, pace()).is_some());
    }
}
