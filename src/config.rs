//! `Config`: every binding the router reads, parsed and validated up front so that bad
//! configuration is reported whole (naming the binding) instead of failing one request at a time.

use std::collections::BTreeMap;

use crate::auth::ClientAuth;
use crate::json::{self, Kind};
use crate::log::Level;
use crate::task::{TaskType, FALLBACK_KEY};

pub const DEFAULT_GROQ_BASE_URL: &str = "https://api.groq.com";
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 15_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 45_000;
pub const DEFAULT_MODEL_GONE_TTL_S: u64 = 3_600;
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;
pub const DEFAULT_RATE_LIMIT_PERIOD_S: u64 = 60;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub code: &'static str,
    pub binding: String,
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
    /// `ATTEMPT_TIMEOUT_MS`: one model's answer (for streams: its first event).
    pub attempt_timeout_ms: u64,
    /// `REQUEST_TIMEOUT_MS`: the whole request, every attempt included.
    pub request_timeout_ms: u64,
    /// `MODEL_GONE_TTL_S`, in ms: how long a gone model is skipped.
    pub model_gone_ttl_ms: u64,
    /// `MAX_REQUEST_BYTES`: larger bodies are refused with 413.
    pub max_request_bytes: u64,
    /// `MAX_<TASK>_TOKENS` values that are set, by task.
    pub max_tokens: BTreeMap<TaskType, u64>,
    /// `ALLOWED_ORIGINS`: browser origins that may call the router (CORS).
    pub allowed_origins: AllowedOrigins,
    /// `RATE_LIMIT_PERIOD_S`: the `CLIENT_RATE_LIMITER` period, sent as `Retry-After` on a 429.
    pub rate_limit_period_s: u64,
    /// `LOG_LEVEL`: the least severe log lines written (`warn` when unset; `info` adds one per request).
    pub log_level: Level,
}

/// Which browser origins may call the router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS: only same-origin and non-browser callers.
    #[default]
    None,
    Any,
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::None => false,
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }

    pub fn is_configured(&self) -> bool {
        *self != AllowedOrigins::None
    }

    fn parse(text: &str) -> Result<AllowedOrigins, String> {
        if text == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let mut list = Vec::new();
        for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("`ALLOWED_ORIGINS`: {origin:?} must start with https:// or http://")
                })?;
            if rest.is_empty() || rest.contains(['/', ' ', '*']) {
                return Err(format!(
                    "`ALLOWED_ORIGINS`: {origin:?} is not an origin (scheme://host[:port], no path), or use `*` alone"
                ));
            }
            list.push(origin.to_string());
        }
        Ok(if list.is_empty() {
            AllowedOrigins::None
        } else {
            AllowedOrigins::List(list)
        })
    }
}

impl Config {
    /// Reads and validates every binding; on failure returns all problems found, not just the first.
    pub fn load(bindings: &impl Bindings) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();

        let registry = match bindings.get("MODEL_REGISTRY") {
            None => {
                errors.push(ConfigError::invalid(
                    "MODEL_REGISTRY",
                    "`MODEL_REGISTRY` is not set; define it in `wrangler.toml` `[vars]` as a table of task = [models]",
                ));
                Registry::default()
            }
            Some(value) => parse_registry(value).unwrap_or_else(|e| {
                errors.push(ConfigError::invalid("MODEL_REGISTRY", e));
                Registry::default()
            }),
        };

        let force_model = optional_model(bindings, "FORCE_MODEL", &mut errors);

        let mut default_models = BTreeMap::new();
        let mut binding_owner: BTreeMap<String, &TaskType> = BTreeMap::new();
        for task in registry.tasks.keys() {
            let binding = task.default_model_binding();
            if let Some(other) = binding_owner.insert(binding.clone(), task) {
                errors.push(ConfigError::invalid(
                    "MODEL_REGISTRY",
                    format!("tasks `{other}` and `{task}` both map to `{binding}`; rename one"),
                ));
            }
            if let Some(model) = optional_model(bindings, &binding, &mut errors) {
                default_models.insert(task.clone(), model);
            }
        }
        let mut max_tokens = BTreeMap::new();
        for task in registry.tasks.keys() {
            let binding = task.max_tokens_binding();
            if text(bindings, &binding, &mut errors).is_some() {
                max_tokens.insert(
                    task.clone(),
                    whole_number(bindings, &binding, 0, 10_000_000, "tokens", &mut errors),
                );
            }
        }

