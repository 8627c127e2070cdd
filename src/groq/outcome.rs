//! `Outcome`: what one attempt at one model came to, classified by HTTP status *and* Groq's
//! error `code`; Groq's error body, its retry hints, and org-id redaction.

use serde::{Deserialize, Serialize};

use crate::json::{named, read};

named! {
    /// The result of one attempt. The variant decides whether the next model is tried.
    pub enum Outcome {
        Ok = "ok",
        /// 404 `model_not_found`, 400 `model_decommissioned`: the registry needs updating.
        ModelGone = "model_gone",
        /// 429, 498 (flex capacity): the model is busy for everyone, for a while.
        RateLimited = "rate_limited",
        /// 413 `rate_limit_exceeded`: this request alone is larger than the model's per-minute
        /// token limit. Says nothing of the model's state; a model with a larger limit may take it.
        TooLarge = "request_too_large",
        /// 5xx (JSON or HTML) and statuses with no more specific meaning.
        UpstreamError = "upstream_error",
        /// No answer within the attempt timeout.
        Timeout = "timeout",
        /// The connection failed or dropped before an answer.
        ConnectionError = "connection_error",
        /// A 2xx that is not a chat completion.
        InvalidResponse = "invalid_response",
        /// 400 `context_length_exceeded` / `json_validate_failed` / `tool_use_failed`: this
        /// model cannot serve this request, another may.
        CannotServe = "cannot_serve",
        /// Any other 400 / 413 / 422: the caller's request is invalid for every model.
        InvalidRequest = "invalid_request",
        /// 401 / 403: Groq rejected the provider key.
        ProviderAuthFailed = "provider_auth_failed",
        /// Abandoned: the caller went away while the model was answering.
        ClientDisconnected = "client_disconnected",
    }
}

/// Classifies a non-2xx answer from Groq.
pub fn classify_error(status: u16, code: Option<&str>) -> Outcome {
    match (status, code) {
        (404 | 400, Some("model_not_found" | "model_decommissioned")) => Outcome::ModelGone,
        (429 | 498, _) => Outcome::RateLimited,
        (413, Some("rate_limit_exceeded")) => Outcome::TooLarge,
        (401 | 403, _) => Outcome::ProviderAuthFailed,
        (400, Some("context_length_exceeded" | "json_validate_failed" | "tool_use_failed")) => {
            Outcome::CannotServe
        }
        (400 | 413 | 422, _) => Outcome::InvalidRequest,
        _ => Outcome::UpstreamError,
    }
}

/// Groq's error body, `{"error":{"message","type","code","param"}}`; every field optional
/// because Groq omits some and a CDN error page has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroqError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Set on errors that arrive inside a stream after its `200`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// `{"error": …}`, how Groq wraps its errors.
#[derive(Deserialize, Serialize)]
struct Enveloped<E> {
    error: E,
}

impl GroqError {
    /// What an error Groq sent inside a 200 stream says of the model: its own `status_code`
    /// (500 without one) and code, as if the call had failed that way.
    pub fn outcome(&self) -> Outcome {
        classify_error(self.status_code.unwrap_or(500), self.code.as_deref())
    }

    /// Reads Groq's error from a body; `None` when the body is not Groq's JSON error (HTML, empty).
    pub fn from_body(body: &[u8]) -> Option<GroqError> {
        read::<Enveloped<GroqError>>(body).map(|b| b.error)
    }

    /// The body Groq sends with this error.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(&Enveloped { error: self }).expect("errors always serialize")
    }
}

/// What a refusal says the model does not take: Groq answers a request that uses something a
/// model lacks with a plain 400, no `code`, and a message naming it. Matched narrowly, on the
/// shapes seen (groq-api.md); the caller decides whether the request used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `response_format` of a type the model does not take: which of the two it allows.
    ResponseFormat {
        json_schema: bool,
        json_object: bool,
    },
    Tools,
    /// Image content parts (Groq's words only say the content must be a string).
    ImageContent,
    /// A reasoning parameter (or its value), named as Groq names it.
    Param(&'static str),
    /// A completion limit above the model's, and the model's.
    MaxCompletionTokens(u64),
}

