//! `StreamRelay`: forwards a committed Groq stream to the caller as it arrives, byte for byte,
//! and makes sure a stream that breaks after its first event never ends as if it were whole:
//! the caller gets an OpenAI-shaped error event and no `data: [DONE]`, and the break counts
//! against the model's health. Also the one request log line, for plain answers and streams.

use serde::Serialize;

use crate::groq::completion::Usage;
use crate::groq::cut;
use crate::groq::outcome::{classify_error, redact_org_ids, GroqError, Outcome};
use crate::groq::provider::{TransportError, UpstreamBody};
use crate::http::error::ErrorBody;
use crate::http::RequestEnv;
use crate::routing::config::Price;
use crate::routing::fallback::StreamStart;
use crate::routing::log::{write, Level};

/// Where the relay writes: the response body stream in the Worker, a buffer in tests.
#[allow(async_fn_in_trait)]
pub trait ChunkSink {
    /// `Err` when the caller has gone away (a sink that queues may learn it a write later).
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ()>;
    async fn close(&mut self);
}

/// What the request line reports; filled in before the stream starts.
#[derive(Debug, Clone)]
pub struct RequestSummary {
    pub request_id: String,
    pub task: String,
    pub client: Option<String>,
    pub model: Option<String>,
    /// The answering model's `MODEL_PRICES` entry.
    pub price: Option<Price>,
    pub attempts: usize,
    pub stream: bool,
    /// Answered by the mock provider: logged with `"mock": true`, no usage point, no health.
    pub mock: bool,
    pub started_ms: u64,
}

#[derive(Serialize)]
struct RequestLine<'a> {
    level: Level,
    event: &'static str,
    request_id: &'a str,
    task: &'a str,
    client: Option<&'a str>,
    model: Option<&'a str>,
    outcome: &'a str,
    status: u16,
    attempts: usize,
    fallback_used: bool,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cost_usd: Option<f64>,
    duration_ms: u64,
    stream: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mock: bool,
}

/// One routed request as Workers Analytics Engine keeps it, for months (`USAGE`): indexed by
/// client; blobs task, model, outcome, client, request id; doubles prompt, completion and total
/// tokens, cost in USD, duration in ms, attempts, fallback used (0 or 1). A count or a cost
/// Groq did not report (or no price gave) is 0 here; the log line says null.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePoint {
    pub index: String,
    pub blobs: [String; 5],
    pub doubles: [f64; 7],
}

/// Where usage points go: the `USAGE` dataset in the Worker, a list in tests.
pub trait UsageSink {
    fn record(&self, point: UsagePoint);
}

/// No `USAGE` binding.
pub struct NoUsage;

impl UsageSink for NoUsage {
    fn record(&self, _point: UsagePoint) {}
}

impl RequestSummary {
    /// Accounts for the request: its one log line, and its usage point.
    pub fn close(&self, env: &RequestEnv<'_>, outcome: &str, status: u16, usage: Usage) {
        let level = match (status, outcome) {
            (500.., _) => Level::Error,
            (_, "ok") => Level::Info,
            (200, _) => Level::Warn,
            _ => Level::Info,
        };
        let cost = self.price.and_then(|p| p.cost(&usage));
        let duration_ms = (env.now_ms)().saturating_sub(self.started_ms);
        let line = RequestLine {
            level,
            event: "request",
            request_id: &self.request_id,
            task: &self.task,
            client: self.client.as_deref(),
            model: self.model.as_deref(),
            outcome,
            status,
            attempts: self.attempts,
            fallback_used: self.attempts > 1,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
            cached_tokens: usage.cached_tokens(),
            cost_usd: cost,
            duration_ms,
            stream: self.stream,
            mock: self.mock,
        };
        write(env.log, level, &line);
        if self.mock {
            return;
        }
        let client = self.client.as_deref().unwrap_or("anonymous");
        let count = |n: Option<u64>| n.unwrap_or(0) as f64;
        env.usage.record(UsagePoint {
            // Analytics Engine keeps an index of at most 96 bytes.
            index: cut(client, 24).to_string(),
            blobs: [
                &self.task,
                self.model.as_deref().unwrap_or(""),
                outcome,
                client,
                &self.request_id,
            ]
            .map(str::to_string),
            doubles: [
                count(usage.prompt_tokens),
                count(usage.completion_tokens),
                count(usage.total_tokens),
                cost.unwrap_or(0.0),
                duration_ms as f64,
                self.attempts as f64,
                f64::from(u8::from(self.attempts > 1)),
            ],
        });
    }
}

pub struct StreamRelay<B> {
    pub start: StreamStart<B>,
    /// A committed stream that goes quiet for this long is broken.
    pub idle_timeout_ms: u64,
    /// For the health book, should the stream report its model gone.
    pub gone_ttl_ms: u64,
    pub summary: RequestSummary,
}

