//! A blocking HTTP/1.1 client for the end-to-end tests, on `ureq`: whole answers (`send`,
//! `post_json`, `get`), bodies read piece by piece with their arrival times (`stream`), hand-made
//! request bytes (`send_raw`, the answer read with `httparse`), and an SSE parser (`sse_events`).
//! Every request says `Connection: close` (unless the caller sends a `Connection` header), and no
//! connection is reused.

use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use ureq::config::AutoHeaderValue;

/// A request's headers: `(name, value)` pairs.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// How long a read may block before the request fails, unless a `try_*` call says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked transfer-encoding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as UTF-8, invalid bytes replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the status and body when it is not JSON.
    pub fn json(&self) -> Value {
        let (status, text) = (self.status, self.text());
        let parsed = serde_json::from_slice(&self.body);
        parsed.unwrap_or_else(|e| panic!("not JSON ({e}): status {status}, body:\n{text}"))
    }
}

/// Sends one request and reads the whole answer; panics on any I/O error or timeout (60 s).
pub fn send(port: u16, method: &str, path: &str, headers: Headers, body: &[u8]) -> Response {
    let sent = try_send(port, method, path, headers, body, DEFAULT_TIMEOUT);
    sent.unwrap_or_else(|error| panic!("{method} {path} on port {port} failed: {error}"))
}

/// [`send`] with a chosen read timeout, returning I/O errors (a timeout is `TimedOut`; a
/// connection closed before the answer was whole is `UnexpectedEof`).
pub fn try_send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let answer = try_stream(port, method, path, headers, body, timeout)?;
    let (status, headers) = (answer.status, answer.headers.clone());
    let body = answer.finish();
    match body.end {
        StreamEnd::Complete => Ok(Response {
            status,
            headers,
            body: body.bytes(),
        }),
        StreamEnd::Truncated => Err(io::ErrorKind::UnexpectedEof.into()),
        StreamEnd::Error(kind) => Err(kind.into()),
    }
}

/// `POST path` with a JSON body, `content-type: application/json` and, when `key` is given,
/// `authorization: Bearer key`.
pub fn post_json(port: u16, path: &str, key: Option<&str>, body: &Value) -> Response {
    let bearer = key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(bearer.as_deref().map(|bearer| ("authorization", bearer)));
    send(port, "POST", path, &headers, body.to_string().as_bytes())
}

/// `GET path`, with `authorization: Bearer key` when `key` is given.
pub fn get(port: u16, path: &str, key: Option<&str>) -> Response {
    let bearer = key.map(|key| format!("Bearer {key}"));
    let headers: Vec<_> = bearer
        .as_deref()
        .map(|b| ("authorization", b))
        .into_iter()
        .collect();
    send(port, "GET", path, &headers, b"")
}

/// Sends one request and returns as soon as the status line and headers are in; the body is
/// then read piece by piece through the returned [`StreamResponse`]. Panics on error.
pub fn stream(
    port: u16,
    method: &str,
    path: &str,
    headers: Headers,
    body: &[u8],
) -> StreamResponse {
    let sent = try_stream(port, method, path, headers, body, DEFAULT_TIMEOUT);
    sent.unwrap_or_else(|error| panic!("{method} {path} on port {port} failed: {error}"))
}

/// [`stream`] with a chosen timeout for the connect and every read and write, returning I/O
/// errors. One agent per request: no pool, every status an answer (no redirect followed, no
/// 4xx/5xx made an error), no proxy, and no header but the caller's, `Host`, `Connection` and
/// `Content-Length`.
pub fn try_stream(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<StreamResponse> {
    let uri = format!("http://127.0.0.1:{port}{path}");
    let mut request = ureq::http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let connection = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"));
    if !connection {
        request = request.header("connection", "close");
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .allow_non_standard_methods(true)
        .proxy(None)
        .user_agent(AutoHeaderValue::None)
        .accept(AutoHeaderValue::None)
        .timeout_connect(Some(timeout))
        .timeout_per_read(Some(timeout))
        .timeout_per_write(Some(timeout));
    let agent = config.build().new_agent();
    let sent_at = Instant::now();
    // Only `POST`, `PUT` and `PATCH` say `Content-Length: 0` for an empty body.
    let answer = match body.is_empty() && !matches!(method, "POST" | "PUT" | "PATCH") {
        true => agent.run(request.body(()).map_err(invalid)?),
        false => agent.run(request.body(body).map_err(invalid)?),
    };
    let answer = answer.map_err(ureq_error)?;
    let text = |value: &ureq::http::HeaderValue| String::from_utf8_lossy(value.as_bytes()).into();
    let headers = answer
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), text(value)));
    let (status, headers) = (answer.status().as_u16(), headers.collect());
    let reader = answer.into_body().into_reader();
    Ok(StreamResponse {
        status,
        headers,
        sent_at,
        reader,
        end: None,
    })
}

/// `ureq`'s error as an `io::Error`: timeouts are `TimedOut`, socket errors keep their kind (a
/// connection closed early is `UnexpectedEof`), anything else (a malformed answer) is
/// `InvalidData`. A body reader wraps `ureq::Error`s in `io::Error`s.
fn ureq_error(error: ureq::Error) -> io::Error {
    match error {
        ureq::Error::Io(error) => error,
        ureq::Error::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, error),
        other => invalid(other),
    }
}

