//! [`FaultyStorage`]: an in-memory disk with a page cache, power cuts and injected errors.
//!
//! # The model
//!
//! * **File data.** Every file is an inode with the bytes the running system
//!   sees and the part of them that is durable. [`StorageFile::sync`] makes all
//!   of a file's bytes durable. Writes only ever append, so the durable bytes
//!   are a prefix of the visible ones, except after `create` truncated an
//!   existing file: then the old synced content stays the durable one until
//!   the next sync. [`Storage::truncate`] is durable at once, as with
//!   [`FileStorage`](super::FileStorage), which syncs after cutting.
//! * **Directory entries.** Creations, renames and removals are applied to the
//!   visible directory at once and logged in order; [`Storage::sync_dir`] makes
//!   the log durable and empties it.
//! * **A crash** ([`FaultyStorage::crash`]) replaces the visible state by what
//!   was durable, except that with [`CrashMode::TearUnsynced`] each file keeps a
//!   random prefix of its unsynced appended bytes (a torn write) and a random
//!   prefix of the directory log survives, in order, as a journaling file
//!   system would replay it. A truncation by `create` that was not synced is
//!   always undone. Files no directory entry names any more are freed.
//! * **Reboot.** `crash` returns the storage of the rebooted machine. Every
//!   handle from before the crash — the old [`FaultyStorage`] and each
//!   [`StorageFile`] it opened — fails from then on, so a thread still running
//!   from the "previous boot" cannot change the disk that recovery reads.
//!   [`FaultyStorage::schedule_crash`] makes the crash happen by itself just
//!   before a chosen later operation, which then fails like any other
//!   operation of the dead machine; [`FaultyStorage::rebooted`] gives the
//!   handle for the new boot.
//!
//! Randomness comes from a generator seeded in [`FaultyStorage::new`]; a crash
//! is therefore reproducible from the seed and the sequence of operations.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::{Storage, StorageError, StorageFile, StorageOp, check_name};

/// What a simulated power cut does to data that was not durable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// All unsynced file bytes and directory changes are lost.
    LoseUnsynced,
    /// A random prefix of each file's unsynced bytes survives (a torn write),
    /// and so does a random, in-order prefix of the unsynced directory changes.
    TearUnsynced,
}

/// An in-memory [`Storage`] for tests that loses unsynced data on
/// [`crash`](Self::crash) and fails operations on request. See the module
/// documentation for the exact model.
///
/// Cloning gives another handle to the same disk.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    /// Shared by every handle and open file, because a crash must reach all of them.
    disk: Arc<Mutex<Disk>>,
    /// The boot this handle belongs to; it stops working once the disk's boot moves on.
    boot: u64,
}

impl FaultyStorage {
    /// An empty disk whose crashes draw their randomness from `seed`.
    pub fn new(seed: u64) -> Self {
        let disk = Disk {
            boot: 0,
            next_inode: 0,
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            unsynced_dir_ops: Vec::new(),
            failing_syncs: 0,
            failing_writes: 0,
            scheduled_crash: None,
            rng: SplitMix64(seed),
        };
        Self {
            disk: Arc::new(Mutex::new(disk)),
            boot: 0,
        }
    }

    /// Makes the next `count` file syncs ([`StorageFile::sync`]) fail.
    pub fn fail_next_syncs(&self, count: u32) {
        self.disk.lock().failing_syncs = count;
    }

    /// Makes the next `count` file writes ([`StorageFile::write_all`]) fail
    /// without writing anything.
    pub fn fail_next_writes(&self, count: u32) {
        self.disk.lock().failing_writes = count;
    }

    /// Simulates a power cut and returns the storage of the rebooted machine.
    ///
    /// Handles from before the crash, including this one, fail from now on.
    /// Pending injected faults and scheduled crashes are cleared.
    pub fn crash(&self, mode: CrashMode) -> FaultyStorage {
        let mut disk = self.disk.lock();
        disk.reboot(mode);
        self.in_boot(disk.boot)
    }

