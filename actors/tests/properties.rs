//! Property tests: random operation sequences against the real matchmaker on a manual clock.
//!
//! After every forced wave the observable state must satisfy the rules of SPEC §2–3: nobody in
//! two matches, every match within both players' windows when it was made, nothing across
//! pools or tenants, cancelled and expired entries never matched, at most one searching entry
//! per user and tenant, and no two players left searching in one pool acceptable to each other
//! — under quality pacing, none such that one of them has used up their final budget (pacing
//! defers acceptable pairs, but never past that). Both pacings run the same sequences.
//! A failing case is printed (and kept in `proptest-regressions/`) so it can be replayed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use matchwell_actors::clock::ManualClock;
use matchwell_actors::ids::{EntryId, MatchId};
use matchwell_actors::matchmaker::{EnqueueRequest, Matchmaker, MatchmakerConfig};
use matchwell_actors::model::{Entry, EntryStatus};
use matchwell_actors::pacing::FINAL_BUDGET_FACTOR;
use matchwell_actors::pools::{MatchingParams, Pacing, PoolCatalog, PoolSpec};
use proptest::prelude::*;

const TENANTS: [&str; 2] = ["acme", "globex"];
const POOLS: [&str; 2] = ["5+3", "3+2"];

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        tenant: usize,
        user: u8,
        pool: usize,
        rating: u16,
    },
    Cancel {
        tenant: usize,
        user: u8,
    },
    Advance {
        ms: u64,
    },
    Wave,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..TENANTS.len(), 0u8..16, 0..POOLS.len(), prop_oneof![1200u16..1900, 0u16..=4000])
            .prop_map(|(tenant, user, pool, rating)| Op::Enqueue { tenant, user, pool, rating }),
        2 => (0..TENANTS.len(), 0u8..16).prop_map(|(tenant, user)| Op::Cancel { tenant, user }),
        2 => prop_oneof![0u64..2_000, 0u64..60_000, Just(600_000)].prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Wave),
    ]
}

fn spec(pool: usize) -> PoolSpec {
    PoolSpec::new(POOLS[pool].parse().unwrap(), "standard", true, None).unwrap()
}

/// What the test knows about one entry it created.
struct Known {
    tenant: &'static str,
    user: String,
    pool: PoolSpec,
    rating: u16,
    cancelled: bool,
    matched_in: Option<MatchId>,
}

/// The test's pools, every one paced by `pacing`.
fn catalog(pacing: Pacing) -> PoolCatalog {
    let params = MatchingParams {
        pacing,
        ..MatchingParams::default()
    };
    PoolCatalog::from_definitions((0..POOLS.len()).map(|pool| (spec(pool), params)))
        .expect("distinct pools")
}

/// Under quality pacing, the wait past which a player takes whatever is acceptable.
fn final_budget_ms(params: &MatchingParams) -> Option<u64> {
    match params.pacing {
        Pacing::Eager => None,
        Pacing::Quality { target_wait_ms } => Some(
            (target_wait_ms * FINAL_BUDGET_FACTOR)
                .min(params.max_wait_ms - params.wave_interval_ms)
                - params.wave_interval_ms,
        ),
    }
}

async fn run(ops: Vec<Op>, pacing: Pacing) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut config = MatchmakerConfig::new(catalog(pacing));
    config.clock = clock.clone();
    config.shards = 2;
    let catalog = config.catalog.clone();
    let engine = Matchmaker::start(config).unwrap();
    let mut known: HashMap<EntryId, Known> = HashMap::new();
    let mut latest: HashMap<(usize, u8), EntryId> = HashMap::new();
    for op in ops.into_iter().chain([Op::Wave]) {
        match op {
            Op::Enqueue {
                tenant,
                user,
                pool,
                rating,
            } => {
                let request = EnqueueRequest {
                    tenant: TENANTS[tenant].into(),
                    user_id: format!("u{user}").into(),
                    pool: spec(pool),
                    rating,
                    idempotency_key: None,
                };
                if let Ok(entry) = engine.enqueue(request).await {
                    prop_assert!(!known.contains_key(&entry.id), "entry ids are never reused");
                    latest.insert((tenant, user), entry.id);
                    known.insert(
                        entry.id,
                        Known {
                            tenant: TENANTS[tenant],
                            user: format!("u{user}"),
                            pool: spec(pool),
                            rating,
                            cancelled: false,
                            matched_in: None,
                        },
                    );
                }
            }
            Op::Cancel { tenant, user } => {
                if let Some(&id) = latest.get(&(tenant, user)) {
                    if engine.cancel(TENANTS[tenant], id).await.is_ok() {
                        known.get_mut(&id).unwrap().cancelled = true;
                    }
                }
            }
            Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
            Op::Wave => {
                engine.run_waves(true).await.unwrap();
                check(&engine, &catalog, clock.as_ref(), &mut known)?;
            }
        }
    }
    Ok(())
}

