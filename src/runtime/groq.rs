//! Groq over the Workers `fetch` API: the only code that talks to Groq. A call that is not
//! streamed has one deadline for head and body (`AbortSignal.timeout`); a streamed one has a
//! deadline for its head and then one for each chunk, from when the chunk is awaited.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::js_sys::futures::JsFuture;
use worker::{
    js_sys, web_sys, AbortController, AbortSignal, ByteStream, Delay, Fetch, Headers, Method,
    Request, Response, ResponseBody,
};

use crate::groq::provider::{Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead};
use crate::routing::config::Config;

pub struct GroqFetch;

/// How an upstream call is timed.
enum Deadline {
    /// One for the whole answer, head and body, kept by the runtime.
    Fixed(AbortSignal),
    /// A stream's: each step gets its own, aborting the call when one passes.
    Moving(Option<AbortController>),
}

impl Deadline {
    /// Awaits `step` (the head, the body, a chunk). `timeout_ms` applies to a moving deadline;
    /// a fixed one was set when the call started.
    async fn within<T>(
        &mut self,
        step: impl Future<Output = worker::Result<T>>,
        timeout_ms: u64,
    ) -> Result<T, TransportError> {
        match self {
            Deadline::Fixed(signal) => step.await.map_err(|e| match signal.aborted() {
                true => TransportError::Timeout,
                false => connection_error(e),
            }),
            Deadline::Moving(controller) => {
                let timer = Delay::from(Duration::from_millis(timeout_ms));
                match select(pin!(step), timer).await {
                    Either::Left((result, _)) => result.map_err(connection_error),
                    Either::Right(_) => {
                        if let Some(controller) = controller.take() {
                            controller.abort();
                        }
                        Err(TransportError::Timeout)
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

/// Sends a request to Groq and waits for the response head, at most `timeout_ms`.
async fn fetch_groq(
    url: &str,
    method: Method,
    api_key: &str,
    body: Option<&[u8]>,
    timeout_ms: u64,
    streamed: bool,
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
        init.set_body(&js_sys::Uint8Array::from(body));
    }
    init.set_headers(&headers.0);
    let request = web_sys::Request::new_with_str_and_init(url, &init)
        .map(Request::from)
        .map_err(|e| connection_error(e.into()))?;
    let (signal, mut deadline) = if streamed {
        let controller = AbortController::default();
        (controller.signal(), Deadline::Moving(Some(controller)))
    } else {
        // `AbortSignal.timeout`, which `worker` does not wrap: one deadline for head and body.
        let signal = AbortSignal::from(web_sys::AbortSignal::timeout_with_f64(timeout_ms as f64));
        (signal.clone(), Deadline::Fixed(signal))
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
        let (response, deadline) = fetch_groq(
            call.url,
            Method::Post,
            call.api_key,
            Some(&call.body),
            call.timeout_ms,
            call.streamed,
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
                chunks: None,
                deadline,
            },
        ))
    }
}

pub struct FetchBody {
    response: Response,
    chunks: Option<ByteStream>,
    deadline: Deadline,
}

impl UpstreamBody for FetchBody {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Result<Option<Vec<u8>>, TransportError> {
        let chunks = match &mut self.chunks {
            Some(chunks) => chunks,
            None => self
                .chunks
                .insert(self.response.stream().map_err(connection_error)?),
        };
        let next = async { chunks.next().await.transpose() };
        self.deadline.within(next, timeout_ms).await
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

/// Groq's model list for the scheduled probe: the ids, or why there are none.
pub async fn list_models(config: &Config, api_key: &str) -> Result<Vec<String>, String> {
    let url = format!("{}/openai/v1/models", config.groq_base_url);
    let timeout_ms = config.attempt_timeout_ms;
    let fetched = async {
        let (response, mut deadline) =
            fetch_groq(&url, Method::Get, api_key, None, timeout_ms, false).await?;
        let body = deadline.within(whole_body(&response), timeout_ms).await?;
        Ok::<_, TransportError>((response.status_code(), body))
    };
    match fetched.await {
        Ok((status, body)) => crate::routing::probe::listed_models(status, &body),
        Err(TransportError::Timeout) => Err("timed out".to_string()),
        Err(TransportError::Connection(why)) => Err(why),
    }
}