    /// Makes the power fail by itself once `operations` more operations have
    /// run (counting every call on the storage or its files except
    /// [`StorageFile::len`]), just before the next one; `0` means before the
    /// next one. That operation, and every later one from a handle of the
    /// current boot, fails.
    pub fn schedule_crash(&self, operations: u64, mode: CrashMode) {
        self.disk.lock().scheduled_crash = Some(ScheduledCrash {
            remaining: operations,
            mode,
        });
    }

    /// A handle for the machine as it is booted now: after a crash, the
    /// rebooted one.
    pub fn rebooted(&self) -> FaultyStorage {
        let boot = self.disk.lock().boot;
        self.in_boot(boot)
    }

    /// Whether the machine crashed since this handle was made.
    pub fn has_crashed(&self) -> bool {
        self.disk.lock().boot != self.boot
    }

    fn in_boot(&self, boot: u64) -> FaultyStorage {
        FaultyStorage {
            disk: Arc::clone(&self.disk),
            boot,
        }
    }

    /// Locks the disk for an operation on `name`, failing if the machine rebooted
    /// since this handle was made (or reboots now, as scheduled).
    fn disk(&self, op: StorageOp, name: &str) -> Result<MutexGuard<'_, Disk>, StorageError> {
        let mut disk = self.disk.lock();
        disk.count_operation();
        if disk.boot == self.boot {
            Ok(disk)
        } else {
            Err(simulated(
                op,
                name,
                "the machine crashed since this handle was opened",
            ))
        }
    }

    fn open_file(&self, name: &str, inode: u64) -> Box<dyn StorageFile> {
        Box::new(FaultyFile {
            storage: self.clone(),
            name: name.to_owned(),
            inode,
        })
    }
}

fn simulated(op: StorageOp, name: &str, what: &str) -> StorageError {
    StorageError::io(op, name, io::Error::other(what.to_owned()))
}

fn not_found(op: StorageOp, name: &str) -> StorageError {
    StorageError::io(op, name, io::ErrorKind::NotFound.into())
}

impl Storage for FaultyStorage {
    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        Ok(self
            .disk(StorageOp::List, ".")?
            .names
            .keys()
            .cloned()
            .collect())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        check_name(name)?;
        let disk = self.disk(StorageOp::Read, name)?;
        let inode = disk.lookup(StorageOp::Read, name)?;
        Ok(disk.inodes[&inode].content.clone())
    }

    fn create(&self, name: &str) -> Result<Box<dyn StorageFile>, StorageError> {
        check_name(name)?;
        let mut disk = self.disk(StorageOp::Create, name)?;
        let inode = match disk.names.get(name) {
            Some(&existing) => {
                disk.inode_mut(existing).truncate_unsynced();
                existing
            }
            None => disk.link_new(name),
        };
        drop(disk);
        Ok(self.open_file(name, inode))
    }

    fn open_append(&self, name: &str) -> Result<Box<dyn StorageFile>, StorageError> {
        check_name(name)?;
        let inode = self
            .disk(StorageOp::OpenAppend, name)?
            .lookup(StorageOp::OpenAppend, name)?;
        Ok(self.open_file(name, inode))
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), StorageError> {
        check_name(name)?;
        let len = usize::try_from(len)
            .map_err(|_| simulated(StorageOp::Truncate, name, "length exceeds memory"))?;
        let mut disk = self.disk(StorageOp::Truncate, name)?;
        let inode = disk.lookup(StorageOp::Truncate, name)?;
        disk.inode_mut(inode).truncate_durably(len);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        check_name(from)?;
        check_name(to)?;
        let mut disk = self.disk(StorageOp::Rename, from)?;
        let inode = disk.lookup(StorageOp::Rename, from)?;
        disk.names.remove(from);
        disk.names.insert(to.to_owned(), inode);
        disk.unsynced_dir_ops.push(DirOp::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        check_name(name)?;
        let mut disk = self.disk(StorageOp::Remove, name)?;
        disk.lookup(StorageOp::Remove, name)?;
        disk.names.remove(name);
        disk.unsynced_dir_ops.push(DirOp::Unlink {
            name: name.to_owned(),
        });
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        let mut disk = self.disk(StorageOp::SyncDir, ".")?;
        disk.durable_names = disk.names.clone();
        disk.unsynced_dir_ops.clear();
        Ok(())
    }
}

