//! Native tests of the OpenAI/Groq-SDK endpoints and of streaming: fallback until the first event,
//! commitment after it, and honest failure (an error event, never `[DONE]`) when a committed
//! stream breaks, in both `STREAM_RELAY` modes (`pipe` through the harness's stand-in for the
//! runtime's pipe). Run: `cargo test --test streaming`.

mod support;

use std::cell::RefCell;

use serde_json::{json, Value};
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::limit::Unlimited;
use task_router::http::relay::RelayMode;
use task_router::http::{HttpRequest, HttpResponse};
use task_router::routing::health::{HealthBook, HealthReport};
use task_router::routing::log::Level;

const REGISTRY: &str = r#"{"fast":["m1","m2"],"reasoning":["m3"],"fallback":["f1"]}"#;

const ROLE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"M\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"x_groq\":{\"id\":\"req_1\"}}\n\n";
const HELLO: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"M\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const FINAL: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"M\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
const TOOL_ERROR: &str = "event: error\ndata: {\"error\":{\"message\":\"Tool call validation failed for org_01secret\",\"type\":\"invalid_request_error\",\"code\":\"tool_use_failed\",\"status_code\":400}}\n\n";
/// `STREAM_RELAY`'s modes; stream tests run in each.
const MODES: [&str; 2] = ["filter", "pipe"];

struct Run {
    head: HttpResponse,
    /// The whole body: a full reply's, or everything a stream relay wrote.
    body: String,
    streamed: bool,
    closed: bool,
    calls: Vec<String>,
    log: Vec<(Level, Value)>,
    /// The last upstream body was read to its end (so the connection can be reused).
    drained: bool,
    /// The relay stopped the piped body.
    stopped: bool,
}

fn run(provider: ScriptedProvider, method: &str, path: &str, body: &str) -> Run {
    run_with(&[], provider, method, path, body)
}

fn run_with(
    extra: &[(&'static str, &'static str)],
    provider: ScriptedProvider,
    method: &str,
    path: &str,
    body: &str,
) -> Run {
    run_into(SinkBuffer::default(), extra, provider, method, path, body)
}

/// A stream in `mode` (`STREAM_RELAY`) on the SDK route.
fn stream_in(mode: &'static str, provider: ScriptedProvider) -> Run {
    stream_into(mode, SinkBuffer::default(), provider)
}

/// `stream_in`, relayed into `sink`.
fn stream_into(mode: &'static str, sink: SinkBuffer, provider: ScriptedProvider) -> Run {
    run_into(
        sink,
        &[("STREAM_RELAY", mode)],
        provider,
        "POST",
        "/v1/chat/completions",
        &stream_body("fast"),
    )
}

fn run_into(
    sink: SinkBuffer,
    extra: &[(&'static str, &'static str)],
    provider: ScriptedProvider,
    method: &str,
    path: &str,
    body: &str,
) -> Run {
    let mut pairs = vec![
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "gsk_x"),
        ("ROUTER_API_KEYS", "k"),
        ("ATTEMPT_TIMEOUT_MS", "1000"),
        EVERY_LINE,
    ];
    pairs.extend_from_slice(extra);
    let request = HttpRequest {
        authorization: Some("Bearer k"),
        ..HttpRequest::new(method, path, body.as_bytes())
    };
    let ex = exchange_into(
        &load(&pairs),
        &provider,
        &Unlimited,
        &Default::default(),
        request,
        sink,
    );
    Run {
        head: ex.response,
        body: ex.text,
        streamed: ex.streamed,
        closed: ex.closed,
        calls: provider.models_called(),
        log: ex.log,
        drained: provider.last_body_read_to_end.get(),
        stopped: ex.stopped,
    }
}

