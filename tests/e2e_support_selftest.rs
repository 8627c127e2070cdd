//! Tests of the end-to-end support itself: that the fake Groq speaks Groq's API as
//! `groq-api.md` writes it down (statuses, error types and codes, headers, SSE framing, and each
//! way a stream or a connection misbehaves, as the end-to-end suites rely on), and that the
//! `wrangler dev` runner survives the port race `free_port` leaves open and stops what it started.
//!
//! Run: `cargo test --test e2e_support_selftest` (the last test starts the Worker: it needs what
//! `tests/e2e.rs` needs).

mod e2e_support;

use e2e_support::fake_groq::{FakeGroq, LONG_PIECES, ORG_ID, RESET_TOKENS, RETRY_AFTER_SECS};
use e2e_support::http::{self, sse_events, StreamBody, StreamEnd};
use e2e_support::worker::Worker;
use serde_json::{json, Value};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "gsk_test_key";
const CHAT: &str = "/openai/v1/chat/completions";

fn body(model: &str, stream: bool) -> Vec<u8> {
    let body = json!({"model": model, "stream": stream, "stream_options": {"include_usage": stream},
                      "messages": [{"role": "user", "content": "hi"}]});
    body.to_string().into_bytes()
}

fn try_chat(
    fake: &FakeGroq,
    model: &str,
    stream: bool,
    wait: Duration,
) -> std::io::Result<http::StreamResponse> {
    let bearer = format!("Bearer {KEY}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    http::try_stream(
        fake.port(),
        "POST",
        CHAT,
        &headers,
        &body(model, stream),
        wait,
    )
}

fn chat(fake: &FakeGroq, model: &str) -> http::Response {
    let response = try_chat(fake, model, false, Duration::from_secs(5)).expect("an answer");
    let (status, headers) = (response.status, response.headers.clone());
    http::Response {
        status,
        headers,
        body: response.finish().bytes(),
    }
}

fn stream(fake: &FakeGroq, model: &str) -> (StreamBody, Duration) {
    let response = try_chat(fake, model, true, Duration::from_secs(5)).expect("a stream head");
    assert_eq!(response.status, 200, "{model}");
    assert_eq!(
        response.header("content-type"),
        Some("text/event-stream"),
        "{model}"
    );
    // Chunked, so that a stream cut short shows as such.
    assert_eq!(
        response.header("transfer-encoding"),
        Some("chunked"),
        "{model}"
    );
    let sent_at = response.sent_at;
    (response.finish(), sent_at.elapsed())
}

/// The headers Groq puts on every answer, errors included.
fn assert_groq_headers(response: &http::Response, rate_limited: bool) {
    for name in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
    ] {
        let value = response
            .header(name)
            .unwrap_or_else(|| panic!("missing {name}"));
        assert!(value.parse::<u64>().is_ok(), "{name}: {value:?}");
    }
    let remaining = response.header("x-ratelimit-remaining-tokens");
    assert_eq!(remaining == Some("0"), rate_limited, "{remaining:?}");
    assert_eq!(
        response.header("x-ratelimit-reset-requests"),
        Some("2m59.56s")
    );
    assert_eq!(
        response.header("x-ratelimit-reset-tokens"),
        Some(RESET_TOKENS)
    );
    let id = response.header("x-request-id").expect("x-request-id");
    assert!(id.starts_with("req_"), "{id}");
    let retry_after = RETRY_AFTER_SECS.to_string();
    assert_eq!(
        response.header("retry-after"),
        rate_limited.then_some(retry_after.as_str())
    );
}

