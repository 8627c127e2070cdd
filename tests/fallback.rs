//! Native tests of the fallback loop and the HTTP API with a scripted fake provider: for each
//! scenario, the answer, the models called in order, and how many calls were made.
//! Run: `cargo test --test fallback`.

mod support;

use serde_json::{json, Value};
use support::attempts::{outcomes, pairs};
use support::checks::assert_has;
use support::fixtures::*;
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::{HttpRequest, HttpResponse};
use task_router::routing::log::Level;

const REGISTRY: &str = r#"{"fast":["m1","m2"],"reasoning":["m3"],"fallback":["f1","f2"]}"#;

fn base_bindings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "gsk_provider_secret"),
        ("ROUTER_API_KEYS", CLIENT_KEYS),
        ("GROQ_BASE_URL", "http://127.0.0.1:1"),
        EVERY_LINE,
    ]
}

/// `base_bindings` with `name` left out.
fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    base_bindings()
        .into_iter()
        .filter(|(k, _)| *k != name)
        .collect()
}

struct Run {
    response: HttpResponse,
    body: Value,
    /// `body` as sent.
    text: String,
    calls: Vec<String>,
    log: Vec<(Level, Value)>,
}

impl Run {
    /// The last log line: the request line.
    fn line(&self) -> &Value {
        &self.log.last().expect("a log line").1
    }
}

