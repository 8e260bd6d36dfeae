//! The live-game service client (SPEC §5): creates games over HTTP.
//!
//! `POST {base}/v1/games` with `Idempotency-Key: <match_id>` and, when configured, a bearer
//! token; the service answers 200/201 `{"game_id"}`. Timeouts, refused connections, 5xx, 408
//! and 429 are transient (the engine retries with backoff); other answers are permanent.

use std::time::Duration;

use compact_str::CompactString;
use futures::future::BoxFuture;
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
        let response = call
            .send()
            .await
            .map_err(|error| GameCreationError::Transient(describe(&error)))?;
        let status = response.status();
        if status.is_success() {
            // Transient: the game may exist, and a retry under the same idempotency key
            // fetches its id without creating another.
            let created: Created = response.json().await.map_err(|error| {
                GameCreationError::Transient(format!("unreadable answer: {}", describe(&error)))
            })?;
            if created.game_id.is_empty() {
                return Err(GameCreationError::Permanent("empty game_id".into()));
            }
            return Ok(created.game_id);
        }
        let reason = format!("live-game service answered {status}");
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Err(GameCreationError::Transient(reason))
        } else {
            Err(GameCreationError::Permanent(reason))
        }
    }
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
