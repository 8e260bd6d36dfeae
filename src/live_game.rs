//! The live-game service client (SPEC §5): creates games over HTTP.
//!
//! `POST {base}/v1/games` with `Idempotency-Key: <match_id>` and, when configured, a bearer
//! token; the service answers 200/201 `{"game_id"}`. Timeouts, refused connections, 5xx, 408
//! and 429 are transient (the engine retries with backoff; a 429 or 503 with `Retry-After`,
//! in seconds or as an HTTP date, not before that time); other answers are permanent.

use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::{GameCreationError, GameCreator, GameRequest};

/// Where the live-game service is and how to call it.
#[derive(Debug, Clone)]
pub struct LiveGameSettings {
    /// Base URL; `/v1/games` is appended.
    pub url: Url,
    /// Sent as a bearer token when set.
    pub token: Option<String>,
    /// Longest wait for an answer, connection included.
    pub timeout: Duration,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LiveGameError {
    /// The URL cannot take a path.
    #[error("live-game API URL `{0}` must be an http or https URL")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("could not build the live-game HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A [`GameCreator`] that calls the live-game service.
#[derive(Debug, Clone)]
pub struct HttpGameCreator {
    client: reqwest::Client,
    games_url: Url,
    bearer: Option<String>,
}

#[derive(Serialize)]
struct PlayerBody<'a> {
    user_id: &'a str,
    /// `null` for challenges, which carry no rating.
    rating: Option<u16>,
    color: crate::Color,
}

#[derive(Serialize)]
struct GameBody<'a> {
    match_id: &'a str,
    time_control: String,
    variant: &'a str,
    rated: bool,
    players: Vec<PlayerBody<'a>>,
}

#[derive(Deserialize)]
struct Created {
    game_id: CompactString,
}

impl HttpGameCreator {
    /// A client for `settings`.
    pub fn new(settings: &LiveGameSettings) -> Result<Self, LiveGameError> {
        let url = &settings.url;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(LiveGameError::Url(url.to_string()));
        }
        let games_url = Url::parse(&format!("{}/v1/games", url.as_str().trim_end_matches('/')))
            .map_err(|_| LiveGameError::Url(url.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()?;
        Ok(Self {
            client,
            games_url,
            bearer: settings.token.clone(),
        })
    }

    async fn create(self, request: GameRequest) -> Result<CompactString, GameCreationError> {
        let body = GameBody {
            match_id: &request.match_id,
            time_control: request.time_control.to_string(),
            variant: &request.variant,
            rated: request.rated,
            players: request
                .players
                .iter()
                .map(|player| PlayerBody {
                    user_id: &player.user_id,
                    rating: player.rating,
                    color: player.color,
                })
                .collect(),
        };
        let mut call = self
            .client
            .post(self.games_url.clone())
            .header("Idempotency-Key", &request.match_id)
            .json(&body);
        if let Some(token) = &self.bearer {
            call = call.bearer_auth(token);
        }
        let response = call.send().await.map_err(|error| unanswered(&error, ""))?;
        let status = response.status();
        if status.is_success() {
            // Transient: the game may exist, and a retry under the same idempotency key
            // fetches its id without creating another.
            let created: Created = response
                .json()
                .await
                .map_err(|error| unanswered(&error, "unreadable answer: "))?;
            if created.game_id.is_empty() {
                return Err(GameCreationError::Permanent("empty game_id".into()));
            }
            return Ok(created.game_id);
        }
        let reason = format!("live-game service answered {status}");
        let hint = (status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE)
            .then(|| retry_after(response.headers(), SystemTime::now()))
            .flatten();
        match hint {
            Some(after) => Err(GameCreationError::retry_after(reason, after)),
            None if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT =>
            {
                Err(GameCreationError::transient(reason))
            }
            None => Err(GameCreationError::Permanent(reason)),
        }
    }
}

/// A call that got no usable answer: timed out, or failed otherwise (transient either way).
fn unanswered(error: &reqwest::Error, context: &str) -> GameCreationError {
    let reason = format!("{context}{}", describe(error));
    if error.is_timeout() {
        GameCreationError::TimedOut(reason)
    } else {
        GameCreationError::transient(reason)
    }
}

/// How long `Retry-After` asks to wait, as seen at `now`: a number of seconds or an HTTP
/// date (a date already past asks for no wait). `None` without a header that says either.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The error with its causes, which reqwest keeps apart (`error sending request` alone does
/// not say that the connection was refused).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl GameCreator for HttpGameCreator {
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        Box::pin(self.clone().create(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let at = |text: &str, now: SystemTime| retry_after(&headers(text), now);
        assert_eq!(at("2", date), Some(Duration::from_secs(2)));
        assert_eq!(at(" 120 ", date), Some(Duration::from_secs(120)));
        assert_eq!(at("0", date), Some(Duration::ZERO));
        let before = date - Duration::from_millis(2_500);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                at(form, before),
                Some(Duration::from_millis(2_500)),
                "{form}"
            );
            assert_eq!(
                at(form, date + Duration::from_secs(5)),
                Some(Duration::ZERO),
                "a date past asks for no wait: {form}"
            );
        }
        for nonsense in ["-1", "1.5", "soon", "", "Sun, 06 Nov 1994"] {
            assert_eq!(at(nonsense, date), None, "{nonsense:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), date), None);
    }
}
