//! Groq over the Workers `fetch` API: the only code that talks to Groq. A call that is not
//! streamed has one deadline for head and body (`AbortSignal.timeout`); a streamed one has a
//! deadline for its head and then one for each chunk, from when the chunk is awaited.

use std::future::Future;
use std::pin::pin;

use futures_util::future::{select, Either};
use wasm_bindgen::JsCast;
use worker::js_sys::futures::JsFuture;
use worker::{
    js_sys, web_sys, AbortController, AbortSignal, Fetch, Headers, Method, Request, Response,
    ResponseBody,
};

use crate::groq::provider::{Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead};
use crate::routing::config::RoutingConfig;

/// Groq for one request: every call is aborted with the caller's request when they go away.
pub struct GroqFetch {
    /// The incoming request's signal (`enable_request_signal`).
    pub caller: web_sys::AbortSignal,
}

/// How an upstream call is timed, and whose leaving aborts it.
struct Deadline {
    clock: Clock,
    /// The caller's request signal, aborting the call with it.
    caller: Option<web_sys::AbortSignal>,
}

enum Clock {
    /// One for the whole answer, head and body, kept by the runtime.
    Fixed(AbortSignal),
    /// A stream's: each step gets its own, aborting the call when one passes.
    Moving(Option<AbortController>, IdleTimer),
}

/// The timer behind a moving deadline: one for the call, not one per chunk (a `setTimeout`, its
/// callback and its `clearTimeout` for every chunk showed in profiles of long streams). Each step
/// moves the deadline on; a timer armed for an earlier one fires early and is re-armed then.
#[derive(Default)]
struct IdleTimer(Option<Timer>);

/// A `setTimeout` as a promise, cleared when dropped. Awaited as a `JsFuture`, it wakes whichever
/// task polled it last: a stream's timer is armed in the handler's task and then serves the
/// relay's, which `worker::Delay` (it keeps the first poller's waker) would never wake.
struct Timer {
    fired: JsFuture,
    id: i32,
    /// When it fires (epoch ms).
    at: f64,
}

impl Timer {
    fn new(at: f64) -> Timer {
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let wait = (at - js_sys::Date::now()).max(0.0) as i32;
        let mut id = 0;
        let fired = JsFuture::from(js_sys::Promise::new(&mut |resolve, _| {
            id = global
                .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, wait)
                .unwrap_or_default();
        }));
        Timer { fired, id, at }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        global.clear_timeout_with_handle(self.id);
    }
}

impl Deadline {
    /// Awaits `step` (the head, the body, a chunk). `timeout_ms` applies to a moving deadline;
    /// a fixed one was set when the call started.
    async fn within<T>(
        &mut self,
        step: impl Future<Output = worker::Result<T>>,
        timeout_ms: u64,
    ) -> Result<T, TransportError> {
        let caller_left = |caller: &Option<web_sys::AbortSignal>| {
            caller.as_ref().is_some_and(web_sys::AbortSignal::aborted)
        };
        match &mut self.clock {
            Clock::Fixed(signal) => step.await.map_err(|e| match signal.aborted() {
                _ if caller_left(&self.caller) => TransportError::CallerLeft,
                true => TransportError::Timeout,
                false => connection_error(e),
            }),
            Clock::Moving(controller, IdleTimer(timer)) => {
                let due = js_sys::Date::now() + timeout_ms as f64;
                let mut step = pin!(step);
                loop {
                    if timer.as_ref().is_none_or(|t| t.at > due) {
                        *timer = Some(Timer::new(due));
                    }
                    let armed = timer.as_mut().expect("armed just above");
                    match select(step.as_mut(), &mut armed.fired).await {
                        Either::Left((result, _)) => {
                            return result.map_err(|e| match caller_left(&self.caller) {
                                true => TransportError::CallerLeft,
                                false => connection_error(e),
                            })
                        }
                        Either::Right(_) => *timer = None,
                    }
                    if js_sys::Date::now() >= due {
                        if let Some(controller) = controller.take() {
                            controller.abort();
                        }
                        return Err(TransportError::Timeout);
                    }
                }
            }
        }
    }
}

/// The runtime's own words for a failed call, for the attempt and its log line.
fn connection_error(e: worker::Error) -> TransportError {
    TransportError::Connection(e.to_string())
}

