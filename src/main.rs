//! The `matchwell` command; everything but error reporting lives in the library.

use anyhow::Context;
use clap::Parser;
use matchwell::cli::{self, Cli};

/// jemalloc on transparent huge pages (see `.cargo/config.toml`): the index's large tables
/// are read at random, and on small pages nearly every lookup would also miss the TLB.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _log = cli::init_logging(cli.log_format, &cli.log)
        .map_err(anyhow::Error::msg)
        .context("logging")?;
    cli::run(cli)?;
    Ok(())
}
