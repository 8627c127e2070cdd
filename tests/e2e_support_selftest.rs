//! Tests of the end-to-end support itself: that the fake Groq speaks Groq's API as
//! `groq-api.md` writes it down (statuses, error types and codes, headers, SSE framing, and each
//! way a stream or a connection misbehaves, as the end-to-end suites rely on), and that the
//! `wrangler dev` runner survives the port race `free_port` leaves open and stops what it started.
//!
//! Run: `cargo test --test e2e_support_selftest` (the last test starts the Worker: it needs what
//! `tests/e2e.rs` needs).

mod e2e_support;

use e2e_support::fake_groq::{FakeGroq, LONG_PIECES, ORG_ID};
use e2e_support::fixtures::{assert_has, assert_headers};
use e2e_support::http::{self, sse_events, StreamBody, StreamEnd};
use e2e_support::worker::Worker;
use serde_json::{json, Value};
use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "gsk_test_key";
const CHAT: &str = "/openai/v1/chat/completions";

/// A chat request for `model`, streamed or not; the head, or the I/O error.
fn send(
    fake: &FakeGroq,
    model: &str,
    stream: bool,
    wait: Duration,
) -> io::Result<http::StreamResponse> {
    let body = json!({"model": model, "stream": stream, "stream_options": {"include_usage": stream},
                      "messages": [{"role": "user", "content": "hi"}]});
    let bearer = format!("Bearer {KEY}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", &bearer),
    ];
    let (port, body) = (fake.port(), body.to_string());
    http::try_stream(port, "POST", CHAT, &headers, body.as_bytes(), wait)
}

fn chat(fake: &FakeGroq, model: &str) -> http::Response {
    let head = send(fake, model, false, Duration::from_secs(5)).expect("an answer");
    let (status, headers) = (head.status, head.headers.clone());
    let body = head.finish().bytes();
    http::Response {
        status,
        headers,
        body,
    }
}

/// A stream of `model`: chunked (so that a stream cut short shows as such), and how long it took.
fn stream(fake: &FakeGroq, model: &str) -> (StreamBody, Duration) {
    let head = send(fake, model, true, Duration::from_secs(5)).expect("a stream head");
    let want = json!({"content-type": "text/event-stream", "transfer-encoding": "chunked"});
    assert_headers(&head.headers, want);
    let sent_at = head.sent_at;
    (head.finish(), sent_at.elapsed())
}

/// The headers Groq puts on every answer, errors included.
fn assert_groq_headers(headers: &[(String, String)], rate_limited: bool) {
    let numbers = ["limit-requests", "limit-tokens", "remaining-requests"];
    for name in numbers.map(|name| format!("x-ratelimit-{name}")) {
        let value = headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        assert!(value.is_some_and(|v| v.parse::<u64>().is_ok()), "{name}");
    }
    let (remaining, retry_after) = [("5933", None), ("0", Some("8"))][usize::from(rate_limited)];
    let want = json!({"x-ratelimit-remaining-tokens": remaining, "retry-after": retry_after,
        "x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-reset-tokens": "7.66s"});
    assert_headers(headers, want);
    let id = headers.iter().find(|(name, _)| name == "x-request-id");
    let id = id.is_some_and(|(_, id)| id.starts_with("req_"));
    assert!(id, "{headers:?}");
}

