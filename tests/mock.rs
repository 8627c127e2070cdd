//! Native tests of mock answers (issue 15): `mock_response` and `mock_failures` run through the
//! real chain, checks and answer shaping with the mock provider instead of Groq, and touch no
//! shared state. Run: `cargo test --test mock`.

mod support;

use serde_json::{json, Value};
use support::attempts::{outcomes, pairs};
use support::fixtures::{request, send};
use support::scripted::*;
use task_router::http::limit::Unlimited;
use task_router::routing::health::{HealthBook, HealthReport};

const REGISTRY: &str = r#"{"fast":["m1","m2"],"fallback":["f1"]}"#;

fn bindings(allow: &'static str) -> Vec<(&'static str, &'static str)> {
    let prices = r#"{"m1":{"input":1,"output":2},"m2":{"input":1,"output":2}}"#;
    let keys = [
        ("GROQ_API_KEY", "gsk_mock_test"),
        ("ROUTER_API_KEYS", "web:k"),
    ];
    let mut pairs = vec![("MODEL_REGISTRY", REGISTRY), keys[0], keys[1]];
    pairs.extend([("ALLOW_MOCK", allow), ("MODEL_PRICES", prices)]);
    pairs
}

/// A mock request on `path` with `extra` fields; the scripted provider answers nothing, so a
/// call to it (the real Groq) fails the test.
fn ask(pairs: &[(&'static str, &str)], path: &str, extra: Value) -> (Exchange, HealthBook) {
    let mut body = json!({"messages": [{"role": "user", "content": "Say hi to the tests"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let body = body.to_string();
    let health = Default::default();
    let provider = ScriptedProvider::new();
    let route = format!("POST {path}");
    let req = request(&route, Some("Bearer k"), &body);
    let ex = exchange(&load(pairs), &provider, &Unlimited, &health, req);
    // No mock request reaches Groq.
    assert!(provider.calls.borrow().is_empty());
    (ex, health.into_inner())
}

/// A mock request to the task `fast` with `ALLOW_MOCK` on.
fn mock(extra: Value) -> (Exchange, HealthBook) {
    ask(&bindings("true"), "/v1/tasks/fast", extra)
}

#[test]
fn a_mock_answer_is_shaped_like_groqs_through_the_real_chain() {
    let (ex, _) = mock(json!({"mock_response": "Hi tests"}));
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    assert_eq!(ex.response.header("x-model-used"), Some("m1"));
    assert_eq!(ex.response.header("x-attempts"), Some("m1=ok(200)"));
    let body = ex.json();
    let expected = (&json!("Hi tests"), &json!("stop"));
    assert_eq!((&body["content"], &body["finish_reason"]), expected);
    // Tokens: bytes ÷ 4, rounded up — the `messages` sent, and the answer's text.
    let messages = r#"[{"content":"Say hi to the tests","role":"user"}]"#.len() as u64;
    let (prompt, completion) = (messages.div_ceil(4), 2);
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    assert_eq!(body["usage"]["completion_tokens"], completion);
    assert_eq!(body["usage"]["total_tokens"], prompt + completion);
    let expected = (prompt as f64 + 2.0 * completion as f64) / 1e6;
    assert_eq!(body["usage"]["cost_usd"], expected);
    let line = &ex.log.last().unwrap().1;
    let expected = (&json!(true), &json!("m1"));
    assert_eq!((&line["mock"], &line["model"]), expected);
    assert!(ex.usage.is_empty(), "no Analytics Engine point for a mock");

    // The SDK route passes the completion through as Groq's would be.
    let sdk = json!({"model": "fast", "mock_response": "Hi"});
    let (ex, _) = ask(&bindings("true"), "/v1/chat/completions", sdk);
    let body = ex.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m1");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi");
}

/// Every outcome `mock_failures` names goes through the real fallback loop as the real failure
/// would: the next model answers, or the chain ends as it would.
#[test]
fn each_mock_failure_is_classified_like_the_real_one() {
    // Each failure, whose outcome has its name, and the status Groq would send with it.
    let failures = "model_gone rate_limited request_too_large upstream_error timeout cannot_serve";
    let statuses = [Some(404), Some(429), Some(413), Some(500), None, Some(400)];
    for (failure, status) in failures.split(' ').zip(statuses) {
        let outcome = failure;
        let (ex, _) = mock(json!({"mock_failures": [failure]}));
        assert_eq!(ex.response.status, 200, "{failure}: {}", ex.text);
        let body = ex.json();
        let wanted = pairs(&[("m1", outcome), ("m2", "ok")]);
        assert_eq!(outcomes(&body), wanted, "{failure}");
        assert_eq!(body["attempts"][0]["status"], json!(status), "{failure}");
        assert_eq!(body["content"], "This is a mock answer.");
        let attempt = ex.log.iter().find(|(_, l)| l["event"] == "attempt");
        assert_eq!(attempt.expect("an attempt line").1["mock"], true);
    }
    // Stop at once, as Groq's refusals do.
    for (failure, status) in [("invalid_request", 400), ("provider_auth_failed", 502)] {
        let (ex, _) = mock(json!({"mock_failures": [failure]}));
        let refused = (ex.response.status, ex.json()["error"]["code"].clone());
        assert_eq!(refused, (status, json!(failure)));
    }
}

#[test]
fn as_many_failures_as_models_give_the_real_exhausted_answers() {
    let (ex, health) = mock(json!({"mock_failures": ["model_gone", "upstream_error", "timeout"]}));
    assert_eq!(ex.response.status, 502, "{}", ex.text);
    let error = &ex.json()["error"];
    assert_eq!(error["code"], "all_models_failed");
    let want = [
        ("m1", "model_gone"),
        ("m2", "upstream_error"),
        ("f1", "timeout"),
    ];
    let expected = want.map(|(m, o)| (m.to_string(), o.to_string()));
    assert_eq!(outcomes(error), expected);
    // The shared health book learned nothing: m1 is not gone for real requests.
    assert_eq!(health.report("m1", 0), HealthReport::Healthy);

    let (ex, _) = mock(json!({"mock_failures": ["rate_limited", "rate_limited", "rate_limited"]}));
    assert_eq!(ex.response.status, 429);
    assert_eq!(ex.response.header("retry-after"), Some("2"));
}

#[test]
fn a_mock_stream_is_groqs_sse_and_stream_break_breaks_it() {
    let (ex, _) = mock(json!({"stream": true, "mock_response": "Hello from the mock"}));
    assert!(ex.streamed);
    let events: Vec<&str> = ex.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from the mock");
    // A role chunk, content chunks, a final chunk.
    assert!(chunks.len() >= 5, "{chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["x_groq"]["usage"]["total_tokens"].is_u64());
    assert_eq!(ex.log.last().unwrap().1["completion_tokens"], 5);

    let (ex, health) = mock(json!({"stream": true, "mock_failures": ["stream_break"]}));
    assert!(ex.streamed);
    assert!(!ex.text.contains("[DONE]"), "{}", ex.text);
    let events: Vec<&str> = ex.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    // A role chunk, the first content chunk, the error event.
    assert_eq!(events.len(), 3, "{}", ex.text);
    let error: Value = serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted");
    // No health learned from a mock.
    assert_eq!(health.report("m1", 0), HealthReport::Healthy);
}

#[test]
fn without_allow_mock_the_fields_are_refused_and_bad_fields_are_named() {
    let fields = [
        ("mock_response", json!("hi")),
        ("mock_failures", json!(["model_gone"])),
    ];
    for (field, value) in fields {
        let (ex, _) = ask(
            &bindings("false"),
            "/v1/tasks/fast",
            json!({ field: value }),
        );
        assert_eq!(ex.response.status, 400, "{}", ex.text);
        let error = &ex.json()["error"];
        let expected = (&json!("mock_not_allowed"), &json!(field));
        assert_eq!((&error["code"], &error["param"]), expected);
        assert!(error["message"].as_str().unwrap().contains("ALLOW_MOCK"));
    }
    for extra in [
        json!({"mock_response": 7}),
        json!({"mock_failures": "model_gone"}),
        json!({"mock_failures": ["gone"]}),
        json!({"mock_failures": ["stream_break"]}),
    ] {
        let param = extra
            .as_object()
            .and_then(|o| o.keys().next())
            .unwrap()
            .clone();
        let (ex, _) = mock(extra.clone());
        assert_eq!(ex.response.status, 400, "{extra}");
        assert_eq!(ex.json()["error"]["param"], param, "{extra}");
    }
}

#[test]
fn null_mock_fields_never_reach_groq() {
    for allow in ["false", "true"] {
        let provider = ScriptedProvider::new().on("m1", completion("m1"), 0);
        let body = json!({"messages": [{"role": "user", "content": "hi"}],
                          "mock_response": null, "mock_failures": null});
        let body = body.to_string();
        let req = request("POST /v1/tasks/fast", Some("Bearer k"), &body);
        let ex = send(&bindings(allow), &provider, req);
        assert_eq!(ex.response.status, 200, "{}", ex.text);
        let sent = &provider.calls.borrow()[0].body;
        assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
        let mock = sent.get("mock_response").or(sent.get("mock_failures"));
        assert!(mock.is_none(), "ALLOW_MOCK={allow}: {sent}");
    }
}

#[test]
fn without_a_provider_key_only_mocks_are_answered() {
    let no_key: Vec<_> = bindings("true")
        .into_iter()
        .filter(|(k, _)| *k != "GROQ_API_KEY")
        .collect();
    let (ex, _) = ask(&no_key, "/v1/tasks/fast", json!({"mock_response": "hi"}));
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    let (ex, _) = ask(&no_key, "/v1/tasks/fast", json!({}));
    let refused = (ex.response.status, ex.json()["error"]["code"].clone());
    assert_eq!(refused, (500, json!("provider_key_missing")));
    let healthz = request("GET /healthz", None, "");
    let health = send(&no_key, &ScriptedProvider::new(), healthz);
    assert_eq!(health.response.status, 200);
    let warning = &health.json()["warnings"][0];
    let expected = (&json!("GROQ_API_KEY"), &json!("mock_only"));
    assert_eq!((&warning["binding"], &warning["code"]), expected);
}
