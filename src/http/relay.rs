//! `StreamRelay`: forwards a committed Groq stream to the caller as it arrives, byte for byte,
//! and makes sure a stream that breaks after its first event never ends as if it were whole:
//! the caller gets an OpenAI-shaped error event and no `data: [DONE]`, and the break counts
//! against the model's health. Two ways (`STREAM_RELAY`): `filter` reads every chunk and writes
//! on its whole events; `pipe` has the runtime pipe Groq's bytes to the caller and reads a copy
//! in batches, to learn how the stream ends and what it used.

use crate::bindings::{Bindings, Reader};
use crate::groq::completion::Usage;
use crate::groq::outcome::{redact_org_ids, GroqError, Outcome};
use crate::groq::provider::{TransportError, UpstreamBody};
use crate::groq::replay;
use crate::groq::sse::{Scanned, SseScanner};
use crate::http::cache::CachePlan;
use crate::http::error::ErrorBody;
use crate::http::record::RequestRecord;
use crate::http::RequestEnv;
use crate::routing::fallback::StreamStart;

/// `STREAM_RELAY`: how a committed stream's bytes reach the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// The runtime pipes Groq's bytes to the caller natively; the relay reads a copy in batches.
    Pipe,
    /// Every chunk passes through the relay before the caller sees it.
    Filter,
}

impl RelayMode {
    pub fn read<B: Bindings>(r: &mut Reader<'_, B>) -> RelayMode {
        r.one_of(
            "STREAM_RELAY",
            &[("pipe", RelayMode::Pipe), ("filter", RelayMode::Filter)],
            "\"pipe\" or \"filter\"",
        )
    }
}

/// Where the relay writes: the response body stream in the Worker, a buffer in tests.
#[allow(async_fn_in_trait)]
pub trait ChunkSink {
    /// `Err` when the caller has gone away (a sink that queues may learn it a write later).
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ()>;
    async fn close(&mut self);
}

/// How long a piped stream's copy is left to fill before the relay reads it (`STREAM_RELAY=pipe`):
/// a few reads a second, whatever the pace of the stream, and about as much of it buffered by
/// the runtime meanwhile. The idle deadline is kept to within this much too.
pub const PIPE_BATCH_MS: u64 = 100;

/// What a piped stream's copy says next (`PipeSink::relayed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piped {
    /// Bytes the pipe has relayed since the last call, as Groq sent them.
    Bytes(Vec<u8>),
    /// Groq's body ended, and with it the pipe.
    End,
    /// The pipe to the caller failed: the caller went away, or Groq's connection broke (the copy
    /// then fails too). Said once; the copy can still be read to its end.
    PipeFailed,
    /// The copy broke off (`Timeout`: nothing arrived within the idle limit).
    Failed(TransportError),
}

/// A response body the runtime can pipe an upstream body into itself (`STREAM_RELAY=pipe`), so
/// Groq's bytes reach the caller without passing through the relay one chunk at a time.
#[allow(async_fn_in_trait)]
pub trait PipeSink<B>: ChunkSink {
    /// Takes `body` over: after what has been written, the rest of it goes to the caller through
    /// the runtime's pipe. `Err(body)` when this body cannot be piped (the mock's); the relay
    /// then writes it on itself. `write` and `close` after a pipe wait until it has ended.
    fn pipe(&mut self, body: B) -> Result<(), B>;

    /// What the pipe relayed since the last call, read from a copy of it: after `batch_ms` (at
    /// once when 0, or once the pipe has ended), then waiting at most `idle_ms` for any bytes.
    async fn relayed(&mut self, batch_ms: u64, idle_ms: u64) -> Piped;

    /// Stops Groq's body: the pipe fails, and the copy ends once what it holds is read.
    fn stop(&mut self);
}

pub struct StreamRelay<B> {
    pub start: StreamStart<B>,
    /// A committed stream that goes quiet for this long is broken.
    pub idle_timeout_ms: u64,
    /// For the health book, should the stream report its model gone.
    pub gone_ttl_ms: u64,
    pub record: RequestRecord,
    /// `STREAM_RELAY`.
    pub mode: RelayMode,
    /// Where the answer is stored, should the stream end whole (`CACHE`).
    pub store: Option<CachePlan>,
}

