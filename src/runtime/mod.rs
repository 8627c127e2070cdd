//! The Worker shell: adapts the core to the Workers runtime. The entry points (`fetch`,
//! `scheduled`), bindings and the console are here; the Groq fetch (`upstream`), KV, the rate
//! limiter, WebCrypto, Analytics Engine and the response stream each have a file. The shell
//! moves bytes and calls the runtime; every rule, limit and cadence is the core's.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use futures_channel::oneshot;
use futures_util::StreamExt;
use serde::Serialize;
use worker::{
    event, js_sys, web_sys, Context, Env, Headers, Request, Response, ResponseBuilder, Result,
    ScheduleContext, ScheduledEvent,
};

use crate::bindings::{BindingValue, Bindings};
use crate::groq::outcome::redact;
use crate::http::config::{Config, LoadedConfig};
use crate::http::jwt::KeySet;
use crate::http::limit::{BytesInFlight, Held};
use crate::http::RequestEnv;
use crate::http::{self, body_read, handle, BodyRead, HttpRequest, HttpResponse, Io, Reply};
use crate::routing::health::{HealthBook, SharedSync};
use crate::routing::log::{write, Filtered, Level, Log};
use crate::routing::probe;

mod budget;
mod cache;
mod crypto;
mod kv;
mod limiter;
mod stream;
mod upstream;
mod usage;

use budget::DurableBudgets;
use cache::WorkersCache;
use crypto::WebCrypto;
use kv::HealthKv;
use limiter::BindingLimiter;
use upstream::GroqFetch;
use usage::UsageQueue;

thread_local! {
    /// Model health memory for the life of this isolate (Workers run one thread per isolate).
    static HEALTH: Rc<RefCell<HealthBook>> = Rc::default();
    /// The sign-in provider's keys (`JWT_JWKS_URL`), as last fetched by this isolate.
    static JWKS: Rc<RefCell<KeySet>> = Rc::default();
    /// The request bytes this isolate holds (`MAX_INFLIGHT_BYTES`).
    static IN_FLIGHT: Rc<BytesInFlight> = Rc::default();
    /// The parsed configuration: bindings are fixed for an isolate's life (changing a var or a
    /// secret deploys a new version, served by new isolates), so they are read and validated once.
    static CONFIG: OnceCell<Rc<LoadedConfig>> = const { OnceCell::new() };
}

/// Answers in a task of its own, kept alive by `wait_until`, and waits for its answer: when the
/// caller goes away the runtime cancels the handler's own work, but not that task, so the model
/// call in flight is aborted (with the caller's request signal), no other model is called, and the
/// request line says the caller left. A streamed answer's relay goes on in the same task.
#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let (answer, answered) = oneshot::channel();
    background(&ctx, answer_request(req, env, answer));
    answered
        .await
        .unwrap_or_else(|_| Err("the router ended without an answer".into()))
}

/// What the core reads of a request: its headers (those that are used), read into owned text.
struct Heard {
    request_id: String,
    method: String,
    path: String,
    authorization: Option<String>,
    access_jwt: Option<String>,
    content_type: Option<String>,
    content_length: Option<String>,
    origin: Option<String>,
    requested_headers: Option<String>,
    client_ip: Option<String>,
    cache_control: Option<String>,
}