        let groq_base_url = match text(bindings, "GROQ_BASE_URL", &mut errors) {
            None => DEFAULT_GROQ_BASE_URL.to_string(),
            Some(url) => parse_base_url(&url).unwrap_or_else(|e| {
                errors.push(ConfigError::invalid("GROQ_BASE_URL", e));
                String::new()
            }),
        };

        let groq_api_key = text(bindings, "GROQ_API_KEY", &mut errors);

        let keys = text(bindings, "ROUTER_API_KEYS", &mut errors);
        let allow_unauthenticated =
            match text(bindings, "ALLOW_UNAUTHENTICATED", &mut errors).as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    errors.push(ConfigError::invalid(
                        "ALLOW_UNAUTHENTICATED",
                        "`ALLOW_UNAUTHENTICATED` must be \"true\" or \"false\"",
                    ));
                    false
                }
            };
        let client_auth =
            ClientAuth::parse(keys.as_deref(), allow_unauthenticated).unwrap_or_else(|e| {
                errors.push(ConfigError::invalid("ROUTER_API_KEYS", e));
                ClientAuth::default()
            });

        let attempt_timeout_ms = whole_number(
            bindings,
            "ATTEMPT_TIMEOUT_MS",
            DEFAULT_ATTEMPT_TIMEOUT_MS,
            300_000,
            "milliseconds",
            &mut errors,
        );
        let request_timeout_ms = whole_number(
            bindings,
            "REQUEST_TIMEOUT_MS",
            DEFAULT_REQUEST_TIMEOUT_MS,
            900_000,
            "milliseconds",
            &mut errors,
        );
        let model_gone_ttl_ms = 1000
            * whole_number(
                bindings,
                "MODEL_GONE_TTL_S",
                DEFAULT_MODEL_GONE_TTL_S,
                30 * 86_400,
                "seconds",
                &mut errors,
            );
        let max_request_bytes = whole_number(
            bindings,
            "MAX_REQUEST_BYTES",
            DEFAULT_MAX_REQUEST_BYTES,
            100 << 20,
            "bytes",
            &mut errors,
        );
        let rate_limit_period_s = match text(bindings, "RATE_LIMIT_PERIOD_S", &mut errors)
            .as_deref()
        {
            None | Some("60") => 60,
            Some("10") => 10,
            Some(_) => {
                errors.push(ConfigError::invalid(
                    "RATE_LIMIT_PERIOD_S",
                    "`RATE_LIMIT_PERIOD_S` must be 10 or 60, the periods the Workers rate limiter supports",
                ));
                DEFAULT_RATE_LIMIT_PERIOD_S
            }
        };
        let log_level = match text(bindings, "LOG_LEVEL", &mut errors) {
            None => Level::Warn,
            Some(text) => Level::parse(&text).unwrap_or_else(|| {
                errors.push(ConfigError::invalid(
                    "LOG_LEVEL",
                    "`LOG_LEVEL` must be \"info\", \"warn\" or \"error\"",
                ));
                Level::Warn
            }),
        };
        let allowed_origins = match text(bindings, "ALLOWED_ORIGINS", &mut errors) {
            None => AllowedOrigins::None,
            Some(text) => AllowedOrigins::parse(&text).unwrap_or_else(|e| {
                errors.push(ConfigError::invalid("ALLOWED_ORIGINS", e));
                AllowedOrigins::None
            }),
        };

        if !errors.is_empty() && groq_api_key.is_none() {
            // Listed last: routed requests answer with the first problem, the config one;
            // `/healthz` lists them all. (Valid config without a key is answered per request.)
            errors.push(ConfigError::provider_key_missing());
        }
        if errors.is_empty() {
            Ok(Config {
                registry,
                force_model,
                default_models,
                chat_url: format!("{groq_base_url}/openai/v1/chat/completions"),
                groq_base_url,
                groq_api_key,
                client_auth,
                attempt_timeout_ms,
                request_timeout_ms,
                model_gone_ttl_ms,
                max_request_bytes,
                max_tokens,
                allowed_origins,
                rate_limit_period_s,
                log_level,
            })
        } else {
            Err(errors)
        }
    }

    /// The tasks callers may ask for, in name order.
    pub fn task_names(&self) -> Vec<&str> {
        self.registry.tasks.keys().map(TaskType::as_str).collect()
    }
}