/// A file opened on a [`FaultyStorage`].
struct FaultyFile {
    storage: FaultyStorage,
    /// For error messages only: the inode is what the file is bound to, as with real files.
    name: String,
    inode: u64,
}

impl StorageFile for FaultyFile {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let mut disk = self.storage.disk(StorageOp::Write, &self.name)?;
        if disk.failing_writes > 0 {
            disk.failing_writes -= 1;
            return Err(simulated(
                StorageOp::Write,
                &self.name,
                "injected write failure",
            ));
        }
        disk.inode_mut(self.inode).content.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let mut disk = self.storage.disk(StorageOp::Sync, &self.name)?;
        if disk.failing_syncs > 0 {
            disk.failing_syncs -= 1;
            return Err(simulated(
                StorageOp::Sync,
                &self.name,
                "injected sync failure",
            ));
        }
        disk.inode_mut(self.inode).sync();
        Ok(())
    }

    fn len(&self) -> u64 {
        let disk = self.storage.disk.lock();
        disk.inodes
            .get(&self.inode)
            .map_or(0, |inode| inode.content.len() as u64)
    }
}

/// The whole simulated machine: file data, both views of the directory, fault switches.
#[derive(Debug)]
struct Disk {
    /// Incremented by every crash; handles remember the boot they were made in.
    boot: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The directory as the running system sees it.
    names: BTreeMap<String, u64>,
    /// The directory as of the last `sync_dir`.
    durable_names: BTreeMap<String, u64>,
    /// Directory changes since the last `sync_dir`, oldest first.
    unsynced_dir_ops: Vec<DirOp>,
    failing_syncs: u32,
    failing_writes: u32,
    scheduled_crash: Option<ScheduledCrash>,
    rng: SplitMix64,
}

#[derive(Debug, Clone, Copy)]
struct ScheduledCrash {
    /// Operations still allowed before the crash.
    remaining: u64,
    mode: CrashMode,
}

impl Disk {
    fn count_operation(&mut self) {
        let Some(scheduled) = &mut self.scheduled_crash else {
            return;
        };
        match scheduled.remaining.checked_sub(1) {
            Some(remaining) => scheduled.remaining = remaining,
            None => {
                let mode = scheduled.mode;
                self.reboot(mode);
            }
        }
    }

    fn lookup(&self, op: StorageOp, name: &str) -> Result<u64, StorageError> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| not_found(op, name))
    }

    fn inode_mut(&mut self, inode: u64) -> &mut Inode {
        self.inodes
            .get_mut(&inode)
            .expect("inodes are freed only at a crash, which invalidates every handle")
    }

    fn link_new(&mut self, name: &str) -> u64 {
        let inode = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(inode, Inode::default());
        self.names.insert(name.to_owned(), inode);
        self.unsynced_dir_ops.push(DirOp::Link {
            name: name.to_owned(),
            inode,
        });
        inode
    }

    fn reboot(&mut self, mode: CrashMode) {
        self.boot += 1;
        let surviving_ops = match mode {
            CrashMode::LoseUnsynced => 0,
            CrashMode::TearUnsynced => self.rng.up_to(self.unsynced_dir_ops.len()),
        };
        for op in self.unsynced_dir_ops.drain(..surviving_ops) {
            op.apply(&mut self.durable_names);
        }
        self.unsynced_dir_ops.clear();
        self.names = self.durable_names.clone();

        let linked: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|inode, _| linked.contains(inode));
        for inode in self.inodes.values_mut() {
            inode.crash(mode, &mut self.rng);
        }
        self.failing_syncs = 0;
        self.failing_writes = 0;
        self.scheduled_crash = None;
    }
}

