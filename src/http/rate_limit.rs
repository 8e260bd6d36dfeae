//! Per-user limits on writes (GCRA through `governor`).

use std::num::NonZeroU32;

use compact_str::CompactString;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::http::auth::Acting;
use crate::http::error::ApiError;

/// How many writes a user may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained writes per second.
    pub per_s: NonZeroU32,
    /// Writes allowed at once above the sustained rate.
    pub burst: NonZeroU32,
}

/// The write limiter of every user, keyed by (tenant, user) so that tenants never share a
/// budget. Shared by all workers: a user's requests may land on any of them.
pub(crate) struct UserRateLimiter {
    limiter: DefaultKeyedRateLimiter<(CompactString, CompactString)>,
}

impl UserRateLimiter {
    /// A limiter enforcing `limit` for each user.
    pub(crate) fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_s).allow_burst(limit.burst);
        Self {
            limiter: DefaultKeyedRateLimiter::dashmap(quota),
        }
    }

    /// Counts one write of `acting`, or refuses it with the time to wait.
    pub(crate) fn check(&self, acting: &Acting<'_>) -> Result<(), ApiError> {
        let key = (
            CompactString::from(acting.tenant),
            CompactString::from(acting.user),
        );
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            ApiError::RateLimited {
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
