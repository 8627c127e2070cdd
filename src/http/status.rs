//! What the router tells about itself: `GET /healthz` (configuration problems and warnings),
//! `GET /v1/models[/{task}]` (the tasks, as OpenAI model objects) and `GET /v1/routes` (each
//! task's chain and what this isolate knows of each model's health).

use serde::Serialize;

use crate::bindings::ConfigFinding;
use crate::http::budget::{BudgetStore, ScopeKind};
use crate::http::cache::CachePolicy;
use crate::http::config::LoadedConfig;
use crate::http::error::ApiError;
use crate::http::jwt::TokenVerification;
use crate::http::ledger::LimitKind;
use crate::http::{admit, unknown_task, HttpRequest, HttpResponse, RequestEnv};
use crate::json::cut;
use crate::routing::capabilities::Capabilities;
use crate::routing::chain::{ChainSource, ModelChain};
use crate::routing::config::provider_key_missing;
use crate::routing::health::HealthReport;
use crate::routing::log::{write, Level};

pub fn healthz(config: &LoadedConfig) -> HttpResponse {
    #[derive(Serialize)]
    struct Health<'a> {
        status: &'static str,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        problems: &'a [ConfigFinding],
        /// What works but is worth knowing: models without a price.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        warnings: &'a [ConfigFinding],
    }
    let missing_key = [provider_key_missing()];
    let (problems, warnings) = match config {
        Err(problems) => (&problems[..], Vec::new()),
        Ok(c) => {
            let mut warnings = c.routing.unpriced();
            warnings.extend(c.routing.capability_findings());
            warnings.extend(c.budgets.unpriced(&c.routing));
            let keyless = c.routing.groq_api_key.is_none();
            if keyless && c.allow_mock {
                let mock_only = ConfigFinding {
                    code: "mock_only",
                    message: "the `GROQ_API_KEY` secret is not set: only mock requests (`mock_response`, `mock_failures`) can be answered".into(),
                    ..provider_key_missing()
                };
                warnings.insert(0, mock_only);
            }
            match keyless && !c.allow_mock {
                true => (&missing_key[..], warnings),
                false => (&[][..], warnings),
            }
        }
    };
    let (status, text) = match problems {
        [] => (200, "ok"),
        _ => (503, "error"),
    };
    let health = Health {
        status: text,
        problems,
        warnings: &warnings,
    };
    HttpResponse::json(status, &health)
}

/// An OpenAI model object standing for a task.
#[derive(Serialize)]
struct TaskModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> TaskModel<'a> {
    fn of(id: &'a str) -> Self {
        TaskModel {
            id,
            object: "model",
            created: 0,
            owned_by: "task-router",
        }
    }
}

#[derive(Serialize)]
struct ObjectList<T> {
    object: &'static str,
    data: Vec<T>,
}

/// `GET /v1/models[/{task}]`: the tasks, as OpenAI model objects.
pub async fn models(
    req: HttpRequest<'_>,
    one: Option<&str>,
    config: &LoadedConfig,
    tokens: &impl TokenVerification,
    env: &RequestEnv<'_>,
) -> HttpResponse {
    let (config, caller) = match admit(&req, config, tokens, env).await {
        Ok(admitted) => admitted,
        Err(e) => return HttpResponse::error(&e),
    };
    match one {
        None => {
            // A user limited by `JWT_TASKS_CLAIM` sees the tasks they may call.
            let tasks = config.routing.task_names().into_iter();
            let data = tasks.filter(|task| caller.may_call(task));
            let list = ObjectList {
                object: "list",
                data: data.map(TaskModel::of).collect(),
            };
            HttpResponse::json(200, &list)
        }
        Some(task) if config.routing.registry.tasks.contains_key(task) => {
            HttpResponse::json(200, &TaskModel::of(task))
        }
        Some(task) => HttpResponse::error(&unknown_task(config, task, true)),
    }
}

