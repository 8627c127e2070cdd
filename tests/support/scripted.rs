//! The native tests' one setup: a scripted fake `Provider` (each model answers as scripted, every
//! call is recorded, a fake clock advances by each answer's latency), bindings as tests write
//! them, and `exchange`, which sends one request through the router's HTTP API and runs a
//! streamed answer's relay to its end.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use serde_json::{json, Value};
use task_router::groq::provider::{
    Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead,
};
use task_router::http::jwt::{KeySet, NoTokens, TokenCrypto};
use task_router::http::limit::RateLimiter;
use task_router::http::relay::{ChunkSink, UsagePoint, UsageSink};
use task_router::http::{handle, log_level, HttpRequest, HttpResponse, Loaded, Reply, RequestEnv};
use task_router::routing::config::{BindingValue, Config, ConfigError};
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

pub fn gone_404(model: &str) -> Script {
    groq_error(
        404,
        "invalid_request_error",
        Some("model_not_found"),
        &format!("The model `{model}` does not exist or you do not have access to it."),
    )
}

pub fn rate_limited(retry_after: &str) -> Script {
    let Script::Reply(mut r) = groq_error(
        429,
        "tokens",
        Some("rate_limit_exceeded"),
        "Rate limit reached for model `m` in organization `org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5000, Requested 1500. Please try again in 7.66s.",
    ) else {
        unreachable!()
    };
    r.retry_after = Some(retry_after.to_string());
    r.reset_tokens = Some("7.66s".to_string());
    Script::Reply(r)
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
            body: serde_json::from_slice(&call.body).expect("the router sends JSON"),
            timeout_ms: call.timeout_ms,
        });
        let (script, latency) = self
            .scripts
            .get(call.model)
            .cloned()
            .unwrap_or_else(|| panic!("no script for model {}", call.model));
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
            Script::Stream(steps) => Ok((
                UpstreamHead {
                    status: 200,
                    ..UpstreamHead::default()
                },
                body(steps),
            )),
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

/// Collects what a relay writes.
#[derive(Default)]
pub struct SinkBuffer {
    pub written: Vec<Vec<u8>>,
    pub closed: bool,
}

impl SinkBuffer {
    pub fn text(&self) -> String {
        String::from_utf8(self.written.concat()).unwrap()
    }
}

impl ChunkSink for SinkBuffer {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        self.written.push(bytes);
        Ok(())
    }

    async fn close(&mut self) {
        self.closed = true;
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
            (
                level,
                serde_json::from_str(&line).expect("a log line is one JSON object"),
            )
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

pub fn load(pairs: &[(&'static str, &str)]) -> Result<Config, Vec<ConfigError>> {
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

/// Keeps the usage points a request records.
#[derive(Default)]
pub struct RecordedUsage(pub RefCell<Vec<UsagePoint>>);

impl UsageSink for RecordedUsage {
    fn record(&self, point: UsagePoint) {
        self.0.borrow_mut().push(point);
    }
}

/// Sends `req` through `handle` with `provider`'s fake clock, logging at `config`'s `LOG_LEVEL`
/// as the Worker does.
pub fn exchange<L: RateLimiter>(
    config: &Loaded,
    provider: &ScriptedProvider,
    limiter: &L,
    health: &RefCell<HealthBook>,
    req: HttpRequest<'_>,
) -> Exchange {
    let tokens = Tokens {
        crypto: &NoTokens,
        jwks: &RefCell::default(),
    };
    exchange_with(config, provider, limiter, health, tokens, req)
}

/// What verifies users' JWTs in [`exchange_with`]: a fake `TokenCrypto` and the isolate's
/// JWKS cache.
pub struct Tokens<'a, C> {
    pub crypto: &'a C,
    pub jwks: &'a RefCell<KeySet>,
}

/// [`exchange`] with users' tokens checked by `tokens`.
pub fn exchange_with<L: RateLimiter, C: TokenCrypto>(
    config: &Loaded,
    provider: &ScriptedProvider,
    limiter: &L,
    health: &RefCell<HealthBook>,
    tokens: Tokens<'_, C>,
    req: HttpRequest<'_>,
) -> Exchange {
    let memory = MemoryLog::default();
    let log = Filtered {
        inner: &memory,
        min: log_level(config),
    };
    let clock = provider.clock.clone();
    let now = move || clock.get();
    let usage = RecordedUsage::default();
    let env = RequestEnv {
        request_id: REQUEST_ID,
        now_ms: &now,
        log: &log,
        health,
        jwks: tokens.jwks,
        usage: &usage,
    };
    let (response, text, streamed, closed) =
        match block_on(handle(req, config, provider, limiter, tokens.crypto, &env)) {
            Reply::Full(r) => {
                let text = String::from_utf8(r.body.clone()).expect("answers are UTF-8");
                (r, text, false, false)
            }
            Reply::Stream { head, relay } => {
                let mut sink = SinkBuffer::default();
                block_on(relay.run(&mut sink, &env));
                (head, sink.text(), true, sink.closed)
            }
        };
    Exchange {
        response,
        text,
        streamed,
        closed,
        log: parsed(memory),
        usage: usage.0.into_inner(),
    }
}