impl<B: UpstreamBody> StreamRelay<B> {
    /// Relays to the end, then records a break in the model's health and writes the request line.
    pub async fn run<S: ChunkSink>(self, sink: &mut S, env: &RequestEnv<'_>) {
        let StreamRelay {
            start,
            idle_timeout_ms,
            gone_ttl_ms,
            summary,
        } = self;
        let StreamStart {
            first,
            mut scanner,
            mut body,
            mut usage,
            mut done,
        } = start;

        let mut broken: Option<StreamBreak> = None;
        let mut client_gone = sink.write(first).await.is_err();
        while !done && !client_gone && broken.is_none() {
            match body.next_chunk(idle_timeout_ms).await {
                Ok(Some(chunk)) => {
                    let scanned = scanner.push(&chunk);
                    usage = scanned.usage.or(usage);
                    done = scanned.done;
                    if !scanned.forward.is_empty() {
                        client_gone = sink.write(scanned.forward).await.is_err();
                    }
                    broken = scanned.error.map(StreamBreak::Upstream);
                }
                Ok(None) => broken = Some(StreamBreak::EndedEarly),
                Err(TransportError::Timeout) => {
                    broken = Some(StreamBreak::Stalled(idle_timeout_ms))
                }
                Err(TransportError::Connection(_)) => broken = Some(StreamBreak::Dropped),
            }
        }
        // The model's health learns how its stream ended (a caller who left says nothing of it).
        let judged = match &broken {
            _ if client_gone => None,
            Some(b) => Some(b.outcome()),
            None => Some(Outcome::Ok),
        };
        if let (Some(outcome), Some(model), false) = (judged, &summary.model, summary.mock) {
            let now = (env.now_ms)();
            env.health
                .borrow_mut()
                .record(model, outcome, None, now, gone_ttl_ms);
        }
        let outcome = match &broken {
            _ if client_gone => "client_disconnected",
            Some(b) => {
                // Best effort: if this write fails too, the caller has gone and there is no one to tell.
                let _ = sink.write(b.event()).await;
                b.code()
            }
            None => "ok",
        };
        sink.close().await;
        summary.close(env, outcome, 200, usage.unwrap_or_default());
        if done {
            // Read what follows `[DONE]` (normally just the end) after the caller has its answer:
            // a body left unread keeps the runtime from reusing the connection to Groq, and
            // every stream would then pay a new TLS handshake.
            while let Ok(Some(_)) = body.next_chunk(idle_timeout_ms).await {}
        }
    }
}

/// Why a committed stream did not reach `[DONE]`.
enum StreamBreak {
    Upstream(GroqError),
    EndedEarly,
    Stalled(u64),
    Dropped,
}

impl StreamBreak {
    fn code(&self) -> &'static str {
        match self {
            StreamBreak::Upstream(_) => "upstream_stream_error",
            StreamBreak::EndedEarly => "stream_incomplete",
            StreamBreak::Stalled(_) => "stream_timeout",
            StreamBreak::Dropped => "stream_interrupted",
        }
    }

    /// What the break says of the model, as if the call had failed that way.
    fn outcome(&self) -> Outcome {
        match self {
            StreamBreak::Upstream(e) => {
                classify_error(e.status_code.unwrap_or(500), e.code.as_deref())
            }
            StreamBreak::EndedEarly => Outcome::UpstreamError,
            StreamBreak::Stalled(_) => Outcome::Timeout,
            StreamBreak::Dropped => Outcome::ConnectionError,
        }
    }

    /// `data: {"error":{…}}` in OpenAI's shape: the SDKs raise `APIError` on it.
    fn event(&self) -> Vec<u8> {
        let truncated = "; the answer is truncated";
        let error = match self {
            StreamBreak::Upstream(e) => ErrorBody::new(
                redact_org_ids(
                    e.message
                        .as_deref()
                        .unwrap_or("the model reported an error mid-stream"),
                ),
                e.kind.as_deref().unwrap_or("api_error"),
                e.code.as_deref().unwrap_or(self.code()),
            ),
            StreamBreak::Stalled(ms) => ErrorBody::new(
                format!("the model's stream stalled for {ms} ms{truncated}"),
                "api_error",
                self.code(),
            ),
            StreamBreak::Dropped => ErrorBody::new(
                format!("the connection to the model dropped mid-stream{truncated}"),
                "api_error",
                self.code(),
            ),
            StreamBreak::EndedEarly => ErrorBody::new(
                format!("the model's stream ended before it was complete{truncated}"),
                "api_error",
                self.code(),
            ),
        };
        [&b"data: "[..], &error.to_vec(), b"\n\n"].concat()
    }
}
