//! The two ways of reaching matchwell — HTTP with keep-alive connections, or the embedded
//! engine — behind one set of timed operations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use matchwell::{
    Engine, EnqueueRequest, Entry, EntryId, EntryStatus, MatchmakerError, PersistenceConfig,
};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::LoadTestError;
use crate::population::Player;
use crate::report::{Recorder, Route};
use crate::settings::{Credentials, Destination, Plan, Watch};

/// Idle connections of event streams kept for the next player's stream.
const STREAM_CONNECTIONS_KEPT: usize = 4_096;

/// How long an idle connection is kept: below actix-web's keep-alive (5 s), so that no
/// request goes out on a connection the server is closing (which the report would count as
/// a failed request, though a real client would only retry it).
const POOL_IDLE: Duration = Duration::from_secs(4);

/// How long the rest of a settled entry's stream may take to end before its connection is
/// given up.
const STREAM_DRAIN: Duration = Duration::from_secs(5);

/// Where an entry stands, as a player sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub(crate) id: String,
    pub(crate) status: Status,
    /// The entry's wait as the server counts it: for a matched entry, joining to match.
    pub(crate) server_wait: Duration,
    /// Its match and the rating gap of the pair, once matched.
    pub(crate) found: Option<(String, u16)>,
}

/// An entry's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Searching,
    Matched,
    Cancelled,
    Expired,
}

/// What a cancel did.
pub(crate) enum Cancelled {
    /// The entry is cancelled.
    Done,
    /// Too late: the entry was matched or expired meanwhile.
    TooLate,
}

/// A failed operation, named as the report counts it: a status code, or what went wrong.
pub(crate) type Failure = String;

/// A player as the target knows it: its user id and, over HTTP, its token.
pub(crate) struct Caller {
    user: String,
    token: Option<String>,
}

/// The entry JSON of the HTTP API, as far as the harness reads it.
#[derive(Deserialize)]
struct EntryJson {
    id: String,
    status: Status,
    wait_s: f64,
    #[serde(rename = "match")]
    found: Option<MatchJson>,
}

#[derive(Deserialize)]
struct MatchJson {
    match_id: String,
    players: Vec<PlayerJson>,
}

#[derive(Deserialize)]
struct PlayerJson {
    rating: u16,
}

impl From<EntryJson> for Seen {
    fn from(entry: EntryJson) -> Self {
        Self {
            id: entry.id,
            status: entry.status,
            server_wait: Duration::from_secs_f64(entry.wait_s.max(0.0)),
            found: entry.found.map(|found| {
                let gap = match found.players.as_slice() {
                    [a, b] => a.rating.abs_diff(b.rating),
                    _ => 0,
                };
                (found.match_id, gap)
            }),
        }
    }
}

impl From<&Entry> for Seen {
    fn from(entry: &Entry) -> Self {
        Self {
            id: entry.id.to_string(),
            status: match entry.status {
                EntryStatus::Searching => Status::Searching,
                EntryStatus::Matched => Status::Matched,
                EntryStatus::Cancelled => Status::Cancelled,
                EntryStatus::Expired => Status::Expired,
            },
            server_wait: Duration::from_millis(entry.wait_ms),
            found: entry.found.as_ref().map(|found| {
                (
                    found.match_id.to_string(),
                    found.players[0].rating.abs_diff(found.players[1].rating),
                )
            }),
        }
    }
}

/// Over HTTP.
pub(crate) struct HttpTarget {
    /// Requests, on at most `connections` keep-alive connections (`permits`).
    client: reqwest::Client,
    /// Event streams, each on a connection of its own for as long as it lasts.
    streams: reqwest::Client,
    permits: Semaphore,
    base: String,
    credentials: Credentials,
    tenant: String,
}

/// In this process.
pub(crate) struct EmbeddedTarget {
    engine: Arc<Engine>,
    tenant: String,
}

/// Where the players go.
pub(crate) enum Target {
    Http(HttpTarget),
    Embedded(EmbeddedTarget),
}

/// `error` as the report counts it.
fn failure_of(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else if error.is_decode() || error.is_body() {
        "body".into()
    } else {
        "request".into()
    }
}

impl Target {
    /// Connects to (or starts) what `plan` names.
    pub(crate) async fn open(plan: &Plan) -> Result<Self, LoadTestError> {
        Ok(match &plan.destination {
            Destination::Http { base, credentials } => Self::Http(HttpTarget {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(plan.connections)
                    .pool_idle_timeout(POOL_IDLE)
                    .timeout(Duration::from_secs(30))
                    .build()?,
                streams: reqwest::Client::builder()
                    .pool_max_idle_per_host(STREAM_CONNECTIONS_KEPT)
                    .pool_idle_timeout(POOL_IDLE)
                    .build()?,
                permits: Semaphore::new(plan.connections),
                base: base.clone(),
                credentials: credentials.clone(),
                tenant: plan.tenant.clone(),
            }),
            Destination::Embedded {
                catalog,
                data_dir,
                fsync,
            } => {
                let mut builder = Engine::builder().pools(catalog.clone()).seed(plan.seed);
                if let Some(dir) = data_dir {
                    let mut persistence = PersistenceConfig::new(dir);
                    persistence.fsync = *fsync;
                    builder = builder.persistence(persistence);
                }
                Self::Embedded(EmbeddedTarget {
                    engine: Arc::new(builder.start().await?),
                    tenant: plan.tenant.clone(),
                })
            }
        })
    }

