//! Cluster mode's flags (`matchwell serve --cluster …`) and their validated form.

use std::time::Duration;

use clap::Args;
use matchwell_cluster::{ClusterConfig, NodeInfo};
use reqwest::Url;

use crate::config::{ConfigError, in_range};

/// Most partitions a cluster may have: ids carry their partition above bit 40 of 64.
const MAX_PARTITIONS: u32 = 4_096;
/// Most copies JetStream may keep.
const MAX_REPLICAS: usize = 5;
/// Shortest and longest lease accepted, in milliseconds.
const LEASE_TTL_MS: (u64, u64) = (500, 60_000);

/// `matchwell serve` flags of cluster mode; without `--cluster` none of them matters.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Runs as a node of a cluster whose state lives in NATS JetStream at these URLs
    /// (comma-separated, e.g. `nats://h1:4222,nats://h2:4222`); no data directory is used for
    /// state then. Without it the server runs alone.
    #[arg(long = "cluster", env = "MATCHWELL_CLUSTER_NATS")]
    pub nats: Option<String>,
    /// This node's id in the cluster (letters, digits, `-`, `_`; default: the host name).
    #[arg(long, env = "MATCHWELL_NODE_ID")]
    pub node_id: Option<String>,
    /// How many partitions the cluster's tenants are spread over; fixed when the cluster
    /// first starts, and a node started with another count refuses to start.
    #[arg(long, env = "MATCHWELL_CLUSTER_PARTITIONS", default_value_t = 32)]
    pub partitions: u32,
    /// Copies JetStream keeps of the journal, leases and snapshots when this node creates
    /// them: 3 on a three-server NATS cluster, 1 for development on one server.
    #[arg(
        long = "cluster-replicas",
        env = "MATCHWELL_CLUSTER_REPLICAS",
        default_value_t = 3
    )]
    pub replicas: usize,
    /// The URL other nodes forward requests to (default: `http://` and the address the
    /// server listens on, which must then not be a wildcard address like 0.0.0.0).
    #[arg(long, env = "MATCHWELL_CLUSTER_ADVERTISE")]
    pub advertise: Option<String>,
    /// How long a partition lease lives without renewal, in milliseconds; it is renewed every
    /// third of that. An owner that dies loses its partitions after this long.
    #[arg(
        long = "cluster-lease-ttl-ms",
        env = "MATCHWELL_CLUSTER_LEASE_TTL_MS",
        default_value_t = 3_000
    )]
    pub lease_ttl_ms: u64,
}

/// A cluster flag that cannot be used (numbers out of range are
/// [`ConfigError::OutOfRange`]).
#[derive(Debug, thiserror::Error)]
pub enum ClusterConfigError {
    /// The node id cannot be part of a key.
    #[error(
        "--node-id / MATCHWELL_NODE_ID {0:?} is not a node id: use 1 to 64 letters, digits, `-` or `_`"
    )]
    NodeId(String),
    /// The advertised address is not an HTTP URL.
    #[error(
        "--advertise / MATCHWELL_CLUSTER_ADVERTISE {url:?} is not an http:// or https:// URL: {reason}"
    )]
    Advertise {
        /// The value.
        url: String,
        /// Why.
        reason: String,
    },
    /// Without an advertised address, the listen address is one other nodes cannot reach.
    #[error(
        "the server listens on {listen}, which other nodes cannot forward to: set --advertise / \
         MATCHWELL_CLUSTER_ADVERTISE to this node's URL (e.g. http://10.0.0.5:8080)"
    )]
    Unadvertisable {
        /// The bound address.
        listen: std::net::SocketAddr,
    },
    /// Every node must accept every other node's tokens.
    #[error(
        "cluster mode needs MATCHWELL_JWT_SECRET (or --jwt-secret), the same on every node: \
         nodes forward requests to each other with their tokens, and each node's development \
         secret would differ"
    )]
    NoSharedSecret,
}

/// Cluster mode, checked.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How to reach and set up JetStream (URLs, partitions, replicas, lease TTL).
    pub store: ClusterConfig,
    /// This node's id.
    pub node_id: String,
    /// Where other nodes forward to, if set; else the bound listen address.
    pub advertise: Option<Url>,
}

