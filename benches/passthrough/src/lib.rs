//! The baseline for `benches/bench.py`: the least a workers-rs Worker can do to relay a chat
//! request and account for it. It reads the body into wasm memory (as the router must, to parse
//! it), POSTs it to `{UPSTREAM}/openai/v1/chat/completions` with the caller's `Authorization`,
//! returns the upstream `Response` as is (status, `content-type` and a streamed body pass
//! straight through), and writes one JSON line per request with `console.info`, as the router
//! does at its default `LOG_LEVEL`: the floor for any proxy that can be audited.

use worker::{
    event, js_sys, web_sys, Context, Date, Env, Fetch, Headers, Method, Request, RequestInit,
    Response,
};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let started = Date::now().as_millis();
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
    let response = Fetch::Request(Request::new_with_init(&url, &init)?)
        .send()
        .await?;
    let line = format!(
        r#"{{"level":"info","event":"request","status":{},"duration_ms":{}}}"#,
        response.status_code(),
        Date::now().as_millis() - started
    );
    web_sys::console::info_1(&line.into());
    Ok(response)
}