/// Why a streamed body stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The framing said the body was complete (final chunk, `Content-Length` reached, or EOF for a
    /// close-delimited body).
    Complete,
    /// The connection closed (or was reset) before the framing said the body was complete.
    Truncated,
    /// A read failed: a timeout (`TimedOut`), or malformed framing (`InvalidData`).
    Error(io::ErrorKind),
}

/// Some decoded body bytes and when they were read off the socket.
#[derive(Clone, Debug)]
pub struct Piece {
    pub bytes: Vec<u8>,
    pub at: Instant,
}

/// A response whose body is still arriving. Iterate it for [`Piece`]s, or `finish` it.
pub struct StreamResponse {
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// When the request was sent, to measure time to each piece.
    pub sent_at: Instant,
    reader: ureq::BodyReader<'static>,
    end: Option<StreamEnd>,
}

/// Everything a [`StreamResponse`] delivered.
#[derive(Clone, Debug)]
pub struct StreamBody {
    pub pieces: Vec<Piece>,
    pub end: StreamEnd,
}

impl StreamBody {
    /// All pieces concatenated.
    pub fn bytes(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|piece| piece.bytes.clone())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

impl StreamResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Reads the rest of the body.
    pub fn finish(mut self) -> StreamBody {
        let pieces: Vec<Piece> = self.by_ref().collect();
        let end = self.end.clone().unwrap_or(StreamEnd::Complete);
        StreamBody { pieces, end }
    }
}

impl Iterator for StreamResponse {
    type Item = Piece;

    /// Whatever one read delivers: `ureq` returns what the socket has as soon as it has some.
    fn next(&mut self) -> Option<Piece> {
        if self.end.is_some() {
            return None;
        }
        let mut buffer = vec![0; 64 * 1024];
        let end = match self.reader.read(&mut buffer) {
            Ok(0) => StreamEnd::Complete,
            Ok(read) => {
                buffer.truncate(read);
                return Some(Piece {
                    bytes: buffer,
                    at: Instant::now(),
                });
            }
            // A `ureq::Error` wrapped by the reader, or the socket's own.
            Err(error) => {
                let wrapped = error.get_ref().is_some_and(|e| e.is::<ureq::Error>());
                let error = match wrapped {
                    true => ureq_error(*error.into_inner().unwrap().downcast().unwrap()),
                    false => error,
                };
                match error.kind() {
                    // ureq reports EOF, or a reset, before the framing's end this way.
                    io::ErrorKind::UnexpectedEof => StreamEnd::Truncated,
                    kind => StreamEnd::Error(kind),
                }
            }
        };
        self.end = Some(end);
        None
    }
}

/// Sends `bytes` exactly as given (a request no client would send) and reads the answer, whole,
/// to its `Content-Length` or the end of the connection (the answers read so are not chunked);
/// its head is parsed by `httparse`. Panics on error.
pub fn send_raw(port: u16, bytes: &[u8]) -> Response {
    let answer = try_send_raw(port, bytes);
    answer.unwrap_or_else(|error| panic!("raw request to port {port} failed: {error}"))
}

fn try_send_raw(port: u16, bytes: &[u8]) -> io::Result<Response> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut socket = TcpStream::connect_timeout(&address, DEFAULT_TIMEOUT)?;
    socket.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
    socket.write_all(bytes)?;
    let mut read = Vec::new();
    let mut more = |read: &mut Vec<u8>| -> io::Result<bool> {
        let mut buffer = [0; 16 * 1024];
        let n = socket.read(&mut buffer)?;
        read.extend_from_slice(&buffer[..n]);
        Ok(n > 0)
    };
    // Interim `1xx` answers (but `101`) come before the real one.
    let (status, headers) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut head = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(length) = head.parse(&read).map_err(invalid)? else {
            if !more(&mut read)? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            continue;
        };
        let text = |value: &[u8]| String::from_utf8_lossy(value).trim().to_owned();
        let headers = head
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), text(h.value)));
        let (status, headers) = (head.code.unwrap_or_default(), headers.collect::<Vec<_>>());
        read.drain(..length);
        if !(100..200).contains(&status) || status == 101 {
            break (status, headers);
        }
    };
    let length = find_header(&headers, "content-length").and_then(|l| l.parse().ok());
    let length = length.unwrap_or(usize::MAX);
    while read.len() < length && more(&mut read)? {}
    read.truncate(length.min(read.len()));
    Ok(Response {
        status,
        headers,
        body: read,
    })
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `None` for the default `message` type.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON, `None` when it is not (e.g. `[DONE]`).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// Parses SSE text per the WHATWG rules: events end at a blank line, `data:` lines accumulate,
/// one space after the colon is dropped, `:` comments and `id`/`retry` are ignored, an event
/// without data is not dispatched, and a trailing event without its blank line is discarded
/// (so a truncated stream shows as missing events).
pub fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<&str> = normalized.split('\n').collect();
    // The piece after the last `\n` is an unterminated line: not part of any complete event.
    lines.pop();
    let (mut events, mut event, mut data) = (Vec::new(), None, None::<String>);
    for line in lines {
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(SseEvent {
                    event: event.take(),
                    data,
                });
            }
            event = None;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match (field, &mut data) {
            ("event", _) => event = Some(value.to_owned()),
            ("data", Some(data)) => *data += &format!("\n{value}"),
            ("data", None) => data = Some(value.to_owned()),
            // Comments (an empty field), `id`, `retry` and unknown fields.
            _ => {}
        }
    }
    events
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let found = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name));
    found.map(|(_, value)| value.as_str())
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
