//! The HTTP API (SPEC §4) on actix-web: the app factory and the server start.
//!
//! Handlers never wait synchronously: lookups read the engine's concurrent index, and the
//! operations that need an actor are awaited as futures, so a worker thread is never parked
//! and the actors' threads are never borrowed.

pub(crate) mod access;
mod auth;
mod challenges;
mod cluster;
mod error;
mod forward;
mod health;
mod internal;
mod metrics;
mod openapi;
mod queue;
mod rate_limit;
mod request_id;
mod slot;
mod sse;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::rt::task::JoinHandle;
use actix_web::{App, HttpServer, web};
use prometheus::Registry;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::PoolCatalog;
use crate::health::HealthRegistry;
use crate::jwt::{JwtSecret, TokenScope};
pub use rate_limit::{RateLimit, StreamLimits};
use slot::{EngineRef, Unserved};
pub use slot::{EngineSlot, EngineState};
pub use sse::EventPace;

use self::access::InFlight;
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
    /// How fast each worker sends the events of entries that changed together.
    pub event_pace: EventPace,
    /// How often the rate limiters forget users whose budgets are full again (the
    /// `limiters` task); `None` never.
    pub limiter_cleanup: Option<Duration>,
    /// The pools served, whose time controls, variants and regions the OpenAPI document
    /// lists.
    pub catalog: Arc<PoolCatalog>,
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
    /// The engine every handler talks to, once it has recovered.
    pub(crate) slot: Arc<EngineSlot>,
    /// Where the engine's and the HTTP layer's metrics are registered; `/metrics` answers from
    /// it while the engine recovers too.
    registry: Registry,
    /// The components `/health/ready` reports.
    pub(crate) health: HealthRegistry,
    /// The requests being handled, which a graceful stop waits for.
    in_flight: InFlight,
    /// Token checking with the key decoded once.
    pub(crate) auth: Authenticator,
    /// Largest body accepted, which forwarding holds a request to before sending it on.
    body_limit_bytes: usize,
    /// Per-user write budgets; `None` when limiting is off.
    writes: Option<UserRateLimiter>,
    /// Per-user read budgets, apart from the write budgets so that polling a status never
    /// costs a user their next write; `None` when limiting is off.
    reads: Option<UserRateLimiter>,
    /// The event streams open now. An `Arc` because each stream holds its slot, and gives
    /// it back when dropped, apart from any request.
    streams: Arc<StreamSlots>,
    /// How fast each worker sends change events (see [`EventPace`]).
    pub(crate) event_pace: EventPace,
    /// HTTP metrics, registered in the engine's registry.
    pub(crate) metrics: HttpMetrics,
    /// `/openapi.json`, serialized once.
    pub(crate) openapi_json: String,
    /// The routes, to tell a 405 from a 404 and to label metrics by route template.
    pub(crate) routes: RouteTable,
}

