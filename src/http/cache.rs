//! The response cache (`CACHE`): a task the operator names answers an identical request from an
//! answer it stored, without calling Groq. Opt-in per task, exact (a digest of the request as
//! Groq would receive it), private to each caller unless the task is `shared`, and only whole
//! successful answers are stored. The `ResponseCache` seam reads entries (the Workers Cache API
//! in the Worker); `CacheWrites` queues what is stored, written after the answer.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::bindings::{table, BindingValue, Bindings, Reader};
use crate::groq::body::ChatBody;
use crate::groq::replay;
use crate::http::auth::Caller;
use crate::http::config::Config;
use crate::http::record::RequestRecord;
use crate::http::request::ChatRequest;
use crate::http::{HttpRequest, RequestEnv};
use crate::json::{cut, named, JsonKind};
use crate::routing::chain::ModelChain;
use crate::routing::config::RoutingConfig;
use crate::routing::task::TaskType;

/// The longest an entry may live: a year, as HTTP caches count `max-age`.
pub const MAX_TTL_S: u64 = 365 * 24 * 3600;

/// The largest answer stored: larger ones are answered, not kept.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Request fields that do not change the answer, left out of the key: whether it is streamed
/// (a streamed request is served from a whole answer and the reverse), the stream's options, and
/// OpenAI's `user`, an end-user id for abuse reports. Every other field Groq receives is in it.
pub const KEY_IGNORES: [&str; 3] = ["stream", "stream_options", "user"];

/// How one task caches: entries live `ttl_s`; `shared`: one entry for every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CachePolicy {
    pub ttl_s: u64,
    pub shared: bool,
}

/// `CACHE`: the tasks that cache, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheConfig {
    pub tasks: BTreeMap<TaskType, CachePolicy>,
}

impl CacheConfig {
    pub fn read<B: Bindings>(r: &mut Reader<'_, B>, routing: &RoutingConfig) -> CacheConfig {
        let tasks = r
            .raw("CACHE")
            .map_or(Ok(BTreeMap::new()), |v| parse_cache(v, routing));
        CacheConfig {
            tasks: r.ok("CACHE", tasks, BTreeMap::new()),
        }
    }

    pub fn policy(&self, task: &str) -> Option<CachePolicy> {
        self.tasks.get(task).copied()
    }
}

/// Parses `CACHE`: task → seconds, or `{ ttl_s, shared }`; errors name the entry.
pub fn parse_cache(
    value: BindingValue,
    routing: &RoutingConfig,
) -> Result<BTreeMap<TaskType, CachePolicy>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PolicyEntry {
        ttl_s: u64,
        #[serde(default)]
        shared: bool,
    }
    let holds = "task → seconds, or { ttl_s, shared }";
    table("CACHE", value, holds, |members| {
        let mut tasks = BTreeMap::new();
        for (key, raw) in &members.0 {
            let at = format!("`CACHE.{}`", cut(key, 64));
            let Some((task, _)) = routing.registry.tasks.get_key_value(key.as_ref()) else {
                return Err(format!("{at}: no task of that name in `MODEL_REGISTRY`"));
            };
            let entry: PolicyEntry = match JsonKind::of(raw) {
                JsonKind::Number => serde_json::from_str(raw.get()).map(|ttl_s| PolicyEntry {
                    ttl_s,
                    shared: false,
                }),
                _ => serde_json::from_str(raw.get()),
            }
            .map_err(|e| {
                format!("{at} must be seconds (a whole number) or {{ ttl_s, shared }}: {e}")
            })?;
            if !(1..=MAX_TTL_S).contains(&entry.ttl_s) {
                return Err(format!("{at}: the TTL must be 1 to {MAX_TTL_S} seconds"));
            }
            let policy = CachePolicy {
                ttl_s: entry.ttl_s,
                shared: entry.shared,
            };
            tasks.insert(task.clone(), policy);
        }
        Ok(tasks)
    })
}

named! {
    /// What the cache did for a request: `x-cache-status`, the task answer's `cache`, the log.
    pub enum CacheStatus {
        /// Answered from a stored answer; Groq was not called.
        Hit = "hit",
        /// Not answered from the cache (none stored, or the caller said `no-cache`).
        Miss = "miss",
        /// The cache was not used: `Cache-Control: no-store`, or a mock request.
        Skip = "skip",
    }
}

