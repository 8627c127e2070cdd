//! `SseScanner`: reads Groq's server-sent events as they pass through, without re-serializing
//! them. It hands back whole events as the bytes Groq sent, and notices what the relay must act
//! on: `data: [DONE]`, an error event, and the token usage in the final chunk.

use std::borrow::Cow;

use serde::Deserialize;

use super::completion::Usage;
use super::outcome::GroqError;
use crate::json::read;

/// What the scanner found in one batch of complete events.
#[derive(Debug, Default, PartialEq)]
pub struct Scanned {
    /// Complete events before any error, as received: forward these to the caller.
    pub forward: Vec<u8>,
    /// How many `data:` events (not comments, not `[DONE]`) are in `forward`.
    pub data_events: usize,
    /// `data: [DONE]` was seen (and is in `forward`); nothing after it matters.
    pub done: bool,
    /// An error event (`event: error`, or `data: {"error":…}`); it is *not* in `forward`.
    pub error: Option<GroqError>,
    /// Token counts from a chunk's `x_groq.usage` or `usage`, the last one seen.
    pub usage: Option<Usage>,
}

#[derive(Debug, Default)]
pub struct SseScanner {
    partial: Vec<u8>,
}

impl SseScanner {
    /// Feeds the next bytes of the stream; returns what the complete events in them mean.
    /// A trailing incomplete event is kept until its end arrives.
    pub fn push(&mut self, bytes: &[u8]) -> Scanned {
        self.scan(bytes, true)
    }

    /// [`push`](Self::push) for a stream the runtime relays itself: what the events mean, and no
    /// copy of them (`forward` stays empty).
    pub fn observe(&mut self, bytes: &[u8]) -> Scanned {
        self.scan(bytes, false)
    }

    fn scan(&mut self, bytes: &[u8], copy: bool) -> Scanned {
        let mut scanned = Scanned::default();
        let owned = match self.partial.is_empty() {
            true => None,
            false => {
                self.partial.extend_from_slice(bytes);
                Some(std::mem::take(&mut self.partial))
            }
        };
        let input: &[u8] = owned.as_deref().unwrap_or(bytes);
        // What is forwarded is always the events up to here: a prefix of `input`.
        let mut start = 0;
        let mut ended = false;
        while let Some((end, next)) = event_end(&input[start..]) {
            match classify(&input[start..start + end]) {
                Kind::Comment => {}
                Kind::Done => {
                    scanned.done = true;
                    start += next;
                    ended = true;
                    break;
                }
                Kind::Error(e) => {
                    scanned.error = Some(e);
                    ended = true;
                    break;
                }
                Kind::Data(usage) => {
                    scanned.data_events += 1;
                    if usage.is_some() {
                        scanned.usage = usage;
                    }
                }
            }
            start += next;
        }
        if copy {
            scanned.forward = input[..start].to_vec();
        }
        // Nothing after `[DONE]` or an error event matters; otherwise keep the unfinished tail.
        if !ended {
            match owned {
                Some(mut held) => {
                    held.drain(..start);
                    self.partial = held;
                }
                None => self.partial.extend_from_slice(&input[start..]),
            }
        }
        scanned
    }

    /// The bytes of an event still incomplete, held until its end arrives.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Bytes of an event that never ended.
    pub fn has_partial(&self) -> bool {
        self.partial.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// `(end of the event's text, start of the next event)` for the first event in `bytes`.
fn event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    // Only a newline can start a terminator, so jump from newline to newline.
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| b == b'\n') {
        let i = from + offset;
        if bytes.get(i + 1) == Some(&b'\n') {
            return Some((i, i + 2));
        }
        if i >= 1 && bytes[i - 1] == b'\r' && bytes[i + 1..].starts_with(b"\r\n") {
            return Some((i - 1, i + 3));
        }
        from = i + 1;
    }
    None
}

enum Kind {
    Comment,
    Done,
    Error(GroqError),
    Data(Option<Usage>),
}

/// The `data` of each event in `bytes` (whole events, as a relay saw them), `[DONE]` included.
pub fn event_data(bytes: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut all = Vec::new();
    let mut start = 0;
    while let Some((end, next)) = event_end(&bytes[start..]) {
        if let (_, Some(data)) = fields(&bytes[start..start + end]) {
            all.push(data);
        }
        start += next;
    }
    all
}

/// An event's name and data.
fn fields(event: &[u8]) -> (Option<&[u8]>, Option<Cow<'_, [u8]>>) {
    let mut name: Option<&[u8]> = None;
    // Borrowed from the event while it has one `data:` line (nearly always), joined past that.
    let mut data: Option<Cow<[u8]>> = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = field(line, b"event") {
            name = Some(v);
        } else if let Some(v) = field(line, b"data") {
            data = Some(match data {
                None => Cow::Borrowed(v),
                Some(before) => Cow::Owned([&before[..], b"\n", v].concat()),
            });
        }
    }
    (name, data)
}