impl AppState {
    /// The engine serving `tenant`, or a refusal while it recovers (or, in cluster mode,
    /// while this node does not serve the tenant's partition).
    pub(crate) fn engine_for(&self, tenant: &str) -> Result<EngineRef<'_>, ApiError> {
        self.slot
            .engine_for(tenant)
            .map_err(|unserved| match unserved {
                Unserved::Recovering => {
                    ApiError::NotReady("the engine is recovering its data; retry later".into())
                }
                Unserved::Elsewhere(reason) => ApiError::NotReady(reason.into()),
            })
    }

    /// Admits a write of `acting`: refused while the engine is not ready (recovering,
    /// stopping, or its journal failed), then counted against the user's budget. The engine
    /// to write to.
    pub(crate) fn admit_write(&self, acting: &Acting<'_>) -> Result<EngineRef<'_>, ApiError> {
        let engine = self.engine_for(acting.tenant)?;
        if self.slot.is_stopping() || !engine.is_ready() {
            return Err(ApiError::NotReady(
                "the engine is not ready; retry later".into(),
            ));
        }
        if let Some(limiter) = &self.writes {
            limiter.check(acting)?;
        }
        Ok(engine)
    }

    /// Admits a read of `acting`: refused while the engine recovers, then counted against
    /// the user's read budget. The engine to read from.
    pub(crate) fn admit_read(&self, acting: &Acting<'_>) -> Result<EngineRef<'_>, ApiError> {
        let engine = self.engine_for(acting.tenant)?;
        if let Some(limiter) = &self.reads {
            limiter.check(acting)?;
        }
        Ok(engine)
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

/// Every route of a cluster node: [`routes`] and the partition map.
fn cluster_routes(config: &mut ServiceConfig<'_>) {
    routes(config);
    config.service(cluster::cluster_map);
}

/// The OpenAPI document of the server whose routes `routes` lists, as utoipa generates it
/// from them: their paths, methods and types, without what the server enforces beyond the
/// types.
fn document(routes: fn(&mut ServiceConfig<'_>)) -> utoipa::openapi::OpenApi {
    let (_, document) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts();
    document
}

/// The OpenAPI document of the API serving `catalog`, stating what the server enforces on
/// requests: a body or parameter its schemas allow is not refused as invalid.
pub fn openapi(catalog: &PoolCatalog) -> serde_json::Value {
    exact_openapi(&document(routes), catalog)
}

fn exact_openapi(generated: &utoipa::openapi::OpenApi, catalog: &PoolCatalog) -> serde_json::Value {
    let mut document =
        serde_json::to_value(generated).expect("the generated document is plain JSON");
    openapi::state_the_rules(&mut document, catalog);
    document
}

/// A started server.
pub struct RunningServer {
    /// The addresses it listens on (with the ports actually bound).
    pub addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    /// The server's own task, which ends once it has stopped.
    running: JoinHandle<std::io::Result<()>>,
    /// What the workers share: a drain waits on its count of requests in flight.
    state: web::Data<AppState>,
}

impl RunningServer {
    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs until the server stops (through its handle, or [`RunningServer::drain`]).
    pub async fn wait(self) -> std::io::Result<()> {
        self.running.await.map_err(std::io::Error::other)?
    }

    /// Stops the server: no new connection is accepted, the requests in flight get up to
    /// `within` to be answered, then every connection is closed (idle keep-alive connections
    /// and event streams would otherwise hold a stop until their clients go). Whether every
    /// request in flight was answered. Call [`EngineSlot::begin_stop`] first, so that writes
    /// are refused and answers close their connections meanwhile.
    pub async fn drain(self, within: Duration) -> std::io::Result<bool> {
        self.handle.pause().await;
        let answered = tokio::time::timeout(within, self.state.in_flight.drained())
            .await
            .is_ok();
        self.handle.stop(false).await;
        self.wait().await?;
        Ok(answered)
    }
}

/// Binds and starts the server on the current actix system, serving the engine of `slot`
/// once it is there (and answering 503 `UNAVAILABLE` meanwhile, but for health, metrics and
/// the OpenAPI document). `registry` holds the engine's metrics, and gets the HTTP layer's;
/// `health` is what `/health/ready` reports. The engine is not stopped when the server stops:
/// the caller does that once [`RunningServer::drain`] or [`RunningServer::wait`] returns.
pub fn start(
    slot: Arc<EngineSlot>,
    registry: Registry,
    health: HealthRegistry,
    secret: &JwtSecret,
    settings: &HttpSettings,
) -> Result<RunningServer, HttpError> {
    let routes = if slot.is_clustered() {
        cluster_routes
    } else {
        routes
    };
    let generated = document(routes);
    let state = web::Data::new(AppState {
        metrics: HttpMetrics::register(&registry)?,
        slot,
        registry,
        health,
        in_flight: InFlight::default(),
        auth: Authenticator::new(secret, &settings.tokens),
        body_limit_bytes: settings.body_limit_bytes,
        writes: settings
            .rate_limit
            .map(|rate| UserRateLimiter::new(rate, Limit::Writes)),
        reads: settings
            .read_rate_limit
            .map(|rate| UserRateLimiter::new(rate, Limit::Reads)),
        streams: StreamSlots::new(settings.streams),
        event_pace: settings.event_pace,
        openapi_json: exact_openapi(&generated, &settings.catalog).to_string(),
        routes: RouteTable::new(&generated),
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
            .wrap(from_fn(access::observe))
    })
    .workers(settings.workers.max(1))
    // A client that closes its side of the connection is gone: otherwise actix keeps an
    // event stream going until a write fails, which takes two keep-alives (30 s), and the
    // stream's slot stays taken meanwhile. Clients hardly ever half-close while waiting for an
    // answer, and nginx aborts a proxied request whose client closes, too.
    .h1_allow_half_closed(false)
    // The caller decides when to stop (`RunningServer::drain`), after its own steps: actix's
    // handling of SIGTERM would stop the server without them.
    .disable_signals()
    .bind(&settings.listen)
    .map_err(|source| HttpError::Bind {
        address: settings.listen.clone(),
        source,
    })?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    // Its workers start when it is first polled; they must serve while the engine recovers.
    let running = actix_web::rt::spawn(server);
    Ok(RunningServer {
        addrs,
        handle,
        running,
        state,
    })
}