impl Heard {
    /// Reads only what is used: the origin and a preflight's headers for CORS, Cloudflare
    /// Access's assertion for JWTs, the IP as an anonymous caller's key (rate limit, budget,
    /// cache entries), `Cache-Control` where a task caches.
    fn of(req: &Request, config: &LoadedConfig, limiter: &BindingLimiter) -> Heard {
        let header = |name: &str| req.headers().get(name).ok().flatten();
        let cors = config
            .as_ref()
            .is_ok_and(|c| c.allowed_origins.is_configured());
        let jwt = config.as_ref().is_ok_and(|c| c.client_auth.jwt.is_some());
        let caching = config.as_ref().is_ok_and(|c| !c.cache.tasks.is_empty());
        // Anonymous callers are told apart by IP: for rate limits, budgets, private cache entries.
        let anonymous = config
            .as_ref()
            .is_ok_and(|c| c.client_auth.allow_unauthenticated);
        // The raw method: `worker::Method` reads every method it does not know as GET.
        let method = req.inner().method();
        let preflight = cors && method == "OPTIONS";
        Heard {
            request_id: http::request_id(header("x-request-id").as_deref(), || {
                (js_sys::Math::random() * 2f64.powi(64)) as u64
            }),
            path: req.path(),
            authorization: header("authorization"),
            access_jwt: jwt.then(|| header("cf-access-jwt-assertion")).flatten(),
            content_type: header("content-type"),
            content_length: header("content-length"),
            origin: cors.then(|| header("origin")).flatten(),
            requested_headers: preflight
                .then(|| header("access-control-request-headers"))
                .flatten(),
            client_ip: (limiter.is_bound() || anonymous)
                .then(|| header("cf-connecting-ip"))
                .flatten(),
            cache_control: caching.then(|| header("cache-control")).flatten(),
            method,
        }
    }
}

/// A request's body as read: what the core needs to know of it, and this isolate's hold on its
/// bytes while it is answered.
struct ReadBody<'i> {
    bytes: Vec<u8>,
    too_large: bool,
    overloaded: bool,
    _held: Option<Held<'i>>,
}

async fn read_request_body<'i>(
    req: &mut Request,
    heard: &Heard,
    config: &LoadedConfig,
    in_flight: &'i BytesInFlight,
) -> ReadBody<'i> {
    let unread = |too_large, overloaded| ReadBody {
        bytes: Vec::new(),
        too_large,
        overloaded,
        _held: None,
    };
    match body_read(&heard.method, heard.content_length.as_deref(), config) {
        BodyRead::None => unread(false, false),
        BodyRead::TooLarge => unread(true, false),
        BodyRead::Read {
            limit,
            declared,
            hold,
            max_in_flight,
        } => match in_flight.hold(hold, max_in_flight) {
            None => unread(false, true),
            Some(mut held) => {
                let (bytes, too_large) = read_body(req, declared, limit).await;
                held.shrink_to(bytes.len() as u64);
                ReadBody {
                    bytes,
                    too_large,
                    overloaded: false,
                    _held: Some(held),
                }
            }
        },
    }
}

async fn answer_request(mut req: Request, env: Env, answer: oneshot::Sender<Result<Response>>) {
    let config_rc = config_of(&env);
    let config: &LoadedConfig = &config_rc;
    let log = console(config);
    let health = HEALTH.with(Rc::clone);
    let kv = HealthKv::from_env(&env);
    // Read before routing the first request, then, when stale, after the answer.
    let due = match (&kv, config) {
        (Some(_), Ok(_)) => health.borrow_mut().shared_sync_due(now_ms()),
        _ => None,
    };
    if let (Some(SharedSync::Now), Some(kv), Ok(c)) = (due, &kv, config) {
        kv.sync(&c.routing, &health).await;
    }
    let limiter = BindingLimiter::from_env(&env, log);
    let heard = Heard::of(&req, config, &limiter);
    let in_flight = IN_FLIGHT.with(Rc::clone);
    let body = read_request_body(&mut req, &heard, config, &in_flight).await;
    // Aborted when the caller goes away: Groq's call with it.
    let caller = req.inner().signal();
    let scope = RequestScope {
        request_id: heard.request_id.clone(),
        caller_left: Box::new({
            let caller = caller.clone();
            move || caller.aborted()
        }),
        log,
        health,
        jwks: JWKS.with(Rc::clone),
        usage: UsageQueue::new(&env),
        budgets: DurableBudgets::from_env(&env),
        cache: WorkersCache::default(),
    };
    let io = Io {
        provider: &GroqFetch { caller },
        limiter: &limiter,
        tokens: &WebCrypto,
        budgets: &scope.budgets,
        cache: &scope.cache,
    };
    let reply = handle(http_request(&heard, &body), config, io, &scope.env()).await;
    drop(body);
    deliver(reply, answer, &scope).await;
    // After the answer: what this request taught the isolate, shared; what it spent, recorded.
    let learned = scope.health.borrow_mut().take_unshared();
    if let (Some(kv), Ok(c)) = (&kv, config) {
        if !learned.is_empty() {
            kv.share_gone(learned, c.routing.model_gone_ttl_ms, log)
                .await;
        }
        if due == Some(SharedSync::InBackground) {
            kv.sync(&c.routing, &scope.health).await;
        }
    }
    scope.budgets.flush(log).await;
    scope.cache.flush(log).await;
    scope.usage.flush(log);
}

