//! A fake Groq API on `127.0.0.1` that answers with Groq's real statuses, error bodies, rate-limit
//! headers and SSE framing (as written down in the shared `groq-api.md`), so end-to-end tests can
//! drive the Worker through every upstream failure without the network.
//!
//! `POST /openai/v1/chat/completions` picks its behaviour from the requested model id's prefix up
//! to the first `-` (`ok-a`, `ok-b`, `gone-x`, `ratelimited-1`, ...), so one fake serves a whole
//! fallback chain with distinct, countable models. Every request, authorised or not, is recorded
//! as a [`Call`].
//!
//! It also plays a sign-in provider's JWKS endpoint, `GET /.well-known/jwks.json` (no key
//! needed), answering what [`FakeGroq::set_jwks`] says, for the JWT tests.
//!
//! HTTP is hyper's HTTP/1.1 server, on a tokio current-thread runtime in one thread of the fake's
//! own. Streamed bodies (SSE, `bodyhang`) are chunked unless they carry a `Content-Length`; a
//! stream that "drops" ends with the connection closed and no terminating chunk. A request that
//! cannot be parsed gets hyper's own bare `400` (Groq's CDN would answer it, not Groq).
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::ext::ReasonPhrase;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

/// Pause between two SSE events unless [`FakeGroq::set_chunk_delay`] says otherwise.
pub const DEFAULT_CHUNK_DELAY: Duration = Duration::from_millis(20);
/// How long `hang` and `bodyhang` hold a connection (and `streamslow` waits) unless
/// [`FakeGroq::set_hang_for`] says otherwise.
pub const DEFAULT_HANG_FOR: Duration = Duration::from_secs(60);
/// The organisation id that appears inside rate-limit messages.
pub const ORG_ID: &str = "org_01hxyzfakeorg";
/// The `x-ratelimit-reset-tokens` value, also quoted in the 429 message.
pub const RESET_TOKENS: &str = "7.66s";
/// The `x-ratelimit-reset-requests` value.
pub const RESET_REQUESTS: &str = "2m59.56s";
/// `retry-after` on a 429, in whole seconds.
pub const RETRY_AFTER_SECS: u64 = 8;

/// `tpm-` models' tokens-per-minute limit, counted as Groq's 413 message counts it (a token per
/// 4 bytes of `messages`): a request above it is refused with 413, any other answered.
pub const TPM_LIMIT: usize = 6000;

/// Bound on one request body, so a runaway request cannot exhaust memory.
const MAX_BODY: usize = 16 * 1024 * 1024;
const SYSTEM_FINGERPRINT: &str = "fp_fakegroq01";
const CHAT_COMPLETIONS: &str = "/openai/v1/chat/completions";
const MODELS: &str = "/openai/v1/models";
/// Where the fake serves its JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    /// The JSON body's `"model"`, when there is one.
    pub model: Option<String>,
    /// The body parsed as JSON, `Value::Null` when it is not JSON (or empty).
    pub body: Value,
    /// `Authorization` was exactly `Bearer <api_key>`.
    pub authorized: bool,
    /// Header names lowercased, in the order received (repeats of a name right after its first
    /// one: hyper hands headers over as an `http::HeaderMap`).
    pub headers: Vec<(String, String)>,
}

