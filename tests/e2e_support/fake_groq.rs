//! A fake Groq API on `127.0.0.1` that answers with Groq's real statuses, error bodies, rate-limit
//! headers and SSE framing (as written down in the shared `groq-api.md`), so end-to-end tests can
//! drive the Worker through every upstream failure without the network.
//!
//! `POST /openai/v1/chat/completions` picks its behaviour from the requested model id's prefix up
//! to the first `-` (`ok-a`, `gone-x`, `ratelimited-1`, ...), so one fake serves a whole fallback
//! chain with distinct, countable models. `noschema-` and `notools-` models refuse a `json_schema`
//! response format or tools with Groq's 400s; `ok-` answers tools with a tool call and a JSON
//! response format with JSON. Every request, authorised or not, is recorded as a
//! [`Call`]. It also plays a sign-in provider's JWKS endpoint, `GET /.well-known/jwks.json` (no
//! key needed), answering what [`FakeGroq::set_jwks`] says.
//!
//! HTTP is hyper's HTTP/1.1 server, on a tokio current-thread runtime in a thread of the fake's
//! own. Streamed bodies (SSE, `bodyhang`) are chunked unless they carry a `Content-Length`; a
//! stream that "drops" ends with the connection closed and no terminating chunk.

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
use tokio::sync::{mpsc, oneshot};

/// The organisation id that appears inside rate-limit messages.
pub const ORG_ID: &str = "org_01hxyzfakeorg";
/// `retry-after` on a 429, in whole seconds.
pub const RETRY_AFTER_SECS: u64 = 8;
/// The `x-ratelimit-reset-tokens` value, also quoted in the 429 message.
pub const RESET_TOKENS: &str = "7.66s";
/// `tpm-` models' tokens-per-minute limit, counted as Groq's 413 message counts it (a token per
/// 4 bytes of `messages`): a request above it is refused with 413, any other answered.
pub const TPM_LIMIT: usize = 6000;
/// How many content chunks `streamlong-` sends.
pub const LONG_PIECES: usize = 30;
/// Where the fake serves its JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
const CHAT_COMPLETIONS: &str = "/openai/v1/chat/completions";
const SYSTEM_FINGERPRINT: &str = "fp_fakegroq01";
/// Bound on one request body, so a runaway request cannot exhaust memory.
const MAX_BODY: usize = 16 * 1024 * 1024;

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
    /// Header names lowercased, in the order received.
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
    stop: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

struct Shared {
    api_key: String,
    calls: Mutex<Vec<Call>>,
    /// What `GET /openai/v1/models` lists, or the status it fails with.
    models: Mutex<Result<Vec<String>, u16>>,
    /// The pause between two SSE events, and how long `hang`, `bodyhang` and `streamstall` hold
    /// their connection and `streamslow` waits.
    chunk_delay: Mutex<Duration>,
    hang_for: Mutex<Duration>,
    /// `GET /.well-known/jwks.json`: status, `cache-control`, body.
    jwks: Mutex<(u16, Option<String>, Value)>,
}

impl FakeGroq {
    /// Binds `127.0.0.1:0` and starts serving; requests must carry `Bearer <api_key>`.
    pub fn start(api_key: &str) -> FakeGroq {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener's address");
        listener.set_nonblocking(true).expect("non-blocking");
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            calls: Mutex::default(),
            models: Mutex::new(Ok(Vec::new())),
            chunk_delay: Mutex::new(Duration::from_millis(20)),
            hang_for: Mutex::new(Duration::from_secs(60)),
            jwks: Mutex::new((404, None, json!({"error": "no JWKS set"}))),
        });
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let server = thread::Builder::new().name(format!("fake-groq-{}", addr.port()));
        let server = server.spawn(move || serve(listener, serving, stopped));
        let stop = Some((stop, server.expect("spawn the fake Groq thread")));
        FakeGroq { addr, shared, stop }
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
        self.count(|call| call.model.as_deref() == Some(model))
    }

    fn count(&self, counted: impl Fn(&Call) -> bool) -> usize {
        lock(&self.shared.calls)
            .iter()
            .filter(|c| counted(c))
            .count()
    }

    /// The `"model"` of every request that named one, in arrival order.
    pub fn models_called(&self) -> Vec<String> {
        self.calls().into_iter().filter_map(|c| c.model).collect()
    }

    /// What `GET /.well-known/jwks.json` answers from now on.
    pub fn set_jwks(&self, status: u16, cache_control: Option<&str>, body: Value) {
        *lock(&self.shared.jwks) = (status, cache_control.map(str::to_owned), body);
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.count(|call| call.path == JWKS_PATH)
    }

    /// The ids `GET /openai/v1/models` lists from now on.
    pub fn set_models(&self, ids: Vec<String>) {
        *lock(&self.shared.models) = Ok(ids);
    }

    /// Makes `GET /openai/v1/models` answer `status` with Groq's error body, until `set_models`.
    pub fn set_models_status(&self, status: u16) {
        *lock(&self.shared.models) = Err(status);
    }

    /// The pause between two SSE events.
    pub fn set_chunk_delay(&self, delay: Duration) {
        *lock(&self.shared.chunk_delay) = delay;
    }

    /// How long `hang`, `bodyhang` and `streamstall` hold their connection, and `streamslow`
    /// waits before its first chunk.
    pub fn set_hang_for(&self, duration: Duration) {
        *lock(&self.shared.hang_for) = duration;
    }
}

