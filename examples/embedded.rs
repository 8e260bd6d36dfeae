//! A game server that embeds matchwell in-process: no HTTP, no JSON.
//!
//! The server plugs in its own [`GameCreator`] (it hosts the games itself), queues a seeded
//! population of players in two pools, listens to the match event stream, and reports what
//! happened. It runs on the real clock with the engine's background tasks on, exactly as a
//! production embedding would, and stops once every player is matched or gone.
//!
//! ```text
//! cargo run --release --example embedded -- --players 2000 --seed 7
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use compact_str::{CompactString, format_compact};
use futures::future::BoxFuture;
use matchwell::{
    Engine, EnqueueRequest, GameCreationError, GameCreator, GameRequest, MatchEvent, PoolSpec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tokio::sync::broadcast::error::RecvError;

#[derive(Parser)]
#[command(about = "Embed the matchwell engine in a game server process")]
struct Args {
    /// Players to queue.
    #[arg(long, default_value_t = 2_000)]
    players: usize,
    /// Seed of the population (ratings, pools).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

/// The game server's own game table stands in for a live-game service.
#[derive(Default)]
struct LocalGameServer {
    next_game: AtomicU64,
}

impl GameCreator for LocalGameServer {
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        let game = self.next_game.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(match_id = %request.match_id, game, "hosting game");
        Box::pin(std::future::ready(Ok(format_compact!("local-{game}"))))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let engine = Engine::builder()
        .game_creator(Arc::new(LocalGameServer::default()))
        .seed(args.seed)
        .start()
        .await?;
    let mut events = engine.events();
    let pools = [
        PoolSpec::new("5+3".parse()?, "standard", true, None)?,
        PoolSpec::new("3+0".parse()?, "standard", true, None)?,
    ];

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let ratings = Normal::<f64>::new(1500.0, 300.0)?;
    let started = Instant::now();
    for player in 0..args.players {
        let rating = ratings.sample(&mut rng).clamp(0.0, 4000.0) as u16;
        let pool = pools[rng.random_range(0..pools.len())].clone();
        engine
            .enqueue(EnqueueRequest {
                tenant: "default".into(),
                user_id: format_compact!("player-{player}"),
                pool,
                rating,
                idempotency_key: None,
            })
            .await?;
    }
    println!("queued {} players in {:?}", args.players, started.elapsed());

    let mut games_by_pool: HashMap<String, usize> = HashMap::new();
    let mut gaps = Vec::new();
    let mut settled = 0;
    let mut searching = args.players;
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_s));
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = &mut deadline => break,
        };
        match event {
            Ok(MatchEvent::GameCreated { found }) => {
                settled += 2;
                gaps.push(found.rating_gap());
                *games_by_pool.entry(found.pool.to_string()).or_default() += 1;
            }
            Ok(MatchEvent::Expired { .. }) => settled += 1,
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => anyhow::bail!("fell {missed} events behind"),
            Err(RecvError::Closed) => break,
        }
        // Whoever is left has no acceptable opponent yet and waits for windows to widen, up to
        // max_wait; report them rather than wait that long.
        searching = searching_players(&engine).await?;
        if settled + searching == args.players {
            break;
        }
    }

    gaps.sort_unstable();
    let mean_gap = gaps.iter().map(|&gap| f64::from(gap)).sum::<f64>() / gaps.len().max(1) as f64;
    println!(
        "{} games in {:?}; mean rating gap {mean_gap:.1}, p95 {}",
        gaps.len(),
        started.elapsed(),
        gaps.get(gaps.len() * 95 / 100).copied().unwrap_or(0)
    );
    println!("{searching} players still searching, their windows widening");
    let mut pools: Vec<_> = games_by_pool.into_iter().collect();
    pools.sort();
    for (pool, games) in pools {
        println!("  {pool}: {games} games");
    }
    engine.shutdown().await;
    Ok(())
}

async fn searching_players(engine: &Engine) -> anyhow::Result<usize> {
    let queues = engine.summary("default").await?;
    Ok(queues.iter().map(|queue| queue.searching).sum())
}
