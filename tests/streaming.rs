//! Native tests of the OpenAI/Groq-SDK endpoints and of streaming: fallback until the first event,
//! commitment after it, and honest failure (an error event, never `[DONE]`) when a committed
//! stream breaks, in both `STREAM_RELAY` modes (`pipe` through the harness's stand-in for the
//! runtime's pipe). Run: `cargo test --test streaming`.

mod support;

use std::cell::RefCell;

use serde_json::{json, Value};
use support::fixtures::{request, send, BEARER, CLIENT_KEYS, HI};
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::limit::Unlimited;
use task_router::http::relay::RelayMode;
use task_router::http::HttpResponse;
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
/// A streamed request for the task `fast` on the SDK route.
const STREAM: &str =
    r#"{"model":"fast","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const SDK: &str = "POST /v1/chat/completions";

fn bindings(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut pairs = vec![
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "gsk_x"),
        ("ROUTER_API_KEYS", CLIENT_KEYS),
        ("ATTEMPT_TIMEOUT_MS", "1000"),
        EVERY_LINE,
    ];
    pairs.extend_from_slice(extra);
    pairs
}

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

impl Run {
    fn request_line(&self) -> &Value {
        let line = self.log.iter().rev().find(|(_, l)| l["event"] == "request");
        &line.expect("a request line").1
    }
}

/// `route` (`METHOD PATH`) with `body` and the client key, under `extra` bindings.
fn run_with(
    extra: &[(&'static str, &'static str)],
    provider: ScriptedProvider,
    route: &str,
    body: &str,
) -> Run {
    let req = request(route, Some(BEARER), body);
    let (config, health) = (load(&bindings(extra)), RefCell::default());
    let sink = SinkBuffer::default();
    let ex = exchange_into(&config, &provider, &Unlimited, &health, req, sink);
    let calls = provider.models_called();
    let drained = provider.last_body_read_to_end.get();
    let (head, body, streamed, closed) = (ex.response, ex.text, ex.streamed, ex.closed);
    Run {
        head,
        body,
        streamed,
        closed,
        calls,
        log: ex.log,
        drained,
        stopped: ex.stopped,
    }
}

fn run(provider: ScriptedProvider, route: &str, body: &str) -> Run {
    run_with(&[], provider, route, body)
}

/// A stream in `mode` (`STREAM_RELAY`) on the SDK route.
fn stream_in(mode: &'static str, provider: ScriptedProvider) -> Run {
    run_with(&[("STREAM_RELAY", mode)], provider, SDK, STREAM)
}

/// `m1` streaming `steps`.
fn streaming(steps: Vec<Step>) -> ScriptedProvider {
    ScriptedProvider::new().on("m1", Script::Stream(steps), 5)
}

#[test]
fn stream_relay_is_pipe_unless_set_to_filter_and_nothing_else() {
    let relay = |value: Option<&'static str>| {
        let mut pairs = vec![("MODEL_REGISTRY", REGISTRY), ("GROQ_API_KEY", "g")];
        pairs.extend(value.map(|v| ("STREAM_RELAY", v)));
        load(&pairs).map(|c| c.stream_relay)
    };
    assert_eq!(relay(None), Ok(RelayMode::Pipe));
    assert_eq!(relay(Some("pipe")), Ok(RelayMode::Pipe));
    assert_eq!(relay(Some(" Filter ")), Ok(RelayMode::Filter));
    let errors = relay(Some("tee")).expect_err("an unknown mode is refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let found = (errors[0].binding.as_str(), errors[0].message.as_str());
    let message = "`STREAM_RELAY` must be \"pipe\" or \"filter\"";
    assert_eq!(found, ("STREAM_RELAY", message));
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
        let provider = ScriptedProvider::new().on("m1", Script::Stream(steps), 50);
        let r = stream_in(mode, provider);
        assert!(r.streamed, "{mode}");
        assert_eq!(r.head.status, 200);
        let headers = ["content-type", "x-model-used", "x-task-type"].map(|h| r.head.header(h));
        assert_eq!(
            headers,
            [Some("text/event-stream"), Some("m1"), Some("fast")]
        );
        let (trailer, duration) = if mode == "pipe" {
            (": end\n\n", 171)
        } else {
            ("", 170)
        };
        assert_eq!(
            r.body,
            format!("{ROLE}{HELLO}{FINAL}{DONE}{trailer}"),
            "{mode}"
        );
        assert!(r.closed && !r.stopped, "{mode}");
        // The upstream body is read to its end so its connection can be reused.
        assert!(r.drained, "{mode}");
        assert_eq!(r.calls, vec!["m1"]);
        let line = r.request_line();
        let logged = [
            &line["outcome"],
            &line["prompt_tokens"],
            &line["total_tokens"],
        ];
        assert_eq!(logged, [&json!("ok"), &json!(9), &json!(12)], "{mode}");
        assert_eq!(line["duration_ms"], duration, "{mode}");
    }
}