impl Drop for FakeGroq {
    fn drop(&mut self) {
        // The server thread returns from its accept loop, closing the listener, then drops the
        // runtime: that drops every connection task (closing its socket, hung or idle) and every
        // stream task mid-sleep. Nothing waits for a timer.
        if let Some((stop, server)) = self.stop.take() {
            let _ = stop.send(());
            let _ = server.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take every later assertion down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name));
    found.next().map(|(_, value)| value.as_str())
}

/// The server thread: accepts until told to stop (or the fake is gone), one task per connection.
fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = runtime.expect("the fake Groq's tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
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
            // Heads as Groq's are written down: no `date`. Only the client or `Drop` closes a
            // connection, however slow its head. An `Err` is a connection closed on purpose
            // (`drop`, `hang`, a dropped stream) or by the client: nothing left to do.
            let mut http = http1::Builder::new();
            http.auto_date_header(false).header_read_timeout(None);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move { connection.await.ok() });
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
    let body = Limited::new(body, MAX_BODY).collect().await;
    let body = body
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .to_bytes();
    let text = |value: &HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), text(value)));
    let headers: Vec<(String, String)> = headers.collect();
    // Whether the connection stays open after this request, by HTTP/1.x's rules.
    let connection = find_header(&headers, "connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep_alive = match parts.version {
        Version::HTTP_10 => connection.contains("keep-alive"),
        _ => !connection.contains("close"),
    };
    let expected = format!("Bearer {}", shared.api_key);
    let authorized = find_header(&headers, "authorization") == Some(expected.as_str());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    let (method, path) = (parts.method.to_string(), parts.uri.to_string());
    let call = Call {
        method,
        path,
        model: model.clone(),
        body: body.clone(),
        authorized,
        headers,
    };
    lock(&shared.calls).push(call);
    let id = new_request_id();

    let reply = match (parts.method.as_str(), parts.uri.path()) {
        ("GET", JWKS_PATH) => {
            let (status, cache_control, body) = lock(&shared.jwks).clone();
            let mut reply = Reply::json(status, &body);
            reply
                .headers
                .extend(cache_control.map(|v| ("cache-control".to_owned(), v)));
            reply
        }
        _ if !authorized => invalid_api_key(),
        ("POST", CHAT_COMPLETIONS) => return chat(&shared, &body, model, &id, keep_alive).await,
        ("GET", "/openai/v1/models") => match lock(&shared.models).clone() {
            Ok(ids) => models_list(&ids),
            Err(401) => invalid_api_key(),
            Err(status) => Reply::error(status, "internal_server_error", reason(status)),
        },
        (method, route) => {
            let message = format!(
                "Unknown request URL: {method} {route}. Please check the URL for typos, or see \
                 the docs at https://console.groq.com/docs/"
            );
            Reply::error(404, "invalid_request_error/unknown_url", &message)
        }
    };
    Ok(reply.into_response(&id, keep_alive))
}

