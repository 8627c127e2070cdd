//! The native tests' one setup: a scripted fake `Provider` (each model answers as scripted, every
//! call is recorded, a fake clock advances by each answer's latency), bindings as tests write
//! them, and `exchange`, which sends one request through the router's HTTP API and runs a
//! streamed answer's relay to its end.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use serde_json::{json, Value};
use task_router::bindings::{BindingValue, ConfigFinding};
use task_router::groq::provider::{
    Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead,
};
use task_router::http::budget::{BudgetStore, NoBudgets, Scope, Settlements};
use task_router::http::cache::{CacheWrites, CachedAnswer, NoCache, ResponseCache};
use task_router::http::config::Config;
use task_router::http::config::LoadedConfig;
use task_router::http::jwt::{KeySet, NoTokens, TokenVerification};
use task_router::http::ledger::{Amount, Exceeded, Ledger, LimitUsage};
use task_router::http::limit::{RateLimiter, Unlimited};
use task_router::http::mock::EitherBody;
use task_router::http::record::{RequestRecord, UsageSink};
use task_router::http::relay::{ChunkSink, PipeSink, Piped};
use task_router::http::{handle, log_level, HttpRequest, HttpResponse, Io, Reply, RequestEnv};
use task_router::routing::health::HealthBook;
use task_router::routing::log::{Filtered, Level, MemoryLog};

/// A whole canned answer: status, the headers the router reads, and the body.
#[derive(Clone, Debug, Default)]
pub struct UpstreamReply {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<String>,
    pub reset_tokens: Option<String>,
    pub reset_requests: Option<String>,
}

/// One step of a scripted streaming body.
#[derive(Clone, Debug)]
pub enum Step {
    /// These bytes, after this many ms of fake time.
    Bytes(Vec<u8>, u64),
    Fail(TransportError),
}

/// Polls a future that never waits on anything real (the scripted provider is always ready).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a scripted future should never be pending"),
    }
}

/// What one model does when called.
#[derive(Clone, Debug)]
pub enum Script {
    Reply(UpstreamReply),
    Fail(TransportError),
    /// A `200 text/event-stream` whose body arrives in steps, then ends.
    Stream(Vec<Step>),
}

pub fn completion(model: &str) -> Script {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hello from {model}")},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"queue_time": 0.01, "prompt_tokens": 55, "prompt_time": 0.01, "completion_tokens": 12,
                  "completion_time": 0.02, "total_tokens": 67, "total_time": 0.03},
        "system_fingerprint": "fp_1", "x_groq": {"id": "req_1"}, "service_tier": "on_demand"
    });
    reply(200, &body.to_string())
}

pub fn reply(status: u16, body: &str) -> Script {
    Script::Reply(UpstreamReply {
        status,
        body: body.as_bytes().to_vec(),
        ..UpstreamReply::default()
    })
}

pub fn groq_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Script {
    let mut error = json!({"message": message, "type": kind});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    reply(status, &json!({ "error": error }).to_string())
}

/// Groq's error written as `"STATUS TYPE[/CODE] MESSAGE"`, e.g.
/// `"400 invalid_request_error/json_validate_failed Failed to generate JSON"`.
pub fn groq(spec: &str) -> Script {
    let (status, rest) = spec.split_once(' ').expect("STATUS TYPE[/CODE] MESSAGE");
    let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let (kind, code) = kind
        .split_once('/')
        .map_or((kind, None), |(k, c)| (k, Some(c)));
    groq_error(status.parse().expect("a status"), kind, code, message)
}

pub fn gone_404(model: &str) -> Script {
    let message = format!("The model `{model}` does not exist or you do not have access to it.");
    groq_error(
        404,
        "invalid_request_error",
        Some("model_not_found"),
        &message,
    )
}

pub fn rate_limited(retry_after: &str) -> Script {
    let Script::Reply(mut r) = groq("429 tokens/rate_limit_exceeded Rate limit reached for model `m` in organization `org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5000, Requested 1500. Please try again in 7.66s.") else {
        unreachable!()
    };
    r.retry_after = Some(retry_after.to_string());
    r.reset_tokens = Some("7.66s".to_string());
    Script::Reply(r)
}

/// Groq's 413: this request is larger than `model`'s tokens-per-minute limit.
pub fn too_large(model: &str) -> Script {
    groq(&format!("413 tokens/rate_limit_exceeded Request too large for model `{model}` in organization `org_01abc` on tokens per minute (TPM): Limit 6000, Requested 14368, please reduce your message size and try again."))
}