/// How a committed stream went, as far as the relay has seen.
struct Progress {
    scanner: SseScanner,
    usage: Option<Usage>,
    /// `[DONE]` has been seen.
    done: bool,
    broken: Option<StreamBreak>,
    client_gone: bool,
    /// The stream's bytes so far, kept when it is to be stored whole (`CACHE`).
    kept: Option<Vec<u8>>,
}

impl Progress {
    /// What the request line says, and what the model's health learns of the stream (a caller
    /// who left says nothing of it); a broken stream's error event is written to the caller.
    async fn end<S: ChunkSink>(
        &self,
        sink: &mut S,
        piped: bool,
    ) -> (&'static str, Option<Outcome>) {
        match &self.broken {
            _ if self.client_gone => ("client_disconnected", None),
            Some(b) => {
                let mut event = b.event();
                if piped && self.scanner.has_partial() {
                    // The pipe relayed half an event: end it, so the router's stands on its own.
                    event.splice(..0, *b"\n\n");
                }
                // Best effort: if this write fails too, the caller has gone and there is no one
                // to tell.
                let _ = sink.write(event).await;
                (b.code(), Some(b.outcome()))
            }
            None => ("ok", Some(Outcome::Ok)),
        }
    }

    /// Reads the next bytes of the stream (`STREAM_RELAY=filter`); returns the whole events
    /// among them to pass on (none after `[DONE]`, none from an error event on).
    fn scan(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        let scanned = self.scanner.push(bytes);
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(&scanned.forward);
        }
        self.learn(scanned)
    }

    /// Reads the next bytes of a stream the runtime relays itself (`STREAM_RELAY=pipe`).
    fn observe(&mut self, bytes: &[u8]) {
        if !self.done {
            if let Some(kept) = &mut self.kept {
                kept.extend_from_slice(bytes);
            }
            let scanned = self.scanner.observe(bytes);
            self.learn(scanned);
        }
    }

    fn learn(&mut self, scanned: Scanned) -> Vec<u8> {
        self.usage = scanned.usage.or(self.usage.take());
        self.done = scanned.done;
        if let Some(error) = scanned.error {
            self.broken = Some(StreamBreak::Upstream(error));
        }
        scanned.forward
    }
}

impl<B: UpstreamBody> StreamRelay<B> {
    /// Relays to the end, then records a break in the model's health and writes the request line.
    pub async fn run<S: PipeSink<B>>(self, sink: &mut S, env: &RequestEnv<'_>) {
        let StreamRelay {
            start,
            idle_timeout_ms,
            gone_ttl_ms,
            mut record,
            mode,
            store,
        } = self;
        let StreamStart {
            first,
            scanner,
            body,
            usage,
            done,
        } = start;
        let mut progress = Progress {
            scanner,
            usage,
            done,
            broken: None,
            client_gone: false,
            kept: store.as_ref().map(|_| first.clone()),
        };

        // A stream already at `[DONE]` has nothing left to pipe.
        let unpiped = match mode {
            RelayMode::Pipe if !done => sink.pipe(body).err(),
            _ => Some(body),
        };
        let body = match unpiped {
            None => {
                // The pipe goes on from where the first reads stopped, maybe mid-event.
                let mut head = first;
                head.extend_from_slice(progress.scanner.partial());
                if let Some(kept) = &mut progress.kept {
                    kept.extend_from_slice(progress.scanner.partial());
                }
                progress.client_gone = sink.write(head).await.is_err();
                if !progress.client_gone {
                    watch(sink, &mut progress, idle_timeout_ms, env.now_ms).await;
                }
                None
            }
            Some(mut body) => {
                progress.client_gone = sink.write(first).await.is_err();
                filter(sink, &mut body, &mut progress, idle_timeout_ms).await;
                Some(body)
            }
        };

        // A caller who leaves aborts Groq's call with their request: the break that follows is
        // theirs, not the model's.
        progress.client_gone |= progress.broken.is_some() && (env.caller_left)();
        let (outcome, judged) = progress.end(sink, body.is_none()).await;
        if let (Some(outcome), Some(model), false) = (judged, &record.model, record.mock) {
            let now = (env.now_ms)();
            env.health
                .borrow_mut()
                .record(model, outcome, None, now, gone_ttl_ms);
        }
        sink.close().await;
        if let (Some(plan), Some(kept), "ok", false) = (&store, progress.kept, outcome, record.mock)
        {
            if let Some((whole, finish)) = replay::assemble(&kept) {
                plan.store(whole, Some(&finish), (env.now_ms)(), env.cache_writes);
            }
        }
        let usage = progress.usage.unwrap_or_default();
        record.finish(outcome, 200, usage, (env.now_ms)());
        env.account(&record);
        if let (Some(mut body), true) = (body, progress.done) {
            // Read what follows `[DONE]` (normally just the end) after the caller has its answer:
            // a body left unread keeps the runtime from reusing the connection to Groq, and
            // every stream would then pay a new TLS handshake.
            while let Ok(Some(_)) = body.next_chunk(idle_timeout_ms).await {}
        }
    }
}

