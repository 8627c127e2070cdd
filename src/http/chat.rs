//! The chat routes: `POST /v1/tasks/{task}`, answered in the router's own shape, and the
//! OpenAI/Groq SDK routes `POST [/openai]/v1/chat/completions`, where `model` names the task and
//! Groq's completion is passed through as Groq sent it.

use std::cell::RefCell;

use serde::ser::{Error, SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::groq::completion::{Completion, Usage};
use crate::groq::provider::Provider;
use crate::groq::replay;
use crate::http::auth::Caller;
use crate::http::budget::{self, maybe_billed, worst_case, BudgetStore, Refused};
use crate::http::cache::{consult, CachePlan, CacheStatus, Consulted, Hit, ResponseCache};
use crate::http::config::{Config, LoadedConfig};
use crate::http::error::ApiError;
use crate::http::jwt::TokenVerification;
use crate::http::ledger::Amount;
use crate::http::limit::RateLimiter;
use crate::http::mock::{MockProvider, Upstream};
use crate::http::record::RequestRecord;
use crate::http::relay::StreamRelay;
use crate::http::request::ChatRequest;
use crate::http::{admit, unknown_task, Body, HttpRequest, HttpResponse, Io, Reply, RequestEnv};
use crate::json::{cut, Members};
use crate::routing::chain::ModelChain;
use crate::routing::fallback::{route, Answer, Attempt, RouteContext, Routed};

/// The 200 body of `POST /v1/tasks/{task}`; Groq's JSON for the parts it came from.
#[derive(Serialize)]
struct TaskAnswer<'a> {
    content: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a RawValue>,
    model_used: &'a str,
    finish_reason: Option<&'a RawValue>,
    usage: Option<WithCost<'a>>,
    task: &'a str,
    request_id: &'a str,
    attempts: &'a [Attempt],
    /// `hit`, `miss` or `skip`, for a task that caches (`CACHE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<CacheStatus>,
}

/// Groq's `usage` as Groq sent it, with `cost_usd` added (null without a price).
struct WithCost<'a> {
    usage: &'a RawValue,
    cost: Option<f64>,
}

impl Serialize for WithCost<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let members: Members = serde_json::from_str(self.usage.get()).map_err(S::Error::custom)?;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in members.0.iter().filter(|(k, _)| k != "cost_usd") {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("cost_usd", &self.cost)?;
        map.end()
    }
}

/// Answers a chat route: `task` is the one in the path, `None` on the SDK routes.
pub(super) async fn chat<
    P: Provider,
    L: RateLimiter,
    T: TokenVerification,
    S: BudgetStore,
    C: ResponseCache,
>(
    req: HttpRequest<'_>,
    task: Option<&str>,
    config: &LoadedConfig,
    io: Io<'_, P, L, T, S, C>,
    env: &RequestEnv<'_>,
) -> Reply<Body<P>> {
    // On the task route the URL names the task, so even a refused request (bad key, bad body)
    // says which task it was for; on the SDK routes the task is known once the body is read.
    let task_named = cut(task.unwrap_or_default(), 64);
    let mut record = RequestRecord::start(env.request_id, task_named, (env.now_ms)());
    let routed = route_chat(req, task, config, io, env, &mut record).await;
    let cache_status = record.cache;
    let mut reply = match routed {
        Ok((config, Served::Routed(routed, plan))) => {
            answer(routed, task, config, plan, record, env)
        }
        Ok((config, Served::Cached(hit))) => answer_cached(hit, task, config, record, env),
        Err(error) => refuse(&error, config, record, env),
    };
    if let Some(status) = cache_status {
        let (Reply::Full(head) | Reply::Stream { head, .. }) = &mut reply;
        head.headers
            .push(("x-cache-status", status.as_str().to_string()));
    }
    reply
}

/// What a chat request got: a chain's answer (stored under the plan, if whole), or a stored one.
enum Served<B> {
    Routed(Routed<B>, Option<CachePlan>),
    Cached(Hit),
}