/// The shapes of refusals that say a model, not the request, is the problem.
pub fn unsupported(error: &GroqError) -> Option<Unsupported> {
    let message = error.message.as_deref()?;
    if error.code.is_some() {
        return None;
    }
    if let Some(allowed) =
        message.strip_prefix("'response_format.type' : value is not one of the allowed values ")
    {
        return Some(Unsupported::ResponseFormat {
            json_schema: allowed.contains("'json_schema'"),
            json_object: allowed.contains("'json_object'"),
        });
    }
    if message.contains("does not support response format json_schema") {
        let json_object = true;
        return Some(Unsupported::ResponseFormat {
            json_schema: false,
            json_object,
        });
    }
    if message.contains("`tool calling` is not supported with this model") {
        return Some(Unsupported::Tools);
    }
    for param in ["reasoning_effort", "reasoning_format", "include_reasoning"] {
        let lacked = format!("`{param}` is not supported with this model");
        let value = format!("`{param}` must be one of");
        if message.contains(&lacked) || message.starts_with(&value) {
            return Some(Unsupported::Param(param));
        }
    }
    if let Some(rest) = message
        .trim_start_matches('`')
        .strip_prefix("max_completion_tokens")
    {
        let rest = rest.trim_start_matches('`');
        let limit = rest.strip_prefix(" must be less than or equal to ")?;
        let digits: String = limit
            .trim_start_matches('`')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return digits.parse().ok().map(Unsupported::MaxCompletionTokens);
    }
    let content = error
        .param
        .as_deref()
        .is_some_and(|p| p.starts_with("messages"));
    if content && message.contains(".content must be a string") {
        return Some(Unsupported::ImageContent);
    }
    None
}

/// How long until a rate-limited model may be asked again, in whole seconds (rounded up, ≥ 1):
/// `retry-after` if Groq sent it, else the `x-ratelimit-reset-*` hint.
pub fn retry_after_secs(
    retry_after: Option<&str>,
    reset_tokens: Option<&str>,
    reset_requests: Option<&str>,
) -> Option<u64> {
    let secs = retry_after
        .and_then(|v| decimal(v.trim()))
        .or_else(|| reset_tokens.and_then(parse_groq_duration))
        .or_else(|| reset_requests.and_then(parse_groq_duration))?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs.ceil() as u64).max(1))
}

/// A decimal number, read by serde_json's parser (the one the bundle already holds).
fn decimal(text: &str) -> Option<f64> {
    serde_json::from_str(text).ok()
}

/// Parses Groq's reset durations: `7.66s`, `2m59.56s`, `1h2m3s`, `450ms`.
pub fn parse_groq_duration(text: &str) -> Option<f64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value = decimal(&rest[..number_len])?;
        rest = &rest[number_len..];
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// `text` with each of `secrets` (the provider key, Groq's address) replaced, for the runtime's
/// own error text, which can quote the URL it failed to reach.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let secrets = secrets.iter().filter(|s| !s.is_empty());
    secrets.fold(text.to_string(), |text, s| text.replace(s, "[redacted]"))
}

