//! The Worker shell: converts between the Workers runtime and the routing core. It reads
//! bindings, calls Groq with `fetch` (the only code that talks to Groq), streams relayed bodies,
//! writes log lines with `console`, and builds `Response`s. Every rule lives in the core.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use worker::{event, js_sys, web_sys, Context, Env, Result, ScheduleContext, ScheduledEvent};

use crate::api::{handle, HttpRequest, HttpResponse, Reply, RequestEnv};
use crate::config::{BindingValue, Bindings, Config, DEFAULT_MAX_REQUEST_BYTES};
use crate::health::{GoneVerdict, HealthBook};
use crate::json::JsonObject;
use crate::limit::RateLimiter;
use crate::log::{Level, Log};
use crate::probe;
use crate::provider::{Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead};
use crate::relay::ChunkSink;

/// The optional KV namespace that shares "gone" verdicts across isolates and locations.
const HEALTH_KV_BINDING: &str = "MODEL_HEALTH";
/// The optional Workers Rate Limiting binding, keyed per client.
const RATE_LIMITER_BINDING: &str = "CLIENT_RATE_LIMITER";
const GONE_KEY_PREFIX: &str = "gone:";
/// How stale this isolate's copy of the shared verdicts may get.
const KV_SYNC_INTERVAL_MS: u64 = 60_000;
/// KV refuses shorter expirations.
const KV_MIN_TTL_S: u64 = 60;

thread_local! {
    /// Model health memory for the life of this isolate (Workers run one thread per isolate).
    static HEALTH: Rc<RefCell<HealthBook>> = Rc::default();
    /// The parsed configuration: bindings are fixed for an isolate's life (changing a var or a
    /// secret deploys a new version, served by new isolates), so they are read and validated once.
    static CONFIG: std::cell::OnceCell<Rc<ConfigResult>> = const { std::cell::OnceCell::new() };
    /// When this isolate last read the shared verdicts from KV.
    static SYNCED_AT: Cell<Option<u64>> = const { Cell::new(None) };
    /// Promise callbacks free for the next awaited promise (see `Settler`).
    static SETTLERS: RefCell<Vec<Settler>> = const { RefCell::new(Vec::new()) };
    /// The headers of every chat call to Groq: built once per isolate (its key, like all of its
    /// configuration, is fixed for its life), and read (not changed) by each `fetch`.
    static GROQ_HEADERS: std::cell::OnceCell<JsValue> = const { std::cell::OnceCell::new() };
}

/// Spare `Settler`s kept per isolate: enough for the promises its concurrent requests await at
/// once; a burst past it makes new ones, freed when they are done.
const SPARE_SETTLERS: usize = 64;

