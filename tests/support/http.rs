//! A tiny blocking HTTP/1.1 client over std `TcpStream` for the end-to-end tests: whole answers
//! (`send`, `post_json`, `get`), hand-made request bytes (`send_raw`), bodies read piece by piece
//! with their arrival times (`stream`), and an SSE parser (`sse_events`). Every request says
//! `Connection: close`, so a response ends at its framing or at EOF.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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

/// [`send`] with a chosen read timeout, returning I/O errors (a timeout is `WouldBlock` or
/// `TimedOut`; a connection closed before a status line is `UnexpectedEof`).
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

/// [`send_raw`] with a chosen read timeout, returning I/O errors.
pub fn try_send_raw(port: u16, bytes: &[u8], timeout: Duration) -> io::Result<Response> {
    try_stream_raw(port, bytes, "", timeout)?.into_response()
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

/// [`stream`] with a chosen read timeout (applied to every read), returning I/O errors.
pub fn try_stream(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<StreamResponse> {
    let request = build_request(port, method, path, headers, body);
    try_stream_raw(port, &request, method, timeout)
}

/// The request bytes: the caller's headers, plus `Host`, `Connection: close` and
/// `Content-Length` unless the caller already gave them.
fn build_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| {
        headers
            .iter()
            .any(|(key, _)| key.eq_ignore_ascii_case(name))
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    let method_has_body = matches!(method, "POST" | "PUT" | "PATCH");
    if !has("content-length") && !has("transfer-encoding") && (!body.is_empty() || method_has_body)
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn try_stream_raw(
    port: u16,
    request: &[u8],
    method: &str,
    timeout: Duration,
) -> io::Result<StreamResponse> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut socket = TcpStream::connect_timeout(&address, timeout)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    socket.set_nodelay(true)?;
    let sent_at = Instant::now();
    socket.write_all(request)?;
    socket.flush()?;
    let mut reader = BufReader::new(socket);
    let (status, headers) = read_head(&mut reader)?;
    let framing = framing(method, status, &headers)?;
    Ok(StreamResponse {
        status,
        headers,
        sent_at,
        reader,
        framing,
        end: None,
    })
}

/// Status line and headers, skipping interim `1xx` responses.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    loop {
        let status_line = read_line(reader)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a status line",
            )
        })?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(reader)?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in headers")
            })?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok((status, headers));
    }
}

fn framing(method: &str, status: u16, headers: &[(String, String)]) -> io::Result<Framing> {
    if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    let chunked = find_header(headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Ok(Framing::Chunked {
            remaining: 0,
            need_crlf: false,
        });
    }
    match find_header(headers, "content-length") {
        Some(length) => length
            .parse()
            .map(Framing::Length)
            .map_err(|_| invalid(format!("bad content-length {length:?}"))),
        None => Ok(Framing::UntilEof),
    }
}

/// How the body's end is marked.
enum Framing {
    /// `remaining` bytes of the current chunk are unread; `need_crlf` after a chunk's data.
    Chunked { remaining: usize, need_crlf: bool },
    /// This many body bytes are still unread.
    Length(usize),
    /// Close-delimited.
    UntilEof,
}

/// Why a streamed body stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The framing said the body was complete (final chunk, `Content-Length` reached, or EOF for a
    /// close-delimited body).
    Complete,
    /// The connection closed before the framing said the body was complete.
    Truncated,
    /// A read failed: a timeout (`WouldBlock`/`TimedOut`), a reset, or malformed chunking.
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
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// When the request was written, to measure time to each piece.
    pub sent_at: Instant,
    reader: BufReader<TcpStream>,
    framing: Framing,
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

    fn stop(&mut self, end: StreamEnd) -> Option<Piece> {
        self.end = Some(end);
        None
    }

    /// At most `limit` bytes from whatever one read delivers; `None` at EOF.
    fn read_some(&mut self, limit: usize) -> io::Result<Option<Piece>> {
        let available = self.reader.fill_buf()?;
        if available.is_empty() {
            return Ok(None);
        }
        let at = Instant::now();
        let take = available.len().min(limit);
        let bytes = available[..take].to_vec();
        self.reader.consume(take);
        Ok(Some(Piece { bytes, at }))
    }

    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        loop {
            match &mut self.framing {
                Framing::Length(0) => {
                    self.end = Some(StreamEnd::Complete);
                    return Ok(None);
                }
                Framing::Length(remaining) => {
                    let limit = *remaining;
                    return match self.read_some(limit)? {
                        Some(piece) => {
                            self.framing = Framing::Length(limit - piece.bytes.len());
                            Ok(Some(piece))
                        }
                        None => {
                            self.end = Some(StreamEnd::Truncated);
                            Ok(None)
                        }
                    };
                }
                Framing::UntilEof => {
                    let piece = self.read_some(usize::MAX)?;
                    if piece.is_none() {
                        self.end = Some(StreamEnd::Complete);
                    }
                    return Ok(piece);
                }
                Framing::Chunked {
                    remaining,
                    need_crlf,
                } => {
                    if *need_crlf {
                        match read_line(&mut self.reader)? {
                            Some(line) if line.is_empty() => *need_crlf = false,
                            Some(line) => {
                                return Err(invalid(format!("chunk followed by {line:?}")))
                            }
                            None => {
                                self.end = Some(StreamEnd::Truncated);
                                return Ok(None);
                            }
                        }
                        continue;
                    }
                    if *remaining == 0 {
                        let Some(line) = read_line(&mut self.reader)? else {
                            self.end = Some(StreamEnd::Truncated);
                            return Ok(None);
                        };
                        let size_text = line.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(size_text, 16)
                            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
                        if size == 0 {
                            loop {
                                match read_line(&mut self.reader)? {
                                    Some(trailer) if !trailer.is_empty() => continue,
                                    // EOF instead of the final CRLF still ends a complete body.
                                    _ => break,
                                }
                            }
                            self.end = Some(StreamEnd::Complete);
                            return Ok(None);
                        }
                        self.framing = Framing::Chunked {
                            remaining: size,
                            need_crlf: false,
                        };
                        continue;
                    }
                    let limit = *remaining;
                    return match self.read_some(limit)? {
                        Some(piece) => {
                            let left = limit - piece.bytes.len();
                            self.framing = Framing::Chunked {
                                remaining: left,
                                need_crlf: left == 0,
                            };
                            Ok(Some(piece))
                        }
                        None => {
                            self.end = Some(StreamEnd::Truncated);
                            Ok(None)
                        }
                    };
                }
            }
        }
    }
}

impl Iterator for StreamResponse {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.end.is_some() {
            return None;
        }
        match self.next_piece() {
            Ok(piece) => piece,
            // EOF in the middle of a chunk-size line or CRLF is a truncation too.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                self.stop(StreamEnd::Truncated)
            }
            Err(error) => self.stop(StreamEnd::Error(error.kind())),
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

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One line without its CRLF (or LF); `None` at EOF before any byte.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut raw = Vec::new();
    if reader
        .by_ref()
        .take(64 * 1024)
        .read_until(b'\n', &mut raw)?
        == 0
    {
        return Ok(None);
    }
    if raw.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-line",
        ));
    }
    raw.pop();
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
}