impl Call {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A running fake Groq. Dropping it closes the listener and every connection, and stops the
/// thread and every task it started.
pub struct FakeGroq {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

struct Shared {
    api_key: String,
    calls: Mutex<Vec<Call>>,
    models: Mutex<Vec<String>>,
    models_status: Mutex<Option<u16>>,
    chunk_delay: Mutex<Duration>,
    hang_for: Mutex<Duration>,
    /// `GET /.well-known/jwks.json`: status, `cache-control`, body.
    jwks: Mutex<(u16, Option<String>, Value)>,
}

impl FakeGroq {
    /// Binds `127.0.0.1:0` and starts serving; requests must carry `Bearer <api_key>`.
    pub fn start(api_key: &str) -> FakeGroq {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for the fake Groq");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        listener
            .set_nonblocking(true)
            .expect("make the fake Groq's listener non-blocking");
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            calls: Mutex::new(Vec::new()),
            models: Mutex::new(Vec::new()),
            models_status: Mutex::new(None),
            chunk_delay: Mutex::new(DEFAULT_CHUNK_DELAY),
            hang_for: Mutex::new(DEFAULT_HANG_FOR),
            jwks: Mutex::new((404, None, json!({"error": "no JWKS set"}))),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("build the fake Groq's tokio runtime");
        let listener = {
            let _runtime = runtime.enter();
            TcpListener::from_std(listener).expect("register the fake Groq's listener with tokio")
        };
        let (stop, stopped) = oneshot::channel();
        let server = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fake-groq-{}", addr.port()))
                .spawn(move || serve(runtime, listener, shared, stopped))
                .expect("spawn the fake Groq thread")
        };
        FakeGroq {
            addr,
            shared,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host root, e.g. `http://127.0.0.1:41234`; the router appends `/openai/v1/...`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).clone()
    }

    /// How many requests named `model` in their body.
    pub fn calls_to(&self, model: &str) -> usize {
        lock(&self.shared.calls)
            .iter()
            .filter(|call| call.model.as_deref() == Some(model))
            .count()
    }

    /// The `"model"` of every request that named one, in arrival order.
    pub fn models_called(&self) -> Vec<String> {
        lock(&self.shared.calls)
            .iter()
            .filter_map(|call| call.model.clone())
            .collect()
    }

    /// What `GET /.well-known/jwks.json` answers from now on.
    pub fn set_jwks(&self, status: u16, cache_control: Option<&str>, body: Value) {
        *lock(&self.shared.jwks) = (status, cache_control.map(str::to_owned), body);
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        lock(&self.shared.calls)
            .iter()
            .filter(|call| call.path == JWKS_PATH)
            .count()
    }

    /// The ids `GET /openai/v1/models` lists.
    pub fn set_models(&self, ids: Vec<String>) {
        *lock(&self.shared.models) = ids;
    }

    /// Makes `GET /openai/v1/models` answer `status` with a Groq-shaped error body instead.
    pub fn set_models_status(&self, status: u16) {
        *lock(&self.shared.models_status) = Some(status);
    }

    /// Undoes [`FakeGroq::set_models_status`].
    pub fn clear_models_status(&self) {
        *lock(&self.shared.models_status) = None;
    }

    /// The pause between two SSE events.
    pub fn set_chunk_delay(&self, delay: Duration) {
        *lock(&self.shared.chunk_delay) = delay;
    }

