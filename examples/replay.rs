//! Replays a JSONL trace against the embedded engine on a simulated clock and prints one JSON
//! line per match and per expired entry (SPEC §9).
//!
//! ```text
//! cargo run --release --example replay -- --trace ../shared/traces/sample-2000.jsonl
//! ```

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
    Ok(())
}
