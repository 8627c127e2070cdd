//! `RateLimiter`: the seam to the Workers Rate Limiting binding (`CLIENT_RATE_LIMITER`), keyed by
//! client name or user (`auth::Caller::limit_key`), or by IP for anonymous callers. Absent binding: no limit.

#[allow(async_fn_in_trait)]
pub trait RateLimiter {
    /// Whether one more request under `key` is within the limit.
    async fn allow(&self, key: &str) -> bool;
}

/// No binding configured.
pub struct Unlimited;

impl RateLimiter for Unlimited {
    async fn allow(&self, _key: &str) -> bool {
        true
    }
}
