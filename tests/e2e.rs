//! End-to-end tests: the real Worker (the wasm bundle `scripts/build.sh` builds) runs under
//! `wrangler dev` (workerd) on 127.0.0.1 and calls a `FakeGroq` on 127.0.0.1 that answers with
//! Groq's real statuses and bodies, chosen by the model id's prefix (`ok-…`, `gone-…`, `hang-…`).
//! They cover what the native tests cannot: bindings arriving as `--var` strings and as the
//! `wrangler.toml` table, `fetch` with its timeout and broken connections, the response headers,
//! and the JSON log lines the Worker prints. Every fake failure behaviour appears in at least one
//! test with the outcome the router gives it, and each test asserts the models the fake was asked
//! for, in order, not just the answer.
//!
//! Run: `cargo test --test e2e`. Needs `node`/`npm` and the Rust toolchain; the first run installs
//! the npm tools and `wasm-bindgen-cli`/`worker-build` and builds the bundle, which takes minutes.
//! The tests talk to 127.0.0.1 only.
//!
//! One Worker (and one fake) per configuration that must differ (`Setup`), started on first use
//! and shared by that configuration's tests, which run in parallel: each test uses its own task,
//! model ids and request id, and tags its request bodies with `"user": <request id>`, so it reads
//! back its own calls at the fake and its own log lines. Shared Workers live in statics, which are
//! never dropped: each Worker's watchdog stops it when the test process ends.

mod e2e_support;

use e2e_support::fake_groq::{FakeGroq, ORG_ID, RETRY_AFTER_SECS};
use e2e_support::http::{self, Response};
use e2e_support::worker::Worker;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The `GROQ_API_KEY` the Worker sends and the fake expects; must never show in answers or logs.
const PROVIDER_KEY: &str = "gsk_e2e_provider_key_5f1c0d9a";
/// A caller's key from `ROUTER_API_KEYS`; logs name the client instead.
const CLIENT_KEY: &str = "ck_e2e_client_key_8b2e4a71";
const CLIENT_NAME: &str = "e2e-tests";
/// The user message of every tagged request; must never show in logs.
const PROMPT: &str = "e2e private prompt: the quick brown fox";
/// `ATTEMPT_TIMEOUT_MS` of the main Worker: small, so the `hang` test is quick.
const ATTEMPT_TIMEOUT_MS: u64 = 1500;
/// How long the fake holds a `hang` connection: far past the attempt timeout.
const HANG_FOR: Duration = Duration::from_secs(10);
/// Log lines can trail the answer that caused them.
const LOG_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Configurations

/// One Worker configuration. Routing tests need a fallback list that answers (`Main`) and one
/// that cannot (`Strict`); the rest each change a binding that changes every answer.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// Client keys, `ATTEMPT_TIMEOUT_MS` = 1500, a task per scenario, `fallback = ["ok-universal"]`,
    /// `DEFAULT_SUMMARIZE_MODEL` and `DEFAULT_CODE_REVIEW_MODEL`.
    Main,
    /// No `fallback` list, so chains can fail as a whole; `ALLOW_UNAUTHENTICATED = "true"`.
    Strict,
    /// `FORCE_MODEL` set; `MODEL_REGISTRY` from `wrangler.toml` (no override).
    Forced,
    /// `MODEL_REGISTRY` and `ATTEMPT_TIMEOUT_MS` invalid.
    BrokenConfig,
    /// `GROQ_API_KEY` empty.
    NoProviderKey,
    /// No `ROUTER_API_KEYS`, `ALLOW_UNAUTHENTICATED = "false"`; `MODEL_REGISTRY` from `wrangler.toml`.
    NoClientAuth,
    /// A task name over 64 bytes whose 64th byte falls inside a character (it once panicked).
    LongTaskName,
}

const SETUPS: usize = 7;
const _: () = assert!(Setup::LongTaskName as usize + 1 == SETUPS);
static ENVS: [OnceLock<Env>; SETUPS] = [const { OnceLock::new() }; SETUPS];

fn main_registry() -> Value {
    json!({
        "happy": ["ok-happy"],
        "order": ["gone-ord1", "decommissioned-ord2", "ok-ord3", "ok-ord4"],
        "universal": ["error500-uni1", "gone-uni2"],
        "timeout": ["hang-to1", "ok-to2"],
        "bodytimeout": ["bodyhang-bt1", "ok-bt2"],
        "cannotserve": ["contextlength-cs1", "jsonfail-cs2", "ok-cs3"],
        "badrequest": ["badrequest-br1", "ok-br2"],
        "badkey": ["badkey-bk1", "ok-bk2"],
        "forbidden": ["forbidden-fb1", "ok-fb2"],
        "summarize": ["ok-sum1"],
        "code-review": ["ok-cr1"],
        "auth": ["ok-auth"],
        "badbody": ["ok-badbody"],
        "routes": ["ok-routes"],
        "capped": ["ok-capped"],
        "fallback": ["ok-universal"],
    })
}

fn strict_registry() -> Value {
    json!({
        "allfail": ["gone-af1", "error500-af2", "html502-af3", "drop-af4", "notcompletion-af5"],
        "ratelimits": ["ratelimited-rl1", "capacity-rl3", "gone-rl4"],
        "toolong": ["contextlength-tl1", "gone-tl2", "contextlength-tl3"],
        "open": ["ok-open"],
    })
}

