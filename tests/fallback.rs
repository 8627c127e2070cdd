//! Native tests of the fallback loop and the HTTP API with a scripted fake provider: for each
//! scenario, the answer, the models called in order, and how many calls were made.
//! Run: `cargo test --test fallback`.

mod support;

use serde_json::{json, Value};
use support::attempts::{outcomes, pairs};
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::limit::Unlimited;
use task_router::http::{HttpRequest, HttpResponse};
use task_router::routing::log::Level;

const REGISTRY: &str = r#"{"fast":["m1","m2"],"reasoning":["m3"],"fallback":["f1","f2"]}"#;
const KEY: &str = "client-secret-1";

fn base_bindings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "gsk_provider_secret"),
        ("ROUTER_API_KEYS", "web:client-secret-1"),
        ("GROQ_BASE_URL", "http://127.0.0.1:1"),
        EVERY_LINE,
    ]
}

struct Run {
    response: HttpResponse,
    body: Value,
    /// `body` as sent.
    text: String,
    calls: Vec<String>,
    log: Vec<(Level, Value)>,
}

/// `GET /healthz` with `pairs` as bindings.
fn healthz(pairs: &[(&'static str, &str)]) -> Run {
    run_with(pairs, ScriptedProvider::new(), "GET", "/healthz", None, "")
}

fn run_with(
    pairs: &[(&'static str, &str)],
    provider: ScriptedProvider,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Run {
    let req = HttpRequest {
        authorization: auth,
        ..HttpRequest::new(method, path, body.as_bytes())
    };
    let ex = exchange(
        &load(pairs),
        &provider,
        &Unlimited,
        &Default::default(),
        req,
    );
    assert!(!ex.streamed, "a plain request got a stream");
    Run {
        body: ex.json(),
        text: ex.text,
        response: ex.response,
        calls: provider.models_called(),
        log: ex.log,
    }
}

fn ask(provider: ScriptedProvider, task: &str) -> Run {
    run_with(
        &base_bindings(),
        provider,
        "POST",
        &format!("/v1/tasks/{task}"),
        Some("Bearer client-secret-1"),
        r#"{"messages":[{"role":"user","content":"private-prompt-text"}],"max_tokens":10,"temperature":0.2,"seed":7}"#,
    )
}

/// `POST /v1/tasks/fast` with the client key and a one-message body, under `bindings`.
fn fast_with(bindings: &[(&'static str, &str)], provider: ScriptedProvider) -> Run {
    run_with(
        bindings,
        provider,
        "POST",
        "/v1/tasks/fast",
        Some("Bearer client-secret-1"),
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    )
}

#[test]
fn first_model_answers() {
    let r = ask(
        ScriptedProvider::new().on("m1", completion("m1"), 120),
        "fast",
    );
    assert_eq!(r.response.status, 200);
    assert_eq!(r.calls, vec!["m1"]);
    assert_eq!(r.body["content"], "hello from m1");
    assert_eq!(r.body["model_used"], "m1");
    assert_eq!(r.body["finish_reason"], "stop");
    assert_eq!(r.body["task"], "fast");
    assert_eq!(r.body["request_id"], "req_test");
    assert_eq!(r.body["usage"]["total_tokens"], 67);
    assert_eq!(
        r.body["attempts"],
        json!([{"model":"m1","outcome":"ok","status":200,"duration_ms":120}])
    );
    assert_eq!(r.response.header("x-model-used"), Some("m1"));
    assert_eq!(r.response.header("x-task-type"), Some("fast"));
    assert_eq!(r.response.header("x-attempts"), Some("m1=ok(200)"));
    assert_eq!(r.response.header("x-request-id"), Some("req_test"));
}

#[test]
fn the_body_sent_to_groq_is_the_callers_with_model_set() {
    let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
    let req = HttpRequest {
        authorization: Some("Bearer client-secret-1"),
        ..HttpRequest::new("POST", "/v1/tasks/fast", br#"{"messages":[{"role":"user","content":"h\u00e9 \"q\""}],"response_format":{"type":"json_object"},"x_extra":[1,2]}"#)
    };
    exchange(
        &load(&base_bindings()),
        &provider,
        &Unlimited,
        &Default::default(),
        req,
    );
    let calls = provider.calls.borrow();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].url,
        "http://127.0.0.1:1/openai/v1/chat/completions"
    );
    assert_eq!(calls[0].timeout_ms, 15_000);
    assert_eq!(
        calls[0].body,
        json!({"model":"m1","messages":[{"role":"user","content":"hé \"q\""}],
               "response_format":{"type":"json_object"},"x_extra":[1,2]})
    );
}

#[test]
fn falls_back_in_order_through_every_failure_class() {
    let provider = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 30)
        .on("m2", Script::Fail(TransportError::Timeout), 15_000)
        .on(
            "f1",
            reply(502, "<html><body>502 Bad Gateway</body></html>"),
            40,
        )
        .on("f2", completion("f2"), 50);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 200, "{}", r.body);
    assert_eq!(r.calls, vec!["m1", "m2", "f1", "f2"]);
    assert_eq!(r.body["model_used"], "f2");
    assert_eq!(
        outcomes(&r.body),
        pairs(&[
            ("m1", "model_gone"),
            ("m2", "timeout"),
            ("f1", "upstream_error"),
            ("f2", "ok")
        ])
    );
    assert_eq!(r.body["attempts"][0]["code"], "model_not_found");
    assert_eq!(r.body["attempts"][1]["status"], Value::Null);
    assert_eq!(r.body["attempts"][1]["duration_ms"], 15_000);
    assert_eq!(
        r.response.header("x-attempts"),
        Some("m1=model_gone(404), m2=timeout, f1=upstream_error(502), f2=ok(200)")
    );
    // The gone model is logged at warn level with a hint to fix the registry.
    let gone = r
        .log
        .iter()
        .find(|(_, l)| l["model"] == "m1")
        .expect("attempt line for m1");
    assert_eq!(gone.0, Level::Warn);
    assert!(gone.1["hint"].as_str().unwrap().contains("MODEL_REGISTRY"));
}

#[test]
fn every_fallback_class_moves_on() {
    let failing = [
        ("gone-404", gone_404("x")),
        (
            "decommissioned",
            groq_error(
                400,
                "invalid_request_error",
                Some("model_decommissioned"),
                "The model `x` has been decommissioned",
            ),
        ),
        ("429", rate_limited("3")),
        (
            "413",
            groq_error(
                413,
                "tokens",
                Some("rate_limit_exceeded"),
                "Request too large for model `x` in organization `org_1`",
            ),
        ),
        (
            "498",
            groq_error(
                498,
                "capacity_exceeded",
                Some("capacity_exceeded"),
                "flex tier capacity exceeded",
            ),
        ),
        (
            "500",
            groq_error(500, "internal_server_error", None, "Internal Server Error"),
        ),
        ("html 502", reply(502, "<html>502</html>")),
        ("503 empty", reply(503, "")),
        (
            "connection",
            Script::Fail(TransportError::Connection("reset".into())),
        ),
        ("timeout", Script::Fail(TransportError::Timeout)),
        (
            "200 not a completion",
            reply(200, r#"{"object":"list","data":[]}"#),
        ),
        ("200 html", reply(200, "<html>portal</html>")),
        (
            "context length",
            groq_error(
                400,
                "invalid_request_error",
                Some("context_length_exceeded"),
                "Please reduce the length of the messages or completion.",
            ),
        ),
        (
            "json validate",
            groq_error(
                400,
                "invalid_request_error",
                Some("json_validate_failed"),
                "Failed to generate JSON",
            ),
        ),
        (
            "tool use",
            groq_error(
                400,
                "invalid_request_error",
                Some("tool_use_failed"),
                "Failed to call a function",
            ),
        ),
    ];
    for (name, script) in failing {
        let r = ask(
            ScriptedProvider::new()
                .on("m1", script, 5)
                .on("m2", completion("m2"), 5),
            "fast",
        );
        assert_eq!(r.response.status, 200, "{name}: {}", r.body);
        assert_eq!(r.calls, vec!["m1", "m2"], "{name}");
        assert_eq!(r.body["model_used"], "m2", "{name}");
    }
}

#[test]
fn universal_fallback_after_the_task_list() {
    let provider =
        ScriptedProvider::new()
            .on("m3", reply(500, "{}"), 5)
            .on("f1", completion("f1"), 5);
    let r = ask(provider, "reasoning");
    assert_eq!(r.response.status, 200);
    assert_eq!(r.calls, vec!["m3", "f1"]);
    assert_eq!(r.body["model_used"], "f1");
}

#[test]
fn everything_failing_is_a_502_with_diagnostics() {
    let provider = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 10)
        .on(
            "m2",
            reply(
                500,
                r#"{"error":{"message":"Internal Server Error","type":"internal_server_error"}}"#,
            ),
            20,
        )
        .on(
            "f1",
            Script::Fail(TransportError::Connection("dropped".into())),
            30,
        )
        .on("f2", rate_limited("9"), 40);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 502);
    assert_eq!(r.calls, vec!["m1", "m2", "f1", "f2"]);
    assert_eq!(r.body["error"]["code"], "all_models_failed");
    assert_eq!(r.body["error"]["type"], "api_error");
    assert_eq!(
        r.body["error"]["attempts"],
        json!([
            {"model":"m1","outcome":"model_gone","status":404,"code":"model_not_found","duration_ms":10},
            {"model":"m2","outcome":"upstream_error","status":500,"duration_ms":20},
            // The runtime's own words for a failed call (issue 12: failures that teach).
            {"model":"f1","outcome":"connection_error","status":null,"error":"dropped","duration_ms":30},
            {"model":"f2","outcome":"rate_limited","status":429,"code":"rate_limit_exceeded","duration_ms":40},
        ])
    );
    let request_line = &r.log.last().unwrap().1;
    assert_eq!(request_line["event"], "request");
    assert_eq!(request_line["status"], 502);
    assert_eq!(request_line["attempts"], 4);
    assert_eq!(request_line["fallback_used"], true);
}

#[test]
fn all_rate_limited_is_a_429_with_the_earliest_retry_after() {
    let provider = ScriptedProvider::new()
        .on("m1", rate_limited("12"), 5)
        .on("m2", rate_limited("4"), 5)
        .on(
            "f1",
            groq_error(
                498,
                "capacity_exceeded",
                Some("capacity_exceeded"),
                "flex full",
            ),
            5,
        )
        .on("f2", gone_404("f2"), 5);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 429, "{}", r.body);
    assert_eq!(r.calls.len(), 4);
    assert_eq!(r.response.header("retry-after"), Some("4"));
    assert_eq!(r.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(r.body["error"]["attempts"].as_array().unwrap().len(), 4);
    assert!(!r.text.contains("org_01abc"), "{}", r.text);
}

#[test]
fn a_gone_model_alone_is_not_rate_limiting() {
    let provider = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 5)
        .on("m2", gone_404("m2"), 5)
        .on("f1", gone_404("f1"), 5)
        .on("f2", gone_404("f2"), 5);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 502);
    assert_eq!(r.body["error"]["code"], "all_models_failed");
}

#[test]
fn a_callers_bad_request_stops_at_once_with_groqs_message() {
    let provider = ScriptedProvider::new()
        .on("m1", {
            let Script::Reply(mut r) = groq_error(400, "invalid_request_error", None, "'temperature' : value must be a number") else { unreachable!() };
            r.body = br#"{"error":{"message":"'temperature' : value must be a number","type":"invalid_request_error","param":"temperature"}}"#.to_vec();
            Script::Reply(r)
        }, 5)
        .on("m2", completion("m2"), 5);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 400);
    assert_eq!(
        r.calls,
        vec!["m1"],
        "a request every model would refuse is not retried"
    );
    assert_eq!(
        r.body["error"]["message"],
        "'temperature' : value must be a number"
    );
    assert_eq!(r.body["error"]["param"], "temperature");
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
}

