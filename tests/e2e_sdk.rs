//! End-to-end tests of the OpenAI/Groq-SDK surface against the real Worker under `wrangler dev`
//! (workerd) with the fake Groq of `e2e_support::fake_groq` on 127.0.0.1: `POST /v1/chat/completions`
//! and `/openai/v1/chat/completions` (the `model` field names a task), `GET /v1/models[/{task}]`,
//! and `"stream": true` on those routes and on `POST /v1/tasks/{task}`. They check what only a real
//! Worker shows: Groq's completion passed through with the routing headers, fallback in
//! `x-attempts`, the exact body Groq receives, SSE relayed byte for byte and as it arrives,
//! fallback before a stream's first chunk and an OpenAI-shaped error event (never `[DONE]`) after
//! it, token usage in the request log line, and the official Python SDKs driving the router.
//! Streams are checked in both `STREAM_RELAY` modes: `filter` ([`stack`]) and `pipe`, the default
//! ([`piped`]), each with what it promises.
//!
//! Run: `cargo test --test e2e_sdk` (add `-- --nocapture` for the time-to-first-byte figures and
//! the Python SDK output). Needs `node`/`npm` (the first run builds the bundle, see
//! `scripts/build.sh`) and, for `official_python_sdks_drive_the_router`, `python3` with the
//! official SDKs: `pip install -r tests/sdk/requirements.txt`.
//!
//! All tests of a mode share one fake Groq and one `wrangler dev` while any of them runs (see
//! [`stack`]); every scenario has its own task and model ids in `MODEL_REGISTRY`, so tests run in
//! parallel and count their own calls at the fake.

mod e2e_support;

use serde_json::{json, Value};

use e2e_support::fake_groq::{FakeGroq, LONG_PIECES, ORG_ID};
use e2e_support::http::{self, sse_events, SseEvent, StreamBody, StreamEnd};
use e2e_support::process::{self, python, run_with_timeout};
use e2e_support::worker::Worker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const GROQ_KEY: &str = "gsk_e2e_sdk_fake_groq_key_5d0c";
const CLIENT_NAME: &str = "sdk-e2e";
const CLIENT_KEY: &str = "ck_e2e_sdk_client_key_91b2";
const ATTEMPT_TIMEOUT_MS: u64 = 2000;
/// The fake's pause between two SSE events: long enough that buffering the whole answer would
/// show as all pieces arriving together.
const CHUNK_DELAY: Duration = Duration::from_millis(100);
/// How long `streamslow-` waits before its first chunk: well past `ATTEMPT_TIMEOUT_MS`.
const SLOW_FIRST_CHUNK: Duration = Duration::from_secs(4);
/// Sent as the user message of every request here, so the logs can be searched for it.
const PROMPT: &str = "canary prompt 7c1e: keep this sentence out of the logs";
/// What the Python script sends (`MESSAGES` in `tests/sdk/sdk_clients.py`).
const PY_PROMPT: &str = "Say hello.";
/// The OpenAI SDK's chat path on the router (`base_url = {router}/v1`).
const CHAT: &str = "/v1/chat/completions";
/// The Groq SDK's chat path on the router (`base_url = {router}`).
const OPENAI_CHAT: &str = "/openai/v1/chat/completions";
/// Where the router calls the fake Groq (and where tests call it directly).
const GROQ_CHAT: &str = "/openai/v1/chat/completions";

/// `MODEL_REGISTRY`: one task per scenario, each with model ids no other scenario uses. The fake
/// picks its behaviour from the prefix before the first `-`.
const TASKS: &[(&str, &[&str])] = &[
    ("sdk-fallback", &["gone-sdkfb", "ok-sdkfb"]),
    ("stream-v1", &["ok-streamv1"]),
    ("stream-openai", &["ok-streamopenai"]),
    ("stream-task", &["ok-streamtask"]),
    ("stream-empty", &["streamempty-sempty", "ok-sempty"]),
    ("stream-slow", &["streamslow-sslow", "ok-sslow"]),
    ("stream-drop", &["streamdrop-sdrop", "ok-sdrop"]),
    ("stream-nodone", &["streamnodone-snd", "ok-snd"]),
    ("stream-error", &["streamerror-serr", "ok-serr"]),
    ("stream-long", &["streamlong-slong", "ok-slong"]),
    ("stream-stall", &["streamstall-sstall", "ok-sstall"]),
    ("stream-logs", &["ok-slogs"]),
    ("stream-ttfb", &["ok-ttfb"]),
    ("stream-leave", &["streamlong-sleave", "ok-sleave"]),
    // `tests/sdk/sdk_clients.py`
    ("py-chat", &["gone-py", "ok-py"]),
    ("py-drop", &["streamdrop-py", "ok-pydrop"]),
    ("py-error", &["streamerror-py", "ok-pyerr"]),
];

/// The usage the fake reports for every answer (`usage()` in `fake_groq.rs`).
const PROMPT_TOKENS: u64 = 55;
const COMPLETION_TOKENS: u64 = 12;
const TOTAL_TOKENS: u64 = 67;

fn chain(task: &str) -> &'static [&'static str] {
    TASKS
        .iter()
        .find(|(name, _)| *name == task)
        .map(|(_, models)| *models)
        .unwrap_or_else(|| panic!("task `{task}` is not in `TASKS`"))
}

