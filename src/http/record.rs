//! `RequestRecord`: one routed request's account, filled in as the request goes and written once
//! when it ends, as its log line and its usage point (Workers Analytics Engine, `USAGE`).

use serde::Serialize;

use crate::groq::completion::Usage;
use crate::http::budget::Reservation;
use crate::http::cache::CacheStatus;
use crate::http::ledger::Amount;
use crate::routing::log::Level;
use crate::routing::registry::Price;

/// What one routed request did: the request line is this record as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub task: String,
    pub client: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// `ok`, or the error code the caller got.
    pub outcome: String,
    pub status: u16,
    pub attempts: usize,
    fallback_used: bool,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cost_usd: Option<f64>,
    /// What a cache hit's answer would have cost, had Groq been called (`cost_usd` is 0 then).
    #[serde(skip_serializing_if = "Option::is_none")]
    saved_usd: Option<f64>,
    /// What the response cache did, for a task that caches (`CACHE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
    duration_ms: u64,
    pub stream: bool,
    /// Answered by the mock provider: logged with `"mock": true`, no usage point, no health.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mock: bool,
    /// The budget scopes charged (`user:alice`, `task:reasoning`, `global`), when `BUDGETS` set
    /// any for this request.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    budget_scopes: Vec<String>,
    /// What the request holds in its budgets, settled when it ends.
    #[serde(skip)]
    pub budget: Option<Reservation>,
    /// Groq may have billed more than it reported (a timeout, a break, a caller who left): the
    /// budgets charge at least the reservation.
    #[serde(skip)]
    pub unreported: bool,
    /// The answering model's `MODEL_PRICES` entry.
    #[serde(skip)]
    pub price: Option<Price>,
    #[serde(skip)]
    pub started_ms: u64,
}

impl RequestRecord {
    pub fn start(request_id: &str, task: &str, started_ms: u64) -> RequestRecord {
        RequestRecord {
            request_id: request_id.to_string(),
            task: task.to_string(),
            client: None,
            model: None,
            outcome: String::new(),
            status: 0,
            attempts: 0,
            fallback_used: false,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            cached_tokens: None,
            cost_usd: None,
            saved_usd: None,
            cache: None,
            duration_ms: 0,
            stream: false,
            mock: false,
            budget_scopes: Vec::new(),
            budget: None,
            unreported: false,
            price: None,
            started_ms,
        }
    }

    /// How the request ended: its outcome, status and what Groq reported it used (costed by the
    /// answering model's price, when there is one).
    pub fn finish(&mut self, outcome: &str, status: u16, usage: Usage, now_ms: u64) {
        self.outcome = outcome.to_string();
        self.status = status;
        self.fallback_used = self.attempts > 1;
        self.prompt_tokens = usage.prompt_tokens;
        self.completion_tokens = usage.completion_tokens;
        self.total_tokens = usage.total_tokens;
        self.cached_tokens = usage.cached_tokens();
        self.cost_usd = self.price.and_then(|p| p.cost(&usage));
        if self.cache == Some(CacheStatus::Hit) {
            self.saved_usd = self.cost_usd.take();
            self.cost_usd = Some(0.0);
        }
        self.duration_ms = now_ms.saturating_sub(self.started_ms);
        // A model answered but Groq's usage never came (a stream that broke before its end).
        self.unreported |= self.model.is_some() && self.total_tokens.is_none();
    }

    /// Holds this request's budgets until it ends.
    pub fn hold(&mut self, reservation: Reservation) {
        self.budget_scopes = reservation.scopes.clone();
        self.budget = Some(reservation);
    }

    /// What Groq reported this request cost: its tokens, and their price (none without one).
    pub fn charge(&self) -> Amount {
        let tokens = self.total_tokens.or_else(|| {
            let parts = [self.prompt_tokens, self.completion_tokens];
            parts.iter().flatten().copied().reduce(|a, b| a + b)
        });
        Amount {
            usd: self.cost_usd.unwrap_or(0.0),
            tokens: tokens.unwrap_or(0),
        }
    }

    /// The request line's level: errors for 5xx, warnings for a stream that broke after its 200.
    pub fn level(&self) -> Level {
        match (self.status, self.outcome.as_str()) {
            (500.., _) => Level::Error,
            (_, "ok") => Level::Info,
            (200, _) => Level::Warn,
            _ => Level::Info,
        }
    }

    /// The usage point's index: the client (Analytics Engine keeps at most 96 bytes of it).
    pub fn usage_index(&self) -> &str {
        crate::json::cut(self.client(), 24)
    }

    /// The usage point's blobs: task, model, outcome, client, request id, the budget scopes
    /// charged (space-separated), what the cache did (`hit`, `miss`, `skip`, or empty).
    pub fn usage_blobs(&self) -> [String; 7] {
        [
            self.task.clone(),
            self.model.clone().unwrap_or_default(),
            self.outcome.clone(),
            self.client().to_string(),
            self.request_id.clone(),
            self.budget_scopes.join(" "),
            self.cache.map_or("", CacheStatus::as_str).to_string(),
        ]
    }

    /// The usage point's doubles: prompt, completion and total tokens, cost in USD, duration in
    /// ms, attempts, fallback used (0 or 1), USD a cache hit saved. What Groq did not report (or
    /// no price gave) is 0; the log line says null.
    pub fn usage_doubles(&self) -> [f64; 8] {
        let count = |n: Option<u64>| n.unwrap_or(0) as f64;
        [
            count(self.prompt_tokens),
            count(self.completion_tokens),
            count(self.total_tokens),
            self.cost_usd.unwrap_or(0.0),
            self.duration_ms as f64,
            self.attempts as f64,
            f64::from(u8::from(self.fallback_used)),
            self.saved_usd.unwrap_or(0.0),
        ]
    }

    fn client(&self) -> &str {
        self.client.as_deref().unwrap_or("anonymous")
    }
}

/// Where finished records go for months: the `USAGE` dataset in the Worker, a list in tests.
pub trait UsageSink {
    fn record(&self, record: &RequestRecord);
}
