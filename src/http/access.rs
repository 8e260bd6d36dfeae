//! What happens around every request, in one middleware: its id (echoed in the answer and on
//! the tracing span the request runs in), its metrics, its access-log line, and the count of
//! requests in flight that a graceful stop waits on. Once the server is stopping, every
//! answer also closes its connection.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tokio::sync::Notify;
use tracing::{Instrument, Level};

use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::request_id::{self, X_REQUEST_ID};
use crate::log_output::AccessLine;

/// The tracing target of access-log lines, one per request at INFO: operators keep or drop
/// them with `MATCHWELL_LOG` (`info,matchwell::access=off`).
pub(crate) const ACCESS_LOG: &str = "matchwell::access";

/// Whether access-log lines are written, so that what only they need is not gathered
/// otherwise. One cached check per call site.
pub(crate) fn access_logged() -> bool {
    tracing::enabled!(target: ACCESS_LOG, Level::INFO)
}

/// The requests being handled now (from the middleware's start to the answer's head; an
/// event stream's body goes on after), so that a graceful stop can wait until they are
/// answered. A count, and a notification when it falls to zero while someone waits: the
/// waiter sets `draining`, so that the busy path never touches the notification.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// One request in flight, counted until dropped.
struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
    }

    /// Resolves once no request is in flight.
    pub(crate) async fn drained(&self) {
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let mut idle = pin!(self.idle.notified());
            // Registered before the count is read, so a fall to zero in between wakes it.
            idle.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let InFlight {
            count,
            draining,
            idle,
        } = self.0;
        if count.fetch_sub(1, Ordering::SeqCst) == 1 && draining.load(Ordering::SeqCst) {
            idle.notify_waiters();
        }
    }
}

/// The middleware.
pub(crate) async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id::assign(&request);
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let _in_flight = state.as_ref().map(|state| state.in_flight.enter());
    let id_text = id.to_str().unwrap_or_default();
    // At debug level: an INFO span would cost every request a formatted copy of its fields in
    // the log layer, and the access line carries the id anyway; with debug logs on, every
    // event of the request carries it too.
    let span = tracing::debug_span!("request", request_id = %id_text);
    let mut response = next.call(request).instrument(span).await?;
    if let Some(state) = &state {
        let elapsed = started.elapsed();
        let request = response.request();
        let route = state.routes.route_of(request);
        let status = response.status();
        state
            .metrics
            .observe(route, request.method(), status, elapsed);
        if access_logged() {
            let extensions = request.extensions();
            let caller = extensions.get::<Caller>();
            AccessLine {
                method: request.method().as_str(),
                route,
                status: status.as_u16(),
                latency_us: elapsed.as_micros() as u64,
                request_id: id_text,
                tenant: caller.map(Caller::tenant),
                user: caller.map(Caller::user),
            }
            .log();
        }
        if state.slot.is_stopping() {
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
    }
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_waits_for_the_requests_in_flight() {
        let in_flight = InFlight::default();
        in_flight.drained().await;
        let first = in_flight.enter();
        let second = in_flight.enter();
        let mut drained = pin!(in_flight.drained());
        assert!(futures::poll!(drained.as_mut()).is_pending());
        drop(first);
        assert!(futures::poll!(drained.as_mut()).is_pending());
        drop(second);
        drained.await;
    }
}
