//! `ApiError`: every error a caller can see, with the one mapping to an HTTP status and an
//! OpenAI-shaped body `{"error":{"message","type","code","param"}}`.

use serde::Serialize;

use crate::bindings::ConfigFinding;
use crate::groq::outcome::redact_org_ids;
use crate::http::ledger::{Exceeded, LimitKind, Window};
use crate::http::request::BodyError;
use crate::routing::config::PROVIDER_KEY_MISSING;
use crate::routing::fallback::{Attempt, ChainFailure, FailureReason};

/// `Retry-After` on a 503 `overloaded`: requests take about this long to make room.
const OVERLOADED_RETRY_AFTER_S: u64 = 1;

/// `Retry-After` on a 503 `budget_unavailable`: a ledger that did not answer may in a moment.
const BUDGET_RETRY_AFTER_S: u64 = 1;

/// `Retry-After` on a 503 `auth_unavailable`: when a failed JWKS fetch is next tried.
const AUTH_RETRY_AFTER_S: u64 = crate::http::jwt::JWKS_RETRY_MS / 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400: the body is not the JSON object we need.
    BadJson(String),
    /// 400: one field is wrong; `param` names it.
    InvalidField { param: String, message: String },
    /// 401: the router has no client auth configured, so it refuses everyone.
    AuthNotConfigured,
    /// 401: no or a wrong client key.
    Unauthorized { message: &'static str },
    /// 401: a user's JWT failed a check; the message says which (never the token).
    InvalidToken(String),
    /// 403: the user's `JWT_TASKS_CLAIM` does not list this task.
    TaskNotAllowed { task: String },
    /// 503: no keys to verify users' tokens with (the JWKS could not be fetched, or a key could
    /// not be imported).
    AuthUnavailable,
    /// 404: the task is not in the registry. `named_by_model`: the SDK routes, where the task is
    /// the `model` field, answer like OpenAI does for an unknown model so SDKs raise `NotFoundError`.
    UnknownTask {
        task: String,
        known: Vec<String>,
        named_by_model: bool,
    },
    /// 404: no such route.
    RouteNotFound { method: String, path: String },
    /// 404: OpenAI's Responses API (`/v1/responses`): the router speaks Chat Completions.
    ResponsesApi,
    /// 405: known route, wrong method.
    MethodNotAllowed { allow: &'static str },
    /// 500: `MODEL_REGISTRY` or another binding is invalid.
    ConfigInvalid(Vec<ConfigFinding>),
    /// 500: the `GROQ_API_KEY` secret is not set.
    ProviderKeyMissing,
    /// 400, 413, 429, 499, 502 or 504: the chain produced no answer (see `FailureReason`).
    Chain(ChainFailure),
    /// 413: the body is larger than `MAX_REQUEST_BYTES`.
    PayloadTooLarge { limit: u64 },
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 403: a CORS preflight from an origin not in `ALLOWED_ORIGINS`.
    OriginNotAllowed,
    /// 503: this isolate holds `MAX_INFLIGHT_BYTES` of other requests; retry in a moment.
    Overloaded,
    /// 429: this client exceeded `CLIENT_RATE_LIMITER`.
    ClientRateLimited { retry_after_secs: u64 },
    /// 400: `mock_response` / `mock_failures` (`param`, the first) without `ALLOW_MOCK`.
    MockNotAllowed { param: &'static str },
    /// 429: a budget that applies is spent (`BUDGETS`); Groq was not called. `scope` says whose
    /// ("your", "the task `x`'s"), never naming another caller.
    BudgetExceeded {
        scope: String,
        exceeded: Exceeded,
        retry_after_secs: u64,
    },
    /// 503: the budgets' ledgers could not be reached in time, and `BUDGET_FAIL_OPEN` is unset.
    BudgetUnavailable,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Json(message) => ApiError::BadJson(message),
            BodyError::Field { param, message } => ApiError::InvalidField { param, message },
        }
    }
}

