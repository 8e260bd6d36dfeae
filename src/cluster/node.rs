//! A node of the cluster: its view of the leases, its controller (which partitions to own,
//! follow, take or hand over), its announcement, and how requests find their partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use matchwell_cluster::{
    ClusterStore, Follower, LeaseError, NodeInfo, Placement, StoreError, assignment,
    partition_of_tenant,
};
use parking_lot::Mutex;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::EngineBuilder;
use crate::cluster::config::{ClusterConfigError, ClusterSettings};
use crate::cluster::map::{ClusterMap, NodeView, PartitionView};
use crate::cluster::metrics::ClusterMetrics;
use crate::cluster::partition::{Owned, OwnerOutcome, Partitions, own};
use crate::cluster::view::{self, Holder, View};
use crate::health::{ComponentHealth, HealthStatus};

/// How often the controller looks at the map when nothing wakes it.
const CONTROL_EVERY: Duration = Duration::from_millis(100);

/// How often a node tries to take a vacant partition it should own.
const ACQUIRE_EVERY: Duration = Duration::from_millis(250);

/// Builds the engine of a partition: the server's settings, the partition's id range and
/// metrics registry.
pub type EngineFactory = Arc<dyn Fn(u32) -> EngineBuilder + Send + Sync>;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// NATS could not be reached, its assets set up, or the partition count differs.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node's settings do not fit.
    #[error(transparent)]
    Config(#[from] ClusterConfigError),
    /// The node id is invalid.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Metrics could not be registered.
    #[error("could not register cluster metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the node's tasks share. One `Arc`: the store, view, partitions and metrics are
/// handles or internally synchronised; `leaving` is the one flag that changes.
pub(crate) struct Context {
    pub(crate) store: ClusterStore,
    pub(crate) me: NodeInfo,
    pub(crate) settings: ClusterSettings,
    pub(crate) view: Arc<View>,
    pub(crate) partitions: Arc<Partitions>,
    pub(crate) metrics: ClusterMetrics,
    pub(crate) engines: EngineFactory,
    /// Set on a graceful stop: the node hands everything over and takes nothing.
    leaving: AtomicBool,
    /// What this node does with each partition, for the map.
    roles: Mutex<Vec<Role>>,
}

impl Context {
    /// How often leases and the announcement are written: a third of the TTL, so that two
    /// renewals may fail before the lease runs out.
    pub(crate) fn renew_every(&self) -> Duration {
        self.settings.store.lease_ttl / 3
    }

    fn partition_count(&self) -> u32 {
        self.settings.store.partitions
    }

    /// The live nodes the desired map is computed from: those the view has seen announced,
    /// and this node, which counts itself live before its first announcement comes back.
    fn live_nodes(&self) -> Vec<String> {
        let mut live = self.view.live_nodes();
        let me = self.me.id();
        if !live.iter().any(|id| id == me) {
            live.push(me.to_owned());
        }
        live
    }
}

/// What a node does with one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    None,
    Starting,
    Standby,
    Owner,
}

impl Role {
    fn name(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Starting => Some("starting_standby"),
            Self::Standby => Some("standby"),
            Self::Owner => Some("owner"),
        }
    }
}

/// Where a request for a tenant goes.
pub(crate) enum Route {
    /// This node serves the tenant's partition.
    Local(Arc<Owned>),
    /// Another node does.
    Remote(Arc<Holder>),
    /// Nobody does right now (a take-over or hand-over is under way); the reason.
    Unavailable(String),
}

/// A running node.
pub struct Node {
    context: Arc<Context>,
    /// The view's watch and the controller.
    tasks: Vec<JoinHandle<()>>,
    /// The announcement's renewals, stopped first when the node leaves.
    announcer: JoinHandle<()>,
    /// Tells the controller to let everything go, and tells back when it has.
    leave: watch::Sender<bool>,
    /// Turns true once the controller holds nothing any more after a leave.
    left: watch::Receiver<bool>,
}