#[test]
fn a_piped_stream_goes_on_from_where_the_first_read_stopped_mid_event() {
    // The first read ends inside the second event: the pipe relays the rest of it, so the caller
    // gets Groq's bytes whole and in order.
    let (hello_start, hello_rest) = HELLO.split_at(30);
    let first = bytes(&format!("{ROLE}{hello_start}"), 5);
    let steps = vec![
        first,
        bytes(&format!("{hello_rest}{FINAL}"), 5),
        bytes(DONE, 5),
    ];
    for mode in MODES {
        let r = stream_in(mode, streaming(steps.clone()));
        assert_eq!(r.body, format!("{ROLE}{HELLO}{FINAL}{DONE}"), "{mode}");
        let line = r.request_line();
        assert_eq!(
            [&line["outcome"], &line["total_tokens"]],
            [&json!("ok"), &json!(12)]
        );
    }
}

#[test]
fn log_level_warn_logs_a_broken_stream_but_not_a_whole_one() {
    for mode in MODES {
        let stream_at_warn = |steps| {
            let warn = [("LOG_LEVEL", "warn"), ("STREAM_RELAY", mode)];
            run_with(&warn, streaming(steps), SDK, STREAM)
        };
        let whole = format!("{HELLO}{FINAL}{DONE}");
        let r = stream_at_warn(vec![bytes(ROLE, 10), bytes(&whole, 10)]);
        assert!(r.streamed && r.closed, "{mode}");
        assert!(r.log.is_empty(), "{mode}: {:?}", r.log);

        let r = stream_at_warn(vec![bytes(ROLE, 10), Step::Fail(reset("reset"))]);
        assert_eq!(r.log.len(), 1, "{mode}: {:?}", r.log);
        let (level, line) = &r.log[0];
        assert_eq!(
            (*level, &line["outcome"]),
            (Level::Warn, &json!("stream_interrupted"))
        );
    }
}

/// A case of a table: what `m1` does, and what the router makes of it.
fn case<T>(script: T, outcome: &str) -> (T, &str) {
    (script, outcome)
}

fn reset(why: &str) -> TransportError {
    TransportError::Connection(why.into())
}

