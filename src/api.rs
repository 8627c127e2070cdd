//! The HTTP API as plain data: `HttpRequest` in, `Reply` out. Paths, auth, config errors, the
//! task endpoint, the OpenAI/Groq-SDK endpoints and their headers all live here, so they are
//! tested natively; the Worker shell only converts to and from the runtime's types.

use std::cell::RefCell;

use crate::auth::AuthError;
use crate::chain::ModelChain;
use crate::completion::{task_answer, TokenCounts};
use crate::config::{AllowedOrigins, Config, ConfigError};
use crate::cors;
use crate::error::{config_problems, ApiError};
use crate::health::{rfc3339, HealthBook, HealthReport};
use crate::json::{self, JsonObject};
use crate::limit::{key_for, RateLimiter};
use crate::log::{Filtered, Level, Log};
use crate::provider::Provider;
use crate::relay::{RequestSummary, StreamRelay};
use crate::request::ChatRequest;
use crate::router::{route, Answer, Attempt, RouteContext, Routed};

pub const TASKS_PREFIX: &str = "/v1/tasks/";

#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The browser's `Origin`, for CORS.
    pub origin: Option<&'a str>,
    /// `CF-Connecting-IP`: the rate-limit key for anonymous callers.
    pub client_ip: Option<&'a str>,
    /// The body, or as much of it as was read when it proved larger than `MAX_REQUEST_BYTES`.
    pub body: &'a [u8],
    /// The shell stopped reading: `Content-Length` or the bytes read exceeded the limit.
    pub body_too_large: bool,
}

impl<'a> HttpRequest<'a> {
    /// A request with only a method, path and body; tests fill in the rest.
    pub fn new(method: &'a str, path: &'a str, body: &'a [u8]) -> Self {
        HttpRequest {
            method,
            path,
            authorization: None,
            content_type: Some("application/json"),
            origin: None,
            client_ip: None,
            body,
            body_too_large: false,
        }
    }
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

/// A whole answer, or the head of a stream and the relay that will write its body.
pub enum Reply<B> {
    Full(HttpResponse),
    Stream {
        head: HttpResponse,
        relay: Box<StreamRelay<B>>,
    },
}

impl<B> Reply<B> {
    /// The response head (status and headers), and for a full reply its body.
    pub fn head_mut(&mut self) -> &mut HttpResponse {
        match self {
            Reply::Full(r) | Reply::Stream { head: r, .. } => r,
        }
    }
}

/// Per-request facilities the shell provides.
pub struct RequestEnv<'a> {
    pub request_id: &'a str,
    /// Epoch milliseconds.
    pub now_ms: &'a dyn Fn() -> u64,
    pub log: &'a dyn Log,
    /// This isolate's model health memory.
    pub health: &'a RefCell<HealthBook>,
}

/// How a chat route learns its task, and which answer shape it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatApi<'a> {
    /// `POST /v1/tasks/{task}`: the router's own answer shape.
    Task(&'a str),
    /// `POST /v1/chat/completions`, `/openai/v1/chat/completions`: `model` names the task and
    /// Groq's completion is passed through, so the OpenAI and Groq SDKs work unchanged.
    Sdk,
}

/// Answers one request. `config` is the result of `Config::load` for this request's bindings.
pub async fn handle<P: Provider, L: RateLimiter>(
    req: HttpRequest<'_>,
    config: &Result<Config, Vec<ConfigError>>,
    provider: &P,
    limiter: &L,
    env: &RequestEnv<'_>,
) -> Reply<P::Body> {
    let log = Filtered {
        inner: env.log,
        min: log_level(config),
    };
    let env = &RequestEnv {
        log: &log,
        request_id: env.request_id,
        now_ms: env.now_ms,
        health: env.health,
    };
    let route = Route::of(req.path);
    let allowed = route.methods();
    let origins = config
        .as_ref()
        .map_or(&AllowedOrigins::None, |c| &c.allowed_origins);
    let mut reply = if matches!(route, Route::NotFound) {
        Reply::Full(HttpResponse::error(&ApiError::RouteNotFound {
            method: truncate(req.method, 16).to_string(),
            path: truncate(req.path, 200).to_string(),
        }))
    } else if req.method == "OPTIONS" {
        Reply::Full(cors::preflight(req.origin, origins, allowed))
    } else if !allowed.split(", ").any(|m| m == req.method) {
        Reply::Full(HttpResponse::error(&ApiError::MethodNotAllowed {
            allow: allowed,
        }))
    } else {
        match route {
            Route::Healthz => Reply::Full(healthz(config)),
            Route::Task(task) => {
                chat(req, ChatApi::Task(task), config, provider, limiter, env).await
            }
            Route::ChatCompletions => chat(req, ChatApi::Sdk, config, provider, limiter, env).await,
            Route::Models(one) => Reply::Full(
                models(req, one, config, env).unwrap_or_else(|e| HttpResponse::error(&e)),
            ),
            Route::Routes => {
                Reply::Full(routes(req, config, env).unwrap_or_else(|e| HttpResponse::error(&e)))
            }
            Route::NotFound => unreachable!("answered above"),
        }
    };
    let head = reply.head_mut();
    head.headers
        .push(("x-request-id", env.request_id.to_string()));
    cors::decorate(head, req.origin, origins);
    reply
}