async fn chat(
    shared: &Shared,
    body: &Value,
    model: Option<String>,
    id: &str,
    keep: bool,
) -> Answer {
    let Some(model) = model else {
        let message = match body.is_null() {
            true => "Failed to parse the request body as JSON.",
            false => "'model' : property 'model' is missing",
        };
        let reply = Reply::error(400, "invalid_request_error", message);
        return Ok(reply.into_response(id, keep));
    };
    let stream = body["stream"] == true;
    let include_usage = body["stream_options"]["include_usage"] == true;
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
        let events = sse_events(&model, id, include_usage, script);
        return Ok(stream_completion(shared, id, events, script));
    }

    // What Groq says to a model without structured outputs or tool calling (issue 24).
    let schema = body["response_format"]["type"] == "json_schema";
    let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let reply = match behaviour {
        "ok" => Reply::json(200, &answer_to(body, &model, id)),
        "noschema" if schema => {
            let allowed = "'response_format.type' : value is not one of the allowed values ['text','json_object']";
            Reply::error(400, "invalid_request_error", allowed)
        }
        "notools" if tools => {
            let refused = "`tool calling` is not supported with this model";
            Reply::error(400, "invalid_request_error", refused)
        }
        "noschema" | "notools" => Reply::json(200, &answer_to(body, &model, id)),
        "streamslow" => {
            tokio::time::sleep(hang_for).await;
            Reply::json(200, &completion(&model, id))
        }
        "hang" => {
            tokio::time::sleep(hang_for).await;
            return Err(closed_on_purpose("`hang` closes without answering"));
        }
        "bodyhang" => {
            // The 200 head and half of a completion, then silence: an answer that stalls after
            // its head, which only a deadline on the whole answer (not just the head) catches.
            // The head announces the whole length; the connection closes after `hang_for`.
            let reply = Reply::json(200, &completion(&model, id));
            let half = Bytes::copy_from_slice(&reply.body[..reply.body.len().div_ceil(2)]);
            let (parts, _) = reply.into_response(id, false).into_parts();
            let (feed, body) = fed_body();
            tokio::spawn(async move {
                if feed.send(Ok(half)).await.is_ok() && pause(&feed, hang_for).await {
                    let gives_up = closed_on_purpose("`bodyhang` gives up");
                    let _ = feed.send(Err(gives_up)).await;
                }
            });
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        "drop" => return Err(closed_on_purpose("`drop` closes without answering")),
        "ratelimited" => rate_limited(&model),
        "tpm" => {
            let messages = body.get("messages").map_or(0, |m| m.to_string().len());
            match messages.div_ceil(4) {
                requested if requested > TPM_LIMIT => request_too_large(&model, requested),
                _ => Reply::json(200, &completion(&model, id)),
            }
        }
        "capacity" => {
            let message = format!(
                "Request could not be served: flex tier capacity exceeded for model `{model}`. \
                 Please try again later or use another service tier."
            );
            Reply::error(498, "capacity_exceeded/capacity_exceeded", &message)
        }
        "error500" => Reply::error(500, "internal_server_error", "Internal Server Error"),
        "html502" => html_502(),
        "badkey" => invalid_api_key(),
        "notcompletion" => Reply::json(200, &json!({"status": "ok", "object": "list", "data": []})),
        // `gone` and every unknown prefix: what Groq says for a model it does not serve.
        _ => {
            let message =
                format!("The model `{model}` does not exist or you do not have access to it.");
            Reply::error(404, "invalid_request_error/model_not_found", &message)
        }
    };
    Ok(reply.into_response(id, keep))
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
    /// Like `Full` with `LONG_PIECES` content chunks.
    Long,
    /// Role chunk and one content chunk, then silence for `hang_for`, then the connection closes
    /// (no terminating chunk).
    Stall,
}

/// The 200 head at once; `events` follow from a task, `chunk_delay` apart.
fn stream_completion(
    shared: &Shared,
    id: &str,
    events: Vec<String>,
    script: Script,
) -> Response<ResponseBody> {
    let chunk_delay = *lock(&shared.chunk_delay);
    let hang_for = *lock(&shared.hang_for);
    let (feed, body) = fed_body();
    tokio::spawn(async move {
        if script == Script::Slow && !pause(&feed, hang_for).await {
            return;
        }
        for (index, event) in events.into_iter().enumerate() {
            let paused = index == 0 || pause(&feed, chunk_delay).await;
            if !paused || feed.send(Ok(Bytes::from(event))).await.is_err() {
                return;
            }
        }
        // Dropping `feed` ends the body with its terminating chunk; an error, without it.
        let broken = match script {
            Script::Drop => true,
            Script::Stall => pause(&feed, hang_for).await,
            _ => false,
        };
        if broken {
            let broken = closed_on_purpose("the stream breaks off");
            let _ = feed.send(Err(broken)).await;
        }
    });
    let mut response = Response::new(body.boxed());
    response.extensions_mut().insert(reason_phrase(200));
    let headers = response.headers_mut();
    append(headers, "content-type", "text/event-stream");
    append(headers, "cache-control", "no-cache");
    append(headers, "connection", "close");
    for (name, value) in groq_headers(id, false) {
        append(headers, name, &value);
    }
    response
}

