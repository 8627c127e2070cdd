//! The Worker shell: adapts the core to the Workers runtime. The entry points (`fetch`,
//! `scheduled`), bindings and the console are here; the Groq fetch, KV, the rate limiter and the
//! response stream each have a file. The shell moves bytes and calls the runtime; every rule,
//! limit and cadence is the core's.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use futures_channel::oneshot;
use futures_util::StreamExt;
use worker::{
    event, js_sys, web_sys, Context, Env, Headers, Request, Response, ResponseBuilder, Result,
    ScheduleContext, ScheduledEvent,
};

use crate::groq::outcome::redact;
use crate::http::jwt::KeySet;
use crate::http::limit::BytesInFlight;
use crate::http::RequestEnv;
use crate::http::{self, body_read, handle, BodyRead, HttpRequest, HttpResponse, Loaded, Reply};
use crate::routing::config::{BindingValue, Bindings, Config};
use crate::routing::health::{HealthBook, SharedSync};
use crate::routing::log::{write, Filtered, Level, Log};
use crate::routing::probe;

mod crypto;
mod groq;
mod kv;
mod limiter;
mod stream;
mod usage;

use crypto::WebCrypto;
use groq::GroqFetch;
use kv::HealthKv;
use limiter::BindingLimiter;
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
    static CONFIG: OnceCell<Rc<Loaded>> = const { OnceCell::new() };
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

async fn answer_request(mut req: Request, env: Env, answer: oneshot::Sender<Result<Response>>) {
    let health = HEALTH.with(Rc::clone);
    let jwks = JWKS.with(Rc::clone);
    let config_rc = config_of(&env);
    let config: &Loaded = &config_rc;
    let log = console(config);
    let kv = HealthKv::from_env(&env);
    // Read before routing the first request, then, when stale, after the answer.
    let due = match (&kv, config) {
        (Some(_), Ok(_)) => health.borrow_mut().shared_sync_due(now_ms()),
        _ => None,
    };
    if let (Some(SharedSync::Now), Some(kv), Ok(c)) = (due, &kv, config) {
        kv.sync(c, &health).await;
    }
    let limiter = BindingLimiter::from_env(&env, log);

    let header = |name: &str| req.headers().get(name).ok().flatten();
    let request_id = http::request_id(header("x-request-id").as_deref(), || {
        (js_sys::Math::random() * 2f64.powi(64)) as u64
    });
    let (authorization, content_type, length) = (
        header("authorization"),
        header("content-type"),
        header("content-length"),
    );
    // Read only where they are used: the origin for CORS, the IP as an anonymous caller's
    // rate-limit key.
    let cors = config
        .as_ref()
        .is_ok_and(|c| c.allowed_origins.is_configured());
    let origin = cors.then(|| header("origin")).flatten();
    // The raw method: `worker::Method` reads every method it does not know as GET.
    let method = req.inner().method();
    let preflight = cors && method == "OPTIONS";
    let requested_headers = preflight
        .then(|| header("access-control-request-headers"))
        .flatten();
    let jwt = config.as_ref().is_ok_and(|c| c.client_auth.jwt.is_some());
    let access_jwt = jwt.then(|| header("cf-access-jwt-assertion")).flatten();
    let client_ip = limiter
        .is_bound()
        .then(|| header("cf-connecting-ip"))
        .flatten();
    let path = req.path();
    // Held until the answer is made (a stream's relay needs no request body).
    let in_flight = IN_FLIGHT.with(Rc::clone);
    let mut held = None;
    let (mut body_too_large, mut overloaded) = (false, false);
    let body = match body_read(&method, length.as_deref(), config) {
        BodyRead::None => Vec::new(),
        BodyRead::TooLarge => {
            body_too_large = true;
            Vec::new()
        }
        BodyRead::Read {
            limit,
            declared,
            hold,
            max_in_flight,
        } => match in_flight.hold(hold, max_in_flight) {
            None => {
                overloaded = true;
                Vec::new()
            }
            Some(hold) => {
                let (body, too_large) = read_body(&mut req, declared, limit).await;
                held.insert(hold).shrink_to(body.len() as u64);
                body_too_large = too_large;
                body
            }
        },
    };

    // Aborted when the caller goes away: Groq's call with it.
    let caller = req.inner().signal();
    let shared = Borrowed {
        request_id,
        caller_left: Box::new({
            let caller = caller.clone();
            move || caller.aborted()
        }),
        log,
        health,
        jwks,
        usage: UsageQueue::new(&env),
    };
    let reply = handle(
        HttpRequest {
            method: &method,
            path: &path,
            authorization: authorization.as_deref(),
            access_jwt: access_jwt.as_deref(),
            content_type: content_type.as_deref(),
            origin: origin.as_deref(),
            requested_headers: requested_headers.as_deref(),
            client_ip: client_ip.as_deref(),
            body: &body,
            body_too_large,
            overloaded,
        },
        config,
        &GroqFetch { caller },
        &limiter,
        &WebCrypto,
        &shared.env(),
    )
    .await;
    drop(held);
    drop(body);

    match reply {
        Reply::Full(response) => {
            let built = match response.body.is_empty() {
                true => builder(&response).map(ResponseBuilder::empty),
                false => builder(&response).map(|b| b.fixed(response.body)),
            };
            // Gone when the caller left: nobody to answer.
            let _ = answer.send(built);
        }
        Reply::Stream { head, relay } => match stream::pipe() {
            Ok((readable, mut sink)) => {
                let _ = answer.send(builder(&head).map(|b| b.stream(readable)));
                relay.run(&mut sink, &shared.env()).await;
            }
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        },
    }
    // After the answer: what this request taught the isolate, shared; what it spent, recorded.
    let learned = shared.health.borrow_mut().take_unshared();
    if let (Some(kv), Ok(c)) = (&kv, config) {
        if !learned.is_empty() {
            kv.share_gone(learned, c.model_gone_ttl_ms, log).await;
        }
        if due == Some(SharedSync::InBackground) {
            kv.sync(c, &shared.health).await;
        }
    }
    shared.usage.flush(log);
}