#[test]
fn each_behaviour_answers_groqs_status_error_and_headers() {
    let fake = FakeGroq::start(KEY);
    let ok = chat(&fake, "ok-a");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.header("content-length"),
        Some(ok.body.len().to_string().as_str())
    );
    assert_groq_headers(&ok, false);
    let body = ok.json();
    assert_eq!(
        (&body["object"], &body["model"]),
        (&json!("chat.completion"), &json!("ok-a"))
    );
    assert!(
        body["id"].as_str().unwrap().starts_with("chatcmpl-")
            && body["created"].as_u64().unwrap() > 1_700_000_000
    );
    let choice = &body["choices"][0];
    assert_eq!(
        choice,
        &json!({"index": 0, "message": {"role": "assistant", "content": "hello from ok-a"},
                               "logprobs": null, "finish_reason": "stop"})
    );
    let usage = (
        &body["usage"]["prompt_tokens"],
        &body["usage"]["completion_tokens"],
        &body["usage"]["total_tokens"],
    );
    assert_eq!(usage, (&json!(55), &json!(12), &json!(67)));
    for timing in ["queue_time", "prompt_time", "completion_time", "total_time"] {
        assert!(body["usage"][timing].is_f64(), "usage.{timing}");
    }
    assert_eq!(body["x_groq"]["id"], ok.header("x-request-id").unwrap());
    assert!(
        body["system_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("fp_")
            && body["service_tier"] == "on_demand"
    );

    // (model, status, type, code, the message's start)
    let table: &[(&str, u16, &str, Option<&str>, &str)] = &[
        (
            "gone-a",
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "The model `gone-a` does not exist or you do not have access to it.",
        ),
        (
            "unknown-a",
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "The model `unknown-a` does not",
        ),
        (
            "ratelimited-a",
            429,
            "tokens",
            Some("rate_limit_exceeded"),
            "Rate limit reached for model `ratelimited-a` in organization `org_",
        ),
        (
            "capacity-a",
            498,
            "capacity_exceeded",
            Some("capacity_exceeded"),
            "Request could not be served: flex tier capacity exceeded",
        ),
        (
            "error500-a",
            500,
            "internal_server_error",
            None,
            "Internal Server Error",
        ),
        (
            "badkey-a",
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Invalid API Key",
        ),
    ];
    for &(model, status, kind, code, message) in table {
        let response = chat(&fake, model);
        assert_eq!(response.status, status, "{model}: {}", response.text());
        assert_groq_headers(&response, status == 429);
        let error = &response.json()["error"];
        assert_eq!(
            (&error["type"], error["code"].as_str()),
            (&json!(kind), code),
            "{model}"
        );
        assert!(
            error["message"].as_str().unwrap().starts_with(message),
            "{model}: {error}"
        );
    }
    let message = chat(&fake, "ratelimited-a").json()["error"]["message"].to_string();
    assert!(
        message.contains(ORG_ID) && message.contains("Please try again in 7.66s."),
        "{message}"
    );
    // A `tpm-` model refuses a request above its tokens-per-minute limit (a token per 4 bytes).
    let big =
        json!({"model": "tpm-a", "messages": [{"role": "user", "content": "x".repeat(30_000)}]});
    let too_large = http::post_json(fake.port(), CHAT, Some(KEY), &big);
    let error = &too_large.json()["error"];
    assert_eq!(
        (too_large.status, &error["type"], &error["code"]),
        (413, &json!("tokens"), &json!("rate_limit_exceeded"))
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Request too large for model `tpm-a` in organization `org_"));
    assert_eq!(chat(&fake, "tpm-a").status, 200);

    let html = chat(&fake, "html502-a");
    assert_eq!(
        (html.status, html.header("content-type")),
        (502, Some("text/html"))
    );
    assert!(html.text().contains("<title>502 Bad Gateway</title>"));
    let not_completion = chat(&fake, "notcompletion-a");
    assert_eq!(
        not_completion.json(),
        json!({"status": "ok", "object": "list", "data": []})
    );

    // A wrong key is refused before any model; every request is recorded.
    let wrong = http::post_json(
        fake.port(),
        CHAT,
        Some("gsk_wrong"),
        &json!({"model": "ok-b"}),
    );
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let calls = fake.calls();
    let last = calls.last().unwrap();
    assert_eq!(
        (last.model.as_deref(), last.authorized, last.path.as_str()),
        (Some("ok-b"), false, CHAT)
    );
    assert!(calls[..calls.len() - 1].iter().all(|call| call.authorized));

    // `GET /openai/v1/models`: the ids set, or the error set.
    fake.set_models(vec!["openai/gpt-oss-20b".into(), "ok-a".into()]);
    let models = http::get(fake.port(), "/openai/v1/models", Some(KEY));
    assert_groq_headers(&models, false);
    let first = json!({"id": "openai/gpt-oss-20b", "object": "model", "created": 1_754_408_224, "owned_by": "Fake",
                       "active": true, "context_window": 131_072, "max_completion_tokens": 65_536});
    assert_eq!(models.json()["data"][0], first);
    assert_eq!(models.json()["data"][1]["id"], "ok-a");
    fake.set_models_status(401);
    assert_eq!(
        http::get(fake.port(), "/openai/v1/models", Some(KEY)).json()["error"]["code"],
        "invalid_api_key"
    );
}

#[test]
fn a_whole_stream_is_framed_as_groqs_sse() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::from_millis(30));
    let response = try_chat(&fake, "ok-s", true, Duration::from_secs(5)).unwrap();
    let request_id = response.header("x-request-id").unwrap().to_owned();
    let body = response.finish();
    assert_eq!(body.end, StreamEnd::Complete);
    let span = body.pieces.last().unwrap().at - body.pieces[0].at;
    assert!(
        span >= Duration::from_millis(120),
        "events arrived within {span:?}"
    );
    // Role chunk, three content chunks, the final chunk, the usage chunk (`include_usage`), `[DONE]`.
    let events = sse_events(&body.bytes());
    assert!(events.iter().all(|event| event.event.is_none()));
    assert_eq!(events.len(), 7, "{events:#?}");
    assert_eq!(events[6].data, "[DONE]");
    let chunks: Vec<Value> = events[..6].iter().map(|e| e.json().unwrap()).collect();
    for chunk in &chunks {
        assert_eq!(
            (&chunk["object"], &chunk["model"], &chunk["id"]),
            (
                &json!("chat.completion.chunk"),
                &json!("ok-s"),
                &chunks[0]["id"]
            )
        );
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
    assert_eq!(
        (
            &chunks[4]["choices"][0]["delta"],
            &chunks[4]["choices"][0]["finish_reason"]
        ),
        (&json!({}), &json!("stop"))
    );
    assert_eq!(chunks[4]["x_groq"]["usage"]["total_tokens"], 67);
    assert_eq!(
        (
            &chunks[5]["choices"],
            &chunks[5]["usage"]["completion_tokens"]
        ),
        (&json!([]), &json!(12))
    );
}

/// Each way a stream misbehaves, as the end-to-end suites rely on it.
#[test]
fn streams_break_drop_stall_and_err_as_scripted() {
    let fake = FakeGroq::start(KEY);
    fake.set_chunk_delay(Duration::from_millis(5));
    fake.set_hang_for(Duration::from_millis(300));
    let contents = |body: &StreamBody| -> Vec<String> {
        let chunks = sse_events(&body.bytes())
            .into_iter()
            .filter_map(|e| e.json());
        chunks
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    };
    // (model, how the body ends, events, content, whether it took `hang_for`)
    for (model, end, events, content, waits) in [
        (
            "streamdrop-a",
            StreamEnd::Truncated,
            2,
            vec!["", "hello"],
            false,
        ),
        (
            "streamnodone-a",
            StreamEnd::Complete,
            2,
            vec!["", "hello"],
            false,
        ),
        (
            "streamerror-a",
            StreamEnd::Complete,
            3,
            vec!["", "hello"],
            false,
        ),
        (
            "streamstall-a",
            StreamEnd::Truncated,
            2,
            vec!["", "hello"],
            true,
        ),
        (
            "streamslow-a",
            StreamEnd::Complete,
            7,
            vec!["", "hello", " from ", "streamslow-a"],
            true,
        ),
    ] {
        let (body, took) = stream(&fake, model);
        assert_eq!(body.end, end, "{model}: {}", body.text());
        assert_eq!(
            sse_events(&body.bytes()).len(),
            events,
            "{model}: {}",
            body.text()
        );
        assert_eq!(contents(&body), content, "{model}");
        let hang = Duration::from_millis(300);
        assert_eq!(took >= hang, waits, "{model} took {took:?}");
        assert!(took < Duration::from_secs(2), "{model} took {took:?}");
    }
    let (body, _) = stream(&fake, "streamerror-a");
    let last = sse_events(&body.bytes()).pop().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let error = &last.json().unwrap()["error"];
    assert_eq!(
        (&error["code"], &error["status_code"]),
        (&json!("tool_use_failed"), &json!(400))
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Tool call validation failed"));
    let (body, _) = stream(&fake, "streamlong-a");
    assert_eq!(contents(&body)[1..], vec!["tick ".to_string(); LONG_PIECES]);
    assert_eq!(sse_events(&body.bytes()).last().unwrap().data, "[DONE]");

    // `hang` never answers; `drop` closes without a byte; `bodyhang` sends its head and half a
    // body, then closes after `hang_for`.
    let hang = try_chat(&fake, "hang-a", false, Duration::from_millis(200))
        .err()
        .expect("no answer");
    assert!(
        matches!(hang.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{hang:?}"
    );
    let dropped = try_chat(&fake, "drop-a", false, Duration::from_secs(2))
        .err()
        .expect("no answer");
    assert!(
        matches!(
            dropped.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
        ),
        "{dropped:?}"
    );
    let started = Instant::now();
    let half = try_chat(&fake, "bodyhang-a", false, Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "the head comes at once"
    );
    let announced: usize = half.header("content-length").unwrap().parse().unwrap();
    let body = half.finish();
    assert_eq!(
        (&body.end, body.bytes().len()),
        (&StreamEnd::Truncated, announced - announced / 2)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_worker_started_on_a_port_another_server_holds_moves_to_another_and_drop_stops_it() {
    // The race `free_port` leaves open, made certain: the fake Groq holds the port wrangler is
    // told to use. It answers `/healthz` too (404), which must not pass for the router's answer.
    let fake = FakeGroq::start(KEY);
    // The URL's `:`s and the empty `FORCE_MODEL` baseline survive `--var KEY:VALUE`: a mangled
    // value would make the configuration invalid and `/healthz` answer 503.
    let base = fake.base_url();
    let vars = [
        ("GROQ_BASE_URL", base.as_str()),
        ("GROQ_API_KEY", KEY),
        ("ROUTER_API_KEYS", "selftest:ck"),
    ];
    let worker = Worker::start_trying_port(fake.port(), &vars);
    let (port, pid) = (worker.port(), worker.pid());
    assert_ne!(port, fake.port());
    let health = http::get(port, "/healthz", None);
    assert_eq!(health.status, 200, "{}\n{}", health.text(), worker.logs());
    let calls = fake.calls();
    assert!(
        !calls.is_empty()
            && calls
                .iter()
                .all(|c| c.method == "GET" && c.path == "/healthz"),
        "{calls:?}"
    );

    drop(worker);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
        "port {port} still open"
    );
    let kill = std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        !kill.unwrap().success(),
        "process group {pid} survived the drop"
    );
}
