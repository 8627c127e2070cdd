//! `HealthBook`: what this isolate has learned about each model, so that no request pays twice
//! for a dead model. Sans-IO: every method takes `now_ms`; the shell keeps one book per isolate
//! and shares "gone" verdicts across isolates through KV.

use std::collections::BTreeMap;

use crate::outcome::Outcome;

/// Consecutive upstream failures that open a model's circuit.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open circuit skips the model before one probe request may try it.
pub const BREAKER_COOLDOWN_MS: u64 = 30_000;
/// Upper bound on a rate-limit cool-down, whatever Groq's hint says (daily limits reset in hours;
/// re-checking every few minutes costs one call).
pub const MAX_COOLDOWN_MS: u64 = 300_000;
/// Cool-down after a rate limit with no usable hint.
pub const DEFAULT_COOLDOWN_MS: u64 = 5_000;
/// A half-open probe that has not reported back in this long is presumed lost.
const PROBE_STALE_MS: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneVerdict {
    pub since_ms: u64,
    pub until_ms: u64,
    /// `404 model_not_found`, `400 model_decommissioned`, `not listed by GET /openai/v1/models`.
    pub reason: String,
}

/// Where a gone verdict was learned: cleared verdicts propagate only for shared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Here,
    Shared,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ModelHealth {
    gone: Option<(GoneVerdict, Source)>,
    /// Rate-limited until then.
    cooling_until_ms: Option<u64>,
    consecutive_failures: u32,
    /// Circuit open until then; after it, one probe may go through.
    open_until_ms: Option<u64>,
    /// A half-open probe is in flight since then.
    probing_since_ms: Option<u64>,
}

/// What the router should do with a model now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Skip for now; try again only as a last resort.
    Skip(SkipReason),
    /// Gone: skip, and never try as a last resort.
    Gone(GoneVerdict),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Gone,
    RateLimited,
    CircuitOpen,
}

impl HealthReport {
    pub fn state(&self) -> &'static str {
        match self {
            HealthReport::Healthy => "healthy",
            HealthReport::Cooling { .. } => "cooling",
            HealthReport::HalfOpen => "half_open",
            HealthReport::Gone { .. } => "gone",
        }
    }
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Gone => "gone",
            SkipReason::RateLimited => "rate_limited",
            SkipReason::CircuitOpen => "circuit_open",
        }
    }
}

/// A model's state for `/v1/routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthReport {
    Healthy,
    Cooling {
        until_ms: u64,
        reason: SkipReason,
    },
    HalfOpen,
    Gone {
        since_ms: u64,
        until_ms: u64,
        reason: String,
    },
}

#[derive(Debug, Default)]
pub struct HealthBook {
    /// By model id: a handful per isolate, so a sorted map (no hashing) is the cheaper lookup.
    models: BTreeMap<String, ModelHealth>,
    /// Gone verdicts learned here and not yet shared (written to KV by the shell).
    unshared: Vec<(String, GoneVerdict)>,
}

impl HealthBook {
    pub fn availability(&mut self, model: &str, now_ms: u64) -> Availability {
        let Some(h) = self.models.get_mut(model) else {
            return Availability::Available;
        };
        if let Some((gone, _)) = &h.gone {
            if now_ms < gone.until_ms {
                return Availability::Gone(gone.clone());
            }
            h.gone = None;
        }
        if h.cooling_until_ms.is_some_and(|t| now_ms < t) {
            return Availability::Skip(SkipReason::RateLimited);
        }
        match h.open_until_ms {
            Some(t) if now_ms < t => Availability::Skip(SkipReason::CircuitOpen),
            Some(_) => {
                // Half-open: let exactly one request probe the model.
                if h.probing_since_ms
                    .is_some_and(|s| now_ms.saturating_sub(s) < PROBE_STALE_MS)
                {
                    Availability::Skip(SkipReason::CircuitOpen)
                } else {
                    h.probing_since_ms = Some(now_ms);
                    Availability::Available
                }
            }
            None => Availability::Available,
        }
    }

    /// Learns from one attempt's outcome. `retry_after_ms` is Groq's hint on a rate limit.
    pub fn record(
        &mut self,
        model: &str,
        outcome: Outcome,
        retry_after_ms: Option<u64>,
        now_ms: u64,
        gone_ttl_ms: u64,
    ) {
        if outcome == Outcome::Ok {
            // A model with no record is healthy already: nothing to allocate or insert.
            if let Some(h) = self.models.get_mut(model) {
                *h = ModelHealth::default();
            }
            return;
        }
        let h = self.models.entry(model.to_string()).or_default();
        h.probing_since_ms = None;
        match outcome {
            Outcome::ModelGone => {
                let verdict = GoneVerdict {
                    since_ms: now_ms,
                    until_ms: now_ms + gone_ttl_ms,
                    reason: "Groq answered model_not_found / model_decommissioned".to_string(),
                };
                self.unshared.push((model.to_string(), verdict.clone()));
                h.gone = Some((verdict, Source::Here));
            }
            Outcome::RateLimited => {
                let wait = retry_after_ms
                    .unwrap_or(DEFAULT_COOLDOWN_MS)
                    .min(MAX_COOLDOWN_MS);
                h.cooling_until_ms = Some(now_ms + wait);
            }
            Outcome::UpstreamError
            | Outcome::Timeout
            | Outcome::ConnectionError
            | Outcome::InvalidResponse => {
                h.consecutive_failures += 1;
                if h.consecutive_failures >= BREAKER_THRESHOLD || h.open_until_ms.is_some() {
                    h.open_until_ms = Some(now_ms + BREAKER_COOLDOWN_MS);
                }
            }
            // A success is recorded above; the rest say nothing about the model's health: the
            // request was the problem.
            Outcome::Ok
            | Outcome::CannotServe
            | Outcome::InvalidRequest
            | Outcome::ProviderAuthFailed
            | Outcome::Skipped => {}
        }
    }