impl Setup {
    fn vars(self, fake: &FakeGroq) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("GROQ_BASE_URL", fake.base_url()),
            ("GROQ_API_KEY", PROVIDER_KEY.to_string()),
            ("ROUTER_API_KEYS", format!("{CLIENT_NAME}:{CLIENT_KEY}")),
        ];
        // A later entry replaces an earlier one with the same name.
        let more: Vec<(&'static str, String)> = match self {
            Setup::Main => vec![
                ("MODEL_REGISTRY", main_registry().to_string()),
                ("ATTEMPT_TIMEOUT_MS", ATTEMPT_TIMEOUT_MS.to_string()),
                ("DEFAULT_SUMMARIZE_MODEL", "ok-sumdefault".into()),
                ("DEFAULT_CODE_REVIEW_MODEL", "gone-crdefault".into()),
                ("MAX_CAPPED_TOKENS", "256".into()),
                (
                    "MODEL_PRICES",
                    json!({
                        "ok-happy": {"input": 0.15, "output": 0.6},
                        "ok-ord3": {"input": 1, "output": 2},
                    })
                    .to_string(),
                ),
            ],
            Setup::Strict => vec![
                ("MODEL_REGISTRY", strict_registry().to_string()),
                ("ALLOW_UNAUTHENTICATED", "true".into()),
            ],
            Setup::Forced => vec![("FORCE_MODEL", "error500-forced".into())],
            Setup::BrokenConfig => vec![
                ("MODEL_REGISTRY", r#"{"fast":"ok-broken"}"#.into()),
                ("ATTEMPT_TIMEOUT_MS", "soon".into()),
            ],
            Setup::NoProviderKey => vec![
                ("GROQ_API_KEY", String::new()),
                ("MODEL_REGISTRY", json!({"happy": ["ok-nokey"]}).to_string()),
            ],
            Setup::NoClientAuth => vec![("ROUTER_API_KEYS", String::new())],
            Setup::LongTaskName => {
                let task = format!("a{}", "é".repeat(40));
                vec![("MODEL_REGISTRY", json!({ task: ["ok-long"] }).to_string())]
            }
        };
        vars.extend(more);
        vars
    }
}

// ---------------------------------------------------------------------------------------------
// Shared Workers

/// A running Worker and the fake Groq it calls.
struct Env {
    fake: FakeGroq,
    port: u16,
    worker: Worker,
}

fn env(setup: Setup) -> &'static Env {
    ENVS[setup as usize].get_or_init(|| Env::start(setup))
}

impl Env {
    fn start(setup: Setup) -> Env {
        let fake = FakeGroq::start(PROVIDER_KEY);
        fake.set_hang_for(HANG_FOR);
        let vars = setup.vars(&fake);
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let worker = Worker::start(&pairs);
        Env {
            fake,
            port: worker.port(),
            worker,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests, calls and logs

/// A chat body tagged with `tag` (Groq's `user` field passes through the router untouched).
fn chat_body(tag: &str) -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": PROMPT},
        ],
        "temperature": 0.2,
        "max_completion_tokens": 64,
        "user": tag,
    })
}

impl Env {
    /// Sends one request; every answer, whatever it is, must carry `x-request-id`, echoing ours.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let response = http::send(self.port, method, path, headers, body);
        let sent = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, value)| *value);
        let got = response.header("x-request-id").unwrap_or_else(|| {
            panic!(
                "{method} {path}: no x-request-id on {} {}",
                response.status,
                response.text()
            )
        });
        match sent {
            Some(id) => assert_eq!(got, id, "{method} {path}"),
            None => assert_generated_id(got),
        }
        response
    }

    /// `POST /v1/tasks/{task}` with `x-request-id: id`, `Bearer key` when given, and `body`.
    fn post(&self, task: &str, key: Option<&str>, id: &str, body: &[u8]) -> Response {
        let authorization = key.map(|key| format!("Bearer {key}"));
        let mut headers = vec![("content-type", "application/json"), ("x-request-id", id)];
        if let Some(authorization) = &authorization {
            headers.push(("authorization", authorization));
        }
        self.send("POST", &format!("/v1/tasks/{task}"), &headers, body)
    }

    /// The usual routed request: the client key, `x-request-id: id`, a body tagged with `id`.
    fn ask(&self, task: &str, id: &str) -> Response {
        self.post(
            task,
            Some(CLIENT_KEY),
            id,
            chat_body(id).to_string().as_bytes(),
        )
    }

    /// The models the fake was asked for by requests tagged `tag`, in arrival order.
    fn models_for(&self, tag: &str) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter(|call| call.body["user"] == tag)
            .filter_map(|call| call.model)
            .collect()
    }

    fn logs(&self) -> String {
        self.worker.logs()
    }

    fn log_lines(&self) -> Vec<Value> {
        self.worker.log_lines_json()
    }

    /// The first JSON log line matching `predicate`, waiting for it up to `LOG_WAIT`.
    fn wait_for_line(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|line| predicate(line)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line within {LOG_WAIT:?}; captured:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The attempt lines (ordered by `attempt`) and the request line logged for request `id`;
    /// waits until the request line and `attempts` attempt lines are in, and checks there are
    /// no more.
    fn request_log(&self, id: &str, attempts: usize) -> (Vec<Value>, Value) {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let lines: Vec<Value> = self
                .log_lines()
                .into_iter()
                .filter(|line| line["request_id"] == id)
                .collect();
            let mut attempt_lines: Vec<Value> = lines
                .iter()
                .filter(|line| line["event"] == "attempt")
                .cloned()
                .collect();
            let request_lines: Vec<&Value> = lines
                .iter()
                .filter(|line| line["event"] == "request")
                .collect();
            if request_lines.len() == 1 && attempt_lines.len() >= attempts {
                assert_eq!(
                    attempt_lines.len(),
                    attempts,
                    "attempt lines for {id}: {attempt_lines:#?}"
                );
                attempt_lines.sort_by_key(|line| line["attempt"].as_u64());
                return (attempt_lines, request_lines[0].clone());
            }
            assert!(
                Instant::now() < deadline,
                "no complete log for request {id} within {LOG_WAIT:?}; captured:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing the Worker printed holds a key, the prompt or an answer's text.
    fn assert_logs_keep_secrets(&self) {
        let logs = self.logs();
        for secret in [PROVIDER_KEY, CLIENT_KEY, PROMPT, "hello from"] {
            assert!(
                !logs.contains(secret),
                "the Worker's output holds {secret:?}:\n{logs}"
            );
        }
    }
}

/// What the Worker makes up when the caller sent no usable id: `req_` and 16 hex digits.
fn assert_generated_id(id: &str) {
    let hex = id.strip_prefix("req_").unwrap_or("");
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a generated request id: {id:?}"
    );
}

/// Every field of `want` (an object) is in `line` with that value (a `null` must be there too,
/// not missing), and `duration_ms` is a number.
fn assert_fields(line: &Value, want: &Value) {
    for (key, value) in want.as_object().expect("an object of expected fields") {
        assert_eq!(line.get(key), Some(value), "field `{key}` of {line}");
    }
    assert!(line["duration_ms"].is_u64(), "duration_ms in {line}");
}

/// An `attempts` list with each `duration_ms` checked to be a number and then removed, so the
/// rest can be compared whole (including which have a `code`).
fn without_durations(attempts: &Value) -> Value {
    let list = attempts
        .as_array()
        .unwrap_or_else(|| panic!("not an attempts list: {attempts}"));
    list.iter()
        .map(|attempt| {
            let mut attempt = attempt.clone();
            let duration = attempt
                .as_object_mut()
                .and_then(|fields| fields.remove("duration_ms"));
            assert!(
                duration.as_ref().is_some_and(Value::is_u64),
                "duration_ms in {attempt}"
            );
            attempt
        })
        .collect()
}

fn assert_json_content_type(response: &Response) {
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{}",
        response.text()
    );
}

