//! `ApiError`: every error a caller can see, with the one mapping to an HTTP status and an
//! OpenAI-shaped body `{"error":{"message","type","code","param"}}`.

use crate::config::{ConfigError, PROVIDER_KEY_MISSING};
use crate::json::{self, JsonObject};
use crate::router::{attempts_json, Attempt};

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
    /// 404: the task is not in the registry. `named_by_model`: the SDK routes, where the task is
    /// the `model` field, answer like OpenAI does for an unknown model so SDKs raise `NotFoundError`.
    UnknownTask {
        task: String,
        known: Vec<String>,
        named_by_model: bool,
    },
    /// 404: no such route.
    RouteNotFound { method: String, path: String },
    /// 405: known route, wrong method.
    MethodNotAllowed { allow: &'static str },
    /// 500: `MODEL_REGISTRY` or another binding is invalid.
    ConfigInvalid(Vec<ConfigError>),
    /// 500: the `GROQ_API_KEY` secret is not set.
    ProviderKeyMissing,
    /// 400: Groq refused the request in a way every model would; its message, org ids redacted.
    UpstreamRejected {
        message: String,
        code: Option<String>,
        param: Option<String>,
        attempts: Vec<Attempt>,
    },
    /// 502: Groq rejected the provider key.
    ProviderAuthFailed { attempts: Vec<Attempt> },
    /// 429: every model that could serve was rate-limited.
    RateLimited {
        retry_after_secs: u64,
        attempts: Vec<Attempt>,
    },
    /// 502: every model of the chain failed.
    AllModelsFailed { attempts: Vec<Attempt> },
    /// 413: the body is larger than `MAX_REQUEST_BYTES`.
    PayloadTooLarge { limit: u64 },
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 403: a CORS preflight from an origin not in `ALLOWED_ORIGINS`.
    OriginNotAllowed,
    /// 429: this client exceeded `CLIENT_RATE_LIMITER`.
    ClientRateLimited { retry_after_secs: u64 },
    /// 504: `REQUEST_TIMEOUT_MS` passed before any model answered.
    DeadlineExceeded { attempts: Vec<Attempt> },
}

