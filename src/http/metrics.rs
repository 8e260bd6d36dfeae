//! HTTP metrics (requests by route, method and status; latency by route) in the engine's
//! registry, and the `/metrics` route that exposes that registry.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, get, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::http::AppState;
use crate::http::error::ApiError;

/// Route label of requests that matched no route, so that random paths cannot grow the
/// label set.
const UNMATCHED: &str = "unmatched";

/// The HTTP metrics.
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { requests, latency })
    }
}

/// Middleware: counts and times every request.
pub(crate) async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(request).await?;
    if let Some(state) = state {
        let route = response.request().match_pattern();
        let route = route.as_deref().unwrap_or(UNMATCHED);
        state
            .metrics
            .requests
            .with_label_values(&[
                route,
                response.request().method().as_str(),
                response.status().as_str(),
            ])
            .inc();
        state
            .metrics
            .latency
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}

/// Every metric of the engine and of the HTTP layer.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)),
)]
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let encoder = TextEncoder::new();
    let mut text = Vec::with_capacity(16 * 1024);
    encoder
        .encode(&state.engine.metrics_registry().gather(), &mut text)
        .map_err(|error| ApiError::Unavailable(format!("metrics: {error}")))?;
    Ok(HttpResponse::Ok()
        .content_type(encoder.format_type())
        .body(text))
}