enum Route<'a> {
    Healthz,
    Task(&'a str),
    ChatCompletions,
    /// The task list, or one task.
    Models(Option<&'a str>),
    /// Each task's effective chain and each model's health.
    Routes,
    NotFound,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        // The Groq SDKs put `/openai/v1` in front of the OpenAI paths.
        let sdk_path = path
            .strip_prefix("/openai")
            .filter(|p| p.starts_with("/v1/"))
            .unwrap_or(path);
        match (path, sdk_path) {
            ("/healthz", _) => Route::Healthz,
            (p, _) if p.starts_with(TASKS_PREFIX) => Route::Task(&p[TASKS_PREFIX.len()..]),
            (_, "/v1/chat/completions") => Route::ChatCompletions,
            ("/v1/routes", _) => Route::Routes,
            (_, "/v1/models") => Route::Models(None),
            (_, p) if p.starts_with("/v1/models/") => {
                Route::Models(Some(&p["/v1/models/".len()..]))
            }
            _ => Route::NotFound,
        }
    }

    /// The methods the route answers; `Allow` on a 405.
    fn methods(&self) -> &'static str {
        match self {
            Route::Healthz | Route::Models(_) | Route::Routes => "GET, HEAD",
            Route::Task(_) | Route::ChatCompletions => "POST",
            Route::NotFound => "",
        }
    }
}

fn healthz(config: &Result<Config, Vec<ConfigError>>) -> HttpResponse {
    let mut problems: Vec<ConfigError> = match config {
        Ok(_) => Vec::new(),
        Err(errors) => errors.clone(),
    };
    if let Ok(c) = config {
        if c.groq_api_key.is_none() {
            problems.push(ConfigError::provider_key_missing());
        }
    }
    if problems.is_empty() {
        HttpResponse::json(200, JsonObject::new().str("status", "ok").finish())
    } else {
        let body = JsonObject::new()
            .str("status", "error")
            .raw("problems", &config_problems(&problems))
            .finish();
        HttpResponse::json(503, body)
    }
}

/// `LOG_LEVEL`, or every line while the configuration is broken.
pub fn log_level(config: &Result<Config, Vec<ConfigError>>) -> Level {
    config.as_ref().map_or(Level::Info, |c| c.log_level)
}

/// Valid config and an authorized caller: what every routed endpoint checks first.
fn admit<'c>(
    req: &HttpRequest<'_>,
    config: &'c Result<Config, Vec<ConfigError>>,
    env: &RequestEnv<'_>,
) -> Result<(&'c Config, Option<&'c str>), ApiError> {
    let config = config.as_ref().map_err(|errors| {
        let line = Level::Error
            .line("config_invalid")
            .str("request_id", env.request_id)
            .raw("problems", &config_problems(errors))
            .finish();
        env.log.emit(Level::Error, line);
        ApiError::ConfigInvalid(errors.clone())
    })?;
    let client = config
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
    Ok((config, client))
}