/// Every SSE event `script` sends, framed.
fn sse_events(model: &str, id: &str, include_usage: bool, script: Script) -> Vec<String> {
    let chat_id = format!("chatcmpl-{}", fake_uuid(&new_request_id()));
    let created = unix_now();
    let chunk = |choices: Value| {
        json!({"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices})
    };
    let delta = |delta: Value, finish: Value| {
        chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]))
    };
    let data = |value: &Value| format!("data: {value}\n\n");

    let mut first = delta(json!({"role": "assistant", "content": ""}), Value::Null);
    first["x_groq"] = json!({"id": id});
    let pieces: Vec<&str> = match script {
        Script::Full | Script::Slow => vec!["hello", " from ", model],
        Script::Long => vec!["tick "; LONG_PIECES],
        Script::Drop | Script::Error | Script::NoDone | Script::Stall => vec!["hello"],
    };
    let mut events = vec![data(&first)];
    for piece in pieces {
        events.push(data(&delta(json!({"content": piece}), Value::Null)));
    }
    match script {
        Script::Full | Script::Slow | Script::Long => {
            let mut last = delta(json!({}), json!("stop"));
            last["x_groq"] = json!({"id": id, "usage": usage()});
            events.push(data(&last));
            if include_usage {
                let mut usage_chunk = chunk(json!([]));
                usage_chunk["usage"] = usage();
                events.push(data(&usage_chunk));
            }
            events.push("data: [DONE]\n\n".to_owned());
        }
        Script::Error => {
            let error = json!({"error": {
                "message": "Tool call validation failed: parameters for tool get_weather did not \
                            match schema: errors: [missing properties: 'location']",
                "type": "invalid_request_error", "code": "tool_use_failed", "status_code": 400}});
            events.push(format!("event: error\ndata: {error}\n\n"));
        }
        Script::Drop | Script::NoDone | Script::Stall => {}
    }
    events
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
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let piece = self.0.poll_recv(cx);
        piece.map(|piece| piece.map(|piece| piece.map(Frame::data)))
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
        let (content_type, body) = ("application/json", body.to_string().into_bytes());
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body,
            rate_limited: false,
        }
    }

    /// `{"error":{"message","type"[,"code"]}}` of `TYPE[/CODE]`: Groq omits `code` rather than
    /// sending `null`.
    fn error(status: u16, kind: &str, message: &str) -> Reply {
        let (kind, code) = kind
            .split_once('/')
            .map_or((kind, None), |(k, c)| (k, Some(c)));
        let mut error = json!({"message": message, "type": kind});
        if let Some(code) = code {
            error["code"] = json!(code);
        }
        Reply::json(status, &json!({ "error": error }))
    }

    /// The whole answer: status (with its reason phrase), headers, body.
    fn into_response(self, id: &str, keep_alive: bool) -> Response<ResponseBody> {
        let length = self.body.len().to_string();
        let body = Full::new(Bytes::from(self.body)).map_err(|never| match never {});
        let mut response = Response::new(body.boxed());
        *response.status_mut() = StatusCode::from_u16(self.status).expect("a valid status");
        response.extensions_mut().insert(reason_phrase(self.status));
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let headers = response.headers_mut();
        let head = [
            ("content-type", self.content_type),
            ("content-length", &length),
        ];
        for (name, value) in head.into_iter().chain([("connection", connection)]) {
            append(headers, name, value);
        }
        for (name, value) in groq_headers(id, self.rate_limited) {
            append(headers, name, &value);
        }
        for (name, value) in &self.headers {
            append(headers, name, value);
        }
        response
    }
}

fn append(headers: &mut hyper::HeaderMap, name: &str, value: &str) {
    let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
    let value = HeaderValue::from_str(value).expect("a valid header value");
    headers.append(name, value);
}