#[derive(Debug, Clone)]
pub struct Call {
    pub model: String,
    pub url: String,
    pub body: Value,
    pub timeout_ms: u64,
}

#[derive(Default)]
pub struct ScriptedProvider {
    scripts: BTreeMap<String, (Script, u64)>,
    pub calls: RefCell<Vec<Call>>,
    pub clock: Rc<Cell<u64>>,
    /// Whether the last body handed out was read to its end.
    pub last_body_read_to_end: Rc<Cell<bool>>,
    /// The caller goes away once this many calls have been made.
    pub caller_leaves_after: Cell<Option<usize>>,
}

impl ScriptedProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// `model` answers `script` after `latency_ms` of fake time.
    pub fn on(mut self, model: &str, script: Script, latency_ms: u64) -> Self {
        self.scripts.insert(model.to_string(), (script, latency_ms));
        self
    }

    pub fn models_called(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|c| c.model.clone())
            .collect()
    }

    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    /// Whether the caller has gone away (see `caller_leaves_after`).
    pub fn caller_left(&self) -> bool {
        self.caller_leaves_after
            .get()
            .is_some_and(|n| self.calls.borrow().len() >= n)
    }
}

impl Provider for ScriptedProvider {
    type Body = ScriptedBody;

    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> Result<(UpstreamHead, ScriptedBody), TransportError> {
        self.calls.borrow_mut().push(Call {
            model: call.model.to_string(),
            url: call.url.to_string(),
            body: serde_json::from_slice(&call.body.to_vec()).expect("the router sends JSON"),
            timeout_ms: call.timeout_ms,
        });
        let script = self.scripts.get(call.model).cloned();
        let (script, latency) = script.unwrap_or_else(|| panic!("no script for {}", call.model));
        self.clock
            .set(self.clock.get() + latency.min(call.timeout_ms));
        self.last_body_read_to_end.set(false);
        let body = |steps: Vec<Step>| ScriptedBody {
            steps: steps.into(),
            clock: self.clock.clone(),
            read_to_end: self.last_body_read_to_end.clone(),
        };
        match script {
            Script::Reply(r) => {
                let head = UpstreamHead {
                    status: r.status,
                    retry_after: r.retry_after,
                    reset_tokens: r.reset_tokens,
                    reset_requests: r.reset_requests,
                };
                Ok((head, body(vec![Step::Bytes(r.body, 0)])))
            }
            Script::Fail(e) => Err(e),
            Script::Stream(steps) => {
                let head = UpstreamHead {
                    status: 200,
                    ..UpstreamHead::default()
                };
                Ok((head, body(steps)))
            }
        }
    }
}

pub struct ScriptedBody {
    steps: VecDeque<Step>,
    clock: Rc<Cell<u64>>,
    read_to_end: Rc<Cell<bool>>,
}

impl UpstreamBody for ScriptedBody {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Result<Option<Vec<u8>>, TransportError> {
        match self.steps.pop_front() {
            None => {
                self.read_to_end.set(true);
                Ok(None)
            }
            Some(Step::Fail(e)) => Err(e),
            Some(Step::Bytes(_, latency)) if latency > timeout_ms => {
                self.clock.set(self.clock.get() + timeout_ms);
                Err(TransportError::Timeout)
            }
            Some(Step::Bytes(bytes, latency)) => {
                self.clock.set(self.clock.get() + latency);
                Ok(Some(bytes))
            }
        }
    }
}

/// Collects what a relay writes. With `STREAM_RELAY=pipe` it plays the runtime's pipe too: each
/// `relayed` moves the piped body's next step to the caller, as the pipe would, and gives the
/// relay a copy of it.
#[derive(Default)]
pub struct SinkBuffer {
    pub written: Vec<Vec<u8>>,
    pub closed: bool,
    /// The body handed to the pipe.
    piped: Option<ScriptedBody>,
    /// The relay stopped Groq's body.
    pub stopped: bool,
    /// The caller leaves once this many writes (or piped steps) have reached it: later ones fail.
    pub gone_after: Option<usize>,
    /// The pipe's failure was reported.
    pipe_failed: bool,
}

impl SinkBuffer {
    /// A sink whose caller leaves once `n` writes (or piped steps) have reached it.
    pub fn leaving_after(n: usize) -> SinkBuffer {
        SinkBuffer {
            gone_after: Some(n),
            ..SinkBuffer::default()
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.written.concat()).unwrap()
    }

    fn caller_gone(&self) -> bool {
        self.gone_after.is_some_and(|n| self.written.len() >= n)
    }
}

