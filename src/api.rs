//! The HTTP API as plain data: `HttpRequest` in, `HttpResponse` out. Routing of paths, auth,
//! config errors, the task endpoint and its headers all live here, so they are tested natively;
//! the Worker shell only converts to and from `worker` types.

use serde_json::json;

use crate::auth::AuthError;
use crate::chain::ModelChain;
use crate::completion::{TaskAnswer, TokenCounts};
use crate::config::{Config, ConfigError};
use crate::error::{config_problems, ApiError};
use crate::log::{Level, Log};
use crate::provider::Provider;
use crate::request::ChatRequest;
use crate::router::{route, Attempt, RouteContext};

pub const TASKS_PREFIX: &str = "/v1/tasks/";

#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpResponse {
    fn json(status: u16, body: String) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body,
        }
    }

    fn error(error: &ApiError) -> Self {
        let mut response = HttpResponse::json(error.status(), error.body());
        response.headers.extend(error.headers());
        response
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Per-request facilities the shell provides.
pub struct RequestEnv<'a> {
    pub request_id: &'a str,
    pub now_ms: &'a dyn Fn() -> u64,
    pub log: &'a dyn Log,
}

/// Answers one request. `config` is the result of `Config::load` for this request's bindings.
pub async fn handle<P: Provider>(
    req: HttpRequest<'_>,
    config: &Result<Config, Vec<ConfigError>>,
    provider: &P,
    env: &RequestEnv<'_>,
) -> HttpResponse {
    let mut response = match (req.method, req.path) {
        (_, "/healthz") => match req.method {
            "GET" | "HEAD" => healthz(config),
            _ => HttpResponse::error(&ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        (_, path) if path.starts_with(TASKS_PREFIX) => {
            let task = &path[TASKS_PREFIX.len()..];
            match req.method {
                "POST" => task_endpoint(req, task, config, provider, env).await,
                _ => HttpResponse::error(&ApiError::MethodNotAllowed { allow: "POST" }),
            }
        }
        (method, path) => HttpResponse::error(&ApiError::RouteNotFound {
            method: method.to_string(),
            path: truncate(path, 200).to_string(),
        }),
    };
    response
        .headers
        .push(("x-request-id", env.request_id.to_string()));
    response
}

fn healthz(config: &Result<Config, Vec<ConfigError>>) -> HttpResponse {
    let mut problems: Vec<ConfigError> = match config {
        Ok(_) => Vec::new(),
        Err(errors) => errors.clone(),
    };
    if let Ok(c) = config {
        if c.groq_api_key.is_none() {
            problems.push(ConfigError {
                code: "provider_key_missing",
                binding: "GROQ_API_KEY".to_string(),
                message: ApiError::ProviderKeyMissing.message(),
            });
        }
    }
    if problems.is_empty() {
        HttpResponse::json(200, json!({"status": "ok"}).to_string())
    } else {
        HttpResponse::json(
            503,
            json!({"status": "error", "problems": config_problems(&problems)}).to_string(),
        )
    }
}

async fn task_endpoint<P: Provider>(
    req: HttpRequest<'_>,
    task: &str,
    config: &Result<Config, Vec<ConfigError>>,
    provider: &P,
    env: &RequestEnv<'_>,
) -> HttpResponse {
    let started = (env.now_ms)();
    let mut client = None;
    let result = async {
        let config = config.as_ref().map_err(|errors| {
            env.log.emit(
                Level::Error,
                json!({"level": "error", "event": "config_invalid", "request_id": env.request_id,
                       "problems": config_problems(errors)}),
            );
            ApiError::ConfigInvalid(errors.clone())
        })?;
        client = config
            .client_auth
            .check(req.authorization)
            .map_err(|e| match e {
                AuthError::NotConfigured => ApiError::AuthNotConfigured,
                AuthError::MissingKey => ApiError::Unauthorized {
                    message: "missing client key; send `Authorization: Bearer <key>`",
                },
                AuthError::WrongKey => ApiError::Unauthorized {
                    message: "invalid client key",
                },
            })?;
        let api_key = config
            .groq_api_key
            .as_deref()
            .ok_or(ApiError::ProviderKeyMissing)?;
        let chain = ModelChain::for_task(config, task).ok_or_else(|| ApiError::UnknownTask {
            task: truncate(task, 64).to_string(),
            known: config
                .task_names()
                .into_iter()
                .map(str::to_string)
                .collect(),
        })?;
        let request = ChatRequest::parse(req.body, false)?;
        if request.stream {
            return Err(ApiError::invalid_field(
                "stream",
                "streaming is not available on this endpoint yet; omit `stream` or set it to false",
            ));
        }
        let url = format!("{}/openai/v1/chat/completions", config.groq_base_url);
        let ctx = RouteContext {
            request_id: env.request_id,
            task,
            url: &url,
            api_key,
            attempt_timeout_ms: config.attempt_timeout_ms,
            now_ms: env.now_ms,
            log: env.log,
        };
        route(&ctx, &chain, &request, provider).await
    }
    .await;

    let (mut response, model_used, attempts, tokens) = match &result {
        Ok(routed) => {
            let answer = TaskAnswer::new(
                &routed.completion,
                &routed.model,
                task,
                env.request_id,
                &routed.attempts,
            );
            let body = serde_json::to_string(&answer).expect("a task answer serializes to JSON");
            let mut response = HttpResponse::json(200, body);
            response
                .headers
                .push(("x-model-used", routed.model.clone()));
            (
                response,
                Some(routed.model.as_str()),
                routed.attempts.as_slice(),
                routed.completion.tokens(),
            )
        }
        Err(error) => (
            HttpResponse::error(error),
            None,
            error.attempts(),
            TokenCounts::default(),
        ),
    };
    if config
        .as_ref()
        .is_ok_and(|c| c.registry.tasks.contains_key(task))
    {
        response.headers.push(("x-task-type", task.to_string()));
    }
    if !attempts.is_empty() {
        response
            .headers
            .push(("x-attempts", attempts_header(attempts)));
    }

    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    let level = match response.status {
        500.. => Level::Error,
        _ => Level::Info,
    };
    env.log.emit(
        level,
        json!({
            "level": level.as_str(),
            "event": "request",
            "request_id": env.request_id,
            "task": truncate(task, 64),
            "client": client,
            "model": model_used,
            "outcome": outcome,
            "status": response.status,
            "attempts": attempts.len(),
            "fallback_used": attempts.len() > 1,
            "prompt_tokens": tokens.prompt_tokens,
            "completion_tokens": tokens.completion_tokens,
            "total_tokens": tokens.total_tokens,
            "duration_ms": (env.now_ms)().saturating_sub(started),
        }),
    );
    response
}

/// `model=outcome(status)` per attempt, comma-separated: the attempts list in one header.
pub fn attempts_header(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| match a.status {
            Some(status) => format!("{}={}({status})", a.model, a.outcome.as_str()),
            None => format!("{}={}", a.model, a.outcome.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
