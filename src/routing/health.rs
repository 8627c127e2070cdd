//! `HealthBook`: what this isolate has learned about each model, so that no request pays twice
//! for a dead model. Sans-IO: every method takes `now_ms`; the shell keeps one book per isolate
//! and shares "gone" verdicts across isolates through KV.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::groq::outcome::Outcome;
use crate::json::named;
use crate::routing::capabilities::Capabilities;

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
/// How stale this isolate's copy of the gone verdicts shared through KV may get.
pub const SHARED_SYNC_INTERVAL_MS: u64 = 60_000;

/// When to read the gone verdicts other isolates shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedSync {
    /// This isolate has never read them: before routing its first request.
    Now,
    /// Its copy is stale: after the response, so no request waits on KV.
    InBackground,
}

/// Why and for how long a model is gone; shared with other isolates as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoneVerdict {
    pub since_ms: u64,
    pub until_ms: u64,
    /// `404 model_not_found`, `400 model_decommissioned`, `not listed by GET /openai/v1/models`.
    pub reason: String,
}

named! {
    /// Why a model is not called now. Only a gone model is never tried as a last resort.
    pub enum SkipReason {
        Gone = "gone",
        RateLimited = "rate_limited",
        CircuitOpen = "circuit_open",
    }
}

/// Epoch milliseconds, serialized as RFC 3339 text for people reading `/v1/routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub u64);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.0 / 1000);
        serializer.collect_str(&humantime::format_rfc3339_seconds(at))
    }
}

/// A model's state for `/v1/routes`: `{"state":"cooling","until_ms":…,"until":…,"reason":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HealthReport<'a> {
    Healthy,
    Cooling {
        until_ms: u64,
        until: Rfc3339,
        reason: SkipReason,
    },
    HalfOpen,
    Gone {
        since_ms: u64,
        since: Rfc3339,
        until_ms: u64,
        until: Rfc3339,
        reason: &'a str,
    },
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

impl ModelHealth {
    fn report(&self, now_ms: u64) -> HealthReport<'_> {
        let cooling = |until_ms, reason| HealthReport::Cooling {
            until_ms,
            until: Rfc3339(until_ms),
            reason,
        };
        match (&self.gone, self.cooling_until_ms, self.open_until_ms) {
            (Some((g, _)), ..) if now_ms < g.until_ms => HealthReport::Gone {
                since_ms: g.since_ms,
                since: Rfc3339(g.since_ms),
                until_ms: g.until_ms,
                until: Rfc3339(g.until_ms),
                reason: &g.reason,
            },
            (_, Some(t), _) if now_ms < t => cooling(t, SkipReason::RateLimited),
            (.., Some(t)) if now_ms < t => cooling(t, SkipReason::CircuitOpen),
            (.., Some(_)) => HealthReport::HalfOpen,
            _ => HealthReport::Healthy,
        }
    }
}

#[derive(Debug, Default)]
pub struct HealthBook {
    /// By model id: a handful per isolate, so a sorted map (no hashing) is the cheaper lookup.
    models: BTreeMap<String, ModelHealth>,
    /// Gone verdicts learned here and not yet shared (written to KV by the shell).
    unshared: Vec<(String, GoneVerdict)>,
    /// When the shared verdicts were last read.
    synced_at_ms: Option<u64>,
    /// What Groq taught of each model's capabilities: its model list's limits (the probe), and
    /// the refusals naming what a model lacks, each until then.
    learned: BTreeMap<String, (Capabilities, u64)>,
}

impl HealthBook {
    /// `None`: call the model. Otherwise why to skip it. A half-open circuit lets exactly one
    /// request through to probe the model.
    pub fn availability(&mut self, model: &str, now_ms: u64) -> Option<SkipReason> {
        let h = self.models.get_mut(model)?;
        match h.report(now_ms) {
            HealthReport::Healthy => None,
            HealthReport::Gone { .. } => Some(SkipReason::Gone),
            HealthReport::Cooling { reason, .. } => Some(reason),
            HealthReport::HalfOpen
                if h.probing_since_ms
                    .is_some_and(|s| now_ms.saturating_sub(s) < PROBE_STALE_MS) =>
            {
                Some(SkipReason::CircuitOpen)
            }
            HealthReport::HalfOpen => {
                h.probing_since_ms = Some(now_ms);
                None
            }
        }
    }