impl Node {
    /// Connects to the cluster's JetStream (refusing a different partition count), joins the
    /// cluster as `settings.node_id` reachable at `advertise`, and starts taking its share
    /// of the partitions, each served by an engine from `engines`. Node metrics (and the
    /// engines') go to `registry`.
    pub async fn start(
        settings: ClusterSettings,
        advertise: String,
        engines: EngineFactory,
        registry: &Registry,
    ) -> Result<Self, NodeError> {
        let me = NodeInfo::new(settings.node_id.clone(), advertise)?;
        let store = ClusterStore::connect(settings.store.clone()).await?;
        let partitions = Arc::new(Partitions::new(settings.store.partitions));
        let metrics = ClusterMetrics::register(registry, Arc::clone(&partitions))?;
        let context = Arc::new(Context {
            view: Arc::new(View::new(
                settings.store.partitions,
                settings.store.lease_ttl,
            )),
            roles: Mutex::new(vec![Role::None; settings.store.partitions as usize]),
            store,
            me,
            settings,
            partitions,
            metrics,
            engines,
            leaving: AtomicBool::new(false),
        });
        let (leave, leaving) = watch::channel(false);
        let (done, left) = watch::channel(false);
        let quiet = context.renew_every() * 5 / 2;
        let tasks = vec![
            tokio::spawn(view::follow(
                context.store.clone(),
                Arc::clone(&context.view),
                context.me.id().to_owned(),
                quiet,
            )),
            tokio::spawn(Controller::new(Arc::clone(&context)).run(leaving, done)),
        ];
        let announcer = tokio::spawn(announce(Arc::clone(&context)));
        Ok(Self {
            context,
            tasks,
            announcer,
            leave,
            left,
        })
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        self.context.me.id()
    }

    /// Where requests of `tenant` go.
    pub(crate) fn route(&self, tenant: &str) -> Route {
        let context = &self.context;
        let partition = partition_of_tenant(tenant, context.partition_count());
        if let Some(owned) = context.partitions.get(partition) {
            return if owned.serving() {
                Route::Local(owned)
            } else {
                Route::Unavailable(format!(
                    "partition {partition} is moving to another node; retry shortly"
                ))
            };
        }
        match context.view.holder(partition) {
            Some(holder) if holder.node.id() != context.me.id() => Route::Remote(holder),
            _ => Route::Unavailable(format!(
                "partition {partition} has no owner right now (a failover is in progress); \
                 retry shortly"
            )),
        }
    }

    /// The node's metrics, for the forwarding layer to count in.
    pub(crate) fn metrics(&self) -> &ClusterMetrics {
        &self.context.metrics
    }

    /// The partition map as this node sees it.
    pub(crate) fn map(&self) -> ClusterMap {
        let context = &self.context;
        let desired = assignment(context.partition_count(), &context.live_nodes());
        let roles = context.roles.lock().clone();
        ClusterMap {
            node: context.me.id().to_owned(),
            advertise: context.me.http().to_owned(),
            partitions: context.partition_count(),
            view_fresh: context.view.is_fresh(),
            leaving: context.leaving.load(Ordering::Acquire),
            nodes: context
                .view
                .live_node_infos()
                .into_iter()
                .map(|(node, age)| NodeView {
                    id: node.id().to_owned(),
                    http: node.http().to_owned(),
                    announced_ms_ago: age.as_millis() as u64,
                })
                .collect(),
            map: (0..context.partition_count())
                .map(|partition| {
                    let holder = context.view.holder(partition);
                    let placement = desired.get(partition as usize);
                    PartitionView {
                        partition,
                        owner: holder.as_ref().map(|holder| holder.node.id().to_owned()),
                        lease_revision: holder.as_ref().map(|holder| holder.revision),
                        lease_age_ms: holder
                            .as_ref()
                            .map(|holder| holder.seen_at.elapsed().as_millis() as u64),
                        desired_owner: placement.map(|placement| placement.owner.clone()),
                        standby: placement.and_then(|placement| placement.standby.clone()),
                        serving_here: context
                            .partitions
                            .get(partition)
                            .is_some_and(|owned| owned.serving()),
                        role_here: roles[partition as usize].name(),
                    }
                })
                .collect(),
        }
    }

