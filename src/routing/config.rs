//! `Config`: every binding the router reads, parsed and validated up front so that bad
//! configuration is reported whole (naming the binding) instead of failing one request at a time.
//! Messages say what is wrong and what is expected, never the value that was set: any binding
//! may hold a secret pasted into the wrong place. Task names and model ids from
//! `MODEL_REGISTRY` are the exception, cut short.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::groq::completion::Usage;
use crate::groq::{cut, Kind, Members, Text};
use crate::routing::chain::ModelChain;
use crate::routing::log::Level;
use crate::routing::task::{TaskType, FALLBACK_KEY};

pub const DEFAULT_GROQ_BASE_URL: &str = "https://api.groq.com";
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 15_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 45_000;
pub const DEFAULT_MODEL_GONE_TTL_S: u64 = 3_600;
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Request bytes one isolate answers at once: 8 bodies of the largest size, thousands of small
/// ones; each byte held costs a few in the isolate (see the README), and it has 128 MB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 8 << 20;
/// Groq's chat endpoint, below `GROQ_BASE_URL`.
pub const CHAT_PATH: &str = "/openai/v1/chat/completions";

/// A binding's value as the Worker runtime hands it over: `wrangler.toml` `[vars]` tables arrive
/// as objects (given here as their JSON text), everything set with `--var`, the dashboard or
/// `wrangler secret` as text.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingValue {
    Text(String),
    Json(String),
}

/// Where bindings come from: the Worker `Env` in production, a map in tests.
pub trait Bindings {
    fn get(&self, name: &str) -> Option<BindingValue>;
}

impl Bindings for BTreeMap<&str, BindingValue> {
    fn get(&self, name: &str) -> Option<BindingValue> {
        BTreeMap::get(self, name).cloned()
    }
}

/// One thing wrong with the configuration. `code` is what a routed request answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    pub binding: String,
    pub code: &'static str,
    pub message: String,
}

/// What a missing `GROQ_API_KEY` says, in `/healthz`, config errors and routed answers alike.
pub const PROVIDER_KEY_MISSING: &str =
    "the `GROQ_API_KEY` secret is not set; run `npx wrangler secret put GROQ_API_KEY`";

impl ConfigError {
    pub fn provider_key_missing() -> Self {
        Self {
            code: "provider_key_missing",
            binding: "GROQ_API_KEY".to_string(),
            message: PROVIDER_KEY_MISSING.to_string(),
        }
    }

    fn invalid(binding: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "config_invalid",
            binding: binding.into(),
            message: message.into(),
        }
    }
}

/// Task → models in priority order, plus the universal `fallback` list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    pub tasks: BTreeMap<TaskType, Vec<String>>,
    pub fallback: Vec<String>,
}

/// A model's price in USD per million tokens (`MODEL_PRICES`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    /// What `usage` cost: prompt tokens at `input`, completion tokens at `output`. `None` unless
    /// Groq reported both counts.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let (prompt, completion) = (usage.prompt_tokens?, usage.completion_tokens?);
        Some((prompt as f64 * self.input + completion as f64 * self.output) / 1e6)
    }
}

/// `ROUTER_API_KEYS` and `ALLOW_UNAUTHENTICATED`: who may spend the provider key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// `(name, key)`: logs and rate limits use the name, never the key.
    pub keys: Vec<(String, String)>,
    pub allow_unauthenticated: bool,
    /// `JWT_*`: end users' tokens from a sign-in provider.
    pub jwt: Option<JwtConfig>,
}

/// How end users' JWTs are verified (`JWT_*` bindings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub keys: JwtKeys,
    /// `JWT_ISSUER`: the exact `iss` accepted.
    pub issuer: String,
    /// `JWT_AUDIENCE`: an `aud` must be one of these; empty with `JWT_ALLOW_ANY_AUDIENCE`.
    pub audiences: Vec<String>,
    /// `JWT_CLIENT_CLAIM`: the claim naming the user (default `sub`).
    pub client_claim: String,
    /// `JWT_TASKS_CLAIM`: the claim listing the tasks a user may call, if set.
    pub tasks_claim: Option<String>,
}

