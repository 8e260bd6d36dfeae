//! Recovery equivalence: random operation sequences on a manual clock (enqueues, re-queues,
//! cancels, waves, game attempts that succeed, fail and fail for good, challenges created,
//! accepted, declined, cancelled and expired, snapshots at random points), then a stop and a
//! recovery. After a graceful stop every entry, match, challenge, user view and queue reads
//! exactly as before it. From a crash image of the disk whose journal is cut at a random record
//! boundary, everything reads as it did at that record: at a boundary between two operations,
//! as after the first; inside an operation, each item as before or as after it, never in a
//! state that did not exist.
//!
//! A failing seed is printed; rerun it alone with `MATCHWELL_TEST_SEED=<seed>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use futures::future::{BoxFuture, join_all};
use matchwell::{
    ActiveState, Challenge, ChallengeId, ChallengeRequest, Clock, ColorChoice, Engine,
    EnqueueRequest, Entry, EntryId, EntryStatus, FsyncMode, GameCreationError, GameCreator,
    GameRequest, ManualClock, PersistenceConfig, PoolSpec, QueueSummary,
};
use matchwell_actors::persist::{Change, SnapshotBody};
use matchwell_snapshots::{FaultyStorage, SnapshotOptions, SnapshotStore, Storage, read_segments};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEEDS: u64 = 48;
const USERS: usize = 8;
const TENANT: &str = "acme";
const START_MS: u64 = 1_700_000_000_000;
/// Crash images recovered per seed.
const CRASH_IMAGES: usize = 4;

fn seeds() -> Vec<u64> {
    match std::env::var("MATCHWELL_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("MATCHWELL_TEST_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    }
}

fn user(n: usize) -> String {
    format!("u{n}")
}

/// SplitMix64: the outcome of a game attempt as a function of the seed, the id and the attempt,
/// so that outcomes do not depend on the order in which concurrent attempts are made.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A live-game service that creates some games, fails some attempts and refuses some games for
/// good, the same way on every run of a seed.
struct ScriptedService {
    seed: u64,
    attempts: parking_lot::Mutex<HashMap<String, u64>>,
}

impl GameCreator for ScriptedService {
    fn create_game(
        &self,
        request: GameRequest,
    ) -> BoxFuture<'static, Result<CompactString, GameCreationError>> {
        let attempt = {
            let mut attempts = self.attempts.lock();
            let attempt = attempts.entry(request.match_id.clone()).or_default();
            *attempt += 1;
            *attempt
        };
        let id_hash = request
            .match_id
            .bytes()
            .fold(self.seed, |hash, byte| mix(hash ^ u64::from(byte)));
        let outcome = match mix(id_hash ^ attempt) % 100 {
            0..55 => Ok(CompactString::from(format!("g_{}", request.match_id))),
            55..85 => Err(GameCreationError::transient("503")),
            _ => Err(GameCreationError::Permanent("400".into())),
        };
        Box::pin(std::future::ready(outcome))
    }
}

async fn start(storage: Arc<dyn Storage>, at_ms: u64, seed: u64) -> (Engine, Arc<ManualClock>) {
    let (builder, clock) = Engine::builder().manual(at_ms);
    let mut config = PersistenceConfig::new("unused");
    config.storage = Some(storage);
    config.fsync = FsyncMode::Always;
    let engine = builder
        .seed(seed)
        .shards(2)
        .game_creator(Arc::new(ScriptedService {
            seed,
            attempts: parking_lot::Mutex::default(),
        }))
        .persistence(config)
        .start()
        .await
        .unwrap();
    (engine, clock)
}

/// What the ids handed out so far name.
#[derive(Default, Clone)]
struct Known {
    entries: Vec<EntryId>,
    /// Each challenge with its challenger and opponent.
    challenges: Vec<(ChallengeId, String, String)>,
}

/// Everything a client can read.
#[derive(Debug, Clone, PartialEq)]
struct World {
    entries: BTreeMap<EntryId, Option<Entry>>,
    challenges: BTreeMap<ChallengeId, Option<Challenge>>,
    active: BTreeMap<String, ActiveState>,
    queues: Vec<QueueSummary>,
}

