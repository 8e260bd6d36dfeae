//! Which node should own each partition, and which should stand by for it.
//!
//! Rendezvous (highest random weight) hashing with bounded loads: every partition ranks the
//! live nodes by `weight(node, partition)`, and the partitions, in order, each go to the first
//! node of their ranking that owns fewer than `⌈partitions / nodes⌉` so far. Every node
//! computes the same map from the same set of live nodes, without talking to anyone. The bound
//! keeps the spread even (no node owns more than its rounded-up share; plain rendezvous
//! hashing gave one of three nodes 14 of 32 partitions and another 7), at the cost of a few
//! more moves than plain hashing when a node comes or goes: a joining node takes about its
//! share and a partition or two shift between the others to stay under the bound.
//!
//! A partition's standby is the node that would own it if its owner left, so when an owner
//! leaves or dies, each of its partitions goes to the node that was following its journal.
//!
//! Which partition a tenant's state lives in is fixed here too ([`partition_of_tenant`]), for
//! the same reason: every node must route a tenant to the same partition.

/// The name of the placement scheme below. A cluster records it at its first start and a node
/// of a build that places partitions otherwise refuses to join: nodes that disagree on the map
/// would each leave partitions to the other. Change it whenever [`assignment`] places any
/// partition differently (the fixed values in its tests).
pub const PLACEMENT: &str = "rendezvous-bounded-1";

/// The desired owner and standby of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node that should own the partition.
    pub owner: String,
    /// The node that should follow the partition's journal and take over: the owner the
    /// partition would get if its owner left. `None` when only one node is live.
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
    let node_hashes: Vec<u64> = nodes.iter().map(|node| fnv1a(node)).collect();
    let rankings: Vec<Vec<usize>> = (0..partitions)
        .map(|partition| {
            let mut ranked: Vec<usize> = (0..nodes.len()).collect();
            // Highest weight first; equal weights (practically never) by node id, so the
            // order of `live_nodes` never matters.
            ranked.sort_unstable_by_key(|&node| {
                (
                    std::cmp::Reverse(weight(node_hashes[node], partition)),
                    node,
                )
            });
            ranked
        })
        .collect();
    let owners = bounded_owners(&rankings, nodes.len(), None);
    // Each node's partitions as they would be placed without it.
    let without: Vec<Vec<usize>> = match nodes.len() {
        1 => Vec::new(),
        count => (0..count)
            .map(|gone| bounded_owners(&rankings, count, Some(gone)))
            .collect(),
    };
    owners
        .iter()
        .enumerate()
        .map(|(partition, &owner)| Placement {
            owner: nodes[owner].to_owned(),
            standby: without
                .get(owner)
                .map(|placed| nodes[placed[partition]].to_owned()),
        })
        .collect()
}

/// The owner of each partition (a node index) given each partition's ranking of the `nodes`,
/// leaving out node `gone`: partition by partition, the first node of its ranking that owns
/// fewer than its rounded-up share so far. The shares add up to at least the partitions, so
/// every partition finds one.
fn bounded_owners(rankings: &[Vec<usize>], nodes: usize, gone: Option<usize>) -> Vec<usize> {
    let live = nodes - usize::from(gone.is_some());
    let share = rankings.len().div_ceil(live);
    let mut owned = vec![0; nodes];
    rankings
        .iter()
        .map(|ranked| {
            let owner = ranked
                .iter()
                .copied()
                .find(|&node| Some(node) != gone && owned[node] < share)
                .expect("the live nodes' shares cover every partition");
            owned[owner] += 1;
            owner
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

    /// How many partitions each node owns.
    fn loads(placements: &[Placement]) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for placement in placements {
            *counts.entry(placement.owner.as_str()).or_default() += 1;
        }
        counts
    }

    /// How many partitions change owner from `before` to `after`, other than those `except`
    /// owned before or owns after.
    fn others_moved(before: &[Placement], after: &[Placement], except: &str) -> usize {
        before
            .iter()
            .zip(after)
            .filter(|(old, new)| {
                old.owner != new.owner && old.owner != except && new.owner != except
            })
            .count()
    }

    #[test]
    fn the_same_live_nodes_in_any_order_give_the_same_map() {
        let forward = nodes(5);
        let mut backward = forward.clone();
        backward.reverse();
        backward.push("node-3".to_owned());
        assert_eq!(assignment(64, &forward), assignment(64, &backward));
        // Fixed values: the map is part of the protocol between nodes; changing them needs a new
        // `PLACEMENT`.
        assert_eq!(
            owners(&assignment(6, &forward)),
            ["node-5", "node-1", "node-1", "node-4", "node-2", "node-3"]
        );
    }

    #[test]
    fn no_node_owns_more_than_its_rounded_up_share_and_a_standby_is_never_the_owner() {
        for (partitions, count) in [(32, 3), (32, 4), (32, 6), (1024, 4), (7, 3), (3, 5)] {
            let live = nodes(count);
            let placements = assignment(partitions, &live);
            assert_eq!(placements.len(), partitions as usize);
            let share = (partitions as usize).div_ceil(count);
            let counts = loads(&placements);
            assert!(
                counts.values().all(|&owned| owned <= share),
                "{partitions} partitions over {count} nodes: {counts:?}"
            );
            if partitions as usize % count == 0 {
                assert!(counts.values().all(|&owned| owned == share), "{counts:?}");
            }
            for placement in &placements {
                let standby = placement
                    .standby
                    .as_deref()
                    .expect("several nodes are live");
                assert_ne!(standby, placement.owner);
                assert!(live.iter().any(|node| node == standby));
            }
        }
        // The default: 32 partitions over three nodes, 11, 11 and 10.
        let mut default = loads(&assignment(32, &nodes(3)))
            .into_values()
            .collect::<Vec<_>>();
        default.sort_unstable();
        assert_eq!(default, [10, 11, 11]);
    }

    #[test]
    fn a_joining_node_takes_its_share_and_few_others_move() {
        for (partitions, count) in [(32, 3), (256, 4)] {
            let before = assignment(partitions, &nodes(count));
            let after = assignment(partitions, &nodes(count + 1));
            let newcomer = format!("node-{}", count + 1);
            let taken = after.iter().filter(|new| new.owner == newcomer).count();
            let share = (partitions as usize).div_ceil(count + 1);
            assert!(
                (share - 1..=share).contains(&taken),
                "{newcomer} took {taken}"
            );
            let others = others_moved(&before, &after, &newcomer);
            assert!(
                others <= partitions as usize / 10,
                "{others} of {partitions} moved between the other nodes"
            );
        }
    }

    #[test]
    fn a_leaving_node_hands_each_partition_to_its_standby_and_few_others_move() {
        for (partitions, count) in [(32, 3), (32, 4), (256, 5)] {
            let live = nodes(count);
            let before = assignment(partitions, &live);
            for leaving in &live {
                let remaining: Vec<&String> = live.iter().filter(|node| *node != leaving).collect();
                let after = assignment(partitions, &remaining);
                for (old, new) in before.iter().zip(&after) {
                    if &old.owner == leaving {
                        assert_eq!(Some(&new.owner), old.standby.as_ref());
                    }
                }
                let others = others_moved(&before, &after, leaving);
                assert!(
                    others <= partitions as usize / 10,
                    "{leaving} left {count} nodes: {others} of {partitions} moved between the others"
                );
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
