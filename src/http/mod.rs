//! The caller-facing API as plain data: `HttpRequest` in, `Reply` out. Routes, auth, CORS,
//! limits, answers and errors live here, so they are tested natively; the Worker shell only
//! converts to and from the runtime's types, reading what this module tells it to.

use std::cell::RefCell;

use serde::Serialize;

use crate::groq::cut;
use crate::groq::mock::EitherBody;
use crate::groq::provider::Provider;
use crate::routing::chain::{ChainSource, ModelChain};
use crate::routing::config::{
    AllowedOrigins, Config, ConfigError, DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_REQUEST_BYTES,
};
use crate::routing::health::{HealthBook, HealthReport};
use crate::routing::log::{write, Level, Log};

pub mod auth;
mod chat;
pub mod cors;
pub mod error;
pub mod jwt;
pub mod limit;
pub mod relay;

use auth::{AuthError, Caller, Credentials, TokenCheck};
use error::ApiError;
use jwt::{AuthFailure, KeySet, TokenCrypto};
use limit::RateLimiter;
use relay::{StreamRelay, UsageSink};

pub use chat::attempts_header;

pub const TASKS_PREFIX: &str = "/v1/tasks/";

/// The body of an upstream answer: Groq's, or the mock provider's.
pub type Body<P> = EitherBody<<P as Provider>::Body>;

/// What `Config::load` made of this isolate's bindings.
pub type Loaded = Result<Config, Vec<ConfigError>>;

#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// Cloudflare Access's `Cf-Access-Jwt-Assertion`: a user's JWT when `JWT_*` is set.
    pub access_jwt: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The browser's `Origin`, for CORS.
    pub origin: Option<&'a str>,
    /// A CORS preflight's `Access-Control-Request-Headers`: the headers the call will send.
    pub requested_headers: Option<&'a str>,
    /// `CF-Connecting-IP`: the rate-limit key for anonymous callers.
    pub client_ip: Option<&'a str>,
    /// The body, or as much of it as was read when it proved larger than the limit.
    pub body: &'a [u8],
    /// The shell stopped reading: `Content-Length` or the bytes read exceeded the limit.
    pub body_too_large: bool,
    /// The isolate holds `MAX_INFLIGHT_BYTES` of other requests already: the body was not read.
    pub overloaded: bool,
}

impl<'a> HttpRequest<'a> {
    /// A request with only a method, path and body; tests fill in the rest.
    pub fn new(method: &'a str, path: &'a str, body: &'a [u8]) -> Self {
        HttpRequest {
            method,
            path,
            authorization: None,
            access_jwt: None,
            content_type: Some("application/json"),
            origin: None,
            requested_headers: None,
            client_ip: None,
            body,
            body_too_large: false,
            overloaded: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn json(status: u16, body: &impl Serialize) -> Self {
        Self::json_bytes(
            status,
            serde_json::to_vec(body).expect("answers always serialize"),
        )
    }

    /// A JSON body already serialized (Groq's completion, an error).
    fn json_bytes(status: u16, body: Vec<u8>) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body,
        }
    }

    fn error(error: &ApiError) -> Self {
        let mut response = Self::json_bytes(error.status(), error.body());
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

/// Per-request facilities the shell provides.
pub struct RequestEnv<'a> {
    pub request_id: &'a str,
    /// Epoch milliseconds.
    pub now_ms: &'a dyn Fn() -> u64,
    /// Whether the caller has gone away (the runtime's request signal).
    pub caller_left: &'a dyn Fn() -> bool,
    /// Already filtered to `LOG_LEVEL` (see `log_level`).
    pub log: &'a dyn Log,
    /// This isolate's model health memory.
    pub health: &'a RefCell<HealthBook>,
    /// This isolate's copy of the sign-in provider's keys (`JWT_JWKS_URL`).
    pub jwks: &'a RefCell<KeySet>,
    /// Where each routed request's usage point goes (`USAGE`, Analytics Engine).
    pub usage: &'a dyn UsageSink,
}

/// `LOG_LEVEL`, or every line while the configuration is broken.
pub fn log_level(config: &Loaded) -> Level {
    config.as_ref().map_or(Level::Info, |c| c.log_level)
}

/// How the shell reads a request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// A method without one.
    None,
    /// `Content-Length` is past `MAX_REQUEST_BYTES`: refused with 413, not a byte read.
    TooLarge,
    /// Up to `limit` bytes (`declared` by `Content-Length`, or chunked), holding `hold` bytes of
    /// the isolate's `max_in_flight` while the request is answered (unless the isolate is full:
    /// then 503, unread).
    Read {
        limit: u64,
        declared: bool,
        hold: u64,
        max_in_flight: u64,
    },
}

