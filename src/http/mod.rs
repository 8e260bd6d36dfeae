//! The HTTP API (SPEC §4) on actix-web: the app factory and the server start.
//!
//! Handlers never wait synchronously: lookups read the engine's concurrent index, and the
//! operations that need an actor are awaited as futures, so a worker thread is never parked
//! and the actors' threads are never borrowed.

mod auth;
mod challenges;
mod error;
mod health;
mod internal;
mod metrics;
mod openapi;
mod queue;
mod rate_limit;
mod request_id;
mod sse;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::Engine;
use crate::jwt::{JwtSecret, TokenScope};
pub use rate_limit::{RateLimit, StreamLimits};

use self::auth::{Acting, Authenticator};
use self::error::{ApiError, Limit};
use self::metrics::HttpMetrics;
use self::openapi::{ApiDoc, RouteTable};
use self::rate_limit::{StreamSlot, StreamSlots, UserRateLimiter};

/// How the HTTP server runs.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Worker threads.
    pub workers: usize,
    /// Largest JSON body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// The audience and issuer tokens must name, where set.
    pub tokens: TokenScope,
    /// Per-user write limit; `None` turns limiting off.
    pub rate_limit: Option<RateLimit>,
    /// Per-user read limit (the routes that need a token and change nothing); `None` turns
    /// limiting off.
    pub read_rate_limit: Option<RateLimit>,
    /// Event streams open at once, per user and in total.
    pub streams: StreamLimits,
    /// How long a graceful stop waits for open requests (and event streams).
    pub shutdown_timeout: Duration,
    /// How often the rate limiters forget users whose budgets are full again (the
    /// `limiters` task); `None` never.
    pub limiter_cleanup: Option<Duration>,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP metrics could not be registered.
    #[error("could not register HTTP metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What every worker shares. One value behind `web::Data` (an `Arc`): the engine and the
/// limiter must be the same for all workers (a user's requests land on any of them), and the
/// pieces that are costly to build per request — the decoded JWT key, the serialized OpenAPI
/// document, the route table — are built once at start.
pub(crate) struct AppState {
    /// The engine every handler talks to.
    pub(crate) engine: Arc<Engine>,
    /// Token checking with the key decoded once.
    pub(crate) auth: Authenticator,
    /// Per-user write budgets; `None` when limiting is off.
    writes: Option<UserRateLimiter>,
    /// Per-user read budgets, apart from the write budgets so that polling a status never
    /// costs a user their next write; `None` when limiting is off.
    reads: Option<UserRateLimiter>,
    /// The event streams open now. An `Arc` because each stream holds its slot, and gives
    /// it back when dropped, apart from any request.
    streams: Arc<StreamSlots>,
    /// HTTP metrics, registered in the engine's registry.
    pub(crate) metrics: HttpMetrics,
    /// `/openapi.json`, serialized once.
    pub(crate) openapi_json: String,
    /// The routes, to tell a 405 from a 404 and to label metrics by route template.
    pub(crate) routes: RouteTable,
}

impl AppState {
    /// Admits a write of `acting`: refused while the engine is not ready (starting, stopping,
    /// or its journal failed), then counted against the user's budget.
    pub(crate) fn admit_write(&self, acting: &Acting<'_>) -> Result<(), ApiError> {
        if !self.engine.is_ready() {
            return Err(ApiError::Unavailable(
                "the engine is not ready; retry later".into(),
            ));
        }
        match &self.writes {
            Some(limiter) => limiter.check(acting),
            None => Ok(()),
        }
    }

    /// Admits a read of `acting`: counted against the user's read budget.
    pub(crate) fn admit_read(&self, acting: &Acting<'_>) -> Result<(), ApiError> {
        match &self.reads {
            Some(limiter) => limiter.check(acting),
            None => Ok(()),
        }
    }

    /// A slot for an event stream of `acting`, refused when the user or the server has as
    /// many streams open as allowed.
    pub(crate) fn open_stream(&self, acting: &Acting<'_>) -> Result<StreamSlot, ApiError> {
        self.streams.take(acting)
    }
}

/// Every route. The OpenAPI document is collected from this same list, so the two cannot
/// drift apart. Fixed paths come before the `{id}` path that would also match them.
fn routes(config: &mut ServiceConfig<'_>) {
    config
        .service(queue::enqueue)
        .service(queue::get_entry)
        .service(queue::cancel_entry)
        .service(sse::entry_events)
        .service(queue::active)
        .service(challenges::create_challenge)
        .service(challenges::incoming_challenges)
        .service(challenges::outgoing_challenges)
        .service(challenges::get_challenge)
        .service(challenges::accept_challenge)
        .service(challenges::decline_challenge)
        .service(challenges::cancel_challenge)
        .service(internal::queues_summary)
        .service(metrics::metrics)
        .service(health::live)
        .service(health::ready)
        .service(openapi::openapi_json);
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, document) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts();
    document
}

/// A started server.
pub struct RunningServer {
    /// The addresses it listens on (with the ports actually bound).
    pub addrs: Vec<SocketAddr>,
    server: Server,
}

impl RunningServer {
    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until the server stops (SIGINT, SIGTERM, or the handle).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Binds and starts the server on the current actix system. The engine is not stopped when
/// the server stops: the caller does that once [`RunningServer::wait`] returns.
pub fn start(
    engine: Arc<Engine>,
    secret: &JwtSecret,
    settings: &HttpSettings,
) -> Result<RunningServer, HttpError> {
    let document = openapi();
    let state = web::Data::new(AppState {
        metrics: HttpMetrics::register(engine.metrics_registry())?,
        engine,
        auth: Authenticator::new(secret, &settings.tokens),
        writes: settings
            .rate_limit
            .map(|rate| UserRateLimiter::new(rate, Limit::Writes)),
        reads: settings
            .read_rate_limit
            .map(|rate| UserRateLimiter::new(rate, Limit::Reads)),
        streams: StreamSlots::new(settings.streams),
        openapi_json: document.to_json().unwrap_or_default(),
        routes: RouteTable::new(&document),
    });
    let limited = state.writes.is_some() || state.reads.is_some();
    if let (true, Some(period)) = (limited, settings.limiter_cleanup) {
        let state = state.clone();
        actix_web::rt::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                for limiter in [&state.writes, &state.reads].into_iter().flatten() {
                    limiter.forget_idle();
                }
            }
        });
    }
    let body_limit = settings.body_limit_bytes;
    let factory_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(factory_state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(error::json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .into_utoipa_app()
            .configure(routes)
            .default_service(web::to(openapi::fallback))
            .into_app()
            .wrap(from_fn(metrics::observe))
            .wrap(from_fn(request_id::assign))
    })
    .workers(settings.workers.max(1))
    // A client that closes its side of the connection is gone: otherwise actix keeps an
    // event stream going until a write fails, which takes two keep-alives (30 s), and the
    // stream's slot stays taken meanwhile. Clients hardly ever half-close while waiting for an
    // answer, and nginx aborts a proxied request whose client closes, too.
    .h1_allow_half_closed(false)
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .bind(&settings.listen)
    .map_err(|source| HttpError::Bind {
        address: settings.listen.clone(),
        source,
    })?;
    let addrs = server.addrs();
    Ok(RunningServer {
        addrs,
        server: server.run(),
    })
}