/// A chat request answered from the cache: the stored completion, as a whole answer or, for a
/// streamed request, as the stream Groq would have sent.
fn answer_cached<B>(
    hit: Hit,
    task: Option<&str>,
    config: &Config,
    mut record: RequestRecord,
    env: &RequestEnv<'_>,
) -> Reply<B> {
    let Hit {
        completion: stored,
        model,
        stream,
    } = hit;
    let completion = Completion::parse(&stored);
    let tokens = completion.as_ref().map(|c| c.tokens).unwrap_or_default();
    record.price = config.routing.prices.get(&model).copied();
    record.model = Some(model.clone());
    record.stream = stream.is_some();
    record.finish("ok", 200, tokens, (env.now_ms)());
    env.account(&record);
    let (content_type, body) = match (stream, task, &completion) {
        (Some(include_usage), _, _) => (
            "text/event-stream",
            replay::stream_of(&stored, include_usage).unwrap_or_default(),
        ),
        (None, Some(task), Some(completion)) => (
            "application/json",
            task_answer(completion, &model, task, &[], &record, env),
        ),
        (None, _, _) => ("application/json", stored),
    };
    let mut head = HttpResponse {
        status: 200,
        headers: vec![("content-type", content_type.to_string())],
        body,
    };
    head.headers.extend([
        ("x-model-used", model),
        ("x-task-type", record.task.clone()),
    ]);
    Reply::Full(head)
}

/// A chat request that got no answer: the error, with the routing headers it has.
fn refuse<B>(
    error: &ApiError,
    config: &LoadedConfig,
    mut record: RequestRecord,
    env: &RequestEnv<'_>,
) -> Reply<B> {
    let mut response = HttpResponse::error(error);
    let known = |c: &Config| c.routing.registry.tasks.contains_key(record.task.as_str());
    if config.as_ref().is_ok_and(known) {
        response.headers.push(("x-task-type", record.task.clone()));
    }
    if !error.attempts().is_empty() {
        let attempts = attempts_header(error.attempts());
        response.headers.push(("x-attempts", attempts));
    }
    record.attempts = error.attempts().len();
    record.unreported |= budget::maybe_billed(error.attempts());
    record.finish(
        error.code(),
        response.status,
        Usage::default(),
        (env.now_ms)(),
    );
    env.account(&record);
    Reply::Full(response)
}

/// A chat request a model answered: the answer, whole or the head of a stream and its relay.
fn answer<B>(
    routed: Routed<B>,
    task: Option<&str>,
    config: &Config,
    plan: Option<CachePlan>,
    mut record: RequestRecord,
    env: &RequestEnv<'_>,
) -> Reply<B> {
    let Routed {
        model,
        answer,
        attempts,
    } = routed;
    record.price = config.routing.prices.get(&model).copied();
    record.model = Some(model.clone());
    record.attempts = attempts.len();
    record.unreported |= maybe_billed(&attempts);
    let mut head = HttpResponse {
        status: 200,
        headers: Vec::with_capacity(6),
        body: Vec::new(),
    };
    let completion = match answer {
        Answer::Complete { body, completion } => {
            if let Some(plan) = plan.filter(|_| !record.mock) {
                let finish = completion.finish_reason.as_deref().map(RawValue::get);
                let finish = finish.map(|f| f.trim_matches('"'));
                plan.store(body.clone(), finish, (env.now_ms)(), env.cache_writes);
            }
            head.body = body;
            completion
        }
        Answer::Stream(start) => {
            head.headers.extend([
                ("content-type", "text/event-stream".to_string()),
                ("cache-control", "no-cache".to_string()),
            ]);
            routing_headers(&mut head, model, &attempts, &record);
            record.stream = true;
            let relay = StreamRelay {
                start,
                idle_timeout_ms: config.routing.attempt_timeout_ms,
                gone_ttl_ms: config.routing.model_gone_ttl_ms,
                record,
                mode: config.stream_relay,
                store: plan,
            };
            let relay = Box::new(relay);
            return Reply::Stream { head, relay };
        }
    };
    record.finish("ok", 200, completion.tokens, (env.now_ms)());
    env.account(&record);
    if let Some(task) = task {
        head.body = task_answer(&completion, &model, task, &attempts, &record, env);
    }
    head.headers
        .push(("content-type", "application/json".to_string()));
    routing_headers(&mut head, model, &attempts, &record);
    Reply::Full(head)
}

