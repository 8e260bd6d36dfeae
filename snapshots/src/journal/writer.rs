//! The state shared by appenders, waiters and the writer thread, and the writer thread itself.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use event_listener::{Event, Listener};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::format::{encode_segment_header, segment_file_name};
use super::{Commit, CommitObserver, FsyncMode, JournalError, JournalOptions};
use crate::storage::{Storage, StorageError, StorageFile};

/// Everything appenders, waiters and the writer thread share.
pub(crate) struct Shared {
    /// In an `Arc` because the writer thread, like any spawned thread, must
    /// own what it uses.
    pub(crate) storage: Arc<dyn Storage>,
    /// Fixed at open; read by appenders (wake-up threshold) and the writer.
    pub(crate) options: JournalOptions,
    /// Appenders push encoded frames here and the writer drains it. It is a
    /// single queue behind a single lock because taking the lock is what
    /// assigns a record its sequence number: the order of sequence numbers is
    /// then, by construction, the order of the bytes in the file.
    queue: Mutex<Queue>,
    /// Wakes the writer while it sleeps on `queue`.
    work_ready: Condvar,
    /// Highest sequence number handed out. Written only with `queue` locked,
    /// atomic so that readers need not take the lock.
    appended_seq: AtomicU64,
    /// Highest sequence number that is durable as far as the fsync mode
    /// promises. Only the writer moves it, and only forward.
    durable_seq: AtomicU64,
    /// Newest segment whose header and directory entry are durable: the one
    /// the writer is filling.
    opened_segment: AtomicU64,
    /// The first write or sync failure. Set once and never cleared: the
    /// journal is fail-stop.
    failure: OnceLock<Arc<StorageError>>,
    /// Set when the writer thread has exited, however it exited.
    writer_stopped: AtomicBool,
    /// Notified after `durable_seq`, `opened_segment`, `failure` or
    /// `writer_stopped` changed; waiters then re-check their condition.
    progress: Event,
    /// Told about each commit; fixed at open. An `Arc` because whoever opened
    /// the journal keeps a handle to read what it was told, while the writer
    /// thread must own what it uses.
    observer: Option<Arc<dyn CommitObserver>>,
}

/// Work waiting for the writer.
struct Queue {
    /// In append order. Frames between two rotations share one chunk, so the
    /// writer can hand them to the storage with one `write_all`.
    chunks: VecDeque<Chunk>,
    /// Total frame bytes in `chunks`.
    pending_bytes: usize,
    /// The segment that newly appended records go to.
    active_segment: u64,
    /// Set by `close`: the writer drains the queue, syncs and exits.
    closing: bool,
    writer_wait: WriterWait,
    /// An emptied buffer the writer handed back, reused for the next chunk.
    spare: Vec<u8>,
}

enum Chunk {
    Frames {
        bytes: Vec<u8>,
        last_seq: u64,
    },
    /// Seal the current segment and continue in `segment`.
    Rotate {
        segment: u64,
    },
}

/// What the writer is waiting for, so that appenders wake it only when needed:
/// a futex wake-up on every append would cost more than the append itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriterWait {
    /// Not waiting.
    Busy,
    /// Waiting for anything to be queued.
    AnyWork,
    /// Waiting for the batch interval to end; wake early only for a full buffer.
    FullBuffer,
}

impl Shared {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        options: JournalOptions,
        segment: u64,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Self {
        Self {
            storage,
            options,
            queue: Mutex::new(Queue {
                chunks: VecDeque::new(),
                pending_bytes: 0,
                active_segment: segment,
                closing: false,
                writer_wait: WriterWait::Busy,
                spare: Vec::new(),
            }),
            work_ready: Condvar::new(),
            appended_seq: AtomicU64::new(0),
            durable_seq: AtomicU64::new(0),
            opened_segment: AtomicU64::new(segment),
            failure: OnceLock::new(),
            writer_stopped: AtomicBool::new(false),
            progress: Event::new(),
            observer,
        }
    }

    pub(crate) fn appended_seq(&self) -> u64 {
        self.appended_seq.load(Ordering::Acquire)
    }

    pub(crate) fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    pub(crate) fn opened_segment(&self) -> u64 {
        self.opened_segment.load(Ordering::Acquire)
    }

    pub(crate) fn failure(&self) -> Option<&Arc<StorageError>> {
        self.failure.get()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.queue.lock().closing
    }