/// Where the keys that sign users' tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeys {
    /// `JWT_JWKS_URL`: the provider's RS256 / ES256 public keys.
    Jwks(String),
    /// `JWT_SECRET`: a shared HS256 key.
    Secret(Vec<u8>),
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKeys::Jwks(url) => f.debug_tuple("Jwks").field(url).finish(),
            JwtKeys::Secret(_) => f.write_str("Secret(..)"),
        }
    }
}

/// The shortest `JWT_SECRET` accepted: HS256's key should be as long as its hash.
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// Which browser origins may call the router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS: only same-origin and non-browser callers.
    #[default]
    None,
    Any,
    List(Vec<String>),
}

/// `STREAM_RELAY`: how a committed stream's bytes reach the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// The runtime pipes Groq's bytes to the caller natively; the relay reads a copy in batches.
    Pipe,
    /// Every chunk passes through the relay before the caller sees it.
    Filter,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub registry: Registry,
    /// `FORCE_MODEL`: every task uses exactly this model.
    pub force_model: Option<String>,
    /// `DEFAULT_<TASK>_MODEL` values that are set, by task.
    pub default_models: BTreeMap<TaskType, String>,
    /// Host root, without a trailing `/`.
    pub groq_base_url: String,
    /// `{groq_base_url}/openai/v1/chat/completions`, built once rather than per request.
    pub chat_url: String,
    pub groq_api_key: Option<String>,
    pub client_auth: ClientAuth,
    /// `ATTEMPT_TIMEOUT_MS`: one model's answer (for streams: its first event, then each pause).
    pub attempt_timeout_ms: u64,
    /// `REQUEST_TIMEOUT_MS`: the whole request, every attempt included.
    pub request_timeout_ms: u64,
    /// `MODEL_GONE_TTL_S`, in ms: how long a gone model is skipped.
    pub model_gone_ttl_ms: u64,
    /// `MAX_REQUEST_BYTES`: larger bodies are refused with 413.
    pub max_request_bytes: u64,
    /// `MAX_INFLIGHT_BYTES`: request bytes this isolate holds at once; past it, 503.
    pub max_inflight_bytes: u64,
    /// `MAX_<TASK>_TOKENS` values that are set, by task.
    pub max_tokens: BTreeMap<TaskType, u64>,
    /// `ALLOWED_ORIGINS`: browser origins that may call the router (CORS).
    pub allowed_origins: AllowedOrigins,
    /// `RATE_LIMIT_PERIOD_S`: the `CLIENT_RATE_LIMITER` period, sent as `Retry-After` on a 429.
    pub rate_limit_period_s: u64,
    /// `LOG_LEVEL`: the least severe log lines written.
    pub log_level: Level,
    /// `MODEL_PRICES`: model → price, for `cost_usd`.
    pub prices: BTreeMap<String, Price>,
    /// `ALLOW_MOCK`: requests may carry `mock_response` / `mock_failures`.
    pub allow_mock: bool,
    /// `STREAM_RELAY`: how committed streams are relayed.
    pub stream_relay: RelayMode,
}

/// Reads bindings, collecting every problem rather than stopping at the first.
struct Reader<'b, B> {
    bindings: &'b B,
    errors: Vec<ConfigError>,
}

