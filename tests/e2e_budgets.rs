//! End-to-end tests of budgets (issue 25) on the real Worker under `wrangler dev`, with its real
//! Durable Objects (`BudgetLedger`, SQLite, persisted with `--persist-to`) in front of a fake
//! Groq: over a budget the caller gets `429 budget_exceeded` and Groq sees no call; 50 requests at
//! once against a limit pass it by at most one reservation; the spend survives a restart; a
//! streamed answer is charged the usage of Groq's final chunk; `GET /v1/usage` through a plain
//! client and from a page (CORS). The arithmetic, windows and faults are tested natively
//! (`tests/budgets.rs`).
//!
//! Run: `cargo test --test e2e_budgets`. Needs what `tests/e2e.rs` needs.

mod e2e_support;

use e2e_support::fixtures::*;
use e2e_support::http;
use e2e_support::worker::Extras;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::thread;

/// Clients of their own, so tests running at once never share a scope.
const KEYS: &str = "e2e:ck_e2e_client_key_8b2e4a71,other:ck_e2e_other_key_7a03c8b5,\
    streamer:ck_e2e_streamer_5d1e,burster:ck_e2e_burster_9c2a,restart:ck_e2e_restart_77f0";
const STREAMER: &str = "ck_e2e_streamer_5d1e";
const BURSTER: &str = "ck_e2e_burster_9c2a";
const RESTART: &str = "ck_e2e_restart_77f0";
/// What the fake Groq reports for every answer: 55 prompt and 12 completion tokens.
const ANSWER_TOKENS: f64 = 67.0;
/// `burst`'s daily token limit: ten answers.
const BURST_LIMIT: f64 = 670.0;
/// `other` may spend less than one answer a day; every client else, plenty.
const BUDGETS: &str = r#"{
    "client:other": {"tokens_per_day": 60},
    "task:burst": {"tokens_per_day": 670},
    "client": {"usd_per_day": 1000, "tokens_per_month": 100000000}
}"#;
const REGISTRY: &str = r#"{"fast":["ok-bud"],"burst":["ok-burst"],"stream":["ok-bstream"]}"#;
const PRICES: &str = r#"{"ok-bud":{"input":1,"output":2},"ok-burst":{"input":1,"output":2},"ok-bstream":{"input":1,"output":2}}"#;

fn vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MODEL_REGISTRY", REGISTRY),
        ("MODEL_PRICES", PRICES),
        ("BUDGETS", BUDGETS),
        ("ROUTER_API_KEYS", KEYS),
        ("ALLOWED_ORIGINS", ORIGIN),
    ]
}

/// The Worker the file's tests share.
fn router() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start(&vars(), Extras::default()))
}

/// A body whose prompt the router estimates above what the fake reports (⌈bytes / 4⌉ ≥ 55), with
/// a completion limit of the fake's 12 tokens: its reservation covers its real cost.
fn covered_body(tag: &str) -> Value {
    let prompt = "a prompt long enough to be estimated above fifty-five tokens. ".repeat(4);
    json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 12, "user": tag})
}

fn post(stack: &Stack, task: &str, key: &str, id: &str, body: &Value) -> http::Response {
    stack.post(&format!("/v1/tasks/{task}"), Some(key), id, body)
}

/// The caller's own budget, from `GET /v1/usage`.
fn usage(stack: &Stack, key: &str) -> Value {
    let answer = http::get(stack.port(), "/v1/usage", Some(key));
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

fn spent(usage: &Value, limit: &str) -> f64 {
    let limits = usage["limits"].as_array().expect("limits");
    let found = limits.iter().find(|l| l["limit"] == limit);
    found
        .and_then(|l| l["spent"].as_f64())
        .unwrap_or_else(|| panic!("no {limit} in {usage}"))
}

#[test]
fn over_budget_the_caller_gets_429_and_groq_sees_no_call() {
    let stack = router();
    let first = post(
        stack,
        "fast",
        OTHER_KEY,
        "e2e-bud-1",
        &chat_body("e2e-bud-1"),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let refused = post(
        stack,
        "fast",
        OTHER_KEY,
        "e2e-bud-2",
        &chat_body("e2e-bud-2"),
    );
    assert_eq!(refused.status, 429, "{}", refused.text());
    let error = &refused.json()["error"];
    assert_eq!(
        (&error["code"], &error["type"]),
        (&json!("budget_exceeded"), &json!("rate_limit_error"))
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "this client key's daily token budget (60 tokens) is spent; it resets at "
        ),
        "{message}"
    );
    assert!(!message.contains("other"), "no identity in {message}");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .expect("retry-after");
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert!(stack.models_for("e2e-bud-2").is_empty(), "Groq was called");
    assert_eq!(stack.models_for("e2e-bud-1"), ["ok-bud"]);
    // The request lines say which scopes were charged, and the refusal.
    let line = stack.request_line("e2e-bud-1");
    assert_eq!(line["budget_scopes"], json!(["client:other"]));
    assert_eq!(
        stack.request_line("e2e-bud-2")["outcome"],
        "budget_exceeded"
    );
}

#[test]
fn fifty_at_once_pass_the_limit_by_at_most_one_reservation() {
    let stack = router();
    let answers: Vec<u16> = thread::scope(|scope| {
        let sent: Vec<_> = (0..50)
            .map(|i| {
                scope.spawn(move || {
                    let id = format!("e2e-burst-{i}");
                    post(stack, "burst", BURSTER, &id, &covered_body(&id)).status
                })
            })
            .collect();
        sent.into_iter()
            .map(|s| s.join().expect("a request"))
            .collect()
    });
    let admitted = answers.iter().filter(|s| **s == 200).count();
    let refused = answers.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, 50, "{answers:?}");
    // Each answer costs 67 tokens and holds at least that: at most one past the limit.
    let spent = admitted as f64 * ANSWER_TOKENS;
    assert!(
        spent < BURST_LIMIT + ANSWER_TOKENS,
        "{admitted} admitted: {spent} tokens"
    );
    assert!(admitted >= 1, "{answers:?}");
    let calls = (0..50).filter(|i| !stack.models_for(&format!("e2e-burst-{i}")).is_empty());
    assert_eq!(calls.count(), admitted, "only admitted requests reach Groq");
    eprintln!(
        "50 at once against a limit of {BURST_LIMIT} tokens: {admitted} admitted, {spent} tokens"
    );
}

