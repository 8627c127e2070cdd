//! End-to-end tests of the response cache (issue 26) on the real Worker under `wrangler dev`,
//! with the real Cache API (workerd's, in the Worker's own `--persist-to` state) in front of a
//! fake Groq: a second identical request is a hit and Groq sees one call; another client misses
//! unless the task is shared; a streamed request is served from an entry a whole answer stored,
//! and the reverse, and the OpenAI SDK reads the stream; entries expire; `no-store` skips; mock
//! and failed answers are never stored. Key rules and what is stored are tested natively
//! (`tests/cache.rs`).
//!
//! Run: `cargo test --test e2e_cache`. Needs what `tests/e2e.rs` needs.

mod e2e_support;

use e2e_support::fixtures::*;
use e2e_support::http::{self, Response};
use e2e_support::process::{python, require_python_sdks, run_with_timeout};
use e2e_support::worker::Extras;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

/// Each test has a task of its own, so tests running at once never meet in the cache.
const REGISTRY: &str = r#"{"cached":["ok-c1"],"faq":["ok-c2"],"short":["ok-c3"],
    "failing":["error500-c4"],"streamy":["ok-c5"],"sdk":["ok-c6"],"skipping":["ok-c7"],
    "mocked":["ok-c8"]}"#;
const CACHE: &str = r#"{"cached":3600,"faq":{"ttl_s":3600,"shared":true},"short":2,
    "failing":3600,"streamy":3600,"sdk":3600,"skipping":3600,"mocked":3600}"#;

fn router() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let vars = [
            ("MODEL_REGISTRY", REGISTRY),
            ("CACHE", CACHE),
            ("ALLOW_MOCK", "true"),
        ];
        Stack::start(&vars, Extras::default())
    })
}