#[test]
fn context_too_long_for_every_model_is_the_callers_400() {
    let too_long = || {
        groq_error(
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "Please reduce the length of the messages or completion.",
        )
    };
    let provider = ScriptedProvider::new()
        .on("m1", too_long(), 5)
        .on("m2", gone_404("m2"), 5)
        .on("f1", too_long(), 5)
        .on("f2", too_long(), 5);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 400);
    assert_eq!(r.calls.len(), 4);
    assert_eq!(r.body["error"]["code"], "context_length_exceeded");
}

#[test]
fn a_rejected_provider_key_stops_and_hides_the_key() {
    for status in [401, 403] {
        let provider = ScriptedProvider::new()
            .on(
                "m1",
                groq_error(
                    status,
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    "Invalid API Key",
                ),
                5,
            )
            .on("m2", completion("m2"), 5);
        let r = ask(provider, "fast");
        assert_eq!(r.response.status, 502);
        assert_eq!(r.calls, vec!["m1"]);
        assert_eq!(r.body["error"]["code"], "provider_auth_failed");
        assert!(!r.text.contains("gsk_provider_secret"));
        assert!(r
            .log
            .iter()
            .any(|(level, l)| *level == Level::Error && l["outcome"] == "provider_auth_failed"));
    }
}

#[test]
fn org_ids_never_reach_the_caller() {
    let provider = ScriptedProvider::new().on(
        "m1",
        groq_error(
            400,
            "invalid_request_error",
            None,
            "Bad thing for organization `org_01secretorg`",
        ),
        5,
    );
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 400);
    assert!(!r.text.contains("01secretorg"), "{}", r.text);
}