impl World {
    async fn read(engine: &Engine, known: &Known) -> Self {
        let queues = engine
            .summary(TENANT)
            .await
            .unwrap()
            .into_iter()
            // The last minute's matches and the arrival estimate are figures of the running
            // process, not state, and so is a queue that emptied since its last wave.
            .filter(|queue| queue.searching > 0)
            .map(|queue| QueueSummary {
                matches_last_minute: 0,
                mean_rating_gap: None,
                matched_wait_p95_ms: None,
                arrivals_per_s: None,
                ..queue
            })
            .collect();
        Self {
            entries: known
                .entries
                .iter()
                .map(|&id| (id, engine.entry(TENANT, id)))
                .collect(),
            challenges: known
                .challenges
                .iter()
                .map(|(id, challenger, _)| (*id, engine.challenge(TENANT, challenger, *id)))
                .collect(),
            active: (0..USERS)
                .map(|n| (user(n), engine.active(TENANT, &user(n))))
                .collect(),
            queues,
        }
    }

    /// Without what moves with the clock alone (waits, windows), for comparing a recovery at
    /// the time of the last record with a reading taken later without any record between.
    fn unclocked(&self) -> Self {
        let entry = |entry: &Entry| Entry {
            wait_ms: 0,
            window: 0,
            ..entry.clone()
        };
        Self {
            entries: self
                .entries
                .iter()
                .map(|(id, found)| (*id, found.as_ref().map(entry)))
                .collect(),
            challenges: self.challenges.clone(),
            active: self
                .active
                .iter()
                .map(|(user, active)| {
                    let mut active = active.clone();
                    active.searching = active.searching.as_ref().map(entry);
                    (user.clone(), active)
                })
                .collect(),
            queues: self
                .queues
                .iter()
                .map(|queue| QueueSummary {
                    oldest_wait_ms: 0,
                    wait_p50_ms: 0,
                    wait_p95_ms: 0,
                    ..queue.clone()
                })
                .collect(),
        }
    }
}

/// What differs between two readings, item by item, for failure messages.
fn differences(found: &World, expected: &World) -> String {
    fn items<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
        kind: &str,
        found: &BTreeMap<K, V>,
        expected: &BTreeMap<K, V>,
        out: &mut String,
    ) {
        for (key, value) in found {
            let other = expected.get(key);
            if other != Some(value) {
                out.push_str(&format!(
                    "\n{kind} {key:?}:\n  found    {value:?}\n  expected {other:?}"
                ));
            }
        }
        for (key, value) in expected {
            if !found.contains_key(key) {
                out.push_str(&format!("\n{kind} {key:?}: missing, expected {value:?}"));
            }
        }
    }
    let mut out = String::new();
    items("entry", &found.entries, &expected.entries, &mut out);
    items(
        "challenge",
        &found.challenges,
        &expected.challenges,
        &mut out,
    );
    items("active", &found.active, &expected.active, &mut out);
    if found.queues != expected.queues {
        out.push_str(&format!(
            "\nqueues:\n  found    {:?}\n  expected {:?}",
            found.queues, expected.queues
        ));
    }
    out
}

/// Fails with the differences unless `found` reads as `expected`.
fn assert_reads_as(found: &World, expected: &World, context: &str) {
    assert!(
        found == expected,
        "{context}:{}",
        differences(found, expected)
    );
}

/// The disk and what could be read after one operation.
struct Step {
    what: &'static str,
    at_ms: u64,
    files: BTreeMap<String, Vec<u8>>,
    known: Known,
    world: World,
}

fn files_of(storage: &dyn Storage) -> BTreeMap<String, Vec<u8>> {
    storage
        .list()
        .unwrap()
        .into_iter()
        .map(|name| {
            let bytes = storage.read(&name).unwrap();
            (name, bytes)
        })
        .collect()
}

/// A fresh disk holding `files`.
fn disk_with(files: &BTreeMap<String, Vec<u8>>, seed: u64) -> FaultyStorage {
    let disk = FaultyStorage::new(seed);
    for (name, bytes) in files {
        let mut file = disk.create(name).unwrap();
        file.write_all(bytes).unwrap();
        file.sync().unwrap();
    }
    disk.sync_dir().unwrap();
    disk
}

/// When the engine whose disk this is last wrote anything: recovering at that time counts no
/// downtime, so the recovered waits are those of that moment.
fn last_write_ms(disk: &FaultyStorage) -> u64 {
    let store = SnapshotStore::open(Arc::new(disk.rebooted()), SnapshotOptions::default()).unwrap();
    let loaded = store.load_latest::<SnapshotBody>().unwrap();
    let replay_from = loaded
        .as_ref()
        .map_or(0, |snapshot| snapshot.header.replay_from);
    let snapshot_ms = loaded.map_or(0, |snapshot| snapshot.body.taken_at_ms);
    read_segments::<Change>(disk, replay_from)
        .unwrap()
        .records
        .iter()
        .map(|record| record.record.at_ms)
        .fold(snapshot_ms, u64::max)
}