/// Takes and returns the runtime's own `Request` / `Response`: `worker::Request` would also copy
/// the path into a Rust string and materialize `request.cf` on every request, which the router
/// never reads.
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<web_sys::Response> {
    console_error_panic_hook::set_once();
    let health = HEALTH.with(Rc::clone);
    let kv = HealthKv::from_env(&env);
    if let Some(kv) = &kv {
        // A new isolate reads the shared verdicts before routing; later refreshes happen after
        // the response, so no request waits on KV.
        match SYNCED_AT.with(Cell::get) {
            None => sync_shared(kv.clone(), health.clone()).await,
            Some(at) if now_ms().saturating_sub(at) > KV_SYNC_INTERVAL_MS => {
                SYNCED_AT.with(|s| s.set(Some(now_ms())));
                ctx.wait_until(boxed(sync_shared(kv.clone(), health.clone())));
            }
            Some(_) => {}
        }
    }
    let config = config_of(&env);
    let config = config.as_ref();
    let log = ConsoleLog::for_config(config);
    let limiter = BindingLimiter::from_env(&env, log);

    let headers = req.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    let request_id = request_id(header("x-request-id"));
    let (authorization, content_type, content_length) = (
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
    let client_ip = limiter
        .0
        .is_some()
        .then(|| header("cf-connecting-ip"))
        .flatten();
    let method = req.method();
    let url = req.url();
    let path = path_of(&url);

    let max_bytes = config
        .as_ref()
        .map_or(DEFAULT_MAX_REQUEST_BYTES, |c| c.max_request_bytes);
    let declared = content_length.and_then(|l| l.trim().parse::<u64>().ok());
    let (body, body_too_large) = match (method.as_str(), declared) {
        ("GET" | "HEAD" | "OPTIONS", _) => (Vec::new(), false),
        // A declared size over the limit is refused without reading a byte.
        (_, Some(length)) if length > max_bytes => (Vec::new(), true),
        // Within the limit: one read, one copy (the runtime holds the body to its length).
        (_, Some(_)) => (read_whole(&req).await, false),
        _ => read_limited(&req, max_bytes).await,
    };

    let reply = handle(
        HttpRequest {
            method: &method,
            path,
            authorization: authorization.as_deref(),
            content_type: content_type.as_deref(),
            origin: origin.as_deref(),
            client_ip: client_ip.as_deref(),
            body: &body,
            body_too_large,
        },
        config,
        &GroqFetch,
        &limiter,
        &RequestEnv {
            request_id: &request_id,
            now_ms: &now_ms,
            log: &log,
            health: &health,
        },
    )
    .await;

    let learned = health.borrow_mut().take_unshared();
    if let (Some(kv), false, Ok(config)) = (kv, learned.is_empty(), config) {
        ctx.wait_until(boxed(share_gone(
            kv,
            learned,
            config.model_gone_ttl_ms,
            log,
        )));
    }

    match reply {
        Reply::Full(response) => {
            let init = init_of(&response)?;
            if response.body.is_empty() {
                // No body at all: a 204 (a preflight's answer) must not have one, even empty.
                return Ok(web_sys::Response::new_with_opt_buffer_source_and_init(
                    None, &init,
                )?);
            }
            // A view of the body in wasm memory, copied once by the `Response` constructor;
            // nothing allocates between making the view and that call.
            let body = unsafe { js_sys::Uint8Array::view(response.body.as_bytes()) };
            Ok(web_sys::Response::new_with_opt_buffer_source_and_init(
                Some(&body),
                &init,
            )?)
        }
        Reply::Stream { head, relay } => {
            let pipe = IdentityTransformStream::new()?;
            let writer = pipe.writable().get_writer()?;
            // `wait_until` keeps the relay running after the handler has returned the response.
            ctx.wait_until(boxed(async move {
                relay
                    .run(&mut StreamWriter::new(writer), &now_ms, &log)
                    .await;
            }));
            Ok(web_sys::Response::new_with_opt_readable_stream_and_init(
                Some(&pipe.readable()),
                &init_of(&head)?,
            )?)
        }
    }
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The Workers runtime's native byte pipe: what is written to its writable side goes to the
    /// response without passing through the JS stream machinery a standard `TransformStream`
    /// runs for every chunk.
    type IdentityTransformStream;
    #[wasm_bindgen(constructor, catch)]
    fn new() -> std::result::Result<IdentityTransformStream, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &IdentityTransformStream) -> web_sys::ReadableStream;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &IdentityTransformStream) -> web_sys::WritableStream;
}

type ConfigResult = std::result::Result<Config, Vec<crate::config::ConfigError>>;

fn config_of(env: &Env) -> Rc<ConfigResult> {
    CONFIG.with(|c| {
        c.get_or_init(|| Rc::new(Config::load(&EnvBindings(env))))
            .clone()
    })
}