/// The reason phrase of `reason`, written by hyper in place of its own (it has none for 498).
fn reason_phrase(status: u16) -> ReasonPhrase {
    ReasonPhrase::from_static(reason(status).as_bytes())
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

/// The headers Groq puts on every response, errors included.
fn groq_headers(id: &str, rate_limited: bool) -> [(&'static str, String); 7] {
    let remaining = if rate_limited {
        ["14390", "0"]
    } else {
        ["14399", "5933"]
    };
    [
        ("x-ratelimit-limit-requests", "14400".to_owned()),
        ("x-ratelimit-limit-tokens", "6000".to_owned()),
        ("x-ratelimit-remaining-requests", remaining[0].to_owned()),
        ("x-ratelimit-remaining-tokens", remaining[1].to_owned()),
        ("x-ratelimit-reset-requests", "2m59.56s".to_owned()),
        ("x-ratelimit-reset-tokens", RESET_TOKENS.to_owned()),
        ("x-request-id", id.to_owned()),
    ]
}

fn invalid_api_key() -> Reply {
    Reply::error(
        401,
        "invalid_request_error/invalid_api_key",
        "Invalid API Key",
    )
}

fn rate_limited(model: &str) -> Reply {
    let message = format!(
        "Rate limit reached for model `{model}` in organization `{ORG_ID}` service tier \
         `on_demand` on tokens per minute (TPM): Limit 6000, Used 5000, Requested 1500. Please \
         try again in {RESET_TOKENS}. Need more tokens? Upgrade to Dev Tier today at \
         https://console.groq.com/settings/billing"
    );
    let mut reply = Reply::error(429, "tokens/rate_limit_exceeded", &message);
    reply.rate_limited = true;
    reply
        .headers
        .push(("retry-after".to_owned(), RETRY_AFTER_SECS.to_string()));
    reply
}

/// Groq's 413: a request larger than the model's tokens-per-minute limit.
fn request_too_large(model: &str, requested: usize) -> Reply {
    let message = format!(
        "Request too large for model `{model}` in organization `{ORG_ID}` on tokens per minute \
         (TPM): Limit {TPM_LIMIT}, Requested {requested}, please reduce your message size and \
         try again."
    );
    Reply::error(413, "tokens/rate_limit_exceeded", &message)
}

fn html_502() -> Reply {
    let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n\
                </body>\r\n</html>\r\n";
    let body = body.as_bytes().to_vec();
    Reply {
        status: 502,
        content_type: "text/html",
        headers: Vec::new(),
        body,
        rate_limited: false,
    }
}

fn models_list(ids: &[String]) -> Reply {
    let model = |id: &String| {
        json!({"id": id, "object": "model", "created": 1_754_408_224, "owned_by": "Fake",
               "active": true, "context_window": 131_072, "max_completion_tokens": 65_536})
    };
    let data: Vec<Value> = ids.iter().map(model).collect();
    Reply::json(200, &json!({"object": "list", "data": data}))
}

fn usage() -> Value {
    json!({"queue_time": 0.0051, "prompt_tokens": 55, "prompt_time": 0.0042,
           "completion_tokens": 12, "completion_time": 0.0218, "total_tokens": 67,
           "total_time": 0.026})
}

/// The completion for `body`: a call of its first tool when it sends tools (`finish_reason`
/// `tool_calls`), JSON content when it asks for a JSON response format, else [`completion`].
fn answer_to(body: &Value, model: &str, id: &str) -> Value {
    let mut answer = completion(model, id);
    let choice = &mut answer["choices"][0];
    if let Some(tool) = body["tools"].as_array().and_then(|t| t.first()) {
        let name = tool["function"]["name"].clone();
        let call = json!({"id": format!("call_{}", fake_uuid(id)), "type": "function",
                          "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}});
        choice["message"] = json!({"role": "assistant", "content": null, "tool_calls": [call]});
        choice["finish_reason"] = json!("tool_calls");
    } else if body["response_format"]["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("json"))
    {
        let content = json!({"answer": format!("hello from {model}")}).to_string();
        choice["message"]["content"] = json!(content);
    }
    answer
}

fn completion(model: &str, id: &str) -> Value {
    let message = json!({"role": "assistant", "content": format!("hello from {model}")});
    json!({"id": format!("chatcmpl-{}", fake_uuid(id)), "object": "chat.completion",
           "created": unix_now(), "model": model,
           "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": "stop"}],
           "usage": usage(), "system_fingerprint": SYSTEM_FINGERPRINT, "x_groq": {"id": id},
           "service_tier": "on_demand"})
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A Groq-looking request id, unique within the process.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |e| e.subsec_nanos());
    format!("req_01fake{nanos:08x}{n:08x}")
}

/// A UUID-shaped string derived from `seed` (FNV-1a), so ids look like Groq's.
fn fake_uuid(seed: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in seed.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let hex = format!("{hash:032x}");
    let (a, b) = (&hex[0..8], &hex[8..12]);
    format!("{a}-{b}-{}-{}-{}", &hex[12..16], &hex[16..20], &hex[20..32])
}
