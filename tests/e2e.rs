//! End-to-end tests of what only workerd shows: the real Worker (the bundle `scripts/build.sh`
//! builds) under `wrangler dev`, calling a `FakeGroq` on 127.0.0.1 that answers with Groq's real
//! statuses, headers, bodies and SSE, chosen by the model id's prefix (`ok-…`, `gone-…`,
//! `hang-…`). Shown here: `fetch` with its timeouts and the runtime's words for a broken
//! connection, the Groq headers it reads and the headers it writes, raw methods and paths, body
//! limits on the bytes actually read, concurrency in one isolate, bindings from `wrangler.toml`,
//! the stream pipe (`STREAM_RELAY=pipe`, the default) through every way a stream breaks, a
//! `filter` stream, the official Python SDKs, the scheduled probe, and gone verdicts shared
//! through KV by two Workers. The rules all this runs through are shown natively
//! (`tests/fallback.rs`, `streaming.rs`, `health.rs`, `security.rs`), not again here.
//!
//! Run: `cargo test --test e2e` (`-- --nocapture` for the SDK output). Needs `node`/`npm` and the
//! Rust toolchain (the first run builds the bundle, see `scripts/build.sh`) and `python3` with the
//! official SDKs: `pip install -r tests/sdk/requirements.txt`. Talks to 127.0.0.1 only.
//!
//! The tests share one Worker ([`router`]) and run in parallel: each has tasks and model ids of its
//! own in `MODEL_REGISTRY` and its own request ids, so it counts its own calls at the fake and
//! reads its own log lines. The `filter` relay and the KV pair have Workers of their own.

mod e2e_support;

use e2e_support::attempts::{outcomes, pairs};
use e2e_support::fake_groq::{LONG_PIECES, ORG_ID};
use e2e_support::fixtures::*;
use e2e_support::http::{self, sse_events, StreamBody, StreamEnd, StreamResponse};
use e2e_support::process::{self, python, run_with_timeout};
use e2e_support::worker::Extras;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Small, so that hung models cost little time.
const ATTEMPT_TIMEOUT_MS: u64 = 1500;
/// How long `hang`, `bodyhang` and `streamstall` hold on, and `streamslow` waits: well past the
/// attempt timeout.
const HANG_FOR: Duration = Duration::from_secs(4);
/// The fake's pause between two SSE events: long enough that a buffered answer would show.
const CHUNK_DELAY: Duration = Duration::from_millis(100);
const MAX_REQUEST_BYTES: usize = 65_536;
/// The OpenAI SDK's chat path on the router (`base_url = {router}/v1`).
const CHAT: &str = "/v1/chat/completions";
/// The Groq SDK's chat path on the router (`base_url = {router}`), and where the router calls Groq.
const OPENAI_CHAT: &str = "/openai/v1/chat/completions";

/// `MODEL_REGISTRY`: the tasks of every test, each with model ids no other test uses. No
/// `fallback` list, so a chain can fail as a whole.
fn registry() -> Value {
    json!({
        "sdk": ["gone-sdk", "ok-sdk"], "timeout": ["hang-to1", "ok-to2"],
        "bodytimeout": ["bodyhang-bt1", "ok-bt2"],
        "allfail": ["gone-af1", "error500-af2", "html502-af3", "drop-af4", "notcompletion-af5"],
        "ratelimits": ["ratelimited-rl1", "capacity-rl2"], "badkey": ["badkey-bk1", "ok-bk2"],
        "fast": ["ok-fast"], "limits": ["ok-limits"], "usage": ["ok-usage"],
        "burst-a": ["gone-b1", "ok-b1"], "burst-b": ["error500-b2", "drop-b2", "ok-b2"],
        "burst-c": ["ok-b3"], "stream": ["ok-stream"],
        "stream-slow": ["streamslow-sslow", "ok-sslow"], "stream-drop": ["streamdrop-sd", "ok-sd"],
        "stream-nodone": ["streamnodone-snd", "ok-snd"], "stream-error": ["streamerror-se", "ok-se"],
        "stream-stall": ["streamstall-sst", "ok-sst"], "stream-long": ["streamlong-sl", "ok-sl"],
        "stream-leave": ["streamlong-slv", "ok-slv"],
        // `tests/sdk/sdk_clients.py`
        "py-chat": ["gone-py", "ok-py"], "py-drop": ["streamdrop-py", "ok-pydrop"],
        "py-error": ["streamerror-py", "ok-pyerr"],
        "py-tools": ["notools-py", "ok-pytools"], "py-schema": ["noschema-py", "ok-pyschema"],
        // Capabilities (issue 24): one model known to lack `json_schema`, one that learns it.
        "caps": ["ratelimited-caps1", "noschema-caps2", "ok-caps3"],
        "learn": ["noschema-learn1", "ok-learn2"],
    })
}

/// `MODEL_CAPABILITIES`: `noschema-caps2` is known to lack `json_schema`; `noschema-learn1` is
/// unknown, so only Groq's refusal teaches it.
const CAPABILITIES: &str = r#"{"noschema-caps2":{"json_schema":false,"tools":true}}"#;

/// The first two models of `task`'s chain.
fn first_two(task: &str) -> (String, String) {
    let chain = &registry()[task];
    let model = |i: usize| {
        chain[i]
            .as_str()
            .expect("a task with two models")
            .to_string()
    };
    (model(0), model(1))
}

/// The Worker most tests share: streams piped (the default), `USAGE` bound.
fn router() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| start("pipe"))
}

/// The same configuration with `STREAM_RELAY=filter`.
fn filtered() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| start("filter"))
}