/// The whole request body; empty if it cannot be read (the parser then answers 400).
async fn read_whole(req: &web_sys::Request) -> Vec<u8> {
    let Ok(promise) = req.array_buffer() else {
        return Vec::new();
    };
    match settled(promise).await {
        Ok(buffer) => js_sys::Uint8Array::new(&buffer).to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Reads the request body, stopping as soon as it exceeds `max_bytes` (a chunked body has no
/// `Content-Length` to refuse up front). A body that cannot be read counts as empty.
async fn read_limited(req: &web_sys::Request, max_bytes: u64) -> (Vec<u8>, bool) {
    let Some(stream) = req.body() else {
        return (Vec::new(), false);
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut body = Vec::new();
    loop {
        let Ok(result) = settled(reader.read()).await else {
            return (Vec::new(), false);
        };
        let result: ReadResult = result.unchecked_into();
        if result.done() {
            return (body, false);
        }
        let Ok(chunk) = result.value().dyn_into::<js_sys::Uint8Array>() else {
            return (Vec::new(), false);
        };
        // Copied once, straight into the body's tail.
        let filled = body.len();
        body.resize(filled + chunk.length() as usize, 0);
        chunk.copy_to(&mut body[filled..]);
        if body.len() as u64 > max_bytes {
            // Stop reading; the rest is never buffered.
            let _ = reader.cancel();
            return (body, true);
        }
    }
}

/// The `CLIENT_RATE_LIMITER` binding, when configured. Called through its JS `limit({key})`
/// method directly: `worker::RateLimiter` checks the binding's constructor name, which differs
/// under `wrangler dev`, so the typed getter would silently find no limiter there.
struct BindingLimiter(Option<RateLimitBinding>, ConsoleLog);

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// A Workers Rate Limiting binding: `limit({key})` resolves to `{success}`.
    type RateLimitBinding;
    /// Its answer is checked to be a promise before it is awaited.
    #[wasm_bindgen(method, catch)]
    fn limit(this: &RateLimitBinding, options: &JsValue) -> std::result::Result<JsValue, JsValue>;

    type LimitOutcome;
    #[wasm_bindgen(method, getter, catch)]
    fn success(this: &LimitOutcome) -> std::result::Result<JsValue, JsValue>;
}

impl BindingLimiter {
    fn from_env(env: &Env, log: ConsoleLog) -> Self {
        BindingLimiter(
            binding(env, RATE_LIMITER_BINDING).map(JsCast::unchecked_into),
            log,
        )
    }

    async fn check(binding: &RateLimitBinding, key: &str) -> std::result::Result<bool, JsValue> {
        // `{key}` as JSON: one string across the wasm boundary.
        let options = js_sys::JSON::parse(&JsonObject::new().str("key", key).finish())?;
        let promise: js_sys::Promise = binding.limit(&options)?.dyn_into()?;
        let outcome: LimitOutcome = settled(promise).await?.unchecked_into();
        Ok(outcome.success()?.is_truthy())
    }
}

impl RateLimiter for BindingLimiter {
    async fn allow(&self, key: &str) -> bool {
        let Some(binding) = &self.0 else {
            return true;
        };
        match BindingLimiter::check(binding, key).await {
            Ok(allowed) => allowed,
            // Fail open: a limiter outage must not take the router down with it.
            Err(_) => {
                self.1.emit(
                    Level::Warn,
                    Level::Warn.line("rate_limiter_unavailable").finish(),
                );
                true
            }
        }
    }
}

/// Runs on the cron in `wrangler.toml`: asks Groq which models exist and retires the ones in use
/// that it no longer lists. A failed probe changes nothing.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_error_panic_hook::set_once();
    let config = config_of(&env);
    let log = ConsoleLog::for_config(config.as_ref());
    let fail = |why: String| {
        log.emit(
            Level::Error,
            Level::Error
                .line("probe_failed")
                .str("error", &why)
                .finish(),
        )
    };
    let config = match config.as_ref() {
        Ok(config) => config,
        Err(errors) => {
            return fail(format!(
                "configuration is invalid ({} problems); see /healthz",
                errors.len()
            ))
        }
    };
    let Some(api_key) = config.groq_api_key.as_deref() else {
        return fail("the `GROQ_API_KEY` secret is not set".to_string());
    };
    let url = format!("{}/openai/v1/models", config.groq_base_url);
    let fetched = async {
        let headers = groq_headers(api_key, false)?;
        let (response, mut deadline) = fetch_groq(
            &url,
            "GET",
            &headers,
            None,
            config.attempt_timeout_ms,
            false,
        )
        .await?;
        let body = read_body(&response, config.attempt_timeout_ms, &mut deadline).await?;
        Ok::<_, TransportError>((response.status(), body))
    };
    let listed = match fetched.await {
        Ok((status, body)) => probe::listed_models(status, &body),
        Err(TransportError::Timeout) => Err("timed out".to_string()),
        Err(TransportError::Connection(why)) => Err(why),
    };
    let listed = match listed {
        Ok(listed) => listed,
        Err(why) => return fail(why),
    };
    let health = HEALTH.with(Rc::clone);
    let result = probe::apply(config, &listed, &mut health.borrow_mut(), now_ms(), &log);
    if let Some(kv) = HealthKv::from_env(&env) {
        share_gone(kv.clone(), result.retired, config.model_gone_ttl_ms, log).await;
        for (model, _) in kv.read_gone().await.unwrap_or_default() {
            if result.listed.contains(&model) {
                kv.delete_gone(&model).await;
            }
        }
    }
}

/// Reads the shared verdicts into this isolate's memory.
async fn sync_shared(kv: HealthKv, health: Rc<RefCell<HealthBook>>) {
    SYNCED_AT.with(|s| s.set(Some(now_ms())));
    if let Some(shared) = kv.read_gone().await {
        health.borrow_mut().sync_shared(&shared, now_ms());
    }
}

/// Writes gone verdicts to KV with an expiry, so every isolate learns them.
async fn share_gone(
    kv: HealthKv,
    verdicts: Vec<(String, GoneVerdict)>,
    ttl_ms: u64,
    log: ConsoleLog,
) {
    for (model, verdict) in verdicts {
        if kv
            .put_gone(&model, &verdict, (ttl_ms / 1000).max(KV_MIN_TTL_S))
            .await
            .is_err()
        {
            let line = Level::Warn
                .line("kv_write_failed")
                .str("model", &model)
                .finish();
            log.emit(Level::Warn, line);
        }
    }
}

/// The `MODEL_HEALTH` KV namespace, called through its JS methods (`list`, `put`, `delete`):
/// `worker::KvStore` decodes listings through `serde_wasm_bindgen` into `serde_json::Value`,
/// which would put both in the bundle for three small calls.
#[derive(Clone)]
struct HealthKv(JsValue);

impl HealthKv {
    fn from_env(env: &Env) -> Option<HealthKv> {
        binding(env, HEALTH_KV_BINDING).map(HealthKv)
    }

    async fn call(&self, method: &str, args: &[JsValue]) -> std::result::Result<JsValue, JsValue> {
        let function: js_sys::Function =
            js_sys::Reflect::get(&self.0, &JsValue::from_str(method))?.dyn_into()?;
        let args: js_sys::Array = args.iter().collect();
        let promise: js_sys::Promise = function.apply(&self.0, &args)?.dyn_into()?;
        settled(promise).await
    }

    /// The gone verdicts in KV; `None` if KV could not be read.
    async fn read_gone(&self) -> Option<Vec<(String, GoneVerdict)>> {
        let options = object(&[("prefix", JsValue::from_str(GONE_KEY_PREFIX))]).ok()?;
        let listing = self.call("list", &[options.into()]).await.ok()?;
        let keys: js_sys::Array = get(&listing, "keys")?.dyn_into().ok()?;
        let verdicts = keys
            .iter()
            .filter_map(|key| {
                let name = get(&key, "name")?.as_string()?;
                let model = name.strip_prefix(GONE_KEY_PREFIX)?.to_string();
                let metadata = get(&key, "metadata");
                let field = |f: &str| metadata.as_ref().and_then(|m| get(m, f));
                let verdict = GoneVerdict {
                    since_ms: field("since_ms").and_then(|v| v.as_f64()).unwrap_or(0.0) as u64,
                    until_ms: get(&key, "expiration")?.as_f64()? as u64 * 1000,
                    reason: field("reason")
                        .and_then(|v| v.as_string())
                        .unwrap_or_else(|| "shared".to_string()),
                };
                Some((model, verdict))
            })
            .collect();
        Some(verdicts)
    }

    async fn put_gone(
        &self,
        model: &str,
        verdict: &GoneVerdict,
        ttl_s: u64,
    ) -> std::result::Result<(), JsValue> {
        let metadata = object(&[
            ("since_ms", JsValue::from_f64(verdict.since_ms as f64)),
            ("reason", JsValue::from_str(&verdict.reason)),
        ])?;
        let options = object(&[
            ("expirationTtl", JsValue::from_f64(ttl_s as f64)),
            ("metadata", metadata.into()),
        ])?;
        let key = JsValue::from_str(&format!("{GONE_KEY_PREFIX}{model}"));
        self.call("put", &[key, JsValue::from_str("gone"), options.into()])
            .await
            .map(drop)
    }

    async fn delete_gone(&self, model: &str) {
        let key = JsValue::from_str(&format!("{GONE_KEY_PREFIX}{model}"));
        // Best effort: a verdict left behind expires on its own.
        let _ = self.call("delete", &[key]).await;
    }
}

/// An optional binding (KV namespace, rate limiter): present when `env` holds an object by that name.
fn binding(env: &Env, name: &str) -> Option<JsValue> {
    get(env.as_ref(), name).filter(JsValue::is_object)
}

fn get(object: &JsValue, field: &str) -> Option<JsValue> {
    js_sys::Reflect::get(object, &JsValue::from_str(field))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

fn object(fields: &[(&str, JsValue)]) -> std::result::Result<js_sys::Object, JsValue> {
    let object = js_sys::Object::new();
    for (name, value) in fields {
        js_sys::Reflect::set(&object, &JsValue::from_str(name), value)?;
    }
    Ok(object)
}

/// Every background task as one type: each distinct future given to `wait_until` would otherwise
/// get its own copy of the promise glue in the bundle.
fn boxed(
    future: impl Future<Output = ()> + 'static,
) -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(future)
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Status and headers of a response to the caller, as one JSON text the runtime parses: one
/// string across the wasm boundary, where a `Headers` object takes two per header and a call each.
/// (A name given twice keeps its last value, as `Headers.set` would.)
fn init_of(response: &HttpResponse) -> Result<web_sys::ResponseInit> {
    let headers = response
        .headers
        .iter()
        .fold(JsonObject::new(), |headers, (name, value)| {
            headers.str(name, value)
        });
    let init = JsonObject::new()
        .num("status", response.status.into())
        .raw("headers", &headers.finish())
        .finish();
    Ok(js_sys::JSON::parse(&init)?.unchecked_into())
}

/// `https://host/a/b?q` → `/a/b`, without parsing the URL (the `url` crate's tables would be
/// linked into the bundle for nothing).
fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("/")
}

/// The caller's `x-request-id` when it is a sane token, else a fresh random one.
fn request_id(incoming: Option<String>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id
        }
        _ => {
            let a = (js_sys::Math::random() * 4294967296.0) as u64;
            let b = (js_sys::Math::random() * 4294967296.0) as u64;
            format!("req_{:016x}", (a << 32) | b)
        }
    }
}

