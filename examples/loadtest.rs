//! The load-test harness (SPEC §9): a simulated player population against a running server
//! over HTTP, or against the engine embedded in this process.
//!
//! ```text
//! cargo run --release --example loadtest -- --url http://127.0.0.1:8080 --secret S \
//!     --rate 5000 --duration 60s --json report.json --charts charts/
//! cargo run --release --example loadtest -- --embedded --rate 5000 --duration 60s
//! ```
//!
//! `--help` lists every setting; the harness itself is the `matchwell-loadtest` crate.

use clap::Parser;
use matchwell_loadtest::Settings;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let report = matchwell_loadtest::run(&settings).await?;
    println!("{report}");
    Ok(())
}