impl<B: Bindings> Reader<'_, B> {
    /// The value, or `default` with the problem noted against `binding`.
    fn ok<T>(&mut self, binding: &str, parsed: Result<T, String>, default: T) -> T {
        parsed.unwrap_or_else(|e| {
            self.errors.push(ConfigError::invalid(binding, e));
            default
        })
    }

    /// A text binding, trimmed; unset or blank is `None`. An object where text belongs is an error.
    fn text(&mut self, name: &str) -> Option<String> {
        match self.bindings.get(name)? {
            BindingValue::Text(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            BindingValue::Json(_) => self.ok(name, Err(format!("`{name}` must be a string")), None),
        }
    }

    /// A whole number from 1 to `max`, or `default` when unset.
    fn number(&mut self, name: &str, default: u64, max: u64, unit: &str) -> u64 {
        let parsed = match self.text(name) {
            None => Some(default),
            Some(raw) => raw.parse().ok().filter(|n| (1..=max).contains(n)),
        };
        let message = format!("`{name}` must be a whole number of {unit} from 1 to {max}");
        self.ok(name, parsed.ok_or(message), default)
    }

    /// One of `choices` (any case), or the first of them when unset.
    fn one_of<T: Copy>(&mut self, name: &str, choices: &[(&str, T)], expected: &str) -> T {
        let given = self.text(name);
        let given = given.as_deref().unwrap_or(choices[0].0);
        let found = choices
            .iter()
            .find(|(text, _)| text.eq_ignore_ascii_case(given));
        let found = found.map(|(_, value)| *value);
        self.ok(
            name,
            found.ok_or(format!("`{name}` must be {expected}")),
            choices[0].1,
        )
    }

    /// A value that `parse` reads, or `default` when unset.
    fn parsed<T>(&mut self, name: &str, parse: fn(&str) -> Result<T, String>, default: T) -> T {
        match self.text(name) {
            None => default,
            Some(text) => self.ok(
                name,
                parse(&text).map_err(|e| format!("`{name}` {e}")),
                default,
            ),
        }
    }

    fn model(&mut self, name: &str) -> Option<String> {
        let model = self.text(name)?;
        let invalid = format!("`{name}` is not a valid model id ({MODEL_ID_RULE})");
        self.ok(
            name,
            model_id_ok(&model).then_some(Some(model)).ok_or(invalid),
            None,
        )
    }
}

const MODEL_ID_RULE: &str = "1 to 256 characters, no spaces, quotes or control characters";

fn model_id_ok(model: &str) -> bool {
    let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || c == '"';
    !model.is_empty() && model.len() <= 256 && !model.contains(bad)
}