/// `GET /v1/models[/{task}]`: the tasks, as OpenAI model objects.
fn models(
    req: HttpRequest<'_>,
    one: Option<&str>,
    config: &Result<Config, Vec<ConfigError>>,
    env: &RequestEnv<'_>,
) -> Result<HttpResponse, ApiError> {
    let (config, _) = admit(&req, config, env)?;
    let object = |id: &str| {
        JsonObject::new()
            .str("id", id)
            .str("object", "model")
            .num("created", 0)
            .str("owned_by", "task-router")
            .finish()
    };
    let body = match one {
        None => JsonObject::new()
            .str("object", "list")
            .raw(
                "data",
                &json::array(config.task_names().into_iter().map(object)),
            )
            .finish(),
        Some(task) if config.registry.tasks.contains_key(task) => object(task),
        Some(task) => return Err(unknown_task(config, task, true)),
    };
    Ok(HttpResponse::json(200, body))
}

/// `GET /v1/routes`: for each task, the chain after overrides, where each entry came from, and
/// what this isolate knows of each model's health.
fn routes(
    req: HttpRequest<'_>,
    config: &Result<Config, Vec<ConfigError>>,
    env: &RequestEnv<'_>,
) -> Result<HttpResponse, ApiError> {
    let (config, _) = admit(&req, config, env)?;
    let now = (env.now_ms)();
    let health = env.health.borrow();
    let tasks = config
        .task_names()
        .into_iter()
        .filter_map(|task| ModelChain::for_task(config, task).map(|chain| (task, chain)))
        .map(|(task, chain)| {
            let entries = chain.entries.iter().map(|e| {
                JsonObject::new()
                    .str("model", &e.model)
                    .str("source", e.source.as_str())
                    .raw("health", &health_json(health.report(&e.model, now)))
                    .finish()
            });
            JsonObject::new()
                .str("task", task)
                .raw("chain", &json::array(entries))
                .finish()
        });
    let body = JsonObject::new()
        .str("object", "list")
        .opt_str("force_model", config.force_model.as_deref())
        .num("request_timeout_ms", config.request_timeout_ms)
        .num("attempt_timeout_ms", config.attempt_timeout_ms)
        .raw("data", &json::array(tasks))
        .finish();
    Ok(HttpResponse::json(200, body))
}

/// A model's health, with its instants as epoch ms and as RFC 3339 text for people reading it.
fn health_json(report: HealthReport) -> String {
    let state = JsonObject::new().str("state", report.state());
    match report {
        HealthReport::Healthy | HealthReport::HalfOpen => state.finish(),
        HealthReport::Cooling { until_ms, reason } => state
            .num("until_ms", until_ms)
            .str("until", &rfc3339(until_ms))
            .str("reason", reason.as_str())
            .finish(),
        HealthReport::Gone {
            since_ms,
            until_ms,
            reason,
        } => state
            .num("since_ms", since_ms)
            .str("since", &rfc3339(since_ms))
            .num("until_ms", until_ms)
            .str("until", &rfc3339(until_ms))
            .str("reason", &reason)
            .finish(),
    }
}

fn unknown_task(config: &Config, task: &str, named_by_model: bool) -> ApiError {
    ApiError::UnknownTask {
        task: truncate(task, 64).to_string(),
        known: config
            .task_names()
            .into_iter()
            .map(str::to_string)
            .collect(),
        named_by_model,
    }
}