impl ApiError {
    pub fn bad_json(message: impl Into<String>) -> Self {
        ApiError::BadJson(message.into())
    }

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
            | ApiError::UpstreamRejected { .. } => 400,
            ApiError::AuthNotConfigured | ApiError::Unauthorized { .. } => 401,
            ApiError::UnknownTask { .. } | ApiError::RouteNotFound { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::RateLimited { .. } => 429,
            ApiError::ConfigInvalid(_) | ApiError::ProviderKeyMissing => 500,
            ApiError::ProviderAuthFailed { .. } | ApiError::AllModelsFailed { .. } => 502,
            ApiError::DeadlineExceeded { .. } => 504,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::OriginNotAllowed => 403,
            ApiError::ClientRateLimited { .. } => 429,
        }
    }

    /// The stable `code` callers and dashboards key on.
    pub fn code(&self) -> &str {
        match self {
            ApiError::BadJson(_) => "invalid_json",
            ApiError::InvalidField { .. } => "invalid_parameter",
            ApiError::AuthNotConfigured => "auth_not_configured",
            ApiError::Unauthorized { .. } => "invalid_api_key",
            ApiError::UnknownTask {
                named_by_model: true,
                ..
            } => "model_not_found",
            ApiError::UnknownTask { .. } => "unknown_task",
            ApiError::RouteNotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::ConfigInvalid(errors) => errors.first().map_or("config_invalid", |e| e.code),
            ApiError::ProviderKeyMissing => "provider_key_missing",
            ApiError::UpstreamRejected { code, .. } => code.as_deref().unwrap_or("invalid_request"),
            ApiError::ProviderAuthFailed { .. } => "provider_auth_failed",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::AllModelsFailed { .. } => "all_models_failed",
            ApiError::DeadlineExceeded { .. } => "deadline_exceeded",
            ApiError::PayloadTooLarge { .. } => "request_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::ClientRateLimited { .. } => "client_rate_limited",
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            400 | 403 | 404 | 405 | 413 | 415 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::PayloadTooLarge { limit } => {
                format!("the request body is larger than {limit} bytes (`MAX_REQUEST_BYTES`)")
            }
            ApiError::UnsupportedMediaType => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            ApiError::OriginNotAllowed => {
                "this origin may not call the router; the operator lists allowed origins in `ALLOWED_ORIGINS`"
                    .to_string()
            }
            ApiError::ClientRateLimited { retry_after_secs } => format!(
                "too many requests from this client; retry after {retry_after_secs} s"
            ),
            ApiError::BadJson(m) => m.clone(),
            ApiError::InvalidField { message, .. } => message.clone(),
            ApiError::AuthNotConfigured => "client authentication is not configured: set the `ROUTER_API_KEYS` secret \
                (`npx wrangler secret put ROUTER_API_KEYS`) and send `Authorization: Bearer <key>`, or set \
                `ALLOW_UNAUTHENTICATED = \"true\"` for a private deployment"
                .to_string(),
            ApiError::Unauthorized { message } => (*message).to_string(),
            ApiError::UnknownTask { task, known, .. } => format!(
                "unknown task `{task}`; known tasks: {}",
                known.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            ),
            ApiError::RouteNotFound { method, path } => format!(
                "no route for {method} {path}; use POST /v1/tasks/{{task}}"
            ),
            ApiError::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            ApiError::ConfigInvalid(errors) => {
                let all: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                format!("the router's configuration is invalid: {}", all.join("; "))
            }
            ApiError::ProviderKeyMissing => {
                PROVIDER_KEY_MISSING.to_string()
            }
            ApiError::UpstreamRejected { message, .. } => message.clone(),
            ApiError::ProviderAuthFailed { .. } => {
                "Groq rejected the router's provider key; the operator must update the `GROQ_API_KEY` secret".to_string()
            }
            ApiError::RateLimited { retry_after_secs, .. } => format!(
                "every model for this task is rate-limited; retry after {retry_after_secs} s"
            ),
            ApiError::AllModelsFailed { attempts } => format!(
                "all {} models for this task failed; see `attempts`",
                attempts.len()
            ),
            ApiError::DeadlineExceeded { attempts } => format!(
                "no model answered within the request deadline (`REQUEST_TIMEOUT_MS`) after {} attempts; see `attempts`",
                attempts.len()
            ),
        }
    }

    /// Extra headers the status calls for.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::ClientRateLimited { retry_after_secs } => {
                vec![("retry-after", retry_after_secs.to_string())]
            }
            ApiError::MethodNotAllowed { allow } => vec![("allow", (*allow).to_string())],
            ApiError::Unauthorized { .. } | ApiError::AuthNotConfigured => {
                vec![("www-authenticate", "Bearer".to_string())]
            }
            _ => Vec::new(),
        }
    }

    pub fn attempts(&self) -> &[Attempt] {
        match self {
            ApiError::UpstreamRejected { attempts, .. }
            | ApiError::ProviderAuthFailed { attempts }
            | ApiError::RateLimited { attempts, .. }
            | ApiError::AllModelsFailed { attempts }
            | ApiError::DeadlineExceeded { attempts } => attempts,
            _ => &[],
        }
    }

    pub fn body(&self) -> String {
        let param = match self {
            ApiError::InvalidField { param, .. } => Some(param.as_str()),
            ApiError::UnknownTask {
                named_by_model: true,
                ..
            } => Some("model"),
            ApiError::UpstreamRejected { param, .. } => param.as_deref(),
            _ => None,
        };
        let attempts = self.attempts();
        let problems = match self {
            ApiError::ConfigInvalid(errors) => Some(config_problems(errors)),
            _ => None,
        };
        let error = JsonObject::new()
            .str("message", &self.message())
            .str("type", self.kind())
            .str("code", self.code())
            .maybe(param, |o, p| o.str("param", p))
            .maybe((!attempts.is_empty()).then_some(attempts), |o, a| {
                o.raw("attempts", &attempts_json(a))
            })
            .maybe(problems.as_deref(), |o, p| o.raw("problems", p))
            .finish();
        JsonObject::new().raw("error", &error).finish()
    }
}

/// `[{"binding","code","message"}]` for `/healthz` and config errors.
pub fn config_problems(errors: &[ConfigError]) -> String {
    json::array(errors.iter().map(|e| {
        JsonObject::new()
            .str("binding", &e.binding)
            .str("code", e.code)
            .str("message", &e.message)
            .finish()
    }))
}