    /// `http://…` or `embedded`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Http(http) => http.base.clone(),
            Self::Embedded(_) => "embedded".into(),
        }
    }

    /// Stops what the harness started.
    pub(crate) async fn close(self) {
        if let Self::Embedded(embedded) = self {
            embedded.engine.shutdown().await;
        }
    }

    /// How `user` authenticates.
    pub(crate) fn caller(&self, user: &str) -> Result<Caller, LoadTestError> {
        let token = match self {
            Self::Http(HttpTarget {
                credentials: Credentials::Secret(secret),
                tenant,
                ..
            }) => {
                let mut claims = matchwell::jwt::Claims::new(user, Duration::from_secs(86_400));
                claims.tenant = Some(tenant.clone());
                Some(
                    matchwell::jwt::mint(secret, &claims)
                        .map_err(|error| LoadTestError::Token(error.to_string()))?,
                )
            }
            Self::Http(HttpTarget {
                credentials: Credentials::Service(token),
                ..
            }) => Some(token.clone()),
            _ => None,
        };
        Ok(Caller {
            user: user.to_owned(),
            token,
        })
    }

    /// Queues `player`.
    pub(crate) async fn enqueue(
        &self,
        caller: &Caller,
        player: &Player,
        recorder: &Recorder,
    ) -> Result<Seen, Failure> {
        timed(recorder, Route::Enqueue, async {
            match self {
                Self::Http(http) => {
                    let spec = &player.pool;
                    let mut body = serde_json::json!({
                        "time_control": spec.time_control.to_string(),
                        "variant": spec.variant.as_str(),
                        "rated": spec.rated,
                        "rating": player.rating,
                    });
                    if let Some(region) = &spec.region {
                        body["region"] = region.as_str().into();
                    }
                    if matches!(http.credentials, Credentials::Service(_)) {
                        body["user_id"] = caller.user.clone().into();
                    }
                    http.call_for_entry(
                        reqwest::Method::POST,
                        "/v1/matchmaking/queue",
                        caller,
                        Some(body),
                        201,
                    )
                    .await
                }
                Self::Embedded(embedded) => embedded
                    .engine
                    .enqueue(EnqueueRequest {
                        tenant: embedded.tenant.as_str().into(),
                        user_id: caller.user.as_str().into(),
                        pool: player.pool.clone(),
                        rating: player.rating,
                        idempotency_key: None,
                    })
                    .await
                    .map(|entry| Seen::from(&entry))
                    .map_err(|error| engine_failure(&error)),
            }
        })
        .await
    }

    /// Entry `id` now.
    pub(crate) async fn status(
        &self,
        caller: &Caller,
        id: &str,
        recorder: &Recorder,
    ) -> Result<Seen, Failure> {
        timed(recorder, Route::Status, async {
            match self {
                Self::Http(http) => {
                    http.call_for_entry(
                        reqwest::Method::GET,
                        &http.entry_path(id, "", caller),
                        caller,
                        None,
                        200,
                    )
                    .await
                }
                Self::Embedded(embedded) => embedded
                    .entry(id)
                    .map(|entry| Seen::from(&entry))
                    .ok_or_else(|| "404".to_owned()),
            }
        })
        .await
    }

    /// Withdraws entry `id`.
    pub(crate) async fn cancel(
        &self,
        caller: &Caller,
        id: &str,
        recorder: &Recorder,
    ) -> Result<Cancelled, Failure> {
        timed(recorder, Route::Cancel, async {
            match self {
                Self::Http(http) => http
                    .call(
                        reqwest::Method::DELETE,
                        &http.entry_path(id, "", caller),
                        caller,
                        None,
                        &[200, 409],
                    )
                    .await
                    .map(|(status, _)| {
                        if status == 200 {
                            Cancelled::Done
                        } else {
                            Cancelled::TooLate
                        }
                    }),
                Self::Embedded(embedded) => match embedded.id(id) {
                    None => Err("404".into()),
                    Some(entry) => match embedded.engine.cancel(&embedded.tenant, entry).await {
                        Ok(_) => Ok(Cancelled::Done),
                        Err(MatchmakerError::NotCancellable(_)) => Ok(Cancelled::TooLate),
                        Err(error) => Err(engine_failure(&error)),
                    },
                },
            }
        })
        .await
    }

    /// Waits until entry `id` stops searching; returns it then.
    pub(crate) async fn settled(
        &self,
        caller: &Caller,
        id: &str,
        plan: &Plan,
        recorder: &Recorder,
    ) -> Result<Seen, Failure> {
        match (self, plan.watch) {
            (Self::Http(http), Watch::Sse) => http.events_until_settled(caller, id, recorder).await,
            (Self::Embedded(embedded), Watch::Sse) => embedded.watch_until_settled(id).await,
            (_, Watch::Poll) => loop {
                let seen = self.status(caller, id, recorder).await?;
                if seen.status != Status::Searching {
                    return Ok(seen);
                }
                tokio::time::sleep(plan.poll_interval).await;
            },
        }
    }
}