/// Bindings read from the Worker `Env`: strings as text, `[vars]` tables as JSON.
struct EnvBindings<'a>(&'a Env);

impl Bindings for EnvBindings<'_> {
    fn get(&self, name: &str) -> Option<BindingValue> {
        let value = get(self.0.as_ref(), name)?;
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

/// The console, writing the lines `LOG_LEVEL` lets through: the core's and the shell's own.
#[derive(Clone, Copy)]
struct ConsoleLog {
    min: Level,
}

impl ConsoleLog {
    fn for_config(config: &ConfigResult) -> ConsoleLog {
        ConsoleLog {
            min: crate::api::log_level(config),
        }
    }
}

impl Log for ConsoleLog {
    /// `console.info` / `.warn` / `.error`, so Workers Logs records each line at its own level.
    /// (`console.log` would also cost `wrangler dev` a source-mapping pass over every line.)
    fn emit(&self, level: Level, line: String) {
        if !self.enabled(level) {
            return;
        }
        let line = JsValue::from_str(&line);
        match level {
            Level::Info => web_sys::console::info_1(&line),
            Level::Warn => web_sys::console::warn_1(&line),
            Level::Error => web_sys::console::error_1(&line),
        }
    }

    fn enabled(&self, level: Level) -> bool {
        level >= self.min
    }
}

/// The JS error itself is not kept: formatting it would link `Debug` machinery into the bundle
/// for a message no caller sees.
fn connection_error<E>(_: E) -> TransportError {
    TransportError::Connection("the fetch to Groq failed".to_string())
}

/// A `setTimeout` that any task may await (`worker::Delay` wakes only the task that first polled
/// it, and a stream's body outlives the handler's task); cleared when dropped before it fires.
struct Timer {
    due_ms: u64,
    id: i32,
    state: Rc<TimerState>,
    _callback: Closure<dyn FnMut()>,
}

#[derive(Default)]
struct TimerState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Timer {
    fn start(ms: u64) -> std::result::Result<Timer, TransportError> {
        let state = Rc::new(TimerState::default());
        let shared = state.clone();
        let callback = Closure::<dyn FnMut()>::new(move || {
            shared.fired.set(true);
            if let Some(waker) = shared.waker.borrow_mut().take() {
                waker.wake();
            }
        });
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let id = global
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms.min(i32::MAX as u64) as i32,
            )
            .map_err(connection_error)?;
        Ok(Timer {
            due_ms: now_ms().saturating_add(ms),
            id,
            state,
            _callback: callback,
        })
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.state.fired.get() {
            return Poll::Ready(());
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.state.fired.get() {
            let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            global.clear_timeout_with_handle(self.id);
        }
    }
}

/// The time limits of a streamed upstream call (its answer's head, then each chunk), kept with
/// one timer: a timer due before the current deadline is re-armed when it fires, so a stream
/// whose idle deadline moves forward with every chunk costs one timer, not one per chunk.
struct Watchdog {
    abort: web_sys::AbortController,
    timer: Option<Timer>,
}

impl Watchdog {
    fn new() -> std::result::Result<Watchdog, TransportError> {
        Ok(Watchdog {
            abort: web_sys::AbortController::new().map_err(connection_error)?,
            timer: None,
        })
    }

    /// Awaits `promise` for at most `timeout_ms`; past it, aborts the fetch behind it.
    async fn within(
        &mut self,
        promise: js_sys::Promise,
        timeout_ms: u64,
    ) -> std::result::Result<JsValue, TransportError> {
        let mut answer = settled(promise);
        let deadline = now_ms().saturating_add(timeout_ms);
        loop {
            let now = now_ms();
            if now >= deadline {
                self.abort.abort();
                return Err(TransportError::Timeout);
            }
            let timer = match self.timer.take() {
                Some(timer) if timer.due_ms <= deadline => timer,
                // None yet, or due after this deadline (dropping it clears it).
                _ => Timer::start(deadline - now)?,
            };
            let timer = self.timer.insert(timer);
            match first_of(&mut answer, timer).await {
                Some(result) => return result.map_err(connection_error),
                // Fired: past the deadline (checked above), or early for a later deadline.
                None => self.timer = None,
            }
        }
    }
}

/// How an upstream call is timed.
enum Deadline {
    /// One deadline for the whole answer, head and body: an `AbortSignal.timeout` the runtime
    /// keeps, so the call needs no timer or callback of ours.
    Fixed(web_sys::AbortSignal),
    /// A stream's: the head's deadline, then one per chunk, each from when it is awaited.
    Moving(Watchdog),
}

impl Deadline {
    /// Awaits `promise`, a step of the call (its head, its body, a chunk). `timeout_ms` applies
    /// to a moving deadline; a fixed one was set when the call started.
    async fn within(
        &mut self,
        promise: js_sys::Promise,
        timeout_ms: u64,
    ) -> std::result::Result<JsValue, TransportError> {
        match self {
            Deadline::Fixed(signal) => settled(promise).await.map_err(|e| {
                if signal.aborted() {
                    TransportError::Timeout
                } else {
                    connection_error(e)
                }
            }),
            Deadline::Moving(watchdog) => watchdog.within(promise, timeout_ms).await,
        }
    }
}

/// Groq over the Workers `fetch` API.
struct GroqFetch;

/// Starts a request to Groq and waits for the response head, at most `timeout_ms`. With
/// `streamed`, the body's chunks are timed one by one after that; otherwise the same
/// `timeout_ms` from now bounds the whole answer.
async fn fetch_groq(
    url: &str,
    method: &str,
    headers: &JsValue,
    body: Option<&[u8]>,
    timeout_ms: u64,
    streamed: bool,
) -> std::result::Result<(web_sys::Response, Deadline), TransportError> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(headers);
    let mut deadline = if streamed {
        let watchdog = Watchdog::new()?;
        init.set_signal(Some(&watchdog.abort.signal()));
        Deadline::Moving(watchdog)
    } else {
        let signal = web_sys::AbortSignal::timeout_with_f64(timeout_ms as f64);
        init.set_signal(Some(&signal));
        Deadline::Fixed(signal)
    };
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let promise = match body {
        Some(body) => {
            // A view of the body in wasm memory, copied by `fetch` when it builds its request;
            // nothing allocates between making the view and that call.
            let view = unsafe { js_sys::Uint8Array::view(body) };
            init.set_body(&view);
            global.fetch_with_str_and_init(url, &init)
        }
        None => global.fetch_with_str_and_init(url, &init),
    };
    let response = deadline
        .within(promise, timeout_ms)
        .await?
        .dyn_into()
        .map_err(connection_error)?;
    Ok((response, deadline))
}