    /// Queues one encoded frame and returns its sequence number.
    pub(crate) fn append_frame(&self, frame: &[u8]) -> Result<u64, JournalError> {
        let mut queue = self.queue.lock();
        self.check_accepting(&queue)?;
        let seq = self.appended_seq.load(Ordering::Relaxed) + 1;
        match queue.chunks.back_mut() {
            Some(Chunk::Frames { bytes, last_seq }) => {
                bytes.extend_from_slice(frame);
                *last_seq = seq;
            }
            _ => {
                let mut bytes = mem::take(&mut queue.spare);
                bytes.extend_from_slice(frame);
                queue.chunks.push_back(Chunk::Frames {
                    bytes,
                    last_seq: seq,
                });
            }
        }
        queue.pending_bytes += frame.len();
        self.appended_seq.store(seq, Ordering::Release);
        let wake = match queue.writer_wait {
            WriterWait::Busy => false,
            WriterWait::AnyWork => true,
            WriterWait::FullBuffer => queue.pending_bytes >= self.options.batch_wake_bytes,
        };
        if wake {
            self.wake_writer(&mut queue);
        }
        Ok(seq)
    }

    /// Queues a rotation and returns the number of the segment it starts.
    pub(crate) fn request_rotation(&self) -> Result<u64, JournalError> {
        let mut queue = self.queue.lock();
        self.check_accepting(&queue)?;
        queue.active_segment += 1;
        let segment = queue.active_segment;
        queue.chunks.push_back(Chunk::Rotate { segment });
        self.wake_writer(&mut queue);
        Ok(segment)
    }

    pub(crate) fn request_close(&self) {
        let mut queue = self.queue.lock();
        queue.closing = true;
        self.wake_writer(&mut queue);
    }

    fn check_accepting(&self, queue: &Queue) -> Result<(), JournalError> {
        if let Some(cause) = self.failure() {
            Err(JournalError::poisoned(cause))
        } else if queue.closing {
            Err(JournalError::Closed)
        } else {
            Ok(())
        }
    }

    fn wake_writer(&self, queue: &mut Queue) {
        if queue.writer_wait != WriterWait::Busy {
            queue.writer_wait = WriterWait::Busy;
            self.work_ready.notify_one();
        }
    }

    /// `Some` once the record `seq` is durable or can never become durable.
    pub(crate) fn durability(&self, seq: u64) -> Option<Result<(), JournalError>> {
        let appended = self.appended_seq();
        if seq > appended {
            return Some(Err(JournalError::NotAppended { seq, appended }));
        }
        self.settled(self.durable_seq() >= seq)
    }

    /// `Some` once `segment` is open or can never be opened.
    pub(crate) fn rotation(&self, segment: u64) -> Option<Result<u64, JournalError>> {
        self.settled(self.opened_segment() >= segment)
            .map(|outcome| outcome.map(|()| segment))
    }

    fn settled(&self, reached: bool) -> Option<Result<(), JournalError>> {
        if reached {
            Some(Ok(()))
        } else if let Some(cause) = self.failure() {
            Some(Err(JournalError::poisoned(cause)))
        } else if self.writer_stopped.load(Ordering::Acquire) {
            Some(Err(JournalError::Closed))
        } else {
            None
        }
    }

    /// Blocks the calling thread until `outcome` returns `Some`.
    pub(crate) fn block_until<R>(&self, mut outcome: impl FnMut() -> Option<R>) -> R {
        loop {
            if let Some(result) = outcome() {
                return result;
            }
            // Listen before the second check, so a notification between the
            // check and the wait is not missed.
            let listener = self.progress.listen();
            if let Some(result) = outcome() {
                return result;
            }
            listener.wait();
        }
    }

    pub(crate) fn listen(&self) -> event_listener::EventListener {
        self.progress.listen()
    }

    fn mark_durable(&self, seq: u64) {
        if seq > self.durable_seq() {
            self.durable_seq.store(seq, Ordering::Release);
            self.progress.notify(usize::MAX);
        }
    }

    fn mark_opened(&self, segment: u64) {
        self.opened_segment.store(segment, Ordering::Release);
        self.progress.notify(usize::MAX);
    }

    fn poison(&self, error: StorageError) {
        tracing::error!(%error, "journal write failed; the journal accepts no further records");
        // Only the writer thread poisons, and it stops right after, so this is the first failure.
        let _ = self.failure.set(Arc::new(error));
        self.progress.notify(usize::MAX);
    }
}

/// Creates segment `segment`, with its header and directory entry durable.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    segment: u64,
) -> Result<Box<dyn StorageFile>, StorageError> {
    let mut file = storage.create(&segment_file_name(segment))?;
    file.write_all(&encode_segment_header(segment))?;
    file.sync()?;
    storage.sync_dir()?;
    Ok(file)
}

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    file: Box<dyn StorageFile>,
    /// Highest sequence number handed to the storage.
    written_seq: u64,
    /// Whether `file` has writes that were not synced.
    unsynced: bool,
    last_commit: Instant,
    /// Chunks taken from the queue, swapped with it so both keep their allocation.
    taken: VecDeque<Chunk>,
    /// A written-out buffer waiting to go back to the queue as its spare.
    recycled: Vec<u8>,
}