/// One file's data.
#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    content: Vec<u8>,
    /// How much of `content` is durable, unless `durable_before_truncation` is set.
    durable_len: usize,
    /// The durable content while an unsynced `create` has truncated the file;
    /// kept separately because it is then no prefix of `content`.
    durable_before_truncation: Option<Vec<u8>>,
}

impl Inode {
    fn truncate_unsynced(&mut self) {
        if self.durable_before_truncation.is_none() {
            self.content.truncate(self.durable_len);
            self.durable_before_truncation = Some(std::mem::take(&mut self.content));
        }
        self.content.clear();
        self.durable_len = 0;
    }

    fn truncate_durably(&mut self, len: usize) {
        self.content.resize(len, 0);
        self.sync();
    }

    fn sync(&mut self) {
        self.durable_len = self.content.len();
        self.durable_before_truncation = None;
    }

    fn crash(&mut self, mode: CrashMode, rng: &mut SplitMix64) {
        match self.durable_before_truncation.take() {
            Some(durable) => self.content = durable,
            None => {
                let torn_bytes = match mode {
                    CrashMode::LoseUnsynced => 0,
                    CrashMode::TearUnsynced => rng.up_to(self.content.len() - self.durable_len),
                };
                self.content.truncate(self.durable_len + torn_bytes);
            }
        }
        self.sync();
    }
}

/// A directory change not yet made durable by `sync_dir`.
#[derive(Debug)]
enum DirOp {
    Link { name: String, inode: u64 },
    Unlink { name: String },
    Rename { from: String, to: String },
}

impl DirOp {
    fn apply(self, names: &mut BTreeMap<String, u64>) {
        match self {
            Self::Link { name, inode } => {
                names.insert(name, inode);
            }
            Self::Unlink { name } => {
                names.remove(&name);
            }
            Self::Rename { from, to } => {
                if let Some(inode) = names.remove(&from) {
                    names.insert(to, inode);
                }
            }
        }
    }
}