impl Config {
    /// Reads and validates every binding; on failure returns all problems found, not just the first.
    pub fn load(bindings: &impl Bindings) -> Result<Config, Vec<ConfigError>> {
        let mut r = Reader {
            bindings,
            errors: Vec::new(),
        };
        let registry = bindings.get("MODEL_REGISTRY").map_or(
            Err("`MODEL_REGISTRY` is not set; define it in `wrangler.toml` `[vars]` as a table of task = [models]".into()),
            parse_registry,
        );
        let registry = r.ok("MODEL_REGISTRY", registry, Registry::default());
        let force_model = r.model("FORCE_MODEL");
        let (mut default_models, mut max_tokens) = (BTreeMap::new(), BTreeMap::new());
        let mut owners: BTreeMap<String, &TaskType> = BTreeMap::new();
        for task in registry.tasks.keys() {
            let binding = task.default_model_binding();
            if let Some(other) = owners.insert(binding.clone(), task) {
                let clash =
                    format!("tasks `{other}` and `{task}` both map to `{binding}`; rename one");
                r.ok("MODEL_REGISTRY", Err(clash), ());
            }
            if let Some(model) = r.model(&binding) {
                default_models.insert(task.clone(), model);
            }
            let binding = task.max_tokens_binding();
            if r.text(&binding).is_some() {
                max_tokens.insert(task.clone(), r.number(&binding, 1, 10_000_000, "tokens"));
            }
        }
        let groq_base_url = r.parsed(
            "GROQ_BASE_URL",
            parse_base_url,
            DEFAULT_GROQ_BASE_URL.into(),
        );
        let groq_api_key = r.text("GROQ_API_KEY");
        let keys = r.text("ROUTER_API_KEYS");
        let client_auth = ClientAuth {
            allow_unauthenticated: r.one_of(
                "ALLOW_UNAUTHENTICATED",
                &[("false", false), ("true", true)],
                "\"true\" or \"false\"",
            ),
            keys: r.ok(
                "ROUTER_API_KEYS",
                parse_client_keys(keys.as_deref()),
                Vec::new(),
            ),
            jwt: jwt_config(&mut r),
        };
        let config = Config {
            chat_url: format!("{groq_base_url}{CHAT_PATH}"),
            attempt_timeout_ms: r.number(
                "ATTEMPT_TIMEOUT_MS",
                DEFAULT_ATTEMPT_TIMEOUT_MS,
                300_000,
                "milliseconds",
            ),
            request_timeout_ms: r.number(
                "REQUEST_TIMEOUT_MS",
                DEFAULT_REQUEST_TIMEOUT_MS,
                900_000,
                "milliseconds",
            ),
            model_gone_ttl_ms: 1000
                * r.number(
                    "MODEL_GONE_TTL_S",
                    DEFAULT_MODEL_GONE_TTL_S,
                    30 * 86_400,
                    "seconds",
                ),
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
            allowed_origins: r.parsed("ALLOWED_ORIGINS", parse_origins, AllowedOrigins::None),
            allow_mock: r.one_of(
                "ALLOW_MOCK",
                &[("false", false), ("true", true)],
                "\"true\" or \"false\"",
            ),
            stream_relay: r.one_of(
                "STREAM_RELAY",
                &[("pipe", RelayMode::Pipe), ("filter", RelayMode::Filter)],
                "\"pipe\" or \"filter\"",
            ),
            prices: match bindings.get("MODEL_PRICES") {
                None => BTreeMap::new(),
                Some(value) => r.ok("MODEL_PRICES", parse_prices(value), BTreeMap::new()),
            },
            registry,
            force_model,
            default_models,
            groq_base_url,
            groq_api_key,
            client_auth,
            max_tokens,
        };
        r.errors.extend(config.echoed_secrets());
        let mut errors = r.errors;
        if errors.is_empty() {
            return Ok(config);
        }
        if config.groq_api_key.is_none() {
            // Listed last: routed requests answer with the first problem, the config one;
            // `/healthz` lists them all. (Valid config without a key is answered per request.)
            errors.push(ConfigError::provider_key_missing());
        }
        Err(errors)
    }

    /// Values that answers and log lines show (model ids, task names, client names) and that
    /// hold a secret: the provider key, a client key, or anything shaped like a Groq key
    /// (`gsk_…`), as when values are pasted into the wrong binding. Named, never shown.
    fn echoed_secrets(&self) -> Vec<ConfigError> {
        let keys = self.client_auth.keys.iter().map(|(_, key)| key);
        let mut keys: Vec<&str> = keys.chain(&self.groq_api_key).map(String::as_str).collect();
        if let Some(JwtKeys::Secret(secret)) = self.client_auth.jwt.as_ref().map(|j| &j.keys) {
            keys.extend(std::str::from_utf8(secret).ok());
        }
        // Real keys are long; a short one (as tests use) would match half the model ids.
        let holds_key =
            |v: &str| v.contains("gsk_") || keys.iter().any(|k| k.len() >= 8 && v.contains(k));
        let registry = self.registry.tasks.iter();
        let registry = registry.flat_map(|(task, models)| {
            std::iter::once(task.as_str()).chain(models.iter().map(String::as_str))
        });
        let names = self.client_auth.keys.iter().map(|(name, _)| name.as_str());
        let mut shown: Vec<(String, Vec<&str>)> = vec![
            (
                "MODEL_REGISTRY".into(),
                registry
                    .chain(self.registry.fallback.iter().map(String::as_str))
                    .collect(),
            ),
            (
                "FORCE_MODEL".into(),
                self.force_model.iter().map(String::as_str).collect(),
            ),
            ("ROUTER_API_KEYS".into(), names.collect()),
        ];
        for (task, model) in &self.default_models {
            shown.push((task.default_model_binding(), vec![model.as_str()]));
        }
        shown
            .into_iter()
            .filter(|(_, values)| values.iter().any(|v| holds_key(v)))
            .map(|(binding, _)| {
                let message = format!("`{binding}` holds what looks like an API key where a model id, task or client name belongs; keys go in `GROQ_API_KEY` and `ROUTER_API_KEYS` only");
                ConfigError::invalid(binding, message)
            })
            .collect()
    }