impl ChunkSink for SinkBuffer {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        if self.caller_gone() {
            return Err(());
        }
        self.written.push(bytes);
        Ok(())
    }

    async fn close(&mut self) {
        self.closed = true;
    }
}

impl PipeSink<EitherBody<ScriptedBody>> for SinkBuffer {
    fn pipe(&mut self, body: EitherBody<ScriptedBody>) -> Result<(), EitherBody<ScriptedBody>> {
        match body {
            EitherBody::Real(body) => {
                self.piped = Some(body);
                Ok(())
            }
            mock => Err(mock),
        }
    }

    async fn relayed(&mut self, _batch_ms: u64, idle_ms: u64) -> Piped {
        let gone = self.caller_gone();
        let Some(body) = self.piped.as_mut() else {
            return Piped::End;
        };
        if self.stopped {
            // A stopped body's copy ends as the runtime's does: with an error.
            return Piped::Failed(TransportError::Connection("stopped".into()));
        }
        match body.next_chunk(idle_ms).await {
            Ok(Some(bytes)) if gone && !self.pipe_failed => {
                // The pipe fails writing these; the copy still holds them.
                self.pipe_failed = true;
                body.steps.push_front(Step::Bytes(bytes, 0));
                Piped::PipeFailed
            }
            Ok(Some(bytes)) if gone => Piped::Bytes(bytes),
            Ok(Some(bytes)) => {
                self.written.push(bytes.clone());
                Piped::Bytes(bytes)
            }
            Ok(None) => Piped::End,
            Err(TransportError::Connection(why)) if !self.pipe_failed => {
                // Groq's connection broke: the pipe fails with it, and so does the copy.
                self.pipe_failed = true;
                body.steps
                    .push_front(Step::Fail(TransportError::Connection(why)));
                Piped::PipeFailed
            }
            Err(e) => Piped::Failed(e),
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}

/// A stream step: `text` after `ms` of fake time.
pub fn bytes(text: &str, ms: u64) -> Step {
    Step::Bytes(text.as_bytes().to_vec(), ms)
}

/// The lines a `MemoryLog` collected, each parsed as the JSON object it must be.
pub fn parsed(log: MemoryLog) -> Vec<(Level, Value)> {
    log.0
        .into_inner()
        .into_iter()
        .map(|(level, line)| {
            let line = serde_json::from_str(&line).expect("a log line is one JSON object");
            (level, line)
        })
        .collect()
}

/// Every log line (the default, said where a harness reads request lines).
pub const EVERY_LINE: (&str, &str) = ("LOG_LEVEL", "info");

/// Bindings as a test writes them: text values, except `MODEL_REGISTRY` given as JSON. A name
/// given twice takes its last value, so a test can override a harness's baseline.
pub fn bindings(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, BindingValue> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        map.insert(*k, BindingValue::Text(v.to_string()));
    }
    map
}

pub fn load(pairs: &[(&'static str, &str)]) -> Result<Config, Vec<ConfigFinding>> {
    Config::load(&bindings(pairs))
}

/// The `x-request-id` of every exchange.
pub const REQUEST_ID: &str = "req_test";

/// One request's answer: the response (a stream's head), its body as text (for a stream, what
/// the relay wrote), and the log lines `LOG_LEVEL` let through.
pub struct Exchange {
    pub response: HttpResponse,
    pub text: String,
    pub streamed: bool,
    /// A stream's sink was closed by the relay.
    pub closed: bool,
    /// The relay stopped Groq's piped body (`STREAM_RELAY=pipe`).
    pub stopped: bool,
    pub log: Vec<(Level, Value)>,
    /// The Analytics Engine data points the request recorded.
    pub usage: Vec<UsagePoint>,
}

impl Exchange {
    /// The body as JSON; panics with the text when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }
}

/// A usage point as Analytics Engine gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePoint {
    pub index: String,
    pub blobs: [String; 7],
    pub doubles: [f64; 8],
}

/// Keeps the usage points a request records.
#[derive(Default)]
pub struct RecordedUsage(pub RefCell<Vec<UsagePoint>>);

impl UsageSink for RecordedUsage {
    fn record(&self, record: &RequestRecord) {
        self.0.borrow_mut().push(UsagePoint {
            index: record.usage_index().to_string(),
            blobs: record.usage_blobs(),
            doubles: record.usage_doubles(),
        });
    }
}

/// Sends `req` through `handle` with `provider`'s fake clock, logging at `config`'s `LOG_LEVEL`
/// as the Worker does.
pub fn exchange<L: RateLimiter>(
    config: &LoadedConfig,
    provider: &ScriptedProvider,
    limiter: &L,
    health: &RefCell<HealthBook>,
    req: HttpRequest<'_>,
) -> Exchange {
    let sink = SinkBuffer::default();
    exchange_into(config, provider, limiter, health, req, sink)
}

/// `exchange`, a stream's relay writing into `sink` (say, one whose caller leaves).
pub fn exchange_into<L: RateLimiter>(
    config: &LoadedConfig,
    provider: &ScriptedProvider,
    limiter: &L,
    health: &RefCell<HealthBook>,
    req: HttpRequest<'_>,
    sink: SinkBuffer,
) -> Exchange {
    let jwks = RefCell::default();
    let tokens = Tokens {
        crypto: &NoTokens,
        jwks: &jwks,
    };
    exchange_with(config, provider, limiter, health, tokens, req, sink)
}

/// What verifies users' JWTs in [`exchange_with`]: a fake `TokenVerification` and the isolate's
/// JWKS cache.
pub struct Tokens<'a, C> {
    pub crypto: &'a C,
    pub jwks: &'a RefCell<KeySet>,
}

/// [`exchange_into`] with users' tokens checked by `tokens`.
pub fn exchange_with<L: RateLimiter, C: TokenVerification>(
    config: &LoadedConfig,
    provider: &ScriptedProvider,
    limiter: &L,
    health: &RefCell<HealthBook>,
    tokens: Tokens<'_, C>,
    req: HttpRequest<'_>,
    sink: SinkBuffer,
) -> Exchange {
    let budgets = (&NoBudgets, &NoBudgets as &dyn Settlements);
    let cache = (&NoCache, &NoCache as &dyn CacheWrites);
    run_exchange(
        config,
        provider,
        (limiter, tokens, budgets, cache),
        health,
        req,
        sink,
    )
}

/// [`exchange_into`] with budgets kept in `ledgers` and the response cache in `cache` (both on
/// the provider's clock).
pub fn exchange_stored(
    config: &LoadedConfig,
    provider: &ScriptedProvider,
    (ledgers, cache): (&MemoryLedgers, &MemoryCache),
    req: HttpRequest<'_>,
    sink: SinkBuffer,
) -> Exchange {
    let tokens = Tokens {
        crypto: &NoTokens,
        jwks: &RefCell::default(),
    };
    let budgets = (ledgers, ledgers as &dyn Settlements);
    let cache = (cache, cache as &dyn CacheWrites);
    let io = (&Unlimited, tokens, budgets, cache);
    run_exchange(config, provider, io, &RefCell::default(), req, sink)
}

/// [`exchange_stored`] with no cache.
pub fn exchange_budgeted(
    config: &LoadedConfig,
    provider: &ScriptedProvider,
    ledgers: &MemoryLedgers,
    req: HttpRequest<'_>,
    sink: SinkBuffer,
) -> Exchange {
    let cache = MemoryCache::new(&provider.clock);
    exchange_stored(config, provider, (ledgers, &cache), req, sink)
}

/// What `run_exchange` reaches outside the router: the limiter, token checks, budgets, cache.
type Reached<'a, L, C, S, R> = (
    &'a L,
    Tokens<'a, C>,
    (&'a S, &'a dyn Settlements),
    (&'a R, &'a dyn CacheWrites),
);

