//! Memory per waiting entry: queues 1,000,000 players through the engine, spread over the
//! built-in pools, and reports how much the process's resident set grew per entry.
//!
//! Resident memory is read from `/proc/self/status` (`VmRSS`, so Linux only) rather than
//! counted by an allocator: it includes what the entries really cost, allocator overhead and
//! hash-map slack included, and nothing in the engine has to be instrumented for it.
//!
//! ```text
//! cargo run --release --example memory
//! ```
//!
//! Exits with status 1 above the budget of 256 bytes per waiting entry.

use std::process::ExitCode;

use compact_str::format_compact;
use matchwell::{Engine, EnqueueRequest, PoolSpec};

/// The allocator the `matchwell` binary uses, so that its overhead is counted as served.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ENTRIES: usize = 1_000_000;
const BUDGET_BYTES: f64 = 256.0;

/// The process's resident set size in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS line in /proc/self/status"))?
        .trim()
        .parse::<u64>()?;
    Ok(kib * 1_024)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let (builder, _clock) = Engine::builder().manual(1_000);
    let engine = builder.start().await?;
    let pools: Vec<PoolSpec> = engine
        .catalog()
        .iter()
        .map(|pool| pool.spec.clone())
        .collect();
    let before = resident_bytes()?;
    for n in 0..ENTRIES {
        engine
            .enqueue(EnqueueRequest {
                tenant: "memory".into(),
                user_id: format_compact!("player-{n}"),
                pool: pools[n % pools.len()].clone(),
                rating: 600 + (n * 7_919 % 2_000) as u16,
                idempotency_key: None,
            })
            .await?;
    }
    // The summary passes through every shard behind the enqueues: once it is back, every
    // entry sits in its shard's pool as well as in the index.
    let searching: usize = engine
        .summary("memory")
        .await?
        .iter()
        .map(|queue| queue.searching)
        .sum();
    anyhow::ensure!(
        searching == ENTRIES,
        "{searching} of {ENTRIES} entries searching"
    );
    let per_entry = resident_bytes()?.saturating_sub(before) as f64 / ENTRIES as f64;
    println!("{ENTRIES} waiting entries: {per_entry:.0} bytes each (budget {BUDGET_BYTES:.0})");
    engine.shutdown().await;
    Ok(if per_entry <= BUDGET_BYTES {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
