//! Limits on callers: `RateLimiter`, the seam to the Workers Rate Limiting binding
//! (`CLIENT_RATE_LIMITER`), keyed by client name or user (`auth::Caller::limit_key`), or by IP for
//! anonymous callers (absent binding: no limit); and `BytesInFlight`, the request bytes one
//! isolate holds at once (`MAX_INFLIGHT_BYTES`).

use std::cell::Cell;

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

/// The request bytes this isolate holds at once. A request's body is held from before it is read
/// until its answer is made (a stream's, until the relay takes over, which needs none of it): a
/// burst of large bodies is shed with 503 instead of growing the isolate past its memory, and
/// losing every request on it.
#[derive(Debug, Default)]
pub struct BytesInFlight(Cell<u64>);

impl BytesInFlight {
    /// Holds `bytes` while the returned guard lives, if that keeps the isolate within `max`. A
    /// body larger than `max` alone is taken when nothing else is held, or it could never be.
    pub fn hold(&self, bytes: u64, max: u64) -> Option<Held<'_>> {
        let held = self.0.get();
        (held == 0 || held.saturating_add(bytes) <= max).then(|| {
            self.0.set(held.saturating_add(bytes));
            Held { from: self, bytes }
        })
    }

    /// The bytes held now.
    pub fn held(&self) -> u64 {
        self.0.get()
    }
}

/// One request's hold on [`BytesInFlight`], let go when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    from: &'a BytesInFlight,
    bytes: u64,
}

impl Held<'_> {
    /// Holds only `bytes` from now on: a body read whole may be shorter than what was held for it.
    pub fn shrink_to(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.from.0.set(self.from.0.get() - (self.bytes - bytes));
        self.bytes = bytes;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.from.0.set(self.from.0.get() - self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_flight_are_bounded_and_let_go() {
        let in_flight = BytesInFlight::default();
        let a = in_flight.hold(6, 10).expect("within the bound");
        assert!(in_flight.hold(5, 10).is_none(), "past the bound");
        let mut b = in_flight.hold(4, 10).expect("up to the bound");
        b.shrink_to(1);
        assert_eq!(in_flight.held(), 7);
        drop(a);
        assert_eq!(in_flight.held(), 1);
        drop(b);
        assert_eq!(in_flight.held(), 0);
        let alone = in_flight
            .hold(50, 10)
            .expect("larger than the bound, alone");
        assert!(in_flight.hold(1, 10).is_none());
        drop(alone);
        assert_eq!(in_flight.held(), 0);
    }
}
