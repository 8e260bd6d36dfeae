//! Power cuts at random points of random operation sequences, on the fault-injecting disk,
//! under fsync `always`: the cut comes by itself after a random number of disk operations, so
//! it may fall in the middle of a journal commit, of a snapshot being written, of a journal
//! rotation or of the removal of old segments. After recovery nothing acknowledged is
//! missing, nothing is half applied, both players of a match are matched by it, and every
//! user searches at most once, with the entry their `active` view names.
//!
//! A failing seed is printed; rerun it alone with `MATCHWELL_TEST_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use matchwell::{
    Engine, EnqueueRequest, EntryId, EntryStatus, FsyncMode, MatchmakerError, PersistenceConfig,
    PoolSpec,
};
use matchwell_snapshots::{CrashMode, FaultyStorage, Storage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEEDS: u64 = 60;
const USERS: usize = 12;

fn seeds() -> Vec<u64> {
    match std::env::var("MATCHWELL_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("MATCHWELL_TEST_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    }
}

async fn start(storage: Arc<dyn Storage>, at_ms: u64) -> Engine {
    let (builder, _) = Engine::builder().manual(at_ms);
    let mut config = PersistenceConfig::new("unused");
    config.storage = Some(storage);
    config.fsync = FsyncMode::Always;
    builder.shards(2).persistence(config).start().await.unwrap()
}

/// What callers were told, and so what must survive.
#[derive(Default)]
struct Acknowledged {
    /// Every entry acknowledged, with the last status a caller saw after a durable barrier.
    entries: BTreeMap<EntryId, (String, EntryStatus)>,
    /// Entries a change may have reached the disk for without being acknowledged: the power
    /// failed before the change was answered.
    uncertain: BTreeSet<EntryId>,
}

async fn run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = FaultyStorage::new(seed);
    let pools = [
        PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap(),
        PoolSpec::new("3+0".parse().unwrap(), "standard", true, None).unwrap(),
    ];
    let mode = if rng.random_bool(0.5) {
        CrashMode::LoseUnsynced
    } else {
        CrashMode::TearUnsynced
    };
    let engine = start(Arc::new(disk.rebooted()), 0).await;
    disk.schedule_crash(rng.random_range(0..150), mode);
    let mut acknowledged = Acknowledged::default();
    let operations = rng.random_range(1..80);
    for step in 0..operations {
        if disk.has_crashed() {
            break;
        }
        match rng.random_range(0..12) {
            0..=5 => {
                let user = format!("u{}", rng.random_range(0..USERS));
                let request = EnqueueRequest {
                    tenant: "acme".into(),
                    user_id: user.as_str().into(),
                    pool: pools[rng.random_range(0..pools.len())].clone(),
                    rating: rng.random_range(1400..1700),
                    idempotency_key: None,
                };
                match engine.enqueue(request).await {
                    Ok(entry) => {
                        acknowledged.entries.insert(entry.id, (user, entry.status));
                    }
                    Err(MatchmakerError::AlreadyQueued(_)) => {}
                    Err(MatchmakerError::Persistence(_)) if disk.has_crashed() => {}
                    Err(error) => panic!("step {step}: enqueue failed: {error}"),
                }
            }
            6 | 7 => {
                let known: Vec<EntryId> = acknowledged.entries.keys().copied().collect();
                if let Some(&id) = known.get(rng.random_range(0..known.len().max(1))) {
                    match engine.cancel("acme", id).await {
                        Ok(entry) => acknowledged.entries.get_mut(&id).unwrap().1 = entry.status,
                        Err(MatchmakerError::NotCancellable(_)) => {}
                        Err(_) => {
                            assert!(disk.has_crashed(), "step {step}: cancel failed");
                            acknowledged.uncertain.insert(id);
                        }
                    }
                }
            }
            8 => {
                // A failed snapshot is no failure of the engine: the journal still holds all.
                let _ = engine.snapshot_now().await;
            }
            _ => {
                engine.tick().await.unwrap();
                if engine.durable().await.is_err() {
                    // Waves may have reached the disk in part: every searching entry may be
                    // matched or expired, or not.
                    acknowledged
                        .uncertain
                        .extend(acknowledged.entries.keys().copied());
                    continue;
                }
                for (id, (_, status)) in &mut acknowledged.entries {
                    *status = engine.entry("acme", *id).unwrap().status;
                }
            }
        }
    }
    let crashed: Arc<dyn Storage> = if disk.has_crashed() {
        Arc::new(disk.rebooted())
    } else {
        Arc::new(disk.crash(mode))
    };
    drop(engine);

    let engine = start(crashed, 1_000).await;
    let mut seen_in_match = BTreeMap::new();
    for (id, (user, status)) in &acknowledged.entries {
        let entry = engine
            .entry("acme", *id)
            .unwrap_or_else(|| panic!("acknowledged entry {id} of {user} is missing"));
        assert_eq!(&entry.user_id, user);
        if !acknowledged.uncertain.contains(id) {
            assert_eq!(entry.status, *status, "entry {id} of {user}");
        }
        if let Some(found) = &entry.found {
            for player in &found.players {
                let other = engine.entry("acme", player.entry_id).unwrap();
                assert_eq!(
                    other.found.as_ref().map(|m| m.match_id),
                    Some(found.match_id),
                    "both players of a match are matched by it"
                );
            }
            assert!(seen_in_match.insert(*id, found.match_id).is_none());
        }
    }
    // Every entry recovered, acknowledged or not: ids are handed out in sequence.
    let last = acknowledged.entries.keys().last().map_or(0, |id| id.get());
    let mut searching: BTreeMap<String, EntryId> = BTreeMap::new();
    for n in 1..=last + 8 {
        let Some(entry) = EntryId::new(n).and_then(|id| engine.entry("acme", id)) else {
            continue;
        };
        if entry.status == EntryStatus::Searching {
            let other = searching.insert(entry.user_id.to_string(), entry.id);
            assert!(other.is_none(), "{} searches twice", entry.user_id);
        }
    }
    for user in 0..USERS {
        let user = format!("u{user}");
        assert_eq!(
            engine.active("acme", &user).searching.map(|entry| entry.id),
            searching.get(&user).copied(),
            "the active view of {user} names their searching entry"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_and_nothing_is_half_applied() {
    for seed in seeds() {
        // Shown with the failure: the last seed printed is the one that failed.
        eprintln!("seed {seed}");
        let outcome = tokio::time::timeout(Duration::from_secs(30), run(seed)).await;
        assert!(outcome.is_ok(), "seed {seed} timed out");
    }
}
