//! What the tests against the real `matchwell` binary share: starting a server on a free
//! port, minting tokens with `matchwell token`, calling the API, polling for a condition, and
//! a fake live-game service listening on loopback.
//!
//! Each test binary uses a part of this module only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The JWT secret of test servers.
pub const SECRET: &str = "test-secret-of-at-least-thirty-two-bytes";

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The seed in `MATCHWELL_TEST_SEED`, if set.
pub fn seed_from_env() -> Option<u64> {
    std::env::var("MATCHWELL_TEST_SEED").ok().map(|seed| {
        seed.parse()
            .unwrap_or_else(|_| panic!("MATCHWELL_TEST_SEED `{seed}` is not a number"))
    })
}

/// The seed of a randomized test named `what`: `MATCHWELL_TEST_SEED` when set, else drawn
/// from the clock. Printed, so that a failure shows how to run it again.
pub fn seed(what: &str) -> u64 {
    let seed = seed_from_env().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            .into()
    });
    eprintln!("{what} seed {seed}; rerun with MATCHWELL_TEST_SEED={seed}");
    seed
}

/// The `matchwell` binary with none of the caller's `MATCHWELL_*` variables, so that a
/// developer's environment cannot change what a test sees.
pub fn matchwell() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_matchwell"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MATCHWELL_") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// Probes until `probe` yields a value, for at most [`PATIENCE`]; panics naming `what`.
///
/// For conditions that only the server's own clock brings about (a deadline, an expirer's
/// period, a rate limit's refill), which a test of the real binary cannot drive. The probes
/// follow each other without a pause; each is normally a round trip to the server, and the
/// thread yields in between so the server gets the cores. Changes of an entry are awaited on
/// its event stream instead ([`Api::watch`]).
pub fn poll<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    poll_within(what, PATIENCE, probe)
}

/// [`poll`] for at most `within`, for conditions that take longer than [`PATIENCE`] by
/// design (a cluster's failover).
pub fn poll_within<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Runs `matchwell serve` that must refuse to start; its log.
pub fn refused_start(env: &[(&str, &str)]) -> String {
    let mut command = matchwell();
    command.arg("serve").env("MATCHWELL_LISTEN", "127.0.0.1:0");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = wait_timeout::ChildExt::wait_timeout(&mut child, PATIENCE).unwrap() else {
        let _ = child.kill();
        panic!("the server started with {env:?}");
    };
    assert!(!status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    log
}

/// How to start a server.
pub struct ServerOptions {
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    secret: bool,
    pools: Option<String>,
}

impl ServerOptions {
    /// Sets a variable of the server's environment.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Turns off the per-user rate limits of writes and of reads: for tests that send many
    /// requests as one user, whose subject is not the limits.
    pub fn without_rate_limits(self) -> Self {
        self.env("MATCHWELL_RATE_LIMIT_PER_S", "0")
            .env("MATCHWELL_READ_RATE_LIMIT_PER_S", "0")
    }

    /// Uses `dir` as the data directory (default: a fresh temporary one).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Serves the pools of `toml` (a pools file, written into the data directory).
    pub fn pools(mut self, toml: &str) -> Self {
        self.pools = Some(toml.to_owned());
        self
    }

    /// Creates games through `games`.
    pub fn live_game(self, games: &FakeLiveGame) -> Self {
        self.env("MATCHWELL_LIVE_GAME_API_URL", games.url.clone())
    }

    /// Leaves `MATCHWELL_JWT_SECRET` unset, so the server uses its development secret.
    pub fn without_secret(mut self) -> Self {
        self.secret = false;
        self
    }

    /// Starts the server and waits until it is ready (`/health/ready` answers 200).
    pub fn start(self) -> Server {
        let server = self.start_listening();
        let api = server.api();
        poll("the server to be ready", || {
            let reply = api.send(api.request("GET", "/health/ready", None));
            (reply.status == 200).then_some(())
        });
        server
    }

    /// Starts the server and returns once it listens, which it does before it recovers its
    /// data directory.
    pub fn start_listening(self) -> Server {
        let temp = match self.data_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().unwrap()),
        };
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| temp.as_ref().unwrap().path().to_owned());
        let mut command = matchwell();
        if let Some(toml) = &self.pools {
            let file = data_dir.join("pools.toml");
            std::fs::write(&file, toml).unwrap();
            command.env("MATCHWELL_POOLS", file);
        }
        command
            .arg("serve")
            .env("MATCHWELL_LISTEN", "127.0.0.1:0")
            .env("MATCHWELL_DATA_DIR", &data_dir)
            .env("MATCHWELL_LOG_FORMAT", "human")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.secret {
            command.env("MATCHWELL_JWT_SECRET", SECRET);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address, found) = mpsc::channel();
        let lines = Arc::clone(&log);
        // Keeps draining the log after the address, so the server never writes to a closed
        // pipe; the lines stay readable through `Server::log`.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    // Up to a space, or the closing quote of a JSON log line's message.
                    let addr = line[at + "listening on ".len()..]
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next();
                    let _ = address.send(addr.unwrap_or_default().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = found.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the server printed no address; its log:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
        Server {
            child,
            base,
            data_dir,
            log,
            _temp: temp,
        }
    }
}