fn routing_headers(
    head: &mut HttpResponse,
    model: String,
    attempts: &[Attempt],
    record: &RequestRecord,
) {
    head.headers.extend([
        ("x-model-used", model),
        ("x-attempts", attempts_header(attempts)),
        ("x-task-type", record.task.clone()),
    ]);
}

/// `POST /v1/tasks/{task}`'s answer, in the router's own shape.
fn task_answer(
    completion: &Completion,
    model: &str,
    task: &str,
    attempts: &[Attempt],
    record: &RequestRecord,
    env: &RequestEnv<'_>,
) -> Vec<u8> {
    let cost = match record.cache {
        Some(CacheStatus::Hit) => Some(0.0),
        _ => record.price.and_then(|p| p.cost(&completion.tokens)),
    };
    let answer = TaskAnswer {
        content: completion.content.as_deref(),
        tool_calls: completion.tool_calls.as_deref(),
        reasoning: completion.reasoning.as_deref(),
        model_used: model,
        finish_reason: completion.finish_reason.as_deref(),
        usage: (completion.usage.as_deref()).map(|usage| WithCost { usage, cost }),
        task,
        request_id: env.request_id,
        attempts,
        cache: record.cache,
    };
    serde_json::to_vec(&answer).expect("answers always serialize")
}

