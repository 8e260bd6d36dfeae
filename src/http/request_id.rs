//! Request ids: every request gets one, an incoming `X-Request-Id` once sanitized or else one
//! made here; the access middleware echoes it in the answer, logs it and puts it on the
//! request's tracing span.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderName, HeaderValue};

/// The header carrying the id.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept from a client.
const MAX_LEN: usize = 64;

/// Ids generated here: a random prefix per process (ids of two runs never collide) and a
/// counter (cheaper than fresh randomness per request).
static PREFIX: LazyLock<String> = LazyLock::new(|| format!("{:08x}", rand::random::<u32>()));
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A byte kept from a client's id.
fn allowed(byte: &u8) -> bool {
    byte.is_ascii_alphanumeric() || b"._:-".contains(byte)
}

/// The client's id reduced to `[A-Za-z0-9._:-]` and [`MAX_LEN`] characters, if anything is
/// left of it. An id that is clean already is shared with the request, not copied.
fn sanitize(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    if !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(allowed) {
        return Some(value.clone());
    }
    let kept: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(allowed)
        .take(MAX_LEN)
        .collect();
    HeaderValue::from_bytes(&kept)
        .ok()
        .filter(|_| !kept.is_empty())
}

fn generate() -> HeaderValue {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{}-{n:x}", *PREFIX))
        .expect("a hex prefix, a dash and a hex counter make a header value")
}

/// The id of `request`.
pub(crate) fn assign(request: &ServiceRequest) -> HeaderValue {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(sanitize)
        .unwrap_or_else(generate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitized(text: &str) -> Option<String> {
        let value = HeaderValue::from_str(text).unwrap();
        sanitize(&value).map(|id| id.to_str().unwrap().to_owned())
    }

    #[test]
    fn client_ids_are_sanitized_and_bounded() {
        assert_eq!(sanitized("abc-123.x:y_z").as_deref(), Some("abc-123.x:y_z"));
        assert_eq!(sanitized("a b<c>\"d\"").as_deref(), Some("abcd"));
        assert_eq!(sanitized(&"x".repeat(500)).unwrap().len(), MAX_LEN);
        assert_eq!(sanitized("<>"), None);
        assert_eq!(sanitized(""), None);
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate(), generate());
    }
}