    pub fn report(&self, model: &str, now_ms: u64) -> HealthReport<'_> {
        self.models
            .get(model)
            .map_or(HealthReport::Healthy, |h| h.report(now_ms))
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
        match outcome {
            // A model with no record is healthy already: nothing to allocate or insert.
            Outcome::Ok => {
                if let Some(h) = self.models.get_mut(model) {
                    *h = ModelHealth::default();
                }
            }
            // The request, the key or the caller was the problem, not the model; a half-open
            // probe is over, so another may go.
            Outcome::TooLarge
            | Outcome::ClientDisconnected
            | Outcome::CannotServe
            | Outcome::InvalidRequest
            | Outcome::ProviderAuthFailed => {
                if let Some(h) = self.models.get_mut(model) {
                    h.probing_since_ms = None;
                }
            }
            Outcome::ModelGone => {
                let verdict = GoneVerdict {
                    since_ms: now_ms,
                    until_ms: now_ms + gone_ttl_ms,
                    reason: "Groq answered model_not_found / model_decommissioned".to_string(),
                };
                self.unshared.push((model.to_string(), verdict.clone()));
                self.judged(model).gone = Some((verdict, Source::Here));
            }
            Outcome::RateLimited => {
                let wait = retry_after_ms.unwrap_or(DEFAULT_COOLDOWN_MS);
                self.judged(model).cooling_until_ms = Some(now_ms + wait.min(MAX_COOLDOWN_MS));
            }
            Outcome::UpstreamError
            | Outcome::Timeout
            | Outcome::ConnectionError
            | Outcome::InvalidResponse => {
                let h = self.judged(model);
                h.consecutive_failures += 1;
                if h.consecutive_failures >= BREAKER_THRESHOLD || h.open_until_ms.is_some() {
                    h.open_until_ms = Some(now_ms + BREAKER_COOLDOWN_MS);
                }
            }
        }
    }

    /// The record of a model an answer just judged: any half-open probe on it is over.
    fn judged(&mut self, model: &str) -> &mut ModelHealth {
        let h = self.models.entry(model.to_string()).or_default();
        h.probing_since_ms = None;
        h
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
        for (model, verdict) in shared.iter().filter(|(_, v)| now_ms < v.until_ms) {
            let h = self.models.entry(model.clone()).or_default();
            if h.gone
                .as_ref()
                .is_none_or(|(g, _)| g.until_ms < verdict.until_ms)
            {
                h.gone = Some((verdict.clone(), Source::Shared));
            }
        }
    }

    /// Whether to read the shared verdicts now; a sync that is due counts as started.
    pub fn shared_sync_due(&mut self, now_ms: u64) -> Option<SharedSync> {
        let due = match self.synced_at_ms {
            None => SharedSync::Now,
            Some(at) if now_ms.saturating_sub(at) > SHARED_SYNC_INTERVAL_MS => {
                SharedSync::InBackground
            }
            Some(_) => return None,
        };
        self.synced_at_ms = Some(now_ms);
        Some(due)
    }

    /// Forgets a gone verdict (the model is listed by Groq again); whether there was one.
    pub fn clear_gone(&mut self, model: &str) -> bool {
        self.unshared.retain(|(m, _)| m != model);
        self.models
            .get_mut(model)
            .is_some_and(|h| h.gone.take().is_some())
    }

    /// Gone verdicts learned since the last call, for the shell to share.
    pub fn take_unshared(&mut self) -> Vec<(String, GoneVerdict)> {
        std::mem::take(&mut self.unshared)
    }

    /// What has been learned of `model`'s capabilities and is still current.
    pub fn learned(&self, model: &str, now_ms: u64) -> Option<&Capabilities> {
        let (capabilities, until_ms) = self.learned.get(model)?;
        (now_ms < *until_ms).then_some(capabilities)
    }

    /// Learns of `model`, until `until_ms`: `change` edits what was known (what was learned
    /// before and is still current, else nothing).
    pub fn learn(
        &mut self,
        model: &str,
        until_ms: u64,
        now_ms: u64,
        change: impl FnOnce(&mut Capabilities),
    ) {
        let known = self.learned.get(model).filter(|(_, until)| now_ms < *until);
        let until_ms = known.map_or(until_ms, |(_, until)| until_ms.max(*until));
        let mut capabilities = known.map(|(c, _)| c.clone()).unwrap_or_default();
        change(&mut capabilities);
        self.learned
            .insert(model.to_string(), (capabilities, until_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::SkipReason::{CircuitOpen, Gone, RateLimited};
    use super::*;

    const TTL: u64 = 3_600_000;

    fn verdict(until_ms: u64) -> GoneVerdict {
        GoneVerdict {
            since_ms: 0,
            until_ms,
            reason: "kv".into(),
        }
    }

    #[test]
    fn times_read_as_rfc3339() {
        let shown = |ms| serde_json::to_string(&Rfc3339(ms)).unwrap();
        assert_eq!(shown(0), r#""1970-01-01T00:00:00Z""#);
        assert_eq!(shown(951_782_400_000), r#""2000-02-29T00:00:00Z""#);
        assert_eq!(shown(1_798_372_980_123), r#""2026-12-27T12:03:00Z""#);
    }

    #[test]
    fn shared_verdicts_are_read_first_then_at_most_once_a_minute() {
        let mut book = HealthBook::default();
        let due = |book: &mut HealthBook, t| book.shared_sync_due(1_000 + t);
        assert_eq!(due(&mut book, 0), Some(SharedSync::Now));
        assert_eq!(due(&mut book, SHARED_SYNC_INTERVAL_MS), None);
        let stale = SHARED_SYNC_INTERVAL_MS + 1;
        assert_eq!(due(&mut book, stale), Some(SharedSync::InBackground));
        assert_eq!(due(&mut book, stale + 1), None);
    }

    #[test]
    fn gone_lasts_for_its_ttl_and_is_shared_once() {
        let mut book = HealthBook::default();
        assert_eq!(book.availability("m", 0), None);
        assert_eq!(book.report("m", 0), HealthReport::Healthy);
        book.record("m", Outcome::ModelGone, None, 1_000, TTL);
        assert_eq!(book.availability("m", 1_001), Some(Gone));
        assert_eq!(book.availability("m", 1_000 + TTL - 1), Some(Gone));
        assert_eq!(book.availability("m", 1_000 + TTL), None);
        let shared = book.take_unshared();
        assert_eq!((shared.len(), shared[0].1.until_ms), (1, 1_000 + TTL));
        assert!(book.take_unshared().is_empty());
    }

    #[test]
    fn outside_verdicts_hold_until_cleared_and_are_not_reshared() {
        let mut book = HealthBook::default();
        book.mark_gone("m", verdict(10_000));
        assert_eq!(book.availability("m", 5), Some(Gone));
        assert!(book.take_unshared().is_empty());
        assert!(book.clear_gone("m"));
        assert!(!book.clear_gone("m"), "nothing left to clear");
        assert_eq!(book.availability("m", 6), None);
    }

    #[test]
    fn shared_verdicts_arrive_and_their_clearing_propagates() {
        let mut book = HealthBook::default();
        book.record("local", Outcome::ModelGone, None, 0, TTL);
        book.sync_shared(&[("a".into(), verdict(100)), ("b".into(), verdict(50))], 10);
        assert_eq!(book.availability("a", 11), Some(Gone));
        assert_eq!(book.availability("b", 11), Some(Gone));
        assert_eq!(book.availability("b", 50), None, "expired");
        // `a` is cleared elsewhere: gone from KV. The locally learned verdict stays.
        book.sync_shared(&[], 12);
        assert_eq!(book.availability("a", 13), None);
        assert_eq!(book.availability("local", 13), Some(Gone));
        // Expired entries read from KV are ignored.
        book.sync_shared(&[("c".into(), verdict(5))], 12);
        assert_eq!(book.availability("c", 13), None);
    }

    #[test]
    fn rate_limits_cool_for_the_hint_bounded() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::RateLimited, Some(8_000), 0, TTL);
        assert_eq!(book.availability("m", 7_999), Some(RateLimited));
        let until = Rfc3339(8_000);
        let report = HealthReport::Cooling {
            until_ms: 8_000,
            until,
            reason: RateLimited,
        };
        assert_eq!(book.report("m", 1), report);
        assert_eq!(book.availability("m", 8_000), None);
        book.record("m", Outcome::RateLimited, Some(10 * 3_600_000), 0, TTL);
        assert_eq!(
            book.availability("m", MAX_COOLDOWN_MS - 1),
            Some(RateLimited)
        );
        assert_eq!(book.availability("m", MAX_COOLDOWN_MS), None);
        book.record("m", Outcome::RateLimited, None, 0, TTL);
        assert_eq!(book.availability("m", DEFAULT_COOLDOWN_MS), None);
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_then_probes_once() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::UpstreamError, None, 0, TTL);
        book.record("m", Outcome::Timeout, None, 1, TTL);
        assert_eq!(
            book.availability("m", 2),
            None,
            "two failures leave it closed"
        );
        book.record("m", Outcome::ConnectionError, None, 2, TTL);
        assert_eq!(book.availability("m", 3), Some(CircuitOpen));
        let reopen = 2 + BREAKER_COOLDOWN_MS;
        assert_eq!(book.availability("m", reopen - 1), Some(CircuitOpen));
        // Half-open: one probe passes, a concurrent request still skips.
        assert_eq!(book.report("m", reopen), HealthReport::HalfOpen);
        assert_eq!(book.availability("m", reopen), None);
        assert_eq!(book.availability("m", reopen + 1), Some(CircuitOpen));
        // The probe fails: open again for a full cool-down.
        book.record("m", Outcome::InvalidResponse, None, reopen + 5, TTL);
        assert_eq!(book.availability("m", reopen + 6), Some(CircuitOpen));
        // Next probe succeeds: closed, counts reset.
        let again = reopen + 5 + BREAKER_COOLDOWN_MS;
        assert_eq!(book.availability("m", again), None);
        book.record("m", Outcome::Ok, None, again + 1, TTL);
        assert_eq!(book.report("m", again + 2), HealthReport::Healthy);
        book.record("m", Outcome::UpstreamError, None, again + 3, TTL);
        assert_eq!(book.availability("m", again + 4), None);
        // A probe that never reports back does not block the model for ever.
        for t in 0..3 {
            book.record("n", Outcome::UpstreamError, None, t, TTL);
        }
        let half_open = 2 + BREAKER_COOLDOWN_MS;
        assert_eq!(book.availability("n", half_open), None);
        assert_eq!(book.availability("n", half_open + 1), Some(CircuitOpen));
        assert_eq!(book.availability("n", half_open + PROBE_STALE_MS), None);
    }

    #[test]
    fn only_upstream_failures_count_against_a_model() {
        let mut book = HealthBook::default();
        book.record("m", Outcome::UpstreamError, None, 0, TTL);
        book.record("m", Outcome::UpstreamError, None, 1, TTL);
        book.record("m", Outcome::Ok, None, 2, TTL);
        book.record("m", Outcome::UpstreamError, None, 3, TTL);
        assert_eq!(
            book.availability("m", 4),
            None,
            "a success resets the count"
        );
        use Outcome::{CannotServe, InvalidRequest, ProviderAuthFailed, TooLarge};
        for (t, o) in [CannotServe, InvalidRequest, ProviderAuthFailed, TooLarge]
            .repeat(3)
            .into_iter()
            .enumerate()
        {
            book.record("n", o, None, t as u64, TTL);
        }
        assert_eq!(
            book.availability("n", 10),
            None,
            "the request was the problem"
        );
    }
}
