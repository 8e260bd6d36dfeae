//! Request ids: every request gets one (an incoming `X-Request-Id` is honoured once
//! sanitized), it is echoed in the response and recorded in the request's tracing span.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The header carrying the id.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept from a client.
const MAX_LEN: usize = 64;

/// Ids generated here: a random prefix per process (ids of two runs never collide) and a
/// counter (cheaper than fresh randomness per request).
static PREFIX: LazyLock<String> = LazyLock::new(|| format!("{:08x}", rand::random::<u32>()));
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The client's id reduced to `[A-Za-z0-9._:-]` and [`MAX_LEN`] characters, if anything is
/// left of it.
fn sanitize(value: &HeaderValue) -> Option<String> {
    let kept: String = value
        .as_bytes()
        .iter()
        .filter(|byte| byte.is_ascii_alphanumeric() || b"._:-".contains(byte))
        .take(MAX_LEN)
        .map(|&byte| char::from(byte))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

fn generate() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n:x}", *PREFIX)
}

/// Middleware: assigns the id, runs the request inside a span carrying it, echoes it.
pub(crate) async fn assign(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(sanitize)
        .unwrap_or_else(generate);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.path(),
    );
    let mut response = next.call(request).instrument(span).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_sanitized_and_bounded() {
        let clean = HeaderValue::from_static("abc-123.x:y_z");
        assert_eq!(sanitize(&clean).as_deref(), Some("abc-123.x:y_z"));
        let dirty = HeaderValue::from_static("a b<c>\"d\"");
        assert_eq!(sanitize(&dirty).as_deref(), Some("abcd"));
        let long = HeaderValue::from_str(&"x".repeat(500)).unwrap();
        assert_eq!(sanitize(&long).unwrap().len(), MAX_LEN);
        assert_eq!(sanitize(&HeaderValue::from_static("<>")), None);
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate(), generate());
    }
}
