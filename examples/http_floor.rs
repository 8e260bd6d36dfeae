//! The floor under the HTTP load test: an actix-web server with the same worker count as
//! `matchwell serve` that answers the load test's routes with a fixed entry and does nothing
//! else — no engine, no token check, no journal, no metrics.
//!
//! `SERVER=floor scripts/loadtest.sh` drives it with exactly the load of a real run, so the
//! figures say what the load generator, the kernel's loopback TCP and actix-web itself cost on
//! this machine, and the difference to a real run is what matchwell adds.
//!
//! ```text
//! cargo run --release --example http_floor -- 127.0.0.1:0
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// Entry ids handed out, like the engine's `q_<hex>` ids.
static NEXT_ENTRY: AtomicU64 = AtomicU64::new(1);

/// An entry as `GET /v1/matchmaking/queue/{id}` shows a searching one, with the request's
/// `X-Request-Id` echoed as the real server does (the load test's script relies on it).
fn entry(request: &HttpRequest, status: StatusCode, id: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if let Some(request_id) = request.headers().get("x-request-id") {
        response.insert_header(("x-request-id", request_id.clone()));
    }
    response.content_type("application/json").body(format!(
        r#"{{"id":"{id}","tenant":"default","user_id":"load","time_control":"5+3","variant":"standard","rated":true,"region":null,"rating":1500,"joined_at":"2026-01-01T00:00:00.000Z","expires_at":"2026-01-01T00:10:00.000Z","status":"searching","window":100,"wait_s":0.0,"match":null}}"#
    ))
}

async fn enqueue(request: HttpRequest, _body: web::Bytes) -> HttpResponse {
    let id = format!("q_{:x}", NEXT_ENTRY.fetch_add(1, Ordering::Relaxed));
    entry(&request, StatusCode::CREATED, &id)
}

async fn show(request: HttpRequest, id: web::Path<String>) -> HttpResponse {
    entry(&request, StatusCode::OK, &id)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let server = HttpServer::new(|| {
        App::new()
            .route("/v1/matchmaking/queue", web::post().to(enqueue))
            .route("/v1/matchmaking/queue/{id}", web::get().to(show))
            .route("/v1/matchmaking/queue/{id}", web::delete().to(show))
            // The load test waits for readiness before it starts; the floor is ready at once.
            .route(
                "/health/ready",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            )
    })
    .workers(std::thread::available_parallelism().map_or(1, usize::from))
    .bind(&listen)?;
    for address in server.addrs() {
        eprintln!("http_floor listening on http://{address}");
    }
    server.run().await?;
    Ok(())
}
