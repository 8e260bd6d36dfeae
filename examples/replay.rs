//! Replays a JSONL trace against the embedded engine on a simulated clock and prints one JSON
//! line per match and per expired entry (SPEC §9).
//!
//! ```text
//! cargo run --release --example replay -- --trace ../shared/traces/sample-2000.jsonl
//! cargo run --release --example replay -- --trace ../shared/traces/sample-2000.jsonl --pools pools.toml
//! ```
//!
//! The pools file decides each pool's pacing (`pacing = "quality"`, `target_wait_s`), so a
//! trace measures a pacing exactly as the server would pair it. The summary on stderr gives
//! the mean rating gap, the 95th percentile of the matched players' waits and the share of
//! players matched.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use matchwell::PoolCatalog;

#[derive(Parser)]
#[command(about = "Replay a JSONL trace against the embedded engine on a simulated clock")]
struct Args {
    /// The trace: one JSON operation per line.
    #[arg(long)]
    trace: PathBuf,
    /// A pools file (TOML); the built-in pools when absent.
    #[arg(long)]
    pools: Option<PathBuf>,
    /// Seed of the engine's random choices (colors).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .init();
    let args = Args::parse();
    let catalog = match &args.pools {
        Some(path) => PoolCatalog::load(path)?,
        None => PoolCatalog::builtin(),
    };
    let trace =
        File::open(&args.trace).with_context(|| format!("cannot open {}", args.trace.display()))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let summary =
        matchwell::replay::replay(BufReader::new(trace), &mut out, catalog, args.seed).await?;
    out.flush()?;
    eprintln!(
        "{} operations ({} refused, {} cancels after the player had left the queue), {} matches, {} expired",
        summary.operations, summary.refused, summary.late_cancels, summary.matches, summary.expired
    );
    if let (Some(gap), Some(p95), Some(matched)) = (
        summary.mean_gap(),
        summary.matched_wait_p95_ms,
        summary.matched_percent(),
    ) {
        eprintln!(
            "mean rating gap {gap:.2}, wait p95 of matched players {:.2} s, {matched:.2}% of players matched",
            p95 as f64 / 1_000.0
        );
    }
    Ok(())
}