    /// Marks a model gone on evidence found here but not by a request (the scheduled probe).
    /// The caller shares it; it is not queued in `take_unshared`.
    pub fn mark_gone(&mut self, model: &str, verdict: GoneVerdict) {
        self.models.entry(model.to_string()).or_default().gone = Some((verdict, Source::Here));
    }

    /// Takes in the gone verdicts read from KV. A verdict this isolate took from KV earlier and
    /// that KV no longer holds was cleared elsewhere (a probe saw the model listed): forget it.
    pub fn sync_shared(&mut self, shared: &[(String, GoneVerdict)], now_ms: u64) {
        for (model, h) in self.models.iter_mut() {
            if matches!(h.gone, Some((_, Source::Shared)))
                && !shared.iter().any(|(m, _)| m == model)
            {
                h.gone = None;
            }
        }
        for (model, verdict) in shared {
            if now_ms >= verdict.until_ms {
                continue;
            }
            let h = self.models.entry(model.clone()).or_default();
            if h.gone
                .as_ref()
                .is_none_or(|(g, _)| g.until_ms < verdict.until_ms)
            {
                h.gone = Some((verdict.clone(), Source::Shared));
            }
        }
    }

    /// Forgets a gone verdict (the model is listed by Groq again).
    pub fn clear_gone(&mut self, model: &str) {
        if let Some(h) = self.models.get_mut(model) {
            h.gone = None;
        }
        self.unshared.retain(|(m, _)| m != model);
    }

    /// Gone verdicts learned since the last call, for the shell to share.
    pub fn take_unshared(&mut self) -> Vec<(String, GoneVerdict)> {
        std::mem::take(&mut self.unshared)
    }

    pub fn report(&self, model: &str, now_ms: u64) -> HealthReport {
        let Some(h) = self.models.get(model) else {
            return HealthReport::Healthy;
        };
        if let Some((g, _)) = h.gone.as_ref().filter(|(g, _)| now_ms < g.until_ms) {
            return HealthReport::Gone {
                since_ms: g.since_ms,
                until_ms: g.until_ms,
                reason: g.reason.clone(),
            };
        }
        if let Some(until_ms) = h.cooling_until_ms.filter(|t| now_ms < *t) {
            return HealthReport::Cooling {
                until_ms,
                reason: SkipReason::RateLimited,
            };
        }
        match h.open_until_ms {
            Some(until_ms) if now_ms < until_ms => HealthReport::Cooling {
                until_ms,
                reason: SkipReason::CircuitOpen,
            },
            Some(_) => HealthReport::HalfOpen,
            None => HealthReport::Healthy,
        }
    }
}