/// The headers of an answer that went through the chain: task, attempts, and the model on 200.
fn assert_routed_headers(
    response: &Response,
    task: &str,
    attempts: &str,
    model_used: Option<&str>,
) {
    assert_json_content_type(response);
    assert_eq!(response.header("x-task-type"), Some(task));
    assert_eq!(response.header("x-attempts"), Some(attempts));
    assert_eq!(response.header("x-model-used"), model_used);
}

// ---------------------------------------------------------------------------------------------
// Main configuration: routing that ends in an answering universal fallback

#[test]
fn happy_path_answers_from_the_first_model_and_logs_tokens() {
    let env = env(Setup::Main);
    let id = "e2e-happy";
    let response = env.ask("happy", id);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(&response, "happy", "ok-happy=ok(200)", Some("ok-happy"));
    let body = response.json();
    assert_eq!(body["content"], "hello from ok-happy");
    assert_eq!(body["model_used"], "ok-happy");
    assert_eq!(body["finish_reason"], "stop");
    assert_eq!(body["task"], "happy");
    assert_eq!(body["request_id"], id);
    assert_eq!(body["usage"]["prompt_tokens"], 55);
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!(body["usage"]["total_tokens"], 67);
    assert_eq!(
        without_durations(&body["attempts"]),
        json!([{"model": "ok-happy", "outcome": "ok", "status": 200}])
    );

    // One call, with the provider key, carrying the caller's body with only `model` added.
    assert_eq!(env.models_for(id), ["ok-happy"]);
    assert_eq!(env.fake.calls_to("ok-happy"), 1);
    let call = env
        .fake
        .calls()
        .into_iter()
        .find(|call| call.body["user"] == id)
        .expect("the call for this request");
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/openai/v1/chat/completions");
    assert!(
        call.authorized,
        "the Worker must send `Bearer GROQ_API_KEY`"
    );
    assert_eq!(call.header("content-type"), Some("application/json"));
    let mut expected = chat_body(id);
    expected["model"] = json!("ok-happy");
    assert_eq!(call.body, expected);

    // Answered by the first model called: the request line alone, no attempt line.
    let (_, request) = env.request_log(id, 0);
    // At the default `LOG_LEVEL`, with its tokens and what they cost at `MODEL_PRICES`.
    let cost = (55.0 * 0.15 + 12.0 * 0.6) / 1e6;
    assert_fields(
        &request,
        &json!({"event": "request", "level": "info", "request_id": id, "task": "happy",
                "client": CLIENT_NAME, "model": "ok-happy", "outcome": "ok", "status": 200,
                "attempts": 1, "fallback_used": false, "prompt_tokens": 55,
                "completion_tokens": 12, "total_tokens": 67, "cost_usd": cost,
                "stream": false}),
    );
    assert_eq!(body["usage"]["cost_usd"], cost);
    env.assert_logs_keep_secrets();
}

#[test]
fn falls_back_in_order_past_gone_and_decommissioned_models() {
    let env = env(Setup::Main);
    let id = "e2e-order";
    let response = env.ask("order", id);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "order",
        "gone-ord1=model_gone(404), decommissioned-ord2=model_gone(400), ok-ord3=ok(200)",
        Some("ok-ord3"),
    );
    let body = response.json();
    assert_eq!(body["content"], "hello from ok-ord3");
    assert_eq!(
        without_durations(&body["attempts"]),
        json!([
            {"model": "gone-ord1", "outcome": "model_gone", "status": 404, "code": "model_not_found"},
            {"model": "decommissioned-ord2", "outcome": "model_gone", "status": 400,
             "code": "model_decommissioned"},
            {"model": "ok-ord3", "outcome": "ok", "status": 200},
        ])
    );
    assert_eq!(
        env.models_for(id),
        ["gone-ord1", "decommissioned-ord2", "ok-ord3"]
    );
    for (model, calls) in [
        ("gone-ord1", 1),
        ("decommissioned-ord2", 1),
        ("ok-ord3", 1),
        ("ok-ord4", 0),
    ] {
        assert_eq!(env.fake.calls_to(model), calls, "{model}");
    }

    let (attempts, request) = env.request_log(id, 3);
    for (line, model, status, code) in [
        (&attempts[0], "gone-ord1", 404, "model_not_found"),
        (
            &attempts[1],
            "decommissioned-ord2",
            400,
            "model_decommissioned",
        ),
    ] {
        assert_fields(
            line,
            &json!({"level": "warn", "task": "order", "model": model, "outcome": "model_gone",
                    "status": status, "error_code": code}),
        );
        let hint = line["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains(model) && hint.contains("MODEL_REGISTRY"),
            "{line}"
        );
    }
    assert_fields(
        &attempts[2],
        &json!({"model": "ok-ord3", "attempt": 3, "outcome": "ok", "status": 200}),
    );
    // The request line says the fallback was used, and what the answer cost (issue 14).
    assert_fields(
        &request,
        &json!({"model": "ok-ord3", "outcome": "ok", "status": 200, "attempts": 3,
                "fallback_used": true, "total_tokens": 67, "cost_usd": (55.0 + 24.0) / 1e6}),
    );
}

#[test]
fn universal_fallback_answers_after_the_task_list_fails() {
    let env = env(Setup::Main);
    let id = "e2e-universal";
    let response = env.ask("universal", id);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "universal",
        "error500-uni1=upstream_error(500), gone-uni2=model_gone(404), ok-universal=ok(200)",
        Some("ok-universal"),
    );
    assert_eq!(response.json()["content"], "hello from ok-universal");
    assert_eq!(
        env.models_for(id),
        ["error500-uni1", "gone-uni2", "ok-universal"]
    );
    assert_eq!(env.fake.calls_to("error500-uni1"), 1);
    assert_eq!(env.fake.calls_to("gone-uni2"), 1);
}

