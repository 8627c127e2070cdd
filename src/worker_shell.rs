//! The Worker shell: converts between the Workers runtime and the routing core. It reads
//! bindings, calls Groq with `fetch` (the only code that talks to Groq), writes log lines with
//! `console`, and builds `Response`s. Every rule lives in the core.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use wasm_bindgen::JsValue;
use worker::{
    console_error, console_log, console_warn, event, js_sys, AbortController, Context, Delay, Env,
    Fetch, Headers, Method, Request, RequestInit, Response, Result,
};

use crate::api::{handle, HttpRequest, HttpResponse, RequestEnv};
use crate::config::{BindingValue, Bindings, Config};
use crate::log::{Level, Log};
use crate::provider::{Provider, TransportError, UpstreamCall, UpstreamReply};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let request_id = request_id(req.headers().get("x-request-id").ok().flatten());
    let method = req.method().to_string();
    let url = req.inner().url();
    let path = path_of(&url);
    let authorization = req.headers().get("authorization").ok().flatten();
    let body = match method.as_str() {
        "GET" | "HEAD" | "OPTIONS" => Vec::new(),
        // A body that cannot be read is answered like an empty one: 400 from the parser.
        _ => req.bytes().await.unwrap_or_default(),
    };

    let config = Config::load(&EnvBindings(&env));
    let now_ms = || js_sys::Date::now() as u64;
    let response = handle(
        HttpRequest {
            method: &method,
            path,
            authorization: authorization.as_deref(),
            body: &body,
        },
        &config,
        &GroqFetch,
        &RequestEnv {
            request_id: &request_id,
            now_ms: &now_ms,
            log: &ConsoleLog,
        },
    )
    .await;
    into_worker_response(response)
}

fn into_worker_response(response: HttpResponse) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(response.body.into_bytes())?
        .with_status(response.status)
        .with_headers(headers))
}

/// `https://host/a/b?q` → `/a/b`, without parsing the URL (the `url` crate's tables would be
/// linked into the bundle for nothing).
fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("/")
}

/// The caller's `x-request-id` when it is a sane token, else a fresh random one.
fn request_id(incoming: Option<String>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id
        }
        _ => {
            let a = (js_sys::Math::random() * 4294967296.0) as u64;
            let b = (js_sys::Math::random() * 4294967296.0) as u64;
            format!("req_{:016x}", (a << 32) | b)
        }
    }
}

/// Bindings read from the Worker `Env`: strings as text, `[vars]` tables as JSON.
struct EnvBindings<'a>(&'a Env);

impl Bindings for EnvBindings<'_> {
    fn get(&self, name: &str) -> Option<BindingValue> {
        let value = js_sys::Reflect::get(self.0.as_ref(), &JsValue::from_str(name)).ok()?;
        if value.is_undefined() || value.is_null() {
            return None;
        }
        if let Some(text) = value.as_string() {
            return Some(BindingValue::Text(text));
        }
        // Objects, numbers and booleans from `[vars]`: through JSON, which the core understands.
        let json = js_sys::JSON::stringify(&value).ok()?.as_string()?;
        match serde_json::from_str::<serde_json::Value>(&json).ok()? {
            serde_json::Value::Number(n) => Some(BindingValue::Text(n.to_string())),
            serde_json::Value::Bool(b) => Some(BindingValue::Text(b.to_string())),
            other => Some(BindingValue::Json(other)),
        }
    }
}

struct ConsoleLog;

impl Log for ConsoleLog {
    fn emit(&self, level: Level, line: serde_json::Value) {
        let line = line.to_string();
        match level {
            Level::Info => console_log!("{line}"),
            Level::Warn => console_warn!("{line}"),
            Level::Error => console_error!("{line}"),
        }
    }
}

/// Groq over the Workers `fetch` API, each call raced against its timeout.
struct GroqFetch;

impl Provider for GroqFetch {
    async fn chat(
        &self,
        call: UpstreamCall<'_>,
    ) -> std::result::Result<UpstreamReply, TransportError> {
        let connection = |e: worker::Error| TransportError::Connection(e.to_string());
        let headers = Headers::new();
        headers
            .set("authorization", &format!("Bearer {}", call.api_key))
            .map_err(connection)?;
        headers
            .set("content-type", "application/json")
            .map_err(connection)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(JsValue::from_str(&call.body)));
        let request = Request::new_with_init(call.url, &init).map_err(connection)?;
        let controller = AbortController::default();
        let signal = controller.signal();

        // The timer covers the body too: a model that sends headers and then stalls is hung.
        let exchange = async {
            let mut response = Fetch::Request(request).send_with_signal(&signal).await?;
            let header = |name: &str| response.headers().get(name).ok().flatten();
            let (retry_after, reset_tokens, reset_requests) = (
                header("retry-after"),
                header("x-ratelimit-reset-tokens"),
                header("x-ratelimit-reset-requests"),
            );
            let status = response.status_code();
            let body = response.bytes().await?;
            Ok::<_, worker::Error>(UpstreamReply {
                status,
                body,
                retry_after,
                reset_tokens,
                reset_requests,
            })
        };
        match first_of(
            exchange,
            Delay::from(Duration::from_millis(call.timeout_ms)),
        )
        .await
        {
            Ok(reply) => reply.map_err(connection),
            Err(()) => {
                controller.abort();
                Err(TransportError::Timeout)
            }
        }
    }
}

/// Runs both futures; `Ok` with `a`'s output if it finishes first, `Err` if `b` does.
async fn first_of<A: Future, B: Future<Output = ()>>(
    a: A,
    b: B,
) -> std::result::Result<A::Output, ()> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(()));
        }
        Poll::Pending
    })
    .await
}