// ---------------------------------------------------------------------------------------------
// The shared fake Groq and Worker

/// A fake Groq and the Worker in front of it. Fields drop in order: the Worker first.
struct Stack {
    worker: Worker,
    fake: FakeGroq,
    /// The Worker's `STREAM_RELAY`.
    relay: &'static str,
}

static STACKS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// The stack relaying streams with `STREAM_RELAY=filter`, started on first use and shared by the
/// file's tests; its Worker's watchdog stops it when the test process ends.
fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start("filter"))
}

/// The same with `STREAM_RELAY=pipe`, the default: its own fake Groq and Worker.
fn piped() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start("pipe"))
}

impl Stack {
    fn start(relay: &'static str) -> Stack {
        let fake = FakeGroq::start(GROQ_KEY);
        fake.set_chunk_delay(CHUNK_DELAY);
        fake.set_hang_for(SLOW_FIRST_CHUNK);
        let registry: serde_json::Map<String, Value> = TASKS
            .iter()
            .map(|(task, models)| (task.to_string(), json!(models)))
            .collect();
        let registry = Value::Object(registry).to_string();
        let client_keys = format!("{CLIENT_NAME}:{CLIENT_KEY}");
        let timeout = ATTEMPT_TIMEOUT_MS.to_string();
        let base_url = fake.base_url();
        let started = Instant::now();
        let worker = Worker::start(&[
            ("MODEL_REGISTRY", &registry),
            ("ROUTER_API_KEYS", &client_keys),
            ("GROQ_API_KEY", GROQ_KEY),
            ("GROQ_BASE_URL", &base_url),
            ("ATTEMPT_TIMEOUT_MS", &timeout),
            ("STREAM_RELAY", relay),
        ]);
        let n = STACKS_STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!(
            "e2e_sdk: wrangler dev #{n} (STREAM_RELAY={relay}) ready on port {} (pid {}) in {:?}; \
             fake Groq on {}",
            worker.port(),
            worker.pid(),
            started.elapsed(),
            base_url
        );
        Stack {
            worker,
            fake,
            relay,
        }
    }

    /// The models called at the fake among `models`, in arrival order.
    fn calls_among(&self, models: &[&str]) -> Vec<String> {
        self.fake
            .models_called()
            .into_iter()
            .filter(|model| models.contains(&model.as_str()))
            .collect()
    }

    /// The Worker's log lines about `request_id`, for failure messages.
    fn logs_for(&self, request_id: &str) -> String {
        self.worker
            .logs()
            .lines()
            .filter(|line| line.contains(request_id))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `event: request` log line for `request_id`; panics with the logs if none comes.
    fn request_line(&self, request_id: &str) -> Value {
        self.worker
            .wait_for_log_json(Duration::from_secs(10), |line| {
                line["event"] == "request" && line["request_id"] == request_id
            })
            .unwrap_or_else(|| {
                panic!(
                    "no request log line for {request_id}; logs:\n{}",
                    self.worker.logs()
                )
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

fn chat_body(task: Option<&str>, stream: bool) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": PROMPT}]});
    if let Some(task) = task {
        body["model"] = json!(task);
    }
    if stream {
        body["stream"] = json!(true);
    }
    body
}

fn client_headers<'a>(
    authorization: &'a str,
    request_id: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", authorization),
    ];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id));
    }
    headers
}

fn post(stack: &Stack, path: &str, body: &Value, request_id: Option<&str>) -> http::Response {
    let authorization = format!("Bearer {CLIENT_KEY}");
    http::send(
        stack.worker.port(),
        "POST",
        path,
        &client_headers(&authorization, request_id),
        body.to_string().as_bytes(),
    )
}

fn post_stream(stack: &Stack, path: &str, body: &Value, request_id: &str) -> http::StreamResponse {
    let authorization = format!("Bearer {CLIENT_KEY}");
    http::stream(
        stack.worker.port(),
        "POST",
        path,
        &client_headers(&authorization, Some(request_id)),
        body.to_string().as_bytes(),
    )
}

fn get(stack: &Stack, path: &str) -> http::Response {
    http::get(stack.worker.port(), path, Some(CLIENT_KEY))
}

/// The same request straight to the fake, naming `model`: what the fake sends for it.
fn direct_stream(fake: &FakeGroq, body: &Value, model: &str) -> http::StreamResponse {
    let mut body = body.clone();
    body["model"] = json!(model);
    let authorization = format!("Bearer {GROQ_KEY}");
    http::stream(
        fake.port(),
        "POST",
        GROQ_CHAT,
        &client_headers(&authorization, None),
        body.to_string().as_bytes(),
    )
}

fn without_model(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("model");
    }
    body
}

/// Panics with the body and the Worker's log lines unless the stream's head says 200.
fn assert_stream_ok(
    stack: &Stack,
    response: http::StreamResponse,
    request_id: &str,
) -> http::StreamResponse {
    if response.status == 200 {
        return response;
    }
    let status = response.status;
    let headers = response.headers.clone();
    let body = response.finish().text();
    panic!(
        "{request_id}: status {status}, headers {headers:?}, body:\n{body}\nworker log lines:\n{}",
        stack.logs_for(request_id)
    );
}

