//! Tests of the end-to-end support code itself: the fake Groq through the test HTTP client, and
//! one `wrangler dev` start/stop of the real Worker.
//!
//! Run with `cargo test --test support_selftest`. The Worker test needs `node`/`npm` and builds
//! the bundle with `scripts/build.sh` (the first build installs tools and takes minutes); skip it
//! with `cargo test --test support_selftest -- --skip worker_`.

mod e2e_support;

use e2e_support::fake_groq::{FakeGroq, LONG_PIECES};
use e2e_support::http::{self, sse_events, StreamEnd};
use e2e_support::worker::Worker;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "gsk_test_key";
const CHAT: &str = "/openai/v1/chat/completions";

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn chat(fake: &FakeGroq, model: &str) -> http::Response {
    http::post_json(fake.port(), CHAT, Some(KEY), &chat_body(model))
}

fn stream_chat(fake: &FakeGroq, body: &Value) -> http::StreamResponse {
    let authorization = format!("Bearer {KEY}");
    http::stream(
        fake.port(),
        "POST",
        CHAT,
        &[
            ("content-type", "application/json"),
            ("authorization", &authorization),
        ],
        body.to_string().as_bytes(),
    )
}

fn assert_groq_headers(response: &http::Response) {
    for name in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
    ] {
        let value = response
            .header(name)
            .unwrap_or_else(|| panic!("missing {name}"));
        assert!(value.parse::<u64>().is_ok(), "{name}: {value:?}");
    }
    assert_eq!(
        response.header("x-ratelimit-reset-requests"),
        Some("2m59.56s")
    );
    assert_eq!(response.header("x-ratelimit-reset-tokens"), Some("7.66s"));
    let request_id = response.header("x-request-id").expect("x-request-id");
    assert!(request_id.starts_with("req_"), "{request_id}");
}

