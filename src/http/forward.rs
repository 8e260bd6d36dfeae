//! Cluster mode: a request of a tenant whose partition another node serves is forwarded to
//! that node, and its answer relayed unchanged (status, headers, body; an event stream as a
//! stream), so that every route has one implementation and the answer through any node is the
//! owner's. Wraps every route that serves a tenant; on a single node it only passes requests
//! on.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName};
use actix_web::middleware::Next;
use actix_web::web::BytesMut;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures::StreamExt;

use crate::cluster::{Node, Route};
use crate::http::AppState;
use crate::http::error::ApiError;

/// The header a forwarded request carries, naming the node that forwarded it: a node never
/// forwards such a request again, so two nodes with different views of a partition cannot
/// pass a request back and forth.
static FORWARDED_BY: HeaderName = HeaderName::from_static("x-matchwell-forwarded-by");

/// How long a connection to another node may take: nodes are on one network, and a node
/// that does not answer this fast is as good as gone for the caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a forwarded answer may go without sending anything: above the event streams'
/// keep-alive period (15 s), so that an idle stream is not cut.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle pooled connection to another node is kept: below actix-web's keep-alive
/// (5 s), so that a request is never sent on a connection the owner is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Headers of one connection, not of the message (RFC 9110 §7.6.1), and the length, which the
/// relay sets itself.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

thread_local! {
    /// One client per worker thread: its pooled connections then live on the worker's own
    /// runtime, which drives them.
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE)
        .build()
        .expect("a client without custom TLS settings builds");
}

/// The middleware: serves the request here when this node serves the caller's partition (or
/// the server runs alone, or the caller has no valid token, which the handler answers),
/// forwards it when another node does, and answers 503 `UNAVAILABLE` with `Retry-After`
/// while nobody does.
pub(crate) async fn to_owner(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let node = state.as_ref().and_then(|state| state.slot.node());
    let (Some(state), Some(node)) = (&state, node) else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let Ok(caller) = state.auth.authenticate(request.request()) else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let reason = match node.route(caller.tenant()) {
        Route::Local(_) => return Ok(next.call(request).await?.map_into_boxed_body()),
        Route::Unavailable(reason) => reason,
        Route::Remote(_) if request.headers().contains_key(&FORWARDED_BY) => {
            "the node this request was forwarded to does not serve its partition either (a \
             partition is moving); retry shortly"
                .to_owned()
        }
        Route::Remote(holder) => {
            let owner = format!("node {} at {}", holder.node.id(), holder.node.http());
            let (http, payload) = request.into_parts();
            let (outcome, response) =
                match forward(&http, payload, holder.node.http(), node, state).await {
                    Ok(response) => ("relayed", response),
                    Err(ForwardError::Body(refused)) => ("refused", refused.error_response()),
                    Err(ForwardError::Owner(error)) => (
                        "unreachable",
                        ApiError::NotReady(
                            format!(
                                "the owner of this tenant's partition, {owner}, did not answer: \
                                 {error}"
                            )
                            .into(),
                        )
                        .error_response(),
                    ),
                };
            node.metrics().forwarded.with_label_values(&[outcome]).inc();
            return Ok(ServiceResponse::new(http, response));
        }
    };
    node.metrics()
        .forwarded
        .with_label_values(&["no_owner"])
        .inc();
    Ok(request.error_response(ApiError::NotReady(reason.into())))
}

/// Why a request could not be relayed.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    /// The body could not be read, or is over the limit: answered as the handler would.
    #[error("{0}")]
    Body(ApiError),
    /// The owner did not answer.
    #[error(transparent)]
    Owner(#[from] reqwest::Error),
}

/// Sends `http` with its body to `owner` (a base URL) and relays the answer.
async fn forward(
    http: &HttpRequest,
    mut payload: actix_web::dev::Payload,
    owner: &str,
    node: &Node,
    state: &AppState,
) -> Result<HttpResponse, ForwardError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ForwardError::Body(ApiError::InvalidRequest {
                field: None,
                message: format!("unreadable body: {error}"),
            })
        })?;
        if body.len() + chunk.len() > state.body_limit_bytes {
            return Err(ForwardError::Body(ApiError::PayloadTooLarge {
                limit: state.body_limit_bytes,
            }));
        }
        body.extend_from_slice(&chunk);
    }
    let path = http
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let method = reqwest::Method::from_bytes(http.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut request = CLIENT.with(|client| client.request(method, format!("{owner}{path}")));
    for (name, value) in http.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = request
        .header(FORWARDED_BY.as_str(), node.id())
        .body(body.freeze())
        .send()
        .await?;
    relay(answer).await
}

/// The owner's answer as this node's: its status and headers, and its body, streamed when it
/// is an event stream.
async fn relay(answer: reqwest::Response) -> Result<HttpResponse, ForwardError> {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    let streamed = answer
        .headers()
        .get(CONTENT_TYPE.as_str())
        .is_some_and(|kind| kind.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        return Ok(response.streaming(answer.bytes_stream()));
    }
    Ok(response.body(answer.bytes().await?))
}