impl From<ChainFailure> for ApiError {
    fn from(failed: ChainFailure) -> Self {
        ApiError::Chain(failed)
    }
}

impl ApiError {
    pub fn invalid_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadJson(_)
            | ApiError::InvalidField { .. }
            | ApiError::MockNotAllowed { .. } => 400,
            ApiError::AuthNotConfigured
            | ApiError::Unauthorized { .. }
            | ApiError::InvalidToken(_) => 401,
            ApiError::OriginNotAllowed | ApiError::TaskNotAllowed { .. } => 403,
            ApiError::UnknownTask { .. }
            | ApiError::RouteNotFound { .. }
            | ApiError::ResponsesApi => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::ClientRateLimited { .. } | ApiError::BudgetExceeded { .. } => 429,
            ApiError::ConfigInvalid(_) | ApiError::ProviderKeyMissing => 500,
            ApiError::AuthUnavailable | ApiError::Overloaded | ApiError::BudgetUnavailable => 503,
            ApiError::Chain(failed) => match failed.reason {
                FailureReason::Rejected(_) | FailureReason::NoCapableModel { .. } => 400,
                FailureReason::TooLarge(_) => 413,
                FailureReason::RateLimited { .. } => 429,
                FailureReason::ProviderAuth | FailureReason::AllFailed => 502,
                FailureReason::Deadline => 504,
                // nginx's "client closed request": what the request line records; nobody reads it.
                FailureReason::CallerLeft => 499,
            },
        }
    }

    /// The stable `code` callers and dashboards key on.
    pub fn code(&self) -> &str {
        match self {
            ApiError::BadJson(_) => "invalid_json",
            ApiError::InvalidField { .. } => "invalid_parameter",
            ApiError::AuthNotConfigured => "auth_not_configured",
            ApiError::Unauthorized { .. } => "invalid_api_key",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::TaskNotAllowed { .. } => "task_not_allowed",
            ApiError::AuthUnavailable => "auth_unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::UnknownTask {
                named_by_model: true,
                ..
            } => "model_not_found",
            ApiError::UnknownTask { .. } => "unknown_task",
            ApiError::RouteNotFound { .. } => "not_found",
            ApiError::ResponsesApi => "responses_api_not_supported",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::ConfigInvalid(errors) => errors.first().map_or("config_invalid", |e| e.code),
            ApiError::ProviderKeyMissing => "provider_key_missing",
            ApiError::PayloadTooLarge { .. } => "request_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::ClientRateLimited { .. } => "client_rate_limited",
            ApiError::MockNotAllowed { .. } => "mock_not_allowed",
            ApiError::BudgetExceeded { .. } => "budget_exceeded",
            ApiError::BudgetUnavailable => "budget_unavailable",
            ApiError::Chain(failed) => match &failed.reason {
                FailureReason::Rejected(e) => e.code.as_deref().unwrap_or("invalid_request"),
                FailureReason::TooLarge(_) => "request_too_large",
                FailureReason::NoCapableModel { .. } => "no_capable_model",
                FailureReason::ProviderAuth => "provider_auth_failed",
                FailureReason::RateLimited { .. } => "rate_limit_exceeded",
                FailureReason::AllFailed => "all_models_failed",
                FailureReason::Deadline => "deadline_exceeded",
                FailureReason::CallerLeft => "client_disconnected",
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::BadJson(m) | ApiError::InvalidField { message: m, .. } => m.clone(),
            ApiError::AuthNotConfigured => "client authentication is not configured: set the `ROUTER_API_KEYS` secret \
                (`npx wrangler secret put ROUTER_API_KEYS`) and send `Authorization: Bearer <key>`, point \
                `JWT_JWKS_URL` at your sign-in provider so users send their own tokens, or set \
                `ALLOW_UNAUTHENTICATED = \"true\"` for a private deployment"
                .to_string(),
            ApiError::Unauthorized { message } => (*message).to_string(),
            ApiError::InvalidToken(message) => message.clone(),
            ApiError::TaskNotAllowed { task } => format!("this user may not call the task `{task}` (the token's `JWT_TASKS_CLAIM` claim does not list it)"),
            ApiError::AuthUnavailable => format!("users' tokens cannot be verified right now: the sign-in provider's keys (`JWT_JWKS_URL`) could not be fetched; retry in {AUTH_RETRY_AFTER_S} s"),
            ApiError::UnknownTask { task, known, .. } => format!(
                "unknown task `{task}`; known tasks: {}",
                known.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            ),
            ApiError::RouteNotFound { method, path } => {
                format!("no route for {method} {path}; use POST /v1/tasks/{{task}}")
            }
            ApiError::ResponsesApi => "this router speaks OpenAI's Chat Completions API, not the Responses API: \
                call `POST /v1/chat/completions` with `model` set to a task (OpenAI SDK: \
                `client.chat.completions.create(model=\"fast\", …)`; Vercel AI SDK: `openai.chat(\"fast\")` \
                instead of `openai(\"fast\")`), or `POST /v1/tasks/{task}`"
                .to_string(),
            ApiError::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            ApiError::ConfigInvalid(errors) => {
                let all: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
                format!("the router's configuration is invalid: {}", all.join("; "))
            }
            ApiError::ProviderKeyMissing => PROVIDER_KEY_MISSING.to_string(),
            ApiError::PayloadTooLarge { limit } => {
                format!("the request body is larger than {limit} bytes (`MAX_REQUEST_BYTES`)")
            }
            ApiError::UnsupportedMediaType => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            ApiError::Overloaded => format!("the router is answering as many large requests as it may hold at once (`MAX_INFLIGHT_BYTES`); retry in {OVERLOADED_RETRY_AFTER_S} s"),
            ApiError::OriginNotAllowed => "this origin may not call the router; the operator lists allowed origins in `ALLOWED_ORIGINS`".to_string(),
            ApiError::ClientRateLimited { retry_after_secs } => {
                format!("too many requests from this client; retry after {retry_after_secs} s")
            }
            ApiError::BudgetExceeded { scope, exceeded, retry_after_secs } => {
                let window = match exceeded.limit.window() {
                    Window::Day => "daily",
                    Window::Month => "monthly",
                };
                let (unit, value) = match exceeded.limit {
                    LimitKind::UsdPerDay | LimitKind::UsdPerMonth => ("USD", format!("${}", exceeded.value)),
                    LimitKind::TokensPerDay | LimitKind::TokensPerMonth => ("token", format!("{} tokens", exceeded.value)),
                };
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(exceeded.resets_ms);
                format!(
                    "{scope} {window} {unit} budget ({value}) is spent; it resets at {} (in {retry_after_secs} s). The model was not called",
                    humantime::format_rfc3339_seconds(at)
                )
            }
            ApiError::BudgetUnavailable => format!("the budgets' ledgers could not be reached, so the request was not sent (the operator chose to refuse rather than spend unbudgeted, `BUDGET_FAIL_OPEN`); retry in {BUDGET_RETRY_AFTER_S} s"),
            ApiError::MockNotAllowed { .. } => "`mock_response` and `mock_failures` are answered only where `ALLOW_MOCK` is \"true\" (a test deployment); this router never sends them to Groq".to_string(),
            ApiError::Chain(failed) => match &failed.reason {
                FailureReason::Rejected(e) => redact_org_ids(e.message.as_deref().unwrap_or("Groq refused the request")),
                FailureReason::TooLarge(e) => format!(
                    "the request is too large for every model of this task: it needs more tokens than each model may take in a minute at Groq; send a smaller request (retrying it unchanged cannot help). Groq said: {}",
                    redact_org_ids(e.message.as_deref().unwrap_or("Request too large"))
                ),
                FailureReason::ProviderAuth => "Groq rejected the router's provider key; the operator must update the `GROQ_API_KEY` secret".to_string(),
                FailureReason::RateLimited { retry_after_secs } => format!(
                    "every model for this task is rate-limited; retry after {retry_after_secs} s"
                ),
                FailureReason::AllFailed => format!(
                    "all {} models for this task failed; see `attempts`",
                    failed.models_tried()
                ),
                FailureReason::Deadline => format!(
                    "no model answered within the request deadline (`REQUEST_TIMEOUT_MS`) after {} attempts; see `attempts`",
                    failed.attempts.len()
                ),
                FailureReason::CallerLeft => "the caller went away before the answer; no further model was called".to_string(),
                FailureReason::NoCapableModel { task, lacking } => {
                    let lacking: Vec<&str> = lacking.iter().map(|c| c.described()).collect();
                    format!(
                        "no model of the task `{task}` (its chain and the `fallback` list) can serve this request: none {}; see `attempts`",
                        lacking.join(", and none ")
                    )
                }
            },
        }
    }

    /// Extra headers the status calls for.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ApiError::Chain(ChainFailure {
                reason: FailureReason::RateLimited { retry_after_secs },
                ..
            })
            | ApiError::ClientRateLimited { retry_after_secs }
            | ApiError::BudgetExceeded {
                retry_after_secs, ..
            } => {
                vec![("retry-after", retry_after_secs.to_string())]
            }
            ApiError::BudgetUnavailable => {
                vec![("retry-after", BUDGET_RETRY_AFTER_S.to_string())]
            }
            ApiError::MethodNotAllowed { allow } => vec![("allow", (*allow).to_string())],
            ApiError::Unauthorized { .. } | ApiError::AuthNotConfigured => {
                vec![("www-authenticate", "Bearer".to_string())]
            }
            // RFC 6750: the token was presented and is no good.
            ApiError::InvalidToken(_) => {
                vec![(
                    "www-authenticate",
                    "Bearer error=\"invalid_token\"".to_string(),
                )]
            }
            ApiError::AuthUnavailable => vec![("retry-after", AUTH_RETRY_AFTER_S.to_string())],
            ApiError::Overloaded => vec![("retry-after", OVERLOADED_RETRY_AFTER_S.to_string())],
            _ => Vec::new(),
        }
    }

    pub fn attempts(&self) -> &[Attempt] {
        match self {
            ApiError::Chain(failed) => &failed.attempts,
            _ => &[],
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let param = match self {
            ApiError::InvalidField { param, .. } => Some(param.as_str()),
            ApiError::MockNotAllowed { param } => Some(*param),
            ApiError::UnknownTask {
                named_by_model: true,
                ..
            } => Some("model"),
            ApiError::Chain(ChainFailure {
                reason: FailureReason::Rejected(e),
                ..
            }) => e.param.as_deref(),
            _ => None,
        };
        let problems = match self {
            ApiError::ConfigInvalid(errors) => errors,
            _ => &[][..],
        };
        ErrorBody::new(self.message(), self.kind(), self.code())
            .with(param, self.attempts(), problems)
            .to_vec()
    }
}

/// `{"error":{"message","type","code","param"?,"attempts"?,"problems"?}}`: OpenAI's error shape,
/// for answers and for the error event that ends a broken stream alike.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attempts: &'a [Attempt],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    problems: &'a [ConfigFinding],
}

impl<'a> ErrorBody<'a> {
    pub fn new(message: String, kind: &'a str, code: &'a str) -> Self {
        let (param, attempts, problems) = (None, &[][..], &[][..]);
        ErrorBody {
            error: Detail {
                message,
                kind,
                code,
                param,
                attempts,
                problems,
            },
        }
    }

    fn with(
        mut self,
        param: Option<&'a str>,
        attempts: &'a [Attempt],
        problems: &'a [ConfigFinding],
    ) -> Self {
        (self.error.param, self.error.attempts, self.error.problems) = (param, attempts, problems);
        self
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings and numbers always serialize")
    }
}