    /// The models some chain can reach that `MODEL_PRICES` has no price for: their cost logs as
    /// null. A warning on `/healthz`, not an error.
    pub fn unpriced(&self) -> Vec<ConfigError> {
        let chains = self
            .task_names()
            .into_iter()
            .filter_map(|t| ModelChain::for_task(self, t));
        let chains: Vec<ModelChain> = chains.collect();
        let models: BTreeSet<&str> = chains.iter().flat_map(ModelChain::models).collect();
        let unpriced = models.into_iter().filter(|m| !self.prices.contains_key(*m));
        let warning = |m: &str| ConfigError {
            binding: "MODEL_PRICES".into(),
            code: "price_missing",
            message: format!(
                "`MODEL_PRICES` has no price for `{}`: its cost logs as null",
                cut(m, 64)
            ),
        };
        unpriced.map(warning).collect()
    }

    /// The tasks callers may ask for, in name order.
    pub fn task_names(&self) -> Vec<&str> {
        self.registry.tasks.keys().map(TaskType::as_str).collect()
    }
}

/// A table binding (`[vars.NAME]` in `wrangler.toml`, or its JSON as text, even a JSON string
/// holding it, as some dashboards store it): its members, each key once, handed to `read`.
fn table<T>(
    name: &str,
    value: BindingValue,
    holds: &str,
    read: impl FnOnce(&Members) -> Result<T, String>,
) -> Result<T, String> {
    let (BindingValue::Text(text) | BindingValue::Json(text)) = value;
    let invalid = |e: serde_json::Error| format!("`{name}` is not valid JSON: {e}");
    let mut raw: &RawValue = serde_json::from_str(&text).map_err(invalid)?;
    let inner: String;
    if Kind::of(raw) == Kind::String {
        inner = serde_json::from_str(raw.get()).map_err(invalid)?;
        raw = serde_json::from_str(&inner).map_err(invalid)?;
    }
    if Kind::of(raw) != Kind::Object {
        let got = Kind::of(raw).described();
        return Err(format!("`{name}` must be an object of {holds}, got {got}"));
    }
    let members: Members = serde_json::from_str(raw.get()).map_err(invalid)?;
    match members.duplicate() {
        Some(key) => Err(format!("`{name}` names `{}` twice", cut(key, 64))),
        None => read(&members),
    }
}

/// Parses `MODEL_REGISTRY` from either form; the error names what is wrong and where.
pub fn parse_registry(value: BindingValue) -> Result<Registry, String> {
    table("MODEL_REGISTRY", value, "task → [model ids]", |members| {
        let mut registry = Registry::default();
        for (key, models) in &members.0 {
            let models = parse_model_list(key, models)?;
            if key == FALLBACK_KEY {
                registry.fallback = models;
            } else {
                let task = TaskType::parse(key).map_err(|e| format!("`MODEL_REGISTRY`: {e}"))?;
                registry.tasks.insert(task, models);
            }
        }
        match registry.tasks.is_empty() {
            true => Err("`MODEL_REGISTRY` defines no task (only `fallback` or nothing)".into()),
            false => Ok(registry),
        }
    })
}

/// Parses `MODEL_PRICES`: model id → `{"input": …, "output": …}`, USD per million tokens.
pub fn parse_prices(value: BindingValue) -> Result<BTreeMap<String, Price>, String> {
    let holds = "model id → {\"input\": USD per 1M prompt tokens, \"output\": USD per 1M completion tokens}";
    table("MODEL_PRICES", value, holds, |members| {
        let mut prices = BTreeMap::new();
        for (model, raw) in &members.0 {
            let at = format!("`MODEL_PRICES.{}`", cut(model, 64));
            if !model_id_ok(model) {
                return Err(format!("{at} is not a valid model id ({MODEL_ID_RULE})"));
            }
            match serde_json::from_str::<Price>(raw.get()) {
                Ok(p) if [p.input, p.output].iter().all(|v| v.is_finite() && *v >= 0.0) => {
                    prices.insert(model.to_string(), p);
                }
                _ => return Err(format!("{at} must be {{\"input\": n, \"output\": n}}, USD per million tokens, 0 or more")),
            }
        }
        Ok(prices)
    })
}

