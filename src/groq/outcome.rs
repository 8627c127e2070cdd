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
