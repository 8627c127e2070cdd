//! `MockProvider`: answers as Groq would, without Groq, for requests that carry `mock_response`
//! or `mock_failures` (with `ALLOW_MOCK` on). Each call takes the next scripted failure and
//! answers with the status, headers and error body a real one of that kind has; once the
//! failures run out, the model answers `mock_response`, whole or as Groq's SSE stream. The
//! router's real fallback loop, checks and answer shaping run on top of it.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde::Serialize;

use super::provider::{Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead};
use super::text::named;

named! {
    /// A failure `mock_failures` scripts: an outcome from the routing table, or a stream that
    /// breaks after its first content chunk.
    pub enum MockFailure {
        ModelGone = "model_gone",
        RateLimited = "rate_limited",
        TooLarge = "request_too_large",
        UpstreamError = "upstream_error",
        Timeout = "timeout",
        CannotServe = "cannot_serve",
        InvalidRequest = "invalid_request",
        ProviderAuthFailed = "provider_auth_failed",
        StreamBreak = "stream_break",
    }
}

impl MockFailure {
    pub const ALL: [MockFailure; 9] = [
        MockFailure::ModelGone,
        MockFailure::RateLimited,
        MockFailure::TooLarge,
        MockFailure::UpstreamError,
        MockFailure::Timeout,
        MockFailure::CannotServe,
        MockFailure::InvalidRequest,
        MockFailure::ProviderAuthFailed,
        MockFailure::StreamBreak,
    ];
}

/// What a mock request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mock {
    pub response: String,
    pub failures: Vec<MockFailure>,
}

/// How long a mocked rate limit lasts: short, so a frontend's retry can be tried by hand.
pub const MOCK_RETRY_AFTER_S: u64 = 2;

pub struct MockProvider {
    text: String,
    failures: RefCell<VecDeque<MockFailure>>,
    prompt_tokens: u64,
}

impl MockProvider {
    /// `prompt_bytes`: the size of the request's `messages`, for the token estimate.
    pub fn new(mock: &Mock, prompt_bytes: usize) -> MockProvider {
        MockProvider {
            text: mock.response.clone(),
            failures: RefCell::new(mock.failures.iter().copied().collect()),
            prompt_tokens: tokens(prompt_bytes),
        }
    }
}

/// The README's estimate: a token per 4 bytes, rounded up.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// A mock answer's body: its pieces, then the end (clean, or cut off after them).
pub struct MockBody {
    pieces: VecDeque<Vec<u8>>,
    broken: bool,
}

impl UpstreamBody for MockBody {
    async fn next_chunk(&mut self, _timeout_ms: u64) -> Result<Option<Vec<u8>>, TransportError> {
        match self.pieces.pop_front() {
            Some(piece) => Ok(Some(piece)),
            None if self.broken => Err(TransportError::Connection(
                "mock_failures: stream_break".into(),
            )),
            None => Ok(None),
        }
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Message<'a>>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct XGroq<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
}

/// A chat completion, or one chunk of a stream, shaped as Groq's.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'a str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
    x_groq: XGroq<'a>,
}

impl MockProvider {
    fn usage(&self) -> Usage {
        let completion_tokens = tokens(self.text.len());
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
        }
    }

    /// The pieces of a stream: a role chunk, the text in a few content chunks, a final chunk
    /// with the usage, `[DONE]`; cut after the first content chunk for `stream_break`.
    fn stream(&self, model: &str, breaks: bool) -> Vec<Vec<u8>> {
        let usage = self.usage();
        let chunk = |delta: Message, finish: Option<&'static str>, usage: Option<&Usage>| {
            let completion = Completion {
                id: "chatcmpl-mock",
                object: "chat.completion.chunk",
                created: 0,
                model,
                choices: [Choice {
                    index: 0,
                    message: None,
                    delta: Some(delta),
                    finish_reason: finish,
                }],
                usage: None,
                x_groq: XGroq {
                    id: "req_mock",
                    usage,
                },
            };
            let json = serde_json::to_vec(&completion).expect("mock chunks serialize");
            [&b"data: "[..], &json, b"\n\n"].concat()
        };
        let text = |content| Message {
            role: None,
            content: Some(content),
        };
        let mut pieces = vec![chunk(
            Message {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
            None,
        )];
        pieces.extend(words(&self.text).map(|w| chunk(text(w), None, None)));
        if breaks {
            pieces.truncate(2);
            return pieces;
        }
        let last = Message {
            role: None,
            content: None,
        };
        pieces.push(chunk(last, Some("stop"), Some(&usage)));
        pieces.push(b"data: [DONE]\n\n".to_vec());
        pieces
    }

    fn completion(&self, model: &str) -> Vec<u8> {
        let usage = self.usage();
        let message = Message {
            role: Some("assistant"),
            content: Some(&self.text),
        };
        let completion = Completion {
            id: "chatcmpl-mock",
            object: "chat.completion",
            created: 0,
            model,
            choices: [Choice {
                index: 0,
                message: Some(message),
                delta: None,
                finish_reason: Some("stop"),
            }],
            usage: Some(&usage),
            x_groq: XGroq {
                id: "req_mock",
                usage: None,
            },
        };
        serde_json::to_vec(&completion).expect("mock completions serialize")
    }
}

