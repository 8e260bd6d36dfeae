//! Per-user limits: request rates (GCRA through `governor`), one budget for writes and one
//! for reads, and the number of event streams open at once.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use compact_str::CompactString;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;

use crate::http::auth::Acting;
use crate::http::error::{ApiError, Limit};

/// How long a client refused an event stream is asked to wait: a slot comes free when some
/// stream ends, which the server cannot foresee, and a few seconds keep refused clients from
/// hammering a full server without leaving them waiting long once a slot is free.
const STREAM_RETRY_AFTER_S: u64 = 5;

/// How many requests of a kind a user may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_s: NonZeroU32,
    /// Requests allowed at once above the sustained rate.
    pub burst: NonZeroU32,
}

/// How many event streams may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Per user (of a tenant).
    pub per_user: usize,
    /// On the whole server.
    pub total: usize,
}

/// A user of a tenant: tenants never share a budget.
type UserKey = (CompactString, CompactString);

fn user_key(acting: &Acting<'_>) -> UserKey {
    (
        CompactString::from(acting.tenant),
        CompactString::from(acting.user),
    )
}

/// One request budget of every user, keyed by (tenant, user). Shared by all workers: a
/// user's requests may land on any of them.
pub(crate) struct UserRateLimiter {
    limiter: DefaultKeyedRateLimiter<UserKey>,
    /// The requests it counts, named in its refusals.
    limit: Limit,
}

impl UserRateLimiter {
    /// A limiter of the requests `limit` names, enforcing `rate` for each user.
    pub(crate) fn new(rate: RateLimit, limit: Limit) -> Self {
        let quota = Quota::per_second(rate.per_s).allow_burst(rate.burst);
        Self {
            limiter: DefaultKeyedRateLimiter::dashmap(quota),
            limit,
        }
    }

    /// Counts one request of `acting`, or refuses it with the time to wait.
    pub(crate) fn check(&self, acting: &Acting<'_>) -> Result<(), ApiError> {
        self.limiter
            .check_key(&user_key(acting))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                ApiError::RateLimited {
                    limit: self.limit,
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            })
    }

    /// Forgets users whose budget is full again, so that the map does not grow forever.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The event streams open now, per user and in total, shared by all workers. Streams open
/// and close far more rarely than requests arrive, so one mutex guards both counts: checking
/// both caps and taking a slot is one step, and streams opened at the same moment cannot
/// overshoot either cap.
pub(crate) struct StreamSlots {
    limits: StreamLimits,
    open: Mutex<OpenStreams>,
}

/// The counts behind [`StreamSlots`].
#[derive(Default)]
struct OpenStreams {
    total: usize,
    /// Only users with a stream open: a count that falls to zero is removed, so the map
    /// never outgrows the open streams.
    by_user: HashMap<UserKey, usize>,
}

impl StreamSlots {
    /// No stream open yet.
    pub(crate) fn new(limits: StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(OpenStreams::default()),
        })
    }

    /// Takes a slot for a stream of `acting`, or refuses it when the user or the server has
    /// as many streams open as allowed.
    pub(crate) fn take(self: &Arc<Self>, acting: &Acting<'_>) -> Result<StreamSlot, ApiError> {
        let user = user_key(acting);
        let mut open = self.open.lock();
        let refused = |limit| ApiError::RateLimited {
            limit,
            retry_after_s: STREAM_RETRY_AFTER_S,
        };
        if open.total >= self.limits.total {
            return Err(refused(Limit::Streams));
        }
        if open.by_user.get(&user).copied().unwrap_or(0) >= self.limits.per_user {
            return Err(refused(Limit::UserStreams));
        }
        *open.by_user.entry(user.clone()).or_default() += 1;
        open.total += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            user,
        })
    }
}

/// The slot of one open event stream. The stream holds it and gives it back by dropping it:
/// when the stream ends, or when actix drops the stream because the client went away.
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    user: UserKey,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        open.total -= 1;
        if let Some(of_user) = open.by_user.get_mut(&self.user) {
            *of_user -= 1;
            if *of_user == 0 {
                open.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acting<'a>(tenant: &'a str, user: &'a str) -> Acting<'a> {
        Acting::new(tenant, user)
    }

    fn refused_by(result: Result<StreamSlot, ApiError>) -> Option<Limit> {
        match result {
            Err(ApiError::RateLimited { limit, .. }) => Some(limit),
            _ => None,
        }
    }

    #[test]
    fn stream_slots_are_capped_per_user_and_in_total_and_come_back() {
        let slots = StreamSlots::new(StreamLimits {
            per_user: 2,
            total: 3,
        });
        let ann = acting("default", "ann");
        let first = slots.take(&ann).expect("a slot");
        let _second = slots.take(&ann).expect("a slot");
        assert_eq!(refused_by(slots.take(&ann)), Some(Limit::UserStreams));
        // The same user id of another tenant is another user.
        let _acme = slots.take(&acting("acme", "ann")).expect("a slot");
        assert_eq!(
            refused_by(slots.take(&acting("default", "ben"))),
            Some(Limit::Streams)
        );
        drop(first);
        let _again = slots.take(&ann).expect("the slot came back");
        let open = slots.open.lock();
        assert_eq!(open.total, 3);
        assert_eq!(open.by_user.len(), 2, "no entry for refused users");
    }

    #[test]
    fn users_without_streams_are_forgotten() {
        let slots = StreamSlots::new(StreamLimits {
            per_user: 1,
            total: 10,
        });
        let slot = slots.take(&acting("default", "ann")).expect("a slot");
        drop(slot);
        let open = slots.open.lock();
        assert_eq!(open.total, 0);
        assert!(open.by_user.is_empty());
    }
}
