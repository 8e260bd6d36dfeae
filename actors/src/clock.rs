//! Time source for every timestamp and every window computation.
//!
//! All of matchwell reads time through [`Clock`] so that tests, the replay harness and embedded
//! simulations can drive time by hand ([`ManualClock`]) and get the same pairings on every run.
//!
//! Engine time never steps. Waits, windows, expiry, retention and backoff are differences of
//! engine times, and a wall clock that jumps (an NTP step, an operator's `date`) would make
//! them jump too: a forward step that is later corrected would hold back every later item
//! from retention by the size of the step, and entries that joined during it would neither
//! widen nor expire. So [`SystemClock`] reads the wall clock once, when it is made, and adds
//! the monotonic clock's progress from then on. Times shown (`joined_at`, `expires_at`) are
//! engine times, so they agree with the waits shown beside them; after a wall-clock step they
//! differ from the corrected wall clock by that step until the next start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the one time unit stored in records and journals.
pub type UnixMillis = u64;

/// A source of engine time: milliseconds since the Unix epoch that never go backwards and
/// never step.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now_ms(&self) -> UnixMillis;
}

/// Shared handle to the engine's clock.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's two clocks, as [`SystemClock`] reads them.
pub trait TimeSource: Send + Sync + 'static {
    /// The wall clock: what the date is, which may step.
    fn wall_ms(&self) -> UnixMillis;
    /// The monotonic clock: time elapsed since some fixed point, which never steps.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy)]
pub struct OsTime {
    origin: Instant,
}

impl Default for OsTime {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl TimeSource for OsTime {
    fn wall_ms(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Engine time from the machine's clocks: the wall clock as it read when this clock was made,
/// advanced by the monotonic clock since (see the module documentation).
#[derive(Debug, Clone)]
pub struct SystemClock<S = OsTime> {
    source: S,
    wall_at_start_ms: UnixMillis,
    monotonic_at_start: Duration,
}

impl SystemClock {
    /// A clock over the operating system's clocks, anchored now.
    pub fn new() -> Self {
        Self::with_source(OsTime::default())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: TimeSource> SystemClock<S> {
    /// A clock over `source`, anchored at its wall time now.
    pub fn with_source(source: S) -> Self {
        Self {
            wall_at_start_ms: source.wall_ms(),
            monotonic_at_start: source.monotonic(),
            source,
        }
    }
}

impl<S: TimeSource> Clock for SystemClock<S> {
    fn now_ms(&self) -> UnixMillis {
        let elapsed = self
            .source
            .monotonic()
            .saturating_sub(self.monotonic_at_start);
        self.wall_at_start_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to.
///
/// It is an atomic rather than a lock because shards on several threads read it on every wave
/// while the driver advances it.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: UnixMillis) -> Self {
        Self {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }

    /// Moves the clock to `to_ms`; a time earlier than the current one is ignored, so time never
    /// runs backwards for the engine.
    pub fn advance_to(&self, to_ms: UnixMillis) {
        self.now_ms.fetch_max(to_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Wall and monotonic clocks a test sets by hand, for [`SystemClock::with_source`].
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct ScriptedTime {
    pub(crate) wall_ms: AtomicU64,
    pub(crate) monotonic_ms: AtomicU64,
}

#[cfg(test)]
impl TimeSource for Arc<ScriptedTime> {
    fn wall_ms(&self) -> UnixMillis {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.monotonic_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new(1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        clock.advance_to(1_100);
        assert_eq!(
            clock.now_ms(),
            1_250,
            "advance_to must not move the clock backwards"
        );
        clock.advance_to(2_000);
        assert_eq!(clock.now_ms(), 2_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock::new().now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn system_clock_follows_the_monotonic_clock_and_ignores_wall_clock_steps() {
        let time = Arc::new(ScriptedTime::default());
        time.wall_ms.store(1_000_000, Ordering::SeqCst);
        time.monotonic_ms.store(42, Ordering::SeqCst);
        let clock = SystemClock::with_source(Arc::clone(&time));
        assert_eq!(clock.now_ms(), 1_000_000);
        time.monotonic_ms.fetch_add(250, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 1_000_250);
        time.wall_ms.fetch_add(3_600_000, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 1_000_250, "a forward step");
        time.wall_ms.store(0, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 1_000_250, "a backward step");
        time.monotonic_ms.fetch_add(750, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 1_001_000);
    }
}