/// `STREAM_RELAY=filter`: every chunk is read here and only its whole events before any error
/// are written on, so the caller never sees Groq's error event or half an event.
async fn filter<B: UpstreamBody, S: ChunkSink>(
    sink: &mut S,
    body: &mut B,
    progress: &mut Progress,
    idle_timeout_ms: u64,
) {
    while !progress.done && !progress.client_gone && progress.broken.is_none() {
        match body.next_chunk(idle_timeout_ms).await {
            Ok(Some(chunk)) => {
                let forward = progress.scan(&chunk);
                if !forward.is_empty() {
                    progress.client_gone = sink.write(forward).await.is_err();
                }
            }
            Ok(None) => progress.broken = Some(StreamBreak::EndedEarly),
            Err(TransportError::CallerLeft) => progress.client_gone = true,
            Err(e) => progress.broken = Some(StreamBreak::of_read(&e, idle_timeout_ms)),
        }
    }
}

/// `STREAM_RELAY=pipe`: the runtime relays Groq's bytes; this reads a copy to learn how the
/// stream ends.
async fn watch<B, S: PipeSink<B>>(
    sink: &mut S,
    progress: &mut Progress,
    idle_timeout_ms: u64,
    now_ms: &dyn Fn() -> u64,
) {
    // Once the pipe has failed, at Groq's end or at the caller's: Groq's connection breaking
    // fails the copy too, at once, after the bytes it holds; the caller leaving does not. So the
    // copy is read for one batch more, without waiting between reads.
    let mut failed_until: Option<u64> = None;
    loop {
        let next = match failed_until.map(|until| until.saturating_sub(now_ms())) {
            None => sink.relayed(PIPE_BATCH_MS, idle_timeout_ms).await,
            Some(0) => Piped::Failed(TransportError::Timeout),
            Some(left) => sink.relayed(0, left).await,
        };
        let pipe_failed = failed_until.is_some();
        let ended = next == Piped::End;
        match next {
            // After Groq's error event the rest is only waited out: Groq ends the stream there,
            // and a pipe that ends cleanly leaves the response open for the router's event.
            Piped::Bytes(bytes) => {
                if progress.broken.is_none() {
                    progress.observe(&bytes);
                }
                continue;
            }
            Piped::PipeFailed => {
                failed_until = Some(now_ms() + PIPE_BATCH_MS);
                continue;
            }
            // Groq's body whole, or still coming, yet the pipe failed: the caller left.
            Piped::End | Piped::Failed(TransportError::Timeout) if pipe_failed => {
                progress.client_gone = true
            }
            Piped::Failed(TransportError::Connection(_)) if pipe_failed && progress.done => {
                progress.client_gone = true
            }
            // After `[DONE]`, how Groq's body ends says nothing.
            _ if progress.done => {}
            Piped::End => {
                progress.broken.get_or_insert(StreamBreak::EndedEarly);
            }
            Piped::Failed(e) => {
                progress
                    .broken
                    .get_or_insert_with(|| StreamBreak::of_read(&e, idle_timeout_ms));
            }
        }
        if !ended {
            // Nothing more of Groq's is wanted.
            sink.stop();
        }
        return;
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
    /// A read of Groq's body that failed: it went quiet past the idle limit, or it dropped
    /// (aborted with a caller who left, which `run` tells apart by asking the caller).
    fn of_read(error: &TransportError, idle_timeout_ms: u64) -> StreamBreak {
        match error {
            TransportError::Timeout => StreamBreak::Stalled(idle_timeout_ms),
            TransportError::Connection(_) | TransportError::CallerLeft => StreamBreak::Dropped,
        }
    }

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
            StreamBreak::Upstream(e) => e.outcome(),
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
