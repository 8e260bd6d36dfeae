//! The control for cluster-mode latency: how long one append to a JetStream stream takes to
//! be acknowledged by its replicas, on this machine, under whatever load runs beside it. A
//! cluster-mode write cannot be acknowledged sooner than one such append (it is one, or part
//! of one batch), so the probe's percentiles, taken in the same sitting, are the floor to
//! compare the nodes' write latency with (`scripts/cluster-loadtest.sh` runs it).
//!
//! ```sh
//! cargo run --release -p matchwell-cluster --example jetstream_probe -- \
//!     --nats nats://127.0.0.1:4222 --rate 200 --seconds 30
//! ```
//!
//! Appends go out on a fixed schedule whatever the answers (a late answer does not delay the
//! next append), each a payload the size of a journal batch, to a stream of its own that the
//! probe deletes when done.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use matchwell_cluster::store::server_addresses;
use tokio::task::JoinSet;

const STREAM: &str = "matchwell_probe";

/// Times JetStream appends against a running NATS cluster.
#[derive(Parser)]
struct Args {
    /// NATS servers, comma-separated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Appends per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to probe.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Replicas of the probe's stream (a quorum of them acknowledges each append).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Bytes per append.
    #[arg(long, default_value_t = 512)]
    payload_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addresses = server_addresses(&args.nats).context("--nats")?;
    let client = async_nats::connect(addresses).await?;
    let jetstream = jetstream::new(client);
    jetstream
        .get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![format!("{STREAM}.*")],
            num_replicas: args.replicas,
            storage: stream::StorageType::File,
            max_messages: 100_000,
            ..Default::default()
        })
        .await
        .context("creating the probe's stream")?;

    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut appends = JoinSet::new();
    while Instant::now() < end {
        ticks.tick().await;
        let (jetstream, payload) = (jetstream.clone(), payload.clone());
        appends.spawn(async move {
            let started = Instant::now();
            jetstream
                .publish(format!("{STREAM}.append"), payload)
                .await?
                .await?;
            anyhow::Ok(started.elapsed())
        });
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let mut failed = 0;
    while let Some(append) = appends.join_next().await {
        match append? {
            Ok(took) => latency.record(took.as_micros() as u64)?,
            Err(_) => failed += 1,
        }
    }
    jetstream.delete_stream(STREAM).await?;
    let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "jetstream append (R={}): {} acknowledged, {failed} failed; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.replicas,
        latency.len(),
        ms(0.5),
        ms(0.95),
        ms(0.99),
        latency.max() as f64 / 1000.0,
    );
    Ok(())
}