fn header<'a>(response: &'a http::StreamResponse, name: &str) -> &'a str {
    response
        .header(name)
        .unwrap_or_else(|| panic!("no `{name}` header in {:?}", response.headers))
}

// ---------------------------------------------------------------------------------------------
// Streams

/// `text` with the ids and timestamp the fake makes up for each stream replaced by placeholders,
/// so two streams of the same model compare byte for byte.
fn normalized(text: &str) -> String {
    let first = sse_events(text.as_bytes())
        .first()
        .and_then(SseEvent::json)
        .unwrap_or_else(|| panic!("no JSON first event in {text:?}"));
    let chat_id = first["id"].as_str().expect("the first chunk has an `id`");
    let groq_id = first["x_groq"]["id"]
        .as_str()
        .expect("the first chunk has `x_groq.id`");
    let created = &first["created"];
    text.replace(chat_id, "<chat-id>")
        .replace(groq_id, "<x-groq-id>")
        .replace(&format!("\"created\":{created}"), "\"created\":0")
}

/// `(event, data)` of every event, ids normalized.
fn events(text: &str) -> Vec<(Option<String>, String)> {
    sse_events(normalized(text).as_bytes())
        .into_iter()
        .map(|event| (event.event, event.data))
        .collect()
}

/// The `delta.content`s of every chunk, joined.
fn content_of(text: &str) -> String {
    sse_events(text.as_bytes())
        .iter()
        .filter_map(SseEvent::json)
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

fn assert_ends_with_done(body: &StreamBody) {
    assert_eq!(body.end, StreamEnd::Complete, "{}", body.text());
    let events = sse_events(&body.bytes());
    assert_eq!(
        events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "{}",
        body.text()
    );
    assert_eq!(
        events.iter().filter(|e| e.data == "[DONE]").count(),
        1,
        "{}",
        body.text()
    );
}

/// The error object of the router's last event, checked to be OpenAI-shaped: a plain `data:`
/// event holding `{"error":{"message","type","code"[,"param"]}}` and nothing else.
fn error_event(body: &StreamBody) -> Value {
    let events = sse_events(&body.bytes());
    let last = events.last().expect("at least one event");
    assert_eq!(last.event, None, "the error event is a plain `data:` event");
    let value = last
        .json()
        .unwrap_or_else(|| panic!("the last event is not JSON: {:?}", last.data));
    let object = value.as_object().expect("an object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["error"], "{value}");
    let error = &value["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{value}"
    );
    assert!(error["type"].is_string(), "{value}");
    assert!(error["code"].is_string(), "{value}");
    for key in error.as_object().expect("`error` is an object").keys() {
        assert!(
            ["message", "type", "code", "param"].contains(&key.as_str()),
            "unexpected `error.{key}` in {value}"
        );
    }
    assert!(
        !events.iter().any(|e| e.data == "[DONE]"),
        "a broken stream must not end with [DONE]:\n{}",
        body.text()
    );
    error.clone()
}

/// A stream of `task` (chain of one `ok-` model) on `path`: relayed byte for byte, incrementally.
fn assert_relays_the_fakes_stream(stack: &Stack, path: &str, task: &str, model_in_body: bool) {
    let model = chain(task)[0];
    let request_id = format!("e2e-sdk-{task}");
    let body = chat_body(model_in_body.then_some(task), true);

    let response = assert_stream_ok(
        stack,
        post_stream(stack, path, &body, &request_id),
        &request_id,
    );
    assert!(
        header(&response, "content-type").starts_with("text/event-stream"),
        "{:?}",
        response.headers
    );
    assert_eq!(header(&response, "x-model-used"), model);
    assert_eq!(header(&response, "x-attempts"), format!("{model}=ok(200)"));
    assert_eq!(header(&response, "x-task-type"), task);
    assert_eq!(header(&response, "x-request-id"), request_id);
    let routed = response.finish();
    assert_ends_with_done(&routed);

    let calls: Vec<_> = stack
        .fake
        .calls()
        .into_iter()
        .filter(|call| call.model.as_deref() == Some(model))
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].path, GROQ_CHAT);
    assert_eq!(without_model(&calls[0].body), without_model(&body));

    let direct = direct_stream(&stack.fake, &body, model).finish();
    assert_ends_with_done(&direct);
    // The same events, data payloads byte for byte, and nothing between them either.
    assert_eq!(events(&routed.text()), events(&direct.text()));
    assert_eq!(normalized(&routed.text()), normalized(&direct.text()));
    assert_eq!(content_of(&routed.text()), format!("hello from {model}"));

    // Forwarded as it arrives: the fake spaces its 6 events `CHUNK_DELAY` apart.
    let first = routed.pieces.first().expect("a first piece");
    let last = routed.pieces.last().expect("a last piece");
    let spread = last.at - first.at;
    assert!(
        spread >= CHUNK_DELAY * 3,
        "the stream arrived all at once ({} pieces within {spread:?}): buffered, not relayed",
        routed.pieces.len()
    );
    assert!(
        sse_events(&first.bytes).len() < sse_events(&routed.bytes()).len(),
        "the first piece held the whole answer"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests: plain answers, errors, models

#[test]
fn sdk_routes_pass_groqs_completion_through_with_routing_headers_after_fallback() {
    let stack = stack();
    let task = "sdk-fallback";
    let models = chain(task);
    // Fields Groq knows and one it does not; all must reach Groq unchanged, only `model` replaced.
    let body = json!({
        "model": task,
        "messages": [
            {"role": "system", "content": "Be brief. Ünïcödé ✓ \"quoted\" \\ backslash"},
            {"role": "user", "content": PROMPT},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "seed": 7,
        "user": "u-42",
        "stop": ["\n\n"],
        "response_format": {"type": "text"},
        "x_unknown_field": {"nested": [1, 2.5, null, true, "s"]},
    });

    for (path, request_id) in [(CHAT, Some("e2e-sdk-passthrough-v1")), (OPENAI_CHAT, None)] {
        let response = post(stack, path, &body, request_id);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("x-model-used"), Some("ok-sdkfb"), "{path}");
        // The second request already knows the model is gone: health memory skips it.
        let attempts = if path == CHAT {
            "gone-sdkfb=model_gone(404), ok-sdkfb=ok(200)"
        } else {
            "gone-sdkfb=skipped(gone), ok-sdkfb=ok(200)"
        };
        assert_eq!(response.header("x-attempts"), Some(attempts), "{path}");
        assert_eq!(response.header("x-task-type"), Some(task), "{path}");
        let id = response.header("x-request-id").expect("x-request-id");
        match request_id {
            Some(sent) => assert_eq!(id, sent, "{path}: the caller's id is kept"),
            None => assert!(
                id.len() == 20
                    && id.starts_with("req_")
                    && id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
                "{path}: generated id {id:?}"
            ),
        }

        // Groq's completion as Groq sent it: nothing added, nothing renamed.
        let completion = response.json();
        let mut keys: Vec<&str> = completion
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "choices",
                "created",
                "id",
                "model",
                "object",
                "service_tier",
                "system_fingerprint",
                "usage",
                "x_groq"
            ],
            "{completion}"
        );
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["model"], "ok-sdkfb", "the model that answered");
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            "hello from ok-sdkfb"
        );
        assert!(completion["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")));
        assert!(completion["x_groq"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_01fake")));
        assert_eq!(completion["system_fingerprint"], "fp_fakegroq01");
        assert_eq!(completion["service_tier"], "on_demand");
        assert_eq!(
            completion["usage"],
            json!({"queue_time": 0.0051, "prompt_tokens": PROMPT_TOKENS, "prompt_time": 0.0042,
                   "completion_tokens": COMPLETION_TOKENS, "completion_time": 0.0218,
                   "total_tokens": TOTAL_TOKENS, "total_time": 0.026})
        );
    }

    let expected = ["gone-sdkfb", "ok-sdkfb", "ok-sdkfb"];
    assert_eq!(stack.calls_among(models), expected);
    let calls: Vec<_> = stack
        .fake
        .calls()
        .into_iter()
        .filter(|call| call.model.as_deref().is_some_and(|m| models.contains(&m)))
        .collect();
    for (call, model) in calls.iter().zip(expected) {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, GROQ_CHAT);
        assert!(call.authorized, "Groq gets `GROQ_API_KEY`: {call:?}");
        assert!(
            call.headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
            "the client key reached Groq: {call:?}"
        );
        assert_eq!(call.body["model"], *model);
        assert_eq!(without_model(&call.body), without_model(&body));
    }
}