/// Runs `operation` and records how long it took under `route`.
async fn timed<T>(recorder: &Recorder, route: Route, operation: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let outcome = operation.await;
    recorder.request(route, started.elapsed());
    outcome
}

/// Whether an answer with `status` carries an entry (a refused cancel carries an error).
fn response_has_entry(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `error` as the report counts it, under the HTTP status it maps to.
fn engine_failure(error: &MatchmakerError) -> Failure {
    match error {
        MatchmakerError::Invalid { .. } | MatchmakerError::UnknownPool(_) => "400",
        MatchmakerError::NotFound => "404",
        MatchmakerError::AlreadyQueued(_)
        | MatchmakerError::NotCancellable(_)
        | MatchmakerError::Challenge(_) => "409",
        MatchmakerError::IdempotencyKeyReused => "422",
        _ => "503",
    }
    .into()
}

impl HttpTarget {
    /// `/v1/matchmaking/queue/{id}{suffix}`, naming the user for a service token.
    fn entry_path(&self, id: &str, suffix: &str, caller: &Caller) -> String {
        match self.credentials {
            Credentials::Service(_) => {
                format!("/v1/matchmaking/queue/{id}{suffix}?user_id={}", caller.user)
            }
            _ => format!("/v1/matchmaking/queue/{id}{suffix}"),
        }
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        caller: &Caller,
    ) -> reqwest::RequestBuilder {
        let request = client.request(method, format!("{}{path}", self.base));
        match &caller.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One request on a pooled connection; its status, and the entry it answers with when it
    /// succeeded. Statuses not in `expected` are failures.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        caller: &Caller,
        body: Option<serde_json::Value>,
        expected: &[u16],
    ) -> Result<(u16, Option<Seen>), Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "closed".to_owned())?;
        let mut request = self.request(&self.client, method, path, caller);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|error| failure_of(&error))?;
        let status = response.status().as_u16();
        if !expected.contains(&status) {
            return Err(status.to_string());
        }
        let bytes = response.bytes().await.map_err(|error| failure_of(&error))?;
        if !response_has_entry(status) {
            return Ok((status, None));
        }
        let entry: EntryJson = serde_json::from_slice(&bytes).map_err(|_| "body".to_owned())?;
        Ok((status, Some(entry.into())))
    }

    /// Like [`Self::call`], for requests whose success is an entry.
    async fn call_for_entry(
        &self,
        method: reqwest::Method,
        path: &str,
        caller: &Caller,
        body: Option<serde_json::Value>,
        expected: u16,
    ) -> Result<Seen, Failure> {
        let (_, seen) = self.call(method, path, caller, body, &[expected]).await?;
        seen.ok_or_else(|| "body".to_owned())
    }

    /// Follows the entry's server-sent events until it stops searching.
    async fn events_until_settled(
        &self,
        caller: &Caller,
        id: &str,
        recorder: &Recorder,
    ) -> Result<Seen, Failure> {
        let started = Instant::now();
        let response = self
            .request(
                &self.streams,
                reqwest::Method::GET,
                &self.entry_path(id, "/events", caller),
                caller,
            )
            .send()
            .await;
        recorder.request(Route::Events, started.elapsed());
        let response = response.map_err(|error| failure_of(&error))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status.to_string());
        }
        let mut body = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            pending.extend_from_slice(&chunk.map_err(|error| failure_of(&error))?);
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                let entry: EntryJson =
                    serde_json::from_slice(data).map_err(|_| "body".to_owned())?;
                if entry.status != Status::Searching {
                    // The server ends the stream once nothing more can happen to the entry
                    // (its game is created); read it to that end, off the player's path, so
                    // that its connection goes back to the pool instead of being closed: a
                    // connection per player would cost both sides a TCP handshake and
                    // teardown each.
                    tokio::spawn(async move {
                        let drained = async { while body.next().await.is_some() {} };
                        let _ = tokio::time::timeout(STREAM_DRAIN, drained).await;
                    });
                    return Ok(entry.into());
                }
            }
        }
        Err("stream ended".into())
    }
}

impl EmbeddedTarget {
    fn id(&self, id: &str) -> Option<EntryId> {
        id.parse().ok()
    }

    fn entry(&self, id: &str) -> Option<Entry> {
        self.engine.entry(&self.tenant, self.id(id)?)
    }

    /// Waits on the engine's change notification of the entry until it stops searching.
    async fn watch_until_settled(&self, id: &str) -> Result<Seen, Failure> {
        let entry = self.id(id).ok_or_else(|| "404".to_owned())?;
        let mut watch = self
            .engine
            .watch_entry(&self.tenant, entry)
            .ok_or_else(|| "404".to_owned())?;
        loop {
            let now = watch.current().ok_or_else(|| "404".to_owned())?;
            if now.status != EntryStatus::Searching {
                return Ok(Seen::from(&now));
            }
            if !watch.changed().await {
                return Err("503".into());
            }
        }
    }
}
