//! HTTP metrics (requests by route, method and status; latency by route) in the engine's
//! registry, and the `/metrics` route that exposes that registry.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, get, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::health::{HealthReport, HealthStatus};
use crate::http::AppState;
use crate::http::error::ApiError;

/// Method label of requests whose method is none of [`KNOWN_METHODS`]: HTTP lets a client
/// send any token as a method, and each would otherwise become series of its own.
const OTHER_METHOD: &str = "other";

/// The methods of RFC 9110, each its own label.
static KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// The HTTP metrics. Every label comes from a fixed set, whatever clients send, so that
/// neither the registry nor `/metrics` grows with traffic: `route` is a route's path
/// template or `unmatched` (see `RouteTable::route_of`), `method` one of [`KNOWN_METHODS`] or [`OTHER_METHOD`], and
/// `status` the status code, which the server chooses (its handlers' answers and actix's
/// own, a few dozen codes at most) and which tells more than its class.
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Readiness as `/health/ready` would answer at the last scrape, so that an alert can
    /// follow it without a prober: 1 for 200, 0 for 503.
    ready: IntGauge,
    /// Each readiness component's status at the last scrape: 1 for its current status, 0 for
    /// the others. Components are the server's own, a fixed few.
    health: IntGaugeVec,
}

impl HttpMetrics {
    /// Registers the metrics in `registry`.
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "matchwell_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "matchwell_http_request_duration_seconds",
                "HTTP request latency by route, until the response head is ready",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )?;
        let ready = IntGauge::new(
            "matchwell_ready",
            "1 while /health/ready answers 200 (healthy or degraded), 0 while it answers 503",
        )?;
        let health = IntGaugeVec::new(
            Opts::new(
                "matchwell_health",
                "Readiness components: 1 for each one's current status (healthy, degraded, unhealthy)",
            ),
            &["component", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(health.clone()))?;
        Ok(Self {
            requests,
            latency,
            ready,
            health,
        })
    }

    /// Sets the readiness gauges from `report`.
    fn record_health(&self, report: &HealthReport) {
        self.ready.set(i64::from(report.status.is_ready()));
        for component in &report.components {
            for status in HealthStatus::ALL {
                self.health
                    .with_label_values(&[component.name, status.as_str()])
                    .set(i64::from(component.health.status == status));
            }
        }
    }

    /// Counts and times one request of `route` (a template, see `RouteTable::route_of`).
    pub(crate) fn observe(
        &self,
        route: &str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.requests
            .with_label_values(&[route, method_label(method), status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}

/// The label of `method`.
fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| *known == method)
        .map_or(OTHER_METHOD, Method::as_str)
}

/// Every metric of the engine and of the HTTP layer.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)),
)]
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.metrics.record_health(&state.health.report());
    let encoder = TextEncoder::new();
    let mut text = Vec::with_capacity(16 * 1024);
    encoder
        .encode(&state.registry.gather(), &mut text)
        .map_err(|error| ApiError::Unavailable(format!("metrics: {error}")))?;
    Ok(HttpResponse::Ok()
        .content_type(encoder.format_type())
        .body(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_known_set_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::TRACE), "TRACE");
        for made_up in ["XQZ123", "get", "PROPFIND", &"M".repeat(1024)] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("a token");
            assert_eq!(method_label(&method), OTHER_METHOD, "{made_up}");
        }
    }
}