/// `POST /v1/tasks/{task}` as the client `key`, with a prompt of the test's own and maybe a
/// `Cache-Control`.
fn ask(
    stack: &Stack,
    task: &str,
    key: &str,
    extra: Value,
    cache_control: Option<&str>,
) -> Response {
    let mut body = json!({"messages": [{"role": "user", "content": format!("{PROMPT} ({task})")}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let bearer = format!("Bearer {key}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    headers.extend(cache_control.map(|c| ("cache-control", c)));
    let path = format!("/v1/tasks/{task}");
    http::send(
        stack.port(),
        "POST",
        &path,
        &headers,
        body.to_string().as_bytes(),
    )
}

/// `ask`, once the store that follows an answer has had time to land.
fn settle() {
    thread::sleep(Duration::from_millis(300));
}

fn cache_status(response: &Response) -> Option<&str> {
    response.header("x-cache-status")
}

#[test]
fn a_second_identical_request_is_a_hit_and_groq_sees_one_call() {
    let stack = router();
    let first = ask(stack, "cached", CLIENT_KEY, json!({}), None);
    assert_eq!(
        (first.status, cache_status(&first)),
        (200, Some("miss")),
        "{}",
        first.text()
    );
    settle();
    let second = ask(stack, "cached", CLIENT_KEY, json!({}), None);
    assert_eq!(
        (second.status, cache_status(&second)),
        (200, Some("hit")),
        "{}",
        second.text()
    );
    assert_eq!(stack.fake.calls_to("ok-c1"), 1);
    let answer = second.json();
    assert_has(
        &answer,
        json!({"cache": "hit", "content": "hello from ok-c1", "model_used": "ok-c1", "attempts": []}),
    );
    assert_eq!(answer["usage"]["cost_usd"], 0.0);
    let line =
        stack.log_line(|l| l["event"] == "request" && l["task"] == "cached" && l["cache"] == "hit");
    assert_has(&line, json!({"cost_usd": 0.0, "total_tokens": 67}));
    // Another client has its own entries: a miss, and a call.
    let other = ask(stack, "cached", OTHER_KEY, json!({}), None);
    assert_eq!(cache_status(&other), Some("miss"));
    assert_eq!(stack.fake.calls_to("ok-c1"), 2);
}

#[test]
fn a_shared_task_answers_every_caller_from_one_entry() {
    let stack = router();
    let first = ask(stack, "faq", CLIENT_KEY, json!({}), None);
    assert_eq!(cache_status(&first), Some("miss"));
    settle();
    let other = ask(stack, "faq", OTHER_KEY, json!({}), None);
    assert_eq!(cache_status(&other), Some("hit"));
    assert_eq!(stack.fake.calls_to("ok-c2"), 1);
}

#[test]
fn entries_expire_after_their_ttl() {
    let stack = router();
    assert_eq!(
        cache_status(&ask(stack, "short", CLIENT_KEY, json!({}), None)),
        Some("miss")
    );
    settle();
    assert_eq!(
        cache_status(&ask(stack, "short", CLIENT_KEY, json!({}), None)),
        Some("hit")
    );
    thread::sleep(Duration::from_millis(2_300));
    assert_eq!(
        cache_status(&ask(stack, "short", CLIENT_KEY, json!({}), None)),
        Some("miss")
    );
    assert_eq!(stack.fake.calls_to("ok-c3"), 2);
}

#[test]
fn no_store_skips_and_failed_and_mock_answers_are_never_stored() {
    let stack = router();
    for _ in 0..2 {
        let skipped = ask(stack, "skipping", CLIENT_KEY, json!({}), Some("no-store"));
        assert_eq!(
            (skipped.status, cache_status(&skipped)),
            (200, Some("skip"))
        );
        settle();
    }
    assert_eq!(stack.fake.calls_to("ok-c7"), 2);
    for _ in 0..2 {
        let failed = ask(stack, "failing", CLIENT_KEY, json!({}), None);
        assert_eq!((failed.status, cache_status(&failed)), (502, Some("miss")));
        settle();
    }
    assert_eq!(stack.fake.calls_to("error500-c4"), 2);
    let mock = json!({"mock_response": "canned"});
    for _ in 0..2 {
        let mocked = ask(stack, "mocked", CLIENT_KEY, mock.clone(), None);
        assert_eq!((mocked.status, cache_status(&mocked)), (200, Some("skip")));
        settle();
    }
    // The mock's answer was not stored: the real request after it calls Groq.
    let real = ask(stack, "mocked", CLIENT_KEY, json!({}), None);
    assert_eq!(cache_status(&real), Some("miss"));
    assert_eq!(stack.fake.calls_to("ok-c8"), 1);
}

#[test]
fn a_stream_is_stored_whole_and_a_whole_answer_is_served_as_a_stream() {
    let stack = router();
    // A streamed miss (the default pipe relay) stores the completion it adds up to.
    let bearer = format!("Bearer {CLIENT_KEY}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let body = json!({"messages": [{"role": "user", "content": format!("{PROMPT} (streamy)")}], "stream": true});
    let body = body.to_string();
    let streamed = http::stream(
        stack.port(),
        "POST",
        "/v1/tasks/streamy",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(streamed.header("x-cache-status"), Some("miss"));
    let streamed = streamed.finish();
    assert!(
        streamed.text().ends_with("data: [DONE]\n\n"),
        "{}",
        streamed.text()
    );
    settle();
    let whole = ask(stack, "streamy", CLIENT_KEY, json!({}), None);
    assert_eq!(cache_status(&whole), Some("hit"), "{}", whole.text());
    assert_eq!(whole.json()["content"], "hello from ok-c5");
    assert_eq!(stack.fake.calls_to("ok-c5"), 1);
}

#[test]
fn the_openai_sdk_reads_a_stream_served_from_a_whole_answer() {
    require_python_sdks();
    let stack = router();
    // Stored by a whole answer on the SDK route…
    let body = json!({"model": "sdk", "messages": [{"role": "user", "content": "Say hello."}]});
    let first = stack.post(
        "/v1/chat/completions",
        Some(CLIENT_KEY),
        "e2e-cache-sdk",
        &body,
    );
    assert_eq!(
        (first.status, first.header("x-cache-status")),
        (200, Some("miss"))
    );
    settle();
    // …and read as a stream by the SDK, with the usage chunk it asks for.
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
raw = client.chat.completions.with_raw_response.create(model="sdk", stream=True,
    stream_options={"include_usage": True}, messages=[{"role": "user", "content": "Say hello."}])
status = raw.headers.get("x-cache-status")
chunks = list(raw.parse())
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
usage = next(c.usage for c in reversed(chunks) if c.usage)
print(status, repr(text), usage.total_tokens, chunks[-2].choices[0].finish_reason)
"#;
    let base = format!("http://127.0.0.1:{}", stack.port());
    let ran = run_with_timeout(
        python().args(["-c", script, &base, CLIENT_KEY]),
        Duration::from_secs(60),
    );
    assert!(ran.succeeded(), "{}", ran.output());
    assert!(
        ran.output().contains("hit 'hello from ok-c6' 67 stop"),
        "{}",
        ran.output()
    );
    assert_eq!(stack.fake.calls_to("ok-c6"), 1);
}