#[test]
fn force_model_uses_one_model_and_no_fallback() {
    let mut b = base_bindings();
    b.push(("FORCE_MODEL", "pinned"));
    let r = fast_with(
        &b,
        ScriptedProvider::new().on("pinned", reply(500, "{}"), 5),
    );
    assert_eq!(r.response.status, 502);
    assert_eq!(r.calls, vec!["pinned"]);
}

#[test]
fn default_model_is_tried_first() {
    let mut b = base_bindings();
    b.push(("DEFAULT_FAST_MODEL", "preferred"));
    let provider = ScriptedProvider::new().on("preferred", completion("preferred"), 5);
    let r = fast_with(&b, provider);
    assert_eq!(r.response.status, 200);
    assert_eq!(r.calls, vec!["preferred"]);
}

#[test]
fn a_first_try_answer_logs_one_line() {
    // The request line already names the model and status; an attempt line would repeat it, and
    // every line costs the isolate a `console` call.
    let r = ask(
        ScriptedProvider::new().on("m1", completion("m1"), 7),
        "fast",
    );
    assert_eq!(r.response.status, 200);
    assert_eq!(r.log.len(), 1, "{:?}", r.log);
    let (level, line) = &r.log[0];
    assert_eq!(*level, Level::Info);
    for (field, want) in [
        ("event", json!("request")),
        ("model", json!("m1")),
        ("outcome", json!("ok")),
        ("status", json!(200)),
        ("attempts", json!(1)),
        ("fallback_used", json!(false)),
        ("duration_ms", json!(7)),
    ] {
        assert_eq!(line[field], want, "{field}");
    }
}