/// `authorization` (and, for a body, `content-type`) for a call to Groq, as a plain object for
/// `fetch`'s `headers`.
fn groq_headers(api_key: &str, json_body: bool) -> std::result::Result<JsValue, TransportError> {
    let headers = JsonObject::new()
        .str("authorization", &format!("Bearer {api_key}"))
        .maybe(json_body.then_some(()), |h, ()| {
            h.str("content-type", "application/json")
        })
        .finish();
    js_sys::JSON::parse(&headers).map_err(connection_error)
}

/// The chat calls' headers: made once per isolate (the key is fixed for its life), then shared.
fn chat_headers(api_key: &str) -> std::result::Result<JsValue, TransportError> {
    GROQ_HEADERS.with(|cached| {
        if let Some(headers) = cached.get() {
            return Ok(headers.clone());
        }
        let headers = groq_headers(api_key, true)?;
        Ok(cached.get_or_init(|| headers).clone())
    })
}

async fn read_body(
    response: &web_sys::Response,
    timeout_ms: u64,
    deadline: &mut Deadline,
) -> std::result::Result<Vec<u8>, TransportError> {
    let promise = response.array_buffer().map_err(connection_error)?;
    let buffer = deadline.within(promise, timeout_ms).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

impl Provider for GroqFetch {
    type Body = FetchBody;

    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> std::result::Result<(UpstreamHead, FetchBody), TransportError> {
        let headers = chat_headers(call.api_key)?;
        let (response, deadline) = fetch_groq(
            call.url,
            "POST",
            &headers,
            Some(call.body.as_bytes()),
            call.timeout_ms,
            call.streamed,
        )
        .await?;
        let status = response.status();
        // The retry hints only matter for a refusal; a success skips three runtime calls.
        let headers = (!(200..300).contains(&status)).then(|| response.headers());
        let header = |name: &str| headers.as_ref()?.get(name).ok().flatten();
        let head = UpstreamHead {
            status,
            retry_after: header("retry-after"),
            reset_tokens: header("x-ratelimit-reset-tokens"),
            reset_requests: header("x-ratelimit-reset-requests"),
        };
        Ok((
            head,
            FetchBody {
                response,
                reader: None,
                deadline,
            },
        ))
    }
}

struct FetchBody {
    response: web_sys::Response,
    reader: Option<web_sys::ReadableStreamDefaultReader>,
    deadline: Deadline,
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// What `ReadableStreamDefaultReader.read()` resolves to.
    type ReadResult;
    #[wasm_bindgen(method, getter)]
    fn done(this: &ReadResult) -> bool;
    #[wasm_bindgen(method, getter)]
    fn value(this: &ReadResult) -> JsValue;
}

/// Awaits promises through one pair of callbacks that outlives them: `JsFuture` makes (and frees)
/// two wasm closures for every promise, and a request awaits four or more (a stream, one per
/// chunk). An isolate keeps spare settlers; `settled` lends one for a promise and takes it back
/// once that promise has settled.
struct Settler {
    state: Rc<SettlerState>,
    callbacks: Option<Callbacks>,
}

type Callbacks = (Closure<dyn FnMut(JsValue)>, Closure<dyn FnMut(JsValue)>);

#[derive(Default)]
struct SettlerState {
    /// A promise was handed to the callbacks and has not settled yet.
    pending: Cell<bool>,
    result: RefCell<Option<std::result::Result<JsValue, JsValue>>>,
    waker: RefCell<Option<Waker>>,
    /// The callbacks of a settler given up on before its promise settled (a timed-out read):
    /// kept until it does, since JS would otherwise call freed closures.
    orphaned: RefCell<Option<Callbacks>>,
}

impl SettlerState {
    fn settle(&self, result: std::result::Result<JsValue, JsValue>) {
        self.pending.set(false);
        // Freed after this call returns (wasm-bindgen defers it while the closure runs).
        drop(self.orphaned.borrow_mut().take());
        *self.result.borrow_mut() = Some(result);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

impl Settler {
    fn new() -> Settler {
        let state = Rc::new(SettlerState::default());
        let (ok, err) = (state.clone(), state.clone());
        let on_value = Closure::new(move |value| ok.settle(Ok(value)));
        let on_error = Closure::new(move |error| err.settle(Err(error)));
        Settler {
            state,
            callbacks: Some((on_value, on_error)),
        }
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        if self.state.pending.get() {
            *self.state.orphaned.borrow_mut() = self.callbacks.take();
        }
    }
}

/// Awaits `promise` with a spare `Settler`.
fn settled(promise: js_sys::Promise) -> Settled {
    let settler = SETTLERS
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(Settler::new);
    if let Some((on_value, on_error)) = &settler.callbacks {
        settler.state.pending.set(true);
        // The promise `then` returns settles when a callback has run; nothing awaits it.
        let _ = promise.then2(on_value, on_error);
    }
    Settled(Some(settler))
}

/// A promise being awaited; its `Settler` goes back to the spares once the promise has settled.
struct Settled(Option<Settler>);

impl Future for Settled {
    type Output = std::result::Result<JsValue, JsValue>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let Some(settler) = &self.0 else {
            return Poll::Pending;
        };
        let result = settler.state.result.borrow_mut().take();
        match result {
            Some(result) => {
                if let Some(settler) = self.0.take() {
                    recycle(settler);
                }
                Poll::Ready(result)
            }
            None => {
                *settler.state.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Settled {
    fn drop(&mut self) {
        if let Some(settler) = self.0.take() {
            recycle(settler);
        }
    }
}

/// Returns a settler to the spares; one whose promise is still pending is dropped instead
/// (which keeps its callbacks until the promise settles).
fn recycle(settler: Settler) {
    if settler.state.pending.get() {
        return;
    }
    settler.state.result.borrow_mut().take();
    settler.state.waker.borrow_mut().take();
    SETTLERS.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_SETTLERS {
            spare.push(settler);
        }
    });
}

impl UpstreamBody for FetchBody {
    async fn next_chunk(
        &mut self,
        timeout_ms: u64,
    ) -> std::result::Result<Option<Vec<u8>>, TransportError> {
        if self.reader.is_none() {
            let Some(stream) = self.response.body() else {
                return Ok(None);
            };
            self.reader = Some(stream.get_reader().unchecked_into());
        }
        let Some(reader) = &self.reader else {
            return Ok(None);
        };
        let result: ReadResult = self
            .deadline
            .within(reader.read(), timeout_ms)
            .await?
            .unchecked_into();
        if result.done() {
            return Ok(None);
        }
        let chunk: js_sys::Uint8Array = result.value().dyn_into().map_err(connection_error)?;
        Ok(Some(chunk.to_vec()))
    }

    async fn read_all(mut self, timeout_ms: u64) -> std::result::Result<Vec<u8>, TransportError> {
        read_body(&self.response, timeout_ms, &mut self.deadline).await
    }
}

/// The writable side of the response body's pipe. Writes are queued without waiting for each
/// to be taken (the stream keeps their order; what is queued is bounded by the answer's length),
/// which spares two callbacks and a microtask round per chunk: a stream of N tokens is N writes.
/// A failed write (the caller went away) is caught by one handler per stream and reported by
/// the next `write`.
struct StreamWriter {
    writer: web_sys::WritableStreamDefaultWriter,
    failed: Rc<Cell<bool>>,
    on_failure: Closure<dyn FnMut(JsValue)>,
}

impl StreamWriter {
    fn new(writer: web_sys::WritableStreamDefaultWriter) -> StreamWriter {
        let failed = Rc::new(Cell::new(false));
        let flag = failed.clone();
        StreamWriter {
            writer,
            failed,
            on_failure: Closure::new(move |_: JsValue| flag.set(true)),
        }
    }
}

impl ChunkSink for StreamWriter {
    async fn write(&mut self, bytes: Vec<u8>) -> std::result::Result<(), ()> {
        if self.failed.get() {
            return Err(());
        }
        let chunk = js_sys::Uint8Array::from(bytes.as_slice());
        // `catch` handles the rejection, so a caller who left is no unhandled-rejection error.
        let _ = self.writer.write_with_chunk(&chunk).catch(&self.on_failure);
        Ok(())
    }

    async fn close(&mut self) {
        // Waits for the queued writes. The caller may already have gone; closing then fails and
        // there is nothing to do.
        let _ = settled(self.writer.close()).await;
    }
}

/// Runs both futures; `Some` with `a`'s output if it finishes first, `None` if `b` does.
async fn first_of<A: Future, B: Future<Output = ()>>(a: A, b: B) -> Option<A::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