/// What a caller's `Cache-Control` asks: less than the operator allows, never more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheAsk {
    /// `no-cache`: not answered from the cache; the fresh answer is stored.
    pub no_cache: bool,
    /// `no-store`: neither read nor stored.
    pub no_store: bool,
    /// `max-age=N`: no stored answer older than N seconds.
    pub max_age_s: Option<u64>,
}

impl CacheAsk {
    /// Reads the request's `Cache-Control`; unknown directives are ignored.
    pub fn parse(header: Option<&str>) -> CacheAsk {
        let mut ask = CacheAsk::default();
        for directive in header.unwrap_or("").split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            match directive.split_once('=') {
                None if directive == "no-cache" => ask.no_cache = true,
                None if directive == "no-store" => ask.no_store = true,
                Some(("max-age", n)) => {
                    let n = n.trim().trim_matches('"').parse().ok();
                    ask.max_age_s = match (ask.max_age_s, n) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                _ => {}
            }
        }
        ask
    }

    /// Whether an entry stored `age_ms` ago may answer this request, under the task's TTL.
    pub fn accepts(&self, age_ms: u64, policy: CachePolicy) -> bool {
        let limit_s = self.max_age_s.map_or(policy.ttl_s, |m| m.min(policy.ttl_s));
        !self.no_cache && age_ms < limit_s * 1000
    }
}

/// The text a request's key is the digest of: the task, whose entry it is (`None`: shared), and
/// the request as Groq receives it minus `KEY_IGNORES`, its fields in name order and each value
/// written compactly with its objects' keys in order (so two SDKs' spacing and orders meet).
pub fn key_text(task: &str, owner: Option<&str>, body: &ChatBody<'_>) -> Vec<u8> {
    struct KeyFields<'r, 'a>(&'r ChatBody<'a>);
    impl Serialize for KeyFields<'_, '_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut kept: Vec<_> = (self.0.fields.iter())
                .filter(|(name, _)| !KEY_IGNORES.contains(&name.as_ref()))
                .collect();
            kept.sort_by(|a, b| a.0.cmp(&b.0));
            let mut map = serializer.serialize_map(None)?;
            for (name, raw) in kept {
                // As a value, so spacing and the order of nested keys do not count.
                match serde_json::from_str::<serde_json::Value>(raw.get()) {
                    Ok(value) => map.serialize_entry(name, &value)?,
                    Err(_) => map.serialize_entry(name, raw)?,
                }
            }
            if let Some(cap) = self.0.filled_cap {
                map.serialize_entry("max_completion_tokens", &cap)?;
            }
            map.end()
        }
    }
    #[derive(Serialize)]
    struct Key<'r, 'a> {
        cache: u8,
        task: &'r str,
        owner: Option<&'r str>,
        request: KeyFields<'r, 'a>,
    }
    let key = Key {
        cache: 1,
        task,
        owner,
        request: KeyFields(body),
    };
    serde_json::to_vec(&key).expect("strings and raw JSON always serialize")
}

/// A stored answer: a whole chat completion as Groq sent it (or as assembled from its stream),
/// and when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub completion: Vec<u8>,
    pub stored_ms: u64,
}

/// The seam to the cache: the Workers Cache API in the Worker, memory in tests.
#[allow(async_fn_in_trait)]
pub trait ResponseCache {
    /// The key for `text`: its SHA-256, in hex.
    async fn digest(&self, text: &[u8]) -> Result<String, String>;
    /// The answer stored under `key`, if any (and not expired).
    async fn get(&self, key: &str) -> Option<CachedAnswer>;
}

/// Where answers to store go: queued while the request is answered, written after.
pub trait CacheWrites {
    fn put(&self, key: &str, answer: CachedAnswer, ttl_s: u64);
}

/// For routers without `CACHE`: never asked.
pub struct NoCache;

impl ResponseCache for NoCache {
    async fn digest(&self, _: &[u8]) -> Result<String, String> {
        Err("no cache".into())
    }
    async fn get(&self, _: &str) -> Option<CachedAnswer> {
        None
    }
}

impl CacheWrites for NoCache {
    fn put(&self, _: &str, _: CachedAnswer, _: u64) {}
}

/// Where a request's answer is to be stored, should it be whole and successful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    pub key: String,
    pub ttl_s: u64,
}