/// Sends a request to Groq and waits for the response head, at most `timeout_ms`; `caller`, the
/// caller's request signal, aborts it too.
async fn fetch_groq(
    url: &str,
    method: Method,
    api_key: &str,
    body: Option<js_sys::Uint8Array>,
    (timeout_ms, streamed): (u64, bool),
    caller: Option<&web_sys::AbortSignal>,
) -> Result<(Response, Deadline), TransportError> {
    let headers = Headers::new();
    headers
        .set("authorization", &format!("Bearer {api_key}"))
        .map_err(connection_error)?;
    // `web_sys`'s `RequestInit`: `worker`'s converts its `cf` options through
    // serde_wasm_bindgen, 5 KiB gzip of bundle for options the router never sets.
    let init = web_sys::RequestInit::new();
    init.set_method(method.as_ref());
    if let Some(body) = body {
        headers
            .set("content-type", "application/json")
            .map_err(connection_error)?;
        init.set_body(&body);
    }
    init.set_headers(&headers.0);
    let request = web_sys::Request::new_with_str_and_init(url, &init)
        .map(Request::from)
        .map_err(|e| connection_error(e.into()))?;
    let (signal, clock) = if streamed {
        let controller = AbortController::default();
        (
            controller.signal(),
            Clock::Moving(Some(controller), IdleTimer::default()),
        )
    } else {
        // `AbortSignal.timeout`, which `worker` does not wrap: one deadline for head and body.
        let signal = AbortSignal::from(web_sys::AbortSignal::timeout_with_f64(timeout_ms as f64));
        (signal.clone(), Clock::Fixed(signal))
    };
    // `AbortSignal.any` (not in `worker`): ours or the caller's, whichever aborts first.
    let signal = match caller {
        Some(caller) => {
            let both = js_sys::Array::of2(&signal, caller);
            AbortSignal::from(web_sys::AbortSignal::any(&both))
        }
        None => signal,
    };
    let mut deadline = Deadline {
        clock,
        caller: caller.cloned(),
    };
    let response = deadline
        .within(
            Fetch::Request(request).send_with_signal(&signal),
            timeout_ms,
        )
        .await?;
    Ok((response, deadline))
}