    /// The `cluster` health component: unhealthy while the node cannot see the cluster
    /// (NATS unreachable, or not joined yet), is leaving, or owns a partition it does not
    /// serve (a journal that failed, a lease running out); degraded while some partition has
    /// no owner (requests for it answer 503 on every node).
    pub(crate) fn health(&self) -> ComponentHealth {
        let context = &self.context;
        let fresh = context.view.is_fresh();
        let leaving = context.leaving.load(Ordering::Acquire);
        let owned: Vec<_> = context.partitions.owned().collect();
        let not_serving = owned.iter().filter(|owned| !owned.serving()).count();
        let ownerless = (0..context.partition_count())
            .filter(|&partition| context.view.holder(partition).is_none())
            .count();
        let status = if !fresh || leaving || not_serving > 0 {
            HealthStatus::Unhealthy
        } else if ownerless > 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        ComponentHealth::new(
            status,
            serde_json::json!({
                "node": context.me.id(),
                "view_fresh": fresh,
                "view_quiet_ms": context.view.quiet_for().as_millis() as u64,
                "leaving": leaving,
                "owned": owned.len(),
                "owned_not_serving": not_serving,
                "standby": context.metrics.standby.get(),
                "partitions_without_owner": ownerless,
                "live_nodes": context.view.live_nodes(),
            }),
        )
    }

    /// Leaves the cluster: withdraws this node's announcement, then hands every partition
    /// over (each stops taking writes, flushes its journal, releases its lease), for at most
    /// `within`. Requests for those partitions are forwarded to their new owners meanwhile.
    /// Whether everything was handed over in time.
    pub async fn leave(&self, within: Duration) -> bool {
        let context = &self.context;
        context.leaving.store(true, Ordering::Release);
        // An announcement in flight could land after the withdrawal, and keep this node in
        // the others' maps (holding up the take-overs) until it expired.
        self.announcer.abort();
        if let Err(error) = context.store.withdraw(&context.me).await {
            tracing::warn!(%error, "could not withdraw this node's announcement");
        }
        self.leave.send_replace(true);
        let mut left = self.left.clone();
        tokio::time::timeout(within, left.wait_for(|&left| left))
            .await
            .is_ok()
    }

