//! `Provider`: the one seam between the routing core and the network. The Worker implements it
//! with `fetch`; tests implement it with a scripted fake.

/// One call to Groq's chat-completions endpoint.
#[derive(Debug)]
pub struct UpstreamCall<'a> {
    pub url: &'a str,
    pub api_key: &'a str,
    pub model: &'a str,
    pub body: String,
    /// Abandon the call after this long.
    pub timeout_ms: u64,
}

/// Groq's answer, whatever its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamReply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `retry-after`, `x-ratelimit-reset-tokens`, `x-ratelimit-reset-requests`.
    pub retry_after: Option<String>,
    pub reset_tokens: Option<String>,
    pub reset_requests: Option<String>,
}

/// The call produced no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    Connection(String),
}

/// The Worker runs on one thread, so the futures need no `Send` bound; that is why this uses a
/// plain `async fn` in the trait.
#[allow(async_fn_in_trait)]
pub trait Provider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, TransportError>;
}