/// Issue 14: without `LOG_LEVEL` every routed request writes its one line, with what it spent:
/// its tokens and, at `MODEL_PRICES`, its cost; a model without a price costs null, never a guess.
#[test]
fn by_default_every_request_is_accounted_for_in_its_line() {
    let prices = r#"{"m2":{"input":0.15,"output":0.6},"f1":{"input":0,"output":0}}"#;
    let mut b: Vec<_> = base_bindings()
        .into_iter()
        .filter(|(name, _)| *name != "LOG_LEVEL")
        .collect();
    b.push(("MODEL_PRICES", prices));
    let fallback =
        ScriptedProvider::new()
            .on("m1", gone_404("m1"), 5)
            .on("m2", completion("m2"), 5);
    let r = fast_with(&b, fallback);
    assert_eq!(r.response.status, 200);
    let [(Level::Warn, attempt), _, (Level::Info, line)] = &r.log[..] else {
        panic!(
            "an attempt line for m1, m2's, and the request line: {:?}",
            r.log
        )
    };
    assert_eq!(
        (&attempt["model"], &attempt["outcome"]),
        (&json!("m1"), &json!("model_gone"))
    );
    let want = json!({
        "level": "info", "event": "request", "request_id": REQUEST_ID, "task": "fast",
        "client": "web", "model": "m2", "outcome": "ok", "status": 200, "attempts": 2,
        "fallback_used": true, "prompt_tokens": 55, "completion_tokens": 12, "total_tokens": 67,
        "cached_tokens": null, "cost_usd": (55.0 * 0.15 + 12.0 * 0.6) / 1e6, "duration_ms": 10,
        "stream": false,
    });
    assert_eq!(line, &want);
    // The task answer's `usage` is Groq's, with the cost added.
    assert_eq!(r.body["usage"]["queue_time"], 0.01);
    assert_eq!(r.body["usage"]["cost_usd"], want["cost_usd"]);

    // Priced at zero: 0, not null. Unpriced: null. A failure: no tokens, no cost.
    let free = fast_with(
        &b,
        ScriptedProvider::new()
            .on("m1", gone_404("m1"), 1)
            .on("m2", reply(500, "{}"), 1)
            .on("f1", completion("f1"), 1),
    );
    assert_eq!(free.log.last().unwrap().1["cost_usd"], 0.0);
    let unpriced = fast_with(&b, ScriptedProvider::new().on("m1", completion("m1"), 1));
    let line = &unpriced.log.last().unwrap().1;
    assert_eq!(
        (&line["prompt_tokens"], &line["cost_usd"]),
        (&json!(55), &Value::Null)
    );
    assert_eq!(unpriced.body["usage"]["cost_usd"], Value::Null);
    let mut failing = ScriptedProvider::new();
    for model in ["m1", "m2", "f1", "f2"] {
        failing = failing.on(model, reply(500, "{}"), 1);
    }
    let failed = fast_with(&b, failing);
    let line = &failed.log.last().unwrap();
    assert_eq!(line.0, Level::Error);
    assert_eq!(
        (
            &line.1["model"],
            &line.1["total_tokens"],
            &line.1["cost_usd"]
        ),
        (&Value::Null, &Value::Null, &Value::Null)
    );
}