fn run_exchange<L: RateLimiter, C: TokenVerification, S: BudgetStore, R: ResponseCache>(
    config: &LoadedConfig,
    provider: &ScriptedProvider,
    (limiter, tokens, (budgets, settlements), (cache, cache_writes)): Reached<'_, L, C, S, R>,
    health: &RefCell<HealthBook>,
    req: HttpRequest<'_>,
    mut sink: SinkBuffer,
) -> Exchange {
    let memory = MemoryLog::default();
    let log = Filtered {
        inner: &memory,
        min: log_level(config),
    };
    let clock = provider.clock.clone();
    let now = move || clock.get();
    let usage = RecordedUsage::default();
    let caller_left = || provider.caller_left();
    let env = RequestEnv {
        request_id: REQUEST_ID,
        now_ms: &now,
        caller_left: &caller_left,
        log: &log,
        health,
        jwks: tokens.jwks,
        usage: &usage,
        settlements,
        cache_writes,
    };
    let io = Io {
        provider,
        limiter,
        tokens: tokens.crypto,
        budgets,
        cache,
    };
    let reply = block_on(handle(req, config, io, &env));
    let (response, text, streamed) = match reply {
        Reply::Full(r) => {
            let text = String::from_utf8(r.body.clone()).expect("answers are UTF-8");
            (r, text, false)
        }
        Reply::Stream { head, relay } => {
            block_on(relay.run(&mut sink, &env));
            (head, sink.text(), true)
        }
    };
    Exchange {
        response,
        text,
        streamed,
        closed: sink.closed,
        stopped: sink.stopped,
        log: parsed(memory),
        usage: usage.0.into_inner(),
    }
}

