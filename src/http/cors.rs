//! CORS for browser frontends: preflights answered without auth for allowed origins, and the
//! allow-origin header echoing only an allowed origin. Other origins get no CORS headers at all.

use crate::http::error::ApiError;
use crate::http::HttpResponse;
use crate::routing::config::AllowedOrigins;

/// What callers send: the router's own headers, and those the official OpenAI and Groq SDKs add
/// when they run in a browser.
pub const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, x-stainless-arch, \
    x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, \
    x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout";
/// What a browser caller may read from answers.
pub const EXPOSE_HEADERS: &str = "x-request-id, x-task-type, x-model-used, x-attempts, retry-after";
/// How long a browser may cache a preflight.
const MAX_AGE_S: &str = "600";

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::None => false,
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }

    pub fn is_configured(&self) -> bool {
        *self != AllowedOrigins::None
    }
}

/// The answer to an `OPTIONS` preflight for a route answering `methods`.
pub fn preflight(origin: Option<&str>, allowed: &AllowedOrigins, methods: &str) -> HttpResponse {
    let mut response = match origin.filter(|o| allowed.allows(o)) {
        Some(origin) => HttpResponse {
            status: 204,
            headers: vec![
                ("access-control-allow-origin", origin.to_string()),
                (
                    "access-control-allow-methods",
                    format!("{methods}, OPTIONS"),
                ),
                ("access-control-allow-headers", ALLOW_HEADERS.to_string()),
                ("access-control-max-age", MAX_AGE_S.to_string()),
            ],
            body: Vec::new(),
        },
        None => HttpResponse::error(&ApiError::OriginNotAllowed),
    };
    response.headers.push(("vary", "Origin".to_string()));
    response
}

/// Adds CORS headers to an answer for an allowed origin (nothing for others), and `Vary: Origin`
/// whenever CORS is configured, so caches never serve one origin's answer to another.
pub fn decorate(response: &mut HttpResponse, origin: Option<&str>, allowed: &AllowedOrigins) {
    if !allowed.is_configured() {
        return;
    }
    response.headers.push(("vary", "Origin".to_string()));
    if let Some(origin) = origin.filter(|o| allowed.allows(o)) {
        response.headers.extend([
            ("access-control-allow-origin", origin.to_string()),
            ("access-control-expose-headers", EXPOSE_HEADERS.to_string()),
        ]);
    }
}