    /// How long `hang` and `bodyhang` hold their connection and `streamslow` waits before its
    /// first chunk.
    pub fn set_hang_for(&self, duration: Duration) {
        *lock(&self.shared.hang_for) = duration;
    }
}

impl Drop for FakeGroq {
    fn drop(&mut self) {
        // The server thread returns from its accept loop, closing the listener, then drops the
        // runtime: that drops every connection task (closing its socket, hung or idle) and every
        // stream task mid-sleep. Nothing waits for a timer.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take every later assertion down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The server thread: accepts until told to stop (or the fake is gone), one task per connection.
fn serve(
    runtime: Runtime,
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    runtime.block_on(async move {
        loop {
            let stream = tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors, say: try again shortly.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let shared = Arc::clone(&shared);
            let service = service_fn(move |request| handle(Arc::clone(&shared), request));
            tokio::spawn(async move {
                // An `Err` is a connection closed on purpose (`drop`, `hang`, a dropped stream)
                // or by the client; either way there is nothing left to do.
                let _ = http1::Builder::new()
                    // Heads as Groq's are written down: no `date`.
                    .auto_date_header(false)
                    // Only the client or `Drop` closes a connection, however slow its head.
                    .header_read_timeout(None)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    // Cancels every task still running: connections close, sleeping streams stop.
    drop(runtime);
}

// ---------------------------------------------------------------------------------------------
// Serving

type ResponseBody = BoxBody<Bytes, io::Error>;
/// `Err` closes the connection without a byte of answer (hyper drops it on a service error).
type Answer = Result<Response<ResponseBody>, io::Error>;

fn closed_on_purpose(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, why.to_owned())
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    // A body cut short, badly chunked or over `MAX_BODY` is no request to record or answer.
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?
        .to_bytes();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let keep_alive = keep_alive(parts.version, find_header(&headers, "connection"));
    let expected = format!("Bearer {}", shared.api_key);
    let authorized = find_header(&headers, "authorization") == Some(expected.as_str());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    lock(&shared.calls).push(Call {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        model: model.clone(),
        body: body.clone(),
        authorized,
        headers,
    });
    let request_id = new_request_id();

    if parts.method == "GET" && parts.uri.path() == JWKS_PATH {
        let (status, cache_control, body) = lock(&shared.jwks).clone();
        let mut reply = Reply::json(status, &body);
        reply
            .headers
            .extend(cache_control.map(|v| ("cache-control".to_owned(), v)));
        return Ok(reply.into_response(&request_id, keep_alive));
    }
    if !authorized {
        return Ok(invalid_api_key().into_response(&request_id, keep_alive));
    }
    let reply = match (parts.method.as_str(), parts.uri.path()) {
        ("POST", CHAT_COMPLETIONS) => {
            return chat_completion(&shared, &body, model, &request_id, keep_alive).await;
        }
        ("GET", MODELS) => {
            let status = *lock(&shared.models_status);
            match status {
                Some(status) => error_for_status(status),
                None => models_list(&lock(&shared.models)),
            }
        }
        (method, route) => {
            let message = format!(
                "Unknown request URL: {method} {route}. Please check the URL for typos, or see the \
                 docs at https://console.groq.com/docs/"
            );
            Reply::json(
                404,
                &groq_error(&message, "invalid_request_error", Some("unknown_url")),
            )
        }
    };
    Ok(reply.into_response(&request_id, keep_alive))
}

/// Whether the connection stays open after this request, by HTTP/1.x's rules.
fn keep_alive(version: Version, connection: Option<&str>) -> bool {
    let connection = connection.unwrap_or("").to_ascii_lowercase();
    if version == Version::HTTP_10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    }
}

async fn chat_completion(
    shared: &Shared,
    body: &Value,
    model: Option<String>,
    request_id: &str,
    keep_alive: bool,
) -> Answer {
    let Some(model) = model else {
        let message = if body.is_null() {
            "Failed to parse the request body as JSON."
        } else {
            "'model' : property 'model' is missing"
        };
        let reply = Reply::json(400, &groq_error(message, "invalid_request_error", None));
        return Ok(reply.into_response(request_id, keep_alive));
    };
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let behaviour = model.split('-').next().unwrap_or("");
    let hang_for = *lock(&shared.hang_for);

    // The streaming behaviours; `ok` and `streamslow` stream only when asked to.
    let script = match behaviour {
        "ok" if stream => Some(Script::Full),
        "streamslow" if stream => Some(Script::Slow),
        "streamdrop" => Some(Script::Drop),
        "streamerror" => Some(Script::Error),
        "streamlong" => Some(Script::Long),
        "streamstall" => Some(Script::Stall),
        "streamnodone" => Some(Script::NoDone),
        _ => None,
    };
    if let Some(script) = script {
        return Ok(stream_completion(
            shared,
            &model,
            request_id,
            include_usage,
            script,
        ));
    }

    let reply = match behaviour {
        "ok" => Reply::json(200, &completion(&model, request_id)),
        "streamslow" => {
            tokio::time::sleep(hang_for).await;
            Reply::json(200, &completion(&model, request_id))
        }
        "hang" => {
            tokio::time::sleep(hang_for).await;
            return Err(closed_on_purpose("`hang` closes without answering"));
        }
        "bodyhang" => {
            // The 200 head and half of a completion, then silence: an answer that stalls after
            // its head, which only a deadline on the whole answer (not just the head) catches.
            // The head announces the whole length; the connection closes after `hang_for`.
            let reply = Reply::json(200, &completion(&model, request_id));
            let sent = reply.body.len() - reply.body.len() / 2;
            let half = Bytes::copy_from_slice(&reply.body[..sent]);
            let (parts, _) = reply.into_response(request_id, false).into_parts();
            let (feed, body) = fed_body();
            tokio::spawn(async move {
                if feed.send(Ok(half)).await.is_ok() && pause(&feed, hang_for).await {
                    let _ = feed
                        .send(Err(closed_on_purpose("`bodyhang` gives up")))
                        .await;
                }
            });
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        "drop" => return Err(closed_on_purpose("`drop` closes without answering")),
        "ratelimited" => rate_limited(&model),
        "tpm" => {
            let requested = body
                .get("messages")
                .map_or(0, |m| m.to_string().len())
                .div_ceil(4);
            match requested > TPM_LIMIT {
                true => request_too_large(&model, requested),
                false => Reply::json(200, &completion(&model, request_id)),
            }
        }
        "capacity" => Reply::json(
            498,
            &groq_error(
                &format!(
                    "Request could not be served: flex tier capacity exceeded for model \
                     `{model}`. Please try again later or use another service tier."
                ),
                "capacity_exceeded",
                Some("capacity_exceeded"),
            ),
        ),
        "error500" => Reply::json(
            500,
            &groq_error("Internal Server Error", "internal_server_error", None),
        ),
        "html502" => html_502(),
        "badkey" => invalid_api_key(),
        "notcompletion" => Reply::json(200, &json!({"status": "ok", "object": "list", "data": []})),
        // `gone` and every unknown prefix: what Groq says for a model it does not serve.
        _ => model_not_found(&model),
    };
    Ok(reply.into_response(request_id, keep_alive))
}

/// Groq's 413: a request larger than the model's tokens-per-minute limit.
fn request_too_large(model: &str, requested: usize) -> Reply {
    Reply::json(
        413,
        &groq_error(
            &format!(
                "Request too large for model `{model}` in organization `{ORG_ID}` on tokens per \
                 minute (TPM): Limit {TPM_LIMIT}, Requested {requested}, please reduce your \
                 message size and try again."
            ),
            "tokens",
            Some("rate_limit_exceeded"),
        ),
    )
}

/// Which SSE stream to play.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Role chunk, three content chunks, final chunk, optional usage chunk, `[DONE]`.
    Full,
    /// Like `Full`, after waiting `hang_for` behind the 200 headers.
    Slow,
    /// Role chunk and one content chunk, then the connection closes without `[DONE]` and without
    /// the terminating chunk.
    Drop,
    /// Role chunk, one content chunk, then an `event: error`; the body then ends properly.
    Error,
    /// Role chunk and one content chunk, then the body ends properly, without `[DONE]`.
    NoDone,
    /// Like `Full` with `LONG_PIECES` content chunks, so it lasts `LONG_PIECES + 2` chunk delays (+3 with `include_usage`).
    Long,
    /// Role chunk and one content chunk, then silence for `hang_for`, then the connection closes
    /// (no terminating chunk).
    Stall,
}

/// How many content chunks `streamlong-` sends.
pub const LONG_PIECES: usize = 30;

/// The 200 head at once; the events follow from a task, `chunk_delay` apart.
fn stream_completion(
    shared: &Shared,
    model: &str,
    request_id: &str,
    include_usage: bool,
    script: Script,
) -> Response<ResponseBody> {
    let events = sse_events(model, request_id, include_usage, script);
    let chunk_delay = *lock(&shared.chunk_delay);
    let hang_for = *lock(&shared.hang_for);
    let (feed, body) = fed_body();
    tokio::spawn(async move {
        if script == Script::Slow && !pause(&feed, hang_for).await {
            return;
        }
        for (index, event) in events.into_iter().enumerate() {
            if index > 0 && !pause(&feed, chunk_delay).await {
                return;
            }
            if feed.send(Ok(Bytes::from(event))).await.is_err() {
                return;
            }
        }
        let dropped = || Err(closed_on_purpose("the stream breaks off"));
        match script {
            Script::Drop => {
                let _ = feed.send(dropped()).await;
            }
            Script::Stall => {
                if pause(&feed, hang_for).await {
                    let _ = feed.send(dropped()).await;
                }
            }
            // Dropping `feed` ends the body with its terminating chunk.
            Script::Full | Script::Slow | Script::Error | Script::NoDone | Script::Long => {}
        }
    });
    let mut response = Response::new(body.boxed());
    response.extensions_mut().insert(reason_phrase(200));
    let headers = response.headers_mut();
    append(headers, "content-type", "text/event-stream");
    append(headers, "cache-control", "no-cache");
    append(headers, "connection", "close");
    for (name, value) in groq_headers(request_id, false) {
        append(headers, name, &value);
    }
    response
}

/// Every SSE event `script` sends, framed.
fn sse_events(model: &str, request_id: &str, include_usage: bool, script: Script) -> Vec<String> {
    let chat_id = new_chat_id();
    let created = unix_now();
    let chunk = |choices: Value| {
        json!({
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        })
    };
    let delta = |delta: Value, finish_reason: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);

    let mut events = Vec::new();
    let mut first = chunk(delta(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    first["x_groq"] = json!({"id": request_id});
    events.push(sse_data(&first));
    let pieces: Vec<&str> = match script {
        Script::Full | Script::Slow => vec!["hello", " from ", model],
        Script::Long => vec!["tick "; LONG_PIECES],
        Script::Drop | Script::Error | Script::NoDone | Script::Stall => vec!["hello"],
    };
    for piece in &pieces {
        events.push(sse_data(&chunk(delta(
            json!({"content": piece}),
            Value::Null,
        ))));
    }
    match script {
        Script::Full | Script::Slow | Script::Long => {
            let mut last = chunk(delta(json!({}), json!("stop")));
            last["x_groq"] = json!({"id": request_id, "usage": usage()});
            events.push(sse_data(&last));
            if include_usage {
                let mut usage_chunk = chunk(json!([]));
                usage_chunk["usage"] = usage();
                events.push(sse_data(&usage_chunk));
            }
            events.push("data: [DONE]\n\n".to_owned());
        }
        Script::Error => {
            let error = json!({"error": {
                "message": "Tool call validation failed: parameters for tool get_weather did not \
                            match schema: errors: [missing properties: 'location']",
                "type": "invalid_request_error",
                "code": "tool_use_failed",
                "status_code": 400,
            }});
            events.push(format!("event: error\ndata: {error}\n\n"));
        }
        Script::Drop | Script::NoDone | Script::Stall => {}
    }
    events
}

fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

type Feed = mpsc::Sender<io::Result<Bytes>>;

/// A response body a task writes into: each `Ok` piece goes out as it is sent (a chunk of its
/// own, or part of a `Content-Length` body); an `Err` makes hyper close the connection there,
/// without the terminating chunk; dropping the sender ends the body properly.
///
/// With room for one piece only, a sender's `Err` waits until hyper has taken the piece before
/// it; hyper writes that piece out before it polls the body again on this single-threaded
/// runtime, so nothing sent before an `Err` is lost.
fn fed_body() -> (Feed, FedBody) {
    let (feed, pieces) = mpsc::channel(1);
    (feed, FedBody(pieces))
}

struct FedBody(mpsc::Receiver<io::Result<Bytes>>);

impl Body for FedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|piece| piece.map(Frame::data)))
    }
}

/// Sleeps for `duration`; `false` if the body's reader (the connection) went away meanwhile.
async fn pause(feed: &Feed, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = feed.closed() => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// A complete non-streaming answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    rate_limited: bool,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            rate_limited: false,
        }
    }