impl CachePlan {
    /// Stores `completion` if it is whole and successful (`finish_reason` `stop`, `length` or
    /// `tool_calls`) and not too large.
    pub fn store(
        &self,
        completion: Vec<u8>,
        finish_reason: Option<&str>,
        now_ms: u64,
        to: &dyn CacheWrites,
    ) {
        let whole = matches!(finish_reason, Some("stop" | "length" | "tool_calls"));
        if whole && completion.len() <= MAX_ENTRY_BYTES {
            let answer = CachedAnswer {
                completion,
                stored_ms: now_ms,
            };
            to.put(&self.key, answer, self.ttl_s);
        }
    }
}

/// A request answered from the cache: the stored completion, the model it says answered, and
/// for a streamed request whether it asked for the usage chunk.
pub struct Hit {
    pub completion: Vec<u8>,
    pub model: String,
    pub stream: Option<bool>,
}

/// What the cache says to a request.
pub enum Consulted {
    Hit(Hit),
    /// Not answered from it: where to store the answer (`None`: the task does not cache, or the
    /// caller said `no-store`, or it is a mock's).
    Store(Option<CachePlan>),
}

/// Consults the cache for a request to a task that caches (`x-cache-status` from here on). A
/// stored answer is served only while the caller's `max-age` and the task's TTL allow and when
/// the model it says answered is still in the task's chain (a registry change, `FORCE_MODEL`
/// or `DEFAULT_*` never serves an answer from a model the chain no longer holds).
pub async fn consult(
    req: &HttpRequest<'_>,
    request: &ChatRequest<'_>,
    (task, caller, chain): (&str, &Caller, &ModelChain),
    (config, cache): (&Config, &impl ResponseCache),
    env: &RequestEnv<'_>,
    record: &mut RequestRecord,
) -> Consulted {
    let Some(policy) = config.cache.policy(task) else {
        return Consulted::Store(None);
    };
    let ask = CacheAsk::parse(req.cache_control);
    if record.mock || ask.no_store {
        record.cache = Some(CacheStatus::Skip);
        return Consulted::Store(None);
    }
    let owner = (!policy.shared).then(|| caller.limit_key(req.client_ip));
    let text = key_text(task, owner.as_deref(), &request.body);
    let Ok(key) = cache.digest(&text).await else {
        record.cache = Some(CacheStatus::Skip);
        return Consulted::Store(None);
    };
    record.cache = Some(CacheStatus::Miss);
    if !ask.no_cache {
        let now = (env.now_ms)();
        let stored = cache.get(&key).await;
        let fresh = stored.filter(|s| ask.accepts(now.saturating_sub(s.stored_ms), policy));
        let answered = fresh.and_then(|s| Some((replay::model_of(&s.completion)?, s)));
        if let Some((model, stored)) = answered.filter(|(m, _)| chain.models().any(|c| c == m)) {
            record.cache = Some(CacheStatus::Hit);
            let stream = request.body.stream.then(|| include_usage(request));
            return Consulted::Hit(Hit {
                completion: stored.completion,
                model,
                stream,
            });
        }
    }
    let ttl_s = policy.ttl_s;
    Consulted::Store(Some(CachePlan { key, ttl_s }))
}

/// `stream_options.include_usage`: the caller wants the stream's usage chunk.
fn include_usage(request: &ChatRequest<'_>) -> bool {
    #[derive(Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    let options = request
        .body
        .fields
        .iter()
        .find(|(name, _)| name == "stream_options");
    let read = options.and_then(|(_, raw)| serde_json::from_str::<StreamOptions>(raw.get()).ok());
    read.and_then(|o| o.include_usage).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_asks_for_less() {
        let policy = CachePolicy {
            ttl_s: 60,
            shared: false,
        };
        let ask = CacheAsk::parse(Some("No-Cache, max-age=10"));
        assert!(ask.no_cache && !ask.no_store);
        assert_eq!(ask.max_age_s, Some(10));
        assert!(!ask.accepts(0, policy));
        let ask = CacheAsk::parse(Some("max-age=10"));
        assert!(ask.accepts(9_999, policy) && !ask.accepts(10_000, policy));
        // More than the operator allows is the operator's TTL.
        let ask = CacheAsk::parse(Some("max-age=999999, private"));
        assert!(ask.accepts(59_999, policy) && !ask.accepts(60_000, policy));
        assert!(CacheAsk::parse(Some("no-store")).no_store);
        assert_eq!(CacheAsk::parse(Some("max-age=x")), CacheAsk::default());
        assert_eq!(CacheAsk::parse(None), CacheAsk::default());
    }
}