fn check(
    engine: &Matchmaker,
    catalog: &PoolCatalog,
    clock: &ManualClock,
    known: &mut HashMap<EntryId, Known>,
) -> Result<(), TestCaseError> {
    use matchwell_actors::clock::Clock;
    let now_ms = clock.now_ms();
    let mut entries: Vec<(EntryId, Entry)> = Vec::new();
    for (&id, info) in known.iter() {
        let entry = engine
            .entry(info.tenant, id)
            .ok_or_else(|| TestCaseError::fail(format!("{id} vanished")))?;
        prop_assert_eq!(&entry.user_id, &info.user);
        prop_assert_eq!(&entry.pool, &info.pool);
        prop_assert_eq!(entry.rating, info.rating);
        for other in TENANTS.iter().filter(|other| **other != info.tenant) {
            prop_assert!(
                engine.entry(other, id).is_none(),
                "{} visible to tenant {}",
                id,
                other
            );
        }
        entries.push((id, entry));
    }
    let mut members: HashMap<MatchId, Vec<EntryId>> = HashMap::new();
    let mut searching_users = HashSet::new();
    for (id, entry) in &entries {
        let info = &known[id];
        let params = catalog.get(catalog.resolve(&entry.pool).unwrap()).params;
        if info.cancelled {
            prop_assert_eq!(entry.status, EntryStatus::Cancelled, "{} was cancelled", id);
        }
        match entry.status {
            EntryStatus::Searching => {
                prop_assert!(
                    !params.is_expired(now_ms - entry.joined_at_ms),
                    "{} outlived max_wait",
                    id
                );
                prop_assert!(
                    searching_users.insert((info.tenant, info.user.clone())),
                    "{} searches twice",
                    info.user
                );
            }
            EntryStatus::Expired => prop_assert_eq!(entry.wait_ms, params.max_wait_ms),
            EntryStatus::Cancelled => prop_assert!(info.cancelled, "{} cancelled by nobody", id),
            EntryStatus::Matched => {
                let found = entry.found.as_ref().unwrap();
                if let Some(earlier) = info.matched_in {
                    prop_assert_eq!(earlier, found.match_id, "{} moved to another match", id);
                }
                members.entry(found.match_id).or_default().push(*id);
                prop_assert_eq!(&found.pool, &entry.pool, "match crosses pools");
                let mine = found
                    .players
                    .iter()
                    .find(|player| player.entry_id == *id)
                    .unwrap();
                let theirs = found
                    .players
                    .iter()
                    .find(|player| player.entry_id != *id)
                    .unwrap();
                let partner = &known[&theirs.entry_id];
                prop_assert_eq!(partner.tenant, info.tenant, "match crosses tenants");
                prop_assert_eq!(mine.rating, info.rating);
                let gap = mine.rating.abs_diff(theirs.rating);
                let partner_entry = &entries
                    .iter()
                    .find(|(other, _)| *other == theirs.entry_id)
                    .unwrap()
                    .1;
                for side in [entry, partner_entry] {
                    let window = params.window(found.created_at_ms - side.joined_at_ms);
                    prop_assert!(
                        gap <= window,
                        "gap {} beyond window {} of {}",
                        gap,
                        window,
                        side.id
                    );
                }
            }
        }
    }
    for (match_id, ids) in &members {
        prop_assert_eq!(ids.len(), 2, "{} has {} known players", match_id, ids.len());
        for id in ids {
            known.get_mut(id).unwrap().matched_in = Some(*match_id);
        }
    }
    // Maximality: nobody left searching in a pool accepts anybody else left there.
    let searching: Vec<&Entry> = entries
        .iter()
        .map(|(_, entry)| entry)
        .filter(|entry| entry.status == EntryStatus::Searching)
        .collect();
    for (i, a) in searching.iter().enumerate() {
        for b in &searching[i + 1..] {
            if known[&a.id].tenant == known[&b.id].tenant && a.pool == b.pool {
                let params = catalog.get(catalog.resolve(&a.pool).unwrap()).params;
                let deferrable = final_budget_ms(&params)
                    .is_some_and(|last_ms| a.wait_ms.max(b.wait_ms) < last_ms);
                let gap = a.rating.abs_diff(b.rating);
                prop_assert!(
                    deferrable || gap > a.window.min(b.window),
                    "{} and {} accept each other but were left searching",
                    a.id,
                    b.id
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn waves_keep_every_matching_rule(ops in prop::collection::vec(op(), 1..160)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops, Pacing::Eager))?;
    }

    #[test]
    fn quality_waves_keep_every_matching_rule(ops in prop::collection::vec(op(), 1..160)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops, Pacing::Quality { target_wait_ms: 3_000 }))?;
    }
}