    /// The whole answer: status (with the reason phrase below), headers, body.
    fn into_response(self, request_id: &str, keep_alive: bool) -> Response<ResponseBody> {
        let length = self.body.len().to_string();
        let body = Full::new(Bytes::from(self.body)).map_err(|never| match never {});
        let mut response = Response::new(body.boxed());
        *response.status_mut() = StatusCode::from_u16(self.status).expect("a valid status");
        response.extensions_mut().insert(reason_phrase(self.status));
        let headers = response.headers_mut();
        append(headers, "content-type", self.content_type);
        append(headers, "content-length", &length);
        let connection = if keep_alive { "keep-alive" } else { "close" };
        append(headers, "connection", connection);
        for (name, value) in groq_headers(request_id, self.rate_limited) {
            append(headers, name, &value);
        }
        for (name, value) in &self.headers {
            append(headers, name, value);
        }
        response
    }
}

fn append(headers: &mut hyper::HeaderMap, name: &str, value: &str) {
    headers.append(
        HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
        HeaderValue::from_str(value).expect("a valid header value"),
    );
}

/// The reason phrase [`reason`] gives, written by hyper in place of its own (it has none for
/// Groq's `498`).
fn reason_phrase(status: u16) -> ReasonPhrase {
    ReasonPhrase::from_static(reason(status).as_bytes())
}

/// The headers Groq puts on every response, errors included.
fn groq_headers(request_id: &str, rate_limited: bool) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit-requests", "14400".to_owned()),
        ("x-ratelimit-limit-tokens", "6000".to_owned()),
        (
            "x-ratelimit-remaining-requests",
            if rate_limited { "14390" } else { "14399" }.to_owned(),
        ),
        (
            "x-ratelimit-remaining-tokens",
            if rate_limited { "0" } else { "5933" }.to_owned(),
        ),
        ("x-ratelimit-reset-requests", RESET_REQUESTS.to_owned()),
        ("x-ratelimit-reset-tokens", RESET_TOKENS.to_owned()),
        ("x-request-id", request_id.to_owned()),
    ]
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        498 => "Capacity Exceeded",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

