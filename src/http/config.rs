//! `Config`: every binding the router reads, parsed and validated up front so that bad
//! configuration is reported whole (naming the binding) instead of failing one request at a time.
//! Each layer reads its own (`RoutingConfig`, `ClientAuth`, `AllowedOrigins`, `RelayMode`);
//! `Config::load` composes them, then checks that no value shown in answers and logs holds a key.

use std::collections::BTreeMap;

use crate::bindings::{Bindings, ConfigFinding, Reader};
use crate::http::auth::ClientAuth;
use crate::http::budget::BudgetConfig;
use crate::http::cache::CacheConfig;
use crate::http::cors::AllowedOrigins;
use crate::http::jwt::JwtKeys;
use crate::http::relay::RelayMode;
use crate::routing::config::{provider_key_missing, RoutingConfig};
use crate::routing::log::Level;
use crate::routing::task::TaskType;

pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Request bytes one isolate answers at once: 8 bodies of the largest size, thousands of small
/// ones; each byte held costs a few in the isolate (see the README), and it has 128 MB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 8 << 20;

/// What `Config::load` made of this isolate's bindings.
pub type LoadedConfig = Result<Config, Vec<ConfigFinding>>;

#[derive(Debug, Clone)]
pub struct Config {
    pub routing: RoutingConfig,
    pub client_auth: ClientAuth,
    /// `BUDGETS` and `BUDGET_FAIL_OPEN`.
    pub budgets: BudgetConfig,
    /// `CACHE`: the tasks whose answers are stored, and for how long.
    pub cache: CacheConfig,
    /// `ALLOWED_ORIGINS`: browser origins that may call the router (CORS).
    pub allowed_origins: AllowedOrigins,
    /// `STREAM_RELAY`: how committed streams are relayed.
    pub stream_relay: RelayMode,
    /// `ALLOW_MOCK`: requests may carry `mock_response` / `mock_failures`.
    pub allow_mock: bool,
    /// `MAX_REQUEST_BYTES`: larger bodies are refused with 413.
    pub max_request_bytes: u64,
    /// `MAX_INFLIGHT_BYTES`: request bytes this isolate holds at once; past it, 503.
    pub max_inflight_bytes: u64,
    /// `MAX_<TASK>_TOKENS` values that are set, by task.
    pub max_tokens: BTreeMap<TaskType, u64>,
    /// `RATE_LIMIT_PERIOD_S`: the `CLIENT_RATE_LIMITER` period, sent as `Retry-After` on a 429.
    pub rate_limit_period_s: u64,
    /// `LOG_LEVEL`: the least severe log lines written.
    pub log_level: Level,
}

impl Config {
    /// Reads and validates every binding; on failure returns all problems found, not just the first.
    pub fn load(bindings: &impl Bindings) -> LoadedConfig {
        let mut r = Reader::new(bindings);
        let routing = RoutingConfig::read(&mut r);
        let max_tokens = max_tokens(&mut r, &routing);
        let client_auth = ClientAuth::read(&mut r);
        let clients: Vec<&str> = client_auth.keys.iter().map(|(n, _)| n.as_str()).collect();
        let budgets = BudgetConfig::read(&mut r, &routing, &clients);
        let cache = CacheConfig::read(&mut r, &routing);
        let config = Config {
            client_auth,
            budgets,
            cache,
            allowed_origins: AllowedOrigins::read(&mut r),
            stream_relay: RelayMode::read(&mut r),
            allow_mock: r.flag("ALLOW_MOCK"),
            max_request_bytes: r.number(
                "MAX_REQUEST_BYTES",
                DEFAULT_MAX_REQUEST_BYTES,
                100 << 20,
                "bytes",
            ),
            max_inflight_bytes: r.number(
                "MAX_INFLIGHT_BYTES",
                DEFAULT_MAX_INFLIGHT_BYTES,
                1 << 30,
                "bytes",
            ),
            rate_limit_period_s: r.one_of(
                "RATE_LIMIT_PERIOD_S",
                &[("60", 60), ("10", 10)],
                "10 or 60, the periods the Workers rate limiter supports",
            ),
            log_level: r.one_of(
                "LOG_LEVEL",
                &[
                    ("info", Level::Info),
                    ("warn", Level::Warn),
                    ("error", Level::Error),
                ],
                "\"info\", \"warn\" or \"error\"",
            ),
            max_tokens,
            routing,
        };
        let mut problems = r.problems;
        problems.extend(config.echoed_secrets());
        if problems.is_empty() {
            return Ok(config);
        }
        if config.routing.groq_api_key.is_none() {
            // Listed last: routed requests answer with the first problem, the config one;
            // `/healthz` lists them all. (Valid config without a key is answered per request.)
            problems.push(provider_key_missing());
        }
        Err(problems)
    }

    /// Values that answers and log lines show (model ids, task names, client names) and that
    /// hold a secret: the provider key, a client key, or anything shaped like a Groq key
    /// (`gsk_…`), as when values are pasted into the wrong binding. Named, never shown.
    fn echoed_secrets(&self) -> Vec<ConfigFinding> {
        let routing = &self.routing;
        let keys = self.client_auth.keys.iter().map(|(_, key)| key);
        let mut keys: Vec<&str> = keys
            .chain(&routing.groq_api_key)
            .map(String::as_str)
            .collect();
        if let Some(JwtKeys::Secret(secret)) = self.client_auth.jwt.as_ref().map(|j| &j.keys) {
            keys.extend(std::str::from_utf8(secret).ok());
        }
        // Real keys are long; a short one (as tests use) would match half the model ids.
        let holds_key =
            |v: &str| v.contains("gsk_") || keys.iter().any(|k| k.len() >= 8 && v.contains(k));
        let registry = routing.registry.tasks.iter().flat_map(|(task, models)| {
            std::iter::once(task.as_str()).chain(models.iter().map(String::as_str))
        });
        let fallback = routing.registry.fallback.iter().map(String::as_str);
        let names = self.client_auth.keys.iter().map(|(name, _)| name.as_str());
        let mut shown: Vec<(String, Vec<&str>)> = vec![
            ("MODEL_REGISTRY".into(), registry.chain(fallback).collect()),
            (
                "FORCE_MODEL".into(),
                routing.force_model.iter().map(String::as_str).collect(),
            ),
            (
                "MODEL_CAPABILITIES".into(),
                routing.capabilities.keys().map(String::as_str).collect(),
            ),
            ("ROUTER_API_KEYS".into(), names.collect()),
        ];
        for (task, model) in &routing.default_models {
            shown.push((task.default_model_binding(), vec![model.as_str()]));
        }
        shown
            .into_iter()
            .filter(|(_, values)| values.iter().any(|v| holds_key(v)))
            .map(|(binding, _)| {
                let message = format!("`{binding}` holds what looks like an API key where a model id, task or client name belongs; keys go in `GROQ_API_KEY` and `ROUTER_API_KEYS` only");
                ConfigFinding::invalid(binding, message)
            })
            .collect()
    }
}

/// `MAX_<TASK>_TOKENS` for every task that sets one: the caller's completion limit is capped.
fn max_tokens<B: Bindings>(
    r: &mut Reader<'_, B>,
    routing: &RoutingConfig,
) -> BTreeMap<TaskType, u64> {
    let mut caps = BTreeMap::new();
    for task in routing.registry.tasks.keys() {
        let binding = task.max_tokens_binding();
        if r.text(&binding).is_some() {
            caps.insert(task.clone(), r.number(&binding, 1, 10_000_000, "tokens"));
        }
    }
    caps
}