fn parse_model_list(key: &str, models: &RawValue) -> Result<Vec<String>, String> {
    let key = cut(key, 64);
    let items: Vec<&RawValue> = match Kind::of(models) {
        Kind::List => serde_json::from_str(models.get()).map_err(|e| e.to_string())?,
        kind => {
            return Err(format!(
                "`MODEL_REGISTRY.{key}` must be a list of model ids, got {}",
                kind.described()
            ))
        }
    };
    if items.is_empty() {
        return Err(format!("`MODEL_REGISTRY.{key}` is an empty list"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Ok(Text(model)) = serde_json::from_str(item.get()) else {
            return Err(format!(
                "`MODEL_REGISTRY.{key}[{i}]` must be a model id string, got {}",
                Kind::of(item).described()
            ));
        };
        let shown = cut(&model, 64);
        if model.is_empty() {
            return Err(format!("`MODEL_REGISTRY.{key}[{i}]`: a model id is empty"));
        }
        if !model_id_ok(&model) {
            return Err(format!(
                "`MODEL_REGISTRY.{key}[{i}]`: `{shown}` is not a valid model id ({MODEL_ID_RULE})"
            ));
        }
        if out.iter().any(|m| *m == model) {
            return Err(format!("`MODEL_REGISTRY.{key}`: duplicate entry `{shown}`"));
        }
        out.push(model.into_owned());
    }
    Ok(out)
}

/// `ROUTER_API_KEYS`: comma-separated, each `key` or `name:key`. Errors never echo a key.
pub(crate) fn parse_client_keys(keys: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut parsed: Vec<(String, String)> = Vec::new();
    for (i, entry) in keys.unwrap_or("").split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let (name, key) = match entry.split_once(':') {
            Some((name, key)) => (name.trim().to_string(), key.trim().to_string()),
            None => (format!("client-{}", i + 1), entry.to_string()),
        };
        if key.is_empty() || name.is_empty() {
            return Err(format!(
                "`ROUTER_API_KEYS` entry {} is `name:` with no key or `:key` with no name",
                i + 1
            ));
        }
        if parsed.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "`ROUTER_API_KEYS` entry {} reuses the name of an earlier one",
                i + 1
            ));
        }
        parsed.push((name, key));
    }
    Ok(parsed)
}

fn parse_origins(text: &str) -> Result<AllowedOrigins, String> {
    if text == "*" {
        return Ok(AllowedOrigins::Any);
    }
    let mut list = Vec::new();
    for (i, origin) in text.split(',').map(str::trim).enumerate() {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match host {
            _ if origin.is_empty() => {}
            Some(host) if !host.is_empty() && !host.contains(['/', ' ', '*', '@']) => {
                list.push(origin.to_string())
            }
            _ => return Err(format!("entry {} is not an origin: https:// or http://, a host and maybe a port, no path; or `*` alone", i + 1)),
        }
    }
    Ok(match list.is_empty() {
        true => AllowedOrigins::None,
        false => AllowedOrigins::List(list),
    })
}