/// The text in pieces of about a word each, every piece keeping its trailing space.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ').filter(|w| !w.is_empty())
}

/// Groq's error body for `failure`, as `{"error":{…}}`.
fn error_body(failure: MockFailure, model: &str) -> (u16, Vec<u8>) {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Error<'a>,
    }
    #[derive(Serialize)]
    struct Error<'a> {
        message: String,
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<&'a str>,
    }
    let (status, kind, code, message) = match failure {
        MockFailure::ModelGone => (404, "invalid_request_error", Some("model_not_found"), format!("The model `{model}` does not exist or you do not have access to it.")),
        MockFailure::RateLimited => (429, "tokens", Some("rate_limit_exceeded"), format!("Rate limit reached for model `{model}` on tokens per minute (TPM). Please try again in {MOCK_RETRY_AFTER_S}s. (mock_failures)")),
        MockFailure::TooLarge => (413, "tokens", Some("rate_limit_exceeded"), format!("Request too large for model `{model}` on tokens per minute (TPM), please reduce your message size and try again. (mock_failures)")),
        MockFailure::CannotServe => (400, "invalid_request_error", Some("context_length_exceeded"), "Please reduce the length of the messages or completion. (mock_failures)".into()),
        MockFailure::InvalidRequest => (400, "invalid_request_error", None, "The request is invalid for every model. (mock_failures)".into()),
        MockFailure::ProviderAuthFailed => (401, "invalid_request_error", Some("invalid_api_key"), "Invalid API Key (mock_failures)".into()),
        _ => (500, "internal_server_error", None, "Internal Server Error (mock_failures)".into()),
    };
    let body = Body {
        error: Error {
            message,
            kind,
            code,
        },
    };
    let body = serde_json::to_vec(&body).expect("mock errors serialize");
    (status, body)
}

impl Provider for MockProvider {
    type Body = MockBody;

    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> Result<(UpstreamHead, MockBody), TransportError> {
        let failure = self.failures.borrow_mut().pop_front();
        let ok = |pieces: Vec<Vec<u8>>, broken| {
            let head = UpstreamHead {
                status: 200,
                ..UpstreamHead::default()
            };
            let pieces = pieces.into();
            Ok((head, MockBody { pieces, broken }))
        };
        match failure {
            None => match call.streamed {
                true => ok(self.stream(call.model, false), false),
                false => ok(vec![self.completion(call.model)], false),
            },
            Some(MockFailure::StreamBreak) => ok(self.stream(call.model, true), true),
            Some(MockFailure::Timeout) => Err(TransportError::Timeout),
            Some(failure) => {
                let (status, body) = error_body(failure, call.model);
                let rate_limited = failure == MockFailure::RateLimited;
                let head = UpstreamHead {
                    status,
                    retry_after: rate_limited.then(|| MOCK_RETRY_AFTER_S.to_string()),
                    ..UpstreamHead::default()
                };
                let pieces = [body].into();
                Ok((
                    head,
                    MockBody {
                        pieces,
                        broken: false,
                    },
                ))
            }
        }
    }
}

/// The Groq a request goes to: the real one, or the mock for a request that asked for it.
pub enum Upstream<'p, P> {
    Real(&'p P),
    Mock(MockProvider),
}

/// A body from either.
pub enum EitherBody<B> {
    Real(B),
    Mock(MockBody),
}

impl<B: UpstreamBody> UpstreamBody for EitherBody<B> {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Result<Option<Vec<u8>>, TransportError> {
        match self {
            EitherBody::Real(body) => body.next_chunk(timeout_ms).await,
            EitherBody::Mock(body) => body.next_chunk(timeout_ms).await,
        }
    }

    async fn read_all(self, timeout_ms: u64) -> Result<Vec<u8>, TransportError> {
        match self {
            EitherBody::Real(body) => body.read_all(timeout_ms).await,
            EitherBody::Mock(body) => body.read_all(timeout_ms).await,
        }
    }
}

impl<P: Provider> Provider for Upstream<'_, P> {
    type Body = EitherBody<P::Body>;

    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> Result<(UpstreamHead, Self::Body), TransportError> {
        match self {
            Upstream::Real(provider) => {
                let (head, body) = provider.send(call).await?;
                Ok((head, EitherBody::Real(body)))
            }
            Upstream::Mock(mock) => {
                let (head, body) = mock.send(call).await?;
                Ok((head, EitherBody::Mock(body)))
            }
        }
    }
}
