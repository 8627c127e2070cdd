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

/// How long a read may block before the request fails, unless a `try_*` call says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in the order received (repeats of a name right after its first one:
    /// `ureq` hands headers over as an `http::HeaderMap`).
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
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "expected a JSON body ({error}); got status {} with body:\n{}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends one request and reads the whole answer; panics on any I/O error or timeout (60 s).
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_send(port, method, path, headers, body, DEFAULT_TIMEOUT)
        .unwrap_or_else(|error| panic!("{method} {path} on port {port} failed: {error}"))
}

/// [`send`] with a chosen read timeout, returning I/O errors (a timeout is `TimedOut`; a
/// connection closed before a status line is `UnexpectedEof`).
pub fn try_send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    try_stream(port, method, path, headers, body, timeout)?.into_response()
}

/// Sends `bytes` exactly as given (for malformed requests) and reads the answer; panics on error.
pub fn send_raw(port: u16, bytes: &[u8]) -> Response {
    try_send_raw(port, bytes, DEFAULT_TIMEOUT)
        .unwrap_or_else(|error| panic!("raw request to port {port} failed: {error}"))
}

/// `POST path` with a JSON body, `content-type: application/json` and, when `key` is given,
/// `authorization: Bearer key`.
pub fn post_json(port: u16, path: &str, key: Option<&str>, body: &Value) -> Response {
    let authorization = key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(authorization.as_deref().map(|a| ("authorization", a)));
    send(port, "POST", path, &headers, body.to_string().as_bytes())
}

/// `GET path`, with `authorization: Bearer key` when `key` is given.
pub fn get(port: u16, path: &str, key: Option<&str>) -> Response {
    let authorization = key.map(|key| format!("Bearer {key}"));
    let headers: Vec<_> = authorization
        .as_deref()
        .map(|a| ("authorization", a))
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
    headers: &[(&str, &str)],
    body: &[u8],
) -> StreamResponse {
    try_stream(port, method, path, headers, body, DEFAULT_TIMEOUT)
        .unwrap_or_else(|error| panic!("{method} {path} on port {port} failed: {error}"))
}

/// [`stream`] with a chosen timeout, applied to the connect and to every read and write,
/// returning I/O errors.
pub fn try_stream(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<StreamResponse> {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        request = request.header("connection", "close");
    }
    let agent = agent(timeout);
    let sent_at = Instant::now();
    // ureq sends a body (and its `Content-Length`) for whatever it is given, `GET` included:
    // as before, only `POST`, `PUT` and `PATCH` say `Content-Length: 0` for an empty body.
    let response = if body.is_empty() && !matches!(method, "POST" | "PUT" | "PATCH") {
        agent.run(request.body(()).map_err(invalid)?)
    } else {
        agent.run(request.body(body).map_err(invalid)?)
    }
    .map_err(ureq_error)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    Ok(StreamResponse {
        status,
        headers,
        sent_at,
        reader: response.into_body().into_reader(),
        end: None,
    })
}

/// One agent per request: no pool, every status an answer (no redirects followed, no 4xx/5xx
/// turned into errors), no proxy from the environment, and no headers beyond the caller's but
/// `Host`, `Connection` and `Content-Length`.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
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
        .timeout_per_write(Some(timeout))
        .build()
        .new_agent()
}

/// `ureq`'s error as the `io::Error` this module has always returned: timeouts are `TimedOut`,
/// socket errors keep their kind (a connection closed early is `UnexpectedEof`), anything else
/// (a malformed answer) is `InvalidData`.
fn ureq_error(error: ureq::Error) -> io::Error {
    match error {
        ureq::Error::Io(error) => error,
        ureq::Error::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, error),
        other => invalid(other),
    }
}