/// A tiny seeded generator (SplitMix64): enough to pick crash outcomes
/// reproducibly without a dependency on `rand` outside tests.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    fn up_to(&mut self, max: usize) -> usize {
        // The modulo bias is irrelevant for picking crash points.
        (self.next_u64() % (max as u64 + 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance;

    fn write_file(storage: &FaultyStorage, name: &str, synced: &[u8], unsynced: &[u8]) {
        let mut file = storage.create(name).unwrap();
        file.write_all(synced).unwrap();
        file.sync().unwrap();
        file.write_all(unsynced).unwrap();
    }

    #[test]
    fn behaves_like_a_storage() {
        conformance::check(&FaultyStorage::new(1));
    }

    #[test]
    fn crash_keeps_synced_data_and_loses_the_rest() {
        let storage = FaultyStorage::new(7);
        write_file(&storage, "a", b"durable", b" lost");
        storage.sync_dir().unwrap();
        storage.create("unsynced-entry").unwrap().sync().unwrap();

        let rebooted = storage.crash(CrashMode::LoseUnsynced);
        assert_eq!(rebooted.read("a").unwrap(), b"durable");
        assert_eq!(rebooted.list().unwrap(), ["a"]);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_unsynced_bytes() {
        for seed in 0..50 {
            let storage = FaultyStorage::new(seed);
            write_file(&storage, "a", b"durable", b"0123456789");
            storage.sync_dir().unwrap();
            let content = storage.crash(CrashMode::TearUnsynced).read("a").unwrap();
            let full = b"durable0123456789";
            assert!(
                content.len() >= 7 && full.starts_with(&content),
                "seed {seed}: {content:?}"
            );
        }
    }

    #[test]
    fn torn_crash_outcome_depends_only_on_the_seed() {
        let run = |seed| {
            let storage = FaultyStorage::new(seed);
            write_file(&storage, "a", b"", &[1; 1000]);
            storage
                .crash(CrashMode::TearUnsynced)
                .read("a")
                .map(|c| c.len())
                .ok()
        };
        for seed in 0..20 {
            assert_eq!(run(seed), run(seed), "seed {seed}");
        }
    }

    #[test]
    fn unsynced_directory_changes_survive_only_as_an_ordered_prefix() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..100 {
            let storage = FaultyStorage::new(seed);
            write_file(&storage, "tmp", b"data", b"");
            storage.rename("tmp", "final").unwrap();
            storage.create("later").unwrap().sync().unwrap();
            let mut names = storage.crash(CrashMode::TearUnsynced).list().unwrap();
            names.sort();
            let prefixes: [&[&str]; 4] = [&[], &["tmp"], &["final"], &["final", "later"]];
            assert!(
                prefixes.iter().any(|prefix| *prefix == names.as_slice()),
                "seed {seed}: {names:?}"
            );
            outcomes.insert(names);
        }
        assert_eq!(outcomes.len(), 4, "every prefix occurs: {outcomes:?}");
    }

    #[test]
    fn unsynced_truncation_by_create_is_undone() {
        let storage = FaultyStorage::new(3);
        write_file(&storage, "a", b"old", b"");
        storage.sync_dir().unwrap();
        storage
            .create("a")
            .unwrap()
            .write_all(b"new content")
            .unwrap();
        let rebooted = storage.crash(CrashMode::TearUnsynced);
        assert_eq!(rebooted.read("a").unwrap(), b"old");
    }

    #[test]
    fn truncate_is_durable() {
        let storage = FaultyStorage::new(3);
        write_file(&storage, "a", b"keep-cut", b"");
        storage.sync_dir().unwrap();
        storage.truncate("a", 4).unwrap();
        let rebooted = storage.crash(CrashMode::TearUnsynced);
        assert_eq!(rebooted.read("a").unwrap(), b"keep");
    }

    #[test]
    fn handles_from_before_a_crash_stop_working() {
        let storage = FaultyStorage::new(3);
        let mut file = storage.create("a").unwrap();
        let rebooted = storage.crash(CrashMode::LoseUnsynced);
        assert!(file.write_all(b"x").is_err());
        assert!(file.sync().is_err());
        assert!(storage.create("b").is_err());
        assert!(storage.list().is_err());
        rebooted.create("b").unwrap().write_all(b"fine").unwrap();
        assert_eq!(rebooted.read("b").unwrap(), b"fine");
    }

    #[test]
    fn a_scheduled_crash_happens_just_before_the_chosen_operation() {
        let storage = FaultyStorage::new(3);
        let mut file = storage.create("a").unwrap();
        file.write_all(b"synced").unwrap();
        storage.sync_dir().unwrap();
        storage.schedule_crash(2, CrashMode::LoseUnsynced);
        file.sync().unwrap();
        file.write_all(b" lost").unwrap();
        assert!(!storage.has_crashed());
        assert!(
            file.sync().is_err(),
            "the third operation meets a dead machine"
        );
        assert!(storage.has_crashed());
        let rebooted = storage.rebooted();
        assert!(!rebooted.has_crashed());
        assert_eq!(rebooted.read("a").unwrap(), b"synced");
        rebooted.sync_dir().unwrap();
    }

    #[test]
    fn injected_faults_fail_exactly_the_requested_operations() {
        let storage = FaultyStorage::new(3);
        let mut file = storage.create("a").unwrap();
        storage.fail_next_writes(1);
        storage.fail_next_syncs(2);
        assert!(file.write_all(b"lost").is_err());
        file.write_all(b"kept").unwrap();
        assert!(file.sync().is_err());
        assert!(file.sync().is_err());
        file.sync().unwrap();
        assert_eq!(storage.read("a").unwrap(), b"kept");
    }
}