#[test]
fn unknown_task_is_404_model_not_found_on_both_sdk_paths() {
    let stack = stack();
    for path in [CHAT, OPENAI_CHAT] {
        for stream in [false, true] {
            let response = post(stack, path, &chat_body(Some("no-such-task"), stream), None);
            assert_eq!(response.status, 404, "{path}: {}", response.text());
            assert_eq!(response.header("content-type"), Some("application/json"));
            assert!(response.header("x-request-id").is_some());
            let error = &response.json()["error"];
            assert_eq!(error["code"], "model_not_found", "{path}");
            assert_eq!(error["param"], "model", "{path}");
            assert_eq!(error["type"], "invalid_request_error", "{path}");
            let message = error["message"].as_str().expect("a message");
            assert!(message.contains("`no-such-task`"), "{message}");
            assert!(message.contains("`sdk-fallback`"), "known tasks: {message}");
        }
    }
    // The task route names its own code and has no `model` parameter to blame.
    let response = post(
        stack,
        "/v1/tasks/no-such-task",
        &chat_body(None, false),
        None,
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "unknown_task");
    assert!(!stack
        .fake
        .models_called()
        .iter()
        .any(|m| m == "no-such-task"));
}

#[test]
fn models_endpoints_list_every_task_and_describe_one() {
    let stack = stack();
    let mut tasks: Vec<&str> = TASKS.iter().map(|(task, _)| *task).collect();
    tasks.sort_unstable();
    for path in ["/v1/models", "/openai/v1/models"] {
        let response = get(stack, path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let list = response.json();
        assert_eq!(list["object"], "list");
        let data = list["data"].as_array().expect("`data` is a list");
        let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
        assert_eq!(ids, tasks, "{path}");
        for model in data {
            assert_eq!(model["object"], "model", "{model}");
            assert_eq!(model["owned_by"], "task-router", "{model}");
        }
    }
    for path in ["/v1/models/stream-v1", "/openai/v1/models/stream-v1"] {
        let response = get(stack, path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(
            response.json(),
            json!({"id": "stream-v1", "object": "model", "created": 0, "owned_by": "task-router"})
        );
    }
    let response = get(stack, "/v1/models/no-such-task");
    assert_eq!(response.status, 404, "{}", response.text());
    let error = &response.json()["error"];
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    // The task list is for clients only.
    let anonymous = http::get(stack.worker.port(), "/v1/models", None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

// ---------------------------------------------------------------------------------------------
// Tests: streams

#[test]
fn stream_on_v1_chat_completions_is_relayed_byte_for_byte_as_it_arrives() {
    assert_relays_the_fakes_stream(stack(), CHAT, "stream-v1", true);
}

#[test]
fn stream_on_openai_v1_chat_completions_is_relayed_byte_for_byte_as_it_arrives() {
    assert_relays_the_fakes_stream(stack(), OPENAI_CHAT, "stream-openai", true);
}

#[test]
fn stream_on_the_task_route_is_relayed_byte_for_byte_as_it_arrives() {
    assert_relays_the_fakes_stream(stack(), "/v1/tasks/stream-task", "stream-task", false);
}

#[test]
fn piped_stream_is_relayed_byte_for_byte_as_it_arrives() {
    assert_relays_the_fakes_stream(piped(), CHAT, "stream-v1", true);
    assert_relays_the_fakes_stream(piped(), "/v1/tasks/stream-task", "stream-task", false);
}

/// A chain whose first model fails before its first chunk, the second answering: the caller gets
/// exactly the second model's stream, and `x-attempts` shows the first.
fn assert_falls_back_to_the_second_models_stream(
    stack: &Stack,
    task: &str,
    first_attempt: &str,
) -> Duration {
    let models = chain(task);
    let answering = models[1];
    let request_id = format!("e2e-sdk-{task}");
    let body = chat_body(Some(task), true);

    let response = post_stream(stack, CHAT, &body, &request_id);
    let to_head = response.sent_at.elapsed();
    let response = assert_stream_ok(stack, response, &request_id);
    assert!(header(&response, "content-type").starts_with("text/event-stream"));
    assert_eq!(header(&response, "x-model-used"), answering);
    assert_eq!(
        header(&response, "x-attempts"),
        format!("{first_attempt}, {answering}=ok(200)")
    );
    let routed = response.finish();
    assert_ends_with_done(&routed);
    assert_eq!(stack.calls_among(models), models);

    let direct = direct_stream(&stack.fake, &body, answering).finish();
    assert_eq!(events(&routed.text()), events(&direct.text()));
    assert_eq!(
        content_of(&routed.text()),
        format!("hello from {answering}")
    );

    let line = stack.request_line(&request_id);
    assert_eq!(line["outcome"], "ok", "{line}");
    assert_eq!(line["model"], answering, "{line}");
    assert_eq!(line["attempts"], 2, "{line}");
    assert_eq!(line["fallback_used"], true, "{line}");
    to_head
}

#[test]
fn stream_falls_back_when_the_first_model_closes_before_any_chunk() {
    assert_falls_back_to_the_second_models_stream(
        stack(),
        "stream-empty",
        "streamempty-sempty=upstream_error(200)",
    );
}

#[test]
fn piped_stream_falls_back_when_the_first_model_closes_before_any_chunk() {
    assert_falls_back_to_the_second_models_stream(
        piped(),
        "stream-empty",
        "streamempty-sempty=upstream_error(200)",
    );
}

#[test]
fn stream_falls_back_when_the_first_model_is_silent_past_the_attempt_timeout() {
    let stack = stack();
    let to_head = assert_falls_back_to_the_second_models_stream(
        stack,
        "stream-slow",
        "streamslow-sslow=timeout",
    );
    let timeout = Duration::from_millis(ATTEMPT_TIMEOUT_MS);
    assert!(
        to_head >= timeout - Duration::from_millis(100) && to_head < SLOW_FIRST_CHUNK,
        "the answer began after {to_head:?}: expected the slow model to be abandoned after \
         {timeout:?}, before its first chunk at {SLOW_FIRST_CHUNK:?}; worker log lines:\n{}",
        stack.logs_for("e2e-sdk-stream-slow")
    );
    // The abandoned model's fetch was aborted while a read of its body was pending; nothing of
    // that may surface as an uncaught error. (This does not prove the relay keeps that read's
    // callbacks alive: with them freed early, no error reached the log either.)
    thread::sleep(Duration::from_millis(500));
    let logs = stack.worker.logs();
    for needle in ["Uncaught", "after being dropped", "closure invoked"] {
        assert!(!logs.contains(needle), "{needle:?} in the logs:\n{logs}");
    }
}

/// A committed stream that breaks: the caller gets the events before the break as the fake sent
/// them, then the router's error event, no `[DONE]`, and the next model is never called.
fn assert_broken_stream_ends_with_an_error_event(stack: &Stack, task: &str) -> Value {
    let models = chain(task);
    let (broken, next) = (models[0], models[1]);
    let request_id = format!("e2e-sdk-{task}");
    let body = chat_body(Some(task), true);

    let response = assert_stream_ok(
        stack,
        post_stream(stack, CHAT, &body, &request_id),
        &request_id,
    );
    assert!(header(&response, "content-type").starts_with("text/event-stream"));
    assert_eq!(header(&response, "x-model-used"), broken);
    assert_eq!(header(&response, "x-attempts"), format!("{broken}=ok(200)"));
    let routed = response.finish();
    assert_eq!(
        routed.end,
        StreamEnd::Complete,
        "the router should close its body properly after the error event:\n{}",
        routed.text()
    );
    let error = error_event(&routed);
    assert!(!routed.text().contains("org_"), "{}", routed.text());

    // Everything before the router's error event is what the fake sent before it broke: with
    // `filter`, without Groq's own error event (held back); with `pipe`, the runtime has relayed
    // that too, as Groq sent it.
    let direct = direct_stream(&stack.fake, &body, broken).finish();
    let mut fakes: Vec<_> = events(&direct.text());
    if stack.relay == "filter" {
        fakes.retain(|(event, _)| event.as_deref() != Some("error"));
    }
    let mut relayed = events(&routed.text());
    relayed.pop();
    assert_eq!(relayed, fakes);
    assert_eq!(content_of(&routed.text()), "hello");

    // Committed to the first model: whatever happens, the next one is not asked.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.fake.calls_to(next), 0, "`{next}` was called");
    assert_eq!(stack.fake.calls_to(broken), 2, "the router's call and ours");

    let line = stack.request_line(&request_id);
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["model"], broken, "{line}");
    assert_ne!(line["outcome"], "ok", "{line}");
    assert_eq!(line["outcome"], error_code_logged(&error), "{line}");
    error
}

/// With `pipe`, a stream Groq breaks off (dropped, or stopped for going quiet) fails the runtime's
/// pipe; the router then writes its own error event after Groq's last bytes, as with `filter`.
fn assert_piped_break(stack: &Stack, task: &str, code: &str) {
    let error = assert_broken_stream_ends_with_an_error_event(stack, task);
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(error["type"], "api_error", "{error}");
}

/// The request line's `outcome` for a broken stream: the router's own code for the break.
fn error_code_logged(error: &Value) -> &'static str {
    match error["code"].as_str() {
        Some("stream_incomplete") => "stream_incomplete",
        Some("stream_interrupted") => "stream_interrupted",
        Some("stream_timeout") => "stream_timeout",
        _ => "upstream_stream_error",
    }
}

#[test]
fn stream_dropped_after_its_first_chunk_ends_with_an_error_event_without_done_or_fallback() {
    // The connection closes mid-body (no terminating chunk): the runtime's read fails.
    let error = assert_broken_stream_ends_with_an_error_event(stack(), "stream-drop");
    assert_eq!(error["code"], "stream_interrupted", "{error}");
    assert_eq!(error["type"], "api_error", "{error}");
}

#[test]
fn piped_stream_dropped_after_its_first_chunk_ends_with_an_error_event_without_done_or_fallback() {
    assert_piped_break(piped(), "stream-drop", "stream_interrupted");
}

#[test]
fn stream_ending_without_done_ends_with_an_incomplete_event_without_fallback() {
    // The body ends properly, but Groq never said `[DONE]`: the answer may be cut short.
    let error = assert_broken_stream_ends_with_an_error_event(stack(), "stream-nodone");
    assert_eq!(error["code"], "stream_incomplete", "{error}");
    assert_eq!(error["type"], "api_error", "{error}");
}

#[test]
fn piped_stream_ending_without_done_ends_with_an_incomplete_event_without_fallback() {
    let error = assert_broken_stream_ends_with_an_error_event(piped(), "stream-nodone");
    assert_eq!(error["code"], "stream_incomplete", "{error}");
    assert_eq!(error["type"], "api_error", "{error}");
}

#[test]
fn stream_silent_after_its_first_chunk_past_the_idle_timeout_ends_with_a_timeout_event() {
    // (No timing check here: the helper also reads the stall model's stream directly, which
    // lasts past the idle timeout whatever the router does; the error code is the proof.)
    let error = assert_broken_stream_ends_with_an_error_event(stack(), "stream-stall");
    assert_eq!(error["code"], "stream_timeout", "{error}");
    assert_eq!(error["type"], "api_error", "{error}");
}

#[test]
fn piped_stream_silent_after_its_first_chunk_past_the_idle_timeout_ends_with_a_timeout_event() {
    assert_piped_break(piped(), "stream-stall", "stream_timeout");
}

#[test]
fn stream_lasting_longer_than_the_idle_timeout_completes_while_chunks_keep_coming() {
    long_stream_completes(stack());
}

#[test]
fn piped_stream_lasting_longer_than_the_idle_timeout_completes_while_chunks_keep_coming() {
    long_stream_completes(piped());
}

fn long_stream_completes(stack: &Stack) {
    // Every gap is CHUNK_DELAY, the whole stream several times ATTEMPT_TIMEOUT_MS: the idle
    // limit is per gap, not per stream.
    let lasts = CHUNK_DELAY * (LONG_PIECES as u32 + 2);
    assert!(lasts > Duration::from_millis(ATTEMPT_TIMEOUT_MS));
    let task = "stream-long";
    let (model, next) = (chain(task)[0], chain(task)[1]);
    let request_id = "e2e-sdk-stream-long";
    let started = Instant::now();
    let response = assert_stream_ok(
        stack,
        post_stream(stack, CHAT, &chat_body(Some(task), true), request_id),
        request_id,
    );
    assert_eq!(header(&response, "x-model-used"), model);
    let routed = response.finish();
    assert!(started.elapsed() >= lasts, "{:?}", started.elapsed());
    assert_ends_with_done(&routed);
    assert_eq!(content_of(&routed.text()), "tick ".repeat(LONG_PIECES));
    assert_eq!(stack.fake.calls_to(next), 0);
    let line = stack.request_line(request_id);
    assert_eq!(line["outcome"], "ok", "{line}");
}

#[test]
fn stream_error_event_after_its_first_chunk_is_relayed_openai_shaped_without_done_or_fallback() {
    groq_error_event_mid_stream(stack());
}

/// With `pipe`, Groq's own error event reaches the caller as Groq sent it (the runtime relays it
/// before the router reads its copy); the router's OpenAI-shaped one still ends the stream.
#[test]
fn piped_stream_error_event_is_followed_by_the_routers_without_done_or_fallback() {
    let stack = piped();
    groq_error_event_mid_stream(stack);
    let routed = post_stream(
        stack,
        CHAT,
        &chat_body(Some("stream-error"), true),
        "e2e-sdk-piped-error-again",
    )
    .finish();
    let events = sse_events(&routed.bytes());
    let groqs: Vec<_> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("error"))
        .collect();
    assert_eq!(groqs.len(), 1, "{}", routed.text());
    let groqs = groqs[0].json().expect("Groq's error event is JSON");
    assert_eq!(groqs["error"]["code"], "tool_use_failed", "{groqs}");
    assert_eq!(
        groqs["error"]["status_code"], 400,
        "Groq's own shape: {groqs}"
    );
    assert!(events.last().is_some_and(|e| e.event.is_none()));
}

fn groq_error_event_mid_stream(stack: &Stack) {
    let error = assert_broken_stream_ends_with_an_error_event(stack, "stream-error");
    assert_eq!(error["code"], "tool_use_failed", "{error}");
    assert_eq!(error["type"], "invalid_request_error", "{error}");
    let message = error["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Tool call validation failed"),
        "{message}"
    );
    assert!(!message.contains(ORG_ID), "{message}");
}

