//! Where log lines go: standard error, with access-log lines written in batches.
//!
//! A busy server writes one access-log line per request, and writing each on its own cost a
//! `write` system call per request: about a tenth of the server's CPU time in the
//! enqueue-status-cancel round. So access-log lines gather in memory and go out together:
//! once [`BATCH_BYTES`] have gathered, before any other line (so that the log keeps its
//! order), every [`BATCH_AGE`] from a thread of their own, and when the process ends
//! normally. Only access-log lines ever wait: a warning or an error is written at once, with
//! the access lines before it. What a `kill -9` loses is at most the last [`BATCH_AGE`] of
//! access lines.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use crate::http::access::ACCESS_LOG;

/// Gathered access-log lines are written once they reach this size.
const BATCH_BYTES: usize = 32 * 1024;

/// The longest an access-log line waits to be written.
const BATCH_AGE: Duration = Duration::from_millis(100);

/// The log's writer, for `tracing_subscriber::fmt`.
pub(crate) struct LogOutput<W: Write + Send + 'static> {
    batch: Arc<Batch<W>>,
}

/// The gathered lines and the sink they go to, under one lock: a line written directly takes
/// the same lock, so nothing overtakes the lines gathered before it.
struct Batch<W> {
    state: Mutex<BatchState<W>>,
}

struct BatchState<W> {
    pending: Vec<u8>,
    sink: W,
}

impl<W: Write> BatchState<W> {
    fn write_pending(&mut self) {
        if !self.pending.is_empty() {
            // A log that cannot be written has nowhere to report it.
            let _ = self.sink.write_all(&self.pending);
            let _ = self.sink.flush();
            self.pending.clear();
        }
    }
}

impl<W: Write + Send + 'static> LogOutput<W> {
    /// A writer to `sink`; the [`FlushOnDrop`] writes what is left when it is dropped.
    pub(crate) fn new(sink: W) -> (Self, FlushOnDrop<W>) {
        let batch = Arc::new(Batch {
            state: Mutex::new(BatchState {
                pending: Vec::with_capacity(BATCH_BYTES),
                sink,
            }),
        });
        (
            Self {
                batch: Arc::clone(&batch),
            },
            FlushOnDrop(batch),
        )
    }

    /// Starts the thread that writes the gathered lines every [`BATCH_AGE`]; it ends once
    /// the writer and its guard have both gone.
    pub(crate) fn start_flusher(&self) -> io::Result<()> {
        let batch = Arc::downgrade(&self.batch);
        std::thread::Builder::new()
            .name("matchwell-log".into())
            .spawn(move || {
                while let Some(batch) = batch.upgrade() {
                    batch.state.lock().write_pending();
                    drop(batch);
                    std::thread::sleep(BATCH_AGE);
                }
            })?;
        Ok(())
    }
}

/// Writes the gathered lines when dropped: held by `main` for the life of the process.
#[must_use = "dropping it at once writes nothing it would not have written anyway"]
pub struct FlushOnDrop<W: Write = io::Stderr>(Arc<Batch<W>>);

impl<W: Write> Drop for FlushOnDrop<W> {
    fn drop(&mut self) {
        self.0.state.lock().write_pending();
    }
}

/// One line's writer: gathered, or written at once after what was gathered.
pub(crate) struct LineWriter<'a, W> {
    batch: &'a Batch<W>,
    gathered: bool,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = self.batch.state.lock();
        if self.gathered {
            state.pending.extend_from_slice(line);
            if state.pending.len() >= BATCH_BYTES {
                state.write_pending();
            }
        } else {
            state.write_pending();
            state.sink.write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for LogOutput<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            batch: &self.batch,
            gathered: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            batch: &self.batch,
            gathered: meta.target() == ACCESS_LOG,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tracing_subscriber::fmt;

    use super::*;

    /// A sink whose content the test can read while the writer holds it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock()).into_owned()
        }
    }

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn gather(output: &LogOutput<Shared>, line: &str) {
        let mut writer = LineWriter {
            batch: &output.batch,
            gathered: true,
        };
        writer.write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn an_access_line_waits_and_any_other_line_writes_it_first() {
        let sink = Shared::default();
        let (output, _guard) = LogOutput::new(sink.clone());
        let subscriber = fmt().with_ansi(false).with_writer(output).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: ACCESS_LOG, "request one");
            tracing::info!(target: ACCESS_LOG, "request two");
            assert_eq!(sink.text(), "", "access lines wait");
            tracing::warn!("trouble");
        });
        let log = sink.text();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(lines[0].ends_with("request one"), "{log}");
        assert!(lines[1].ends_with("request two"), "{log}");
        assert!(lines[2].ends_with("trouble"), "{log}");
    }

    #[test]
    fn gathered_lines_go_out_once_they_reach_the_batch_size() {
        let sink = Shared::default();
        let (output, _guard) = LogOutput::new(sink.clone());
        let line = "x".repeat(99) + "\n";
        let below = BATCH_BYTES.div_ceil(line.len()) - 1;
        for _ in 0..below {
            gather(&output, &line);
        }
        assert_eq!(sink.text(), "");
        gather(&output, &line);
        assert_eq!(sink.text().len(), (below + 1) * line.len());
    }

    #[test]
    fn the_guard_writes_what_is_left() {
        let sink = Shared::default();
        let (output, guard) = LogOutput::new(sink.clone());
        gather(&output, "last\n");
        drop(guard);
        assert_eq!(sink.text(), "last\n");
    }

    #[test]
    fn the_flusher_writes_a_waiting_line_within_its_period() {
        let sink = Shared::default();
        let (output, _guard) = LogOutput::new(sink.clone());
        output.start_flusher().unwrap();
        gather(&output, "waiting\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the flusher never wrote the line"
            );
            std::thread::yield_now();
        }
        assert_eq!(sink.text(), "waiting\n");
    }
}