fn http_request<'r>(heard: &'r Heard, body: &'r ReadBody<'_>) -> HttpRequest<'r> {
    HttpRequest {
        method: &heard.method,
        path: &heard.path,
        authorization: heard.authorization.as_deref(),
        access_jwt: heard.access_jwt.as_deref(),
        content_type: heard.content_type.as_deref(),
        origin: heard.origin.as_deref(),
        requested_headers: heard.requested_headers.as_deref(),
        client_ip: heard.client_ip.as_deref(),
        cache_control: heard.cache_control.as_deref(),
        body: &body.bytes,
        body_too_large: body.too_large,
        overloaded: body.overloaded,
    }
}

/// Hands the answer to the fetch handler (gone when the caller left: nobody to answer); a
/// stream's relay then runs to its end.
async fn deliver(
    reply: Reply<http::Body<GroqFetch>>,
    answer: oneshot::Sender<Result<Response>>,
    scope: &RequestScope,
) {
    match reply {
        Reply::Full(response) => {
            let built = match response.body.is_empty() {
                true => builder(&response).map(ResponseBuilder::empty),
                false => builder(&response).map(|b| b.fixed(response.body)),
            };
            let _ = answer.send(built);
        }
        Reply::Stream { head, relay } => match stream::pipe() {
            Ok((readable, mut sink)) => {
                let _ = answer.send(builder(&head).map(|b| b.stream(readable)));
                relay.run(&mut sink, &scope.env()).await;
            }
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        },
    }
}

/// What a request's `RequestEnv` borrows, owned for as long as the request is answered (a
/// stream's relay included).
struct RequestScope {
    request_id: String,
    caller_left: Box<dyn Fn() -> bool>,
    log: ConsoleLog,
    health: Rc<RefCell<HealthBook>>,
    jwks: Rc<RefCell<KeySet>>,
    usage: UsageQueue,
    budgets: DurableBudgets,
    cache: WorkersCache,
}

impl RequestScope {
    fn env(&self) -> RequestEnv<'_> {
        RequestEnv {
            request_id: &self.request_id,
            now_ms: &now_ms,
            caller_left: &*self.caller_left,
            log: &self.log,
            health: &self.health,
            jwks: &self.jwks,
            usage: &self.usage,
            settlements: &self.budgets,
            cache_writes: &self.cache,
        }
    }
}

