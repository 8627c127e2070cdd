//! The chat routes: `POST /v1/tasks/{task}`, answered in the router's own shape, and the
//! OpenAI/Groq SDK routes `POST [/openai]/v1/chat/completions`, where `model` names the task and
//! Groq's completion is passed through as Groq sent it.

use std::cell::RefCell;

use serde::ser::{Error, SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::groq::chat::ChatRequest;
use crate::groq::completion::Usage;
use crate::groq::mock::{MockProvider, Upstream};
use crate::groq::provider::Provider;
use crate::groq::{cut, Members};
use crate::http::error::ApiError;
use crate::http::jwt::TokenCrypto;
use crate::http::limit::RateLimiter;
use crate::http::relay::{RequestSummary, StreamRelay};
use crate::http::{
    admit, unknown_task, Body, HttpRequest, HttpResponse, Loaded, Reply, RequestEnv,
};
use crate::routing::chain::ModelChain;
use crate::routing::config::Config;
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
pub(super) async fn chat<P: Provider, L: RateLimiter, C: TokenCrypto>(
    req: HttpRequest<'_>,
    task: Option<&str>,
    config: &Loaded,
    seams: (&P, &L, &C),
    env: &RequestEnv<'_>,
) -> Reply<Body<P>> {
    // On the task route the URL names the task, so even a refused request (bad key, bad body)
    // says which task it was for; on the SDK routes the task is known once the body is read.
    let mut summary = RequestSummary {
        request_id: env.request_id.to_string(),
        task: cut(task.unwrap_or_default(), 64).to_string(),
        client: None,
        model: None,
        price: None,
        attempts: 0,
        stream: false,
        mock: false,
        started_ms: (env.now_ms)(),
    };
    let routed = route_chat(req, task, config, seams, env, &mut summary).await;
    let (config, routed) = match routed {
        Ok(routed) => routed,
        Err(error) => {
            let mut response = HttpResponse::error(&error);
            if config
                .as_ref()
                .is_ok_and(|c| c.registry.tasks.contains_key(summary.task.as_str()))
            {
                response.headers.push(("x-task-type", summary.task.clone()));
            }
            if !error.attempts().is_empty() {
                response
                    .headers
                    .push(("x-attempts", attempts_header(error.attempts())));
            }
            summary.attempts = error.attempts().len();
            summary.close(env, error.code(), response.status, Usage::default());
            return Reply::Full(response);
        }
    };
    let Routed {
        model,
        answer,
        attempts,
    } = routed;
    summary.price = config.prices.get(&model).copied();
    summary.model = Some(model.clone());
    summary.attempts = attempts.len();
    let routing_headers = [
        ("x-attempts", attempts_header(&attempts)),
        ("x-task-type", summary.task.clone()),
    ];
    match answer {
        Answer::Complete { body, completion } => {
            summary.close(env, "ok", 200, completion.tokens);
            let cost = summary.price.and_then(|p| p.cost(&completion.tokens));
            let mut response = match task {
                Some(task) => HttpResponse::json(
                    200,
                    &TaskAnswer {
                        content: completion.content.as_deref(),
                        tool_calls: completion.tool_calls.as_deref(),
                        reasoning: completion.reasoning.as_deref(),
                        model_used: &model,
                        finish_reason: completion.finish_reason.as_deref(),
                        usage: completion
                            .usage
                            .as_deref()
                            .map(|usage| WithCost { usage, cost }),
                        task,
                        request_id: env.request_id,
                        attempts: &attempts,
                    },
                ),
                None => HttpResponse::json_bytes(200, body),
            };
            response.headers.push(("x-model-used", model));
            response.headers.extend(routing_headers);
            Reply::Full(response)
        }
        Answer::Stream(start) => {
            let mut head = HttpResponse {
                status: 200,
                headers: vec![
                    ("content-type", "text/event-stream".to_string()),
                    ("cache-control", "no-cache".to_string()),
                    ("x-model-used", model),
                ],
                body: Vec::new(),
            };
            head.headers.extend(routing_headers);
            summary.stream = true;
            let relay = StreamRelay {
                start,
                idle_timeout_ms: config.attempt_timeout_ms,
                gone_ttl_ms: config.model_gone_ttl_ms,
                summary,
                mode: config.stream_relay,
            };
            Reply::Stream {
                head,
                relay: Box::new(relay),
            }
        }
    }
}

/// Admits the caller, reads the body and the task, and walks the task's chain.
async fn route_chat<'c, P: Provider, L: RateLimiter, C: TokenCrypto>(
    req: HttpRequest<'_>,
    task: Option<&str>,
    config: &'c Loaded,
    (provider, limiter, crypto): (&P, &L, &C),
    env: &RequestEnv<'_>,
    summary: &mut RequestSummary,
) -> Result<(&'c Config, Routed<Body<P>>), ApiError> {
    let (config, caller) = admit(&req, config, crypto, env).await?;
    summary.client = caller.name.clone();
    if req.overloaded {
        return Err(ApiError::Overloaded);
    }
    if !limiter.allow(&caller.limit_key(req.client_ip)).await {
        return Err(ApiError::ClientRateLimited {
            retry_after_secs: config.rate_limit_period_s,
        });
    }
    // Without a key only a mock request can be answered, and only where mocks are allowed.
    if config.groq_api_key.is_none() && !config.allow_mock {
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
    if let Some(task) = task.filter(|t| !config.registry.tasks.contains_key(*t)) {
        return Err(unknown_task(config, task, false));
    }
    let mut request = ChatRequest::parse(req.body, task.is_none())?;
    let task = match (task, &request.model) {
        (Some(task), _) => task.to_string(),
        (None, Some(model)) => model.to_string(),
        (None, None) => {
            return Err(ApiError::invalid_field(
                "model",
                "`model` is required: name a task, e.g. \"fast\"",
            ))
        }
    };
    summary.task = cut(&task, 64).to_string();
    if !caller.may_call(&task) {
        return Err(ApiError::TaskNotAllowed {
            task: summary.task.clone(),
        });
    }
    if let Some((task, cap)) = config.max_tokens.get_key_value(task.as_str()) {
        request.apply_token_cap(*cap, &task.max_tokens_binding())?;
    }
    let chain =
        ModelChain::for_task(config, &task).ok_or_else(|| unknown_task(config, &task, true))?;
    // A mock request runs the real chain against the mock provider, on a health book of its
    // own: it teaches the router nothing about the real models.
    let scratch = RefCell::default();
    let (upstream, health, api_key) = match (&request.mock, config.groq_api_key.as_deref()) {
        (Some(_), _) if !config.allow_mock => {
            let param = match request.has("mock_response") {
                true => "mock_response",
                false => "mock_failures",
            };
            return Err(ApiError::MockNotAllowed { param });
        }
        (Some(mock), _) => (
            Upstream::Mock(MockProvider::new(mock, request.prompt_bytes)),
            &scratch,
            "",
        ),
        (None, Some(key)) => (Upstream::Real(provider), env.health, key),
        (None, None) => return Err(ApiError::ProviderKeyMissing),
    };
    summary.mock = request.mock.is_some();
    let ctx = RouteContext {
        request_id: env.request_id,
        task: &task,
        url: &config.chat_url,
        api_key,
        attempt_timeout_ms: config.attempt_timeout_ms,
        deadline_ms: summary.started_ms + config.request_timeout_ms,
        gone_ttl_ms: config.model_gone_ttl_ms,
        now_ms: env.now_ms,
        caller_left: env.caller_left,
        log: env.log,
        health,
        mock: summary.mock,
    };
    Ok((config, route(&ctx, &chain, &request, &upstream).await?))
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
        .map(|a| match (a.status, a.reason) {
            (Some(status), _) => format!("{}={}({status})", a.model, a.outcome.as_str()),
            (None, Some(reason)) => {
                format!("{}={}({})", a.model, a.outcome.as_str(), reason.as_str())
            }
            (None, None) => format!("{}={}", a.model, a.outcome.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
