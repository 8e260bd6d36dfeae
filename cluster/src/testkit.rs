//! Real `nats-server` processes with JetStream for tests: one server, or a cluster of three.
//!
//! ```no_run
//! use matchwell_cluster::testkit::NatsCluster;
//!
//! let mut nats = NatsCluster::start(3).unwrap();
//! let urls = nats.urls(); // "nats://127.0.0.1:p1,nats://127.0.0.1:p2,nats://127.0.0.1:p3"
//! // ... start `matchwell serve --cluster <urls>` or a `ClusterStore` ...
//! nats.kill(0).unwrap(); // kill -9 one server
//! nats.restart(0).unwrap(); // same name, ports and data: it rejoins
//! // dropping `nats` kills every server and removes their data
//! ```
//!
//! Every server listens on free loopback ports and keeps its data in a temporary directory.
//! Starting (and restarting) returns once each server answers its monitoring endpoint's
//! `/healthz` with 200, which `nats-server` only does once it accepts clients and, with
//! JetStream clustered, knows the meta leader. The calls block the calling thread: from an async
//! test, use a multi-threaded runtime or `spawn_blocking` when other tasks must progress
//! meanwhile. `nats-server` is looked up on `PATH`, then in `/usr/sbin` and `/usr/bin`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

/// How long a server (or the cluster) may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why servers could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The binary is not installed.
    #[error(
        "nats-server is not installed (looked on PATH, in /usr/sbin and /usr/bin): the cluster \
         tests need it; install it with `apt-get install nats-server`"
    )]
    NotInstalled,
    /// A server process could not be started or signalled.
    #[error("nats-server {server}: {source}")]
    Process {
        /// The server's name.
        server: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A server exited or did not become ready in time; its log says why.
    #[error("nats-server {server} {what}; its log {log}:\n{tail}")]
    NotReady {
        /// The server's name.
        server: String,
        /// What happened.
        what: String,
        /// Where its log is.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The server number is not one of this cluster's.
    #[error("there is no server {0}")]
    NoSuchServer(usize),
}

/// One `nats-server` process of a [`NatsCluster`], with what it needs to be started again the
/// same way: a restarted server keeps its name, ports and store, so it rejoins as itself.
#[derive(Debug)]
struct Server {
    name: String,
    client_port: u16,
    monitor_port: u16,
    args: Vec<String>,
    log: PathBuf,
    /// `None` while killed.
    child: Option<Child>,
}

/// A set of `nats-server` processes with JetStream, stopped (killed) and removed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<Server>,
    binary: PathBuf,
    /// Holds every server's store and log; removed after the servers are killed.
    dir: TempDir,
}

impl NatsCluster {
    /// Starts `servers` servers (1 for a single JetStream server; 3 for a cluster, where
    /// streams can have three replicas) and waits until every one is ready. Tries again with
    /// other ports, a few times, if a server exits while starting (another process may have
    /// taken a port between the moment it was found free and the server's start).
    pub fn start(servers: usize) -> Result<Self, TestkitError> {
        let binary = find_binary()?;
        let mut attempts = 1;
        loop {
            match Self::start_on_free_ports(servers, &binary) {
                Err(TestkitError::NotReady { what, .. })
                    if what.starts_with("exited") && attempts < 3 =>
                {
                    attempts += 1;
                }
                started => return started,
            }
        }
    }

    fn start_on_free_ports(servers: usize, binary: &Path) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("matchwell-nats-")
            .tempdir()
            .map_err(|source| TestkitError::Process {
                server: "(temporary directory)".to_owned(),
                source,
            })?;
        let ports: Vec<[u16; 3]> = (0..servers)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let routes = ports
            .iter()
            .map(|[_, _, cluster]| format!("nats://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            servers: Vec::with_capacity(servers),
            binary: binary.to_owned(),
            dir,
        };
        for (n, [client_port, monitor_port, cluster_port]) in ports.into_iter().enumerate() {
            let name = format!("n{n}");
            let store = cluster.dir.path().join(&name);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let mut args: Vec<String> = [
                "-js",
                "-a",
                "127.0.0.1",
                "-n",
                &name,
                "-p",
                &client_port.to_string(),
                "-m",
                &monitor_port.to_string(),
                "-sd",
                &store.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
            ]
            .map(str::to_owned)
            .to_vec();
            if servers > 1 {
                args.extend(
                    [
                        "--cluster_name",
                        "matchwell-test",
                        "--cluster",
                        &format!("nats://127.0.0.1:{cluster_port}"),
                        "--routes",
                        &routes,
                    ]
                    .map(str::to_owned),
                );
            }
            cluster.servers.push(Server {
                name,
                client_port,
                monitor_port,
                args,
                log,
                child: None,
            });
        }
        for index in 0..servers {
            cluster.spawn(index)?;
        }
        for index in 0..servers {
            cluster.wait_ready(index)?;
        }
        Ok(cluster)
    }