    /// Stops every task of the node; partitions not handed over are lost with their leases'
    /// expiry.
    pub fn shutdown(&self) {
        self.announcer.abort();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Announces the node every renewal period until it leaves.
async fn announce(context: Arc<Context>) {
    let mut ticks = tokio::time::interval(context.renew_every());
    loop {
        ticks.tick().await;
        if context.leaving.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = context.store.announce(&context.me).await {
            tracing::warn!(%error, "could not announce this node");
        }
    }
}

/// What the controller does with one partition.
enum Local {
    Idle,
    /// A follower being started (its snapshot loading).
    Starting(JoinHandle<Option<Follower>>),
    /// Boxed: a follower is large, and most partitions are idle.
    Following(Box<Follower>),
    /// An owner task (taking the lease, taking over, serving, letting go), and the switch
    /// that makes it hand the partition over.
    Owning {
        task: JoinHandle<OwnerOutcome>,
        hand_over: watch::Sender<bool>,
    },
}

/// Decides, from the view, what this node does with each partition.
struct Controller {
    context: Arc<Context>,
    local: Vec<Local>,
    /// When each partition's lease was last tried.
    tried: Vec<Option<tokio::time::Instant>>,
    /// The desired map and the live nodes it was computed from: the controller steers after
    /// every lease renewal it sees (several a second per partition), while the live nodes
    /// rarely change, and the map costs a ranking of every node per partition.
    desired: (Vec<String>, Vec<Placement>),
}

impl Controller {
    fn new(context: Arc<Context>) -> Self {
        let partitions = context.partition_count() as usize;
        Self {
            local: (0..partitions).map(|_| Local::Idle).collect(),
            tried: vec![None; partitions],
            desired: (Vec::new(), Vec::new()),
            context,
        }
    }

    async fn run(mut self, mut leave: watch::Receiver<bool>, left: watch::Sender<bool>) {
        let mut ticks = tokio::time::interval(CONTROL_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.context.view.changed.notified() => {}
                _ = leave.changed() => {}
            }
            self.reap().await;
            let leaving = *leave.borrow();
            if leaving {
                self.let_go();
                if self.local.iter().all(|local| matches!(local, Local::Idle)) {
                    left.send_replace(true);
                }
            } else if self.context.view.is_fresh() {
                self.steer();
            }
            self.publish_roles();
        }
    }

    /// Collects the partitions whose owner task or follower start has ended.
    async fn reap(&mut self) {
        for local in &mut self.local {
            let finished = match local {
                Local::Starting(task) | Local::Owning { task, .. } => task.is_finished(),
                _ => false,
            };
            if !finished {
                continue;
            }
            *local = match std::mem::replace(local, Local::Idle) {
                Local::Starting(task) | Local::Owning { task, .. } => match task.await {
                    Ok(Some(follower)) => Local::Following(Box::new(follower)),
                    _ => Local::Idle,
                },
                other => other,
            };
        }
    }

    /// Hands every owned partition over and stops following.
    fn let_go(&mut self) {
        for local in &mut self.local {
            match local {
                Local::Owning { hand_over, .. } => {
                    hand_over.send_replace(true);
                }
                Local::Starting(task) => task.abort(),
                _ => {}
            }
            if matches!(local, Local::Following(_) | Local::Starting(_)) {
                *local = Local::Idle;
            }
        }
    }

    /// Moves each partition toward the desired map: own what this node should own once it is
    /// vacant, hand over what another live node should own, follow what this node should own
    /// or stand by for.
    fn steer(&mut self) {
        let context = Arc::clone(&self.context);
        let me = context.me.id();
        let live = context.live_nodes();
        if self.desired.0 != live {
            self.desired.1 = assignment(context.partition_count(), &live);
            self.desired.0 = live;
        }
        let now = tokio::time::Instant::now();
        for (partition, Placement { owner, standby }) in self.desired.1.iter().enumerate() {
            let index = partition;
            let partition = partition as u32;
            let owner_here = owner == me;
            let standby_here = standby.as_deref() == Some(me);
            let local = &mut self.local[index];
            match local {
                Local::Owning { hand_over, .. } => {
                    if !owner_here {
                        hand_over.send_if_modified(|go| !std::mem::replace(go, true));
                    }
                }
                Local::Starting(_) => {}
                Local::Idle | Local::Following(_) => {
                    let vacant = context.view.holder(partition).is_none();
                    let due = self.tried[index]
                        .is_none_or(|tried| now.duration_since(tried) >= ACQUIRE_EVERY);
                    if owner_here && vacant && due {
                        self.tried[index] = Some(now);
                        let follower = match std::mem::replace(local, Local::Idle) {
                            Local::Following(follower) => Some(*follower),
                            _ => None,
                        };
                        let (hand_over, handed) = watch::channel(false);
                        let task =
                            tokio::spawn(own(Arc::clone(&context), partition, follower, handed));
                        *local = Local::Owning { task, hand_over };
                    } else if (owner_here || standby_here) && matches!(local, Local::Idle) {
                        let store = context.store.clone();
                        *local = Local::Starting(tokio::spawn(async move {
                            Follower::start(&store, partition)
                                .await
                                .inspect_err(|error| {
                                    tracing::warn!(partition, %error, "cannot follow the partition")
                                })
                                .ok()
                        }));
                    } else if !owner_here && !standby_here {
                        *local = Local::Idle;
                    }
                }
            }
        }
    }

    fn publish_roles(&self) {
        let roles: Vec<Role> = self
            .local
            .iter()
            .map(|local| match local {
                Local::Idle => Role::None,
                Local::Starting(_) => Role::Starting,
                Local::Following(_) => Role::Standby,
                Local::Owning { .. } => Role::Owner,
            })
            .collect();
        let standby = roles.iter().filter(|role| **role == Role::Standby).count();
        self.context.metrics.standby.set(standby as i64);
        *self.context.roles.lock() = roles;
    }
}