/// How to read a request's body: by its method and declared `Content-Length` (an unknown length
/// holds the most it may be, until read).
pub fn body_read(method: &str, content_length: Option<&str>, config: &Loaded) -> BodyRead {
    if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return BodyRead::None;
    }
    let (limit, max_in_flight) = config.as_ref().map_or(
        (DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_INFLIGHT_BYTES),
        |c| (c.max_request_bytes, c.max_inflight_bytes),
    );
    match content_length.and_then(|l| l.trim().parse::<u64>().ok()) {
        Some(length) if length > limit => BodyRead::TooLarge,
        length => BodyRead::Read {
            limit,
            declared: length.is_some(),
            hold: length.unwrap_or(limit),
            max_in_flight,
        },
    }
}

/// The caller's `x-request-id` when it is a sane token, else a fresh one from `random`.
pub fn request_id(incoming: Option<&str>, random: impl FnOnce() -> u64) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => format!("req_{:016x}", random()),
    }
}

/// Answers one request. `config` is the result of `Config::load` for this isolate's bindings.
pub async fn handle<P: Provider, L: RateLimiter, C: TokenCrypto>(
    req: HttpRequest<'_>,
    config: &Loaded,
    provider: &P,
    limiter: &L,
    crypto: &C,
    env: &RequestEnv<'_>,
) -> Reply<Body<P>> {
    let route = Route::of(req.path);
    let allowed = route.methods();
    let origins = config
        .as_ref()
        .map_or(&AllowedOrigins::None, |c| &c.allowed_origins);
    // A preflight's answer is all CORS already (`Vary` included).
    let preflight = req.method == "OPTIONS" && !matches!(route, Route::NotFound);
    let mut reply = if matches!(route, Route::NotFound) {
        Reply::Full(HttpResponse::error(&ApiError::RouteNotFound {
            method: cut(req.method, 16).to_string(),
            path: cut(req.path, 200).to_string(),
        }))
    } else if matches!(route, Route::Responses) {
        Reply::Full(HttpResponse::error(&ApiError::ResponsesApi))
    } else if preflight {
        Reply::Full(cors::preflight(
            req.origin,
            req.requested_headers,
            origins,
            allowed,
        ))
    } else if !allowed.split(", ").any(|m| m == req.method) {
        Reply::Full(HttpResponse::error(&ApiError::MethodNotAllowed {
            allow: allowed,
        }))
    } else {
        let full = |answer: Result<HttpResponse, ApiError>| {
            Reply::Full(answer.unwrap_or_else(|e| HttpResponse::error(&e)))
        };
        match route {
            Route::Healthz => Reply::Full(healthz(config)),
            Route::Task(task) => {
                let seams = (provider, limiter, crypto);
                chat::chat(req, Some(task), config, seams, env).await
            }
            Route::ChatCompletions => {
                chat::chat(req, None, config, (provider, limiter, crypto), env).await
            }
            Route::Models(one) => full(models(req, one, config, crypto, env).await),
            Route::Routes => full(routes(req, config, crypto, env).await),
            Route::NotFound | Route::Responses => unreachable!("answered above"),
        }
    };
    let (Reply::Full(head) | Reply::Stream { head, .. }) = &mut reply;
    head.headers
        .push(("x-request-id", env.request_id.to_string()));
    if !preflight {
        cors::decorate(head, req.origin, origins);
    }
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
    /// OpenAI's Responses API, which the router does not speak: a 404 that says what it does.
    Responses,
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
            (_, p) if p == "/v1/responses" || p.starts_with("/v1/responses/") => Route::Responses,
            _ => Route::NotFound,
        }
    }

    /// The methods the route answers; `Allow` on a 405.
    fn methods(&self) -> &'static str {
        match self {
            Route::Healthz | Route::Models(_) | Route::Routes => "GET, HEAD",
            Route::Task(_) | Route::ChatCompletions | Route::Responses => "POST",
            Route::NotFound => "",
        }
    }
}

fn healthz(config: &Loaded) -> HttpResponse {
    #[derive(Serialize)]
    struct Health<'a> {
        status: &'static str,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        problems: &'a [ConfigError],
        /// What works but is worth knowing: models without a price.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        warnings: &'a [ConfigError],
    }
    let missing_key = [ConfigError::provider_key_missing()];
    let (problems, warnings) = match config {
        Err(errors) => (&errors[..], Vec::new()),
        Ok(c) if c.groq_api_key.is_none() && c.allow_mock => {
            let mock_only = ConfigError {
                code: "mock_only",
                message: "the `GROQ_API_KEY` secret is not set: only mock requests (`mock_response`, `mock_failures`) can be answered".into(),
                ..ConfigError::provider_key_missing()
            };
            (&[][..], [vec![mock_only], c.unpriced()].concat())
        }
        Ok(c) if c.groq_api_key.is_none() => (&missing_key[..], c.unpriced()),
        Ok(c) => (&[][..], c.unpriced()),
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

#[derive(Serialize)]
struct ConfigInvalidLine<'a> {
    level: Level,
    event: &'static str,
    request_id: &'a str,
    problems: &'a [ConfigError],
}

