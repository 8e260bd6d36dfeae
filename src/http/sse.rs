//! Server-sent events of one queue entry.
//!
//! The stream waits on the engine's change notification for the entry (a tokio watch
//! channel), so it holds no actor thread and no worker thread while nothing happens. It holds
//! a slot of the caps on open streams (per user and in total) until it is dropped: when it
//! ends, or when its client goes away.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, get, web};
use compact_str::CompactString;
use futures::stream;

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

/// Where a stream stands between two events.
struct Progress {
    /// The stream's slot, held for as long as the stream lives.
    _slot: StreamSlot,
    watch: EntryWatch,
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
                running = self.watch.changed() => if !running {
                    return None;
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