#[test]
fn a_hung_model_times_out_and_the_next_answers() {
    let env = env(Setup::Main);
    let id = "e2e-timeout";
    let started = Instant::now();
    let response = env.ask("timeout", id);
    let waited = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "timeout",
        "hang-to1=timeout, ok-to2=ok(200)",
        Some("ok-to2"),
    );
    let body = response.json();
    assert_eq!(
        without_durations(&body["attempts"]),
        json!([
            {"model": "hang-to1", "outcome": "timeout", "status": null},
            {"model": "ok-to2", "outcome": "ok", "status": 200},
        ])
    );
    // Abandoned at `ATTEMPT_TIMEOUT_MS`, long before the fake would have closed the connection.
    let timed_out_after = body["attempts"][0]["duration_ms"].as_u64().unwrap();
    assert!(
        (ATTEMPT_TIMEOUT_MS - 50..ATTEMPT_TIMEOUT_MS + 3000).contains(&timed_out_after),
        "the hung attempt took {timed_out_after} ms"
    );
    assert!(
        waited >= Duration::from_millis(ATTEMPT_TIMEOUT_MS - 50) && waited < HANG_FOR,
        "answered after {waited:?}"
    );
    assert_eq!(env.models_for(id), ["hang-to1", "ok-to2"]);
    assert_eq!(env.fake.calls_to("hang-to1"), 1);

    let (attempts, _) = env.request_log(id, 2);
    assert_fields(
        &attempts[0],
        &json!({"level": "warn", "model": "hang-to1", "outcome": "timeout", "status": null}),
    );
}

#[test]
fn an_answer_that_stalls_after_its_head_times_out_and_the_next_answers() {
    let env = env(Setup::Main);
    let id = "e2e-bodytimeout";
    let started = Instant::now();
    let response = env.ask("bodytimeout", id);
    let waited = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "bodytimeout",
        "bodyhang-bt1=timeout, ok-bt2=ok(200)",
        Some("ok-bt2"),
    );
    // The 200 head came at once; the attempt's deadline still covered the body behind it.
    let timed_out_after = response.json()["attempts"][0]["duration_ms"]
        .as_u64()
        .unwrap();
    assert!(
        (ATTEMPT_TIMEOUT_MS - 50..ATTEMPT_TIMEOUT_MS + 3000).contains(&timed_out_after),
        "the stalled attempt took {timed_out_after} ms"
    );
    assert!(waited < HANG_FOR, "answered after {waited:?}");
    assert_eq!(env.models_for(id), ["bodyhang-bt1", "ok-bt2"]);
}

#[test]
fn context_length_and_json_failures_move_on_to_the_next_model() {
    let env = env(Setup::Main);
    let id = "e2e-cannotserve";
    let response = env.ask("cannotserve", id);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "cannotserve",
        "contextlength-cs1=cannot_serve(400), jsonfail-cs2=cannot_serve(400), ok-cs3=ok(200)",
        Some("ok-cs3"),
    );
    assert_eq!(
        without_durations(&response.json()["attempts"]),
        json!([
            {"model": "contextlength-cs1", "outcome": "cannot_serve", "status": 400,
             "code": "context_length_exceeded"},
            {"model": "jsonfail-cs2", "outcome": "cannot_serve", "status": 400,
             "code": "json_validate_failed"},
            {"model": "ok-cs3", "outcome": "ok", "status": 200},
        ])
    );
    assert_eq!(
        env.models_for(id),
        ["contextlength-cs1", "jsonfail-cs2", "ok-cs3"]
    );
}

#[test]
fn a_request_groq_refuses_stops_at_once_with_groqs_message() {
    let env = env(Setup::Main);
    let id = "e2e-badrequest";
    let response = env.ask("badrequest", id);
    assert_eq!(response.status, 400, "{}", response.text());
    assert_routed_headers(
        &response,
        "badrequest",
        "badrequest-br1=invalid_request(400)",
        None,
    );
    let error = &response.json()["error"];
    assert_eq!(error["message"], "'temperature' : value must be a number");
    assert_eq!(error["param"], "temperature");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "invalid_request");
    assert_eq!(
        without_durations(&error["attempts"]),
        json!([{"model": "badrequest-br1", "outcome": "invalid_request", "status": 400}])
    );
    // Every model would refuse it: neither the next model nor the universal fallback is asked.
    assert_eq!(env.models_for(id), ["badrequest-br1"]);
    assert_eq!(env.fake.calls_to("ok-br2"), 0);
    let (_, request) = env.request_log(id, 1);
    assert_fields(
        &request,
        &json!({"level": "info", "outcome": "invalid_request", "status": 400, "model": null,
                "attempts": 1, "prompt_tokens": null}),
    );
}

#[test]
fn a_rejected_provider_key_stops_with_502_and_the_key_stays_secret() {
    let env = env(Setup::Main);
    for (task, model, next, status, code) in [
        (
            "badkey",
            "badkey-bk1",
            "ok-bk2",
            401,
            Some("invalid_api_key"),
        ),
        ("forbidden", "forbidden-fb1", "ok-fb2", 403, None),
    ] {
        let id = format!("e2e-{task}");
        let response = env.ask(task, &id);
        assert_eq!(response.status, 502, "{task}: {}", response.text());
        assert_routed_headers(
            &response,
            task,
            &format!("{model}=provider_auth_failed({status})"),
            None,
        );
        let error = &response.json()["error"];
        assert_eq!(error["code"], "provider_auth_failed", "{task}");
        assert_eq!(error["type"], "api_error", "{task}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("`GROQ_API_KEY`")),
            "{error}"
        );
        let mut attempt =
            json!({"model": model, "outcome": "provider_auth_failed", "status": status});
        if let Some(code) = code {
            attempt["code"] = json!(code);
        }
        assert_eq!(without_durations(&error["attempts"]), json!([attempt]));
        assert_eq!(env.models_for(&id), [model], "{task}");
        assert_eq!(env.fake.calls_to(next), 0, "{task}");

        // The key really was sent (so its absence below means something) and is not echoed.
        assert!(env
            .fake
            .calls()
            .iter()
            .any(|call| call.body["user"] == id.as_str() && call.authorized));
        let headers = format!("{:?}", response.headers);
        assert!(
            !response.text().contains(PROVIDER_KEY) && !headers.contains(PROVIDER_KEY),
            "{task}: the answer leaks the provider key"
        );

        let (attempts, request) = env.request_log(&id, 1);
        assert_fields(
            &attempts[0],
            &json!({"level": "error", "model": model, "outcome": "provider_auth_failed",
                    "status": status, "error_code": code}),
        );
        assert!(attempts[0]["hint"]
            .as_str()
            .is_some_and(|hint| hint.contains("GROQ_API_KEY")));
        assert_fields(
            &request,
            &json!({"level": "error", "outcome": "provider_auth_failed", "status": 502}),
        );
    }
    env.assert_logs_keep_secrets();
}