/// `GET /v1/routes`: for each task, the chain after overrides, where each entry came from, and
/// what this isolate knows of each model's health.
pub async fn routes(
    req: HttpRequest<'_>,
    config: &LoadedConfig,
    tokens: &impl TokenVerification,
    env: &RequestEnv<'_>,
) -> HttpResponse {
    #[derive(Serialize)]
    struct Routes<'a> {
        object: &'static str,
        force_model: Option<&'a str>,
        request_timeout_ms: u64,
        attempt_timeout_ms: u64,
        data: Vec<TaskRoute<'a>>,
    }
    #[derive(Serialize)]
    struct TaskRoute<'a> {
        task: &'a str,
        chain: Vec<RouteEntry<'a>>,
        /// `CACHE`: how long its answers are kept and whether callers share them; `null`: not
        /// cached.
        cache: Option<CachePolicy>,
    }
    #[derive(Serialize)]
    struct RouteEntry<'a> {
        model: &'a str,
        source: ChainSource,
        health: HealthReport<'a>,
        /// What the configuration says it can serve, with what Groq taught this isolate;
        /// `null`: unknown, so assumed able.
        capabilities: Option<Capabilities>,
    }
    let (config, cache) = match admit(&req, config, tokens, env).await {
        Ok((config, _)) => (&config.routing, &config.cache),
        Err(e) => return HttpResponse::error(&e),
    };
    let now = (env.now_ms)();
    let health = env.health.borrow();
    let chains: Vec<(&str, ModelChain)> = config
        .task_names()
        .into_iter()
        .filter_map(|task| Some((task, ModelChain::for_task(config, task)?)))
        .collect();
    let data = chains.iter().map(|(task, chain)| TaskRoute {
        task,
        cache: cache.policy(task),
        chain: (chain.entries.iter())
            .map(|e| {
                let learned = health.learned(&e.model, now);
                let known = Capabilities::merged(config.capabilities.get(&e.model), learned);
                RouteEntry {
                    model: &e.model,
                    source: e.source,
                    health: health.report(&e.model, now),
                    capabilities: (!known.is_unknown()).then_some(known),
                }
            })
            .collect(),
    });
    let routes = Routes {
        object: "list",
        force_model: config.force_model.as_deref(),
        request_timeout_ms: config.request_timeout_ms,
        attempt_timeout_ms: config.attempt_timeout_ms,
        data: data.collect(),
    };
    HttpResponse::json(200, &routes)
}

/// `GET /v1/usage`: the caller's own budget (a user's, an anonymous caller's by IP, or a client
/// key's): each limit, what is spent and held of it, what remains and when it resets. What a
/// frontend shows as "you have $0.38 left today".
pub async fn usage(
    req: HttpRequest<'_>,
    config: &LoadedConfig,
    (tokens, budgets): (&impl TokenVerification, &impl BudgetStore),
    env: &RequestEnv<'_>,
) -> HttpResponse {
    #[derive(Serialize)]
    struct OwnBudget {
        object: &'static str,
        /// `user` or `client`; `null` when no budget applies to the caller.
        scope: Option<ScopeKind>,
        limits: Vec<LimitLeft>,
    }
    #[derive(Serialize)]
    struct LimitLeft {
        limit: LimitKind,
        value: f64,
        spent: f64,
        held: f64,
        remaining: f64,
        resets_ms: u64,
        resets_at: String,
    }
    let (config, caller) = match admit(&req, config, tokens, env).await {
        Ok(admitted) => admitted,
        Err(e) => return HttpResponse::error(&e),
    };
    let Some(scope) = config.budgets.own_scope(&caller, req.client_ip) else {
        let none = OwnBudget {
            object: "budget",
            scope: None,
            limits: Vec::new(),
        };
        return HttpResponse::json(200, &none);
    };
    let limits = match budgets.usage(&scope).await {
        Ok(limits) => limits,
        Err(error) => {
            #[derive(Serialize)]
            struct UsageUnavailable<'a> {
                request_id: &'a str,
                error: &'a str,
            }
            let line = UsageUnavailable {
                request_id: env.request_id,
                error: cut(&error, 200),
            };
            write(env.log, Level::Error, "budget_unavailable", &line);
            return HttpResponse::error(&ApiError::BudgetUnavailable);
        }
    };
    let limits = limits.into_iter().map(|usage| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(usage.resets_ms);
        LimitLeft {
            limit: usage.limit,
            value: usage.value,
            spent: usage.spent,
            held: usage.held,
            remaining: usage.remaining,
            resets_ms: usage.resets_ms,
            resets_at: humantime::format_rfc3339_seconds(at).to_string(),
        }
    });
    let own = OwnBudget {
        object: "budget",
        scope: Some(scope.kind),
        limits: limits.collect(),
    };
    HttpResponse::json(200, &own)
}