/// What a request's `RequestEnv` borrows, owned: by the handler, then (for a stream) by the
/// relay, which runs on after the handler has returned.
struct Borrowed {
    request_id: String,
    caller_left: Box<dyn Fn() -> bool>,
    log: ConsoleLog,
    health: Rc<RefCell<HealthBook>>,
    jwks: Rc<RefCell<KeySet>>,
    usage: UsageQueue,
}

impl Borrowed {
    fn env(&self) -> RequestEnv<'_> {
        RequestEnv {
            request_id: &self.request_id,
            now_ms: &now_ms,
            caller_left: &*self.caller_left,
            log: &self.log,
            health: &self.health,
            jwks: &self.jwks,
            usage: &self.usage,
        }
    }
}

/// Runs on the cron in `wrangler.toml`: asks Groq which models exist and retires the ones in use
/// that it no longer lists. A failed probe changes nothing.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    #[derive(serde::Serialize)]
    struct ProbeFailed<'a> {
        level: Level,
        event: &'static str,
        error: &'a str,
    }
    console_error_panic_hook::set_once();
    let config = config_of(&env);
    let config: &Loaded = &config;
    let log = console(config);
    let probed = match config.as_ref() {
        Err(_) => Err("configuration is invalid; see /healthz".to_string()),
        Ok(c) => match c.groq_api_key.as_deref() {
            None => Err("the `GROQ_API_KEY` secret is not set".to_string()),
            Some(key) => match groq::list_models(c, key).await {
                Ok(listed) => Ok((c, listed)),
                // The runtime's words may quote the URL, or a proxy's key within it.
                Err(why) => Err(redact(&why, &[key, &c.groq_base_url])),
            },
        },
    };
    let (config, listed) = match probed {
        Ok(probed) => probed,
        Err(why) => {
            let line = ProbeFailed {
                level: Level::Error,
                event: "probe_failed",
                error: &why,
            };
            return write(&log, Level::Error, &line);
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

fn config_of(env: &Env) -> Rc<Loaded> {
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

fn now_ms() -> u64 {
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

fn console(config: &Loaded) -> ConsoleLog {
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
