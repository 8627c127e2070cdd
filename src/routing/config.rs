//! `RoutingConfig`: the bindings routing reads — the model tables, the overrides
//! (`FORCE_MODEL`, `DEFAULT_<TASK>_MODEL`), Groq's address and key, and the timing rules.
//! `http::config::Config::load` reads it with the rest.

use std::collections::BTreeMap;

use crate::bindings::{Bindings, ConfigFinding, HttpUrl, Reader};
use crate::json::cut;
use crate::routing::capabilities::{parse_capabilities, Capabilities, Capability};
use crate::routing::chain::ModelChain;
use crate::routing::registry::{
    model_id_ok, parse_prices, parse_registry, Price, Registry, MODEL_ID_RULE,
};
use crate::routing::task::TaskType;

pub const DEFAULT_GROQ_BASE_URL: &str = "https://api.groq.com";
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 15_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 45_000;
pub const DEFAULT_MODEL_GONE_TTL_S: u64 = 3_600;
/// Groq's chat endpoint, below `GROQ_BASE_URL`.
pub const CHAT_PATH: &str = "/openai/v1/chat/completions";

/// What a missing `GROQ_API_KEY` says, in `/healthz`, config errors and routed answers alike.
pub const PROVIDER_KEY_MISSING: &str =
    "the `GROQ_API_KEY` secret is not set; run `npx wrangler secret put GROQ_API_KEY`";

