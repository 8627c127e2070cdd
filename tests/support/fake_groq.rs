//! A fake Groq API on `127.0.0.1` that answers with Groq's real statuses, error bodies, rate-limit
//! headers and SSE framing (as written down in the shared `groq-api.md`), so end-to-end tests can
//! drive the Worker through every upstream failure without the network.
//!
//! `POST /openai/v1/chat/completions` picks its behaviour from the requested model id's prefix up
//! to the first `-` (`ok-a`, `ok-b`, `gone-x`, `ratelimited-1`, ...), so one fake serves a whole
//! fallback chain with distinct, countable models. Every request, authorised or not, is recorded
//! as a [`Call`].
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Sleeping threads wake this often to notice that the fake was dropped.
const SLEEP_STEP: Duration = Duration::from_millis(20);
/// Bounds on what one request may send, so a malformed request cannot exhaust memory.
const MAX_LINE: u64 = 64 * 1024;
const MAX_HEADERS: usize = 200;
const MAX_BODY: usize = 16 * 1024 * 1024;
const SYSTEM_FINGERPRINT: &str = "fp_fakegroq01";

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

/// A running fake Groq. Dropping it closes every connection and stops every thread it started.
pub struct FakeGroq {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    api_key: String,
    shutdown: AtomicBool,
    calls: Mutex<Vec<Call>>,
    models: Mutex<Vec<String>>,
    models_status: Mutex<Option<u16>>,
    chunk_delay: Mutex<Duration>,
    hang_for: Mutex<Duration>,
    /// Clones of the open connections, so `Drop` can unblock threads parked in `read`.
    open: Mutex<HashMap<u64, TcpStream>>,
    active: AtomicUsize,
    next_id: AtomicU64,
}