/// [`ureq_error`] for errors from a body reader, which wraps `ureq::Error`s in `io::Error`s.
fn body_error(error: io::Error) -> io::Error {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<ureq::Error>())
    {
        let inner = error.into_inner().expect("checked just above");
        match inner.downcast::<ureq::Error>() {
            Ok(error) => ureq_error(*error),
            Err(other) => io::Error::other(other),
        }
    } else {
        error
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

/// A response whose body is still arriving. Iterate it for [`Piece`]s; after the last one,
/// [`StreamResponse::end`] says whether the body ended cleanly.
pub struct StreamResponse {
    pub status: u16,
    /// Names lowercased, in the order received (repeats of a name right after its first one).
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

    /// `None` while the body may still have bytes; then why it stopped.
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }

    /// Reads the rest of the body.
    pub fn finish(mut self) -> StreamBody {
        let pieces: Vec<Piece> = self.by_ref().collect();
        let end = self.end.clone().unwrap_or(StreamEnd::Complete);
        StreamBody { pieces, end }
    }

    /// Reads the rest of the body into a [`Response`]; an error unless it ended `Complete`.
    fn into_response(self) -> io::Result<Response> {
        let status = self.status;
        let headers = self.headers.clone();
        let body = self.finish();
        match body.end {
            StreamEnd::Complete => Ok(Response {
                status,
                headers,
                body: body.bytes(),
            }),
            StreamEnd::Truncated => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "status {status}: connection closed mid-body after {} bytes",
                    body.bytes().len()
                ),
            )),
            StreamEnd::Error(kind) => Err(io::Error::new(
                kind,
                format!(
                    "status {status}: body read failed after {} bytes",
                    body.bytes().len()
                ),
            )),
        }
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
            // ureq reports EOF, or a reset, before the framing's end as `UnexpectedEof`.
            Err(error) => match body_error(error).kind() {
                io::ErrorKind::UnexpectedEof => StreamEnd::Truncated,
                kind => StreamEnd::Error(kind),
            },
        };
        self.end = Some(end);
        None
    }
}

/// [`send_raw`] with a chosen read timeout, returning I/O errors.
///
/// The bytes go straight onto a `TcpStream`: ureq, like any client, will not send a malformed
/// request. The answer's head is parsed by `httparse`, and so are chunk-size lines
/// (`httparse::parse_chunk_size`); what is left here is picking the body's framing (chunked,
/// `Content-Length`, or until EOF) and reading the body whole. Making ureq read an answer to
/// bytes it did not write would take a custom transport from its unversioned API.
pub fn try_send_raw(port: u16, bytes: &[u8], timeout: Duration) -> io::Result<Response> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut socket = TcpStream::connect_timeout(&address, timeout)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    socket.write_all(bytes)?;
    let mut input = RawInput {
        socket,
        bytes: Vec::new(),
    };
    // Interim `1xx` answers (but `101`) come before the real one.
    let (status, headers) = loop {
        let (status, headers) = input.head()?;
        if !(100..200).contains(&status) || status == 101 {
            break (status, headers);
        }
    };
    let chunked = find_header(&headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        input.chunked_body()?
    } else if let Some(length) = find_header(&headers, "content-length") {
        let length: usize = length.parse().map_err(invalid)?;
        input.fill(length)?;
        input.bytes[..length].to_vec()
    } else {
        input.socket.read_to_end(&mut input.bytes)?;
        input.bytes
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A socket and what has been read from it but not yet consumed.
struct RawInput {
    socket: TcpStream,
    bytes: Vec<u8>,
}

impl RawInput {
    /// Reads more; `UnexpectedEof` if the peer has closed.
    fn read_more(&mut self) -> io::Result<()> {
        let mut buffer = [0; 16 * 1024];
        let read = self.socket.read(&mut buffer)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the answer was complete",
            ));
        }
        self.bytes.extend_from_slice(&buffer[..read]);
        Ok(())
    }

    fn fill(&mut self, length: usize) -> io::Result<()> {
        while self.bytes.len() < length {
            self.read_more()?;
        }
        Ok(())
    }

    /// Status and headers (names lowercased), consumed.
    fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(length) =
                parsed.parse(&self.bytes).map_err(invalid)?
            {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|header| {
                        let value = String::from_utf8_lossy(header.value).trim().to_owned();
                        (header.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                let status = parsed.code.unwrap_or_default();
                self.bytes.drain(..length);
                return Ok((status, headers));
            }
            self.read_more()?;
        }
    }

    /// A chunked body, decoded; what follows the last chunk's size line (trailers) is not read.
    fn chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let size_line = httparse::parse_chunk_size(&self.bytes[at..]);
            match size_line.map_err(|_| invalid("bad chunk size line"))? {
                httparse::Status::Partial => self.read_more()?,
                httparse::Status::Complete((_, 0)) => return Ok(body),
                httparse::Status::Complete((line, size)) => {
                    let size = usize::try_from(size).map_err(invalid)?;
                    let data = at + line;
                    // The chunk's data and the CRLF after it.
                    self.fill(data + size + 2)?;
                    body.extend_from_slice(&self.bytes[data..data + size]);
                    at = data + size + 2;
                }
            }
        }
    }
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
    let mut events = Vec::new();
    let mut event: Option<String> = None;
    let mut data: Option<String> = None;
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<&str> = normalized.split('\n').collect();
    // The piece after the last `\n` is an unterminated line: not part of any complete event.
    lines.pop();
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
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    events
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