#[test]
fn stream_request_log_line_carries_usage_and_logs_never_hold_the_prompt_or_a_key() {
    stream_usage_logged(stack());
}

#[test]
fn piped_stream_request_log_line_carries_usage_and_logs_never_hold_the_prompt_or_a_key() {
    stream_usage_logged(piped());
}

fn stream_usage_logged(stack: &Stack) {
    let task = "stream-logs";
    let model = chain(task)[0];
    // Groq's own usage in the final chunk's `x_groq.usage`, then with OpenAI's `include_usage`.
    for include_usage in [false, true] {
        let request_id = format!("e2e-sdk-logs-include-usage-{include_usage}");
        let mut body = chat_body(Some(task), true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let routed = post_stream(stack, CHAT, &body, &request_id).finish();
        assert_ends_with_done(&routed);
        let usage_chunks = sse_events(&routed.bytes())
            .iter()
            .filter_map(SseEvent::json)
            .filter(|chunk| chunk["choices"] == json!([]) && chunk["usage"].is_object())
            .count();
        assert_eq!(
            usage_chunks,
            usize::from(include_usage),
            "{}",
            routed.text()
        );

        let line = stack.request_line(&request_id);
        assert_eq!(line["level"], "info", "{line}");
        assert_eq!(line["outcome"], "ok", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["task"], task, "{line}");
        assert_eq!(line["model"], model, "{line}");
        assert_eq!(line["client"], CLIENT_NAME, "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert_eq!(line["prompt_tokens"], PROMPT_TOKENS, "{line}");
        assert_eq!(line["completion_tokens"], COMPLETION_TOKENS, "{line}");
        assert_eq!(line["total_tokens"], TOTAL_TOKENS, "{line}");
        assert!(line["duration_ms"].as_u64().is_some(), "{line}");
        // Answered by the first model called, so the request line is its only line (an attempt
        // line would have been written before it, when the stream was committed).
        let others: Vec<Value> = stack
            .worker
            .log_lines_json()
            .into_iter()
            .filter(|l| l["request_id"] == request_id.as_str() && l["event"] != "request")
            .collect();
        assert!(others.is_empty(), "{others:#?}");
    }
    assert_eq!(stack.fake.calls_to(model), 2);

    // Every request in this file (and the Python script) sends a known prompt; none may show.
    let logs = stack.worker.logs();
    for secret in [PROMPT, "canary prompt", PY_PROMPT, GROQ_KEY, CLIENT_KEY] {
        assert!(!logs.contains(secret), "the logs hold {secret:?}:\n{logs}");
    }
}

#[test]
fn time_to_first_byte_through_the_router_vs_straight_from_the_fake() {
    time_to_first_byte(stack());
}

#[test]
fn piped_time_to_first_byte_through_the_router_vs_straight_from_the_fake() {
    time_to_first_byte(piped());
}

fn time_to_first_byte(stack: &Stack) {
    const SAMPLES: usize = 5;
    let task = "stream-ttfb";
    let model = chain(task)[0];
    let body = chat_body(Some(task), true);
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for sample in 0..SAMPLES {
        let mut response = direct_stream(&stack.fake, &body, model);
        let first = response.next().expect("a first piece from the fake");
        direct.push(first.at - response.sent_at);
        assert_ends_with_done(&response.finish());

        let request_id = format!("e2e-sdk-ttfb-{sample}");
        let mut response = post_stream(stack, CHAT, &body, &request_id);
        let first = response.next().expect("a first piece through the router");
        routed.push(first.at - response.sent_at);
        assert_ends_with_done(&response.finish());
    }
    direct.sort_unstable();
    routed.sort_unstable();
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    eprintln!(
        "e2e_sdk TTFB over {SAMPLES} streams, ms (min/median/max): straight from the fake {}/{}/{}; \
         through the router {}/{}/{}",
        ms(&direct[0]),
        ms(&direct[SAMPLES / 2]),
        ms(&direct[SAMPLES - 1]),
        ms(&routed[0]),
        ms(&routed[SAMPLES / 2]),
        ms(&routed[SAMPLES - 1]),
    );
    assert!(
        routed[SAMPLES / 2] < Duration::from_secs(1),
        "median TTFB through the router {:?}",
        routed[SAMPLES / 2]
    );
    assert_eq!(stack.fake.calls_to(model), 2 * SAMPLES);
}

#[test]
fn a_caller_leaving_mid_stream_stops_the_relay_and_is_logged_as_such() {
    caller_leaves_mid_stream(stack());
}

#[test]
fn piped_a_caller_leaving_mid_stream_stops_the_relay_and_is_logged_as_such() {
    caller_leaves_mid_stream(piped());
}

/// The caller takes the first piece of a long stream and hangs up: the request line says
/// `client_disconnected` (no failure of the model) long before the stream would have ended.
fn caller_leaves_mid_stream(stack: &Stack) {
    let task = "stream-leave";
    let (model, next) = (chain(task)[0], chain(task)[1]);
    let request_id = format!("e2e-sdk-leave-{}", stack.relay);
    let mut response = assert_stream_ok(
        stack,
        post_stream(stack, CHAT, &chat_body(Some(task), true), &request_id),
        &request_id,
    );
    assert_eq!(header(&response, "x-model-used"), model);
    response.next().expect("a first piece");
    let left = Instant::now();
    drop(response);
    let line = stack.request_line(&request_id);
    let noticed = left.elapsed();
    assert_eq!(line["outcome"], "client_disconnected", "{line}");
    assert_eq!(line["model"], model, "{line}");
    let lasts = CHUNK_DELAY * LONG_PIECES as u32;
    assert!(
        noticed < lasts / 2,
        "the relay noticed after {noticed:?}; the stream lasts {lasts:?}"
    );
    assert_eq!(stack.fake.calls_to(next), 0);
}

// ---------------------------------------------------------------------------------------------
// Tests: the official Python SDKs

#[test]
fn official_python_sdks_drive_the_router() {
    python_sdks(stack());
}

#[test]
fn piped_official_python_sdks_drive_the_router() {
    python_sdks(piped());
}

fn python_sdks(stack: &Stack) {
    process::require_python_sdks();

    let mut command = python();
    command
        .arg("tests/sdk/sdk_clients.py")
        .arg(stack.worker.base_url())
        .arg(CLIENT_KEY);
    let script = run_with_timeout(&mut command, Duration::from_secs(180));
    eprintln!("tests/sdk/sdk_clients.py:\n{}", script.output());
    assert!(
        script.succeeded(),
        "tests/sdk/sdk_clients.py failed ({:?}):\n{}\n--- worker logs\n{}",
        script.status,
        script.output(),
        stack.worker.logs()
    );

    // Per SDK: one plain answer and one stream. `gone-py` said 404 once; health memory skips it
    // for the three requests after.
    let chat = chain("py-chat");
    assert_eq!(
        stack.calls_among(chat),
        ["gone-py", "ok-py", "ok-py", "ok-py", "ok-py"]
    );
    let ok_bodies: Vec<Value> = stack
        .fake
        .calls()
        .into_iter()
        .filter(|call| call.model.as_deref() == Some("ok-py"))
        .map(|call| call.body)
        .collect();
    let streamed = ok_bodies.iter().filter(|b| b["stream"] == true).count();
    assert_eq!(streamed, 2, "{ok_bodies:?}");
    let with_usage = ok_bodies
        .iter()
        .filter(|b| b["stream_options"]["include_usage"] == true)
        .count();
    assert_eq!(
        with_usage, 1,
        "the OpenAI client asks for usage: {ok_bodies:?}"
    );
    for body in &ok_bodies {
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": PY_PROMPT}])
        );
    }
    // Broken streams: one per SDK, never retried on the next model.
    assert_eq!(stack.fake.calls_to("streamdrop-py"), 2);
    assert_eq!(stack.fake.calls_to("ok-pydrop"), 0);
    assert_eq!(stack.fake.calls_to("streamerror-py"), 2);
    assert_eq!(stack.fake.calls_to("ok-pyerr"), 0);
    // Task names never reach Groq.
    let called = stack.fake.models_called();
    for task in ["py-chat", "py-drop", "py-error", "no-such-task"] {
        assert!(!called.iter().any(|m| m == task), "`{task}` reached Groq");
    }
}