/// A running `matchwell serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _temp: Option<TempDir>,
}

impl Server {
    /// Options with working defaults: a temporary data directory and [`SECRET`].
    pub fn options() -> ServerOptions {
        ServerOptions {
            data_dir: None,
            env: Vec::new(),
            secret: true,
            pools: None,
        }
    }

    /// A server with the default options.
    pub fn start() -> Self {
        Self::options().start()
    }

    /// `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The log lines written so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Asserts that a line of the log holds every one of `needles`, waiting for it (with a
    /// deadline) if it has not been read yet.
    pub fn assert_logged(&self, needles: &[&str]) {
        // Lines reach the reader thread a moment after the server writes them.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if log
                .iter()
                .any(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} in the log:\n{}",
                log.join("\n")
            );
            std::thread::yield_now();
        }
    }

    /// An API client of this server.
    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// How the server ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends the server SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the server signal `name` (`TERM`, `STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Waits up to `within` for the server to exit; how it ended, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_timeout::ChildExt::wait_timeout(&mut self.child, within).unwrap()
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `matchwell token ARGS` with `env`; the command's output.
pub fn mint(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = matchwell();
    command.arg("token").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// A token signed with [`SECRET`], minted by `matchwell token --user USER ARGS`.
pub fn token_with(user: &str, args: &[&str]) -> String {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    let output = mint(&all, &[("MATCHWELL_JWT_SECRET", SECRET)]);
    assert!(
        output.status.success(),
        "matchwell token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A plain user's token of the default tenant.
pub fn token(user: &str) -> String {
    token_with(user, &[])
}

/// An answer of the API.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
}

impl Reply {
    fn from(response: Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        Self {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// `error.code`, or "" when the body is no error.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// `error.message`, or "" when the body is no error.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    /// Asserts the status and, for errors, the code of the one error shape.
    pub fn expect(self, status: u16, code: &str) -> Self {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        if status >= 400 {
            assert_eq!(self.code(), code, "unexpected error: {self:?}");
            assert!(
                !self.message().is_empty(),
                "an error without a message: {self:?}"
            );
        }
        self
    }

    /// Asserts a success status; the body.
    pub fn ok(self, status: u16) -> Value {
        self.expect(status, "").body
    }
}

/// A blocking API client of one server.
pub struct Api {
    /// The HTTP client.
    pub client: Client,
    base: String,
}

/// The `id` of an entry or challenge.
pub fn id_of(item: &Value) -> String {
    item["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {item}"))
        .to_owned()
}

/// The body of an enqueue in pool 5+3 standard rated.
pub fn blitz(rating: u16) -> Value {
    json!({"time_control": "5+3", "variant": "standard", "rated": true, "rating": rating})
}

/// The body of a 5+3 standard rated challenge of `opponent`.
pub fn challenge_of(opponent: &str) -> Value {
    json!({"opponent_id": opponent, "time_control": "5+3", "variant": "standard", "rated": true})
}

impl Api {
    /// A client of the server at `base` (`http://HOST:PORT`).
    pub fn new(base: &str) -> Self {
        Self {
            client: Client::builder().timeout(PATIENCE).build().unwrap(),
            base: base.to_owned(),
        }
    }

    /// A request of `method` to `path`, with `token` as bearer when given.
    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`.
    pub fn send(&self, request: RequestBuilder) -> Reply {
        Reply::from(request.send().unwrap())
    }

    /// `GET path`.
    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.send(self.request("GET", path, Some(token)))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(self.request("DELETE", path, Some(token)))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send(self.request("POST", path, Some(token)).json(body))
    }

    /// `POST /v1/matchmaking/queue`.
    pub fn enqueue(&self, token: &str, body: &Value) -> Reply {
        self.post("/v1/matchmaking/queue", token, body)
    }

    /// `POST /v1/matchmaking/queue` with `Idempotency-Key: key`.
    pub fn enqueue_keyed(&self, token: &str, key: &[u8], body: &Value) -> Reply {
        let key = reqwest::header::HeaderValue::from_bytes(key).unwrap();
        self.send(
            self.request("POST", "/v1/matchmaking/queue", Some(token))
                .header("Idempotency-Key", key)
                .json(body),
        )
    }

    /// `GET /v1/matchmaking/queue/{id}`.
    pub fn entry(&self, token: &str, id: &str) -> Reply {
        self.get(&format!("/v1/matchmaking/queue/{id}"), token)
    }

    /// `DELETE /v1/matchmaking/queue/{id}`.
    pub fn cancel(&self, token: &str, id: &str) -> Reply {
        self.delete(&format!("/v1/matchmaking/queue/{id}"), token)
    }

    /// `POST /v1/matchmaking/challenges`.
    pub fn challenge(&self, token: &str, body: &Value) -> Reply {
        self.post("/v1/matchmaking/challenges", token, body)
    }

    /// Waits on the event stream of entry `id` until its status is `status`; the entry.
    pub fn wait_for_status(&self, token: &str, id: &str, status: &str) -> Value {
        self.watch(token, id, &format!("to be {status}"), |entry| {
            entry["status"] == status
        })
    }

    /// Reads the event stream of entry `id` until an entry satisfies `done`; that entry.
    /// Panics naming `what` if the stream ends first (the client's timeout bounds the wait).
    pub fn watch(&self, token: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut events = EventStream::open(self, token, id);
        std::iter::from_fn(|| events.next_entry())
            .find(|entry| done(entry))
            .unwrap_or_else(|| panic!("entry {id}'s stream ended before it came {what}"))
    }
}

/// An open event stream of one entry.
pub struct EventStream {
    lines: std::io::Lines<BufReader<Response>>,
}

impl EventStream {
    /// Opens the stream of entry `id`, checking it is one.
    pub fn open(api: &Api, token: &str, id: &str) -> Self {
        Self::try_open(api, token, id)
            .unwrap_or_else(|refused| panic!("no event stream of {id}: {refused:?}"))
    }

    /// Opens the stream of entry `id`, checking it is one; the answer if it is refused.
    pub fn try_open(api: &Api, token: &str, id: &str) -> Result<Self, Box<Reply>> {
        let path = format!("/v1/matchmaking/queue/{id}/events");
        let response = api.request("GET", &path, Some(token)).send().unwrap();
        if response.status() != 200 {
            return Err(Box::new(Reply::from(response)));
        }
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Ok(Self {
            lines: BufReader::new(response).lines(),
        })
    }

    /// The `data` of the next `entry` event; `None` once the server has ended the stream.
    pub fn next_entry(&mut self) -> Option<Value> {
        let mut kind = None;
        for line in &mut self.lines {
            let line = line.unwrap();
            if let Some(name) = line.strip_prefix("event: ") {
                kind = Some(name.to_owned());
            } else if let Some(data) = line.strip_prefix("data: ") {
                assert_eq!(kind.as_deref(), Some("entry"), "event without its name");
                return Some(serde_json::from_str(data).unwrap());
            }
        }
        None
    }

    /// Every remaining event, until the server ends the stream.
    pub fn until_end(mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next_entry()).collect()
    }
}

/// One call the fake live-game service received.
#[derive(Debug, Clone)]
pub struct GameCall {
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, by the wall clock (to compare with HTTP dates).
    pub wall: std::time::SystemTime,
}

/// How the fake live-game service answers a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 201 with the game of the call's idempotency key (the same game for the same key).
    Create,
    /// This status and an empty body.
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    RetryAfterSeconds(u16, u64),
    /// This status with `Retry-After:` an HTTP date this many seconds after the call (in
    /// whole seconds, as HTTP dates are).
    RetryAfterDate(u16, u64),
    /// No answer at all: the call hangs until the client gives up.
    Hang,
}

struct LiveGameState {
    answer: Answer,
    /// Each key's first calls get this answer instead of `answer`.
    first_calls: Option<(usize, Answer)>,
    delay: Duration,
    calls: Vec<GameCall>,
    calls_per_key: HashMap<String, usize>,
    games: HashMap<String, String>,
    running: usize,
    max_running: usize,
}

/// Counts a call as running until it is answered or dropped.
struct Running(Arc<Mutex<LiveGameState>>);

impl Running {
    fn enter(state: &Arc<Mutex<LiveGameState>>) -> Self {
        let mut locked = state.lock().unwrap();
        locked.running += 1;
        locked.max_running = locked.max_running.max(locked.running);
        Self(Arc::clone(state))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().unwrap().running -= 1;
    }
}

/// A live-game service on loopback: `POST /v1/games` answers `{"game_id"}` (the same id for
/// the same idempotency key), or whatever it is told to: another status, `Retry-After`, a
/// slow answer, no answer, or no connection at all. It records every call with its time and
/// the most calls it saw at once.
pub struct FakeLiveGame {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    addr: std::net::SocketAddr,
    state: Arc<Mutex<LiveGameState>>,
    handle: Mutex<Option<actix_web::dev::ServerHandle>>,
}

async fn create_game(
    request: actix_web::HttpRequest,
    body: actix_web::web::Json<Value>,
    state: actix_web::web::Data<Arc<Mutex<LiveGameState>>>,
) -> actix_web::HttpResponse {
    let _running = Running::enter(&state);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let call = GameCall {
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        body: body.into_inner(),
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
    };
    let key = call.idempotency_key.clone().unwrap_or_default();
    let (answer, delay) = {
        let mut state = state.lock().unwrap();
        state.calls.push(call);
        let nth = state.calls_per_key.entry(key.clone()).or_default();
        *nth += 1;
        let nth = *nth;
        let answer = match &state.first_calls {
            Some((first, answer)) if nth <= *first => answer.clone(),
            _ => state.answer.clone(),
        };
        (answer, state.delay)
    };
    actix_web::rt::time::sleep(delay).await;
    let status = |code: u16| {
        actix_web::HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
    };
    match answer {
        Answer::Create => {
            let mut state = state.lock().unwrap();
            let next = format!("game-{}", state.games.len() + 1);
            let game_id = state.games.entry(key).or_insert(next).clone();
            actix_web::HttpResponse::Created().json(json!({ "game_id": game_id }))
        }
        Answer::Status(code) => status(code).finish(),
        Answer::RetryAfterSeconds(code, seconds) => status(code)
            .insert_header(("Retry-After", seconds.to_string()))
            .finish(),
        Answer::RetryAfterDate(code, seconds) => {
            let at = std::time::SystemTime::now() + Duration::from_secs(seconds);
            status(code)
                .insert_header(("Retry-After", httpdate::fmt_http_date(at)))
                .finish()
        }
        Answer::Hang => {
            actix_web::rt::time::sleep(Duration::from_secs(3_600)).await;
            status(504).finish()
        }
    }
}

/// Serves `state` on `addr` (port 0: a free one) on a thread of its own; the address and the
/// server's handle. Binding again the port of a stopped server may have to wait for the old
/// socket to go.
fn serve(
    addr: std::net::SocketAddr,
    state: &Arc<Mutex<LiveGameState>>,
) -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    let shared = Arc::clone(state);
    let (started, handed) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = poll("the fake live-game service to bind", || {
                actix_web::HttpServer::new({
                    let shared = shared.clone();
                    move || {
                        actix_web::App::new()
                            .app_data(actix_web::web::Data::new(shared.clone()))
                            .route("/v1/games", actix_web::web::post().to(create_game))
                    }
                })
                .workers(1)
                .bind(addr)
                .ok()
            });
            let addr = server.addrs()[0];
            let server = server.run();
            started.send((addr, server.handle())).unwrap();
            server.await
        })
    });
    handed.recv_timeout(PATIENCE).unwrap()
}

impl FakeLiveGame {
    /// Starts the service on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(LiveGameState {
            answer: Answer::Create,
            first_calls: None,
            delay: Duration::ZERO,
            calls: Vec::new(),
            calls_per_key: HashMap::new(),
            games: HashMap::new(),
            running: 0,
            max_running: 0,
        }));
        let (addr, handle) = serve(([127, 0, 0, 1], 0).into(), &state);
        Self {
            url: format!("http://{addr}"),
            addr,
            state,
            handle: Mutex::new(Some(handle)),
        }
    }

    /// Makes the service answer 503 (`true`) or create games (`false`).
    pub fn set_down(&self, down: bool) {
        self.set_answer(if down {
            Answer::Status(503)
        } else {
            Answer::Create
        });
    }

    /// Answers every call from now on with `answer`.
    pub fn set_answer(&self, answer: Answer) {
        self.state.lock().unwrap().answer = answer;
    }

    /// Answers the first `calls` calls of each idempotency key with `answer`, later ones as
    /// set by [`Self::set_answer`].
    pub fn fail_first(&self, calls: usize, answer: Answer) {
        self.state.lock().unwrap().first_calls = Some((calls, answer));
    }

    /// Answers only after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Stops listening: connections are refused until [`Self::listen`].
    pub fn stop_listening(&self) {
        if let Some(handle) = self.handle.lock().unwrap().take() {
            futures::executor::block_on(handle.stop(false));
        }
        poll("the fake live-game service to refuse connections", || {
            std::net::TcpStream::connect(self.addr)
                .is_err()
                .then_some(())
        });
    }

    /// Listens again, on the same address.
    pub fn listen(&self) {
        let mut handle = self.handle.lock().unwrap();
        if handle.is_none() {
            *handle = Some(serve(self.addr, &self.state).1);
        }
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<GameCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The calls received with idempotency key `key`.
    pub fn calls_for(&self, key: &str) -> Vec<GameCall> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|call| call.idempotency_key.as_deref() == Some(key))
            .cloned()
            .collect()
    }

    /// The games created, by idempotency key.
    pub fn games(&self) -> HashMap<String, String> {
        self.state.lock().unwrap().games.clone()
    }

    /// The most calls it was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.lock().unwrap().max_running
    }
}

impl Drop for FakeLiveGame {
    fn drop(&mut self) {
        // Stopping is asynchronous; the service's thread ends once it has stopped.
        if let Some(handle) = self.handle.lock().unwrap().take() {
            drop(handle.stop(false));
        }
    }
}