fn newest_segment(files: &BTreeMap<String, Vec<u8>>) -> Option<&String> {
    files
        .keys()
        .filter(|name| name.starts_with("journal-"))
        .max()
}

/// Record boundaries of the journal during step `k`: the newest segment's length before the
/// step, where each record the step appended starts, and its length after the step. A step
/// that started a segment (a snapshot) wrote no record: its disk is taken whole.
fn boundaries(steps: &[Step], k: usize, seed: u64) -> Vec<(String, u64)> {
    let files = &steps[k].files;
    let Some(segment) = newest_segment(files) else {
        return Vec::new();
    };
    let length = files[segment].len() as u64;
    let Some(before) = steps[k - 1]
        .files
        .get(segment)
        .map(|bytes| bytes.len() as u64)
    else {
        return vec![(segment.clone(), length)];
    };
    let number: u64 = segment
        .trim_start_matches("journal-")
        .trim_end_matches(".mwj")
        .parse()
        .unwrap();
    let mut cuts: Vec<u64> = read_segments::<Change>(&disk_with(files, seed), number)
        .unwrap()
        .records
        .iter()
        .map(|record| record.offset)
        .filter(|&offset| offset >= before)
        .chain([before, length])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.into_iter().map(|cut| (segment.clone(), cut)).collect()
}

/// Runs one random operation; returns what it was.
async fn operate(
    engine: &Engine,
    clock: &ManualClock,
    rng: &mut ChaCha8Rng,
    known: &mut Known,
) -> &'static str {
    let pools = [
        PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap(),
        PoolSpec::new("3+0".parse().unwrap(), "standard", true, None).unwrap(),
    ];
    match rng.random_range(0..100) {
        0..30 => {
            let request = EnqueueRequest {
                tenant: TENANT.into(),
                user_id: user(rng.random_range(0..USERS)).into(),
                pool: pools[rng.random_range(0..pools.len())].clone(),
                rating: rng.random_range(1_400..1_600),
                idempotency_key: rng
                    .random_bool(0.3)
                    .then(|| format!("k{}", rng.random_range(0..3)).into()),
            };
            if let Ok(entry) = engine.enqueue(request).await {
                if !known.entries.contains(&entry.id) {
                    known.entries.push(entry.id);
                }
            }
            "enqueue"
        }
        30..38 => {
            if !known.entries.is_empty() {
                let id = known.entries[rng.random_range(0..known.entries.len())];
                let _ = engine.cancel(TENANT, id).await;
            }
            "cancel"
        }
        38..50 => {
            clock.advance(Duration::from_millis(rng.random_range(0..2_500)));
            "advance the clock"
        }
        50..60 => {
            engine.run_waves(false).await.unwrap();
            "waves and expiry"
        }
        60..68 => {
            join_all(engine.due_game_attempts()).await;
            "game attempts"
        }
        68..72 => {
            engine.expire_challenges();
            "challenge expiry"
        }
        72..80 => {
            let challenger = user(rng.random_range(0..USERS));
            let opponent = user(rng.random_range(0..USERS));
            let request = ChallengeRequest {
                tenant: TENANT.into(),
                challenger_id: challenger.clone().into(),
                opponent_id: opponent.clone().into(),
                time_control: "5+3".parse().unwrap(),
                variant: "standard".into(),
                rated: rng.random_bool(0.5),
                color: ColorChoice::Random,
                expires_in: Some(Duration::from_secs(rng.random_range(2..30))),
            };
            if let Ok(challenge) = engine.create_challenge(request).await {
                known.challenges.push((challenge.id, challenger, opponent));
            }
            "challenge"
        }
        80..92 => {
            if known.challenges.is_empty() {
                return "no challenge to answer";
            }
            let (id, challenger, opponent) =
                known.challenges[rng.random_range(0..known.challenges.len())].clone();
            match rng.random_range(0..3) {
                0 => {
                    let _ = engine.accept_challenge(TENANT, &opponent, id).await;
                    "accept"
                }
                1 => {
                    let _ = engine.decline_challenge(TENANT, &opponent, id).await;
                    "decline"
                }
                _ => {
                    let _ = engine.cancel_challenge(TENANT, &challenger, id).await;
                    "cancel a challenge"
                }
            }
        }
        _ => {
            engine.snapshot_now().await.unwrap();
            "snapshot"
        }
    }
}

/// At most one searching entry per user.
fn one_search_per_user(world: &World) -> Result<(), String> {
    let mut searching: HashMap<&str, EntryId> = HashMap::new();
    for entry in world.entries.values().flatten() {
        if entry.status == EntryStatus::Searching {
            if let Some(other) = searching.insert(&entry.user_id, entry.id) {
                return Err(format!(
                    "{} searches twice: {other} and {}",
                    entry.user_id, entry.id
                ));
            }
        }
    }
    Ok(())
}

