//! `StreamRelay`: forwards a committed Groq stream to the caller as it arrives, byte for byte,
//! and makes sure a stream that breaks after its first event never ends as if it were whole:
//! the caller gets an OpenAI-shaped error event and no `data: [DONE]`.

use crate::completion::TokenCounts;
use crate::json::JsonObject;
use crate::log::{Filtered, Level, Log};
use crate::outcome::{redact_org_ids, GroqError};
use crate::provider::{TransportError, UpstreamBody};
use crate::router::StreamStart;

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
    pub attempts: usize,
    pub started_ms: u64,
}

impl RequestSummary {
    /// The one per-request log line, for plain answers and streams alike.
    pub fn log(&self, log: &dyn Log, now_ms: u64, outcome: &str, status: u16, tokens: TokenCounts) {
        let level = match (status, outcome) {
            (500.., _) => Level::Error,
            (_, "ok") => Level::Info,
            (200, _) => Level::Warn,
            _ => Level::Info,
        };
        if !log.enabled(level) {
            return;
        }
        let line = level
            .line("request")
            .str("request_id", &self.request_id)
            .str("task", &self.task)
            .opt_str("client", self.client.as_deref())
            .opt_str("model", self.model.as_deref())
            .str("outcome", outcome)
            .num("status", u64::from(status))
            .num("attempts", self.attempts as u64)
            .bool("fallback_used", self.attempts > 1)
            .opt_num("prompt_tokens", tokens.prompt_tokens)
            .opt_num("completion_tokens", tokens.completion_tokens)
            .opt_num("total_tokens", tokens.total_tokens)
            .num("duration_ms", now_ms.saturating_sub(self.started_ms))
            .finish();
        log.emit(level, line);
    }
}

pub struct StreamRelay<B> {
    pub start: StreamStart<B>,
    /// A committed stream that goes quiet for this long is broken.
    pub idle_timeout_ms: u64,
    pub summary: RequestSummary,
    /// `LOG_LEVEL`, applied to whatever log `run` is given.
    pub log_level: Level,
}

impl<B: UpstreamBody> StreamRelay<B> {
    /// Relays to the end, then writes the request log line.
    pub async fn run<S: ChunkSink>(self, sink: &mut S, now_ms: &dyn Fn() -> u64, log: &dyn Log) {
        let StreamRelay {
            start,
            idle_timeout_ms,
            summary,
            log_level,
        } = self;
        let log = &Filtered {
            inner: log,
            min: log_level,
        };
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
        let outcome = if client_gone {
            "client_disconnected"
        } else if let Some(b) = &broken {
            // Best effort: if this write fails too, the caller has gone and there is no one to tell.
            let _ = sink.write(b.event().into_bytes()).await;
            b.code()
        } else {
            "ok"
        };
        sink.close().await;
        summary.log(log, now_ms(), outcome, 200, usage.unwrap_or_default());
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

    /// `data: {"error":{…}}` in OpenAI's shape: the SDKs raise `APIError` on it.
    fn event(&self) -> String {
        let (message, kind, code) = match self {
            StreamBreak::Upstream(e) => (
                redact_org_ids(
                    e.message
                        .as_deref()
                        .unwrap_or("the model reported an error mid-stream"),
                ),
                e.kind.clone().unwrap_or_else(|| "api_error".to_string()),
                e.code.clone().unwrap_or_else(|| self.code().to_string()),
            ),
            StreamBreak::EndedEarly => (
                "the model's stream ended before it was complete; the answer is truncated"
                    .to_string(),
                "api_error".to_string(),
                self.code().to_string(),
            ),
            StreamBreak::Stalled(ms) => (
                format!("the model's stream stalled for {ms} ms; the answer is truncated"),
                "api_error".to_string(),
                self.code().to_string(),
            ),
            StreamBreak::Dropped => (
                "the connection to the model dropped mid-stream; the answer is truncated"
                    .to_string(),
                "api_error".to_string(),
                self.code().to_string(),
            ),
        };
        let error = JsonObject::new()
            .str("message", &message)
            .str("type", &kind)
            .str("code", &code)
            .finish();
        format!(
            "data: {}\n\n",
            JsonObject::new().raw("error", &error).finish()
        )
    }
}
