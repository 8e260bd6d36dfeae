//! The connection to NATS and the JetStream assets every node of a cluster shares.
//!
//! - stream [`JOURNAL_STREAM`] (subjects `matchwell.journal.<partition>`): every partition's
//!   journal;
//! - key-value bucket [`CLUSTER_BUCKET`]: the cluster's fixed settings (the partition count,
//!   the placement scheme);
//! - key-value bucket [`LEASES_BUCKET`], whose `max_age` is the lease TTL: partition leases and
//!   node announcements, which vanish when not renewed;
//! - object store [`SNAPSHOT_BUCKET`]: one snapshot per partition.
//!
//! A node creates whatever is missing when it connects, so the first node of a cluster sets it
//! up, with the replica count it was given.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, ErrorCode, context, kv, object_store, stream};

use crate::assignment::PLACEMENT;

/// The stream holding every partition's journal.
pub const JOURNAL_STREAM: &str = "MATCHWELL_JOURNAL";
/// The cluster's fixed settings.
pub const CLUSTER_BUCKET: &str = "matchwell-cluster";
/// Partition leases and node announcements.
pub const LEASES_BUCKET: &str = "matchwell-leases";
/// Partition snapshots.
pub const SNAPSHOT_BUCKET: &str = "matchwell-snapshots";
/// The key of the partition count in [`CLUSTER_BUCKET`].
const PARTITIONS_KEY: &str = "partitions";
/// The key of the placement scheme ([`PLACEMENT`]) in [`CLUSTER_BUCKET`].
const PLACEMENT_KEY: &str = "placement";

/// How long a starting node waits for JetStream to answer: a fresh cluster's election takes
/// seconds (2–9 s measured on nats-server 2.9).
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Pause between two attempts to open the assets while JetStream does not answer.
const SETUP_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How a node reaches and sets up the cluster's JetStream assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated (`nats://h1:4222,nats://h2:4222`); the client
    /// reconnects to any of them.
    pub urls: String,
    /// Copies JetStream keeps of each asset it creates: 3 on a three-server NATS cluster (one
    /// server may fail), 1 for development on a single server.
    pub replicas: usize,
    /// How many partitions the cluster's state is split into; fixed at the cluster's first
    /// start.
    pub partitions: u32,
    /// How long a lease or a node announcement lives without renewal.
    pub lease_ttl: Duration,
    /// How long a JetStream request (a publish's acknowledgment included) may take before it
    /// counts as failed.
    pub request_timeout: Duration,
}

impl ClusterConfig {
    /// The design's defaults (32 partitions, 3 replicas, 3 s leases, 2 s requests) for `urls`.
    pub fn new(urls: impl Into<String>) -> Self {
        Self {
            urls: urls.into(),
            replicas: 3,
            partitions: 32,
            lease_ttl: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Why the cluster's assets could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL list is empty or malformed.
    #[error("bad NATS URL list {urls:?}: {reason}")]
    BadUrls {
        /// The list as given.
        urls: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No server could be reached.
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        /// The list as given.
        urls: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// A JetStream asset could not be opened or created (yet: a node retries this for a
    /// while at start).
    #[error("cannot open or create {what}: {reason}")]
    Setup {
        /// Which asset.
        what: String,
        /// Why.
        reason: String,
    },
    /// JetStream refused to set up an asset for a reason that waiting does not change (more
    /// replicas than a lone server holds, an asset of the same name set up otherwise, a
    /// setting that is not what this version writes).
    #[error("JetStream refuses {what}: {reason}")]
    Refused {
        /// Which asset.
        what: String,
        /// Why.
        reason: String,
    },
    /// The cluster was first started with another partition count.
    #[error(
        "this cluster has {cluster} partitions, but this node was started with {configured}: \
         start it with {cluster} partitions (the count is fixed when a cluster first starts; \
         another count needs a new cluster, with empty JetStream storage)"
    )]
    PartitionCountMismatch {
        /// The cluster's count.
        cluster: u32,
        /// This node's.
        configured: u32,
    },
    /// The cluster's nodes place partitions by another scheme than this build: each would
    /// wait for the other to take partitions, and those would stay without an owner.
    #[error(
        "this cluster places partitions by scheme {cluster:?}, but this build places them by \
         {this:?}: nodes of the two cannot share a cluster; stop every node and start them all \
         with one build"
    )]
    PlacementMismatch {
        /// The cluster's scheme.
        cluster: String,
        /// This build's.
        this: &'static str,
    },
}

/// A node's handle on the cluster's JetStream assets; cheap to clone (every field is a handle
/// on the one connection).
#[derive(Clone)]
pub struct ClusterStore {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) journal: stream::Stream,
    pub(crate) leases: kv::Store,
    pub(crate) snapshots: object_store::ObjectStore,
    config: ClusterConfig,
}