/// Recovers the crash image of step `k` cut at `cut` and checks it against the steps.
async fn check_crash_image(steps: &[Step], k: usize, (segment, cut): (String, u64), seed: u64) {
    let mut files = steps[k].files.clone();
    files.get_mut(&segment).unwrap().truncate(cut as usize);
    let disk = disk_with(&files, seed);
    let at_ms = last_write_ms(&disk);
    let (engine, _) = start(Arc::new(disk.rebooted()), at_ms, seed).await;
    let (before, after) = (&steps[k - 1], &steps[k]);
    let recovered = World::read(&engine, &after.known).await.unclocked();
    let context = format!(
        "seed {seed}: crash image inside step {k} ({}), {segment} cut at {cut}",
        after.what
    );
    let full = after.files[&segment].len() as u64;
    let before_len = before
        .files
        .get(&segment)
        .map_or(0, |bytes| bytes.len() as u64);
    if cut == full {
        assert_reads_as(
            &recovered,
            &after.world.unclocked(),
            &format!("{context}: as after the step"),
        );
    } else if cut == before_len {
        let mut expected = before.world.unclocked();
        // Ids the step handed out name nothing yet.
        for id in &after.known.entries {
            expected.entries.entry(*id).or_insert(None);
        }
        for (id, _, _) in &after.known.challenges {
            expected.challenges.entry(*id).or_insert(None);
        }
        assert_reads_as(
            &recovered,
            &expected,
            &format!("{context}: as before the step"),
        );
    } else {
        let (was, is) = (before.world.unclocked(), after.world.unclocked());
        for (id, found) in &recovered.entries {
            let was = was.entries.get(id).cloned().flatten();
            let is = is.entries.get(id).cloned().flatten();
            assert!(
                *found == was || *found == is,
                "{context}: entry {id} reads {found:?}, neither {was:?} nor {is:?}"
            );
        }
        for (id, found) in &recovered.challenges {
            let was = was.challenges.get(id).cloned().flatten();
            let is = is.challenges.get(id).cloned().flatten();
            assert!(
                *found == was || *found == is,
                "{context}: challenge {id} reads {found:?}, neither {was:?} nor {is:?}"
            );
        }
    }
    if let Err(broken) = one_search_per_user(&recovered) {
        panic!("{context}: {broken}");
    }
    engine.shutdown().await;
}

async fn run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = FaultyStorage::new(seed);
    let (engine, clock) = start(Arc::new(disk.rebooted()), START_MS, seed).await;
    let mut known = Known::default();
    let mut steps = vec![Step {
        what: "start",
        at_ms: clock.now_ms(),
        files: files_of(&disk.rebooted()),
        known: known.clone(),
        world: World::read(&engine, &known).await,
    }];
    for _ in 0..rng.random_range(20..90) {
        let what = operate(&engine, &clock, &mut rng, &mut known).await;
        engine.durable().await.unwrap();
        let world = World::read(&engine, &known).await;
        if let Err(broken) = one_search_per_user(&world) {
            panic!("seed {seed}: after {what}: {broken}");
        }
        steps.push(Step {
            what,
            at_ms: clock.now_ms(),
            files: files_of(&disk.rebooted()),
            known: known.clone(),
            world,
        });
    }

    for _ in 0..CRASH_IMAGES {
        let k = rng.random_range(1..steps.len());
        let cuts = boundaries(&steps, k, seed);
        if cuts.is_empty() {
            continue;
        }
        let cut = cuts[rng.random_range(0..cuts.len())].clone();
        check_crash_image(&steps, k, cut, seed).await;
    }

    let last = steps.last().unwrap();
    let before = World::read(&engine, &last.known).await;
    assert_reads_as(&before, &last.world, &format!("seed {seed}: reading twice"));
    engine.shutdown().await;
    let (engine, _) = start(Arc::new(disk.rebooted()), last.at_ms, seed).await;
    let after = World::read(&engine, &last.known).await;
    assert_reads_as(
        &after,
        &before,
        &format!("seed {seed}: after a graceful stop"),
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_reads_exactly_as_the_engine_did_before_the_stop() {
    for seed in seeds() {
        let outcome = tokio::spawn(run(seed)).await;
        if let Err(panic) = outcome {
            eprintln!("failing seed: {seed} (rerun with MATCHWELL_TEST_SEED={seed})");
            std::panic::resume_unwind(panic.into_panic());
        }
    }
}
