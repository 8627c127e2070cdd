//! The Worker shell: adapts the core to the Workers runtime. The entry points (`fetch`,
//! `scheduled`), bindings and the console are here; the Groq fetch, KV, the rate limiter and the
//! response stream each have a file. The shell moves bytes and calls the runtime; every rule,
//! limit and cadence is the core's.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use futures_util::StreamExt;
use worker::{
    event, js_sys, web_sys, Context, Env, Headers, Request, Response, ResponseBuilder, Result,
    ScheduleContext, ScheduledEvent,
};

use crate::groq::outcome::redact;
use crate::http::jwt::KeySet;
use crate::http::{self, body_limit, handle, HttpRequest, HttpResponse, Loaded, Reply, RequestEnv};
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
    /// The parsed configuration: bindings are fixed for an isolate's life (changing a var or a
    /// secret deploys a new version, served by new isolates), so they are read and validated once.
    static CONFIG: OnceCell<Rc<Loaded>> = const { OnceCell::new() };
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let health = HEALTH.with(Rc::clone);
    let jwks = JWKS.with(Rc::clone);
    let config_rc = config_of(&env);
    let config: &Loaded = &config_rc;
    let log = console(config);
    let kv = HealthKv::from_env(&env);
    if let (Some(kv), Ok(c)) = (&kv, config) {
        let due = health.borrow_mut().shared_sync_due(now_ms());
        match due {
            Some(SharedSync::Now) => kv.sync(c, &health).await,
            Some(SharedSync::InBackground) => {
                let (kv, health, config) = (kv.clone(), health.clone(), config_rc.clone());
                background(&ctx, async move {
                    if let Ok(c) = config.as_ref().as_ref() {
                        kv.sync(c, &health).await
                    }
                });
            }
            None => {}
        }
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
    let jwt = config.as_ref().is_ok_and(|c| c.client_auth.jwt.is_some());
    let access_jwt = jwt.then(|| header("cf-access-jwt-assertion")).flatten();
    let client_ip = limiter
        .is_bound()
        .then(|| header("cf-connecting-ip"))
        .flatten();
    // The raw method: `worker::Method` reads every method it does not know as GET.
    let method = req.inner().method();
    let path = req.path();
    let (body, body_too_large) = match body_limit(&method, config) {
        None => (Vec::new(), false),
        Some(limit) => read_body(&mut req, length.as_deref(), limit).await,
    };

    let shared = Borrowed {
        request_id,
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
            client_ip: client_ip.as_deref(),
            body: &body,
            body_too_large,
        },
        config,
        &GroqFetch,
        &limiter,
        &WebCrypto,
        &shared.env(),
    )
    .await;

    let learned = shared.health.borrow_mut().take_unshared();
    if let (Some(kv), false, Ok(c)) = (kv, learned.is_empty(), config.as_ref()) {
        let ttl_ms = c.model_gone_ttl_ms;
        background(
            &ctx,
            async move { kv.share_gone(learned, ttl_ms, log).await },
        );
    }

    let response = match reply {
        Reply::Full(response) => response,
        Reply::Stream { head, relay } => {
            let (readable, mut sink) = stream::pipe()?;
            // `wait_until` keeps the relay running after the handler has returned the response.
            background(&ctx, async move {
                relay.run(&mut sink, &shared.env()).await;
                shared.usage.flush(log);
            });
            return Ok(builder(&head)?.stream(readable));
        }
    };
    if shared.usage.pending() {
        background(&ctx, async move { shared.usage.flush(log) });
    }
    match response.body.is_empty() {
        true => Ok(builder(&response)?.empty()),
        false => Ok(builder(&response)?.fixed(response.body)),
    }
}

/// What a request's `RequestEnv` borrows, owned: by the handler, then (for a stream) by the
/// relay, which runs on after the handler has returned.
struct Borrowed {
    request_id: String,
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

/// The request body, read up to `limit` bytes: `(body, too_large)`. A body that declares a
/// larger `Content-Length` is refused without reading a byte; one that cannot be read counts as
/// empty (the parser then answers 400).
async fn read_body(req: &mut Request, length: Option<&str>, limit: u64) -> (Vec<u8>, bool) {
    match length.and_then(|l| l.trim().parse::<u64>().ok()) {
        Some(length) if length > limit => (Vec::new(), true),
        // A declared size within the limit: one read (the runtime holds the body to its length).
        Some(_) => (req.bytes().await.unwrap_or_default(), false),
        None => {
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
    }
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

/// Work that goes on after the response, through `wait_until`. Boxed, so every such task shares
/// one copy of the promise glue in the bundle instead of one per future type.
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