fn classify(event: &[u8]) -> Kind {
    let (name, data) = fields(event);
    if data.is_none() && name.is_none() {
        return Kind::Comment;
    }
    let data = data.unwrap_or_default();
    if data.trim_ascii() == b"[DONE]" {
        return Kind::Done;
    }
    let is_error_event = name.is_some_and(|n| n == b"error");
    // Only chunks that can carry an error or usage are parsed; content chunks pass untouched.
    if is_error_event || contains(&data, b"\"error\"") {
        if let Some(error) = GroqError::from_body(&data) {
            return Kind::Error(error);
        }
        if is_error_event {
            let message = String::from_utf8_lossy(&data).into_owned();
            return Kind::Error(GroqError {
                message: Some(message),
                ..GroqError::default()
            });
        }
    }
    let usage = contains(&data, b"\"usage\"")
        .then(|| usage_of(&data))
        .flatten();
    Kind::Data(usage)
}

fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // Cheap first-byte filter before comparing: needles here are short quoted keys.
    let first = needle[0];
    haystack
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && haystack[i..].starts_with(needle))
}

/// The usage a chunk reports: `usage` (OpenAI's `include_usage` chunk) or Groq's `x_groq.usage`.
fn usage_of(data: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct XGroq {
        usage: Option<Usage>,
    }
    #[derive(Deserialize)]
    struct Chunk {
        usage: Option<Usage>,
        x_groq: Option<XGroq>,
    }
    let chunk: Chunk = read(data)?;
    chunk.usage.or_else(|| chunk.x_groq.and_then(|x| x.usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"x_groq\":{\"id\":\"req_1\"}}\n\n";
    const CONTENT: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const FINAL: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn passes_events_through_byte_for_byte() {
        let mut s = SseScanner::default();
        let all = format!("{ROLE}{CONTENT}{FINAL}{DONE}");
        let out = s.push(all.as_bytes());
        assert_eq!(out.forward, all.as_bytes());
        assert_eq!(out.data_events, 3);
        assert!(out.done);
        assert_eq!(out.error, None);
        let usage = out.usage.unwrap();
        assert_eq!(usage.prompt_tokens, Some(5));
        assert_eq!(
            (usage.completion_tokens, usage.total_tokens),
            (Some(7), Some(12))
        );
    }

    #[test]
    fn holds_a_split_event_until_it_is_complete() {
        let mut s = SseScanner::default();
        let (a, b) = CONTENT.split_at(20);
        let first = s.push(format!("{ROLE}{a}").as_bytes());
        assert_eq!(first.forward, ROLE.as_bytes());
        assert_eq!(first.data_events, 1);
        assert!(s.has_partial());
        let second = s.push(b.as_bytes());
        assert_eq!(second.forward, CONTENT.as_bytes());
        assert!(!s.has_partial());
        // Split exactly between the two newlines of the terminator.
        let (a, b) = DONE.split_at(DONE.len() - 1);
        assert!(!s.push(a.as_bytes()).done);
        assert!(s.push(b.as_bytes()).done);
    }

    #[test]
    fn error_events_are_caught_and_not_forwarded() {
        let mut s = SseScanner::default();
        let groq = "event: error\ndata: {\"error\":{\"message\":\"Tool call validation failed\",\"type\":\"invalid_request_error\",\"code\":\"tool_use_failed\",\"status_code\":400}}\n\n";
        let out = s.push(format!("{ROLE}{CONTENT}{groq}{DONE}").as_bytes());
        assert_eq!(out.forward, format!("{ROLE}{CONTENT}").as_bytes());
        assert_eq!(out.error.unwrap().code.as_deref(), Some("tool_use_failed"));
        assert!(!out.done);

        let plain = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
        let out = SseScanner::default().push(plain.as_bytes());
        assert_eq!(out.error.unwrap().message.as_deref(), Some("boom"));
        assert_eq!(out.data_events, 0);
    }

    #[test]
    fn content_mentioning_error_is_just_content() {
        let chunk =
            "data: {\"choices\":[{\"delta\":{\"content\":\"the \\\"error\\\" was mine\"}}]}\n\n";
        let out = SseScanner::default().push(chunk.as_bytes());
        assert_eq!(out.error, None);
        assert_eq!(out.data_events, 1);
    }

    #[test]
    fn crlf_and_comments() {
        let mut s = SseScanner::default();
        let out = s.push(b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n");
        assert_eq!(out.data_events, 1);
        assert!(out.done);
        assert!(out.forward.starts_with(b": keep-alive"));
    }

    #[test]
    fn include_usage_chunk() {
        let chunk = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n";
        let out = SseScanner::default().push(chunk.as_bytes());
        assert_eq!(out.usage.unwrap().total_tokens, Some(3));
    }
}
