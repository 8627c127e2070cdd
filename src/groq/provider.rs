//! `Provider`: the one seam between the routing core and the network. The Worker implements it
//! with `fetch`; tests implement it with a scripted fake.

use super::body::GroqBody;

/// One call to Groq's chat-completions endpoint.
pub struct UpstreamCall<'a> {
    pub url: &'a str,
    pub api_key: &'a str,
    pub model: &'a str,
    /// Written by the provider where it sends it from.
    pub body: GroqBody<'a, 'a>,
    /// Give up if the response head has not arrived within this long, and, for a call that is
    /// not `streamed`, the whole answer.
    pub timeout_ms: u64,
    /// The answer is an event stream, read chunk by chunk with an idle timeout for each, past
    /// `timeout_ms`.
    pub streamed: bool,
}

/// Groq's status line and the headers the router reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHead {
    pub status: u16,
    /// `retry-after`, `x-ratelimit-reset-tokens`, `x-ratelimit-reset-requests`.
    pub retry_after: Option<String>,
    pub reset_tokens: Option<String>,
    pub reset_requests: Option<String>,
}

impl UpstreamHead {
    /// A `200`.
    pub fn ok() -> UpstreamHead {
        UpstreamHead {
            status: 200,
            ..UpstreamHead::default()
        }
    }
}

/// The call produced no (complete) HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    Connection(String),
    /// The caller went away, and the call was aborted with its request.
    CallerLeft,
}

/// The Worker runs on one thread, so the futures need no `Send` bound; that is why these traits
/// use a plain `async fn`.
#[allow(async_fn_in_trait)]
pub trait Provider {
    type Body: UpstreamBody;

    /// Sends the request and returns once the response head has arrived; the body is read
    /// separately so that streams can be relayed as they arrive.
    async fn send(
        &self,
        call: UpstreamCall<'_>,
    ) -> Result<(UpstreamHead, Self::Body), TransportError>;
}

/// A response body being received.
#[allow(async_fn_in_trait)]
pub trait UpstreamBody {
    /// The next bytes; `Ok(None)` at the end; `Err(Timeout)` when none arrive within `timeout_ms`.
    async fn next_chunk(&mut self, timeout_ms: u64) -> Result<Option<Vec<u8>>, TransportError>;

    /// The whole rest of the body. This default gives each read `timeout_ms`; the Worker's body
    /// (`FetchBody`) keeps one deadline for the whole answer instead.
    async fn read_all(mut self, timeout_ms: u64) -> Result<Vec<u8>, TransportError>
    where
        Self: Sized,
    {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk(timeout_ms).await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }
}