/// Valid config and an authorized caller: what every routed endpoint checks first.
async fn admit<'c>(
    req: &HttpRequest<'_>,
    config: &'c Loaded,
    crypto: &impl TokenCrypto,
    env: &RequestEnv<'_>,
) -> Result<(&'c Config, Caller), ApiError> {
    let config = config.as_ref().map_err(|errors| {
        let line = ConfigInvalidLine {
            level: Level::Error,
            event: "config_invalid",
            request_id: env.request_id,
            problems: errors,
        };
        write(env.log, Level::Error, &line);
        ApiError::ConfigInvalid(errors.clone())
    })?;
    let credentials = Credentials {
        authorization: req.authorization,
        access_jwt: req.access_jwt,
    };
    let tokens = TokenCheck {
        crypto,
        keys: env.jwks,
        now_ms: (env.now_ms)(),
        log: env.log,
    };
    let auth = &config.client_auth;
    let caller = auth.authenticate(credentials, &tokens).await;
    let missing = match auth.jwt {
        Some(_) => "missing credentials; send `Authorization: Bearer <token>` with your sign-in provider's token",
        None => "missing client key; send `Authorization: Bearer <key>`",
    };
    let caller = caller.map_err(|e| match e {
        AuthError::NotConfigured => ApiError::AuthNotConfigured,
        AuthError::MissingKey => ApiError::Unauthorized { message: missing },
        AuthError::WrongKey => ApiError::Unauthorized {
            message: "invalid client key",
        },
        AuthError::Token(AuthFailure::Unavailable) => ApiError::AuthUnavailable,
        AuthError::Token(AuthFailure::Invalid(why)) => {
            let message = auth.jwt.as_ref().map(|jwt| why.message(jwt));
            ApiError::InvalidToken(message.unwrap_or_else(|| "invalid token".into()))
        }
    })?;
    Ok((config, caller))
}

/// An OpenAI model object standing for a task.
#[derive(Serialize)]
struct TaskModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct List<T> {
    object: &'static str,
    data: Vec<T>,
}

/// `GET /v1/models[/{task}]`: the tasks, as OpenAI model objects.
async fn models(
    req: HttpRequest<'_>,
    one: Option<&str>,
    config: &Loaded,
    crypto: &impl TokenCrypto,
    env: &RequestEnv<'_>,
) -> Result<HttpResponse, ApiError> {
    let (config, caller) = admit(&req, config, crypto, env).await?;
    let model = |id| TaskModel {
        id,
        object: "model",
        created: 0,
        owned_by: "task-router",
    };
    Ok(match one {
        None => HttpResponse::json(
            200,
            &List {
                object: "list",
                // A user limited by `JWT_TASKS_CLAIM` sees the tasks they may call.
                data: config
                    .task_names()
                    .into_iter()
                    .filter(|task| caller.may_call(task))
                    .map(model)
                    .collect(),
            },
        ),
        Some(task) if config.registry.tasks.contains_key(task) => {
            HttpResponse::json(200, &model(task))
        }
        Some(task) => return Err(unknown_task(config, task, true)),
    })
}

/// `GET /v1/routes`: for each task, the chain after overrides, where each entry came from, and
/// what this isolate knows of each model's health.
async fn routes(
    req: HttpRequest<'_>,
    config: &Loaded,
    crypto: &impl TokenCrypto,
    env: &RequestEnv<'_>,
) -> Result<HttpResponse, ApiError> {
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
        chain: Vec<Entry<'a>>,
    }
    #[derive(Serialize)]
    struct Entry<'a> {
        model: &'a str,
        source: ChainSource,
        health: HealthReport<'a>,
    }
    let (config, _) = admit(&req, config, crypto, env).await?;
    let now = (env.now_ms)();
    let health = env.health.borrow();
    let chains: Vec<(&str, ModelChain)> = config
        .task_names()
        .into_iter()
        .filter_map(|task| Some((task, ModelChain::for_task(config, task)?)))
        .collect();
    let data = chains
        .iter()
        .map(|(task, chain)| TaskRoute {
            task,
            chain: chain
                .entries
                .iter()
                .map(|e| Entry {
                    model: &e.model,
                    source: e.source,
                    health: health.report(&e.model, now),
                })
                .collect(),
        })
        .collect();
    Ok(HttpResponse::json(
        200,
        &Routes {
            object: "list",
            force_model: config.force_model.as_deref(),
            request_timeout_ms: config.request_timeout_ms,
            attempt_timeout_ms: config.attempt_timeout_ms,
            data,
        },
    ))
}

fn unknown_task(config: &Config, task: &str, named_by_model: bool) -> ApiError {
    ApiError::UnknownTask {
        task: cut(task, 64).to_string(),
        known: config
            .task_names()
            .into_iter()
            .map(str::to_string)
            .collect(),
        named_by_model,
    }
}