/// Runs on the cron in `wrangler.toml`: asks Groq which models exist and retires the ones in use
/// that it no longer lists. A failed probe changes nothing.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    #[derive(Serialize)]
    struct ProbeFailed<'a> {
        error: &'a str,
    }
    console_error_panic_hook::set_once();
    let config = config_of(&env);
    let log = console(&config);
    let probed = match config.as_ref() {
        Err(_) => Err("configuration is invalid; see /healthz".to_string()),
        Ok(c) => match c.routing.groq_api_key.as_deref() {
            None => Err("the `GROQ_API_KEY` secret is not set".to_string()),
            Some(key) => match upstream::list_models(&c.routing, key).await {
                Ok(listed) => Ok((&c.routing, listed)),
                // The runtime's words may quote the URL, or a proxy's key within it.
                Err(why) => Err(redact(&why, &[key, &c.routing.groq_base_url])),
            },
        },
    };
    let (config, listed) = match probed {
        Ok(probed) => probed,
        Err(why) => {
            let line = ProbeFailed { error: &why };
            return write(&log, Level::Error, "probe_failed", &line);
        }
    };
    let health = HEALTH.with(Rc::clone);
    let kv = HealthKv::from_env(&env);
    if let Some(kv) = &kv {
        // Learn what other isolates shared first, so a verdict Groq now contradicts is cleared
        // from KV too.
        kv.sync(config, &health).await;
    }
    let result = probe::apply(config, &listed, &mut health.borrow_mut(), now_ms(), &log);
    if let Some(kv) = kv {
        kv.share_gone(result.retired, config.model_gone_ttl_ms, log)
            .await;
        kv.clear(&result.cleared).await;
    }
}

fn config_of(env: &Env) -> Rc<LoadedConfig> {
    CONFIG.with(|c| {
        c.get_or_init(|| Rc::new(Config::load(&EnvBindings(env))))
            .clone()
    })
}

/// The request body, read up to `limit` bytes: `(body, too_large)`. A body that cannot be read
/// counts as empty (the parser then answers 400).
async fn read_body(req: &mut Request, declared: bool, limit: u64) -> (Vec<u8>, bool) {
    if declared {
        // A declared size within the limit: one read (the runtime holds the body to its length).
        return (req.bytes().await.unwrap_or_default(), false);
    }
    let Ok(mut chunks) = req.stream() else {
        return (Vec::new(), false);
    };
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return (Vec::new(), false);
        };
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            // Dropping the stream cancels it: the rest is never read.
            return (body, true);
        }
    }
    (body, false)
}

/// Status and headers of an answer to the caller.
fn builder(response: &HttpResponse) -> Result<ResponseBuilder> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    Ok(ResponseBuilder::new()
        .with_status(response.status)
        .with_headers(headers))
}

/// Work that goes on after the response or the caller, through `wait_until`. Boxed, so every such
/// task shares one copy of the promise glue in the bundle instead of one per future type.
fn background(ctx: &Context, task: impl std::future::Future<Output = ()> + 'static) {
    ctx.wait_until(Box::pin(task) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>);
}

pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Bindings read from the Worker `Env`: strings as text, `[vars]` tables as JSON.
struct EnvBindings<'a>(&'a Env);

impl Bindings for EnvBindings<'_> {
    fn get(&self, name: &str) -> Option<BindingValue> {
        let value = js_sys::Reflect::get(self.0, &name.into())
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())?;
        if let Some(text) = value.as_string() {
            return Some(BindingValue::Text(text));
        }
        // Tables from `[vars]` as their JSON text; numbers and booleans as the text they read as.
        let json = js_sys::JSON::stringify(&value).ok()?.as_string()?;
        Some(if value.is_object() {
            BindingValue::Json(json)
        } else {
            BindingValue::Text(json)
        })
    }
}

/// The console, at this isolate's `LOG_LEVEL`: the core's lines and the shell's own.
type ConsoleLog = Filtered<Console>;

fn console(config: &LoadedConfig) -> ConsoleLog {
    Filtered {
        inner: Console,
        min: http::log_level(config),
    }
}

#[derive(Clone, Copy)]
struct Console;

impl Log for Console {
    /// `console.info` / `.warn` / `.error`, so Workers Logs records each line at its own level.
    fn emit(&self, level: Level, line: String) {
        let line = line.into();
        match level {
            Level::Info => web_sys::console::info_1(&line),
            Level::Warn => web_sys::console::warn_1(&line),
            Level::Error => web_sys::console::error_1(&line),
        }
    }
}