/// A text binding, trimmed; unset or blank is `None`. An object where text belongs is an error.
fn text(bindings: &impl Bindings, name: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    match bindings.get(name)? {
        BindingValue::Text(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        BindingValue::Json(_) => {
            errors.push(ConfigError::invalid(
                name,
                format!("`{name}` must be a string"),
            ));
            None
        }
    }
}

/// A whole number from 1 to `max`, or `default` when unset.
fn whole_number(
    bindings: &impl Bindings,
    name: &str,
    default: u64,
    max: u64,
    unit: &str,
    errors: &mut Vec<ConfigError>,
) -> u64 {
    let Some(raw) = text(bindings, name, errors) else {
        return default;
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            errors.push(ConfigError::invalid(
                name,
                format!("`{name}` must be a whole number of {unit} from 1 to {max}, got `{raw}`"),
            ));
            default
        }
    }
}

fn optional_model(
    bindings: &impl Bindings,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let model = text(bindings, name, errors)?;
    match check_model_id(&model) {
        Ok(()) => Some(model),
        Err(e) => {
            errors.push(ConfigError::invalid(name, format!("`{name}`: {e}")));
            None
        }
    }
}

fn check_model_id(model: &str) -> Result<(), String> {
    if model.is_empty() {
        return Err("a model id is empty".to_string());
    }
    if model.len() > 256
        || model
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || c == '"')
    {
        return Err(format!(
            "model id `{}` is not a valid model id",
            model.escape_default()
        ));
    }
    Ok(())
}

/// Parses `MODEL_REGISTRY` from either form; the error names what is wrong and where.
pub fn parse_registry(value: BindingValue) -> Result<Registry, String> {
    let invalid = |e: json::JsonError| format!("`MODEL_REGISTRY` is not valid JSON: {e}");
    let (BindingValue::Text(text) | BindingValue::Json(text)) = value;
    json::validate(&text).map_err(invalid)?;
    // A JSON string holding the JSON (what some dashboards store): unwrap it once.
    let text = match json::as_str(&text) {
        Some(inner) => {
            let inner = inner.into_owned();
            json::validate(&inner).map_err(invalid)?;
            inner
        }
        None => text,
    };
    let kind = Kind::of(&text);
    if kind != Kind::Object {
        return Err(format!(
            "`MODEL_REGISTRY` must be an object of task → [model ids], got {}",
            kind.described()
        ));
    }
    let mut registry = Registry::default();
    for (key, models) in json::members(&text).map_err(invalid)? {
        let models = parse_model_list(&key, models)?;
        if key == FALLBACK_KEY {
            registry.fallback = models;
        } else {
            let task = TaskType::parse(&key).map_err(|e| format!("`MODEL_REGISTRY`: {e}"))?;
            registry.tasks.insert(task, models);
        }
    }
    if registry.tasks.is_empty() {
        return Err("`MODEL_REGISTRY` defines no task (only `fallback` or nothing)".to_string());
    }
    Ok(registry)
}

fn parse_model_list(key: &str, models: &str) -> Result<Vec<String>, String> {
    let kind = Kind::of(models);
    if kind != Kind::Array {
        return Err(format!(
            "`MODEL_REGISTRY.{key}` must be a list of model ids, got {}",
            kind.described()
        ));
    }
    let items = json::items(models).map_err(|e| e.to_string())?;
    if items.is_empty() {
        return Err(format!("`MODEL_REGISTRY.{key}` is an empty list"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Some(model) = json::as_str(item) else {
            return Err(format!(
                "`MODEL_REGISTRY.{key}[{i}]` must be a model id string, got {}",
                Kind::of(item).described()
            ));
        };
        let model = model.into_owned();
        check_model_id(&model).map_err(|e| format!("`MODEL_REGISTRY.{key}[{i}]`: {e}"))?;
        if out.contains(&model) {
            return Err(format!("`MODEL_REGISTRY.{key}`: duplicate entry `{model}`"));
        }
        out.push(model);
    }
    Ok(out)
}

fn parse_base_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`GROQ_BASE_URL` must start with https:// or http://, got `{url}`")
        })?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(|c: char| c.is_ascii_whitespace())
    {
        return Err(format!("`GROQ_BASE_URL` has no host: `{url}`"));
    }
    let trimmed = url.trim_end_matches('/');
    // Accept the OpenAI-SDK spelling too: the router appends `/openai/v1` itself.
    Ok(trimmed
        .strip_suffix("/openai/v1")
        .unwrap_or(trimmed)
        .to_string())
}