    /// The client URLs of every server, comma-separated: what `--cluster` takes.
    pub fn urls(&self) -> String {
        (0..self.servers.len())
            .map(|index| self.url(index))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of server `index`.
    ///
    /// # Panics
    /// If there is no such server.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[index].client_port)
    }

    /// How many servers there are (killed ones included).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are no servers at all.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The name of server `index` (`n0`, `n1`, …), as JetStream reports leaders and peers.
    ///
    /// # Panics
    /// If there is no such server.
    pub fn name(&self, index: usize) -> &str {
        &self.servers[index].name
    }

    /// The log file of server `index`.
    ///
    /// # Panics
    /// If there is no such server.
    pub fn log(&self, index: usize) -> &Path {
        &self.servers[index].log
    }

    /// Kills server `index` with SIGKILL (`kill -9`) and waits until it is gone. Killing a
    /// killed server does nothing.
    pub fn kill(&mut self, index: usize) -> Result<(), TestkitError> {
        let server = self.server_mut(index)?;
        if let Some(mut child) = server.child.take() {
            let process = |source| TestkitError::Process {
                server: server.name.clone(),
                source,
            };
            child.kill().map_err(process)?;
            child.wait().map_err(process)?;
        }
        Ok(())
    }

    /// Stops server `index` with SIGSTOP: it keeps its connections but answers nothing, like
    /// a process stuck in a long pause.
    pub fn pause(&self, index: usize) -> Result<(), TestkitError> {
        self.signal(index, Signal::STOP)
    }

    /// Lets a paused server `index` run again (SIGCONT).
    pub fn resume(&self, index: usize) -> Result<(), TestkitError> {
        self.signal(index, Signal::CONT)
    }

    /// Starts server `index` again (killing it first if it runs) with its name, ports and
    /// store, and waits until it is ready.
    pub fn restart(&mut self, index: usize) -> Result<(), TestkitError> {
        self.kill(index)?;
        self.spawn(index)?;
        self.wait_ready(index)
    }

    fn server_mut(&mut self, index: usize) -> Result<&mut Server, TestkitError> {
        self.servers
            .get_mut(index)
            .ok_or(TestkitError::NoSuchServer(index))
    }

    fn signal(&self, index: usize, signal: Signal) -> Result<(), TestkitError> {
        let server = self
            .servers
            .get(index)
            .ok_or(TestkitError::NoSuchServer(index))?;
        let not_running = || TestkitError::Process {
            server: server.name.clone(),
            source: std::io::Error::other("the server is not running"),
        };
        let child = server.child.as_ref().ok_or_else(not_running)?;
        kill_process(Pid::from_child(child), signal).map_err(|errno| TestkitError::Process {
            server: server.name.clone(),
            source: errno.into(),
        })
    }

    fn spawn(&mut self, index: usize) -> Result<(), TestkitError> {
        let binary = self.binary.clone();
        let server = self.server_mut(index)?;
        let child = Command::new(binary)
            .args(&server.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| TestkitError::Process {
                server: server.name.clone(),
                source,
            })?;
        server.child = Some(child);
        Ok(())
    }

    /// Polls the server's `/healthz` until it answers 200, the process exits, or
    /// [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self, index: usize) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let server = self.server_mut(index)?;
        loop {
            if healthy(server.monitor_port) {
                return Ok(());
            }
            let exited = match server.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(format!("exited ({status})")),
                Some(Ok(None)) => None,
                Some(Err(error)) => Some(format!("could not be watched ({error})")),
                None => Some("is not running".to_owned()),
            };
            let what = match exited {
                Some(what) => what,
                None if Instant::now() >= deadline => {
                    format!("was not ready within {READY_TIMEOUT:?}")
                }
                None => {
                    std::thread::sleep(POLL_INTERVAL);
                    continue;
                }
            };
            return Err(TestkitError::NotReady {
                server: server.name.clone(),
                what,
                log: server.log.clone(),
                tail: log_tail(&server.log),
            });
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                // SIGKILL also ends a paused server. Errors only mean it is gone already.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether the monitoring endpoint on `port` answers `/healthz` with 200. A hand-written
/// request rather than an HTTP client crate: one status line is all it reads.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(1));
    if stream.set_read_timeout(timeout).is_err()
        || stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
}

/// A port that was free a moment ago (the system picks it; it could be taken again before the
/// server binds it, which then fails to start and says so).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the loopback interface has a free port")
}

fn find_binary() -> Result<PathBuf, TestkitError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(TestkitError::NotInstalled)
}

/// The last lines of a server's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
