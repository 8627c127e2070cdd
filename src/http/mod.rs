//! The caller-facing API as plain data: `HttpRequest` in, `Reply` out. Routes, auth, CORS,
//! limits, the caller's request, answers and errors live here, so they are tested natively; the
//! Worker shell only converts to and from the runtime's types, reading what this module tells it
//! to.

use std::cell::RefCell;

use serde::Serialize;

use crate::groq::provider::Provider;
use crate::http::budget::{BudgetStore, Settlements};
use crate::http::cache::{CacheWrites, ResponseCache};
use crate::json::cut;
use crate::routing::health::HealthBook;
use crate::routing::log::{write, Level, Log};

pub mod auth;
pub mod budget;
pub mod cache;
mod chat;
pub mod config;
pub mod cors;
pub mod error;
pub mod jwt;
pub mod ledger;
pub mod limit;
pub mod mock;
pub mod record;
pub mod relay;
pub mod request;
mod status;

use auth::{Caller, Credentials, TokenCheck};
use config::{Config, LoadedConfig, DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_REQUEST_BYTES};
use cors::AllowedOrigins;
use error::ApiError;
use jwt::{KeySet, TokenVerification};
use limit::RateLimiter;
use mock::EitherBody;
use record::{RequestRecord, UsageSink};
use relay::StreamRelay;

pub use chat::attempts_header;

pub const TASKS_PREFIX: &str = "/v1/tasks/";

/// The body of an upstream answer: Groq's, or the mock provider's.
pub type Body<P> = EitherBody<<P as Provider>::Body>;

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
    /// `Cache-Control`: what a caller asks of the response cache (read when `CACHE` is set).
    pub cache_control: Option<&'a str>,
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
            cache_control: None,
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

/// What the router reaches outside itself for one request: Groq, the rate limiter, what
/// verifying users' tokens needs, the budgets' ledgers and the response cache.
pub struct Io<'a, P, L, T, S, C> {
    pub provider: &'a P,
    pub limiter: &'a L,
    pub tokens: &'a T,
    pub budgets: &'a S,
    pub cache: &'a C,
}

// By hand: derived, they would ask every type parameter to be `Copy` too.
impl<P, L, T, S, C> Clone for Io<'_, P, L, T, S, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P, L, T, S, C> Copy for Io<'_, P, L, T, S, C> {}

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
    /// Where a budgeted request's real cost goes when it ends (`BUDGETS`).
    pub settlements: &'a dyn Settlements,
    /// Where answers to keep go (`CACHE`).
    pub cache_writes: &'a dyn CacheWrites,
}

impl RequestEnv<'_> {
    /// Accounts for a finished request: its log line, its settlement in the budgets that held
    /// it, and (unless it was a mock's) its usage point.
    pub fn account(&self, record: &RequestRecord) {
        write(self.log, record.level(), "request", record);
        if let Some(reservation) = &record.budget {
            reservation.settle(record.charge(), record.unreported, self.settlements);
        }
        if !record.mock {
            self.usage.record(record);
        }
    }
}

/// `LOG_LEVEL`, or every line while the configuration is broken.
pub fn log_level(config: &LoadedConfig) -> Level {
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
pub fn body_read(method: &str, content_length: Option<&str>, config: &LoadedConfig) -> BodyRead {
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
pub async fn handle<P, L, T, S, C>(
    req: HttpRequest<'_>,
    config: &LoadedConfig,
    io: Io<'_, P, L, T, S, C>,
    env: &RequestEnv<'_>,
) -> Reply<Body<P>>
where
    P: Provider,
    L: RateLimiter,
    T: TokenVerification,
    S: BudgetStore,
    C: ResponseCache,
{
    let route = Route::of(req.path);
    let allowed = route.methods();
    let origins = config
        .as_ref()
        .map_or(&AllowedOrigins::None, |c| &c.allowed_origins);
    // A preflight's answer is all CORS already (`Vary` included).
    let preflight = req.method == "OPTIONS" && !matches!(route, Route::NotFound);
    let refused = |error: ApiError| Reply::Full(HttpResponse::error(&error));
    let mut reply = match route {
        Route::NotFound => refused(ApiError::RouteNotFound {
            method: cut(req.method, 16).to_string(),
            path: cut(req.path, 200).to_string(),
        }),
        Route::Responses => refused(ApiError::ResponsesApi),
        _ if preflight => Reply::Full(cors::preflight(
            req.origin,
            req.requested_headers,
            origins,
            allowed,
        )),
        _ if !allowed.split(", ").any(|m| m == req.method) => {
            refused(ApiError::MethodNotAllowed { allow: allowed })
        }
        Route::Healthz => Reply::Full(status::healthz(config)),
        Route::Task(task) => chat::chat(req, Some(task), config, io, env).await,
        Route::ChatCompletions => chat::chat(req, None, config, io, env).await,
        Route::Models(one) => Reply::Full(status::models(req, one, config, io.tokens, env).await),
        Route::Routes => Reply::Full(status::routes(req, config, io.tokens, env).await),
        Route::Usage => Reply::Full(status::usage(req, config, (io.tokens, io.budgets), env).await),
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
    /// The caller's own budget: spent, remaining, when it resets.
    Usage,
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
            ("/v1/usage", _) => Route::Usage,
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
            Route::Healthz | Route::Models(_) | Route::Routes | Route::Usage => "GET, HEAD",
            Route::Task(_) | Route::ChatCompletions | Route::Responses => "POST",
            Route::NotFound => "",
        }
    }
}

/// Valid config and an authorized caller: what every routed endpoint checks first.
async fn admit<'c>(
    req: &HttpRequest<'_>,
    config: &'c LoadedConfig,
    tokens: &impl TokenVerification,
    env: &RequestEnv<'_>,
) -> Result<(&'c Config, Caller), ApiError> {
    #[derive(Serialize)]
    struct ConfigInvalid<'a> {
        request_id: &'a str,
        problems: &'a [crate::bindings::ConfigFinding],
    }
    let config = config.as_ref().map_err(|problems| {
        let line = ConfigInvalid {
            request_id: env.request_id,
            problems,
        };
        write(env.log, Level::Error, "config_invalid", &line);
        ApiError::ConfigInvalid(problems.clone())
    })?;
    let credentials = Credentials {
        authorization: req.authorization,
        access_jwt: req.access_jwt,
    };
    let check = TokenCheck {
        tokens,
        keys: env.jwks,
        now_ms: (env.now_ms)(),
        log: env.log,
    };
    let auth = &config.client_auth;
    let caller = auth.authenticate(credentials, &check).await;
    Ok((config, caller.map_err(|e| e.refusal(auth))?))
}

fn unknown_task(config: &Config, task: &str, named_by_model: bool) -> ApiError {
    ApiError::UnknownTask {
        task: cut(task, 64).to_string(),
        known: config
            .routing
            .task_names()
            .into_iter()
            .map(str::to_string)
            .collect(),
        named_by_model,
    }
}