#[test]
fn default_model_bindings_go_first_including_a_dashed_task_name() {
    let env = env(Setup::Main);
    // `DEFAULT_SUMMARIZE_MODEL` answers, so the registry's own model is never asked.
    let response = env.ask("summarize", "e2e-default-1");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "summarize",
        "ok-sumdefault=ok(200)",
        Some("ok-sumdefault"),
    );
    assert_eq!(env.models_for("e2e-default-1"), ["ok-sumdefault"]);
    assert_eq!(env.fake.calls_to("ok-sum1"), 0);

    // `code-review` reads `DEFAULT_CODE_REVIEW_MODEL`; that model is gone, so the registry's
    // list follows it.
    let response = env.ask("code-review", "e2e-default-2");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(
        &response,
        "code-review",
        "gone-crdefault=model_gone(404), ok-cr1=ok(200)",
        Some("ok-cr1"),
    );
    assert_eq!(response.json()["task"], "code-review");
    assert_eq!(
        env.models_for("e2e-default-2"),
        ["gone-crdefault", "ok-cr1"]
    );
}

#[test]
fn routed_requests_need_a_client_key() {
    let env = env(Setup::Main);
    let cases: [(&str, Option<&str>, &str); 3] = [
        ("e2e-auth-none", None, "missing client key"),
        (
            "e2e-auth-wrong",
            Some("Bearer ck_not_a_key"),
            "invalid client key",
        ),
        (
            "e2e-auth-basic",
            Some("Basic ck_e2e_client_key_8b2e4a71"),
            "missing client key",
        ),
    ];
    for (id, authorization, message) in cases {
        let body = chat_body(id).to_string();
        let mut headers = vec![("content-type", "application/json"), ("x-request-id", id)];
        if let Some(authorization) = authorization {
            headers.push(("authorization", authorization));
        }
        let response = env.send("POST", "/v1/tasks/auth", &headers, body.as_bytes());
        assert_eq!(response.status, 401, "{id}: {}", response.text());
        assert_json_content_type(&response);
        assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{id}");
        assert_eq!(response.header("x-task-type"), Some("auth"), "{id}");
        assert_eq!(response.header("x-attempts"), None, "{id}");
        let error = &response.json()["error"];
        assert_eq!(error["code"], "invalid_api_key", "{id}");
        assert_eq!(error["type"], "authentication_error", "{id}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message)),
            "{id}: {error}"
        );
        assert!(env.models_for(id).is_empty(), "{id} reached Groq");
    }
    let (_, request) = env.request_log("e2e-auth-wrong", 0);
    assert_fields(
        &request,
        &json!({"outcome": "invalid_api_key", "status": 401, "client": null, "attempts": 0}),
    );

    let response = env.ask("auth", "e2e-auth-ok");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(env.models_for("e2e-auth-ok"), ["ok-auth"]);
    assert_eq!(env.fake.calls_to("ok-auth"), 1);
    let (_, request) = env.request_log("e2e-auth-ok", 0);
    assert_eq!(request["client"], CLIENT_NAME);
    env.assert_logs_keep_secrets();
}