#[test]
fn each_behaviour_answers_groqs_status_error_and_headers() {
    let fake = FakeGroq::start(KEY);
    let ok = chat(&fake, "ok-a");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let expected = Some(&*ok.body.len().to_string());
    assert_eq!(ok.header("content-length"), expected);
    assert_groq_headers(&ok.headers, false);
    let body = ok.json();
    let usage = json!({"prompt_tokens": 55, "completion_tokens": 12, "total_tokens": 67});
    let want = json!({"object": "chat.completion", "model": "ok-a", "service_tier": "on_demand",
        "x_groq": {"id": ok.header("x-request-id")},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from ok-a"},
                     "logprobs": null, "finish_reason": "stop"}]});
    assert_has(&body, want);
    assert_has(&body["usage"], usage);
    for timing in ["queue_time", "prompt_time", "completion_time", "total_time"] {
        assert!(body["usage"][timing].is_f64(), "usage.{timing}");
    }
    let id = (&body["id"], &body["system_fingerprint"], &body["created"]);
    assert!(id.0.to_string().starts_with("\"chatcmpl-"), "{body}");
    assert!(id.1.to_string().starts_with("\"fp_") && id.2.as_u64() > Some(1_700_000_000));

    // model → status, type, code, the message's start
    let table = json!({
        "gone-a": [404, "invalid_request_error", "model_not_found",
                   "The model `gone-a` does not exist or you do not have access to it."],
        "unknown-a": [404, "invalid_request_error", "model_not_found", "The model `unknown-a`"],
        "ratelimited-a": [429, "tokens", "rate_limit_exceeded",
                          "Rate limit reached for model `ratelimited-a` in organization `org_"],
        "capacity-a": [498, "capacity_exceeded", "capacity_exceeded",
                       "Request could not be served: flex tier capacity exceeded"],
        "error500-a": [500, "internal_server_error", null, "Internal Server Error"],
        "badkey-a": [401, "invalid_request_error", "invalid_api_key", "Invalid API Key"],
    });
    for (model, want) in table.as_object().unwrap() {
        let response = chat(&fake, model);
        assert_eq!(response.status, want[0], "{model}: {}", response.text());
        assert_groq_headers(&response.headers, response.status == 429);
        let error = &response.json()["error"];
        assert_has(error, json!({"type": want[1], "code": want[2]}));
        let message = error["message"].as_str().unwrap_or_default();
        let says = message.starts_with(want[3].as_str().unwrap());
        assert!(says, "{model}: {error}");
    }
    let message = chat(&fake, "ratelimited-a").json()["error"]["message"].to_string();
    assert!(message.contains(ORG_ID) && message.contains("Please try again in 7.66s."));
    // A `tpm-` model refuses a request above its tokens-per-minute limit (a token per 4 bytes).
    let big = json!([{"role": "user", "content": "x".repeat(30_000)}]);
    let big = json!({"model": "tpm-a", "messages": big});
    let too_large = http::post_json(fake.port(), CHAT, Some(KEY), &big);
    assert_eq!(too_large.status, 413);
    let error = &too_large.json()["error"];
    let wanted = json!({"type": "tokens", "code": "rate_limit_exceeded"});
    assert_has(error, wanted);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Request too large for model `tpm-a` in organization `org_"));
    assert_eq!(chat(&fake, "tpm-a").status, 200);

    let html = chat(&fake, "html502-a");
    let expected = (502, Some("text/html"));
    assert_eq!((html.status, html.header("content-type")), expected);
    assert!(html.text().contains("<title>502 Bad Gateway</title>"));
    let not_completion = chat(&fake, "notcompletion-a").json();
    let expected = json!({"status": "ok", "object": "list", "data": []});
    assert_eq!(not_completion, expected);

    // A wrong key is refused before any model; every request is recorded.
    let ok_b = json!({"model": "ok-b"});
    let wrong = http::post_json(fake.port(), CHAT, Some("gsk_wrong"), &ok_b);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let calls = fake.calls();
    let (last, earlier) = calls.split_last().unwrap();
    let last = (last.model.as_deref(), last.authorized, last.path.as_str());
    assert_eq!(last, (Some("ok-b"), false, CHAT));
    assert!(earlier.iter().all(|call| call.authorized));

    // `GET /openai/v1/models`: the ids set, or the error set.
    fake.set_models(vec!["openai/gpt-oss-20b".into(), "ok-a".into()]);
    let models = || http::get(fake.port(), "/openai/v1/models", Some(KEY));
    let listed = models();
    assert_groq_headers(&listed.headers, false);
    let listed = listed.json()["data"].clone();
    let first = json!({"id": "openai/gpt-oss-20b", "object": "model", "created": 1_754_408_224,
        "owned_by": "Fake", "active": true, "context_window": 131_072,
        "max_completion_tokens": 65_536});
    assert_eq!((&listed[0], &listed[1]["id"]), (&first, &json!("ok-a")));
    fake.set_models_status(401);
    assert_eq!(models().json()["error"]["code"], "invalid_api_key");
}

#[test]
fn a_whole_stream_is_framed_as_groqs_sse() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::from_millis(30));
    let head = send(&fake, "ok-s", true, Duration::from_secs(5)).unwrap();
    let request_id = json!(head.header("x-request-id").unwrap());
    let body = head.finish();
    assert_eq!(body.end, StreamEnd::Complete);
    let span = body.pieces.last().unwrap().at - body.pieces[0].at;
    assert!(span >= Duration::from_millis(120), "all within {span:?}");
    // Role chunk, three content chunks, the final chunk, the usage chunk (`include_usage`).
    let events = sse_events(&body.bytes());
    assert!(events.iter().all(|event| event.event.is_none()));
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!((data.len(), data[6]), (7, "[DONE]"), "{data:#?}");
    let chunks: Vec<Value> = events[..6].iter().map(|e| e.json().unwrap()).collect();
    let (id, fingerprint) = (&chunks[0]["id"], "fp_fakegroq01");
    for chunk in &chunks {
        let want = json!({"object": "chat.completion.chunk", "model": "ok-s", "id": id,
                          "system_fingerprint": fingerprint});
        assert_has(chunk, want);
        assert!(chunk["created"].is_u64());
    }
    assert!(id.to_string().starts_with("\"chatcmpl-"));
    let delta = |i: usize| chunks[i]["choices"][0]["delta"].clone();
    assert_eq!(delta(0), json!({"role": "assistant", "content": ""}));
    assert_eq!(chunks[0]["x_groq"]["id"], request_id);
    let text: Vec<Value> = (1..4).map(|i| delta(i)["content"].clone()).collect();
    assert_eq!(text, [json!("hello"), json!(" from "), json!("ok-s")]);
    let last = &chunks[4]["choices"][0];
    let expected = (&json!({}), &json!("stop"));
    assert_eq!((&delta(4), &last["finish_reason"]), expected);
    assert_eq!(chunks[4]["x_groq"]["usage"]["total_tokens"], 67);
    let usage = [
        &chunks[5]["choices"],
        &chunks[5]["usage"]["completion_tokens"],
    ];
    assert_eq!(usage, [&json!([]), &json!(12)]);
}

/// Each way a stream, or a connection, misbehaves, as the end-to-end suites rely on it.
#[test]
fn streams_and_connections_break_drop_stall_and_err_as_scripted() {
    let fake = FakeGroq::start(KEY);
    let hang_for = Duration::from_millis(300);
    fake.set_chunk_delay(Duration::from_millis(5));
    fake.set_hang_for(hang_for);
    // The `delta.content`s of every chunk, `|`-joined.
    let contents = |body: &StreamBody| -> String {
        let chunks = sse_events(&body.bytes())
            .into_iter()
            .filter_map(|e| e.json());
        let content = chunks.map(|c| c["choices"][0]["delta"]["content"].clone());
        let content: Vec<String> = content
            .filter_map(|c| c.as_str().map(String::from))
            .collect();
        content.join("|")
    };
    // model → whether the body is cut short, its events, their content, whether it took
    // `hang_for`
    for (model, cut, events, content, waits) in [
        ("streamdrop-a", true, 2, "|hello", false),
        ("streamnodone-a", false, 2, "|hello", false),
        ("streamerror-a", false, 3, "|hello", false),
        ("streamstall-a", true, 2, "|hello", true),
        ("streamslow-a", false, 7, "|hello| from |streamslow-a", true),
    ] {
        let (body, took) = stream(&fake, model);
        let end = [StreamEnd::Complete, StreamEnd::Truncated][usize::from(cut)].clone();
        let ended = (body.end.clone(), sse_events(&body.bytes()).len());
        assert_eq!(ended, (end, events), "{model}: {}", body.text());
        assert_eq!(contents(&body), content, "{model}");
        let slow = (took >= hang_for, took < Duration::from_secs(2));
        assert_eq!(slow, (waits, true), "{model} took {took:?}");
    }
    let (body, _) = stream(&fake, "streamerror-a");
    let last = sse_events(&body.bytes()).pop().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let error = &last.json().unwrap()["error"];
    let wanted = json!({"code": "tool_use_failed", "status_code": 400});
    assert_has(error, wanted);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Tool call validation failed"));
    let (body, _) = stream(&fake, "streamlong-a");
    let ticks = vec!["tick "; LONG_PIECES].join("|");
    assert_eq!(contents(&body), format!("|{ticks}"));
    assert_eq!(sse_events(&body.bytes()).last().unwrap().data, "[DONE]");

    // `hang` never answers; `drop` closes without a byte; `bodyhang` sends its head and half a
    // body, then closes after `hang_for`.
    let failed = |model, wait| {
        send(&fake, model, false, wait)
            .err()
            .expect("no answer")
            .kind()
    };
    let hang = failed("hang-a", Duration::from_millis(200));
    let timed_out = matches!(hang, ErrorKind::WouldBlock | ErrorKind::TimedOut);
    assert!(timed_out, "{hang:?}");
    let dropped = failed("drop-a", Duration::from_secs(2));
    let closed = [ErrorKind::UnexpectedEof, ErrorKind::ConnectionReset];
    assert!(closed.contains(&dropped), "{dropped:?}");
    let started = Instant::now();
    let half = send(&fake, "bodyhang-a", false, Duration::from_secs(5)).unwrap();
    // The head comes at once.
    assert!(started.elapsed() < Duration::from_millis(250));
    let announced: usize = half.header("content-length").unwrap().parse().unwrap();
    let body = half.finish();
    let got = (body.end.clone(), body.bytes().len());
    assert_eq!(got, (StreamEnd::Truncated, announced - announced / 2));
    assert!(started.elapsed() >= hang_for);
}

#[test]
fn a_worker_started_on_a_port_another_server_holds_moves_to_another_and_drop_stops_it() {
    // The race `free_port` leaves open, made certain: the fake Groq holds the port wrangler is
    // told to use. It answers `/healthz` too (404), which must not pass for the router's answer.
    let fake = FakeGroq::start(KEY);
    // The URL's `:`s and the empty `FORCE_MODEL` baseline survive `--var KEY:VALUE`: a mangled
    // value would make the configuration invalid and `/healthz` answer 503.
    let base = fake.base_url();
    let vars = [("GROQ_BASE_URL", base.as_str()), ("GROQ_API_KEY", KEY)];
    let vars = [vars[0], vars[1], ("ROUTER_API_KEYS", "selftest:ck")];
    let worker = Worker::start_trying_port(fake.port(), &vars);
    let (port, pid) = (worker.port(), worker.pid());
    assert_ne!(port, fake.port());
    let health = http::get(port, "/healthz", None);
    assert_eq!(health.status, 200, "{}\n{}", health.text(), worker.logs());
    let calls = fake.calls();
    let probed = calls
        .iter()
        .all(|c| c.method == "GET" && c.path == "/healthz");
    assert!(!calls.is_empty() && probed, "{calls:?}");

    drop(worker);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let open = TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok();
    assert!(!open, "port {port} still open");
    let mut alive = std::process::Command::new("kill");
    alive.args(["-0", "--", &format!("-{pid}")]);
    let alive = alive.stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!alive.success(), "process group {pid} survived the drop");
}