impl ClusterStore {
    /// Connects to `config.urls`, opens (or creates) every asset, and checks or fixes the
    /// cluster's partition count and placement scheme.
    pub async fn connect(config: ClusterConfig) -> Result<Self, StoreError> {
        let addresses = server_addresses(&config.urls)?;
        let client = async_nats::ConnectOptions::new()
            .name("matchwell")
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .connect(addresses)
            .await
            .map_err(|source| StoreError::Connect {
                urls: config.urls.clone(),
                source,
            })?;
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(config.request_timeout);

        // A NATS cluster that has just formed answers JetStream requests only once it has
        // elected its meta leader (seconds): a node started beside it waits that out.
        let patience = Instant::now() + SETUP_PATIENCE;
        // The partition count is read (or recorded) in the same attempt: right after the meta
        // leader, each new bucket elects a leader of its own, and a request to it can time out.
        let (journal, leases, snapshots) = loop {
            let attempt = async {
                let (journal, settings, leases, snapshots) =
                    open_assets(&jetstream, &config).await?;
                check_partitions(&settings, config.partitions).await?;
                check_placement(&settings).await?;
                Ok((journal, leases, snapshots))
            };
            match attempt.await {
                Ok(assets) => break assets,
                Err(StoreError::Setup { what, reason }) if Instant::now() < patience => {
                    tracing::warn!(%what, %reason, "JetStream is not answering yet; trying again");
                    tokio::time::sleep(SETUP_RETRY_PAUSE).await;
                }
                Err(error) => return Err(error),
            }
        };
        Ok(Self {
            jetstream,
            journal,
            leases,
            snapshots,
            config,
        })
    }

    /// The configuration this node connected with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster's partition count.
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// The journal subject of `partition`.
    pub fn journal_subject(partition: u32) -> String {
        format!("matchwell.journal.{partition}")
    }
}