/// Admits the caller, reads the body and the task, and walks the task's chain.
async fn route_chat<'c, P, L, T, S, C>(
    req: HttpRequest<'_>,
    task: Option<&str>,
    config: &'c LoadedConfig,
    io: Io<'_, P, L, T, S, C>,
    env: &RequestEnv<'_>,
    record: &mut RequestRecord,
) -> Result<(&'c Config, Served<Body<P>>), ApiError>
where
    P: Provider,
    L: RateLimiter,
    T: TokenVerification,
    S: BudgetStore,
    C: ResponseCache,
{
    let (config, caller) = admit(&req, config, io.tokens, env).await?;
    record.client = caller.name.clone();
    if req.overloaded {
        return Err(ApiError::Overloaded);
    }
    if !io.limiter.allow(&caller.limit_key(req.client_ip)).await {
        return Err(ApiError::ClientRateLimited {
            retry_after_secs: config.rate_limit_period_s,
        });
    }
    let mut request = read_request(&req, task, config)?;
    let task = match (task, &request.model) {
        (Some(task), _) => task.to_string(),
        (None, Some(model)) => model.to_string(),
        (None, None) => {
            let message = "`model` is required: name a task, e.g. \"fast\"";
            return Err(ApiError::invalid_field("model", message));
        }
    };
    record.task = cut(&task, 64).to_string();
    if !caller.may_call(&task) {
        let task = record.task.clone();
        return Err(ApiError::TaskNotAllowed { task });
    }
    if let Some((task, cap)) = config.max_tokens.get_key_value(task.as_str()) {
        request.apply_token_cap(*cap, &task.max_tokens_binding())?;
    }
    let chain = ModelChain::for_task(&config.routing, &task)
        .ok_or_else(|| unknown_task(config, &task, true))?;
    // A mock request runs the real chain against the mock provider, on a health book of its
    // own: it teaches the router nothing about the real models.
    let mock_health = RefCell::default();
    let (upstream, api_key) = upstream(&request, config, io.provider)?;
    let health = match upstream {
        Upstream::Mock(_) => &mock_health,
        Upstream::Real(_) => env.health,
    };
    record.mock = request.mock.is_some();
    let looked_up = (task.as_str(), &caller, &chain);
    let plan = match consult(&req, &request, looked_up, (config, io.cache), env, record).await {
        Consulted::Hit(hit) => return Ok((config, Served::Cached(hit))),
        Consulted::Store(plan) => plan,
    };
    if !record.mock {
        let held = worst_case(&request.needs, &chain, &config.routing);
        hold_budgets(
            &caller,
            req.client_ip,
            (config, io.budgets),
            held,
            env,
            record,
        )
        .await?;
    }
    let ctx = RouteContext {
        request_id: env.request_id,
        task: &task,
        url: &config.routing.chat_url,
        api_key,
        attempt_timeout_ms: config.routing.attempt_timeout_ms,
        deadline_ms: record.started_ms + config.routing.request_timeout_ms,
        gone_ttl_ms: config.routing.model_gone_ttl_ms,
        now_ms: env.now_ms,
        caller_left: env.caller_left,
        log: env.log,
        health,
        mock: record.mock,
        capabilities: &config.routing.capabilities,
        needs: &request.needs,
    };
    let routed = route(&ctx, &chain, &request.body, &upstream).await?;
    Ok((config, Served::Routed(routed, plan)))
}

/// Holds `amount` in every budget scope that applies to the request (none: no ledger is asked).
/// A mock request touches no budget.
async fn hold_budgets(
    caller: &Caller,
    ip: Option<&str>,
    (config, store): (&Config, &impl BudgetStore),
    amount: Amount,
    env: &RequestEnv<'_>,
    record: &mut RequestRecord,
) -> Result<(), ApiError> {
    let scopes = config.budgets.scopes(caller, ip, &record.task);
    if scopes.is_empty() {
        return Ok(());
    }
    let stores = (store, env.settlements);
    let fail_open = config.budgets.fail_open;
    let log = (env.log, env.request_id);
    match budget::reserve(stores, fail_open, &scopes, (env.request_id, amount), log).await {
        Ok(Some(reservation)) => record.hold(reservation),
        Ok(None) => {}
        Err(Refused::Unavailable) => return Err(ApiError::BudgetUnavailable),
        Err(Refused::Exceeded { kind, exceeded }) => {
            let now = (env.now_ms)();
            return Err(ApiError::BudgetExceeded {
                scope: kind.described(&record.task),
                exceeded,
                retry_after_secs: exceeded.resets_ms.saturating_sub(now).div_ceil(1000).max(1),
            });
        }
    }
    Ok(())
}

/// Where a request goes: Groq with the provider key, or the mock provider (where allowed).
fn upstream<'p, P>(
    request: &ChatRequest<'_>,
    config: &'p Config,
    provider: &'p P,
) -> Result<(Upstream<'p, P>, &'p str), ApiError> {
    match (&request.mock, &config.routing.groq_api_key) {
        (Some(mock), _) if !config.allow_mock => Err(ApiError::MockNotAllowed {
            param: mock.param(),
        }),
        (Some(mock), _) => {
            let mock = MockProvider::new(mock, request.prompt_bytes);
            Ok((Upstream::Mock(mock), ""))
        }
        (None, Some(key)) => Ok((Upstream::Real(provider), key.as_str())),
        (None, None) => Err(ApiError::ProviderKeyMissing),
    }
}

/// The caller's body, once what is checked before reading it holds: a key to spend, its size,
/// its media type, a known task in the path.
fn read_request<'r>(
    req: &HttpRequest<'r>,
    task: Option<&str>,
    config: &Config,
) -> Result<ChatRequest<'r>, ApiError> {
    // Without a key only a mock request can be answered, and only where mocks are allowed.
    if config.routing.groq_api_key.is_none() && !config.allow_mock {
        return Err(ApiError::ProviderKeyMissing);
    }
    if req.body_too_large || req.body.len() as u64 > config.max_request_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: config.max_request_bytes,
        });
    }
    if !is_json(req.content_type) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if let Some(task) = task.filter(|t| !config.routing.registry.tasks.contains_key(*t)) {
        return Err(unknown_task(config, task, false));
    }
    Ok(ChatRequest::parse(req.body, task.is_none())?)
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// `model=outcome(status)` per attempt, comma-separated: the attempts list in one header.
pub fn attempts_header(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| match (a.status, a.verdict.skip_reason()) {
            (Some(status), _) => format!("{}={}({status})", a.model, a.verdict.as_str()),
            (None, Some(reason)) => format!("{}=skipped({reason})", a.model),
            (None, None) => format!("{}={}", a.model, a.verdict.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