#[test]
fn ok_answers_a_groq_shaped_completion() {
    let fake = FakeGroq::start(KEY);
    let response = chat(&fake, "ok-a");

    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_groq_headers(&response);
    let body = response.json();
    assert!(
        body["id"].as_str().unwrap().starts_with("chatcmpl-"),
        "{body}"
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "ok-a");
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "hello from ok-a");
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 55);
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!(body["usage"]["total_tokens"], 67);
    for timing in ["queue_time", "prompt_time", "completion_time", "total_time"] {
        assert!(body["usage"][timing].is_f64(), "usage.{timing}");
    }
    assert!(body["system_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("fp_"));
    assert_eq!(
        body["x_groq"]["id"],
        response.header("x-request-id").unwrap()
    );
    assert_eq!(body["service_tier"], "on_demand");
}

#[test]
fn gone_answers_404_model_not_found() {
    let fake = FakeGroq::start(KEY);
    let response = chat(&fake, "gone-x");

    assert_eq!(response.status, 404);
    assert_groq_headers(&response);
    assert_eq!(
        response.json(),
        json!({"error": {
            "message": "The model `gone-x` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }})
    );
    assert_eq!(response.header("retry-after"), None);
}

#[test]
fn ratelimited_answers_429_with_retry_after() {
    let fake = FakeGroq::start(KEY);
    let response = chat(&fake, "ratelimited-1");

    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("8"));
    assert_eq!(response.header("x-ratelimit-reset-tokens"), Some("7.66s"));
    assert_eq!(response.header("x-ratelimit-remaining-tokens"), Some("0"));
    let error = &response.json()["error"];
    assert_eq!(error["type"], "tokens");
    assert_eq!(error["code"], "rate_limit_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Rate limit reached for model `ratelimited-1` in organization `org_01hxyzfakeorg`"
        ),
        "{message}"
    );
    assert!(message.contains("Please try again in 7.66s."), "{message}");
}

#[test]
fn every_error_behaviour_answers_its_status_and_body() {
    let fake = FakeGroq::start(KEY);
    // (model, status, type, code)
    let table: &[(&str, u16, &str, Option<&str>)] = &[
        (
            "decommissioned-a",
            400,
            "invalid_request_error",
            Some("model_decommissioned"),
        ),
        ("toolarge-a", 413, "tokens", Some("rate_limit_exceeded")),
        (
            "capacity-a",
            498,
            "capacity_exceeded",
            Some("capacity_exceeded"),
        ),
        ("error500-a", 500, "internal_server_error", None),
        (
            "badkey-a",
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        ("forbidden-a", 403, "permission_error", None),
        ("badrequest-a", 400, "invalid_request_error", None),
        (
            "contextlength-a",
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        (
            "jsonfail-a",
            400,
            "invalid_request_error",
            Some("json_validate_failed"),
        ),
        (
            "whatever-a",
            404,
            "invalid_request_error",
            Some("model_not_found"),
        ),
    ];
    for &(model, status, kind, code) in table {
        let response = chat(&fake, model);
        assert_eq!(response.status, status, "{model}: {}", response.text());
        assert_groq_headers(&response);
        let error = &response.json()["error"];
        assert_eq!(error["type"], kind, "{model}");
        assert_eq!(error["code"].as_str(), code, "{model}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{model}");
    }
    let decommissioned = chat(&fake, "decommissioned-a").json();
    assert!(decommissioned["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The model `decommissioned-a` has been decommissioned"));
    let too_large = chat(&fake, "toolarge-a").json();
    let message = too_large["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Request too large for model `toolarge-a`"),
        "{message}"
    );
    assert!(message.contains("org_01hxyzfakeorg"), "{message}");
    assert!(chat(&fake, "capacity-a").json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("flex tier capacity exceeded"));
    assert_eq!(
        chat(&fake, "badrequest-a").json()["error"]["param"],
        "temperature"
    );
    assert_eq!(
        chat(&fake, "contextlength-a").json()["error"]["param"],
        "messages"
    );
    assert!(chat(&fake, "jsonfail-a").json()["error"]["failed_generation"].is_string());

    let html = chat(&fake, "html502-a");
    assert_eq!(html.status, 502);
    assert_eq!(html.header("content-type"), Some("text/html"));
    assert!(html.text().contains("<title>502 Bad Gateway</title>"));
    assert!(serde_json::from_slice::<Value>(&html.body).is_err());

    let not_completion = chat(&fake, "notcompletion-a");
    assert_eq!(not_completion.status, 200);
    assert_eq!(
        not_completion.json(),
        json!({"status": "ok", "object": "list", "data": []})
    );
}

#[test]
fn hang_never_answers_and_drop_releases_it_promptly() {
    let fake = FakeGroq::start(KEY);
    let started = Instant::now();
    let outcome = http::try_send(
        fake.port(),
        "POST",
        CHAT,
        &[("authorization", &format!("Bearer {KEY}"))],
        chat_body("hang-x").to_string().as_bytes(),
        Duration::from_millis(400),
    );
    let waited = started.elapsed();

    let error = outcome.expect_err("hang must not answer");
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error:?}"
    );
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert_eq!(fake.calls_to("hang-x"), 1);

    // Another hung connection is still open; dropping the fake must not wait for it.
    let port = fake.port();
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = chat_body("hang-y").to_string();
    write!(
        held,
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let dropping = Instant::now();
    drop(fake);
    assert!(
        dropping.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropping.elapsed()
    );
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = Vec::new();
    let read = held.read_to_end(&mut rest);
    assert!(
        read.is_ok() || read.as_ref().unwrap_err().kind() == ErrorKind::ConnectionReset,
        "the held connection must be closed, got {read:?}"
    );
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener still open"
    );
}

#[test]
fn drop_closes_idle_keep_alive_connections_promptly() {
    let fake = FakeGroq::start(KEY);
    let mut idle = TcpStream::connect(("127.0.0.1", fake.port())).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        idle,
        "GET /openai/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    )
    .unwrap();
    let mut answer = [0u8; 4096];
    let read = idle.read(&mut answer).unwrap();
    let head = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");

    let dropping = Instant::now();
    drop(fake);
    assert!(
        dropping.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropping.elapsed()
    );
    let after = idle.read(&mut answer);
    assert!(
        matches!(after, Ok(0)) || after.as_ref().unwrap_err().kind() == ErrorKind::ConnectionReset,
        "the idle connection must be closed, got {after:?}"
    );
}

#[test]
fn hang_for_bounds_the_hang() {
    let fake = FakeGroq::start(KEY);
    fake.set_hang_for(Duration::from_millis(200));
    let started = Instant::now();
    let outcome = http::try_send(
        fake.port(),
        "POST",
        CHAT,
        &[("authorization", &format!("Bearer {KEY}"))],
        chat_body("hang-x").to_string().as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(outcome.unwrap_err().kind(), ErrorKind::UnexpectedEof);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[test]
fn drop_closes_without_a_byte() {
    let fake = FakeGroq::start(KEY);
    let started = Instant::now();
    let outcome = http::try_send(
        fake.port(),
        "POST",
        CHAT,
        &[("authorization", &format!("Bearer {KEY}"))],
        chat_body("drop-x").to_string().as_bytes(),
        Duration::from_secs(5),
    );
    let error = outcome.expect_err("drop must not answer");
    assert!(
        matches!(
            error.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
        ),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.models_called(), vec!["drop-x"]);
}

#[test]
fn ok_streams_sse_chunks_over_time_ending_in_done() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::from_millis(30));
    let response = stream_chat(
        &fake,
        &json!({"model": "ok-s", "messages": [], "stream": true,
                "stream_options": {"include_usage": true}}),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("content-length"), None);
    // Chunked, so a stream cut short shows as such (see `streamdrop`).
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("connection"), Some("close"));
    let request_id = response.header("x-request-id").unwrap().to_owned();
    let body = response.finish();
    assert_eq!(body.end, StreamEnd::Complete);
    assert!(body.pieces.len() >= 4, "{} pieces", body.pieces.len());
    let span = body.pieces.last().unwrap().at - body.pieces[0].at;
    assert!(
        span >= Duration::from_millis(120),
        "events arrived within {span:?}"
    );

    let events = sse_events(&body.bytes());
    assert_eq!(events.len(), 7, "{events:#?}");
    assert!(events.iter().all(|event| event.event.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..6].iter().map(|e| e.json().unwrap()).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "ok-s");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert!(chunk["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(chunk["created"].is_u64() && chunk["system_fingerprint"].is_string());
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["x_groq"]["id"], request_id.as_str());
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "hello from ok-s");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["x_groq"]["usage"]["total_tokens"], 67);
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 12);
}