#[test]
fn before_the_first_event_a_failing_stream_falls_back() {
    let stream = Script::Stream;
    let cases = [
        // Ends before any event, or after a keep-alive comment only.
        case(stream(vec![]), "upstream_error"),
        case(stream(vec![bytes(": ping\n\n", 5)]), "upstream_error"),
        case(stream(vec![Step::Fail(reset("reset"))]), "connection_error"),
        // The first event is a `tool_use_failed` error.
        case(stream(vec![bytes(TOOL_ERROR, 5)]), "cannot_serve"),
        // No first event within the attempt timeout.
        case(stream(vec![bytes(ROLE, 5_000)]), "timeout"),
        case(rate_limited("3"), "rate_limited"),
        case(Script::Fail(reset("refused")), "connection_error"),
    ];
    for ((script, outcome), mode) in cases
        .into_iter()
        .flat_map(|c| MODES.map(|m| (c.clone(), m)))
    {
        let name = format!("{script:?} ({mode})");
        let ok = stream(vec![
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
        let attempts = r.head.header("x-attempts").unwrap();
        assert!(
            attempts.starts_with(&format!("m1={outcome}")),
            "{name}: {attempts}"
        );
        // Nothing of m1 may leak into the answer.
        assert_eq!(r.body, format!("{ROLE}{HELLO}{FINAL}{DONE}"), "{name}");
    }
}

#[test]
fn after_the_first_event_a_broken_stream_ends_with_an_error_event_and_no_done() {
    let tool_error = format!("{HELLO}{TOOL_ERROR}");
    let dropped = vec![bytes(ROLE, 5), bytes(HELLO, 5), Step::Fail(reset("r"))];
    let cases = [
        case(dropped, "stream_interrupted"),
        // Ends without `[DONE]`.
        case(vec![bytes(ROLE, 5), bytes(HELLO, 5)], "stream_incomplete"),
        // An `event: error` mid-stream.
        case(
            vec![bytes(ROLE, 5), bytes(&tool_error, 5)],
            "tool_use_failed",
        ),
        // Stalls past the idle timeout.
        case(vec![bytes(ROLE, 5), bytes(HELLO, 5_000)], "stream_timeout"),
    ];
    for ((steps, code), mode) in cases
        .into_iter()
        .flat_map(|c| MODES.map(|m| (c.clone(), m)))
    {
        let name = format!("{code} ({mode})");
        let provider = streaming(steps).on("m2", completion("m2"), 5);
        let body = r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let relay = [("STREAM_RELAY", mode)];
        let r = run_with(&relay, provider, "POST /v1/tasks/fast", body);
        assert!(r.streamed, "{name}");
        // A committed stream is never retried on another model.
        assert_eq!(r.calls, vec!["m1"], "{name}");
        // A broken stream must not end cleanly.
        assert!(!r.body.contains("[DONE]"), "{name}");
        assert!(r.body.starts_with(ROLE), "{name}");
        let last = r
            .body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .last()
            .unwrap();
        let error: Value =
            serde_json::from_str(last.strip_prefix("data: ").expect("data")).unwrap();
        let error = &error["error"];
        assert_eq!(error["code"], code, "{name}: {last}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error["type"].is_string());
        // Org ids are redacted.
        assert!(!last.contains("01secret"), "{name}");
        // Groq's own error event: the filter holds it back; the pipe has already relayed it as
        // Groq sent it when the relay reads its copy.
        let groqs_event = code == "tool_use_failed" && mode == "pipe";
        let body = &r.body;
        assert_eq!(body.contains(TOOL_ERROR), groqs_event, "{name}: {body}");
        assert_eq!(r.body.contains("01secret"), groqs_event, "{name}");
        assert!(r.closed);
        let logged = if code.starts_with("stream_") {
            code
        } else {
            "upstream_stream_error"
        };
        assert_eq!(r.request_line()["outcome"], logged, "{name}");
    }
}

#[test]
fn a_stream_cut_mid_event_never_relays_half_an_event_as_whole() {
    let (hello_start, _) = HELLO.split_at(30);
    let steps = vec![
        bytes(ROLE, 5),
        bytes(hello_start, 5),
        Step::Fail(reset("reset")),
    ];
    for mode in MODES {
        let r = stream_in(mode, streaming(steps.clone()));
        let error = "data: {\"error\":{\"message\":\"the connection to the model dropped mid-stream; the answer is truncated\",\"type\":\"api_error\",\"code\":\"stream_interrupted\"}}\n\n";
        // The filter holds the half event back; the pipe has relayed it, so the router ends it
        // before its own event, which a client then reads whole.
        let expected = match mode {
            "pipe" => format!("{ROLE}{hello_start}\n\n{error}"),
            _ => format!("{ROLE}{error}"),
        };
        assert_eq!(r.body, expected, "{mode}");
        assert_eq!(r.request_line()["outcome"], "stream_interrupted", "{mode}");
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
        let config = load(&bindings(&[("STREAM_RELAY", mode)]));
        // Three times: were a caller leaving a failure of the model, its circuit would open.
        for _ in 0..3 {
            let provider = streaming(steps());
            // The caller takes the first event and the first `hello`, then leaves.
            let (req, sink) = (
                request(SDK, Some(BEARER), STREAM),
                SinkBuffer::leaving_after(2),
            );
            let r = exchange_into(&config, &provider, &Unlimited, &health, req, sink);
            assert_eq!(r.text, format!("{ROLE}{HELLO}"), "{mode}");
            let line = r.log.iter().find(|(_, l)| l["event"] == "request");
            assert_eq!(
                line.expect("a request line").1["outcome"],
                "client_disconnected"
            );
            // The pipe stops Groq's body (once its copy has shown that Groq is still sending);
            // the filter drops it at its next write. Either way Groq's body is not read on.
            assert_eq!(r.stopped, mode == "pipe", "{mode}");
            assert!(!provider.last_body_read_to_end.get(), "{mode}");
        }
        // A caller who left says nothing of the model.
        assert_eq!(
            health.borrow().report("m1", 1_000),
            HealthReport::Healthy,
            "{mode}"
        );
    }
}

/// A break after the first event is an upstream failure of that model like any other: a model
/// that always breaks mid-stream opens its circuit, and the next request goes to the next model.
#[test]
fn streams_that_break_mid_way_open_the_models_circuit() {
    let (health, config) = (RefCell::default(), load(&bindings(&[])));
    let body = r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let send = |provider: &ScriptedProvider| {
        let req = request("POST /v1/tasks/fast", Some(BEARER), body);
        exchange(&config, provider, &Unlimited, &health, req)
    };
    let breaking = streaming(vec![bytes(ROLE, 5), bytes(HELLO, 5)]);
    let breaking = breaking.on(
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
    let attempts = "m1=skipped(circuit_open), m2=ok(200)";
    assert_eq!(after.response.header("x-attempts"), Some(attempts));
}

#[test]
fn the_sdk_route_passes_groqs_completion_through() {
    let body = r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
        let provider = ScriptedProvider::new().on("m1", gone_404("m1"), 5);
        let (provider, route) = (
            provider.on("m2", completion("m2"), 5),
            format!("POST {path}"),
        );
        let r = run(provider, &route, body);
        assert!(!r.streamed);
        assert_eq!(r.head.status, 200, "{path}: {}", r.body);
        let Script::Reply(groq) = completion("m2") else {
            unreachable!()
        };
        // Groq's bytes, unchanged.
        assert_eq!(r.body.as_bytes(), groq.body.as_slice(), "{path}");
        let headers = ["x-model-used", "x-attempts"].map(|name| r.head.header(name));
        assert_eq!(
            headers,
            [Some("m2"), Some("m1=model_gone(404), m2=ok(200)")]
        );
        assert_eq!(r.calls, vec!["m1", "m2"]);
    }
}

#[test]
fn sdk_route_errors_look_like_openais() {
    // An unknown task, streamed or not, on either SDK route: a plain 404 SDKs raise
    // `NotFoundError` for.
    for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
        for stream in [false, true] {
            let hi = json!([{"role": "user", "content": "hi"}]);
            let body = json!({"model": "gpt-4o", "stream": stream, "messages": hi}).to_string();
            let r = run(ScriptedProvider::new(), &format!("POST {path}"), &body);
            assert_eq!((r.head.status, r.streamed), (404, false), "{path} {stream}");
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let error = &body["error"];
            let want = ["model_not_found", "model", "invalid_request_error"].map(|v| json!(v));
            assert_eq!(
                [&error["code"], &error["param"], &error["type"]],
                want.each_ref()
            );
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains("`gpt-4o`") && message.contains("`fast`"),
                "{message}"
            );
        }
    }
    let r = run(ScriptedProvider::new(), SDK, HI);
    assert_eq!(r.head.status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"]["param"],
        "model"
    );
    let model_7 = r#"{"model":7,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = run(ScriptedProvider::new(), SDK, model_7);
    assert_eq!(r.head.status, 400);
    let r = run(ScriptedProvider::new(), "GET /v1/chat/completions", "");
    assert_eq!((r.head.status, r.head.header("allow")), (405, Some("POST")));
    assert!(r.calls.is_empty());
}

#[test]
fn models_lists_the_tasks() {
    let json = |r: Run| serde_json::from_str::<Value>(&r.body).unwrap();
    for path in ["/v1/models", "/openai/v1/models"] {
        let r = run(ScriptedProvider::new(), &format!("GET {path}"), "");
        assert_eq!(r.head.status, 200);
        let body = json(r);
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["fast", "reasoning"]);
        let fast = json!({"id":"fast","object":"model","created":0,"owned_by":"task-router"});
        assert_eq!(body["data"][0], fast);
    }
    let none = ScriptedProvider::new;
    let r = run(none(), "GET /openai/v1/models/reasoning", "");
    assert_eq!(json(r)["id"], "reasoning");
    let r = run(ScriptedProvider::new(), "GET /v1/models/nope", "");
    assert_eq!(r.head.status, 404);
    assert_eq!(json(r)["error"]["code"], "model_not_found");
    // The task list is for clients only.
    let req = request("GET /v1/models", None, "");
    let ex = send(&bindings(&[]), &ScriptedProvider::new(), req);
    assert_eq!(ex.response.status, 401);
}