/// The `JWT_*` bindings: `None` when none of the key sources is set. Half a configuration is an
/// error naming the binding, never an open door.
fn jwt_config<B: Bindings>(r: &mut Reader<'_, B>) -> Option<JwtConfig> {
    let url = r.text("JWT_JWKS_URL");
    let secret = r.text("JWT_SECRET");
    let issuer = r.text("JWT_ISSUER");
    let audience = r.text("JWT_AUDIENCE");
    let any_audience = r.one_of(
        "JWT_ALLOW_ANY_AUDIENCE",
        &[("false", false), ("true", true)],
        "\"true\" or \"false\"",
    );
    let client_claim = r.text("JWT_CLIENT_CLAIM");
    let tasks_claim = r.text("JWT_TASKS_CLAIM");
    let keys = match (url, secret) {
        (Some(_), Some(_)) => {
            let both = "set `JWT_JWKS_URL` (RS256/ES256 keys) or `JWT_SECRET` (HS256), not both";
            return r.ok("JWT_SECRET", Err(both.into()), None);
        }
        (Some(url), None) => JwtKeys::Jwks(r.ok("JWT_JWKS_URL", parse_jwks_url(&url), url)),
        (None, Some(secret)) if secret.len() < JWT_SECRET_MIN_BYTES => {
            let short = format!("`JWT_SECRET` must be at least {JWT_SECRET_MIN_BYTES} bytes");
            return r.ok("JWT_SECRET", Err(short), None);
        }
        (None, Some(secret)) => JwtKeys::Secret(secret.into_bytes()),
        (None, None) => {
            let set = [
                ("JWT_ISSUER", issuer.is_some()),
                ("JWT_AUDIENCE", audience.is_some()),
                ("JWT_ALLOW_ANY_AUDIENCE", any_audience),
                ("JWT_CLIENT_CLAIM", client_claim.is_some()),
                ("JWT_TASKS_CLAIM", tasks_claim.is_some()),
            ];
            if let Some((binding, _)) = set.iter().find(|(_, set)| *set) {
                let half = format!("`{binding}` is set but neither `JWT_JWKS_URL` nor `JWT_SECRET` is: tokens cannot be verified without keys");
                r.ok(binding, Err(half), ());
            }
            return None;
        }
    };
    let Some(issuer) = issuer else {
        let missing = "`JWT_ISSUER` is required with `JWT_JWKS_URL` or `JWT_SECRET`: the exact `iss` to accept";
        return r.ok("JWT_ISSUER", Err(missing.into()), None);
    };
    let audiences: Vec<String> = audience
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if audiences.is_empty() && !any_audience {
        let missing = "`JWT_AUDIENCE` is required (the `aud` to accept, comma-separated), unless `JWT_ALLOW_ANY_AUDIENCE = \"true\"`";
        return r.ok("JWT_AUDIENCE", Err(missing.into()), None);
    }
    Some(JwtConfig {
        keys,
        issuer,
        audiences,
        client_claim: client_claim.unwrap_or_else(|| "sub".into()),
        tasks_claim,
    })
}

/// `JWT_JWKS_URL`: https, or http to this machine only (a local test provider); keys fetched in
/// the clear could be swapped on the way.
fn parse_jwks_url(url: &str) -> Result<String, String> {
    let host = |rest: &str| {
        rest.split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let host = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => host(rest),
        (_, Some(rest)) => Some(host(rest))
            .filter(|h| {
                ["127.0.0.1", "localhost", "[::1]"]
                    .contains(&h.rsplit_once(':').map_or(h.as_str(), |(h, _)| h))
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    if host.is_empty() || host.contains('@') || url.contains(char::is_whitespace) {
        return Err("`JWT_JWKS_URL` must be an https:// URL of your sign-in provider's JWKS (http:// only to 127.0.0.1 or localhost), without credentials".into());
    }
    Ok(url.to_string())
}

fn parse_base_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.and_then(|r| r.split('/').next()).unwrap_or_default();
    if host.is_empty() || host.contains('@') || url.contains(char::is_whitespace) {
        return Err("must start with https:// or http:// and name a host root such as https://api.groq.com (no host, credentials or spaces found in it)".into());
    }
    let trimmed = url.trim_end_matches('/');
    // Accept the OpenAI-SDK spelling too: the router appends `/openai/v1` itself.
    Ok(trimmed
        .strip_suffix("/openai/v1")
        .unwrap_or(trimmed)
        .to_string())
}