impl FakeGroq {
    /// Binds `127.0.0.1:0` and starts serving; requests must carry `Bearer <api_key>`.
    pub fn start(api_key: &str) -> FakeGroq {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for the fake Groq");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            shutdown: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            models: Mutex::new(Vec::new()),
            models_status: Mutex::new(None),
            chunk_delay: Mutex::new(DEFAULT_CHUNK_DELAY),
            hang_for: Mutex::new(DEFAULT_HANG_FOR),
            open: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fake-groq-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the fake Groq accept thread")
        };
        FakeGroq {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host root, e.g. `http://127.0.0.1:41234`; the router appends `/openai/v1/...`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn api_key(&self) -> &str {
        &self.shared.api_key
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

    pub fn reset_calls(&self) {
        lock(&self.shared.calls).clear();
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
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking `accept`; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in lock(&self.shared.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Connection threads notice within one `SLEEP_STEP`; do not hang a test on a stuck one.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler thread must not take every later assertion down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        match stream.try_clone() {
            Ok(clone) => {
                lock(&shared.open).insert(id, clone);
            }
            Err(_) => continue,
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("fake-groq-conn-{id}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let _active = ActiveGuard(&shared);
                    // The flag is read after the clone was registered, so `Drop` either shuts this
                    // connection down or this thread sees the flag.
                    if !shared.shutdown.load(Ordering::SeqCst) {
                        let _ = stream.set_nodelay(true);
                        let _ = serve_connection(&stream, &shared);
                        let _ = stream.shutdown(Shutdown::Write);
                    }
                    lock(&shared.open).remove(&id);
                }
            });
        if spawned.is_err() {
            lock(&shared.open).remove(&id);
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sleeps for `duration` in short steps; `false` when the fake was dropped meanwhile.
fn sleep_unless_shutdown(shared: &Shared, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep(SLEEP_STEP.min(deadline - now));
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 request parsing

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.version == "HTTP/1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        }
    }

    fn route(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` at a clean EOF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut raw = Vec::new();
    let read = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut raw)?;
    if read == 0 {
        return Ok(None);
    }
    if raw.last() != Some(&b'\n') {
        return Err(if read as u64 >= MAX_LINE {
            invalid("line too long")
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        });
    }
    raw.pop();
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    String::from_utf8(raw)
        .map(Some)
        .map_err(|_| invalid("line is not UTF-8"))
}

/// Reads one request; `Ok(None)` when the peer closed the connection between requests.
fn read_request(
    reader: &mut BufReader<&TcpStream>,
    writer: &mut &TcpStream,
) -> io::Result<Option<Request>> {
    // RFC 9112 allows stray empty lines before a request line.
    let request_line = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {request_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("unsupported version {version:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in headers"))?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        if name.is_empty() || name.ends_with(char::is_whitespace) {
            return Err(invalid(format!("bad header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        if headers.len() > MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
    }
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request
        .header("expect")
        .is_some_and(|expect| expect.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked_body(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
        if length > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked_body(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            while let Some(trailer) = read_line(reader)? {
                if trailer.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        match read_line(reader)? {
            Some(rest) if rest.is_empty() => {}
            _ => return Err(invalid("chunk not followed by CRLF")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving

/// What happens to the connection once a request has been dealt with.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

fn serve_connection(stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        let request = match read_request(&mut reader, &mut writer) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                let body = groq_error(
                    &format!("Malformed HTTP request: {error}"),
                    "invalid_request_error",
                    None,
                );
                let reply = Reply::json(400, &body);
                return write_reply(&mut writer, &reply, &new_request_id(), false);
            }
            Err(error) => return Err(error),
        };
        let keep_alive = request.keep_alive();
        let next = handle(request, shared, &mut writer, keep_alive)?;
        if next == Next::Close || !keep_alive {
            return Ok(());
        }
    }
}

fn handle(
    request: Request,
    shared: &Shared,
    writer: &mut &TcpStream,
    keep_alive: bool,
) -> io::Result<Next> {
    let expected = format!("Bearer {}", shared.api_key);
    let authorized = request.header("authorization") == Some(expected.as_str());
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    lock(&shared.calls).push(Call {
        method: request.method.clone(),
        path: request.target.clone(),
        model: model.clone(),
        body: body.clone(),
        authorized,
        headers: request.headers.clone(),
    });
    let request_id = new_request_id();

    if !authorized {
        return finish(writer, &invalid_api_key(), &request_id, keep_alive);
    }
    match (request.method.as_str(), request.route()) {
        ("POST", "/openai/v1/chat/completions") => {
            chat_completion(shared, writer, &body, model, &request_id, keep_alive)
        }
        ("GET", "/openai/v1/models") => {
            let reply = match *lock(&shared.models_status) {
                Some(status) => error_for_status(status),
                None => models_list(&lock(&shared.models)),
            };
            finish(writer, &reply, &request_id, keep_alive)
        }
        (method, _) => {
            let message = format!(
                "Unknown request URL: {method} {}. Please check the URL for typos, or see the \
                 docs at https://console.groq.com/docs/",
                request.route()
            );
            let reply = Reply::json(
                404,
                &groq_error(&message, "invalid_request_error", Some("unknown_url")),
            );
            finish(writer, &reply, &request_id, keep_alive)
        }
    }
}

fn finish(
    writer: &mut &TcpStream,
    reply: &Reply,
    request_id: &str,
    keep_alive: bool,
) -> io::Result<Next> {
    write_reply(writer, reply, request_id, keep_alive)?;
    Ok(if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

fn chat_completion(
    shared: &Shared,
    writer: &mut &TcpStream,
    body: &Value,
    model: Option<String>,
    request_id: &str,
    keep_alive: bool,
) -> io::Result<Next> {
    let Some(model) = model else {
        let message = if body.is_null() {
            "Failed to parse the request body as JSON."
        } else {
            "'model' : property 'model' is missing"
        };
        let reply = Reply::json(400, &groq_error(message, "invalid_request_error", None));
        return finish(writer, &reply, request_id, keep_alive);
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
        "streamempty" => Some(Script::Empty),
        _ => None,
    };
    if let Some(script) = script {
        return stream_completion(shared, writer, &model, request_id, include_usage, script);
    }

    let reply = match behaviour {
        "ok" => Reply::json(200, &completion(&model, request_id)),
        "streamslow" => {
            if !sleep_unless_shutdown(shared, hang_for) {
                return Ok(Next::Close);
            }
            Reply::json(200, &completion(&model, request_id))
        }
        "hang" => {
            sleep_unless_shutdown(shared, hang_for);
            return Ok(Next::Close);
        }
        "bodyhang" => {
            // The 200 head and half of a completion, then silence: an answer that stalls after
            // its head, which only a deadline on the whole answer (not just the head) catches.
            let reply = Reply::json(200, &completion(&model, request_id));
            let bytes = reply_bytes(&reply, request_id, false);
            writer.write_all(&bytes[..bytes.len() - reply.body.len() / 2])?;
            writer.flush()?;
            sleep_unless_shutdown(shared, hang_for);
            return Ok(Next::Close);
        }
        "drop" => return Ok(Next::Close),
        "decommissioned" => Reply::json(
            400,
            &groq_error(
                &format!(
                    "The model `{model}` has been decommissioned and is no longer supported. \
                     Please refer to https://console.groq.com/docs/deprecations for a \
                     recommendation on which model to use instead."
                ),
                "invalid_request_error",
                Some("model_decommissioned"),
            ),
        ),
        "ratelimited" => rate_limited(&model),
        "toolarge" => Reply::json(
            413,
            &groq_error(
                &format!(
                    "Request too large for model `{model}` in organization `{ORG_ID}` on tokens \
                     per minute (TPM): Limit 6000, Requested 14368, please reduce your message \
                     size and try again."
                ),
                "tokens",
                Some("rate_limit_exceeded"),
            ),
        ),
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
        "forbidden" => Reply::json(403, &groq_error("Forbidden", "permission_error", None)),
        "notcompletion" => Reply::json(200, &json!({"status": "ok", "object": "list", "data": []})),
        "badrequest" => {
            let mut error = groq_error(
                "'temperature' : value must be a number",
                "invalid_request_error",
                None,
            );
            error["error"]["param"] = json!("temperature");
            Reply::json(400, &error)
        }
        "contextlength" => {
            let mut error = groq_error(
                "Please reduce the length of the messages or completion.",
                "invalid_request_error",
                Some("context_length_exceeded"),
            );
            error["error"]["param"] = json!("messages");
            Reply::json(400, &error)
        }
        "jsonfail" => {
            let mut error = groq_error(
                "Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for \
                 more details.",
                "invalid_request_error",
                Some("json_validate_failed"),
            );
            error["error"]["failed_generation"] = json!("{\"answer\": \"hello from");
            Reply::json(400, &error)
        }
        // `gone` and every unknown prefix: what Groq says for a model it does not serve.
        _ => model_not_found(&model),
    };
    finish(writer, &reply, request_id, keep_alive)
}

/// Which SSE stream to play.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Role chunk, three content chunks, final chunk, optional usage chunk, `[DONE]`.
    Full,
    /// Like `Full`, after waiting `hang_for` behind the 200 headers.
    Slow,
    /// Role chunk and one content chunk, then the socket closes without `[DONE]`.
    Drop,
    /// Role chunk, one content chunk, then an `event: error` and close.
    Error,
    /// The 200 headers, then close before any chunk.
    Empty,
    /// Like `Full` with `LONG_PIECES` content chunks, so it lasts `LONG_PIECES + 2` chunk delays (+3 with `include_usage`).
    Long,
    /// Role chunk and one content chunk, then silence for `hang_for`, then close.
    Stall,
}

/// How many content chunks `streamlong-` sends.
pub const LONG_PIECES: usize = 30;

fn stream_completion(
    shared: &Shared,
    writer: &mut &TcpStream,
    model: &str,
    request_id: &str,
    include_usage: bool,
    script: Script,
) -> io::Result<Next> {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    head.push_str("content-type: text/event-stream\r\n");
    head.push_str("cache-control: no-cache\r\n");
    head.push_str("connection: close\r\n");
    for (name, value) in groq_headers(request_id, false) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    writer.flush()?;
    if script == Script::Empty {
        return Ok(Next::Close);
    }
    // Copied out first: a guard in the condition would hold the lock through the whole sleep and
    // stall every other request, which reads `hang_for` too.
    let hang_for = *lock(&shared.hang_for);
    if script == Script::Slow && !sleep_unless_shutdown(shared, hang_for) {
        return Ok(Next::Close);
    }

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
        Script::Drop | Script::Error | Script::Empty | Script::Stall => vec!["hello"],
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
        Script::Drop | Script::Empty | Script::Stall => {}
    }

    let chunk_delay = *lock(&shared.chunk_delay);
    for (index, event) in events.iter().enumerate() {
        if index > 0 && !sleep_unless_shutdown(shared, chunk_delay) {
            return Ok(Next::Close);
        }
        writer.write_all(event.as_bytes())?;
        writer.flush()?;
    }
    if script == Script::Stall {
        sleep_unless_shutdown(shared, hang_for);
    }
    Ok(Next::Close)
}

fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
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
}

fn write_reply(
    writer: &mut &TcpStream,
    reply: &Reply,
    request_id: &str,
    keep_alive: bool,
) -> io::Result<()> {
    writer.write_all(&reply_bytes(reply, request_id, keep_alive))?;
    writer.flush()
}

/// The whole HTTP/1.1 response: status line, headers, body.
fn reply_bytes(reply: &Reply, request_id: &str, keep_alive: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    head.push_str(&format!("content-type: {}\r\n", reply.content_type));
    head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    head.push_str(if keep_alive {
        "connection: keep-alive\r\n"
    } else {
        "connection: close\r\n"
    });
    for (name, value) in groq_headers(request_id, reply.rate_limited) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&reply.body);
    bytes
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
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        424 => "Failed Dependency",
        429 => "Too Many Requests",
        498 => "Capacity Exceeded",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
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
        403 => Reply::json(403, &groq_error("Forbidden", "permission_error", None)),
        429 => rate_limited("*"),
        502 => html_502(),
        500..=599 => Reply::json(
            status,
            &groq_error(reason(status), "internal_server_error", None),
        ),
        _ => Reply::json(
            status,
            &groq_error(reason(status), "invalid_request_error", None),
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