fn start(relay: &str) -> Stack {
    let (registry, timeout) = (registry().to_string(), ATTEMPT_TIMEOUT_MS.to_string());
    let max_bytes = MAX_REQUEST_BYTES.to_string();
    let mut vars = vec![
        ("MODEL_REGISTRY", registry.as_str()),
        ("ATTEMPT_TIMEOUT_MS", &timeout),
        ("MAX_REQUEST_BYTES", &max_bytes),
        ("ALLOWED_ORIGINS", ORIGIN),
        ("MODEL_CAPABILITIES", CAPABILITIES),
    ];
    // `pipe` is `wrangler.toml`'s: only `filter` is passed.
    if relay != "pipe" {
        vars.push(("STREAM_RELAY", relay));
    }
    let usage = "[[analytics_engine_datasets]]\nbinding = \"USAGE\"\ndataset = \"usage\"\n";
    let stack = Stack::start(&vars, Extras::toml(usage));
    stack.fake.set_hang_for(HANG_FOR);
    stack.fake.set_chunk_delay(CHUNK_DELAY);
    stack
}

// ---------------------------------------------------------------------------------------------
// Capabilities (issue 24): a `json_schema` request falls back past the model without it

#[test]
fn a_structured_output_request_skips_the_model_that_cannot_serve_it() {
    let stack = router();
    let schema = json!({"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}},
                   "required": ["answer"], "additionalProperties": false}}});
    let body = |tag: &str| {
        json!({"model": "caps", "messages": [{"role": "user", "content": PROMPT}],
               "response_format": schema, "user": tag})
    };
    // Rate-limited, known to lack `json_schema` (skipped without a call), answered by the third.
    let response = stack.post(CHAT, Some(CLIENT_KEY), "e2e-caps", &body("e2e-caps"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_headers(
        &response.headers,
        json!({"x-model-used": "ok-caps3", "x-attempts":
            "ratelimited-caps1=rate_limited(429), noschema-caps2=skipped(lacks_json_schema), ok-caps3=ok(200)"}),
    );
    let content = response.json()["choices"][0]["message"]["content"].clone();
    let parsed: Value = serde_json::from_str(content.as_str().unwrap_or("")).expect("JSON content");
    assert_eq!(parsed, json!({"answer": "hello from ok-caps3"}));
    assert_eq!(
        stack.models_for("e2e-caps"),
        ["ratelimited-caps1", "ok-caps3"]
    );
    // Unknown capabilities: Groq's refusal is `cannot_serve`, and remembered.
    for (id, attempts, calls) in [
        (
            "e2e-learn-1",
            "noschema-learn1=cannot_serve(400), ok-learn2=ok(200)",
            vec!["noschema-learn1", "ok-learn2"],
        ),
        (
            "e2e-learn-2",
            "noschema-learn1=skipped(lacks_json_schema), ok-learn2=ok(200)",
            vec!["ok-learn2"],
        ),
    ] {
        let mut body = body(id);
        body["model"] = json!("learn");
        let response = stack.post(CHAT, Some(CLIENT_KEY), id, &body);
        assert_eq!(response.status, 200, "{id}: {}", response.text());
        assert_eq!(response.header("x-attempts"), Some(attempts), "{id}");
        assert_eq!(stack.models_for(id), calls, "{id}");
    }
    // `/v1/routes` says what each model can do, as configured and as learned.
    let routes = http::get(stack.port(), "/v1/routes", Some(CLIENT_KEY)).json();
    let chain = |task: &str| {
        let data = routes["data"].as_array().expect("routes");
        let route = data.iter().find(|r| r["task"] == task).expect("the task");
        route["chain"].as_array().expect("a chain").clone()
    };
    assert_eq!(chain("caps")[1]["capabilities"]["json_schema"], false);
    assert_eq!(chain("caps")[0]["capabilities"], Value::Null);
    assert_eq!(chain("learn")[0]["capabilities"]["json_schema"], false);
}

// ---------------------------------------------------------------------------------------------
// Fetch: what Groq gets, timeouts, broken connections, Groq's headers

#[test]
fn groqs_completion_comes_through_a_real_fetch_that_carries_the_key_and_the_callers_body() {
    let stack = router();
    // Fields Groq knows and one it does not; all reach Groq unchanged, only `model` replaced.
    let body = |tag: &str| {
        json!({"model": "sdk", "messages": [
                {"role": "system", "content": "Be brief. Ünïcödé ✓ \"quoted\" \\ backslash"},
                {"role": "user", "content": PROMPT}],
            "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "seed": 7, "user": tag,
            "stop": ["\n\n"], "response_format": {"type": "text"},
            "x_unknown_field": {"nested": [1, 2.5, null, true, "s"]}})
    };
    // The second request knows the model is gone: the isolate's health memory skips it.
    let gone = ("e2e-sdk-v1", "gone-sdk=model_gone(404), ok-sdk=ok(200)", 2);
    let skipped = ("", "gone-sdk=skipped(gone), ok-sdk=ok(200)", 1);
    for (path, (id, attempts, calls)) in [(CHAT, gone), (OPENAI_CHAT, skipped)] {
        let tag = format!("e2e-sdk-{path}");
        let response = stack.post(path, Some(CLIENT_KEY), id, &body(&tag));
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let want = json!({"content-type": "application/json", "x-model-used": "ok-sdk",
                          "x-attempts": attempts, "x-task-type": "sdk"});
        assert_headers(&response.headers, want);
        match response.header("x-request-id").expect("x-request-id") {
            sent if !id.is_empty() => assert_eq!(sent, id, "the caller's id is kept"),
            made_up => assert_generated_id(made_up),
        }
        // Groq's completion as Groq sent it: nothing added, nothing renamed.
        let completion = response.json();
        let keys: Vec<&String> = completion.as_object().unwrap().keys().collect();
        let want = "choices created id model object service_tier system_fingerprint usage x_groq";
        assert_eq!(keys, want.split(' ').collect::<Vec<_>>());
        let want = json!({"object": "chat.completion", "model": "ok-sdk",
            "system_fingerprint": "fp_fakegroq01", "service_tier": "on_demand",
            "usage": {"queue_time": 0.0051, "prompt_tokens": 55, "prompt_time": 0.0042,
                      "completion_tokens": 12, "completion_time": 0.0218, "total_tokens": 67,
                      "total_time": 0.026}});
        assert_has(&completion, want);
        let message = json!({"role": "assistant", "content": "hello from ok-sdk"});
        assert_eq!(completion["choices"][0]["message"], message);
        let ids = [&completion["id"], &completion["x_groq"]["id"]].map(|id| id.as_str());
        let [Some(id), Some(groq_id)] = ids else {
            panic!("{completion}")
        };
        assert!(id.starts_with("chatcmpl-") && groq_id.starts_with("req_01fake"));
        // What Groq got: the provider key, JSON, the caller's body; never the client key.
        let ok_last = ["gone-sdk", "ok-sdk"][2 - calls..].to_vec();
        assert_eq!(stack.models_for(&tag), ok_last, "{path}");
        for call in stack.fake.calls().iter().filter(|c| c.body["user"] == tag) {
            let what = (call.method.as_str(), call.path.as_str(), call.authorized);
            assert_eq!(what, ("POST", OPENAI_CHAT, true), "Bearer GROQ_API_KEY");
            assert_eq!(call.header("content-type"), Some("application/json"));
            assert!(!format!("{:?}", call.headers).contains(CLIENT_KEY));
            let mut sent = body(&tag);
            sent["model"] = call.body["model"].clone();
            assert_eq!(call.body, sent);
        }
    }
    // The request line, through the console, at the default `LOG_LEVEL`.
    let line = stack.request_line("e2e-sdk-v1");
    let want = json!({"level": "info", "task": "sdk", "client": "e2e", "model": "ok-sdk",
        "outcome": "ok", "status": 200, "attempts": 2, "fallback_used": true, "prompt_tokens": 55,
        "completion_tokens": 12, "total_tokens": 67, "stream": false});
    assert_has(&line, want);
}

#[test]
fn a_hung_model_and_an_answer_stalling_after_its_head_are_left_at_the_attempt_timeout() {
    let stack = router();
    let timeout = Duration::from_millis(ATTEMPT_TIMEOUT_MS);
    // `hang` sends nothing; `bodyhang` its 200 head and half a body: the deadline covers both.
    let answered = |task: &str| {
        let ((hung, next), id) = (first_two(task), format!("e2e-{task}"));
        let started = Instant::now();
        let response = stack.ask(task, &id);
        let waited = started.elapsed();
        assert_eq!(response.status, 200, "{task}: {}", response.text());
        let attempts = format!("{hung}=timeout, {next}=ok(200)");
        let want = json!({"x-attempts": attempts, "x-model-used": next});
        assert_headers(&response.headers, want);
        let attempts = &response.json()["attempts"];
        let want = json!([{"model": hung, "outcome": "timeout", "status": null},
                          {"model": next, "outcome": "ok", "status": 200}]);
        assert_eq!(without_durations(attempts), want);
        // Abandoned at `ATTEMPT_TIMEOUT_MS`, long before the fake lets go.
        let took = Duration::from_millis(attempts[0]["duration_ms"].as_u64().unwrap());
        let early = timeout - Duration::from_millis(50);
        assert!(took >= early && took < timeout * 2, "{took:?}");
        assert!(waited >= early && waited < HANG_FOR, "{waited:?}");
        assert_eq!(stack.models_for(&id), [hung, next]);
    };
    thread::scope(|scope| {
        scope.spawn(|| answered("timeout"));
        answered("bodytimeout");
    });
}

#[test]
fn a_dropped_connection_is_told_in_the_runtimes_words_among_every_failure() {
    let stack = router();
    let id = "e2e-allfail";
    let response = stack.ask("allfail", id);
    assert_eq!(response.status, 502, "{}", response.text());
    let attempts = "gone-af1=model_gone(404), error500-af2=upstream_error(500), \
        html502-af3=upstream_error(502), drop-af4=connection_error, \
        notcompletion-af5=invalid_response(200)";
    assert_eq!(response.header("x-attempts"), Some(attempts));
    let error = &response.json()["error"];
    let want = json!({"code": "all_models_failed", "type": "api_error",
                      "message": "all 5 models for this task failed; see `attempts`"});
    assert_has(error, want);
    let want = json!([
        {"model": "gone-af1", "outcome": "model_gone", "status": 404, "code": "model_not_found"},
        {"model": "error500-af2", "outcome": "upstream_error", "status": 500},
        {"model": "html502-af3", "outcome": "upstream_error", "status": 502},
        // workerd's own words for the dropped connection.
        {"model": "drop-af4", "outcome": "connection_error", "status": null,
         "error": "Error: Network connection lost."},
        {"model": "notcompletion-af5", "outcome": "invalid_response", "status": 200},
    ]);
    assert_eq!(without_durations(&error["attempts"]), want);
    assert_eq!(json!(stack.models_for(id)), registry()["allfail"]);
    // The runtime's words pass through the redaction: no key, no Groq address.
    let address = stack.fake.base_url().replace("http://", "");
    assert_answer_holds_none_of(&response, &[PROVIDER_KEY, &address]);
}

#[test]
fn all_models_rate_limited_is_a_429_with_retry_after_from_groqs_headers() {
    let stack = router();
    let id = "e2e-ratelimits";
    let response = stack.ask("ratelimits", id);
    assert_eq!(response.status, 429, "{}", response.text());
    // `retry-after: 8` on the 429, `x-ratelimit-reset-tokens: 7.66s` (→ 8) on the 498.
    let attempts = "ratelimited-rl1=rate_limited(429), capacity-rl2=rate_limited(498)";
    let wanted = json!({"x-attempts": attempts, "retry-after": "8"});
    assert_headers(&response.headers, wanted);
    let error = &response.json()["error"];
    let want = json!({"code": "rate_limit_exceeded", "type": "rate_limit_error",
                      "message": "every model for this task is rate-limited; retry after 8 s"});
    assert_has(error, want);
    let want = json!([
        {"model": "ratelimited-rl1", "outcome": "rate_limited", "status": 429, "code": "rate_limit_exceeded"},
        {"model": "capacity-rl2", "outcome": "rate_limited", "status": 498, "code": "capacity_exceeded"}]);
    assert_eq!(without_durations(&error["attempts"]), want);
    // No Groq organisation id reaches the caller.
    assert!(!response.text().contains(ORG_ID));
    assert_eq!(json!(stack.models_for(id)), registry()["ratelimits"]);
}

#[test]
fn no_key_or_prompt_reaches_an_answer_or_the_workers_output() {
    let stack = router();
    // Groq refuses the provider key: the key was sent, and shows nowhere.
    let id = "e2e-badkey";
    let response = stack.ask("badkey", id);
    assert_eq!(response.status, 502, "{}", response.text());
    let error = &response.json()["error"];
    assert_eq!(error["code"], "provider_auth_failed");
    let says = error["message"].to_string().contains("`GROQ_API_KEY`");
    assert!(says, "{error}");
    assert_eq!(stack.models_for(id), ["badkey-bk1"]);
    let calls = stack.fake.calls();
    assert!(calls
        .iter()
        .any(|call| call.body["user"] == id && call.authorized));
    assert_answer_holds_none_of(&response, &[PROVIDER_KEY, CLIENT_KEY]);
    stack.request_line(id);
    // What every test here has made the Worker print so far.
    let secrets = [PROVIDER_KEY, CLIENT_KEY, OTHER_KEY, PROMPT, "hello from"];
    stack.assert_output_holds_none_of(&secrets);
}

// ---------------------------------------------------------------------------------------------
// The request as workerd hands it over: methods, paths, headers, bodies

#[test]
fn raw_methods_and_paths_request_ids_and_cors_headers() {
    let port = router().port();
    let head = http::send(port, "HEAD", "/healthz", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    let long = format!("/v1/{}", "x".repeat(4_000));
    let bearer = format!("Bearer {CLIENT_KEY}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let (post, get_head) = ("method_not_allowed POST", "method_not_allowed GET, HEAD");
    for (method, path, status, code) in [
        ("GET", "/v1/tasks/fast", 405, post),
        ("PUT", "/v1/tasks/fast", 405, post),
        ("DELETE", CHAT, 405, post),
        ("POST", "/healthz", 405, get_head),
        // `worker::Method` reads a method it does not know as GET; the router reads the raw one.
        ("PROPFIND", "/healthz", 405, get_head),
        ("POST", "/v1/completions", 404, "not_found"),
        // Normalized away from the task route.
        ("POST", "/v1/tasks/../../etc/passwd", 404, "not_found"),
        ("POST", "/v1/tasks/fast%00", 404, "unknown_task"),
        ("GET", long.as_str(), 404, "not_found"),
    ] {
        let response = http::send(port, method, path, &headers, b"{}");
        let what = format!("{method} {}", &path[..path.len().min(40)]);
        assert_eq!(response.status, status, "{what}: {}", response.text());
        let (code, allow) = code
            .split_once(' ')
            .map_or((code, None), |(c, a)| (c, Some(a)));
        let want = json!({"content-type": "application/json", "allow": allow});
        assert_headers(&response.headers, want);
        let want = json!({"code": code, "type": "invalid_request_error"});
        assert_has(&response.json()["error"], want);
        assert_generated_id(response.header("x-request-id").unwrap_or_default());
    }
    // The query string is no part of the path.
    let response = http::get(port, "/nowhere?x=1", None);
    let message = &response.json()["error"]["message"];
    let expected = "no route for GET /nowhere; use POST /v1/tasks/{task}";
    assert_eq!(message, expected);

    // `x-request-id`: the caller's when it is a sane token, else made up, each time anew.
    let id_of = |id: &str| {
        let response = http::send(port, "GET", "/healthz", &[("x-request-id", id)], b"");
        response
            .header("x-request-id")
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(id_of("e2e-id.1:2_3"), "e2e-id.1:2_3");
    for bad in ["has space", "semi;colon", &"a".repeat(129)] {
        assert_generated_id(&id_of(bad));
    }
    assert_ne!(id_of("has space"), id_of("has space"));

    // CORS: an allowed origin is echoed with the router's headers exposed; others get none.
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    for (origin, allowed) in [(ORIGIN, Some(ORIGIN)), ("https://evil.example", None)] {
        let headers = [headers[0], headers[1], ("origin", origin)];
        let response = http::send(port, "POST", CHAT, &headers, body.to_string().as_bytes());
        assert_eq!(response.status, 200, "{}", response.text());
        let want = json!({"access-control-allow-origin": allowed, "vary": "Origin"});
        assert_headers(&response.headers, want);
        let exposed = response
            .header("access-control-expose-headers")
            .unwrap_or_default();
        let exposes = exposed.contains("x-model-used");
        assert_eq!(exposes, allowed.is_some(), "{exposed}");
    }
}

#[test]
fn body_limits_count_the_bytes_read_and_a_malformed_request_is_refused() {
    let stack = router();
    let port = stack.port();
    let bearer = format!("Bearer {CLIENT_KEY}");
    let json = [
        ("content-type", "application/json"),
        ("authorization", &bearer),
    ];
    let send = |headers: &[(&str, &str)], body: &[u8]| {
        http::send(port, "POST", "/v1/tasks/limits", headers, body)
    };
    let refused = |r: http::Response| (r.status, r.json()["error"]["code"].clone());
    let valid = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let still_serving = || {
        assert_eq!(http::get(port, "/healthz", None).status, 200);
        let response = send(&json, valid.as_bytes());
        assert_eq!(response.status, 200, "still serving: {}", response.text());
    };
    // Over `MAX_REQUEST_BYTES` by `Content-Length`: refused unread. No `Content-Type`: refused.
    let big = vec![b' '; MAX_REQUEST_BYTES + 1];
    let expected = (413, json!("request_too_large"));
    assert_eq!(refused(send(&json, &big)), expected);
    let no_type = refused(send(&json[1..], valid.as_bytes()));
    assert_eq!(no_type, (415, json!("unsupported_media_type")));

    // Chunked, so no `Content-Length` to refuse: the bytes read count.
    let chunk = format!("{:x}\r\n{}\r\n", 8_192, "x".repeat(8_192));
    let raw = format!(
        "POST /v1/tasks/limits HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Authorization: {bearer}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {}0\r\n\r\n",
        chunk.repeat(10)
    );
    let response = http::send_raw(port, raw.as_bytes());
    assert_eq!(refused(response), (413, json!("request_too_large")));
    // `wrangler dev`'s local proxy (not the Worker) stalls the next request after a client
    // abandons a large chunked upload the Worker did not read to the end; it does so for a route
    // that never touches the body too. Give it a few short tries, then require service.
    let healthz = || http::try_send(port, "GET", "/healthz", &[], b"", Duration::from_secs(3));
    let _ = (0..5).find(|_| healthz().is_ok());
    still_serving();

    // A request no HTTP parser reads: the runtime answers 400, and the Worker goes on serving.
    let malformed = b"POST /v1/tasks/limits HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n";
    let response = http::send_raw(port, malformed);
    assert_eq!(response.status, 400, "{}", response.text());
    // Answered by the runtime, not the router.
    assert_eq!(response.header("x-request-id"), None);
    still_serving();
    // Only the valid requests reached Groq.
    assert_eq!(stack.fake.calls_to("ok-limits"), 2);
}

/// Interleaved requests in one isolate share its health memory; none is lost or answered twice.
#[test]
fn a_concurrent_burst_with_failing_models_loses_no_request() {
    let stack = router();
    let tasks = [("burst-a", "ok-b1"), ("burst-b", "ok-b2")];
    let tasks = [tasks[0], tasks[1], ("burst-c", "ok-b3")];
    thread::scope(|scope| {
        let sent: Vec<_> = (0..48)
            .map(|i| {
                let (task, want) = tasks[i % tasks.len()];
                scope.spawn(move || (i, want, stack.ask(task, &format!("e2e-burst-{i}"))))
            })
            .collect();
        for handle in sent {
            let (i, want, response) = handle.join().expect("a request thread");
            assert_eq!(response.status, 200, "request {i}: {}", response.text());
            let content = format!("hello from {want}");
            let wanted = json!({"model_used": want, "content": content});
            assert_has(&response.json(), wanted);
        }
    });
    let answered: usize = tasks
        .map(|(_, model)| stack.fake.calls_to(model))
        .iter()
        .sum();
    assert_eq!(answered, 48, "one answer per request");
    let gone = stack.fake.calls_to("gone-b1");
    // Health memory stops paying for the gone model.
    assert!((1..=16).contains(&gone), "{gone} calls");
}

/// `USAGE` (issue 14) is an `[[analytics_engine_datasets]]` table, which `wrangler dev` accepts
/// and drops the writes of; the data point's fields are checked natively (`tests/fallback.rs`).
#[test]
fn bindings_from_wrangler_toml_reach_the_worker() {
    let stack = router();
    let plain = stack.ask("usage", "e2e-usage-plain");
    assert_eq!(plain.status, 200, "{}", plain.text());
    let mut body = chat_body("e2e-usage-stream");
    body["stream"] = json!(true);
    let path = "/v1/tasks/usage";
    let streamed = stack.post(path, Some(CLIENT_KEY), "e2e-usage-stream", &body);
    assert_eq!(streamed.status, 200);
    let text = streamed.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(stack.request_line("e2e-usage-stream")["stream"], true);
    let output = stack.worker.logs();
    for bad in ["usage_write_failed", "Uncaught", "panicked"] {
        assert!(!output.contains(bad), "{bad}:\n{output}");
    }
    // `ALLOW_MOCK` is "false" in `wrangler.toml`, so in every deploy that does not turn it on.
    body["mock_response"] = json!("hi");
    let refused = stack.post(path, Some(CLIENT_KEY), "e2e-mock-off", &body);
    assert_eq!(refused.status, 400);
    let want = json!({"code": "mock_not_allowed", "param": "mock_response"});
    assert_has(&refused.json()["error"], want);
}

// ---------------------------------------------------------------------------------------------
// Streams

/// `text` with the ids and timestamp the fake makes up for each stream replaced by placeholders,
/// so two streams of the same model compare byte for byte.
fn normalized(text: &str) -> String {
    let first = sse_events(text.as_bytes()).first().and_then(|e| e.json());
    let first = first.unwrap_or_else(|| panic!("no JSON first event in {text:?}"));
    let chat_id = first["id"].as_str().expect("the first chunk has an `id`");
    let groq_id = first["x_groq"]["id"].as_str().expect("and `x_groq.id`");
    let created = format!("\"created\":{}", first["created"]);
    let text = text
        .replace(chat_id, "<chat-id>")
        .replace(groq_id, "<x-groq-id>");
    text.replace(&created, "\"created\":0")
}

/// `(event, data)` of every event, ids normalized.
fn events(text: &str) -> Vec<(Option<String>, String)> {
    let events = sse_events(normalized(text).as_bytes()).into_iter();
    events.map(|event| (event.event, event.data)).collect()
}

/// The `delta.content`s of every chunk, joined.
fn content_of(text: &str) -> String {
    let chunks = sse_events(text.as_bytes())
        .into_iter()
        .filter_map(|e| e.json());
    let content = chunks.map(|c| c["choices"][0]["delta"]["content"].clone());
    content
        .filter_map(|c| c.as_str().map(String::from))
        .collect()
}

fn assert_ends_with_done(body: &StreamBody) {
    assert_eq!(body.end, StreamEnd::Complete, "{}", body.text());
    let events = sse_events(&body.bytes());
    let done: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].data == "[DONE]")
        .collect();
    assert_eq!(done, [events.len() - 1], "{}", body.text());
}

/// A streamed request for `task` (named by `model` on the SDK routes), its head checked to be a
/// 200 stream.
fn post_stream(stack: &Stack, path: &str, task: &str, id: &str) -> StreamResponse {
    let mut body = chat_body(id);
    body["stream"] = json!(true);
    if !path.starts_with("/v1/tasks/") {
        body["model"] = json!(task);
    }
    let response = stack.stream(path, id, &body);
    let sse = response.header("content-type") == Some("text/event-stream");
    if response.status != 200 || !sse {
        let (status, headers) = (response.status, response.headers.clone());
        let (body, output) = (response.finish().text(), stack.worker.logs());
        panic!("{id}: {status} {headers:?}\n{body}\n--- worker output\n{output}");
    }
    response
}

/// The same stream straight from the fake, naming `model`.
fn direct_stream(stack: &Stack, model: &str) -> StreamBody {
    let body = json!({"model": model, "stream": true, "messages": []}).to_string();
    let bearer = format!("Bearer {PROVIDER_KEY}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", &bearer),
    ];
    let (port, body) = (stack.fake.port(), body.as_bytes());
    http::stream(port, "POST", OPENAI_CHAT, &headers, body).finish()
}

/// A stream of `task` (one `ok-` model) on `path`: relayed byte for byte as it arrives, its
/// usage in the request line (read from the runtime's copy, with `pipe`).
fn assert_relays_the_fakes_stream(stack: &Stack, path: &str, task: &str) {
    let model = registry()[task][0].as_str().unwrap().to_string();
    let id = format!("e2e-stream-{}", path.len());
    let mut response = post_stream(stack, path, task, &id);
    let want = json!({"x-model-used": model, "x-attempts": format!("{model}=ok(200)"),
                      "x-task-type": task, "x-request-id": id});
    assert_headers(&response.headers, want);
    let first = response.next().expect("a first piece");
    let to_first_byte = first.at - response.sent_at;
    let mut routed = response.finish();
    routed.pieces.insert(0, first);
    assert_ends_with_done(&routed);
    eprintln!("e2e: the first streamed byte came through the router after {to_first_byte:?}");
    assert!(to_first_byte < Duration::from_secs(1), "{to_first_byte:?}");

    let direct = direct_stream(stack, &model);
    assert_ends_with_done(&direct);
    // The same events, data payloads byte for byte, and nothing between them either.
    assert_eq!(events(&routed.text()), events(&direct.text()));
    assert_eq!(normalized(&routed.text()), normalized(&direct.text()));
    assert_eq!(content_of(&routed.text()), format!("hello from {model}"));
    // Forwarded as it arrives: the fake spaces its 6 events `CHUNK_DELAY` apart.
    let (pieces, first) = (&routed.pieces, &routed.pieces[0]);
    let spread = pieces.last().unwrap().at - first.at;
    let count = pieces.len();
    assert!(spread >= CHUNK_DELAY * 3, "{count} pieces in {spread:?}");
    let at_once = sse_events(&first.bytes).len() == sse_events(&routed.bytes()).len();
    assert!(!at_once, "the first piece held the whole answer");
    let want = json!({"outcome": "ok", "stream": true, "prompt_tokens": 55,
                      "completion_tokens": 12, "total_tokens": 67});
    assert_has(&stack.request_line(&id), want);
}

#[test]
fn a_piped_stream_is_relayed_byte_for_byte_as_it_arrives_on_both_routes() {
    assert_relays_the_fakes_stream(router(), CHAT, "stream");
    assert_relays_the_fakes_stream(router(), "/v1/tasks/stream", "stream");
}

#[test]
fn a_piped_stream_falls_back_when_the_first_model_is_silent_past_the_attempt_timeout() {
    let stack = router();
    let ((slow, next), id) = (first_two("stream-slow"), "e2e-stream-slow");
    let response = post_stream(stack, CHAT, "stream-slow", id);
    let to_head = response.sent_at.elapsed();
    let attempts = format!("{slow}=timeout, {next}=ok(200)");
    let wanted = json!({"x-model-used": next, "x-attempts": attempts});
    assert_headers(&response.headers, wanted);
    let routed = response.finish();
    assert_ends_with_done(&routed);
    let expected = events(&direct_stream(stack, &next).text());
    assert_eq!(events(&routed.text()), expected);
    assert_eq!(stack.models_for(id), [slow, next]);
    let timeout = Duration::from_millis(ATTEMPT_TIMEOUT_MS) - Duration::from_millis(100);
    assert!(to_head >= timeout && to_head < HANG_FOR, "{to_head:?}");
    // The abandoned model's fetch was aborted while a read of its body was pending; nothing of
    // that may surface as an uncaught error.
    thread::sleep(Duration::from_millis(500));
    let output = stack.worker.logs();
    for needle in ["Uncaught", "after being dropped", "closure invoked"] {
        assert!(!output.contains(needle), "{needle:?}:\n{output}");
    }
}

/// A committed stream that breaks: the caller gets the events before the break as the fake sent
/// them (with `pipe`, Groq's own error event too; `filter` holds it back), then the router's
/// OpenAI-shaped error event, no `[DONE]`, and the next model is never called. Its error.
fn assert_broken_stream_ends_with_an_error_event(stack: &Stack, task: &str, filter: bool) -> Value {
    let ((broken, next), id) = (first_two(task), format!("e2e-{task}-{filter}"));
    let response = post_stream(stack, CHAT, task, &id);
    let attempts = format!("{broken}=ok(200)");
    let wanted = json!({"x-model-used": broken, "x-attempts": attempts});
    assert_headers(&response.headers, wanted);
    let routed = response.finish();
    // Closed properly after the error event.
    assert_eq!(routed.end, StreamEnd::Complete);
    let mut relayed = events(&routed.text());
    let (event, data) = relayed.pop().expect("the router's error event");
    assert_eq!(event, None, "the error event is a plain `data:` event");
    let value: Value = serde_json::from_str(&data).unwrap_or_else(|_| panic!("not JSON: {data}"));
    let error = value["error"].clone();
    assert_eq!(value.as_object().map(|o| o.len()), Some(1), "{value}");
    let keys = error.as_object().into_iter().flat_map(|error| error.keys());
    let allowed = ["code", "message", "param", "type"];
    let known = keys.clone().all(|k| allowed.contains(&k.as_str()));
    assert!(known, "{value}");
    let strings = ["code", "message", "type"].map(|k| error[k].is_string());
    assert_eq!(strings, [true; 3], "{value}");
    assert_ne!(error["message"], "", "{value}");
    // A broken stream never ends with `[DONE]`.
    assert!(!routed.text().contains("[DONE]"));
    assert!(!data.contains("org_"), "{data}");

    let mut fakes = events(&direct_stream(stack, &broken).text());
    fakes.retain(|(event, _)| !filter || event.as_deref() != Some("error"));
    assert_eq!(relayed, fakes);
    assert_eq!(content_of(&routed.text()), "hello");
    // Committed to the first model: whatever happens, the next one is not asked.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.fake.calls_to(&next), 0, "`{next}` was called");
    // The request line's outcome: the router's own code for the break, else Groq's error's.
    let code = error["code"].as_str().unwrap_or_default();
    let logged = if code.starts_with("stream_") {
        code
    } else {
        "upstream_stream_error"
    };
    let want = json!({"status": 200, "model": broken, "outcome": logged});
    assert_has(&stack.request_line(&id), want);
    error
}

/// Every way a piped stream breaks after its first event: the runtime's pipe fails or ends, and
/// the router writes its error event after Groq's last bytes.
#[test]
fn a_piped_stream_that_breaks_ends_with_the_routers_error_event_and_no_done() {
    let stack = router();
    thread::scope(|scope| {
        for (task, code, kind) in [
            // The connection closes mid-body (no terminating chunk).
            ("stream-drop", "stream_interrupted", "api_error"),
            // The body ends properly, but Groq never said `[DONE]`.
            ("stream-nodone", "stream_incomplete", "api_error"),
            // Silent after its first chunk past the idle timeout.
            ("stream-stall", "stream_timeout", "api_error"),
            // Groq's own error event, relayed as Groq sent it, then the router's.
            ("stream-error", "tool_use_failed", "invalid_request_error"),
        ] {
            scope.spawn(move || {
                let error = assert_broken_stream_ends_with_an_error_event(stack, task, false);
                assert_has(&error, json!({"code": code, "type": kind}));
            });
        }
    });
    let body = post_stream(stack, CHAT, "stream-error", "e2e-stream-error-again").finish();
    let events = sse_events(&body.bytes());
    let groqs: Vec<_> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("error"))
        .collect();
    assert_eq!(groqs.len(), 1, "{}", body.text());
    let groqs = groqs[0].json().expect("Groq's error event is JSON");
    let wanted = json!({"code": "tool_use_failed", "status_code": 400});
    assert_has(&groqs["error"], wanted);
    // The router's event comes last.
    assert!(events.last().is_some_and(|e| e.event.is_none()));
}

