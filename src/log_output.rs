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
//!
//! Formatting the line cost as much again through `tracing`'s formatter (its visitor, its
//! clock, a `write` per fragment): so the access line is formatted here, straight into the
//! gathered lines, exactly as that formatter writes it (a test holds the two to the same
//! text), once [`init_logging`](crate::cli::init_logging) has installed this way out. A log
//! set up otherwise, or one that writes in colour to a terminal, gets the line through
//! `tracing`.

use std::io::{self, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;
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

/// The way out of access lines formatted here, when installed.
struct AccessOutput {
    batch: Arc<Batch<io::Stderr>>,
    format: LogFormat,
}

/// Installed once, by the process's log set-up: the access middleware runs on every worker
/// and has no other path to the log's writer.
static ACCESS_OUTPUT: OnceLock<AccessOutput> = OnceLock::new();

impl LogOutput<io::Stderr> {
    /// Makes access lines go straight to this output in `format` from now on.
    pub(crate) fn install_access_output(&self, format: LogFormat) {
        // Set once per process; a second set-up keeps the first, as `tracing`'s does.
        let _ = ACCESS_OUTPUT.set(AccessOutput {
            batch: Arc::clone(&self.batch),
            format,
        });
    }
}

/// What the access log says of one answered request.
#[derive(Debug, Serialize)]
pub(crate) struct AccessLine<'a> {
    pub(crate) method: &'a str,
    pub(crate) route: &'a str,
    pub(crate) status: u16,
    pub(crate) latency_us: u64,
    pub(crate) request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a str>,
}

/// An access line as a JSON object, its fields between the ones every JSON line has, in the
/// order `tracing`'s JSON formatter writes them.
#[derive(Serialize)]
struct JsonAccessLine<'a> {
    #[serde(serialize_with = "as_text")]
    timestamp: humantime::Rfc3339Timestamp,
    level: &'static str,
    message: &'static str,
    #[serde(flatten)]
    line: &'a AccessLine<'a>,
    target: &'static str,
}

/// Serializes `value` as the text it displays, without an intermediate `String`.
fn as_text<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl AccessLine<'_> {
    /// Logs the line: gathered here if the way out is installed, through `tracing` if not.
    pub(crate) fn log(&self) {
        match ACCESS_OUTPUT.get() {
            Some(output) => output
                .batch
                .gather_access(self, output.format, SystemTime::now()),
            None => self.trace(),
        }
    }

    /// The line as a `tracing` event (the fields displayed, not debugged: no quotes around
    /// them in human-readable lines).
    fn trace(&self) {
        tracing::info!(
            target: ACCESS_LOG,
            method = %self.method,
            route = %self.route,
            status = self.status,
            latency_us = self.latency_us,
            request_id = %self.request_id,
            tenant = self.tenant.map(tracing::field::display),
            user = self.user.map(tracing::field::display),
            "request"
        );
    }

    /// Appends the line to `out` as `tracing`'s formatter would write it at `at`.
    fn write_to(&self, out: &mut Vec<u8>, format: LogFormat, at: SystemTime) {
        let timestamp = humantime::format_rfc3339_micros(at);
        // Writing to a `Vec` cannot fail, nor can serializing strings and numbers.
        let _ = match format {
            LogFormat::Human => self.write_human(out, timestamp),
            LogFormat::Json => serde_json::to_writer(
                &mut *out,
                &JsonAccessLine {
                    timestamp,
                    level: "INFO",
                    message: "request",
                    line: self,
                    target: ACCESS_LOG,
                },
            )
            .map_err(io::Error::from),
        };
        out.push(b'\n');
    }

    fn write_human(
        &self,
        out: &mut Vec<u8>,
        timestamp: humantime::Rfc3339Timestamp,
    ) -> io::Result<()> {
        write!(
            out,
            "{timestamp}  INFO {ACCESS_LOG}: request method={} route={} status={} latency_us={} \
             request_id={}",
            self.method, self.route, self.status, self.latency_us, self.request_id
        )?;
        if let Some(tenant) = self.tenant {
            write!(out, " tenant={tenant}")?;
        }
        if let Some(user) = self.user {
            write!(out, " user={user}")?;
        }
        Ok(())
    }
}

impl<W: Write> Batch<W> {
    /// Formats `line` at the end of the gathered lines.
    fn gather_access(&self, line: &AccessLine<'_>, format: LogFormat, at: SystemTime) {
        let mut state = self.state.lock();
        line.write_to(&mut state.pending, format, at);
        if state.pending.len() >= BATCH_BYTES {
            state.write_pending();
        }
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

    /// The text `tracing`'s formatter writes for `line` in `format`.
    fn traced(line: &AccessLine<'_>, format: LogFormat) -> String {
        let sink = Shared::default();
        let (output, guard) = LogOutput::new(sink.clone());
        let builder = fmt().with_ansi(false).with_writer(output);
        match format {
            LogFormat::Human => {
                tracing::subscriber::with_default(builder.finish(), || line.trace());
            }
            LogFormat::Json => {
                let subscriber = builder.json().flatten_event(true).finish();
                tracing::subscriber::with_default(subscriber, || line.trace());
            }
        }
        drop(guard);
        sink.text()
    }

    #[test]
    fn an_access_line_formatted_here_reads_as_tracing_writes_it() {
        let full = AccessLine {
            method: "POST",
            route: "/v1/matchmaking/queue",
            status: 201,
            latency_us: 1762,
            request_id: "a3e0656f-2",
            tenant: Some("default"),
            user: Some("zoë"),
        };
        let anonymous = AccessLine {
            method: "FOO",
            route: "unmatched",
            status: 404,
            latency_us: 31,
            request_id: "a3e0656f-3",
            tenant: None,
            user: None,
        };
        let timestamp_len = "2026-11-30T14:02:38.231679Z".len();
        for (format, timestamp_at) in [(LogFormat::Human, 0), (LogFormat::Json, 14)] {
            for line in [&full, &anonymous] {
                let mut here = Vec::new();
                line.write_to(&mut here, format, SystemTime::now());
                let here = String::from_utf8(here).unwrap();
                let traced = traced(line, format);
                let without_timestamp = |text: &str| {
                    text[..timestamp_at].to_owned() + &text[timestamp_at + timestamp_len..]
                };
                assert_eq!(
                    without_timestamp(&here),
                    without_timestamp(&traced),
                    "{format:?}:\n{here}{traced}"
                );
            }
        }
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
