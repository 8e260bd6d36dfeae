//! The circuit breaker in front of the live-game service.
//!
//! While the service answers, attempts run up to the in-flight limit (closed). After
//! `threshold` transient failures in a row the circuit opens: the backlog waits, however much
//! of it is due, until a probe is due; then one attempt at a time probes the service
//! (half-open). An answer closes the circuit again; another failure opens it for longer. A
//! service coming back from an outage therefore sees one request first, not the whole backlog
//! at once. Times are the engine's clock, so a manual clock drives the breaker too.

use crate::clock::UnixMillis;
use crate::games::CircuitState;

/// The breaker's state and what it needs to decide.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: State,
    threshold: u32,
    /// Whether the last outcome was an answer (see [`crate::games::LiveGameHealth`]).
    reachable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        /// Transient failures in a row.
        failures: u32,
    },
    Open {
        /// When the next probe may go.
        until: UnixMillis,
        /// Times the circuit opened since it last closed; lengthens the wait.
        trips: u32,
    },
    HalfOpen {
        trips: u32,
    },
}

impl Breaker {
    /// A closed breaker that opens after `threshold` transient failures in a row (at least
    /// one).
    pub(crate) fn new(threshold: u32) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            reachable: true,
        }
    }

    /// How many attempts may run at once at `now_ms` given the in-flight `limit`: all of it
    /// while closed, one while half-open, none while open. An open circuit whose wait is over
    /// turns half-open here.
    pub(crate) fn allowance(&mut self, now_ms: UnixMillis, limit: usize) -> usize {
        if let State::Open { until, trips } = self.state {
            if now_ms >= until {
                self.state = State::HalfOpen { trips };
            }
        }
        match self.state {
            State::Closed { .. } => limit.max(1),
            State::HalfOpen { .. } => 1,
            State::Open { .. } => 0,
        }
    }

    /// The state as reported at `now_ms` (an open circuit whose wait is over reads half-open).
    pub(crate) fn state(&self, now_ms: UnixMillis) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until, .. } if now_ms < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether the last outcome was an answer.
    pub(crate) fn reachable(&self) -> bool {
        self.reachable
    }

    /// The service answered (a game, or a refusal for good): the circuit closes.
    pub(crate) fn answered(&mut self) {
        self.state = State::Closed { failures: 0 };
        self.reachable = true;
    }

    /// The service failed transiently or did not answer in time. When this opens the circuit,
    /// `reopen_at` says when to probe, given how many times it opened since it last closed.
    /// A failure while already open (an attempt started before it opened) changes nothing.
    pub(crate) fn failed(&mut self, reopen_at: impl FnOnce(u32) -> UnixMillis) {
        self.reachable = false;
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } => State::Open {
                until: reopen_at(1),
                trips: 1,
            },
            State::HalfOpen { trips } => State::Open {
                until: reopen_at(trips + 1),
                trips: trips + 1,
            },
            open @ State::Open { .. } => open,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64;

    #[test]
    fn repeated_failures_open_the_circuit_and_probes_go_one_at_a_time() {
        let mut breaker = Breaker::new(3);
        assert_eq!(breaker.allowance(0, LIMIT), LIMIT);
        assert!(breaker.reachable());
        breaker.failed(|_| unreachable!("two failures do not open it"));
        breaker.failed(|_| unreachable!("two failures do not open it"));
        assert_eq!(breaker.state(0), CircuitState::Closed);
        assert!(!breaker.reachable());
        breaker.failed(|trips| {
            assert_eq!(trips, 1);
            100
        });
        assert_eq!(breaker.state(99), CircuitState::Open);
        assert_eq!(breaker.allowance(99, LIMIT), 0, "the backlog waits");
        breaker.failed(|_| unreachable!("an attempt started before it opened"));
        assert_eq!(breaker.state(100), CircuitState::HalfOpen);
        assert_eq!(breaker.allowance(100, LIMIT), 1, "one probe");

        breaker.failed(|trips| {
            assert_eq!(trips, 2, "the wait grows with every trip");
            300
        });
        assert_eq!(breaker.allowance(299, LIMIT), 0);
        assert_eq!(breaker.allowance(300, LIMIT), 1);
        breaker.answered();
        assert_eq!(breaker.state(300), CircuitState::Closed);
        assert!(breaker.reachable());
        assert_eq!(breaker.allowance(300, LIMIT), LIMIT);

        // Closed again, it counts failures from zero and trips from one.
        breaker.failed(|_| unreachable!());
        breaker.failed(|_| unreachable!());
        breaker.failed(|trips| {
            assert_eq!(trips, 1);
            400
        });
        assert_eq!(breaker.state(350), CircuitState::Open);
    }

    #[test]
    fn an_answer_between_failures_starts_the_count_again() {
        let mut breaker = Breaker::new(2);
        for _ in 0..10 {
            breaker.failed(|_| unreachable!("never two in a row"));
            breaker.answered();
        }
        assert_eq!(breaker.allowance(0, LIMIT), LIMIT);
    }

    #[test]
    fn a_threshold_of_zero_opens_at_the_first_failure_and_a_zero_limit_still_runs_one() {
        let mut breaker = Breaker::new(0);
        assert_eq!(breaker.allowance(0, 0), 1);
        breaker.failed(|_| 10);
        assert_eq!(breaker.state(0), CircuitState::Open);
    }
}