#[test]
fn ok_stream_without_include_usage_has_no_usage_chunk() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::ZERO);
    let body = stream_chat(&fake, &json!({"model": "ok-s", "stream": true})).finish();
    let events = sse_events(&body.bytes());
    assert_eq!(events.len(), 6, "{events:#?}");
    assert_eq!(
        events[4].json().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(events[5].data, "[DONE]");
}

#[test]
fn streamdrop_stops_after_one_content_chunk_without_done() {
    let fake = FakeGroq::start(KEY);
    let body = stream_chat(&fake, &json!({"model": "streamdrop-a", "stream": true})).finish();
    // The connection closes without the terminating chunk.
    assert_eq!(body.end, StreamEnd::Truncated, "{}", body.text());
    let events = sse_events(&body.bytes());
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        events[0].json().unwrap()["choices"][0]["delta"]["role"],
        "assistant"
    );
    assert_eq!(
        events[1].json().unwrap()["choices"][0]["delta"]["content"],
        "hello"
    );
    assert!(events.iter().all(|event| event.data != "[DONE]"));
}

#[test]
fn streamerror_sends_an_error_event_after_content() {
    let fake = FakeGroq::start(KEY);
    let body = stream_chat(&fake, &json!({"model": "streamerror-a", "stream": true})).finish();
    // After its error event the body ends properly.
    assert_eq!(body.end, StreamEnd::Complete, "{}", body.text());
    let events = sse_events(&body.bytes());
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(events[2].event.as_deref(), Some("error"));
    let error = &events[2].json().unwrap()["error"];
    assert_eq!(error["code"], "tool_use_failed");
    assert_eq!(error["status_code"], 400);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Tool call validation failed"));
}