/// Replaces Groq organisation ids (`org_…`) so a caller never learns the company's account id.
pub fn redact_org_ids(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(pos) = rest.find("org_") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 4..];
        let id_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        if id_len == 0 {
            out.push_str("org_");
        } else {
            out.push_str("org_[redacted]");
        }
        rest = &after[id_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use Outcome::*;
        let table: &[(u16, Option<&str>, Outcome)] = &[
            (404, Some("model_not_found"), ModelGone),
            (400, Some("model_decommissioned"), ModelGone),
            (429, Some("rate_limit_exceeded"), RateLimited),
            (429, None, RateLimited),
            (413, Some("rate_limit_exceeded"), TooLarge),
            (498, Some("capacity_exceeded"), RateLimited),
            (498, None, RateLimited),
            (500, None, UpstreamError),
            (502, None, UpstreamError),
            (503, Some("service_unavailable"), UpstreamError),
            (504, None, UpstreamError),
            (400, Some("context_length_exceeded"), CannotServe),
            (400, Some("json_validate_failed"), CannotServe),
            (400, Some("tool_use_failed"), CannotServe),
            (400, None, InvalidRequest),
            (400, Some("invalid_request_error"), InvalidRequest),
            (422, None, InvalidRequest),
            (413, None, InvalidRequest),
            (401, Some("invalid_api_key"), ProviderAuthFailed),
            (403, None, ProviderAuthFailed),
            (404, None, UpstreamError),
            (404, Some("unknown_url"), UpstreamError),
            (408, None, UpstreamError),
            (424, None, UpstreamError),
            (499, None, UpstreamError),
        ];
        for &(status, code, want) in table {
            assert_eq!(classify_error(status, code), want, "{status} {code:?}");
        }
    }

    #[test]
    fn reads_groq_error_bodies() {
        let body = br#"{"error":{"message":"The model `x` does not exist or you do not have access to it.","type":"invalid_request_error","code":"model_not_found"}}"#;
        let e = GroqError::from_body(body).unwrap();
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
        assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(GroqError::from_body(b"<html>502 Bad Gateway</html>"), None);
        let e =
            GroqError::from_body(br#"{"error":{"message":"m","param":"temperature"}}"#).unwrap();
        assert_eq!((e.code, e.param.as_deref()), (None, Some("temperature")));
    }

    #[test]
    fn groq_durations() {
        assert_eq!(parse_groq_duration("7.66s"), Some(7.66));
        assert_eq!(
            parse_groq_duration("2m59.56s").map(|s| (s * 100.0).round()),
            Some(17956.0)
        );
        assert_eq!(parse_groq_duration("1h2m3s"), Some(3723.0));
        assert_eq!(parse_groq_duration("450ms"), Some(0.45));
        assert_eq!(parse_groq_duration(""), None);
        assert_eq!(parse_groq_duration("soon"), None);
        assert_eq!(parse_groq_duration("5x"), None);
    }

    #[test]
    fn retry_after_prefers_the_header() {
        assert_eq!(retry_after_secs(Some("8"), Some("7.66s"), None), Some(8));
        assert_eq!(
            retry_after_secs(None, Some("7.66s"), Some("2m59.56s")),
            Some(8)
        );
        assert_eq!(retry_after_secs(None, None, Some("2m59.56s")), Some(180));
        assert_eq!(retry_after_secs(Some("0"), None, None), Some(1));
        assert_eq!(retry_after_secs(Some("later"), None, None), None);
        assert_eq!(retry_after_secs(None, None, None), None);
    }

    /// Refusals Groq gives for what one model lacks (another may take the request), and ones
    /// every model gives (the caller's request is wrong): only the first kind may match.
    #[test]
    fn refusals_naming_what_a_model_lacks_and_not_the_callers_mistakes() {
        use Unsupported::*;
        let error = |message: &str, param: Option<&str>| GroqError {
            message: Some(message.into()),
            kind: Some("invalid_request_error".into()),
            param: param.map(str::to_string),
            ..GroqError::default()
        };
        let model_specific = [
            (error("'response_format.type' : value is not one of the allowed values ['text','json_object']", None),
             ResponseFormat { json_schema: false, json_object: true }),
            (error("This model does not support response format json_schema", Some("response_format")),
             ResponseFormat { json_schema: false, json_object: true }),
            (error("`tool calling` is not supported with this model", None), Tools),
            (error("`reasoning_effort` is not supported with this model", None), Param("reasoning_effort")),
            (error("`reasoning_format` is not supported with this model", Some("reasoning_format")), Param("reasoning_format")),
            (error("`reasoning_effort` must be one of `none` or `default`", None), Param("reasoning_effort")),
            (error("`max_completion_tokens` must be less than or equal to `16384`, the maximum value for `max_completion_tokens` is less than the `context_window` for this model", Some("max_completion_tokens")),
             MaxCompletionTokens(16384)),
            (error("max_completion_tokens must be less than or equal to 40960", None), MaxCompletionTokens(40960)),
            (error("'messages[1].content must be a string'", Some("messages[1].content")), ImageContent),
        ];
        for (refusal, want) in model_specific {
            assert_eq!(unsupported(&refusal), Some(want), "{refusal:?}");
        }
        let callers_mistakes = [
            error("property 'store' is unsupported, did you mean 'stop'?", None),
            error("'messages.0' : for 'role:user' the following must be satisfied[('messages.0' : property 'timestamp' is unsupported)]", None),
            error("invalid schema for response format: response_format/json_schema/next_step: minItems is not supported", None),
            error("'reasoning_effort' : value is not one of the allowed values ['none', 'default', 'low', 'medium', 'high']", None),
            error("'response_format' : one of the following must be satisfied[( property 'name' is missing )]", None),
            error("'messages.4.content' : value must be a string", Some("messages.4.content")),
            error("json mode cannot be combined with tool/function calling", Some("response_format")),
            error("cannot specify both `include_reasoning` and `reasoning_format`", None),
            error("'temperature' : value must be a number", Some("temperature")),
        ];
        for refusal in callers_mistakes {
            assert_eq!(unsupported(&refusal), None, "{refusal:?}");
        }
        let coded = GroqError {
            code: Some("context_length_exceeded".into()),
            ..error("`tool calling` is not supported with this model", None)
        };
        assert_eq!(unsupported(&coded), None, "a code says what it is");
    }

    #[test]
    fn org_ids_are_redacted() {
        let msg = "Rate limit reached for model `m` in organization `org_01hxyz9abc` service tier `on_demand`";
        let out = redact_org_ids(msg);
        assert!(!out.contains("01hxyz9abc"), "{out}");
        assert!(
            out.contains("organization `org_[redacted]` service tier"),
            "{out}"
        );
        assert_eq!(redact_org_ids("no ids; org_ alone"), "no ids; org_ alone");
    }
}
