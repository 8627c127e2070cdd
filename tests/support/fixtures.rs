//! What the native test files share: the client key, a chat body, and requests in one line.

use super::scripted::{exchange, load, Exchange, ScriptedProvider};
use std::cell::RefCell;
use task_router::http::limit::Unlimited;
use task_router::http::HttpRequest;

/// `ROUTER_API_KEYS` with the one client, `web`, and its key as a bearer token.
pub const CLIENT_KEYS: &str = "web:client-secret-1";
pub const BEARER: &str = "Bearer client-secret-1";
/// A chat body any model would take.
pub const HI: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

/// A request for `route` (`METHOD PATH`) with `authorization` and `body`.
pub fn request<'a>(route: &'a str, auth: Option<&'a str>, body: &'a str) -> HttpRequest<'a> {
    let (method, path) = route.split_once(' ').expect("METHOD PATH");
    let request = HttpRequest::new(method, path, body.as_bytes());
    HttpRequest {
        authorization: auth,
        ..request
    }
}

/// `req` through the router under `bindings`, with no rate limit and a health book of its own.
pub fn send(
    bindings: &[(&'static str, &str)],
    provider: &ScriptedProvider,
    req: HttpRequest<'_>,
) -> Exchange {
    exchange(
        &load(bindings),
        provider,
        &Unlimited,
        &RefCell::default(),
        req,
    )
}

/// Bindings written as `NAME=VALUE, NAME=VALUE`; a value is what stands before the next `, ` (or
/// `|`), its trailing spaces dropped unless it is all spaces.
pub fn bindings_of(text: &'static str) -> Vec<(&'static str, &'static str)> {
    let pairs = text.split(", ").filter(|pair| !pair.trim().is_empty());
    let pairs = pairs.map(|pair| pair.split_once('=').expect("NAME=VALUE"));
    let value = |v: &'static str| Some(v.trim_end()).filter(|v| !v.is_empty()).unwrap_or(v);
    pairs.map(|(name, v)| (name.trim(), value(v))).collect()
}