#[test]
fn streamempty_and_streamslow() {
    let fake = FakeGroq::start(KEY);
    let empty = stream_chat(&fake, &json!({"model": "streamempty-a", "stream": true}));
    assert_eq!(empty.status, 200);
    assert_eq!(empty.header("content-type"), Some("text/event-stream"));
    let empty = empty.finish();
    assert!(empty.bytes().is_empty(), "{}", empty.text());
    // An empty body, properly ended: the stream ends before its first event.
    assert_eq!(empty.end, StreamEnd::Complete);

    fake.set_chunk_delay(Duration::ZERO);
    let no_done = stream_chat(&fake, &json!({"model": "streamnodone-a", "stream": true})).finish();
    assert_eq!(no_done.end, StreamEnd::Complete, "ended properly");
    let events = sse_events(&no_done.bytes());
    assert_eq!(
        events.len(),
        2,
        "a role chunk and one content chunk: {}",
        no_done.text()
    );
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    fake.set_hang_for(Duration::from_millis(300));
    fake.set_chunk_delay(Duration::ZERO);
    let slow = stream_chat(&fake, &json!({"model": "streamslow-a", "stream": true}));
    let headers_after = slow.sent_at.elapsed();
    let sent_at = slow.sent_at;
    let body = slow.finish();
    assert!(
        headers_after < Duration::from_millis(250),
        "{headers_after:?}"
    );
    assert!(body.pieces[0].at - sent_at >= Duration::from_millis(300));
    assert_eq!(sse_events(&body.bytes()).last().unwrap().data, "[DONE]");
}

#[test]
fn a_waiting_streamslow_does_not_stall_other_requests() {
    let fake = FakeGroq::start(KEY);
    fake.set_hang_for(Duration::from_secs(2));
    let slow = stream_chat(&fake, &json!({"model": "streamslow-a", "stream": true}));
    // The slow stream is now behind its 200 headers, waiting for `hang_for`.
    let started = Instant::now();
    let response = chat(&fake, "ok-b");
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        took < Duration::from_secs(1),
        "a plain answer took {took:?} while `streamslow` waited"
    );
    drop(slow);
}

#[test]
fn streamstall_goes_silent_after_one_content_chunk_then_drops_the_connection() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::ZERO);
    fake.set_hang_for(Duration::from_millis(300));
    let response = stream_chat(&fake, &json!({"model": "streamstall-a", "stream": true}));
    let sent_at = response.sent_at;
    let body = response.finish();
    let ended_after = sent_at.elapsed();
    assert_eq!(body.end, StreamEnd::Truncated, "{}", body.text());
    let events = sse_events(&body.bytes());
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        events[1].json().unwrap()["choices"][0]["delta"]["content"],
        "hello"
    );
    let last_piece = body.pieces.last().unwrap().at - sent_at;
    assert!(last_piece < Duration::from_millis(250), "{last_piece:?}");
    assert!(
        ended_after >= Duration::from_millis(300) && ended_after < Duration::from_secs(2),
        "{ended_after:?}"
    );
}

#[test]
fn streamlong_sends_every_tick_chunk_delay_apart_ending_in_done() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::from_millis(5));
    let body = stream_chat(&fake, &json!({"model": "streamlong-a", "stream": true})).finish();
    assert_eq!(body.end, StreamEnd::Complete);
    let events = sse_events(&body.bytes());
    // Role chunk, the ticks, final chunk, `[DONE]`.
    assert_eq!(events.len(), LONG_PIECES + 3, "{events:#?}");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let span = body.pieces.last().unwrap().at - body.pieces[0].at;
    let least = Duration::from_millis(5) * (LONG_PIECES as u32 + 2);
    assert!(span >= least, "events arrived within {span:?}");
}

