//! `MockProvider`: answers as Groq would, without Groq, for requests that carry `mock_response`
//! or `mock_failures` (with `ALLOW_MOCK` on). Each call takes the next scripted failure and
//! answers with the status, headers and error body a real one of that kind has; once the
//! failures run out, the model answers `mock_response`, whole or as Groq's SSE stream. The
//! router's real fallback loop, checks and answer shaping run on top of it.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::groq::completion::{write_chunk, write_completion, Said, Usage};
use crate::groq::outcome::{GroqError, Outcome};
use crate::groq::provider::{Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead};

/// A failure `mock_failures` scripts: an answer from the routing table, or a stream that breaks
/// after its first content chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockFailure {
    Answer(Outcome),
    StreamBreak,
}

/// The outcomes a mock failure can be, named as in the routing table.
const SCRIPTABLE: [Outcome; 8] = [
    Outcome::ModelGone,
    Outcome::RateLimited,
    Outcome::TooLarge,
    Outcome::UpstreamError,
    Outcome::Timeout,
    Outcome::CannotServe,
    Outcome::InvalidRequest,
    Outcome::ProviderAuthFailed,
];
const STREAM_BREAK: &str = "stream_break";

impl MockFailure {
    /// Every name `mock_failures` takes.
    pub fn names() -> Vec<&'static str> {
        let outcomes = SCRIPTABLE.iter().map(|o| o.as_str());
        outcomes.chain([STREAM_BREAK]).collect()
    }

    pub fn named(name: &str) -> Option<MockFailure> {
        match name {
            STREAM_BREAK => Some(MockFailure::StreamBreak),
            _ => SCRIPTABLE
                .into_iter()
                .find(|o| o.as_str() == name)
                .map(MockFailure::Answer),
        }
    }
}

/// What a mock request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mock {
    /// `mock_response`, if the caller set it.
    pub response: Option<String>,
    pub failures: Vec<MockFailure>,
}

impl Mock {
    /// The field a refusal of the mock names: the first the caller set.
    pub fn param(&self) -> &'static str {
        match self.response {
            Some(_) => "mock_response",
            None => "mock_failures",
        }
    }
}

/// What a mock answer says when the caller gave no `mock_response`.
const MOCK_TEXT: &str = "This is a mock answer.";

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
            text: mock.response.clone().unwrap_or_else(|| MOCK_TEXT.into()),
            failures: RefCell::new(mock.failures.iter().copied().collect()),
            prompt_tokens: tokens(prompt_bytes),
        }
    }

    fn usage(&self) -> Usage {
        Usage::counted(self.prompt_tokens, tokens(self.text.len()))
    }

    /// The pieces of a stream: a role chunk, the text in a few content chunks, a final chunk
    /// with the usage, `[DONE]`; cut after the first content chunk for `stream_break`.
    fn stream(&self, model: &str, breaks: bool) -> Vec<Vec<u8>> {
        let role = Said {
            role: Some("assistant"),
            content: Some(""),
        };
        let mut pieces = vec![write_chunk(model, role, None, None)];
        let text = |content| Said {
            role: None,
            content: Some(content),
        };
        pieces.extend(words(&self.text).map(|w| write_chunk(model, text(w), None, None)));
        if breaks {
            pieces.truncate(2);
            return pieces;
        }
        let usage = self.usage();
        pieces.push(write_chunk(
            model,
            Said::default(),
            Some("stop"),
            Some(&usage),
        ));
        pieces.push(b"data: [DONE]\n\n".to_vec());
        pieces
    }

    fn completion(&self, model: &str) -> Vec<u8> {
        let message = Said {
            role: Some("assistant"),
            content: Some(&self.text),
        };
        write_completion(model, message, &self.usage())
    }
}

/// The README's estimate: a token per 4 bytes, rounded up.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// The text in pieces of about a word each, every piece keeping its trailing space.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ').filter(|w| !w.is_empty())
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

/// Groq's status and error for `failure`, as a real one of its kind comes.
fn groq_error(failure: Outcome, model: &str) -> (u16, GroqError) {
    let (status, kind, code, message) = match failure {
        Outcome::ModelGone => (404, "invalid_request_error", Some("model_not_found"), format!("The model `{model}` does not exist or you do not have access to it.")),
        Outcome::RateLimited => (429, "tokens", Some("rate_limit_exceeded"), format!("Rate limit reached for model `{model}` on tokens per minute (TPM). Please try again in {MOCK_RETRY_AFTER_S}s. (mock_failures)")),
        Outcome::TooLarge => (413, "tokens", Some("rate_limit_exceeded"), format!("Request too large for model `{model}` on tokens per minute (TPM), please reduce your message size and try again. (mock_failures)")),
        Outcome::CannotServe => (400, "invalid_request_error", Some("context_length_exceeded"), "Please reduce the length of the messages or completion. (mock_failures)".into()),
        Outcome::InvalidRequest => (400, "invalid_request_error", None, "The request is invalid for every model. (mock_failures)".into()),
        Outcome::ProviderAuthFailed => (401, "invalid_request_error", Some("invalid_api_key"), "Invalid API Key (mock_failures)".into()),
        _ => (500, "internal_server_error", None, "Internal Server Error (mock_failures)".into()),
    };
    let error = GroqError {
        message: Some(message),
        kind: Some(kind.into()),
        code: code.map(str::to_string),
        ..GroqError::default()
    };
    (status, error)
}

impl Provider for MockProvider {
    type Body = MockBody;

    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> Result<(UpstreamHead, MockBody), TransportError> {
        let failure = self.failures.borrow_mut().pop_front();
        let (head, pieces, broken) = match failure {
            None => {
                let pieces = match call.streamed {
                    true => self.stream(call.model, false),
                    false => vec![self.completion(call.model)],
                };
                (UpstreamHead::ok(), pieces, false)
            }
            Some(MockFailure::StreamBreak) => {
                (UpstreamHead::ok(), self.stream(call.model, true), true)
            }
            Some(MockFailure::Answer(Outcome::Timeout)) => return Err(TransportError::Timeout),
            Some(MockFailure::Answer(failure)) => {
                let (status, error) = groq_error(failure, call.model);
                let rate_limited = failure == Outcome::RateLimited;
                let head = UpstreamHead {
                    status,
                    retry_after: rate_limited.then(|| MOCK_RETRY_AFTER_S.to_string()),
                    ..UpstreamHead::default()
                };
                (head, vec![error.to_body()], false)
            }
        };
        let pieces = pieces.into();
        Ok((head, MockBody { pieces, broken }))
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
