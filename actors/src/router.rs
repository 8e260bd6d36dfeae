//! The router actor, and the actor system that hosts it and the shards.
//!
//! The router owns no state but the shard addresses: it sends each enqueue, cancel and requeue
//! to the shard that owns the message's queue, and fans ticks and summaries out to all shards.
//! Because every message for a queue passes through this one mailbox and then one shard
//! mailbox, messages about one entry arrive in the order they were sent: a cancel can never
//! overtake the enqueue it cancels.

use std::sync::Arc;
use std::thread::JoinHandle;

use actix::{Actor, Addr, Context, Handler, MailboxError, Message, ResponseFuture};
use actix_rt::{Arbiter, System};
use futures::future::join_all;

use crate::index::QueueKey;
use crate::matching::Waiting;
use crate::shard::{
    Cancel, Enqueue, GameFailed, PoolShard, QueueFigures, RunDue, ShardTimers, Summarize,
    TickCounts,
};
use crate::shared::Shared;

/// The actors have stopped (the engine is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine's actors have stopped")]
pub struct ActorsStopped;

impl From<MailboxError> for ActorsStopped {
    fn from(_: MailboxError) -> Self {
        Self
    }
}

/// The router actor.
pub(crate) struct Router {
    shards: Vec<Addr<PoolShard>>,
}

/// The shard (of `shards`) that owns `queue`: a multiplicative hash, so the queues of one
/// tenant spread over the shards as well as the tenants do.
pub(crate) fn shard_index(queue: QueueKey, shards: usize) -> usize {
    let mixed = ((u64::from(queue.tenant.0) << 16) | u64::from(queue.pool.0))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % shards as u64) as usize
}

impl Router {
    fn shard_for(&self, queue: QueueKey) -> &Addr<PoolShard> {
        &self.shards[shard_index(queue, self.shards.len())]
    }

    fn broadcast<M>(
        &self,
        message: M,
    ) -> impl Future<Output = Result<Vec<M::Result>, ActorsStopped>> + 'static
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        PoolShard: Handler<M>,
    {
        let requests: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.send(message.clone()))
            .collect();
        async move {
            join_all(requests)
                .await
                .into_iter()
                .map(|result| result.map_err(ActorsStopped::from))
                .collect()
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for Router {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) {
        self.shard_for(msg.queue).do_send(msg);
    }
}

impl Handler<GameFailed> for Router {
    type Result = ResponseFuture<()>;

    /// Answers once the shard has handled it, so the sender knows the players are back.
    fn handle(&mut self, msg: GameFailed, _: &mut Self::Context) -> Self::Result {
        let request = self.shard_for(msg.queue).send(msg);
        Box::pin(async move {
            if request.await.is_err() {
                tracing::warn!("a shard stopped before it could put players back in the queue");
            }
        })
    }
}

impl Handler<Cancel> for Router {
    type Result = ();

    fn handle(&mut self, msg: Cancel, _: &mut Self::Context) {
        self.shard_for(msg.queue).do_send(msg);
    }
}

/// A tick for every shard.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<TickCounts, ActorsStopped>")]
pub(crate) struct RouteTick(pub(crate) RunDue);

impl Handler<RouteTick> for Router {
    type Result = ResponseFuture<Result<TickCounts, ActorsStopped>>;

    fn handle(&mut self, msg: RouteTick, _: &mut Self::Context) -> Self::Result {
        let replies = self.broadcast(msg.0);
        Box::pin(async move {
            let mut total = TickCounts::default();
            for counts in replies.await? {
                total += counts;
            }
            Ok(total)
        })
    }
}

/// A summary request for every shard.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<QueueFigures>, ActorsStopped>")]
pub(crate) struct RouteSummary(pub(crate) Summarize);

impl Handler<RouteSummary> for Router {
    type Result = ResponseFuture<Result<Vec<QueueFigures>, ActorsStopped>>;

    fn handle(&mut self, msg: RouteSummary, _: &mut Self::Context) -> Self::Result {
        let replies = self.broadcast(msg.0);
        Box::pin(async move { Ok(replies.await?.into_iter().flatten().collect()) })
    }
}

/// The shards' initial content: per shard, the searching entries of its queues.
pub(crate) type ShardContents = Vec<Vec<(QueueKey, u16, Waiting)>>;

/// A dedicated actix system: one thread per shard arbiter (the router shares the first),
/// and the system's own thread. Dedicated so that the engine runs the same inside an
/// actix-web server, inside a plain tokio program, or in a test.
pub(crate) struct ActorSystem {
    router: Addr<Router>,
    system: System,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl ActorSystem {
    /// Starts `shards` shards (at least one) and the router.
    pub(crate) fn start(
        shared: Arc<Shared>,
        shards: usize,
        seed: u64,
        timers: ShardTimers,
    ) -> std::io::Result<Self> {
        let shards = shards.max(1);
        let (started, receive) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("matchwell-actors".into())
            .spawn(move || {
                let runner = System::new();
                let contents = shard_contents(&shared, shards);
                let arbiters: Vec<Arbiter> = (0..shards).map(|_| Arbiter::new()).collect();
                let addresses: Vec<Addr<PoolShard>> = contents
                    .into_iter()
                    .zip(&arbiters)
                    .enumerate()
                    .map(|(n, (restored, arbiter))| {
                        let shared = Arc::clone(&shared);
                        let shard_seed = seed.wrapping_add(n as u64);
                        PoolShard::start_in_arbiter(&arbiter.handle(), move |_| {
                            PoolShard::new(shared, shard_seed, timers, restored)
                        })
                    })
                    .collect();
                // On the first shard's thread: what the router sends that shard is queued
                // on the thread it runs on, without waking another, and a one-shard engine
                // (a cluster partition, a small machine) handles a write with a single hop.
                let router = Router::start_in_arbiter(&arbiters[0].handle(), move |_| Router {
                    shards: addresses,
                });
                // The receiver only goes away if `start` itself failed; nothing is left to tell then.
                let _ = started.send((router, System::current()));
                if let Err(error) = runner.run() {
                    tracing::error!(%error, "actor system stopped with an error");
                }
                drop(arbiters);
            })?;
        let (router, system) = receive
            .recv()
            .map_err(|_| std::io::Error::other("the actor system thread died while starting"))?;
        Ok(Self {
            router,
            system,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn router(&self) -> &Addr<Router> {
        &self.router
    }

    /// Stops every actor and waits for their threads; later calls do nothing.
    pub(crate) fn stop(&self) {
        if let Some(thread) = self.thread.lock().take() {
            self.system.stop();
            if thread.join().is_err() {
                tracing::error!("actor system thread panicked");
            }
        }
    }
}

impl Drop for ActorSystem {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Splits the index's searching entries by the shard that owns their queue.
fn shard_contents(shared: &Shared, shards: usize) -> ShardContents {
    let mut contents: ShardContents = vec![Vec::new(); shards];
    shared.index.entries.for_each(|id, record| {
        if record.state.is_searching() {
            let queue = record.queue();
            contents[shard_index(queue, shards)].push((queue, record.rating, record.waiting(id)));
        }
    });
    contents
}