#[test]
fn a_piped_stream_lasting_longer_than_the_idle_timeout_completes_while_chunks_keep_coming() {
    let stack = router();
    // Every gap is `CHUNK_DELAY`; the whole stream lasts twice `ATTEMPT_TIMEOUT_MS`: the idle
    // limit is per gap, not per stream.
    let lasts = CHUNK_DELAY * (LONG_PIECES as u32 + 2);
    assert!(lasts > Duration::from_millis(2 * ATTEMPT_TIMEOUT_MS));
    let started = Instant::now();
    let routed = post_stream(stack, CHAT, "stream-long", "e2e-stream-long").finish();
    assert!(started.elapsed() >= lasts, "{:?}", started.elapsed());
    assert_ends_with_done(&routed);
    assert_eq!(content_of(&routed.text()), "tick ".repeat(LONG_PIECES));
    assert_eq!(stack.fake.calls_to("ok-sl"), 0);
    assert_eq!(stack.request_line("e2e-stream-long")["outcome"], "ok");
}

/// The caller takes the first piece of a long stream and hangs up: the request line says
/// `client_disconnected` (no failure of the model) long before the stream would have ended.
#[test]
fn a_caller_leaving_a_piped_stream_stops_the_relay_and_is_logged_as_such() {
    let stack = router();
    let id = "e2e-stream-leave";
    let mut response = post_stream(stack, CHAT, "stream-leave", id);
    response.next().expect("a first piece");
    let left = Instant::now();
    drop(response);
    let line = stack.request_line(id);
    let noticed = left.elapsed();
    let want = json!({"outcome": "client_disconnected", "model": "streamlong-slv"});
    assert_has(&line, want);
    let lasts = CHUNK_DELAY * LONG_PIECES as u32;
    // Long before the stream would have ended.
    assert!(noticed < lasts / 2, "noticed after {noticed:?}");
    assert_eq!(stack.fake.calls_to("ok-slv"), 0);
}