/// `{"error":{"message","type"[,"code"]}}` — Groq omits `code` rather than sending `null`.
fn groq_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    let mut error = json!({"message": message, "type": kind});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    json!({ "error": error })
}

fn invalid_api_key() -> Reply {
    Reply::json(
        401,
        &groq_error(
            "Invalid API Key",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
    )
}

fn model_not_found(model: &str) -> Reply {
    Reply::json(
        404,
        &groq_error(
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
    )
}

fn rate_limited(model: &str) -> Reply {
    let message = format!(
        "Rate limit reached for model `{model}` in organization `{ORG_ID}` service tier \
         `on_demand` on tokens per minute (TPM): Limit 6000, Used 5000, Requested 1500. Please \
         try again in {RESET_TOKENS}. Need more tokens? Upgrade to Dev Tier today at \
         https://console.groq.com/settings/billing"
    );
    let mut reply = Reply::json(
        429,
        &groq_error(&message, "tokens", Some("rate_limit_exceeded")),
    );
    reply.rate_limited = true;
    reply
        .headers
        .push(("retry-after".to_owned(), RETRY_AFTER_SECS.to_string()));
    reply
}

fn html_502() -> Reply {
    let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n\
                </body>\r\n</html>\r\n";
    Reply {
        status: 502,
        content_type: "text/html",
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
        rate_limited: false,
    }
}

/// The error Groq would send with `status`, for `set_models_status`.
fn error_for_status(status: u16) -> Reply {
    match status {
        401 => invalid_api_key(),
        _ => Reply::json(
            status,
            &groq_error(reason(status), "internal_server_error", None),
        ),
    }
}

fn models_list(ids: &[String]) -> Reply {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "object": "model",
                "created": 1_754_408_224,
                "owned_by": "Fake",
                "active": true,
                "context_window": 131_072,
                "max_completion_tokens": 65_536,
            })
        })
        .collect();
    Reply::json(200, &json!({"object": "list", "data": data}))
}

fn usage() -> Value {
    json!({
        "queue_time": 0.0051,
        "prompt_tokens": 55,
        "prompt_time": 0.0042,
        "completion_tokens": 12,
        "completion_time": 0.0218,
        "total_tokens": 67,
        "total_time": 0.026,
    })
}

fn completion(model: &str, request_id: &str) -> Value {
    json!({
        "id": format!("chatcmpl-{}", fake_uuid(request_id)),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("hello from {model}")},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "x_groq": {"id": request_id},
        "service_tier": "on_demand",
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// A Groq-looking request id, unique within the process.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!("req_01fake{nanos:08x}{n:08x}")
}

fn new_chat_id() -> String {
    format!("chatcmpl-{}", fake_uuid(&new_request_id()))
}

/// A UUID-shaped string derived from `seed` (FNV-1a), so ids look like Groq's.
fn fake_uuid(seed: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in seed.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let hex = format!("{hash:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