#[test]
fn bodyhang_sends_its_head_and_half_a_body_then_closes_after_hang_for() {
    let fake = FakeGroq::start(KEY);
    fake.set_hang_for(Duration::from_millis(300));
    let response = stream_chat(&fake, &chat_body("bodyhang-a"));
    let head_after = response.sent_at.elapsed();
    assert!(head_after < Duration::from_millis(250), "{head_after:?}");
    assert_eq!(response.status, 200);
    // The head alone, as a whole answer's.
    assert_groq_headers(&http::Response {
        status: response.status,
        headers: response.headers.clone(),
        body: Vec::new(),
    });
    let announced: usize = response.header("content-length").unwrap().parse().unwrap();
    let sent_at = response.sent_at;
    let body = response.finish();
    let ended_after = sent_at.elapsed();
    assert_eq!(body.end, StreamEnd::Truncated);
    let received = body.bytes();
    assert_eq!(received.len(), announced - announced / 2, "{}", body.text());
    assert!(body.text().starts_with('{'), "{}", body.text());
    assert!(
        ended_after >= Duration::from_millis(300) && ended_after < Duration::from_secs(2),
        "{ended_after:?}"
    );

    // Whole answers are refused as cut short.
    let outcome = http::try_send(
        fake.port(),
        "POST",
        CHAT,
        &[("authorization", &format!("Bearer {KEY}"))],
        chat_body("bodyhang-b").to_string().as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(outcome.unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn send_raw_reads_chunked_answers_and_refuses_cut_ones() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::ZERO);
    let raw = |model: &str| {
        let body = json!({"model": model, "stream": true}).to_string();
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let response = http::send_raw(fake.port(), raw("ok-raw").as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    let events = sse_events(&response.body);
    assert_eq!(events.len(), 6, "{}", response.text());
    assert_eq!(events[5].data, "[DONE]");

    let cut = http::try_send_raw(
        fake.port(),
        raw("streamdrop-raw").as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(cut.unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn models_lists_the_configured_ids_or_the_configured_error() {
    let fake = FakeGroq::start(KEY);
    fake.set_models(vec!["openai/gpt-oss-20b".into(), "ok-a".into()]);
    let response = http::get(fake.port(), "/openai/v1/models", Some(KEY));
    assert_eq!(response.status, 200);
    assert_groq_headers(&response);
    let body = response.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["openai/gpt-oss-20b", "ok-a"]);
    let first = &body["data"][0];
    assert_eq!(first["object"], "model");
    assert_eq!(first["owned_by"], "Fake");
    assert_eq!(first["active"], true);
    assert_eq!(first["context_window"], 131_072);
    assert_eq!(first["max_completion_tokens"], 65_536);

    fake.set_models_status(401);
    let refused = http::get(fake.port(), "/openai/v1/models", Some(KEY));
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "invalid_api_key");
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls
        .iter()
        .all(|call| call.method == "GET" && call.path == "/openai/v1/models"));
}

#[test]
fn calls_are_recorded_in_order_and_auth_is_checked() {
    let fake = FakeGroq::start(KEY);
    let wrong = http::post_json(fake.port(), CHAT, Some("gsk_wrong"), &chat_body("ok-a"));
    assert_eq!(wrong.status, 401);
    assert_groq_headers(&wrong);
    assert_eq!(
        wrong.json(),
        json!({"error": {"message": "Invalid API Key", "type": "invalid_request_error",
                         "code": "invalid_api_key"}})
    );
    let missing = http::post_json(fake.port(), CHAT, None, &chat_body("ok-b"));
    assert_eq!(missing.status, 401);
    let authorization = format!("Bearer {KEY}");
    let good = http::send(
        fake.port(),
        "POST",
        CHAT,
        &[("Authorization", &authorization), ("X-Trace", "t-1")],
        chat_body("ok-c").to_string().as_bytes(),
    );
    assert_eq!(good.status, 200);
    assert_eq!(chat(&fake, "gone-d").status, 404);
    assert_eq!(chat(&fake, "ok-c").status, 200);

    assert_eq!(
        fake.models_called(),
        ["ok-a", "ok-b", "ok-c", "gone-d", "ok-c"]
    );
    assert_eq!(fake.calls_to("ok-c"), 2);
    assert_eq!(fake.calls_to("ok-z"), 0);
    let calls = fake.calls();
    let authorized: Vec<bool> = calls.iter().map(|call| call.authorized).collect();
    assert_eq!(authorized, [false, false, true, true, true]);
    assert_eq!(calls[2].method, "POST");
    assert_eq!(calls[2].path, CHAT);
    assert_eq!(calls[2].header("x-trace"), Some("t-1"));
    assert!(calls[2].headers.iter().any(|(name, _)| name == "x-trace"));
    assert_eq!(calls[2].body["messages"][0]["content"], "hi");

    fake.reset_calls();
    assert!(fake.calls().is_empty());
    assert_eq!(chat(&fake, "badkey-e").status, 401);
    assert_eq!(fake.calls().len(), 1);
    assert!(
        fake.calls()[0].authorized,
        "badkey fails on the model, not the header"
    );
}

#[test]
fn unknown_paths_and_malformed_requests() {
    let fake = FakeGroq::start(KEY);
    let unknown = http::get(fake.port(), "/v1/chat/completions", Some(KEY));
    assert_eq!(unknown.status, 404);
    let error = &unknown.json()["error"];
    assert_eq!(error["code"], "unknown_url");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Unknown request URL: GET /v1/chat/completions."));

    let malformed = http::send_raw(fake.port(), b"NOT A REQUEST\r\n\r\n");
    assert_eq!(malformed.status, 400);
    let bad_length = http::send_raw(
        fake.port(),
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    );
    assert_eq!(bad_length.status, 400);
}

#[test]
fn chunked_request_bodies_and_keep_alive_are_understood() {
    let fake = FakeGroq::start(KEY);
    let body = chat_body("ok-chunked").to_string();
    let (head, tail) = body.split_at(10);
    let chunked = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{head}\r\n{:x};ext=1\r\n{tail}\r\n0\r\n\r\n",
        head.len(),
        tail.len()
    );
    let response = http::send_raw(fake.port(), chunked.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "ok-chunked");

    // Two requests on one connection: the first keeps it open, the second closes it.
    let mut connection = TcpStream::connect(("127.0.0.1", fake.port())).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let first = chat_body("ok-1").to_string();
    let second = chat_body("ok-2").to_string();
    write!(
        connection,
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{first}\
         POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{second}",
        first.len(),
        second.len()
    )
    .unwrap();
    let mut answer = String::new();
    connection.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(answer.contains("hello from ok-1") && answer.contains("hello from ok-2"));
    assert_eq!(fake.models_called(), ["ok-chunked", "ok-1", "ok-2"]);
}

#[test]
fn sse_parser_follows_the_event_stream_rules() {
    let text =
        b": comment\r\nevent: error\r\ndata: a\r\ndata:b\r\n\r\nid: 7\ndata: [DONE]\n\ndata: cut";
    assert_eq!(
        sse_events(text),
        vec![
            http::SseEvent {
                event: Some("error".into()),
                data: "a\nb".into()
            },
            http::SseEvent {
                event: None,
                data: "[DONE]".into()
            },
        ]
    );
}

#[test]
fn worker_serves_healthz_and_drop_stops_it() {
    let fake = FakeGroq::start(KEY);
    // The URL's `:`s and the empty `FORCE_MODEL` baseline must survive `--var KEY:VALUE`; a
    // mangled value would make the config invalid and `/healthz` answer 503.
    let worker = Worker::start(&[
        ("GROQ_BASE_URL", &fake.base_url()),
        ("GROQ_API_KEY", KEY),
        ("ROUTER_API_KEYS", "selftest:ck_selftest"),
    ]);
    let port = worker.port();
    let pid = worker.pid();
    let health = http::get(port, "/healthz", None);
    assert_eq!(health.status, 200, "{}\n{}", health.text(), worker.logs());

    // wrangler's access log line can trail the response.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !worker.logs().contains("GET /healthz 200") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worker.logs().contains("GET /healthz 200"),
        "{}",
        worker.logs()
    );

    drop(worker);
    let refused = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    );
    assert!(refused.is_err(), "port {port} still accepts connections");
    let group_alive = std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!group_alive, "process group {pid} survived the drop");
}

#[test]
fn worker_started_on_a_port_another_server_holds_moves_to_another() {
    // The race `free_port` leaves open, made certain: the fake Groq holds the port wrangler is
    // told to use. It answers `/healthz` too (404), which must not pass for the router's answer.
    let fake = FakeGroq::start(KEY);
    let worker = Worker::start_trying_port(
        fake.port(),
        &[
            ("GROQ_BASE_URL", &fake.base_url()),
            ("GROQ_API_KEY", KEY),
            ("ROUTER_API_KEYS", "selftest:ck_selftest"),
        ],
    );
    assert_ne!(worker.port(), fake.port());
    let health = http::get(worker.port(), "/healthz", None);
    assert_eq!(health.status, 200, "{}\n{}", health.text(), worker.logs());
    // The readiness probe asked the fake while wrangler tried its port, and did not take its
    // 404 for the router's answer.
    let calls = fake.calls();
    assert!(!calls.is_empty());
    assert!(
        calls
            .iter()
            .all(|c| c.method == "GET" && c.path == "/healthz"),
        "{calls:?}"
    );
}