#[test]
fn a_streamed_answer_is_charged_the_usage_of_its_final_chunk() {
    let stack = router();
    let before = spent(&usage(stack, STREAMER), "tokens_per_month");
    let mut body = covered_body("e2e-bud-stream");
    body["stream"] = json!(true);
    let bearer = format!("Bearer {STREAMER}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
        ("x-request-id", "e2e-bud-stream"),
    ];
    let body = body.to_string();
    let answer = http::stream(
        stack.port(),
        "POST",
        "/v1/tasks/stream",
        &headers,
        body.as_bytes(),
    )
    .finish();
    assert!(
        answer.text().ends_with("data: [DONE]\n\n"),
        "{}",
        answer.text()
    );
    // Settled after the stream: the usage Groq reported, not the hold.
    let line = stack.request_line("e2e-bud-stream");
    assert_eq!(line["total_tokens"], 67);
    let after = wait_for_spent(stack, STREAMER, before + ANSWER_TOKENS);
    assert_eq!(after, before + ANSWER_TOKENS);
}

/// `tokens_per_month` of `key` once it reaches `want` (a settlement follows the answer).
fn wait_for_spent(stack: &Stack, key: &str, want: f64) -> f64 {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    loop {
        let now = spent(&usage(stack, key), "tokens_per_month");
        if now >= want || std::time::Instant::now() > deadline {
            return now;
        }
        thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn usage_answers_a_plain_client_and_a_page() {
    let stack = router();
    let own = usage(stack, CLIENT_KEY);
    assert_eq!(
        (&own["object"], &own["scope"]),
        (&json!("budget"), &json!("client"))
    );
    let limits: Vec<&Value> = own["limits"].as_array().expect("limits").iter().collect();
    assert_eq!(limits.len(), 2, "{own}");
    assert_eq!(
        (&limits[0]["limit"], &limits[0]["value"]),
        (&json!("usd_per_day"), &json!(1000.0))
    );
    assert!(
        limits[0]["resets_at"]
            .as_str()
            .is_some_and(|t| t.ends_with("T00:00:00Z")),
        "{own}"
    );
    // From a page: the preflight, then the call, with the origin let in.
    let preflight = http::send(
        stack.port(),
        "OPTIONS",
        "/v1/usage",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ],
        b"",
    );
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_headers(
        &preflight.headers,
        json!({"access-control-allow-origin": ORIGIN, "access-control-allow-headers": "authorization"}),
    );
    let bearer = format!("Bearer {CLIENT_KEY}");
    let from_page = http::send(
        stack.port(),
        "GET",
        "/v1/usage",
        &[("origin", ORIGIN), ("authorization", &bearer)],
        b"",
    );
    assert_eq!(from_page.status, 200);
    assert_headers(
        &from_page.headers,
        json!({"access-control-allow-origin": ORIGIN}),
    );
    assert_eq!(from_page.json()["scope"], "client");
    // No key, no usage.
    assert_eq!(http::get(stack.port(), "/v1/usage", None).status, 401);
}

#[test]
fn the_spend_survives_a_restart() {
    let state =
        std::env::temp_dir().join(format!("task-router-e2e-budgets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let dir = state.to_string_lossy().into_owned();
    let args = ["--persist-to", dir.as_str()];
    let extras = || Extras {
        args: &args,
        ..Extras::default()
    };
    let first = Stack::start(&vars(), extras());
    let answer = post(
        &first,
        "fast",
        RESTART,
        "e2e-restart-1",
        &chat_body("e2e-restart-1"),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let spent_before = wait_for_spent(&first, RESTART, ANSWER_TOKENS);
    assert_eq!(spent_before, ANSWER_TOKENS);
    drop(first);
    let second = Stack::start(&vars(), extras());
    assert_eq!(
        spent(&usage(&second, RESTART), "tokens_per_month"),
        ANSWER_TOKENS
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&state);
}