/// Issue 14: with `USAGE` bound, one Analytics Engine point per routed request, the same facts
/// as the request line.
#[test]
fn every_routed_request_records_one_usage_point() {
    let mut b = base_bindings();
    b.push(("MODEL_PRICES", r#"{"m2":{"input":1,"output":2}}"#));
    let provider =
        ScriptedProvider::new()
            .on("m1", reply(503, "{}"), 5)
            .on("m2", completion("m2"), 5);
    let req = HttpRequest {
        authorization: Some("Bearer client-secret-1"),
        ..HttpRequest::new(
            "POST",
            "/v1/tasks/fast",
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )
    };
    let ex = exchange(&load(&b), &provider, &Unlimited, &Default::default(), req);
    let want = UsagePoint {
        index: "web".into(),
        blobs: ["fast", "m2", "ok", "web", REQUEST_ID].map(String::from),
        doubles: [55.0, 12.0, 67.0, (55.0 + 24.0) / 1e6, 10.0, 2.0, 1.0],
    };
    assert_eq!(ex.usage, vec![want]);
    // A refused request is accounted for too: no model, nothing spent.
    let req = HttpRequest::new("POST", "/v1/tasks/fast", b"{}");
    let ex = exchange(&load(&b), &provider, &Unlimited, &Default::default(), req);
    assert_eq!(ex.response.status, 401);
    let point = &ex.usage[0];
    assert_eq!(
        (point.index.as_str(), &point.blobs[1], &point.blobs[2]),
        ("anonymous", &String::new(), &"invalid_api_key".to_string())
    );
    assert_eq!(point.doubles[..4], [0.0; 4]);
}

#[test]
fn log_level_warn_keeps_only_the_lines_about_failures() {
    let mut b = base_bindings();
    b.push(("LOG_LEVEL", "warn"));
    let ok = ScriptedProvider::new().on("m1", completion("m1"), 5);
    let r = fast_with(&b, ok);
    assert_eq!(r.response.status, 200);
    assert!(
        r.log.is_empty(),
        "a plain success logs nothing: {:?}",
        r.log
    );

    let failing = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 5)
        .on("m2", completion("m2"), 5);
    let r = fast_with(&b, failing);
    assert_eq!(r.response.status, 200);
    let lines: Vec<(Level, &str)> = r
        .log
        .iter()
        .map(|(level, l)| (*level, l["outcome"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(lines, [(Level::Warn, "model_gone")]);

    let mut all_fail = ScriptedProvider::new();
    for model in ["m1", "m2", "f1", "f2"] {
        all_fail = all_fail.on(model, reply(500, "{}"), 5);
    }
    let r = fast_with(&b, all_fail);
    assert_eq!(r.response.status, 502);
    assert!(
        r.log
            .iter()
            .any(|(level, l)| *level == Level::Error && l["event"] == "request"),
        "{:?}",
        r.log
    );
    assert!(r.log.iter().all(|(level, _)| *level >= Level::Warn));

    b.pop();
    b.push(("LOG_LEVEL", "error"));
    let failing = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 5)
        .on("m2", completion("m2"), 5);
    let r = fast_with(&b, failing);
    assert_eq!(r.response.status, 200);
    assert!(r.log.is_empty(), "{:?}", r.log);
}

#[test]
fn after_a_fallback_every_attempt_is_logged_including_the_answering_one() {
    let r = ask(
        ScriptedProvider::new()
            .on(
                "m1",
                groq_error(500, "internal_server_error", None, "Internal Server Error"),
                3,
            )
            .on("m2", completion("m2"), 4),
        "fast",
    );
    assert_eq!(r.response.status, 200);
    let events: Vec<(&str, &str)> = r
        .log
        .iter()
        .map(|(_, l)| {
            (
                l["event"].as_str().unwrap_or_default(),
                l["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("attempt", "upstream_error"),
            ("attempt", "ok"),
            ("request", "ok")
        ]
    );
}

#[test]
fn logs_carry_ids_and_tokens_but_no_content_or_keys() {
    let r = ask(
        ScriptedProvider::new()
            .on("m1", gone_404("m1"), 7)
            .on("m2", completion("m2"), 9),
        "fast",
    );
    assert_eq!(r.log.len(), 3, "two attempt lines and one request line");
    let request = &r.log[2].1;
    assert_eq!(request["event"], "request");
    for (field, want) in [
        ("request_id", json!("req_test")),
        ("task", json!("fast")),
        ("model", json!("m2")),
        ("client", json!("web")),
        ("status", json!(200)),
        ("fallback_used", json!(true)),
        ("prompt_tokens", json!(55)),
        ("completion_tokens", json!(12)),
        ("total_tokens", json!(67)),
        ("duration_ms", json!(16)),
    ] {
        assert_eq!(request[field], want, "{field}");
    }
    let attempt = &r.log[0].1;
    for field in [
        "request_id",
        "task",
        "model",
        "attempt",
        "outcome",
        "status",
        "error_code",
        "duration_ms",
    ] {
        assert!(
            attempt.get(field).is_some(),
            "attempt line lacks {field}: {attempt}"
        );
    }
    let all = serde_json::to_string(&r.log.iter().map(|(_, l)| l).collect::<Vec<_>>()).unwrap();
    for secret in [
        "private-prompt-text",
        "hello from",
        "gsk_provider_secret",
        KEY,
    ] {
        assert!(!all.contains(secret), "log leaks {secret}: {all}");
    }
}

fn call(method: &str, path: &str, auth: Option<&str>, body: &str) -> Run {
    run_with(
        &base_bindings(),
        ScriptedProvider::new().on("m1", completion("m1"), 1),
        method,
        path,
        auth,
        body,
    )
}

/// method, path, authorization, body → status, error code, param.
type ErrorCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    u16,
    &'a str,
    Option<&'a str>,
);

#[test]
fn http_errors_table() {
    let ok_body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let auth = Some("Bearer client-secret-1");
    let cases: Vec<ErrorCase> = vec![
        (
            "POST",
            "/v1/tasks/fast",
            None,
            ok_body,
            401,
            "invalid_api_key",
            None,
        ),
        // OpenAI's Responses API (the AI SDK's default provider, `responses.create`).
        (
            "POST",
            "/v1/responses",
            auth,
            ok_body,
            404,
            "responses_api_not_supported",
            None,
        ),
        (
            "POST",
            "/openai/v1/responses",
            auth,
            ok_body,
            404,
            "responses_api_not_supported",
            None,
        ),
        (
            "POST",
            "/v1/tasks/fast",
            Some("Bearer wrong"),
            ok_body,
            401,
            "invalid_api_key",
            None,
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            "{not json",
            400,
            "invalid_json",
            None,
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            "",
            400,
            "invalid_json",
            None,
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            "[1,2]",
            400,
            "invalid_json",
            None,
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            "{}",
            400,
            "invalid_parameter",
            Some("messages"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[]}"#,
            400,
            "invalid_parameter",
            Some("messages"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":"hi"}"#,
            400,
            "invalid_parameter",
            Some("messages"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
            400,
            "invalid_parameter",
            Some("messages[0].role"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[{"role":"user"}]}"#,
            400,
            "invalid_parameter",
            Some("messages[0].content"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[{"role":"user","content":"x"}],"model":"m9"}"#,
            400,
            "invalid_parameter",
            Some("model"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#,
            400,
            "invalid_parameter",
            Some("max_tokens"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            400,
            "invalid_parameter",
            Some("temperature"),
        ),
        (
            "POST",
            "/v1/tasks/fast",
            auth,
            r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            400,
            "invalid_parameter",
            Some("stream"),
        ),
        (
            "POST",
            "/v1/tasks/nope",
            auth,
            ok_body,
            404,
            "unknown_task",
            None,
        ),
        (
            "POST",
            "/v1/tasks/fallback",
            auth,
            ok_body,
            404,
            "unknown_task",
            None,
        ),
        (
            "GET",
            "/v1/tasks/fast",
            auth,
            "",
            405,
            "method_not_allowed",
            None,
        ),
        (
            "POST",
            "/healthz",
            None,
            "",
            405,
            "method_not_allowed",
            None,
        ),
        ("GET", "/nowhere", auth, "", 404, "not_found", None),
        // Task names are case-sensitive.
        (
            "POST",
            "/v1/tasks/Fast",
            auth,
            ok_body,
            404,
            "unknown_task",
            None,
        ),
    ];
    for (method, path, auth, body, status, code, param) in cases {
        let r = call(method, path, auth, body);
        let what = format!("{method} {path} {body}");
        assert_eq!(r.response.status, status, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{what}");
        // A refusal names the task it was for, and nothing of a chain that never ran.
        let task = (method == "POST" && path == "/v1/tasks/fast").then_some("fast");
        assert_eq!(r.response.header("x-task-type"), task, "{what}");
        assert_eq!(r.response.header("x-attempts"), None, "{what}");
        assert_eq!(r.response.header("x-model-used"), None, "{what}");
        let challenge = (status == 401).then_some("Bearer");
        assert_eq!(r.response.header("www-authenticate"), challenge, "{what}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(r.body["error"]["type"].is_string(), "{what}");
        if let Some(param) = param {
            assert_eq!(r.body["error"]["param"], param, "{what}");
        }
        assert!(
            r.calls.is_empty(),
            "{what}: no model is called for a refused request"
        );
    }
    let r = call("GET", "/v1/tasks/fast", auth, "");
    assert_eq!(r.response.header("allow"), Some("POST"));
    let r = call("POST", "/v1/tasks/nope", auth, ok_body);
    assert_eq!(
        r.body["error"]["message"],
        "unknown task `nope`; known tasks: `fast`, `reasoning`"
    );
    let r = call("GET", "/nowhere", auth, "");
    assert_eq!(
        r.body["error"]["message"],
        "no route for GET /nowhere; use POST /v1/tasks/{task}"
    );
    // Bytes that are not UTF-8 are no JSON.
    let req = HttpRequest {
        authorization: auth,
        ..HttpRequest::new("POST", "/v1/tasks/fast", b"{\"messages\":\"\xff\xfe\"}")
    };
    let ex = exchange(
        &load(&base_bindings()),
        &ScriptedProvider::new(),
        &Unlimited,
        &Default::default(),
        req,
    );
    assert_eq!(
        (ex.response.status, &ex.json()["error"]["code"]),
        (400, &json!("invalid_json"))
    );
}

#[test]
fn a_request_id_is_the_callers_when_it_is_a_sane_token_else_made_up() {
    use task_router::http::request_id;
    let long = "a".repeat(129);
    for sane in ["e2e-1", "A.b:c_d", &long[1..]] {
        assert_eq!(request_id(Some(sane), || 0), sane);
    }
    for bad in [
        None,
        Some(""),
        Some("has space"),
        Some("semi;colon"),
        Some(long.as_str()),
    ] {
        assert_eq!(request_id(bad, || 0xabc), "req_0000000000000abc", "{bad:?}");
    }
}

#[test]
fn no_auth_configured_is_closed_and_says_how_to_open() {
    let b: Vec<_> = base_bindings()
        .into_iter()
        .filter(|(k, _)| *k != "ROUTER_API_KEYS")
        .collect();
    let r = run_with(
        &b,
        ScriptedProvider::new(),
        "POST",
        "/v1/tasks/fast",
        None,
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(r.response.status, 401);
    assert_eq!(r.body["error"]["code"], "auth_not_configured");
    assert_eq!(r.response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.response.header("x-task-type"), Some("fast"));
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ROUTER_API_KEYS") && message.contains("ALLOW_UNAUTHENTICATED"),
        "{message}"
    );

    // Open: anyone comes in, named by no client; a wrong key is still refused.
    let mut open = base_bindings();
    open.push(("ALLOW_UNAUTHENTICATED", "true"));
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let provider = || ScriptedProvider::new().on("m1", completion("m1"), 1);
    let r = run_with(&open, provider(), "POST", "/v1/tasks/fast", None, body);
    assert_eq!(r.response.status, 200);
    assert_eq!(r.log.last().unwrap().1["client"], Value::Null);
    let r = run_with(
        &open,
        provider(),
        "POST",
        "/v1/tasks/fast",
        Some("Bearer nope"),
        body,
    );
    assert_eq!((r.response.status, r.calls.len()), (401, 0));
    let r = run_with(
        &open,
        provider(),
        "POST",
        "/v1/tasks/fast",
        Some("Bearer client-secret-1"),
        body,
    );
    assert_eq!(r.log.last().unwrap().1["client"], "web");
}

#[test]
fn config_problems_answer_500_and_healthz_503() {
    let broken = [
        ("MODEL_REGISTRY", r#"{"fast":[]}"#),
        ("ROUTER_API_KEYS", "k"),
    ];
    let r = run_with(
        &broken,
        ScriptedProvider::new(),
        "POST",
        "/v1/tasks/fast",
        Some("Bearer k"),
        "{}",
    );
    assert_eq!(r.response.status, 500);
    assert_eq!(r.body["error"]["code"], "config_invalid");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`MODEL_REGISTRY.fast` is an empty list"));
    assert_eq!(r.body["error"]["problems"][0]["binding"], "MODEL_REGISTRY");
    assert!(r
        .log
        .iter()
        .any(|(level, l)| *level == Level::Error && l["event"] == "config_invalid"));

    let r = healthz(&broken);
    assert_eq!(r.response.status, 503);
    assert_eq!(r.body["problems"][0]["binding"], "MODEL_REGISTRY");
    assert_eq!(
        r.body["problems"][1]["code"], "provider_key_missing",
        "every problem is listed, the missing key too"
    );

    let no_key: Vec<_> = base_bindings()
        .into_iter()
        .filter(|(k, _)| *k != "GROQ_API_KEY")
        .collect();
    let r = run_with(
        &no_key,
        ScriptedProvider::new(),
        "POST",
        "/v1/tasks/fast",
        Some("Bearer client-secret-1"),
        "{}",
    );
    assert_eq!(r.response.status, 500);
    assert_eq!(r.body["error"]["code"], "provider_key_missing");
    // Client auth comes first: a stranger does not learn that the router is misconfigured.
    let r = run_with(
        &no_key,
        ScriptedProvider::new(),
        "POST",
        "/v1/tasks/fast",
        None,
        "{}",
    );
    assert_eq!(r.response.status, 401);
    let r = healthz(&no_key);
    assert_eq!(r.response.status, 503);
    assert_eq!(r.body["problems"][0]["code"], "provider_key_missing");

    let mut priced = base_bindings();
    let prices = r#"{"m1":{"input":1,"output":1},"m2":{"input":1,"output":1},"m3":{"input":1,"output":1},"f1":{"input":1,"output":1}}"#;
    priced.push(("MODEL_PRICES", prices));
    let r = healthz(&priced);
    // Every model in a chain has a price but `f2`: a warning, not an error (issue 14).
    let warning = "`MODEL_PRICES` has no price for `f2`: its cost logs as null";
    let want = json!({"status": "ok", "warnings": [{"binding": "MODEL_PRICES", "code": "price_missing", "message": warning}]});
    assert_eq!((r.response.status, r.body.clone()), (200, want));
    priced.push(("MODEL_PRICES", r#"{"m1":{"input":-1,"output":1}}"#));
    let r = healthz(&priced);
    assert_eq!(r.response.status, 503);
    assert_eq!(r.body["problems"][0]["binding"], "MODEL_PRICES");
}

#[test]
fn the_responses_api_is_pointed_at_chat_completions() {
    let r = call(
        "POST",
        "/v1/responses",
        Some("Bearer client-secret-1"),
        r#"{"model":"fast","input":"hi"}"#,
    );
    assert_eq!(r.response.status, 404);
    let message = r.body["error"]["message"].as_str().unwrap();
    for said in ["Chat Completions", "chat.completions.create", "openai.chat"] {
        assert!(message.contains(said), "{message}");
    }
    assert!(r.calls.is_empty());
}

#[test]
fn a_caller_who_leaves_ends_the_chain_and_no_other_model_is_called() {
    // While a model answers: the runtime aborts the call with the caller's request.
    let in_flight = ScriptedProvider::new()
        .on("m1", Script::Fail(TransportError::CallerLeft), 2_000)
        .on("m2", completion("m2"), 5);
    // Between two models: the first failed, and the caller has gone meanwhile.
    let between =
        ScriptedProvider::new()
            .on("m1", reply(500, "{}"), 5)
            .on("m2", completion("m2"), 5);
    between.caller_leaves_after.set(Some(1));
    for (provider, first) in [
        (in_flight, "client_disconnected"),
        (between, "upstream_error"),
    ] {
        let r = ask(provider, "fast");
        assert_eq!(
            r.calls,
            vec!["m1"],
            "no model is called for a caller who left"
        );
        assert_eq!(r.response.status, 499);
        assert_eq!(r.body["error"]["code"], "client_disconnected");
        assert_eq!(outcomes(&r.body), pairs(&[("m1", first)]));
        let line = &r.log.last().unwrap().1;
        assert_eq!(line["event"], "request");
        assert_eq!(line["outcome"], "client_disconnected");
        assert_eq!(line["status"], 499);
        assert_eq!(line["prompt_tokens"], Value::Null, "nothing was answered");
    }
}