impl ClusterSettings {
    /// Cluster mode as `args` ask for it, or `None` without `--cluster`. `has_secret`: whether
    /// a JWT secret is configured.
    pub fn from_args(args: &ClusterArgs, has_secret: bool) -> Result<Option<Self>, ConfigError> {
        let Some(urls) = &args.nats else {
            return Ok(None);
        };
        if !has_secret {
            return Err(ClusterConfigError::NoSharedSecret.into());
        }
        let node_id = match &args.node_id {
            Some(id) => id.clone(),
            None => host_name_as_id(&rustix::system::uname().nodename().to_string_lossy()),
        };
        if NodeInfo::new(node_id.clone(), "").is_err() {
            return Err(ClusterConfigError::NodeId(node_id).into());
        }
        let partitions = in_range(
            "--partitions / MATCHWELL_CLUSTER_PARTITIONS",
            args.partitions.into(),
            1,
            MAX_PARTITIONS.into(),
        )?;
        let replicas = in_range(
            "--cluster-replicas / MATCHWELL_CLUSTER_REPLICAS",
            args.replicas as u64,
            1,
            MAX_REPLICAS as u64,
        )?;
        let lease_ttl_ms = in_range(
            "--cluster-lease-ttl-ms / MATCHWELL_CLUSTER_LEASE_TTL_MS",
            args.lease_ttl_ms,
            LEASE_TTL_MS.0,
            LEASE_TTL_MS.1,
        )?;
        let advertise = args
            .advertise
            .as_deref()
            .map(advertised)
            .transpose()
            .map_err(ConfigError::Cluster)?;
        Ok(Some(Self {
            store: ClusterConfig {
                replicas: replicas as usize,
                partitions: partitions as u32,
                lease_ttl: Duration::from_millis(lease_ttl_ms),
                ..ClusterConfig::new(urls.clone())
            },
            node_id,
            advertise,
        }))
    }

    /// The URL other nodes forward to: the one configured, or the address bound.
    pub fn advertise_url(&self, bound: std::net::SocketAddr) -> Result<String, ClusterConfigError> {
        if let Some(url) = &self.advertise {
            return Ok(url.as_str().trim_end_matches('/').to_owned());
        }
        if bound.ip().is_unspecified() {
            return Err(ClusterConfigError::Unadvertisable { listen: bound });
        }
        Ok(format!("http://{bound}"))
    }
}

fn advertised(url: &str) -> Result<Url, ClusterConfigError> {
    let invalid = |reason: String| ClusterConfigError::Advertise {
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(
            "it needs the http or https scheme and a host".to_owned(),
        ));
    }
    Ok(parsed)
}

/// A host name as a node id: its first label (a fully qualified name's dots cannot be in a
/// key), other characters a key cannot hold turned into `-`, at most 64 of them.
fn host_name_as_id(host: &str) -> String {
    host.split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nats: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            nats: nats.map(str::to_owned),
            node_id: Some("n1".to_owned()),
            partitions: 32,
            replicas: 3,
            advertise: None,
            lease_ttl_ms: 3_000,
        }
    }

    #[test]
    fn without_cluster_there_is_no_cluster_mode() {
        assert!(
            ClusterSettings::from_args(&args(None), false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn cluster_mode_checks_its_values() {
        let settings = ClusterSettings::from_args(&args(Some("nats://a:4222")), true)
            .unwrap()
            .unwrap();
        assert_eq!(settings.store.partitions, 32);
        assert_eq!(settings.store.lease_ttl, Duration::from_secs(3));
        assert!(matches!(
            ClusterSettings::from_args(&args(Some("nats://a:4222")), false),
            Err(ConfigError::Cluster(ClusterConfigError::NoSharedSecret))
        ));
        let mut bad = args(Some("nats://a:4222"));
        bad.partitions = 0;
        assert!(matches!(
            ClusterSettings::from_args(&bad, true),
            Err(ConfigError::OutOfRange { .. })
        ));
        let mut bad = args(Some("nats://a:4222"));
        bad.node_id = Some("a.b".to_owned());
        assert!(matches!(
            ClusterSettings::from_args(&bad, true),
            Err(ConfigError::Cluster(ClusterConfigError::NodeId(_)))
        ));
        let mut bad = args(Some("nats://a:4222"));
        bad.advertise = Some("ftp://x".to_owned());
        assert!(matches!(
            ClusterSettings::from_args(&bad, true),
            Err(ConfigError::Cluster(ClusterConfigError::Advertise { .. }))
        ));
    }

    #[test]
    fn the_advertised_url_defaults_to_the_bound_address_unless_it_is_a_wildcard() {
        let mut with = args(Some("nats://a:4222"));
        let settings = ClusterSettings::from_args(&with, true).unwrap().unwrap();
        assert_eq!(
            settings
                .advertise_url("127.0.0.1:8080".parse().unwrap())
                .unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(matches!(
            settings.advertise_url("0.0.0.0:8080".parse().unwrap()),
            Err(ClusterConfigError::Unadvertisable { .. })
        ));
        with.advertise = Some("http://node-1.matchwell:8080/".to_owned());
        let settings = ClusterSettings::from_args(&with, true).unwrap().unwrap();
        assert_eq!(
            settings
                .advertise_url("0.0.0.0:8080".parse().unwrap())
                .unwrap(),
            "http://node-1.matchwell:8080"
        );
    }

    #[test]
    fn host_names_become_node_ids() {
        assert_eq!(host_name_as_id("matchwell-0.matchwell.svc"), "matchwell-0");
        assert_eq!(host_name_as_id("box 1"), "box-1");
    }
}