#[test]
fn bad_bodies_are_refused_naming_the_param() {
    let env = env(Setup::Main);
    let message = r#"[{"role":"user","content":"hi"}]"#;
    let with = |extra: &str| format!(r#"{{"messages":{message},{extra}}}"#);
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("{not json".into(), "invalid_json", None),
        (String::new(), "invalid_json", None),
        ("[1,2]".into(), "invalid_json", None),
        (
            with(r#""model":"ok-happy""#),
            "invalid_parameter",
            Some("model"),
        ),
        ("{}".into(), "invalid_parameter", Some("messages")),
        (
            r#"{"messages":[]}"#.into(),
            "invalid_parameter",
            Some("messages"),
        ),
        (
            r#"{"messages":"hi"}"#.into(),
            "invalid_parameter",
            Some("messages"),
        ),
        (
            r#"{"messages":[{"role":"wizard","content":"x"}]}"#.into(),
            "invalid_parameter",
            Some("messages[0].role"),
        ),
        (
            r#"{"messages":[{"role":"user"}]}"#.into(),
            "invalid_parameter",
            Some("messages[0].content"),
        ),
        (
            with(r#""max_tokens":"ten""#),
            "invalid_parameter",
            Some("max_tokens"),
        ),
        (
            with(r#""max_completion_tokens":0"#),
            "invalid_parameter",
            Some("max_completion_tokens"),
        ),
        (
            with(r#""temperature":"hot""#),
            "invalid_parameter",
            Some("temperature"),
        ),
        (
            with(r#""temperature":3"#),
            "invalid_parameter",
            Some("temperature"),
        ),
        (
            with(r#""top_p":"high""#),
            "invalid_parameter",
            Some("top_p"),
        ),
        (
            with(r#""stream":"yes""#),
            "invalid_parameter",
            Some("stream"),
        ),
    ];
    for (i, (body, code, param)) in cases.iter().enumerate() {
        let id = format!("e2e-badbody-{i}");
        let response = env.post("badbody", Some(CLIENT_KEY), &id, body.as_bytes());
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        assert_json_content_type(&response);
        assert_eq!(response.header("x-task-type"), Some("badbody"), "{body}");
        assert_eq!(response.header("x-attempts"), None, "{body}");
        assert_eq!(response.header("x-model-used"), None, "{body}");
        let error = &response.json()["error"];
        assert_eq!(error["code"], *code, "{body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        match param {
            Some(param) => assert_eq!(error["param"], *param, "{body}"),
            None => assert!(error.get("param").is_none(), "{body}: {error}"),
        }
    }
    assert_eq!(
        env.fake.calls_to("ok-badbody"),
        0,
        "a refused body never reaches Groq"
    );
}

/// Bodies the hand-written JSON reader once let through or refused wrongly (issue 12): a key sent
/// twice, a cap checked on one token field only, a number judged by its spelling.
#[test]
fn token_caps_duplicate_keys_and_extreme_exponents_are_read_by_value() {
    let env = env(Setup::Main);
    let message = r#""messages":[{"role":"user","content":"hi"}]"#;
    for (i, (extra, param)) in [
        (r#""max_tokens":99999,"max_tokens":10"#, "max_tokens"),
        (
            r#""max_completion_tokens":10,"max_tokens":99999"#,
            "max_tokens",
        ),
        (r#""max_completion_tokens":1e5"#, "max_completion_tokens"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{{message},{extra},"user":"e2e-capped-{i}"}}"#);
        let response = env.post("capped", Some(CLIENT_KEY), "e2e-capped", body.as_bytes());
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let error = &response.json()["error"];
        assert_eq!(error["code"], "invalid_parameter", "{body}");
        assert_eq!(error["param"], param, "{body}");
    }
    assert_eq!(
        env.fake.calls_to("ok-capped"),
        0,
        "no refused body reaches Groq"
    );

    // Valid JSON equal to 0: within range, and passed on as sent.
    let body = format!(r#"{{{message},"temperature":1e-2147483648,"user":"e2e-exponent"}}"#);
    let response = env.post("capped", Some(CLIENT_KEY), "e2e-exponent", body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let calls = env.fake.calls();
    let sent = calls
        .iter()
        .find(|c| c.body["user"] == "e2e-exponent")
        .expect("the request reached Groq");
    assert_eq!(sent.body["temperature"], 0.0);
    assert_eq!(
        sent.body["max_completion_tokens"], 256,
        "the cap fills a missing limit"
    );
}

#[test]
fn a_task_name_cut_inside_a_character_is_a_config_error_not_a_panic() {
    let env = env(Setup::LongTaskName);
    let health = env.send("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 503, "{}", health.text());
    let problem = &health.json()["problems"][0];
    assert_eq!(
        (&problem["binding"], &problem["code"]),
        (&json!("MODEL_REGISTRY"), &json!("config_invalid"))
    );
    assert!(
        problem["message"]
            .as_str()
            .is_some_and(|m| m.contains("longer than 64")),
        "{problem}"
    );
    let response = env.ask("fast", "e2e-longtask");
    assert_eq!(response.status, 500, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "config_invalid");
    assert!(!env.logs().contains("panicked"), "{}", env.logs());
}

#[test]
fn an_unknown_task_is_404_listing_the_known_tasks() {
    let env = env(Setup::Main);
    let mut known: Vec<String> = main_registry()
        .as_object()
        .unwrap()
        .keys()
        .filter(|task| *task != "fallback")
        .map(|task| format!("`{task}`"))
        .collect();
    known.sort();
    let known = known.join(", ");
    // `fallback` is a registry key, not a task; task names are case-sensitive.
    for task in ["nope", "fallback", "Happy"] {
        let id = format!("e2e-unknown-{}", task.to_lowercase());
        let response = env.ask(task, &id);
        assert_eq!(response.status, 404, "{task}: {}", response.text());
        assert_json_content_type(&response);
        assert_eq!(response.header("x-task-type"), None, "{task}");
        let error = &response.json()["error"];
        assert_eq!(error["code"], "unknown_task", "{task}");
        assert_eq!(
            error["message"],
            format!("unknown task `{task}`; known tasks: {known}")
        );
        assert!(env.models_for(&id).is_empty(), "{task}");
    }
}

#[test]
fn unknown_routes_and_wrong_methods() {
    let env = env(Setup::Main);
    let health = env.send("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let head = env.send("HEAD", "/healthz", &[("x-request-id", "e2e-head")], b"");
    assert_eq!(head.status, 200);

    for (method, path, status, code, allow) in [
        ("GET", "/nowhere", 404, "not_found", None),
        ("POST", "/v1/completions", 404, "not_found", None),
        (
            "GET",
            "/v1/tasks/routes",
            405,
            "method_not_allowed",
            Some("POST"),
        ),
        (
            "PUT",
            "/v1/tasks/routes",
            405,
            "method_not_allowed",
            Some("POST"),
        ),
        (
            "POST",
            "/healthz",
            405,
            "method_not_allowed",
            Some("GET, HEAD"),
        ),
    ] {
        let authorization = format!("Bearer {CLIENT_KEY}");
        let response = env.send(
            method,
            path,
            &[("authorization", &authorization)],
            if method == "GET" { b"" } else { b"{}" },
        );
        let what = format!("{method} {path}");
        assert_eq!(response.status, status, "{what}: {}", response.text());
        assert_json_content_type(&response);
        assert_eq!(response.header("allow"), allow, "{what}");
        let error = &response.json()["error"];
        assert_eq!(error["code"], code, "{what}");
        assert_eq!(error["type"], "invalid_request_error", "{what}");
    }
    let response = env.send("GET", "/nowhere?x=1", &[], b"");
    assert_eq!(
        response.json()["error"]["message"],
        "no route for GET /nowhere; use POST /v1/tasks/{task}"
    );
    assert_eq!(env.fake.calls_to("ok-routes"), 0);
}

#[test]
fn a_request_id_that_is_not_a_sane_token_is_replaced() {
    let env = env(Setup::Main);
    let long = "a".repeat(129);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let response = http::send(env.port, "GET", "/healthz", &[("x-request-id", bad)], b"");
        assert_eq!(response.status, 200);
        assert_generated_id(response.header("x-request-id").unwrap_or_default());
    }
    let a = env.send("GET", "/healthz", &[], b"");
    let b = env.send("GET", "/healthz", &[], b"");
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

// ---------------------------------------------------------------------------------------------
// Strict configuration: no universal fallback, so whole chains fail

#[test]
fn everything_failing_is_a_502_listing_every_attempt() {
    let env = env(Setup::Strict);
    let id = "e2e-allfail";
    let response = env.ask("allfail", id);
    assert_eq!(response.status, 502, "{}", response.text());
    assert_routed_headers(
        &response,
        "allfail",
        "gone-af1=model_gone(404), error500-af2=upstream_error(500), \
         html502-af3=upstream_error(502), drop-af4=connection_error, \
         notcompletion-af5=invalid_response(200)",
        None,
    );
    let error = &response.json()["error"];
    assert_eq!(error["code"], "all_models_failed");
    assert_eq!(error["type"], "api_error");
    assert_eq!(
        error["message"],
        "all 5 models for this task failed; see `attempts`"
    );
    assert_eq!(
        without_durations(&error["attempts"]),
        json!([
            {"model": "gone-af1", "outcome": "model_gone", "status": 404, "code": "model_not_found"},
            {"model": "error500-af2", "outcome": "upstream_error", "status": 500},
            {"model": "html502-af3", "outcome": "upstream_error", "status": 502},
            // The runtime's own words for the dropped connection (workerd's).
            {"model": "drop-af4", "outcome": "connection_error", "status": null,
             "error": "Error: Network connection lost."},
            {"model": "notcompletion-af5", "outcome": "invalid_response", "status": 200},
        ])
    );
    let models = [
        "gone-af1",
        "error500-af2",
        "html502-af3",
        "drop-af4",
        "notcompletion-af5",
    ];
    assert_eq!(env.models_for(id), models);
    for model in models {
        assert_eq!(env.fake.calls_to(model), 1, "{model}");
    }

    let (attempts, request) = env.request_log(id, 5);
    let expected: [(&str, Value); 5] = [
        ("model_gone", json!(404)),
        ("upstream_error", json!(500)),
        ("upstream_error", json!(502)),
        ("connection_error", Value::Null),
        ("invalid_response", json!(200)),
    ];
    for (i, (line, (outcome, status))) in attempts.iter().zip(expected).enumerate() {
        assert_fields(
            line,
            &json!({"event": "attempt", "level": "warn", "request_id": id, "task": "allfail",
                    "model": models[i], "attempt": i + 1, "outcome": outcome,
                    "status": status}),
        );
    }
    assert_fields(
        &request,
        &json!({"level": "error", "task": "allfail", "client": CLIENT_NAME, "model": null,
                "outcome": "all_models_failed", "status": 502, "attempts": 5,
                "fallback_used": true, "prompt_tokens": null, "completion_tokens": null,
                "total_tokens": null}),
    );
    env.assert_logs_keep_secrets();
}

#[test]
fn all_rate_limited_is_a_429_with_retry_after() {
    let env = env(Setup::Strict);
    let id = "e2e-ratelimits";
    let response = env.ask("ratelimits", id);
    assert_eq!(response.status, 429, "{}", response.text());
    assert_routed_headers(
        &response,
        "ratelimits",
        "ratelimited-rl1=rate_limited(429), capacity-rl3=rate_limited(498), \
         gone-rl4=model_gone(404)",
        None,
    );
    // `retry-after: 8` from the 429, `x-ratelimit-reset-tokens: 7.66s` (→ 8) from the others.
    let retry_after = RETRY_AFTER_SECS.to_string();
    assert_eq!(response.header("retry-after"), Some(retry_after.as_str()));
    let error = &response.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(
        error["message"],
        format!("every model for this task is rate-limited; retry after {retry_after} s")
    );
    assert_eq!(
        without_durations(&error["attempts"]),
        json!([
            {"model": "ratelimited-rl1", "outcome": "rate_limited", "status": 429,
             "code": "rate_limit_exceeded"},
            {"model": "capacity-rl3", "outcome": "rate_limited", "status": 498,
             "code": "capacity_exceeded"},
            {"model": "gone-rl4", "outcome": "model_gone", "status": 404, "code": "model_not_found"},
        ])
    );
    assert!(
        !response.text().contains(ORG_ID),
        "Groq's organisation id reached the caller"
    );
    assert_eq!(
        env.models_for(id),
        ["ratelimited-rl1", "capacity-rl3", "gone-rl4"]
    );
    let (attempts, request) = env.request_log(id, 3);
    assert_fields(
        &attempts[0],
        &json!({"outcome": "rate_limited", "status": 429, "error_code": "rate_limit_exceeded"}),
    );
    assert_fields(
        &request,
        &json!({"level": "info", "outcome": "rate_limit_exceeded", "status": 429}),
    );

    // Inside Groq's window the chain is not called again (issue 13): 429 at once, every model
    // skipped, and no later a `Retry-After` than Groq's.
    let again = "e2e-ratelimits-again";
    let response = env.ask("ratelimits", again);
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(
        env.models_for(again),
        Vec::<String>::new(),
        "no call to Groq"
    );
    assert_routed_headers(
        &response,
        "ratelimits",
        "ratelimited-rl1=skipped(rate_limited), capacity-rl3=skipped(rate_limited), \
         gone-rl4=skipped(gone)",
        None,
    );
    let waited: u64 = response
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..=RETRY_AFTER_SECS).contains(&waited),
        "retry-after {waited}"
    );
}

#[test]
fn a_request_too_long_for_every_model_is_the_callers_400() {
    let env = env(Setup::Strict);
    let id = "e2e-toolong";
    let response = env.ask("toolong", id);
    assert_eq!(response.status, 400, "{}", response.text());
    assert_routed_headers(
        &response,
        "toolong",
        "contextlength-tl1=cannot_serve(400), gone-tl2=model_gone(404), \
         contextlength-tl3=cannot_serve(400)",
        None,
    );
    let error = &response.json()["error"];
    assert_eq!(error["code"], "context_length_exceeded");
    assert_eq!(error["param"], "messages");
    assert_eq!(
        error["message"],
        "Please reduce the length of the messages or completion."
    );
    assert_eq!(
        env.models_for(id),
        ["contextlength-tl1", "gone-tl2", "contextlength-tl3"]
    );
}

#[test]
fn allow_unauthenticated_lets_a_caller_in_but_refuses_a_wrong_key() {
    let env = env(Setup::Strict);
    let body = chat_body("e2e-open-anon").to_string();
    let response = env.post("open", None, "e2e-open-anon", body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_routed_headers(&response, "open", "ok-open=ok(200)", Some("ok-open"));
    assert_eq!(env.models_for("e2e-open-anon"), ["ok-open"]);
    let (_, request) = env.request_log("e2e-open-anon", 0);
    assert_fields(
        &request,
        &json!({"client": null, "outcome": "ok", "status": 200}),
    );

    let body = chat_body("e2e-open-wrong").to_string();
    let response = env.post("open", Some("ck_wrong"), "e2e-open-wrong", body.as_bytes());
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "invalid_api_key");
    assert!(env.models_for("e2e-open-wrong").is_empty());

    let response = env.ask("open", "e2e-open-key");
    assert_eq!(response.status, 200, "{}", response.text());
    let (_, request) = env.request_log("e2e-open-key", 0);
    assert_eq!(request["client"], CLIENT_NAME);
}

// ---------------------------------------------------------------------------------------------
// Configurations that change every answer

#[test]
fn force_model_pins_every_task_with_no_fallback() {
    let env = env(Setup::Forced);
    for task in ["fast", "reasoning", "summarization"] {
        let id = format!("e2e-forced-{task}");
        let response = env.ask(task, &id);
        assert_eq!(response.status, 502, "{task}: {}", response.text());
        assert_routed_headers(&response, task, "error500-forced=upstream_error(500)", None);
        let error = &response.json()["error"];
        assert_eq!(error["code"], "all_models_failed", "{task}");
        assert_eq!(
            without_durations(&error["attempts"]),
            json!([{"model": "error500-forced", "outcome": "upstream_error", "status": 500}])
        );
        assert_eq!(env.models_for(&id), ["error500-forced"], "{task}");
    }
    // The registry's models (`openai/gpt-oss-*`, which the fake would call gone) never ran.
    assert_eq!(env.fake.models_called(), ["error500-forced"; 3]);
}

#[test]
fn the_default_registry_from_wrangler_toml_loads() {
    // No `MODEL_REGISTRY` override: the `[vars.MODEL_REGISTRY]` table reaches the Worker as an
    // object, not a string, and must parse.
    let env = env(Setup::Forced);
    let health = env.send("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    let health = health.json();
    assert_eq!(health["status"], "ok");
    // `[vars.MODEL_PRICES]` parses too: only the forced model, which it does not price, is
    // worth a warning (issue 14).
    let warnings = health["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{health}");
    assert_eq!(warnings[0]["code"], "price_missing");
    assert!(warnings[0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("error500-forced"));
    let response = env.ask("nope", "e2e-default-registry");
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(
        response.json()["error"]["message"],
        "unknown task `nope`; known tasks: `fast`, `reasoning`, `summarization`"
    );
}

#[test]
fn a_broken_registry_is_a_500_naming_the_binding_and_healthz_503() {
    let env = env(Setup::BrokenConfig);
    let registry_problem = "`MODEL_REGISTRY.fast` must be a list of model ids, got a string";
    let id = "e2e-broken";
    let response = env.ask("fast", id);
    assert_eq!(response.status, 500, "{}", response.text());
    assert_json_content_type(&response);
    assert_eq!(response.header("x-task-type"), None);
    assert_eq!(response.header("x-attempts"), None);
    let error = &response.json()["error"];
    assert_eq!(error["code"], "config_invalid");
    assert_eq!(error["type"], "api_error");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the router's configuration is invalid: ")
            && message.contains(registry_problem)
            && message.contains("`ATTEMPT_TIMEOUT_MS`"),
        "{message}"
    );
    // Every problem, each naming its binding.
    let bindings = |problems: &Value| -> Vec<Value> {
        problems
            .as_array()
            .unwrap_or_else(|| panic!("no problems list: {problems}"))
            .iter()
            .map(|p| json!({"binding": p["binding"], "code": p["code"]}))
            .collect()
    };
    let expected = vec![
        json!({"binding": "MODEL_REGISTRY", "code": "config_invalid"}),
        json!({"binding": "ATTEMPT_TIMEOUT_MS", "code": "config_invalid"}),
    ];
    assert_eq!(bindings(&error["problems"]), expected);
    assert_eq!(error["problems"][0]["message"], registry_problem);

    let health = env.send("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 503, "{}", health.text());
    let health = health.json();
    assert_eq!(health["status"], "error");
    assert_eq!(bindings(&health["problems"]), expected);

    let logged =
        env.wait_for_line(|line| line["event"] == "config_invalid" && line["request_id"] == id);
    assert_eq!(logged["level"], "error");
    assert_eq!(bindings(&logged["problems"]), expected);
    let (_, request) = env.request_log(id, 0);
    assert_fields(
        &request,
        &json!({"level": "error", "outcome": "config_invalid", "status": 500}),
    );
    assert!(env.fake.calls().is_empty());
}

#[test]
fn a_missing_provider_key_is_a_500_and_healthz_503() {
    let env = env(Setup::NoProviderKey);
    let response = env.ask("happy", "e2e-nokey");
    assert_eq!(response.status, 500, "{}", response.text());
    assert_json_content_type(&response);
    assert_eq!(response.header("x-task-type"), Some("happy"));
    assert_eq!(response.header("x-attempts"), None);
    let error = &response.json()["error"];
    assert_eq!(error["code"], "provider_key_missing");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("`GROQ_API_KEY`")),
        "{error}"
    );

    // Client auth is checked first: a stranger does not learn the router is misconfigured.
    let body = chat_body("e2e-nokey-anon").to_string();
    let response = env.post("happy", None, "e2e-nokey-anon", body.as_bytes());
    assert_eq!(response.status, 401, "{}", response.text());

    let health = env.send("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 503, "{}", health.text());
    let health = health.json();
    assert_eq!(health["status"], "error");
    let problems = health["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{health}");
    assert_eq!(problems[0]["binding"], "GROQ_API_KEY");
    assert_eq!(problems[0]["code"], "provider_key_missing");
    assert!(env.fake.calls().is_empty());
}

#[test]
fn no_client_auth_configured_refuses_everyone() {
    // Also the default registry again: `/healthz` is 200 without a `MODEL_REGISTRY` override.
    let env = env(Setup::NoClientAuth);
    let health = env.send("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());

    for (id, key) in [
        ("e2e-noauth-anon", None),
        ("e2e-noauth-key", Some(CLIENT_KEY)),
    ] {
        let body = chat_body(id).to_string();
        let response = env.post("fast", key, id, body.as_bytes());
        assert_eq!(response.status, 401, "{id}: {}", response.text());
        assert_json_content_type(&response);
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        assert_eq!(response.header("x-task-type"), Some("fast"));
        let error = &response.json()["error"];
        assert_eq!(error["code"], "auth_not_configured", "{id}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("`ROUTER_API_KEYS`") && message.contains("`ALLOW_UNAUTHENTICATED"),
            "{message}"
        );
    }
    assert!(env.fake.calls().is_empty());
}