fn stream_body(task: &str) -> String {
    json!({"model": task, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn request_line(r: &Run) -> &Value {
    &r.log
        .iter()
        .rev()
        .find(|(_, l)| l["event"] == "request")
        .expect("a request line")
        .1
}

#[test]
fn stream_relay_is_pipe_unless_set_to_filter_and_nothing_else() {
    let base = [("MODEL_REGISTRY", REGISTRY), ("GROQ_API_KEY", "g")];
    let relay = |value: Option<&'static str>| {
        let mut pairs = base.to_vec();
        pairs.extend(value.map(|v| ("STREAM_RELAY", v)));
        load(&pairs).map(|c| c.stream_relay)
    };
    assert_eq!(relay(None), Ok(RelayMode::Pipe));
    assert_eq!(relay(Some("pipe")), Ok(RelayMode::Pipe));
    assert_eq!(relay(Some(" Filter ")), Ok(RelayMode::Filter));
    let errors = relay(Some("tee")).expect_err("an unknown mode is refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].binding, "STREAM_RELAY");
    assert_eq!(
        errors[0].message,
        "`STREAM_RELAY` must be \"pipe\" or \"filter\""
    );
}

#[test]
fn a_stream_is_relayed_byte_for_byte_with_usage_logged() {
    for mode in MODES {
        let steps = vec![
            bytes(ROLE, 100),
            bytes(HELLO, 10),
            bytes(&format!("{FINAL}{DONE}"), 10),
            // Bytes after `[DONE]` (here a trailing comment): read in both modes; relayed only
            // by the pipe, which passes on everything Groq sends.
            bytes(": end\n\n", 1),
        ];
        let r = stream_in(
            mode,
            ScriptedProvider::new().on("m1", Script::Stream(steps), 50),
        );
        assert!(r.streamed, "{mode}");
        assert_eq!(r.head.status, 200);
        assert_eq!(r.head.header("content-type"), Some("text/event-stream"));
        assert_eq!(r.head.header("x-model-used"), Some("m1"));
        assert_eq!(r.head.header("x-task-type"), Some("fast"));
        let (trailer, duration) = match mode {
            "pipe" => (": end\n\n", 171),
            _ => ("", 170),
        };
        assert_eq!(
            r.body,
            format!("{ROLE}{HELLO}{FINAL}{DONE}{trailer}"),
            "{mode}"
        );
        assert!(r.closed, "{mode}");
        assert!(!r.stopped, "{mode}");
        assert!(
            r.drained,
            "{mode}: the upstream body is read to its end so its connection can be reused"
        );
        assert_eq!(r.calls, vec!["m1"]);
        let line = request_line(&r);
        assert_eq!(line["outcome"], "ok", "{mode}");
        assert_eq!(line["prompt_tokens"], 9, "{mode}");
        assert_eq!(line["total_tokens"], 12, "{mode}");
        assert_eq!(line["duration_ms"], duration, "{mode}");
    }
}

#[test]
fn a_piped_stream_goes_on_from_where_the_first_read_stopped_mid_event() {
    // The first read ends inside the second event: the pipe relays the rest of it, so the caller
    // gets Groq's bytes whole and in order.
    let (hello_start, hello_rest) = HELLO.split_at(30);
    let steps = vec![
        bytes(&format!("{ROLE}{hello_start}"), 5),
        bytes(&format!("{hello_rest}{FINAL}"), 5),
        bytes(DONE, 5),
    ];
    for mode in MODES {
        let r = stream_in(
            mode,
            ScriptedProvider::new().on("m1", Script::Stream(steps.clone()), 5),
        );
        assert_eq!(r.body, format!("{ROLE}{HELLO}{FINAL}{DONE}"), "{mode}");
        assert_eq!(request_line(&r)["outcome"], "ok", "{mode}");
        assert_eq!(request_line(&r)["total_tokens"], 12, "{mode}");
    }
}

#[test]
fn log_level_warn_logs_a_broken_stream_but_not_a_whole_one() {
    for mode in MODES {
        let stream_at_warn = |steps| {
            run_with(
                &[("LOG_LEVEL", "warn"), ("STREAM_RELAY", mode)],
                ScriptedProvider::new().on("m1", Script::Stream(steps), 5),
                "POST",
                "/v1/chat/completions",
                &stream_body("fast"),
            )
        };
        let whole = vec![bytes(ROLE, 10), bytes(&format!("{HELLO}{FINAL}{DONE}"), 10)];
        let r = stream_at_warn(whole);
        assert!(r.streamed && r.closed, "{mode}");
        assert!(r.log.is_empty(), "{mode}: {:?}", r.log);

        let broken = vec![
            bytes(ROLE, 10),
            Step::Fail(TransportError::Connection("reset".into())),
        ];
        let r = stream_at_warn(broken);
        assert_eq!(r.log.len(), 1, "{mode}: {:?}", r.log);
        assert_eq!(r.log[0].0, Level::Warn, "{mode}");
        assert_eq!(r.log[0].1["outcome"], "stream_interrupted", "{mode}");
    }
}

#[test]
fn before_the_first_event_a_failing_stream_falls_back() {
    let cases: Vec<(&str, Script, &str)> = vec![
        (
            "ends before any event",
            Script::Stream(vec![]),
            "upstream_error",
        ),
        (
            "only a keep-alive comment, then ends",
            Script::Stream(vec![bytes(": ping\n\n", 5)]),
            "upstream_error",
        ),
        (
            "drops before any event",
            Script::Stream(vec![Step::Fail(TransportError::Connection("reset".into()))]),
            "connection_error",
        ),
        (
            "first event is a tool_use_failed error",
            Script::Stream(vec![bytes(TOOL_ERROR, 5)]),
            "cannot_serve",
        ),
        (
            "no first event within the attempt timeout",
            Script::Stream(vec![bytes(ROLE, 5_000)]),
            "timeout",
        ),
        ("429 before streaming", rate_limited("3"), "rate_limited"),
        (
            "connection refused",
            Script::Fail(TransportError::Connection("refused".into())),
            "connection_error",
        ),
    ];
    for ((name, script, outcome), mode) in cases
        .into_iter()
        .flat_map(|case| MODES.map(|mode| (case.clone(), mode)))
    {
        let name = format!("{name} ({mode})");
        let ok = Script::Stream(vec![
            bytes(ROLE, 5),
            bytes(&format!("{HELLO}{FINAL}{DONE}"), 5),
        ]);
        let r = stream_in(
            mode,
            ScriptedProvider::new().on("m1", script, 5).on("m2", ok, 5),
        );
        assert!(r.streamed, "{name}: {}", r.body);
        assert_eq!(r.calls, vec!["m1", "m2"], "{name}");
        assert_eq!(r.head.header("x-model-used"), Some("m2"), "{name}");
        assert!(
            r.head
                .header("x-attempts")
                .unwrap()
                .starts_with(&format!("m1={outcome}")),
            "{name}: {:?}",
            r.head.header("x-attempts")
        );
        assert_eq!(
            r.body,
            format!("{ROLE}{HELLO}{FINAL}{DONE}"),
            "{name}: nothing of m1 may leak into the answer"
        );
    }
}

#[test]
fn after_the_first_event_a_broken_stream_ends_with_an_error_event_and_no_done() {
    let cases: Vec<(&str, Vec<Step>, &str)> = vec![
        (
            "connection dropped after two chunks",
            vec![
                bytes(ROLE, 5),
                bytes(HELLO, 5),
                Step::Fail(TransportError::Connection("reset".into())),
            ],
            "stream_interrupted",
        ),
        (
            "ends without [DONE]",
            vec![bytes(ROLE, 5), bytes(HELLO, 5)],
            "stream_incomplete",
        ),
        (
            "event: error mid-stream",
            vec![bytes(ROLE, 5), bytes(&format!("{HELLO}{TOOL_ERROR}"), 5)],
            "tool_use_failed",
        ),
        (
            "stalls past the idle timeout",
            vec![bytes(ROLE, 5), bytes(HELLO, 5_000)],
            "stream_timeout",
        ),
    ];
    for ((name, steps, code), mode) in cases
        .into_iter()
        .flat_map(|case| MODES.map(|mode| (case.clone(), mode)))
    {
        let name = format!("{name} ({mode})");
        let r = run_with(
            &[("STREAM_RELAY", mode)],
            ScriptedProvider::new()
                .on("m1", Script::Stream(steps), 5)
                .on("m2", completion("m2"), 5),
            "POST",
            "/v1/tasks/fast",
            r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert!(r.streamed, "{name}");
        assert_eq!(
            r.calls,
            vec!["m1"],
            "{name}: a committed stream is never retried on another model"
        );
        assert!(
            !r.body.contains("[DONE]"),
            "{name}: a broken stream must not end cleanly"
        );
        assert!(r.body.starts_with(ROLE), "{name}");
        let events: Vec<&str> = r.body.split("\n\n").filter(|e| !e.is_empty()).collect();
        let last = events.last().unwrap();
        let error: Value =
            serde_json::from_str(last.strip_prefix("data: ").expect("a data event")).unwrap();
        assert_eq!(error["error"]["code"], code, "{name}: {last}");
        assert!(error["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(error["error"]["type"].is_string());
        assert!(!last.contains("01secret"), "{name}: org ids are redacted");
        // Groq's own error event: the filter holds it back; the pipe has already relayed it as
        // Groq sent it when the relay reads its copy.
        let groqs_event = code == "tool_use_failed" && mode == "pipe";
        assert_eq!(
            r.body.contains(TOOL_ERROR),
            groqs_event,
            "{name}: {}",
            r.body
        );
        assert_eq!(r.body.contains("01secret"), groqs_event, "{name}");
        assert!(r.closed);
        assert_ne!(request_line(&r)["outcome"], "ok", "{name}");
        assert_eq!(request_line(&r)["outcome"], code_logged(code), "{name}");
    }
}

#[test]
fn a_stream_cut_mid_event_never_relays_half_an_event_as_whole() {
    let (hello_start, _) = HELLO.split_at(30);
    let steps = vec![
        bytes(ROLE, 5),
        bytes(hello_start, 5),
        Step::Fail(TransportError::Connection("reset".into())),
    ];
    for mode in MODES {
        let r = stream_in(
            mode,
            ScriptedProvider::new().on("m1", Script::Stream(steps.clone()), 5),
        );
        let error = "data: {\"error\":{\"message\":\"the connection to the model dropped mid-stream; the answer is truncated\",\"type\":\"api_error\",\"code\":\"stream_interrupted\"}}\n\n";
        // The filter holds the half event back; the pipe has relayed it, so the router ends it
        // before its own event, which a client then reads whole.
        let expected = match mode {
            "pipe" => format!("{ROLE}{hello_start}\n\n{error}"),
            _ => format!("{ROLE}{error}"),
        };
        assert_eq!(r.body, expected, "{mode}");
        assert_eq!(request_line(&r)["outcome"], "stream_interrupted", "{mode}");
    }
}

/// The request line's `outcome` for a stream broken with this error code.
fn code_logged(code: &str) -> &str {
    match code {
        "stream_interrupted" | "stream_incomplete" | "stream_timeout" => code,
        _ => "upstream_stream_error",
    }
}

#[test]
fn a_caller_who_leaves_mid_stream_stops_the_relay_and_says_nothing_of_the_model() {
    // Groq goes on for a while after the caller has left.
    let steps = || {
        let mut steps = vec![bytes(ROLE, 5), bytes(HELLO, 5)];
        steps.extend((0..10).map(|_| bytes(HELLO, 40)));
        steps.push(bytes(&format!("{FINAL}{DONE}"), 5));
        steps
    };
    for mode in MODES {
        let health = RefCell::new(HealthBook::default());
        let config = load(&[
            ("MODEL_REGISTRY", REGISTRY),
            ("GROQ_API_KEY", "g"),
            ("ROUTER_API_KEYS", "k"),
            ("STREAM_RELAY", mode),
            EVERY_LINE,
        ]);
        let body = stream_body("fast");
        // Three times: were a caller leaving a failure of the model, its circuit would open.
        for _ in 0..3 {
            let provider = ScriptedProvider::new().on("m1", Script::Stream(steps()), 5);
            let req = HttpRequest {
                authorization: Some("Bearer k"),
                ..HttpRequest::new("POST", "/v1/chat/completions", body.as_bytes())
            };
            // The caller takes the first event and the first `hello`, then leaves.
            let sink = SinkBuffer::leaving_after(2);
            let r = exchange_into(&config, &provider, &Unlimited, &health, req, sink);
            assert_eq!(r.text, format!("{ROLE}{HELLO}"), "{mode}");
            let line = r
                .log
                .iter()
                .find(|(_, l)| l["event"] == "request")
                .expect("a request line");
            assert_eq!(line.1["outcome"], "client_disconnected", "{mode}");
            // The pipe stops Groq's body (once its copy has shown that Groq is still sending);
            // the filter drops it at its next write.
            assert_eq!(r.stopped, mode == "pipe", "{mode}");
            assert!(
                !provider.last_body_read_to_end.get(),
                "{mode}: Groq's body is not read on"
            );
        }
        assert_eq!(
            health.borrow().report("m1", 1_000),
            HealthReport::Healthy,
            "{mode}: a caller who left says nothing of the model"
        );
    }
}

/// A break after the first event is an upstream failure of that model like any other: a model
/// that always breaks mid-stream opens its circuit, and the next request goes to the next model.
#[test]
fn streams_that_break_mid_way_open_the_models_circuit() {
    let health = Default::default();
    let config = load(&[
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "g"),
        ("ROUTER_API_KEYS", "k"),
    ]);
    let body = r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let send = |provider: &ScriptedProvider| {
        let req = HttpRequest {
            authorization: Some("Bearer k"),
            ..HttpRequest::new("POST", "/v1/tasks/fast", body.as_bytes())
        };
        exchange(&config, provider, &Unlimited, &health, req)
    };
    let breaking = ScriptedProvider::new()
        .on(
            "m1",
            Script::Stream(vec![bytes(ROLE, 5), bytes(HELLO, 5)]),
            5,
        )
        .on(
            "m2",
            Script::Stream(vec![bytes(&format!("{ROLE}{DONE}"), 5)]),
            5,
        );
    for _ in 0..3 {
        assert!(send(&breaking).text.contains("stream_incomplete"));
    }
    let after = send(&breaking);
    assert!(after.text.ends_with(DONE), "{}", after.text);
    assert_eq!(breaking.models_called(), vec!["m1", "m1", "m1", "m2"]);
    assert_eq!(
        after.response.header("x-attempts"),
        Some("m1=skipped(circuit_open), m2=ok(200)")
    );
}

#[test]
fn the_sdk_route_passes_groqs_completion_through() {
    let body = r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
        let provider =
            ScriptedProvider::new()
                .on("m1", gone_404("m1"), 5)
                .on("m2", completion("m2"), 5);
        let r = run(provider, "POST", path, body);
        assert!(!r.streamed);
        assert_eq!(r.head.status, 200, "{path}: {}", r.body);
        let Script::Reply(groq) = completion("m2") else {
            unreachable!()
        };
        assert_eq!(
            r.body.as_bytes(),
            groq.body.as_slice(),
            "{path}: Groq's bytes, unchanged"
        );
        assert_eq!(r.head.header("x-model-used"), Some("m2"));
        assert_eq!(
            r.head.header("x-attempts"),
            Some("m1=model_gone(404), m2=ok(200)")
        );
        assert_eq!(r.calls, vec!["m1", "m2"]);
    }
}

#[test]
fn sdk_route_errors_look_like_openais() {
    // An unknown task, streamed or not, on either SDK route: a plain 404 SDKs raise
    // `NotFoundError` for.
    for (path, stream) in [
        ("/v1/chat/completions", false),
        ("/v1/chat/completions", true),
        ("/openai/v1/chat/completions", false),
        ("/openai/v1/chat/completions", true),
    ] {
        let body = json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let r = run(ScriptedProvider::new(), "POST", path, &body.to_string());
        assert_eq!((r.head.status, r.streamed), (404, false), "{path} {stream}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`gpt-4o`") && message.contains("`fast`"),
            "{message}"
        );
    }

    let r = run(
        ScriptedProvider::new(),
        "POST",
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(r.head.status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"]["param"],
        "model"
    );

    let r = run(
        ScriptedProvider::new(),
        "POST",
        "/v1/chat/completions",
        r#"{"model":7,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(r.head.status, 400);

    let r = run(ScriptedProvider::new(), "GET", "/v1/chat/completions", "");
    assert_eq!((r.head.status, r.head.header("allow")), (405, Some("POST")));
    assert!(r.calls.is_empty());
}

#[test]
fn models_lists_the_tasks() {
    for path in ["/v1/models", "/openai/v1/models"] {
        let r = run(ScriptedProvider::new(), "GET", path, "");
        assert_eq!(r.head.status, 200);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["fast", "reasoning"]);
        assert_eq!(
            body["data"][0],
            json!({"id":"fast","object":"model","created":0,"owned_by":"task-router"})
        );
    }
    let r = run(
        ScriptedProvider::new(),
        "GET",
        "/openai/v1/models/reasoning",
        "",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["id"],
        "reasoning"
    );
    let r = run(ScriptedProvider::new(), "GET", "/v1/models/nope", "");
    assert_eq!(r.head.status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"],
        "model_not_found"
    );
    // The task list is for clients only.
    let config = load(&[
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "g"),
        ("ROUTER_API_KEYS", "k"),
    ]);
    let req = HttpRequest::new("GET", "/v1/models", b"");
    let ex = exchange(
        &config,
        &ScriptedProvider::new(),
        &Unlimited,
        &Default::default(),
        req,
    );
    assert_eq!(ex.response.status, 401);
}