#[test]
fn a_filtered_stream_is_relayed_byte_for_byte_and_holds_groqs_error_event_back() {
    let stack = filtered();
    assert_relays_the_fakes_stream(stack, CHAT, "stream");
    let error = assert_broken_stream_ends_with_an_error_event(stack, "stream-error", true);
    let want = json!({"code": "tool_use_failed", "type": "invalid_request_error"});
    assert_has(&error, want);
    let message = error["message"].as_str().unwrap_or_default();
    let groqs = message.starts_with("Tool call validation failed");
    assert!(groqs, "{message}");
}

// ---------------------------------------------------------------------------------------------
// The official Python SDKs

#[test]
fn official_python_sdks_drive_the_router() {
    process::require_python_sdks();
    let stack = router();
    let mut command = python();
    command
        .arg("tests/sdk/sdk_clients.py")
        .arg(stack.worker.base_url())
        .arg(CLIENT_KEY);
    let script = run_with_timeout(&mut command, Duration::from_secs(180));
    eprintln!("tests/sdk/sdk_clients.py:\n{}", script.output());
    let output = stack.worker.logs();
    let output = format!("{}\n--- worker output\n{output}", script.output());
    assert!(script.succeeded(), "{output}");

    // Per SDK: one plain answer and one stream. `gone-py` said 404 once; health memory skips it
    // for the three requests after.
    let chat = stack.fake.models_called().into_iter();
    let chat: Vec<String> = chat.filter(|m| m == "gone-py" || m == "ok-py").collect();
    assert_eq!(chat, ["gone-py", "ok-py", "ok-py", "ok-py", "ok-py"]);
    let calls = stack.fake.calls();
    let answered = calls.iter().filter(|c| c.model.as_deref() == Some("ok-py"));
    let answered: Vec<&Value> = answered.map(|c| &c.body).collect();
    let streamed = answered.iter().filter(|b| b["stream"] == true).count();
    let usage = answered
        .iter()
        .filter(|b| b["stream_options"]["include_usage"] == true);
    // The OpenAI client asks for usage in a stream, the Groq client does not.
    assert_eq!((streamed, usage.count()), (2, 1), "{answered:?}");
    for body in &answered {
        let expected = json!([{"role": "user", "content": "Say hello."}]);
        assert_eq!(body["messages"], expected);
    }
    // Broken streams: one per SDK, never retried on the next model.
    let calls = ["streamdrop-py", "ok-pydrop", "streamerror-py", "ok-pyerr"];
    assert_eq!(calls.map(|model| stack.fake.calls_to(model)), [2, 0, 2, 0]);
    let called = stack.fake.models_called();
    for task in ["py-chat", "py-drop", "py-error", "no-such-task"] {
        // No task name reaches Groq.
        assert!(!called.iter().any(|m| m == task), "{task}");
    }
}

