//! CORS for browser frontends: preflights answered without auth for allowed origins, and the
//! allow-origin header echoing only an allowed origin. Other origins get no CORS headers at all.

use crate::bindings::{Bindings, HttpUrl, Reader};
use crate::http::error::ApiError;
use crate::http::HttpResponse;

/// Which browser origins may call the router (`ALLOWED_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS: only same-origin and non-browser callers.
    #[default]
    None,
    Any,
    List(Vec<String>),
}

/// What a preflight that names no headers is told callers may send: the router's own, and those
/// the official OpenAI and Groq SDKs add in a browser. A preflight that names headers is allowed
/// the ones it names (see `preflight`).
pub const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, x-stainless-arch, \
    x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, \
    x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout";
/// What a browser caller may read from answers.
pub const EXPOSE_HEADERS: &str =
    "x-request-id, x-task-type, x-model-used, x-attempts, x-cache-status, retry-after";
/// How long a browser may cache a preflight.
const MAX_AGE_S: &str = "600";
/// At most this many header names are echoed from a preflight's request.
const MAX_REQUESTED_HEADERS: usize = 64;

impl AllowedOrigins {
    /// `ALLOWED_ORIGINS`: comma-separated origins, or `*`; empty or unset: none.
    pub fn read<B: Bindings>(r: &mut Reader<'_, B>) -> AllowedOrigins {
        r.parsed("ALLOWED_ORIGINS", parse_origins, AllowedOrigins::None)
    }

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

/// The answer to an `OPTIONS` preflight for a route answering `methods`. An allowed origin may
/// send whatever headers its preflight asks for (`Access-Control-Request-Headers`): SDKs add new
/// ones (`x-stainless-helper-method`, `openai-project`, …) faster than a list could follow, and
/// a header grants nothing here, every call still needs its key or token. Only header names are
/// echoed, at most 64, lowercased.
pub fn preflight(
    origin: Option<&str>,
    requested_headers: Option<&str>,
    allowed: &AllowedOrigins,
    methods: &str,
) -> HttpResponse {
    let mut response = match origin.filter(|o| allowed.allows(o)) {
        Some(origin) => HttpResponse {
            status: 204,
            headers: vec![
                ("access-control-allow-origin", origin.to_string()),
                (
                    "access-control-allow-methods",
                    format!("{methods}, OPTIONS"),
                ),
                (
                    "access-control-allow-headers",
                    header_names(requested_headers).unwrap_or_else(|| ALLOW_HEADERS.to_string()),
                ),
                ("access-control-max-age", MAX_AGE_S.to_string()),
            ],
            body: Vec::new(),
        },
        None => HttpResponse::error(&ApiError::OriginNotAllowed),
    };
    // The answer depends on both: a cache must not give one origin's, or one header list's, to
    // another.
    let vary = "Origin, Access-Control-Request-Headers";
    response.headers.push(("vary", vary.to_string()));
    response
}

/// The header names in a preflight's `Access-Control-Request-Headers`, lowercased and
/// comma-separated; `None` when it names none (or none that is a header name).
fn header_names(requested: Option<&str>) -> Option<String> {
    // RFC 9110 `token` characters: all a header name may hold.
    let token = |name: &str| {
        !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let names: Vec<String> = requested?
        .split(',')
        .map(str::trim)
        .filter(|name| token(name))
        .take(MAX_REQUESTED_HEADERS)
        .map(str::to_ascii_lowercase)
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
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

fn parse_origins(text: &str) -> Result<AllowedOrigins, String> {
    if text == "*" {
        return Ok(AllowedOrigins::Any);
    }
    let mut list = Vec::new();
    for (i, origin) in text.split(',').map(str::trim).enumerate() {
        if origin.is_empty() {
            continue;
        }
        match HttpUrl::parse(origin) {
            Some(url) if url.rest.is_empty() && !url.authority.contains('*') => {
                list.push(origin.to_string())
            }
            _ => return Err(format!("entry {} is not an origin: https:// or http://, a host and maybe a port, no path; or `*` alone", i + 1)),
        }
    }
    Ok(match list.is_empty() {
        true => AllowedOrigins::None,
        false => AllowedOrigins::List(list),
    })
}
