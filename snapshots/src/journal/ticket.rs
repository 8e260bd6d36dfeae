//! Waiting for records to become durable, blocking or async.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use event_listener::EventListener;

use super::JournalError;
use super::writer::Shared;

/// A record's sequence number, and the means to wait until the record is durable.
///
/// Dropping a ticket does not cancel anything: the record is written either way.
/// `ticket.await` (or [`Ticket::durable`]) waits without blocking a thread;
/// [`Ticket::wait`] blocks the calling thread.
#[derive(Clone)]
pub struct Ticket {
    seq: u64,
    shared: Arc<Shared>,
}

impl Ticket {
    pub(crate) fn new(seq: u64, shared: Arc<Shared>) -> Self {
        Self { seq, shared }
    }

    /// The record's sequence number: its position in append order, counted
    /// from 1 since the journal was opened.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the record is durable (as far as the fsync mode promises).
    pub fn is_durable(&self) -> bool {
        self.shared.durable_seq() >= self.seq
    }

    /// Blocks until the record is durable, or returns the failure that
    /// prevents it from ever becoming durable.
    pub fn wait(&self) -> Result<(), JournalError> {
        self.shared.block_until(|| self.shared.durability(self.seq))
    }

    /// A future that resolves like [`wait`](Self::wait) returns.
    pub fn durable(&self) -> WaitDurable {
        WaitDurable::new(Arc::clone(&self.shared), self.seq)
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("seq", &self.seq)
            .field("durable", &self.is_durable())
            .finish()
    }
}

impl IntoFuture for Ticket {
    type Output = Result<(), JournalError>;
    type IntoFuture = WaitDurable;

    fn into_future(self) -> WaitDurable {
        WaitDurable::new(self.shared, self.seq)
    }
}

/// Resolves once a sequence number is durable, or with the error that
/// prevents it from ever being durable. Works on any async runtime.
#[must_use = "futures do nothing unless polled"]
pub struct WaitDurable {
    shared: Arc<Shared>,
    seq: u64,
    /// Registered before the condition is re-checked, so no wake-up is lost.
    listener: Option<EventListener>,
}

impl WaitDurable {
    pub(crate) fn new(shared: Arc<Shared>, seq: u64) -> Self {
        Self {
            shared,
            seq,
            listener: None,
        }
    }
}

impl fmt::Debug for WaitDurable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitDurable")
            .field("seq", &self.seq)
            .finish()
    }
}

impl Future for WaitDurable {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if let Some(outcome) = this.shared.durability(this.seq) {
                this.listener = None;
                return Poll::Ready(outcome);
            }
            match &mut this.listener {
                None => this.listener = Some(this.shared.listen()),
                Some(listener) => {
                    ready!(Pin::new(listener).poll(cx));
                    this.listener = None;
                }
            }
        }
    }
}
