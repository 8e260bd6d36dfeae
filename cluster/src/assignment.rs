//! Which node should own each partition, and which should stand by for it.
//!
//! Rendezvous (highest random weight) hashing: each partition goes to the live node with the
//! highest `weight(node, partition)`, its standby to the second highest. Every node computes
//! the same map from the same set of live nodes, without talking to anyone; the partitions
//! spread evenly; and when a node joins, only the partitions it now wins move (to it), while
//! when a node leaves, only its own partitions move (each to its standby).
//!
//! Which partition a tenant's state lives in is fixed here too ([`partition_of_tenant`]), for
//! the same reason: every node must route a tenant to the same partition.

/// The desired owner and standby of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node that should own the partition.
    pub owner: String,
    /// The node that should follow the partition's journal and take over; `None` when only
    /// one node is live.
    pub standby: Option<String>,
}

/// The placement of partitions `0..partitions` over `live_nodes` (node ids, in any order;
/// duplicates count once), indexed by partition. Empty when no node is live.
pub fn assignment(partitions: u32, live_nodes: &[impl AsRef<str>]) -> Vec<Placement> {
    let mut nodes: Vec<&str> = live_nodes.iter().map(AsRef::as_ref).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return Vec::new();
    }
    let node_hashes: Vec<(u64, &str)> = nodes.iter().map(|node| (fnv1a(node), *node)).collect();
    (0..partitions)
        .map(|partition| {
            let mut ranked: Vec<(u64, &str)> = node_hashes
                .iter()
                .map(|&(hash, node)| (weight(hash, partition), node))
                .collect();
            // Highest weight first; equal weights (practically never) by node id, so the
            // order of `live_nodes` never matters.
            ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            Placement {
                owner: ranked[0].1.to_owned(),
                standby: ranked.get(1).map(|(_, node)| (*node).to_owned()),
            }
        })
        .collect()
}

/// The partition of `tenant` among `partitions` (at least 1): every node routes the tenant's
/// requests there, so it is part of the cluster's protocol like the weights below.
pub fn partition_of_tenant(tenant: &str, partitions: u32) -> u32 {
    let mixed = weight(fnv1a(tenant), 0);
    u32::try_from(mixed % u64::from(partitions.max(1))).expect("below a u32")
}

/// FNV-1a of a node id or a tenant. Written out rather than taken from a hashing crate because every node
/// of a cluster must compute the same weights, whatever version of matchwell or of its
/// dependencies it runs: this function is part of the cluster's protocol.
fn fnv1a(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The weight of a node (by its id's hash) for a partition: both mixed through the SplitMix64
/// finaliser, whose output bits each depend on every input bit, so that nearby partition
/// numbers rank the nodes independently.
fn weight(node_hash: u64, partition: u32) -> u64 {
    let mut z = node_hash ^ u64::from(partition).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const FIXED_TENANT_PARTITIONS: [u32; 4] = [14, 15, 7, 16];

    fn nodes(count: usize) -> Vec<String> {
        (1..=count).map(|n| format!("node-{n}")).collect()
    }

    fn owners(placements: &[Placement]) -> Vec<&str> {
        placements.iter().map(|p| p.owner.as_str()).collect()
    }

    #[test]
    fn the_same_live_nodes_in_any_order_give_the_same_map() {
        let forward = nodes(5);
        let mut backward = forward.clone();
        backward.reverse();
        backward.push("node-3".to_owned());
        assert_eq!(assignment(64, &forward), assignment(64, &backward));
        // Fixed values: the map is part of the protocol between nodes of any version.
        assert_eq!(
            owners(&assignment(6, &forward)),
            ["node-5", "node-1", "node-1", "node-1", "node-2", "node-3"]
        );
    }

    #[test]
    fn partitions_spread_evenly_and_a_standby_is_never_the_owner() {
        let live = nodes(4);
        let placements = assignment(1024, &live);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for placement in &placements {
            *counts.entry(&placement.owner).or_default() += 1;
            assert_ne!(placement.standby.as_deref(), Some(placement.owner.as_str()));
            assert!(placement.standby.is_some());
        }
        assert_eq!(counts.len(), 4);
        for (node, count) in counts {
            assert!((200..=312).contains(&count), "{node} owns {count} of 1024");
        }
    }

    #[test]
    fn a_joining_node_takes_only_partitions_it_now_owns() {
        let before = assignment(256, &nodes(4));
        let after = assignment(256, &nodes(5));
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            if old.owner != new.owner {
                assert_eq!(new.owner, "node-5");
                moved += 1;
            }
        }
        // About a fifth of the partitions, no more.
        assert!((30..=80).contains(&moved), "{moved} of 256 moved");
    }

    #[test]
    fn a_leaving_node_hands_each_partition_to_its_standby_and_nothing_else_moves() {
        let live = nodes(5);
        let before = assignment(256, &live);
        let remaining: Vec<&String> = live.iter().filter(|node| *node != "node-2").collect();
        let after = assignment(256, &remaining);
        for (old, new) in before.iter().zip(&after) {
            if old.owner == "node-2" {
                assert_eq!(Some(&new.owner), old.standby.as_ref());
            } else {
                assert_eq!(new.owner, old.owner);
            }
        }
    }

    #[test]
    fn tenants_spread_over_partitions_the_same_way_on_every_node() {
        // Fixed values: the map is part of the protocol between nodes of any version.
        let fixed: Vec<u32> = ["default", "acme", "globex", "initech"]
            .iter()
            .map(|tenant| partition_of_tenant(tenant, 32))
            .collect();
        assert_eq!(fixed, FIXED_TENANT_PARTITIONS);
        let mut counts = [0_u32; 16];
        for n in 0..16_000 {
            counts[partition_of_tenant(&format!("tenant-{n}"), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&count| (800..=1200).contains(&count)),
            "{counts:?}"
        );
        assert_eq!(partition_of_tenant("anything", 1), 0);
        assert_eq!(partition_of_tenant("anything", 0), 0);
    }

    #[test]
    fn one_node_owns_everything_without_standby_and_no_node_owns_nothing() {
        let placements = assignment(3, &["solo"]);
        assert!(
            placements
                .iter()
                .all(|p| p.owner == "solo" && p.standby.is_none())
        );
        assert!(assignment(3, &[] as &[&str]).is_empty());
    }
}
