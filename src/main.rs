//! The `matchwell` command; everything but error reporting lives in the library.

use anyhow::Context;
use clap::Parser;
use matchwell::cli::{self, Cli};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format, &cli.log)
        .map_err(anyhow::Error::msg)
        .context("logging")?;
    cli::run(cli)?;
    Ok(())
}