async fn chat<P: Provider, L: RateLimiter>(
    req: HttpRequest<'_>,
    api: ChatApi<'_>,
    config: &Result<Config, Vec<ConfigError>>,
    provider: &P,
    limiter: &L,
    env: &RequestEnv<'_>,
) -> Reply<P::Body> {
    let started = (env.now_ms)();
    let mut summary = RequestSummary {
        request_id: env.request_id.to_string(),
        task: match api {
            ChatApi::Task(task) => truncate(task, 64).to_string(),
            ChatApi::Sdk => String::new(),
        },
        client: None,
        model: None,
        attempts: 0,
        started_ms: started,
    };
    // On the task route the URL names the task, so even a refused request (bad key, bad body)
    // says which task it was for; on the SDK routes the task is known once the body is read.
    let mut known_task = match (api, config) {
        (ChatApi::Task(task), Ok(c)) => c.registry.tasks.contains_key(task),
        _ => false,
    };
    let result = async {
        let (config, client) = admit(&req, config, env)?;
        summary.client = client.map(str::to_string);
        if !limiter.allow(&key_for(client, req.client_ip)).await {
            return Err(ApiError::ClientRateLimited {
                retry_after_secs: config.rate_limit_period_s,
            });
        }
        let api_key = config
            .groq_api_key
            .as_deref()
            .ok_or(ApiError::ProviderKeyMissing)?;
        if req.body_too_large || req.body.len() as u64 > config.max_request_bytes {
            return Err(ApiError::PayloadTooLarge {
                limit: config.max_request_bytes,
            });
        }
        if !is_json(req.content_type) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let (task, mut request) = match api {
            ChatApi::Task(task) => {
                if !config.registry.tasks.contains_key(task) {
                    return Err(unknown_task(config, task, false));
                }
                (task.to_string(), ChatRequest::parse(req.body, false)?)
            }
            ChatApi::Sdk => {
                let request = ChatRequest::parse(req.body, true)?;
                let task = request.model.clone().ok_or_else(|| {
                    ApiError::invalid_field(
                        "model",
                        "`model` is required: name a task, e.g. \"fast\"",
                    )
                })?;
                (task, request)
            }
        };
        if let Some((task, cap)) = config.max_tokens.get_key_value(task.as_str()) {
            request.apply_token_cap(*cap, &task.max_tokens_binding())?;
        }
        summary.task = truncate(&task, 64).to_string();
        let chain =
            ModelChain::for_task(config, &task).ok_or_else(|| unknown_task(config, &task, true))?;
        known_task = true;
        let ctx = RouteContext {
            request_id: env.request_id,
            task: &task,
            url: &config.chat_url,
            api_key,
            attempt_timeout_ms: config.attempt_timeout_ms,
            deadline_ms: started + config.request_timeout_ms,
            gone_ttl_ms: config.model_gone_ttl_ms,
            now_ms: env.now_ms,
            log: env.log,
            health: env.health,
        };
        let routed = route(&ctx, &chain, &request, provider).await?;
        Ok((routed, config.attempt_timeout_ms))
    }
    .await;

    let (reply, error) = match result {
        Ok((routed, idle_timeout_ms)) => {
            let Routed {
                model,
                answer,
                attempts,
            } = routed;
            summary.model = Some(model.clone());
            summary.attempts = attempts.len();
            let (mut head, stream) = match answer {
                Answer::Complete { body, completion } => {
                    // Groq's `usage` is parsed only for a line that will be written.
                    let tokens = if env.log.enabled(Level::Info) {
                        completion.tokens()
                    } else {
                        TokenCounts::default()
                    };
                    summary.log(env.log, (env.now_ms)(), "ok", 200, tokens);
                    let answer = match api {
                        ChatApi::Task(task) => {
                            task_answer(&completion, &model, task, env.request_id, &attempts)
                        }
                        // Groq's bytes parsed as a completion, so they are UTF-8: moved as they
                        // are, not copied.
                        ChatApi::Sdk => String::from_utf8(body)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    };
                    (HttpResponse::json(200, answer), None)
                }
                Answer::Stream(start) => {
                    let head = HttpResponse {
                        status: 200,
                        headers: vec![
                            ("content-type", "text/event-stream".to_string()),
                            ("cache-control", "no-cache".to_string()),
                        ],
                        body: String::new(),
                    };
                    (head, Some(start))
                }
            };
            head.headers.push(("x-model-used", model));
            head.headers
                .push(("x-attempts", attempts_header(&attempts)));
            head.headers.push(("x-task-type", summary.task.clone()));
            return match stream {
                None => Reply::Full(head),
                Some(start) => Reply::Stream {
                    head,
                    relay: Box::new(StreamRelay {
                        start,
                        idle_timeout_ms,
                        summary,
                        log_level: log_level(config),
                    }),
                },
            };
        }
        Err(error) => {
            let mut response = HttpResponse::error(&error);
            if known_task {
                response.headers.push(("x-task-type", summary.task.clone()));
            }
            if !error.attempts().is_empty() {
                response
                    .headers
                    .push(("x-attempts", attempts_header(error.attempts())));
            }
            summary.attempts = error.attempts().len();
            (response, error)
        }
    };
    summary.log(
        env.log,
        (env.now_ms)(),
        error.code(),
        reply.status,
        TokenCounts::default(),
    );
    Reply::Full(reply)
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

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
