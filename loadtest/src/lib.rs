//! # matchwell-loadtest
//!
//! The load-test harness of matchwell: a simulated player population against a running server
//! over HTTP, or against the engine embedded in the same process, with a report of what it
//! saw — requests per second and latency per route, time to match as the client saw it and
//! as the server recorded it, the rating gaps of the matches, what became of the players, the
//! errors by status, and the harness's own CPU time per request so that its cost can be told
//! apart from the server's.
//!
//! `cargo run --release --example loadtest -- --help` lists every setting; the example is a
//! thin layer over [`run`].
//!
//! # Layout
//! - [`settings`]: the command line ([`settings::Settings`]) and what it describes: the
//!   target, the population, the scenario.
//! - [`population`]: who arrives when, with which rating, into which pool, and who cancels.
//! - `target`: the two ways of reaching matchwell (HTTP with keep-alive connections, or the
//!   embedded [`matchwell::Engine`]), behind one set of operations, each timed.
//! - `scenario`: the player lifecycle (enqueue, learn of the match by server-sent events or
//!   by polling, cancel mid-wait, leave) at an arrival rate or a fixed number of concurrent
//!   players, and the closed-loop round (enqueue → status → cancel → status) used to compare
//!   the server's cost with an empty one's.
//! - [`report`]: the recorder (HDR histograms) and the report, as text and JSON.
//! - `charts`: the report's histograms as SVG files.
//! - `cpu`: CPU time of processes, from `/proc`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod charts;
mod cpu;
pub mod population;
pub mod report;
mod scenario;
pub mod settings;
mod target;

pub use report::Report;
pub use settings::Settings;

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    /// The settings contradict each other or name something that does not exist.
    #[error("{0}")]
    Settings(String),
    /// The embedded engine did not start.
    #[error("embedded engine: {0}")]
    Engine(#[from] matchwell::EngineError),
    /// A token could not be minted.
    #[error("minting a token: {0}")]
    Token(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The report or the charts could not be written.
    #[error("writing {path}: {reason}")]
    Output {
        /// The file or directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Runs the load test `settings` describe, writes the JSON report and the charts they ask
/// for, and returns the report. Must run inside a multi-threaded tokio runtime.
pub async fn run(settings: &Settings) -> Result<Report, LoadTestError> {
    let plan = settings.plan()?;
    let report = scenario::run(&plan).await?;
    if let Some(path) = &settings.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|error| LoadTestError::Output {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        std::fs::write(path, text + "\n").map_err(|error| LoadTestError::Output {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
    }
    if let Some(dir) = &settings.charts {
        charts::write(&report, dir)?;
    }
    Ok(report)
}