/// Epoch milliseconds as `2026-11-27T12:03:00Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 3_600_000;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_372_980_123), "2026-12-27T12:03:00Z");
    }

    #[test]
    fn unknown_models_are_available() {
        let mut book = HealthBook::default();
        assert_eq!(book.availability("m", 0), Availability::Available);
        assert_eq!(book.report("m", 0), HealthReport::Healthy);
    }

    #[test]
    fn gone_lasts_for_its_ttl_and_is_shared_once() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::ModelGone, None, 1_000, TTL);
        assert!(matches!(
            book.availability("m", 1_001),
            Availability::Gone(_)
        ));
        assert!(matches!(
            book.availability("m", 1_000 + TTL - 1),
            Availability::Gone(_)
        ));
        assert_eq!(book.availability("m", 1_000 + TTL), Availability::Available);
        let shared = book.take_unshared();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].1.until_ms, 1_000 + TTL);
        assert!(book.take_unshared().is_empty());
    }

    #[test]
    fn gone_survives_a_success_elsewhere_only_until_cleared() {
        let mut book = HealthBook::default();
        book.mark_gone(
            "m",
            GoneVerdict {
                since_ms: 0,
                until_ms: 10_000,
                reason: "kv".into(),
            },
        );
        assert!(matches!(book.availability("m", 5), Availability::Gone(_)));
        assert!(
            book.take_unshared().is_empty(),
            "outside verdicts are not re-shared"
        );
        book.clear_gone("m");
        assert_eq!(book.availability("m", 6), Availability::Available);
    }

    #[test]
    fn shared_verdicts_arrive_and_their_clearing_propagates() {
        let mut book = HealthBook::default();
        let v = |until_ms| GoneVerdict {
            since_ms: 0,
            until_ms,
            reason: "kv".into(),
        };
        book.record("local", Outcome::ModelGone, None, 0, TTL);
        book.sync_shared(&[("a".into(), v(100)), ("b".into(), v(50))], 10);
        assert!(matches!(book.availability("a", 11), Availability::Gone(_)));
        assert!(matches!(book.availability("b", 11), Availability::Gone(_)));
        assert_eq!(
            book.availability("b", 50),
            Availability::Available,
            "expired"
        );
        // `a` is cleared elsewhere: gone from KV. The locally learned verdict stays.
        book.sync_shared(&[], 12);
        assert_eq!(book.availability("a", 13), Availability::Available);
        assert!(matches!(
            book.availability("local", 13),
            Availability::Gone(_)
        ));
        // Expired entries read from KV are ignored.
        book.sync_shared(&[("c".into(), v(5))], 12);
        assert_eq!(book.availability("c", 13), Availability::Available);
    }

    #[test]
    fn rate_limits_cool_for_the_hint_bounded() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::RateLimited, Some(8_000), 0, TTL);
        assert_eq!(
            book.availability("m", 7_999),
            Availability::Skip(SkipReason::RateLimited)
        );
        assert_eq!(
            book.report("m", 1),
            HealthReport::Cooling {
                until_ms: 8_000,
                reason: SkipReason::RateLimited
            }
        );
        assert_eq!(book.availability("m", 8_000), Availability::Available);

        book.record("m", Outcome::RateLimited, Some(10 * 3_600_000), 0, TTL);
        assert_eq!(
            book.availability("m", MAX_COOLDOWN_MS - 1),
            Availability::Skip(SkipReason::RateLimited)
        );
        assert_eq!(
            book.availability("m", MAX_COOLDOWN_MS),
            Availability::Available
        );

        book.record("m", Outcome::RateLimited, None, 0, TTL);
        assert_eq!(
            book.availability("m", DEFAULT_COOLDOWN_MS),
            Availability::Available
        );
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_then_probes_once() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::UpstreamError, None, 0, TTL);
        book.record("m", Outcome::Timeout, None, 1, TTL);
        assert_eq!(
            book.availability("m", 2),
            Availability::Available,
            "two failures leave it closed"
        );
        book.record("m", Outcome::ConnectionError, None, 2, TTL);
        assert_eq!(
            book.availability("m", 3),
            Availability::Skip(SkipReason::CircuitOpen)
        );
        let reopen = 2 + BREAKER_COOLDOWN_MS;
        assert_eq!(
            book.availability("m", reopen - 1),
            Availability::Skip(SkipReason::CircuitOpen)
        );
        // Half-open: one probe passes, a concurrent request still skips.
        assert_eq!(book.report("m", reopen), HealthReport::HalfOpen);
        assert_eq!(book.availability("m", reopen), Availability::Available);
        assert_eq!(
            book.availability("m", reopen + 1),
            Availability::Skip(SkipReason::CircuitOpen)
        );
        // The probe fails: open again for a full cool-down.
        book.record("m", Outcome::InvalidResponse, None, reopen + 5, TTL);
        assert_eq!(
            book.availability("m", reopen + 6),
            Availability::Skip(SkipReason::CircuitOpen)
        );
        // Next probe succeeds: closed, counts reset.
        let again = reopen + 5 + BREAKER_COOLDOWN_MS;
        assert_eq!(book.availability("m", again), Availability::Available);
        book.record("m", Outcome::Ok, None, again + 1, TTL);
        assert_eq!(book.report("m", again + 2), HealthReport::Healthy);
        book.record("m", Outcome::UpstreamError, None, again + 3, TTL);
        assert_eq!(book.availability("m", again + 4), Availability::Available);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::UpstreamError, None, 0, TTL);
        book.record("m", Outcome::UpstreamError, None, 1, TTL);
        book.record("m", Outcome::Ok, None, 2, TTL);
        book.record("m", Outcome::UpstreamError, None, 3, TTL);
        assert_eq!(book.availability("m", 4), Availability::Available);
    }

    #[test]
    fn a_lost_probe_does_not_block_forever() {
        let mut book = HealthBook::default();
        for t in 0..3 {
            book.record("m", Outcome::UpstreamError, None, t, TTL);
        }
        let half_open = 2 + BREAKER_COOLDOWN_MS;
        assert_eq!(book.availability("m", half_open), Availability::Available);
        assert_eq!(
            book.availability("m", half_open + PROBE_STALE_MS),
            Availability::Available
        );
    }

    #[test]
    fn request_faults_say_nothing_about_health() {
        let mut book = HealthBook::default();
        for o in [
            Outcome::CannotServe,
            Outcome::InvalidRequest,
            Outcome::ProviderAuthFailed,
        ] {
            for t in 0..5 {
                book.record("m", o, None, t, TTL);
            }
        }
        assert_eq!(book.availability("m", 10), Availability::Available);
    }
}