pub fn provider_key_missing() -> ConfigFinding {
    ConfigFinding {
        code: "provider_key_missing",
        binding: "GROQ_API_KEY".to_string(),
        message: PROVIDER_KEY_MISSING.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
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
    /// `ATTEMPT_TIMEOUT_MS`: one model's answer (for streams: its first event, then each pause).
    pub attempt_timeout_ms: u64,
    /// `REQUEST_TIMEOUT_MS`: the whole request, every attempt included.
    pub request_timeout_ms: u64,
    /// `MODEL_GONE_TTL_S`, in ms: how long a gone model is skipped.
    pub model_gone_ttl_ms: u64,
    /// `MODEL_PRICES`: model → price, for `cost_usd`.
    pub prices: BTreeMap<String, Price>,
    /// `MODEL_CAPABILITIES`: model → what it can serve.
    pub capabilities: BTreeMap<String, Capabilities>,
}

impl RoutingConfig {
    pub fn read<B: Bindings>(r: &mut Reader<'_, B>) -> RoutingConfig {
        let registry = r.raw("MODEL_REGISTRY").map_or(
            Err("`MODEL_REGISTRY` is not set; define it in `wrangler.toml` `[vars]` as a table of task = [models]".into()),
            parse_registry,
        );
        let registry = r.ok("MODEL_REGISTRY", registry, Registry::default());
        let force_model = model(r, "FORCE_MODEL");
        let default_models = default_models(r, &registry);
        let groq_base_url = r.parsed(
            "GROQ_BASE_URL",
            parse_base_url,
            DEFAULT_GROQ_BASE_URL.into(),
        );
        let prices = r
            .raw("MODEL_PRICES")
            .map_or(Ok(BTreeMap::new()), parse_prices);
        let capabilities = r
            .raw("MODEL_CAPABILITIES")
            .map_or(Ok(BTreeMap::new()), parse_capabilities);
        RoutingConfig {
            capabilities: r.ok("MODEL_CAPABILITIES", capabilities, BTreeMap::new()),
            prices: r.ok("MODEL_PRICES", prices, BTreeMap::new()),
            chat_url: format!("{groq_base_url}{CHAT_PATH}"),
            groq_api_key: r.text("GROQ_API_KEY"),
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
            registry,
            force_model,
            default_models,
            groq_base_url,
        }
    }

    /// The tasks callers may ask for, in name order.
    pub fn task_names(&self) -> Vec<&str> {
        self.registry.tasks.keys().map(TaskType::as_str).collect()
    }

    /// Every model some task's chain can reach, with the tasks that reach it.
    pub fn models_in_use(&self) -> BTreeMap<String, Vec<&str>> {
        let mut uses: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for task in self.task_names() {
            for entry in ModelChain::for_task(self, task)
                .into_iter()
                .flat_map(|c| c.entries)
            {
                uses.entry(entry.model).or_default().push(task);
            }
        }
        uses
    }

    /// What `/healthz` says of capabilities: each model in use that `MODEL_CAPABILITIES` says
    /// nothing of (the router assumes it can serve anything), and, as facts, what no model of a
    /// task's chain can do, so a less able replacement shows before users meet it.
    pub fn capability_findings(&self) -> Vec<ConfigFinding> {
        let finding = |code, message| ConfigFinding {
            binding: "MODEL_CAPABILITIES".into(),
            code,
            message,
        };
        let in_use = self.models_in_use();
        let unknown = in_use
            .keys()
            .filter(|m| !self.capabilities.contains_key(m.as_str()));
        let mut findings: Vec<ConfigFinding> = unknown
            .map(|m| {
                let message = format!("`MODEL_CAPABILITIES` has no entry for `{}`: its capabilities are unknown, and the router assumes it can serve any request", cut(m, 64));
                finding("capabilities_unknown", message)
            })
            .collect();
        let switches = [
            Capability::Tools,
            Capability::JsonSchema,
            Capability::JsonObject,
            Capability::Images,
        ];
        // One finding per capability, naming every task whose chain lacks it.
        for capability in switches {
            let lacks = |m: &str| {
                let known = self.capabilities.get(m);
                known.is_some_and(|c| c.known_to_lack(capability))
            };
            let tasks = self.task_names().into_iter().filter(|task| {
                ModelChain::for_task(self, task).is_some_and(|chain| chain.models().all(lacks))
            });
            let tasks: Vec<String> = tasks.map(|t| format!("`{t}`")).collect();
            if let Some((last, rest)) = tasks.split_last() {
                let named = match rest {
                    [] => last.clone(),
                    _ => format!("{} or {last}", rest.join(", ")),
                };
                let message = format!(
                    "no model of {named} {}: such requests are refused with 400 `no_capable_model`",
                    capability.described()
                );
                findings.push(finding("capability_missing", message));
            }
        }
        findings
    }

    /// The models some chain can reach that `MODEL_PRICES` has no price for: their cost logs as
    /// null. A warning on `/healthz`, not an error.
    pub fn unpriced(&self) -> Vec<ConfigFinding> {
        let models = self.models_in_use().into_keys();
        let unpriced = models.filter(|m| !self.prices.contains_key(m.as_str()));
        let warning = |m: &str| ConfigFinding {
            binding: "MODEL_PRICES".into(),
            code: "price_missing",
            message: format!(
                "`MODEL_PRICES` has no price for `{}`: its cost logs as null",
                cut(m, 64)
            ),
        };
        unpriced.map(|m| warning(&m)).collect()
    }
}

/// A model id binding (`FORCE_MODEL`, `DEFAULT_<TASK>_MODEL`); unset or blank is `None`.
fn model<B: Bindings>(r: &mut Reader<'_, B>, name: &str) -> Option<String> {
    let model = r.text(name)?;
    let invalid = format!("`{name}` is not a valid model id ({MODEL_ID_RULE})");
    r.ok(
        name,
        model_id_ok(&model).then_some(Some(model)).ok_or(invalid),
        None,
    )
}

/// `DEFAULT_<TASK>_MODEL` for every task; two tasks naming one binding is an error.
fn default_models<B: Bindings>(
    r: &mut Reader<'_, B>,
    registry: &Registry,
) -> BTreeMap<TaskType, String> {
    let mut defaults = BTreeMap::new();
    let mut owners: BTreeMap<String, &TaskType> = BTreeMap::new();
    for task in registry.tasks.keys() {
        let binding = task.default_model_binding();
        if let Some(other) = owners.insert(binding.clone(), task) {
            let clash = format!("tasks `{other}` and `{task}` both map to `{binding}`; rename one");
            r.ok("MODEL_REGISTRY", Err(clash), ());
        }
        if let Some(model) = model(r, &binding) {
            defaults.insert(task.clone(), model);
        }
    }
    defaults
}

fn parse_base_url(url: &str) -> Result<String, String> {
    if HttpUrl::parse(url).is_none() {
        return Err("must start with https:// or http:// and name a host root such as https://api.groq.com (no host, credentials or spaces found in it)".into());
    }
    let trimmed = url.trim_end_matches('/');
    // Accept the OpenAI-SDK spelling too: the router appends `/openai/v1` itself.
    Ok(trimmed
        .strip_suffix("/openai/v1")
        .unwrap_or(trimmed)
        .to_string())
}