/// The budgets' ledgers in memory, on the scripted provider's clock: what the Durable Objects
/// keep in the Worker. `down` makes every ledger unreachable; `asked` counts the operations.
pub struct MemoryLedgers {
    pub ledgers: RefCell<BTreeMap<String, Ledger>>,
    pub clock: Rc<Cell<u64>>,
    pub down: Cell<bool>,
    pub asked: Cell<usize>,
}

impl MemoryLedgers {
    pub fn new(clock: &Rc<Cell<u64>>) -> Self {
        MemoryLedgers {
            ledgers: RefCell::default(),
            clock: clock.clone(),
            down: Cell::new(false),
            asked: Cell::new(0),
        }
    }

    /// What `scope` has spent of `limits` now.
    pub fn usage_of(
        &self,
        scope: &str,
        limits: &task_router::http::ledger::Limits,
    ) -> Vec<LimitUsage> {
        let mut ledgers = self.ledgers.borrow_mut();
        let ledger = ledgers.entry(scope.to_string()).or_default();
        ledger.usage(limits, self.clock.get())
    }
}

impl BudgetStore for MemoryLedgers {
    async fn reserve(
        &self,
        scopes: &[Scope],
        hold: &str,
        amount: Amount,
    ) -> Vec<Result<Result<(), Exceeded>, String>> {
        let mut ledgers = self.ledgers.borrow_mut();
        let each = scopes.iter().map(|scope| {
            self.asked.set(self.asked.get() + 1);
            if self.down.get() {
                return Err("no answer within 1000 ms".to_string());
            }
            let ledger = ledgers.entry(scope.id.clone()).or_default();
            Ok(ledger.reserve(hold, amount, &scope.limits, self.clock.get()))
        });
        each.collect()
    }

    async fn usage(&self, scope: &Scope) -> Result<Vec<LimitUsage>, String> {
        self.asked.set(self.asked.get() + 1);
        match self.down.get() {
            true => Err("no answer within 1000 ms".to_string()),
            false => Ok(self.usage_of(&scope.id, &scope.limits)),
        }
    }
}

impl Settlements for MemoryLedgers {
    fn settle(&self, scope: &str, hold: &str, cost: Amount) {
        self.asked.set(self.asked.get() + 1);
        let mut ledgers = self.ledgers.borrow_mut();
        let ledger = ledgers.entry(scope.to_string()).or_default();
        ledger.settle(hold, cost, self.clock.get());
    }
}

/// The response cache in memory, on the scripted provider's clock: entries expire at their TTL
/// as the Cache API's do. The "digest" is the key's text itself, so tests can read it.
pub struct MemoryCache {
    pub entries: RefCell<BTreeMap<String, (CachedAnswer, u64)>>,
    pub clock: Rc<Cell<u64>>,
    /// Every key asked for, in order.
    pub asked: RefCell<Vec<String>>,
}

impl MemoryCache {
    pub fn new(clock: &Rc<Cell<u64>>) -> Self {
        MemoryCache {
            entries: RefCell::default(),
            clock: clock.clone(),
            asked: RefCell::default(),
        }
    }
}

impl ResponseCache for MemoryCache {
    async fn digest(&self, text: &[u8]) -> Result<String, String> {
        String::from_utf8(text.to_vec()).map_err(|e| e.to_string())
    }

    async fn get(&self, key: &str) -> Option<CachedAnswer> {
        self.asked.borrow_mut().push(key.to_string());
        let entries = self.entries.borrow();
        let (answer, expires_ms) = entries.get(key)?;
        (*expires_ms > self.clock.get()).then(|| answer.clone())
    }
}

impl CacheWrites for MemoryCache {
    fn put(&self, key: &str, answer: CachedAnswer, ttl_s: u64) {
        let expires_ms = answer.stored_ms + ttl_s * 1000;
        self.entries
            .borrow_mut()
            .insert(key.to_string(), (answer, expires_ms));
    }
}