/// `GET /healthz` with `pairs` as bindings.
fn healthz(pairs: &[(&'static str, &str)]) -> Run {
    run(pairs, ScriptedProvider::new(), "GET /healthz", None, "")
}

/// One request for `route` (`METHOD PATH`) under `pairs`, a plain answer expected.
fn run(
    pairs: &[(&'static str, &str)],
    provider: ScriptedProvider,
    route: &str,
    auth: Option<&str>,
    body: &str,
) -> Run {
    let ex = send(pairs, &provider, request(route, auth, body));
    assert!(!ex.streamed, "a plain request got a stream");
    let (body, calls) = (ex.json(), provider.models_called());
    Run {
        body,
        text: ex.text,
        response: ex.response,
        calls,
        log: ex.log,
    }
}

/// `POST /v1/tasks/{task}` with the client key and a body with a prompt and parameters.
fn ask(provider: ScriptedProvider, task: &str) -> Run {
    let body = r#"{"messages":[{"role":"user","content":"private-prompt-text"}],"max_tokens":10,"temperature":0.2,"seed":7}"#;
    run(
        &base_bindings(),
        provider,
        &format!("POST /v1/tasks/{task}"),
        Some(BEARER),
        body,
    )
}

/// `POST /v1/tasks/fast` with the client key and a one-message body, under `bindings`.
fn fast_with(bindings: &[(&'static str, &str)], provider: ScriptedProvider) -> Run {
    run(bindings, provider, "POST /v1/tasks/fast", Some(BEARER), HI)
}

/// A provider whose every model in `models` answers `script` after 1 ms.
fn all(models: &[&str], script: Script) -> ScriptedProvider {
    let provider = ScriptedProvider::new();
    models
        .iter()
        .fold(provider, |p, model| p.on(model, script.clone(), 1))
}

#[test]
fn first_model_answers() {
    let r = ask(
        ScriptedProvider::new().on("m1", completion("m1"), 120),
        "fast",
    );
    assert_eq!(r.response.status, 200);
    assert_eq!(r.calls, vec!["m1"]);
    let attempts = json!([{"model":"m1","outcome":"ok","status":200,"duration_ms":120}]);
    let want = json!({"content": "hello from m1", "model_used": "m1", "finish_reason": "stop",
                      "task": "fast", "request_id": "req_test", "attempts": attempts});
    assert_has(&r.body, want);
    assert_eq!(r.body["usage"]["total_tokens"], 67);
    let headers = ["x-model-used", "x-task-type", "x-attempts", "x-request-id"];
    let headers = headers.map(|name| r.response.header(name));
    assert_eq!(
        headers,
        [
            Some("m1"),
            Some("fast"),
            Some("m1=ok(200)"),
            Some("req_test")
        ]
    );
}

#[test]
fn the_body_sent_to_groq_is_the_callers_with_model_set() {
    let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
    let body = r#"{"messages":[{"role":"user","content":"h\u00e9 \"q\""}],"response_format":{"type":"json_object"},"x_extra":[1,2]}"#;
    send(
        &base_bindings(),
        &provider,
        request("POST /v1/tasks/fast", Some(BEARER), body),
    );
    let calls = provider.calls.borrow();
    assert_eq!(calls.len(), 1);
    let url = "http://127.0.0.1:1/openai/v1/chat/completions";
    assert_eq!((calls[0].url.as_str(), calls[0].timeout_ms), (url, 15_000));
    let sent = json!({"model":"m1","messages":[{"role":"user","content":"hé \"q\""}],
                      "response_format":{"type":"json_object"},"x_extra":[1,2]});
    assert_eq!(calls[0].body, sent);
}

#[test]
fn falls_back_in_order_through_every_failure_class() {
    let html = reply(502, "<html><body>502 Bad Gateway</body></html>");
    let provider = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 30)
        .on("m2", Script::Fail(TransportError::Timeout), 15_000)
        .on("f1", html, 40)
        .on("f2", completion("f2"), 50);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 200, "{}", r.body);
    assert_eq!(r.calls, vec!["m1", "m2", "f1", "f2"]);
    assert_eq!(r.body["model_used"], "f2");
    let want = [
        ("m1", "model_gone"),
        ("m2", "timeout"),
        ("f1", "upstream_error"),
        ("f2", "ok"),
    ];
    assert_eq!(outcomes(&r.body), pairs(&want));
    assert_eq!(r.body["attempts"][0]["code"], "model_not_found");
    let wanted = json!({"status": null, "duration_ms": 15_000});
    assert_has(&r.body["attempts"][1], wanted);
    let attempts = "m1=model_gone(404), m2=timeout, f1=upstream_error(502), f2=ok(200)";
    assert_eq!(r.response.header("x-attempts"), Some(attempts));
    // The gone model is logged at warn level with a hint to fix the registry.
    let gone = r.log.iter().find(|(_, l)| l["model"] == "m1");
    let (level, gone) = gone.expect("attempt line for m1");
    assert_eq!(*level, Level::Warn);
    assert!(gone["hint"].as_str().unwrap().contains("MODEL_REGISTRY"));
}

#[test]
fn every_fallback_class_moves_on() {
    let failing = [
        gone_404("x"),
        groq("400 invalid_request_error/model_decommissioned The model `x` has been decommissioned"),
        rate_limited("3"),
        groq("413 tokens/rate_limit_exceeded Request too large for model `x` in organization `org_1`"),
        groq("498 capacity_exceeded/capacity_exceeded flex tier capacity exceeded"),
        groq("500 internal_server_error Internal Server Error"),
        reply(502, "<html>502</html>"),
        reply(503, ""),
        Script::Fail(TransportError::Connection("reset".into())),
        Script::Fail(TransportError::Timeout),
        // A 200 that is not a completion.
        reply(200, r#"{"object":"list","data":[]}"#),
        reply(200, "<html>portal</html>"),
        groq("400 invalid_request_error/context_length_exceeded Please reduce the length"),
        groq("400 invalid_request_error/json_validate_failed Failed to generate JSON"),
        groq("400 invalid_request_error/tool_use_failed Failed to call a function"),
    ];
    for script in failing {
        let name = format!("{script:?}");
        let provider = ScriptedProvider::new().on("m1", script, 5);
        let r = ask(provider.on("m2", completion("m2"), 5), "fast");
        assert_eq!(r.response.status, 200, "{name}: {}", r.body);
        assert_eq!(r.calls, vec!["m1", "m2"], "{name}");
        assert_eq!(r.body["model_used"], "m2", "{name}");
    }
}

#[test]
fn universal_fallback_after_the_task_list() {
    let provider = ScriptedProvider::new().on("m3", reply(500, "{}"), 5);
    let r = ask(provider.on("f1", completion("f1"), 5), "reasoning");
    assert_eq!(r.response.status, 200);
    assert_eq!(r.calls, vec!["m3", "f1"]);
    assert_eq!(r.body["model_used"], "f1");
}

#[test]
fn everything_failing_is_a_502_with_diagnostics() {
    let error = r#"{"error":{"message":"Internal Server Error","type":"internal_server_error"}}"#;
    let dropped = Script::Fail(TransportError::Connection("dropped".into()));
    let provider = ScriptedProvider::new()
        .on("m1", gone_404("m1"), 10)
        .on("m2", reply(500, error), 20)
        .on("f1", dropped, 30)
        .on("f2", rate_limited("9"), 40);
    let r = ask(provider, "fast");
    assert_eq!(r.response.status, 502);
    assert_eq!(r.calls, vec!["m1", "m2", "f1", "f2"]);
    let want = json!({"code": "all_models_failed", "type": "api_error", "attempts": [
        {"model":"m1","outcome":"model_gone","status":404,"code":"model_not_found","duration_ms":10},
        {"model":"m2","outcome":"upstream_error","status":500,"duration_ms":20},
        // The runtime's own words for a failed call (issue 12: failures that teach).
        {"model":"f1","outcome":"connection_error","status":null,"error":"dropped","duration_ms":30},
        {"model":"f2","outcome":"rate_limited","status":429,"code":"rate_limit_exceeded","duration_ms":40},
    ]});
    assert_has(&r.body["error"], want);
    let want = json!({"event": "request", "status": 502, "attempts": 4, "fallback_used": true});
    assert_has(r.line(), want);
}

#[test]
fn all_rate_limited_is_a_429_with_the_earliest_retry_after() {
    let provider = ScriptedProvider::new()
        .on("m1", rate_limited("12"), 5)
        .on("m2", rate_limited("4"), 5)
        .on(
            "f1",
            groq("498 capacity_exceeded/capacity_exceeded flex full"),
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
    let r = ask(all(&["m1", "m2", "f1", "f2"], gone_404("m")), "fast");
    assert_eq!(r.response.status, 502);
    assert_eq!(r.body["error"]["code"], "all_models_failed");
}

#[test]
fn a_callers_bad_request_stops_at_once_with_groqs_message() {
    let refusal = r#"{"error":{"message":"'temperature' : value must be a number","type":"invalid_request_error","param":"temperature"}}"#;
    let provider = ScriptedProvider::new().on("m1", reply(400, refusal), 5);
    let r = ask(provider.on("m2", completion("m2"), 5), "fast");
    assert_eq!(r.response.status, 400);
    // A request every model would refuse is not retried.
    assert_eq!(r.calls, vec!["m1"]);
    let want = json!({"message": "'temperature' : value must be a number",
                      "param": "temperature", "type": "invalid_request_error"});
    assert_has(&r.body["error"], want);
}

#[test]
fn context_too_long_for_every_model_is_the_callers_400() {
    let too_long = groq("400 invalid_request_error/context_length_exceeded Please reduce the length of the messages or completion.");
    let r = ask(
        all(&["m1", "f1", "f2"], too_long).on("m2", gone_404("m2"), 5),
        "fast",
    );
    assert_eq!(r.response.status, 400);
    assert_eq!(r.calls.len(), 4);
    assert_eq!(r.body["error"]["code"], "context_length_exceeded");
}

#[test]
fn a_rejected_provider_key_stops_and_hides_the_key() {
    for status in [401, 403] {
        let rejected = groq(&format!(
            "{status} invalid_request_error/invalid_api_key Invalid API Key"
        ));
        let provider = ScriptedProvider::new().on("m1", rejected, 5);
        let r = ask(provider.on("m2", completion("m2"), 5), "fast");
        assert_eq!(r.response.status, 502);
        assert_eq!(r.calls, vec!["m1"]);
        assert_eq!(r.body["error"]["code"], "provider_auth_failed");
        assert!(!r.text.contains("gsk_provider_secret"));
        let error = |(level, l): &(Level, Value)| {
            *level == Level::Error && l["outcome"] == "provider_auth_failed"
        };
        assert!(r.log.iter().any(error));
    }
}

#[test]
fn org_ids_never_reach_the_caller() {
    let refusal = groq("400 invalid_request_error Bad thing for organization `org_01secretorg`");
    let r = ask(ScriptedProvider::new().on("m1", refusal, 5), "fast");
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
    assert_eq!(r.log[0].0, Level::Info);
    let want = json!({"event": "request", "model": "m1", "outcome": "ok", "status": 200,
                      "attempts": 1, "fallback_used": false, "duration_ms": 7});
    assert_has(r.line(), want);
}

/// Issue 14: without `LOG_LEVEL` every routed request writes its one line, with what it spent:
/// its tokens and, at `MODEL_PRICES`, its cost; a model without a price costs null, never a guess.
#[test]
fn by_default_every_request_is_accounted_for_in_its_line() {
    let prices = r#"{"m2":{"input":0.15,"output":0.6},"f1":{"input":0,"output":0}}"#;
    let mut b = without("LOG_LEVEL");
    b.push(("MODEL_PRICES", prices));
    let fallback = ScriptedProvider::new().on("m1", gone_404("m1"), 5);
    let r = fast_with(&b, fallback.on("m2", completion("m2"), 5));
    assert_eq!(r.response.status, 200);
    let [(Level::Warn, attempt), _, (Level::Info, line)] = &r.log[..] else {
        panic!(
            "an attempt line for m1, m2's, and the request line: {:?}",
            r.log
        )
    };
    assert_has(attempt, json!({"model": "m1", "outcome": "model_gone"}));
    let want = json!({
        "level": "info", "event": "request", "request_id": REQUEST_ID, "task": "fast",
        "client": "web", "model": "m2", "outcome": "ok", "status": 200, "attempts": 2,
        "fallback_used": true, "prompt_tokens": 55, "completion_tokens": 12, "total_tokens": 67,
        "cached_tokens": null, "cost_usd": (55.0 * 0.15 + 12.0 * 0.6) / 1e6, "duration_ms": 10,
        "stream": false,
    });
    assert_eq!(line, &want);
    // The task answer's `usage` is Groq's, with the cost added.
    let usage = json!({"queue_time": 0.01, "cost_usd": want["cost_usd"]});
    assert_has(&r.body["usage"], usage);

    // Priced at zero: 0, not null. Unpriced: null. A failure: no tokens, no cost.
    let free = all(&["m1"], gone_404("m1")).on("m2", reply(500, "{}"), 1);
    let free = fast_with(&b, free.on("f1", completion("f1"), 1));
    assert_eq!(free.line()["cost_usd"], 0.0);
    let unpriced = fast_with(&b, ScriptedProvider::new().on("m1", completion("m1"), 1));
    let wanted = json!({"prompt_tokens": 55, "cost_usd": null});
    assert_has(unpriced.line(), wanted);
    assert_eq!(unpriced.body["usage"]["cost_usd"], Value::Null);
    let failed = fast_with(&b, all(&["m1", "m2", "f1", "f2"], reply(500, "{}")));
    assert_eq!(failed.log.last().unwrap().0, Level::Error);
    let nothing = json!({"model": null, "total_tokens": null, "cost_usd": null});
    assert_has(failed.line(), nothing);
    let fields = ["model", "total_tokens", "cost_usd"];
    // Null, not missing.
    assert!(fields.iter().all(|f| failed.line().get(f).is_some()));
}

/// Issue 14: with `USAGE` bound, one Analytics Engine point per routed request, the same facts
/// as the request line.
#[test]
fn every_routed_request_records_one_usage_point() {
    let mut b = base_bindings();
    b.push(("MODEL_PRICES", r#"{"m2":{"input":1,"output":2}}"#));
    let provider = ScriptedProvider::new().on("m1", reply(503, "{}"), 5);
    let provider = provider.on("m2", completion("m2"), 5);
    let ex = send(
        &b,
        &provider,
        request("POST /v1/tasks/fast", Some(BEARER), HI),
    );
    let want = UsagePoint {
        index: "web".into(),
        blobs: ["fast", "m2", "ok", "web", REQUEST_ID, "", ""].map(String::from),
        doubles: [55.0, 12.0, 67.0, (55.0 + 24.0) / 1e6, 10.0, 2.0, 1.0, 0.0],
    };
    assert_eq!(ex.usage, vec![want]);
    // A refused request is accounted for too: no model, nothing spent.
    let ex = send(&b, &provider, request("POST /v1/tasks/fast", None, "{}"));
    assert_eq!(ex.response.status, 401);
    let point = &ex.usage[0];
    let got = (
        point.index.as_str(),
        point.blobs[1].as_str(),
        point.blobs[2].as_str(),
    );
    assert_eq!(got, ("anonymous", "", "invalid_api_key"));
    assert_eq!(point.doubles[..4], [0.0; 4]);
}

#[test]
fn log_level_warn_keeps_only_the_lines_about_failures() {
    let mut b = base_bindings();
    b.push(("LOG_LEVEL", "warn"));
    let r = fast_with(&b, ScriptedProvider::new().on("m1", completion("m1"), 5));
    assert_eq!(r.response.status, 200);
    assert!(
        r.log.is_empty(),
        "a plain success logs nothing: {:?}",
        r.log
    );

    let failing = || ScriptedProvider::new().on("m1", gone_404("m1"), 5);
    let r = fast_with(&b, failing().on("m2", completion("m2"), 5));
    assert_eq!(r.response.status, 200);
    let lines = r
        .log
        .iter()
        .map(|(level, l)| (*level, l["outcome"].as_str().unwrap()));
    assert_eq!(lines.collect::<Vec<_>>(), [(Level::Warn, "model_gone")]);

    let r = fast_with(&b, all(&["m1", "m2", "f1", "f2"], reply(500, "{}")));
    assert_eq!(r.response.status, 502);
    let request = |(level, l): &(Level, Value)| *level == Level::Error && l["event"] == "request";
    assert!(r.log.iter().any(request), "{:?}", r.log);
    assert!(r.log.iter().all(|(level, _)| *level >= Level::Warn));

    b.pop();
    b.push(("LOG_LEVEL", "error"));
    let r = fast_with(&b, failing().on("m2", completion("m2"), 5));
    assert_eq!(r.response.status, 200);
    assert!(r.log.is_empty(), "{:?}", r.log);
}

#[test]
fn after_a_fallback_every_attempt_is_logged_including_the_answering_one() {
    let failed = groq("500 internal_server_error Internal Server Error");
    let provider = ScriptedProvider::new().on("m1", failed, 3);
    let r = ask(provider.on("m2", completion("m2"), 4), "fast");
    assert_eq!(r.response.status, 200);
    let events = r
        .log
        .iter()
        .map(|(_, l)| format!("{} {}", l["event"], l["outcome"]));
    let want = [
        r#""attempt" "upstream_error""#,
        r#""attempt" "ok""#,
        r#""request" "ok""#,
    ];
    assert_eq!(events.collect::<Vec<_>>(), want);
}

#[test]
fn logs_carry_ids_and_tokens_but_no_content_or_keys() {
    let provider = ScriptedProvider::new().on("m1", gone_404("m1"), 7);
    let r = ask(provider.on("m2", completion("m2"), 9), "fast");
    // Two attempt lines and one request line.
    assert_eq!(r.log.len(), 3);
    let want = json!({"event": "request", "request_id": "req_test", "task": "fast", "model": "m2",
        "client": "web", "status": 200, "fallback_used": true, "prompt_tokens": 55,
        "completion_tokens": 12, "total_tokens": 67, "duration_ms": 16});
    assert_has(&r.log[2].1, want);
    let attempt = &r.log[0].1;
    let fields = "request_id task model attempt outcome status error_code duration_ms";
    for field in fields.split(' ') {
        assert!(
            attempt.get(field).is_some(),
            "attempt line lacks {field}: {attempt}"
        );
    }
    let all = serde_json::to_string(&r.log.iter().map(|(_, l)| l).collect::<Vec<_>>()).unwrap();
    let secrets = [
        "private-prompt-text",
        "hello from",
        "gsk_provider_secret",
        "client-secret-1",
    ];
    for secret in secrets {
        assert!(!all.contains(secret), "log leaks {secret}: {all}");
    }
}

/// One request with the client key's bindings, `m1` answering.
fn call(method: &str, path: &str, auth: Option<&str>, body: &str) -> Run {
    let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
    run(
        &base_bindings(),
        provider,
        &format!("{method} {path}"),
        auth,
        body,
    )
}

/// `METHOD PATH AUTH BODY → STATUS CODE [PARAM]`: AUTH is `key` (the client's), `-` (none) or
/// `wrong`; a BODY of `ok` is a valid one, `+FIELDS` a valid message and `FIELDS`.
const HTTP_ERRORS: &[&str] = &[
    "POST /v1/tasks/fast - ok → 401 invalid_api_key",
    // OpenAI's Responses API (the AI SDK's default provider, `responses.create`).
    "POST /v1/responses key ok → 404 responses_api_not_supported",
    "POST /openai/v1/responses key ok → 404 responses_api_not_supported",
    "POST /v1/tasks/fast wrong ok → 401 invalid_api_key",
    "POST /v1/tasks/fast key {not json → 400 invalid_json",
    "POST /v1/tasks/fast key  → 400 invalid_json",
    "POST /v1/tasks/fast key [1,2] → 400 invalid_json",
    "POST /v1/tasks/fast key {} → 400 invalid_parameter messages",
    r#"POST /v1/tasks/fast key {"messages":[]} → 400 invalid_parameter messages"#,
    r#"POST /v1/tasks/fast key {"messages":"hi"} → 400 invalid_parameter messages"#,
    r#"POST /v1/tasks/fast key {"messages":[{"role":"wizard","content":"x"}]} → 400 invalid_parameter messages[0].role"#,
    r#"POST /v1/tasks/fast key {"messages":[{"role":"user"}]} → 400 invalid_parameter messages[0].content"#,
    r#"POST /v1/tasks/fast key +"model":"m9" → 400 invalid_parameter model"#,
    r#"POST /v1/tasks/fast key +"max_tokens":"ten" → 400 invalid_parameter max_tokens"#,
    r#"POST /v1/tasks/fast key +"temperature":3 → 400 invalid_parameter temperature"#,
    r#"POST /v1/tasks/fast key +"stream":"yes" → 400 invalid_parameter stream"#,
    "POST /v1/tasks/nope key ok → 404 unknown_task",
    "POST /v1/tasks/fallback key ok → 404 unknown_task",
    "GET /v1/tasks/fast key  → 405 method_not_allowed",
    "POST /healthz -  → 405 method_not_allowed",
    "GET /nowhere key  → 404 not_found",
    // Task names are case-sensitive.
    "POST /v1/tasks/Fast key ok → 404 unknown_task",
];

#[test]
fn http_errors_table() {
    let (ok_body, auth) = (HI, Some(BEARER));
    for case in HTTP_ERRORS {
        let (request, want) = case.split_once(" → ").expect("REQUEST → ANSWER");
        let mut request = request.splitn(4, ' ');
        let mut field = || request.next().expect("METHOD PATH AUTH BODY");
        let (method, path, who, body) = (field(), field(), field(), field());
        let authorization = match who {
            "key" => auth,
            "wrong" => Some("Bearer wrong"),
            _ => None,
        };
        let body = match body.strip_prefix('+') {
            _ if body == "ok" => ok_body.to_string(),
            Some(fields) => format!(r#"{{"messages":[{{"role":"user","content":"x"}}],{fields}}}"#),
            None => body.to_string(),
        };
        let mut want = want.split(' ');
        let (status, code, param) = (want.next().unwrap(), want.next().unwrap(), want.next());
        let r = call(method, path, authorization, &body);
        let what = format!("{method} {path} {body}");
        assert_eq!(r.response.status.to_string(), status, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{what}");
        let message = r.body["error"]["message"].as_str();
        assert!(message.is_some_and(|m| !m.is_empty()), "{what}");
        assert!(r.body["error"]["type"].is_string(), "{what}");
        if let Some(param) = param {
            assert_eq!(r.body["error"]["param"], param, "{what}");
        }
        // A refusal names the task it was for, and nothing of a chain that never ran.
        let task = (method == "POST" && path == "/v1/tasks/fast").then_some("fast");
        let challenge = (r.response.status == 401).then_some("Bearer");
        let headers = ["x-task-type", "x-attempts", "x-model-used"].map(|h| r.response.header(h));
        let headers = [
            headers[0],
            headers[1],
            headers[2],
            r.response.header("www-authenticate"),
        ];
        assert_eq!(headers, [task, None, None, challenge], "{what}");
        // No model is called for a refused request.
        assert!(r.calls.is_empty(), "{what}");
    }
    let r = call("GET", "/v1/tasks/fast", auth, "");
    assert_eq!(r.response.header("allow"), Some("POST"));
    let message = |r: Run| r.body["error"]["message"].clone();
    let unknown = "unknown task `nope`; known tasks: `fast`, `reasoning`";
    let r = call("POST", "/v1/tasks/nope", auth, ok_body);
    assert_eq!(message(r), unknown);
    let no_route = "no route for GET /nowhere; use POST /v1/tasks/{task}";
    assert_eq!(message(call("GET", "/nowhere", auth, "")), no_route);
    // Bytes that are not UTF-8 are no JSON.
    let body = b"{\"messages\":\"\xff\xfe\"}";
    let req = HttpRequest::new("POST", "/v1/tasks/fast", body);
    let req = HttpRequest {
        authorization: auth,
        ..req
    };
    let ex = send(&base_bindings(), &ScriptedProvider::new(), req);
    let code = &ex.json()["error"]["code"];
    assert_eq!((ex.response.status, code), (400, &json!("invalid_json")));
}

#[test]
fn a_request_id_is_the_callers_when_it_is_a_sane_token_else_made_up() {
    use task_router::http::request_id;
    let long = "a".repeat(129);
    for sane in ["e2e-1", "A.b:c_d", &long[1..]] {
        assert_eq!(request_id(Some(sane), || 0), sane);
    }
    let bad = [Some("has space"), Some("semi;colon"), Some(&long)];
    for bad in [None, Some("")].into_iter().chain(bad) {
        assert_eq!(request_id(bad, || 0xabc), "req_0000000000000abc", "{bad:?}");
    }
}

#[test]
fn no_auth_configured_is_closed_and_says_how_to_open() {
    let keyless = without("ROUTER_API_KEYS");
    let r = run(
        &keyless,
        ScriptedProvider::new(),
        "POST /v1/tasks/fast",
        None,
        HI,
    );
    assert_eq!(r.response.status, 401);
    assert_eq!(r.body["error"]["code"], "auth_not_configured");
    let headers = ["www-authenticate", "x-task-type"].map(|name| r.response.header(name));
    assert_eq!(headers, [Some("Bearer"), Some("fast")]);
    let message = r.body["error"]["message"].as_str().unwrap();
    let says = message.contains("ROUTER_API_KEYS") && message.contains("ALLOW_UNAUTHENTICATED");
    assert!(says, "{message}");

    // Open: anyone comes in, named by no client; a wrong key is still refused.
    let mut open = base_bindings();
    open.push(("ALLOW_UNAUTHENTICATED", "true"));
    let ask = |auth| {
        let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
        run(&open, provider, "POST /v1/tasks/fast", auth, HI)
    };
    let r = ask(None);
    assert_eq!(r.response.status, 200);
    assert_eq!(r.line()["client"], Value::Null);
    let r = ask(Some("Bearer nope"));
    assert_eq!((r.response.status, r.calls.len()), (401, 0));
    assert_eq!(ask(Some(BEARER)).line()["client"], "web");
}

#[test]
fn config_problems_answer_500_and_healthz_503() {
    let broken = [
        ("MODEL_REGISTRY", r#"{"fast":[]}"#),
        ("ROUTER_API_KEYS", "k"),
    ];
    let none = ScriptedProvider::new;
    let r = run(
        &broken,
        none(),
        "POST /v1/tasks/fast",
        Some("Bearer k"),
        "{}",
    );
    assert_eq!(r.response.status, 500);
    assert_eq!(r.body["error"]["code"], "config_invalid");
    let message = r.body["error"]["message"].as_str().unwrap();
    let says = message.contains("`MODEL_REGISTRY.fast` is an empty list");
    assert!(says, "{message}");
    assert_eq!(r.body["error"]["problems"][0]["binding"], "MODEL_REGISTRY");
    let logged =
        |(level, l): &(Level, Value)| *level == Level::Error && l["event"] == "config_invalid";
    assert!(r.log.iter().any(logged));

    let r = healthz(&broken);
    assert_eq!(r.response.status, 503);
    assert_eq!(r.body["problems"][0]["binding"], "MODEL_REGISTRY");
    // Every problem is listed, the missing key too.
    assert_eq!(r.body["problems"][1]["code"], "provider_key_missing");

    let no_key = without("GROQ_API_KEY");
    let r = run(&no_key, none(), "POST /v1/tasks/fast", Some(BEARER), "{}");
    assert_eq!(r.response.status, 500);
    assert_eq!(r.body["error"]["code"], "provider_key_missing");
    // Client auth comes first: a stranger does not learn that the router is misconfigured.
    let r = run(&no_key, none(), "POST /v1/tasks/fast", None, "{}");
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
    let want = json!([{"binding": "MODEL_PRICES", "code": "price_missing", "message": warning}]);
    let prices: Vec<&Value> = (r.body["warnings"].as_array().unwrap().iter())
        .filter(|w| w["binding"] == "MODEL_PRICES")
        .collect();
    assert_eq!((r.response.status, &r.body["status"]), (200, &json!("ok")));
    assert_eq!(json!(prices), want);
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
        Some(BEARER),
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
    let in_flight =
        ScriptedProvider::new().on("m1", Script::Fail(TransportError::CallerLeft), 2_000);
    // Between two models: the first failed, and the caller has gone meanwhile.
    let between = ScriptedProvider::new().on("m1", reply(500, "{}"), 5);
    between.caller_leaves_after.set(Some(1));
    for (provider, first) in [
        (in_flight, "client_disconnected"),
        (between, "upstream_error"),
    ] {
        let r = ask(provider.on("m2", completion("m2"), 5), "fast");
        // No model is called for a caller who left.
        assert_eq!(r.calls, vec!["m1"]);
        assert_eq!(r.response.status, 499);
        assert_eq!(r.body["error"]["code"], "client_disconnected");
        assert_eq!(outcomes(&r.body), pairs(&[("m1", first)]));
        // Nothing was answered: no tokens.
        let want = json!({"event": "request", "outcome": "client_disconnected", "status": 499});
        assert_has(r.line(), want);
        assert_eq!(r.line().get("prompt_tokens"), Some(&Value::Null));
    }
}