// ---------------------------------------------------------------------------------------------
// Two Workers: KV, and the scheduled probe

/// A gone verdict one Worker learned reaches a Worker started after it through the
/// `MODEL_HEALTH` KV namespace; and the scheduled probe through `/__scheduled` retires a model Groq
/// no longer lists before anyone pays for it, changes nothing when it fails, clears a model
/// listed again.
#[test]
fn the_scheduled_probe_and_gone_verdicts_shared_through_kv() {
    let state = std::env::temp_dir().join(format!("task-router-kv-{}", std::process::id()));
    let state_arg = state.to_string_lossy().to_string();
    let registry = json!({"shared": ["gone-k1", "ok-k1"], "probe": ["ok-p1", "ok-p2"]}).to_string();
    let start = || {
        let kv = "[[kv_namespaces]]\nbinding = \"MODEL_HEALTH\"\nid = \"e2e-model-health\"\n";
        let args = ["--persist-to", state_arg.as_str(), "--test-scheduled"];
        let extras = Extras {
            toml: Some(kv),
            args: &args,
            ..Extras::default()
        };
        Stack::start(&[("MODEL_REGISTRY", &registry)], extras)
    };
    let first = start();
    let learned = Instant::now();
    assert_eq!(first.ask("shared", "e2e-kv-1").status, 200);
    assert_eq!(first.fake.calls_to("gone-k1"), 1);
    // The verdict is written to KV after the answer: give it a moment, then stop this Worker.
    thread::sleep(Duration::from_millis(1_500).saturating_sub(learned.elapsed()));
    drop(first);
    let second = start();
    let response = second.ask("shared", "e2e-kv-2");
    assert_eq!(response.status, 200, "{}", response.text());
    let learned_from_kv = pairs(&[("gone-k1", "skipped"), ("ok-k1", "ok")]);
    // Learned from KV before its first request.
    assert_eq!(outcomes(&response.json()), learned_from_kv);
    assert_eq!(second.fake.calls_to("gone-k1"), 0);

    let (fake, worker) = (&second.fake, &second.worker);
    let scheduled = || {
        let response = http::get(second.port(), "/__scheduled?cron=*/15+*+*+*+*", None);
        assert_eq!(response.status, 200, "{}", response.text());
    };
    let probe = |id: &str| outcomes(&second.ask("probe", id).json());
    let listed = |ids: &[&str]| {
        let ids = ids.iter().chain(&["gone-k1", "ok-k1", "unrelated"]);
        fake.set_models(ids.map(|id| id.to_string()).collect());
    };
    // Groq lists ok-p2 but no longer ok-p1.
    listed(&["ok-p2"]);
    scheduled();
    let retired = second.log_line(|l| l["event"] == "model_retired");
    assert_has(&retired, json!({"model": "ok-p1", "tasks": ["probe"]}));
    let error_level = |l: &&str| l.contains("ERROR") && l.contains("model_retired");
    // Logged at error level.
    assert!(worker.logs().lines().any(|l| error_level(&l)));
    let listings = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.starts_with("/openai/v1/models"));
    assert_eq!(listings.count(), 1);
    // The probe sends the provider key.
    assert!(fake.calls().iter().all(|c| c.authorized));
    let expected = pairs(&[("ok-p1", "skipped"), ("ok-p2", "ok")]);
    assert_eq!(probe("e2e-probe-1"), expected);
    // Retired before any user paid for it.
    assert_eq!(fake.calls_to("ok-p1"), 0);
    // A failed probe changes nothing.
    fake.set_models_status(401);
    scheduled();
    second.log_line(|l| l["event"] == "probe_failed");
    assert_eq!(probe("e2e-probe-2")[0], pairs(&[("ok-p1", "skipped")])[0]);
    // Listed again: cleared.
    listed(&["ok-p1", "ok-p2"]);
    scheduled();
    let deadline = Instant::now() + LOG_WAIT;
    let probes = || {
        worker
            .log_lines_json()
            .iter()
            .filter(|l| l["event"] == "probe")
            .count()
    };
    while probes() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(probe("e2e-probe-3"), pairs(&[("ok-p1", "ok")]));
    assert_eq!(fake.calls_to("ok-p1"), 1);
    drop(second);
    let _ = std::fs::remove_dir_all(&state);
}
