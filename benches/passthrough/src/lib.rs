//! The baseline for `benches/bench.py`: the least a workers-rs Worker can do to relay a chat
//! request. It reads the body into wasm memory (as the router must, to parse it), POSTs it to
//! `{UPSTREAM}/openai/v1/chat/completions` with the caller's `Authorization`, and returns the
//! upstream `Response` as is, so status, `content-type` and a streamed body pass straight through.

use worker::{event, js_sys, Context, Env, Fetch, Headers, Method, Request, RequestInit, Response};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let upstream = env.var("UPSTREAM")?.to_string();
    let body = req.bytes().await?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(authorization) = req.headers().get("authorization")? {
        headers.set("authorization", &authorization)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    let url = format!("{upstream}/openai/v1/chat/completions");
    Fetch::Request(Request::new_with_init(&url, &init)?)
        .send()
        .await
}