impl Provider for GroqFetch {
    type Body = FetchBody;

    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> Result<(UpstreamHead, FetchBody), TransportError> {
        let mut body = JsBytes::with_capacity(call.body.size_hint());
        call.body
            .write_into(&mut body)
            .map_err(|e| TransportError::Connection(e.to_string()))?;
        let (response, deadline) = fetch_groq(
            call.url,
            Method::Post,
            call.api_key,
            Some(body.finish()),
            (call.timeout_ms, call.streamed),
            Some(&self.caller),
        )
        .await?;
        let status = response.status_code();
        // The retry hints only matter for a refusal.
        let header = |name: &str| match status {
            200..=299 => None,
            _ => response.headers().get(name).ok().flatten(),
        };
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

/// Bytes written straight into JS memory: Groq's body goes to `fetch` without a whole copy of it
/// in wasm memory, which grows for the largest bodies in flight and never shrinks. Small writes
/// (serde's punctuation and keys) are gathered first, so the writer crosses into JS about once
/// per field, not once per byte.
struct JsBytes {
    array: js_sys::Uint8Array,
    len: u32,
    gathered: Vec<u8>,
}

/// Writes up to this size are gathered in wasm before they are copied across.
const GATHER_BYTES: usize = 4 << 10;

impl JsBytes {
    fn with_capacity(bytes: usize) -> JsBytes {
        JsBytes {
            array: js_sys::Uint8Array::new_with_length(bytes as u32),
            len: 0,
            gathered: Vec::with_capacity(GATHER_BYTES),
        }
    }

    /// Copies `bytes` after what is there, growing the array (doubling) when it is full.
    fn copy(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len() as u32;
        if end > self.array.length() {
            let grown = js_sys::Uint8Array::new_with_length(end.max(self.array.length() * 2));
            grown.set(&self.array.subarray(0, self.len), 0);
            self.array = grown;
        }
        self.array.subarray(self.len, end).copy_from(bytes);
        self.len = end;
    }

    /// The bytes written: a view of the array's written part.
    fn finish(mut self) -> js_sys::Uint8Array {
        let gathered = std::mem::take(&mut self.gathered);
        self.copy(&gathered);
        self.array.subarray(0, self.len)
    }
}

impl std::io::Write for JsBytes {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.gathered.len() + bytes.len() > GATHER_BYTES {
            let gathered = std::mem::take(&mut self.gathered);
            self.copy(&gathered);
            self.gathered = gathered;
            self.gathered.clear();
        }
        match bytes.len() > GATHER_BYTES {
            true => self.copy(bytes),
            false => self.gathered.extend_from_slice(bytes),
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct FetchBody {
    response: Response,
    /// The body's reader, once read from: held here rather than in `worker`'s `ByteStream`,
    /// which cancels the body when dropped, so that it can be let go for a pipe.
    reader: Option<web_sys::ReadableStreamDefaultReader>,
    deadline: Deadline,
}

impl FetchBody {
    /// The body, unlocked, and the switch that aborts the call, for `STREAM_RELAY=pipe`; `None`
    /// for a body that is not a stream.
    pub fn into_pipe(self) -> Option<(web_sys::ReadableStream, Option<AbortController>)> {
        if let Some(reader) = self.reader {
            reader.release_lock();
        }
        let ResponseBody::Stream(stream) = self.response.body() else {
            return None;
        };
        let controller = match self.deadline.clock {
            Clock::Moving(controller, _) => controller,
            Clock::Fixed(_) => None,
        };
        Some((stream.clone(), controller))
    }
}

/// The bytes of one `read()` of a stream (a BYOB read's: a view of the buffer it was given);
/// `None` at its end.
pub async fn read_chunk(promise: js_sys::Promise) -> worker::Result<Option<js_sys::Uint8Array>> {
    let result: web_sys::ReadableStreamReadResult = JsFuture::from(promise).await?.unchecked_into();
    if result.get_done().unwrap_or_default() {
        return Ok(None);
    }
    // A fetched body's chunks are bytes.
    Ok(Some(result.get_value().unchecked_into()))
}

impl UpstreamBody for FetchBody {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Result<Option<Vec<u8>>, TransportError> {
        let reader = match &self.reader {
            Some(reader) => reader,
            None => {
                let ResponseBody::Stream(stream) = self.response.body() else {
                    return Ok(None);
                };
                let reader = stream.get_reader().unchecked_into();
                self.reader.insert(reader)
            }
        };
        let chunk = self.deadline.within(read_chunk(reader.read()), timeout_ms);
        Ok(chunk.await?.map(|bytes| bytes.to_vec()))
    }

    async fn read_all(mut self, timeout_ms: u64) -> Result<Vec<u8>, TransportError> {
        self.deadline
            .within(whole_body(&self.response), timeout_ms)
            .await
    }
}

/// A fetched body in one `arrayBuffer()` call: `worker`'s `bytes()` reads it chunk by chunk
/// through wasm, a promise and a copy each (a fifth of a small request's CPU, in a profile).
pub(super) async fn whole_body(response: &Response) -> worker::Result<Vec<u8>> {
    let ResponseBody::Stream(stream) = response.body() else {
        return Ok(Vec::new());
    };
    let whole = web_sys::Response::new_with_opt_readable_stream(Some(stream))?;
    let buffer = JsFuture::from(whole.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Groq's model list for the scheduled probe: the models, or why there are none.
pub async fn list_models(
    config: &RoutingConfig,
    api_key: &str,
) -> Result<Vec<crate::groq::ListedModel>, String> {
    let url = format!("{}/openai/v1/models", config.groq_base_url);
    let timeout_ms = config.attempt_timeout_ms;
    let fetched = async {
        let (response, mut deadline) =
            fetch_groq(&url, Method::Get, api_key, None, (timeout_ms, false), None).await?;
        let body = deadline.within(whole_body(&response), timeout_ms).await?;
        Ok::<_, TransportError>((response.status_code(), body))
    };
    match fetched.await {
        Ok((status, body)) => crate::groq::listed_models(status, &body),
        Err(TransportError::Timeout) => Err("timed out".to_string()),
        Err(TransportError::Connection(why)) => Err(why),
        Err(TransportError::CallerLeft) => Err("aborted".to_string()),
    }
}