impl Writer {
    /// Starts the writer thread on `file`, an open segment.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        file: Box<dyn StorageFile>,
    ) -> Result<JoinHandle<()>, JournalError> {
        let writer = Writer {
            shared,
            file,
            written_seq: 0,
            unsynced: false,
            last_commit: Instant::now(),
            taken: VecDeque::new(),
            recycled: Vec::new(),
        };
        std::thread::Builder::new()
            .name("matchwell-journal".into())
            .spawn(move || writer.run())
            .map_err(JournalError::WriterThread)
    }

    fn run(mut self) {
        let _stopped = StoppedOnDrop(Arc::clone(&self.shared));
        loop {
            let closing = self.take_work();
            if let Err(error) = self.write_taken(closing) {
                self.shared.poison(error);
                return;
            }
            if closing {
                return;
            }
        }
    }

    /// Sleeps until there is work, then takes all of it. Returns whether the
    /// journal is closing.
    fn take_work(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut queue = shared.queue.lock();
        while !self.work_due(&mut queue) {
            queue.writer_wait = WriterWait::AnyWork;
            shared.work_ready.wait(&mut queue);
        }
        queue.writer_wait = WriterWait::Busy;
        if queue.spare.capacity() == 0 {
            queue.spare = mem::take(&mut self.recycled);
        }
        mem::swap(&mut queue.chunks, &mut self.taken);
        queue.pending_bytes = 0;
        queue.closing
    }

    /// Whether to take the queue now. In batch mode, sleeps until the batch
    /// interval is over or the buffer is full before answering.
    fn work_due(&self, queue: &mut MutexGuard<'_, Queue>) -> bool {
        loop {
            let rotation_queued = queue
                .chunks
                .iter()
                .any(|chunk| matches!(chunk, Chunk::Rotate { .. }));
            if queue.closing || rotation_queued {
                return true;
            }
            if queue.chunks.is_empty() {
                return false;
            }
            let FsyncMode::Batch { interval } = self.shared.options.fsync else {
                return true;
            };
            let due = self.last_commit + interval;
            if Instant::now() >= due || queue.pending_bytes >= self.shared.options.batch_wake_bytes
            {
                return true;
            }
            queue.writer_wait = WriterWait::FullBuffer;
            self.shared.work_ready.wait_until(queue, due);
        }
    }

    fn write_taken(&mut self, closing: bool) -> Result<(), StorageError> {
        let started = Instant::now();
        let first_seq = self.written_seq;
        let mut written_bytes = 0;
        while let Some(chunk) = self.taken.pop_front() {
            match chunk {
                Chunk::Frames {
                    mut bytes,
                    last_seq,
                } => {
                    self.file.write_all(&bytes)?;
                    self.unsynced = true;
                    self.written_seq = last_seq;
                    written_bytes += bytes.len();
                    bytes.clear();
                    self.recycled = bytes;
                }
                Chunk::Rotate { segment } => {
                    // Sealed in every mode: recovery treats damage in any
                    // segment but the last as corruption.
                    self.sync()?;
                    self.file = create_segment(&*self.shared.storage, segment)?;
                    self.shared.mark_opened(segment);
                }
            }
        }
        let written = Instant::now();
        let synced = if self.shared.options.fsync == FsyncMode::None && !closing {
            self.shared.mark_durable(self.written_seq);
            false
        } else {
            self.sync()?
        };
        self.last_commit = Instant::now();
        let records = self.written_seq - first_seq;
        if let Some(observer) = self.shared.observer.as_ref().filter(|_| records > 0) {
            observer.committed(&Commit {
                records,
                bytes: written_bytes,
                write: written - started,
                sync: synced.then(|| self.last_commit - written),
            });
        }
        Ok(())
    }

    /// Syncs what was written since the last sync, if anything, and returns
    /// whether it had to.
    fn sync(&mut self) -> Result<bool, StorageError> {
        let synced = self.unsynced;
        if synced {
            self.file.sync()?;
            self.unsynced = false;
        }
        self.shared.mark_durable(self.written_seq);
        Ok(synced)
    }
}

/// Tells waiters the writer is gone, whether it returned or panicked.
struct StoppedOnDrop(Arc<Shared>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.writer_stopped.store(true, Ordering::Release);
        self.0.progress.notify(usize::MAX);
    }
}