/// The journal stream, the cluster settings and lease buckets and the snapshot store, each
/// opened or created.
async fn open_assets(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<
    (
        stream::Stream,
        kv::Store,
        kv::Store,
        object_store::ObjectStore,
    ),
    StoreError,
> {
    let journal = jetstream
        .get_or_create_stream(stream::Config {
            name: JOURNAL_STREAM.to_owned(),
            subjects: vec!["matchwell.journal.*".to_owned()],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|error| setup(JOURNAL_STREAM, error))?;
    let settings = open_bucket(jetstream, CLUSTER_BUCKET, config, Duration::ZERO).await?;
    let leases = open_bucket(jetstream, LEASES_BUCKET, config, config.lease_ttl).await?;
    let snapshots = match jetstream.get_object_store(SNAPSHOT_BUCKET).await {
        Ok(store) => store,
        Err(_) => jetstream
            .create_object_store(object_store::Config {
                bucket: SNAPSHOT_BUCKET.to_owned(),
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|error| setup(SNAPSHOT_BUCKET, error))?,
    };
    Ok((journal, settings, leases, snapshots))
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The NATS servers of `urls`, comma-separated (`nats://h1:4222,nats://h2:4222`).
pub fn server_addresses(urls: &str) -> Result<Vec<async_nats::ServerAddr>, StoreError> {
    let bad = |reason: String| StoreError::BadUrls {
        urls: urls.to_owned(),
        reason,
    };
    let addresses = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(error.to_string()))?;
    if addresses.is_empty() {
        return Err(bad("no URL".to_owned()));
    }
    Ok(addresses)
}

/// Opens key-value bucket `name`, creating it (one value per key) if it does not exist.
///
/// The bucket's stream is created here, in the layout of the key-value API, because the
/// client's own bucket creation first asks for account information in a shape that
/// `nats-server` 2.9 does not answer.
async fn open_bucket(
    jetstream: &jetstream::Context,
    name: &str,
    config: &ClusterConfig,
    max_age: Duration,
) -> Result<kv::Store, StoreError> {
    if let Ok(bucket) = jetstream.get_key_value(name).await {
        return Ok(bucket);
    }
    // Two nodes starting at once may both get here; JetStream accepts the second, identical,
    // creation as a no-op.
    jetstream
        .create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|error| setup(name, error))?;
    jetstream
        .get_key_value(name)
        .await
        .map_err(|error| setup(name, error))
}

/// Records `configured` as the cluster's partition count if none is recorded, and refuses any
/// other count.
async fn check_partitions(settings: &kv::Store, configured: u32) -> Result<(), StoreError> {
    let recorded = fixed_setting(settings, PARTITIONS_KEY, &configured.to_string()).await?;
    let cluster = recorded.parse::<u32>().map_err(|_| StoreError::Refused {
        what: "the partition count".to_owned(),
        reason: format!(
            "key {PARTITIONS_KEY:?} of bucket {CLUSTER_BUCKET} holds {recorded:?}, not a number"
        ),
    })?;
    if cluster == configured {
        Ok(())
    } else {
        Err(StoreError::PartitionCountMismatch {
            cluster,
            configured,
        })
    }
}

/// Records this build's [`PLACEMENT`] if the cluster has none recorded, and refuses another.
async fn check_placement(settings: &kv::Store) -> Result<(), StoreError> {
    let recorded = fixed_setting(settings, PLACEMENT_KEY, PLACEMENT).await?;
    if recorded == PLACEMENT {
        Ok(())
    } else {
        Err(StoreError::PlacementMismatch {
            cluster: recorded,
            this: PLACEMENT,
        })
    }
}

/// The value of `key` in the cluster's settings, recording `ours` first if there is none
/// (create-only, so of two first nodes one value wins).
async fn fixed_setting(settings: &kv::Store, key: &str, ours: &str) -> Result<String, StoreError> {
    let what = format!("key {key:?} of bucket {CLUSTER_BUCKET}");
    match settings.create(key, ours.to_owned().into()).await {
        Ok(_) => return Ok(ours.to_owned()),
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(error) => return Err(setup(&what, error)),
    }
    let recorded = settings
        .get(key)
        .await
        .map_err(|error| setup(&what, error))?;
    recorded
        .as_deref()
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Refused {
            what,
            reason: format!("it holds {recorded:?}, not text"),
        })
}

/// How long one attempt to create an ephemeral consumer (a journal reader, a lease watch) may
/// wait for JetStream's answer (it takes milliseconds), and how many attempts are made. While
/// one server of a NATS 2.9 cluster is down, JetStream places about one ephemeral consumer in
/// three on that server, and such a creation is never answered (seen with another client
/// too): short attempts, made again, get past it, where one long wait would hold a take-over
/// or leave the lease view stale for its whole length.
const CONSUMER_ATTEMPT: Duration = Duration::from_millis(500);
const CONSUMER_ATTEMPTS: u32 = 10;

/// What `create` (a request that creates an ephemeral consumer) answers, made again after
/// each attempt that got no answer in time; `None` when none did.
pub(crate) async fn ephemeral_consumer<T, F: Future<Output = T>>(
    mut create: impl FnMut() -> F,
) -> Option<T> {
    for _ in 0..CONSUMER_ATTEMPTS {
        if let Ok(answer) = tokio::time::timeout(CONSUMER_ATTEMPT, create()).await {
            return Some(answer);
        }
    }
    None
}

/// Why [`ephemeral_consumer`] gave up.
pub(crate) fn ephemeral_consumer_timed_out() -> String {
    format!("no consumer created in {CONSUMER_ATTEMPTS} attempts of {CONSUMER_ATTEMPT:?} each")
}

/// `error` in setting up `what`: [`StoreError::Refused`] when JetStream answered it with a
/// refusal that stands, [`StoreError::Setup`] otherwise (a timeout, no meta leader yet, too few
/// peers known yet while a cluster forms: waiting may mend them).
fn setup(what: &str, error: impl std::error::Error + 'static) -> StoreError {
    let (what, reason) = (what.to_owned(), error.to_string());
    if refused_for_good(&error) {
        StoreError::Refused { what, reason }
    } else {
        StoreError::Setup { what, reason }
    }
}

/// Whether `error`, or an error that caused it, is JetStream's refusal to create a stream for
/// a reason that stands: a stream of several replicas on a server that is not clustered, or a
/// name already taken by a stream set up otherwise (key-value buckets and object stores are
/// streams too).
fn refused_for_good(error: &(dyn std::error::Error + 'static)) -> bool {
    const STANDING: [ErrorCode; 2] = [
        ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED,
        ErrorCode::STREAM_NAME_EXIST,
    ];
    std::iter::successors(Some(error), |error| error.source()).any(|cause| {
        cause
            .downcast_ref::<context::CreateStreamError>()
            .is_some_and(|created| match created.kind() {
                context::CreateStreamErrorKind::JetStream(refusal) => {
                    STANDING.contains(&refusal.error_code())
                }
                _ => false,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::NatsCluster;

    /// Waiting cannot mend this one, so the node says so at once instead of after its
    /// start-up patience.
    #[tokio::test]
    async fn a_lone_server_refuses_three_replicas_at_once() {
        let nats = NatsCluster::start(1).unwrap();
        let error = ClusterStore::connect(ClusterConfig::new(nats.urls()))
            .await
            .expect_err("one server cannot hold three replicas");
        assert!(matches!(error, StoreError::Refused { .. }), "{error}");
        assert!(
            error.to_string().contains("replicas > 1 not supported"),
            "{error}"
        );
    }
}
