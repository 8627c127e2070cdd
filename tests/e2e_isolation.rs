//! End-to-end: one caller never hurts another (issue 22), on the real Worker under `wrangler dev`
//! (workerd) with the fake Groq of `e2e_support::fake_groq` on 127.0.0.1: an oversized request
//! cools no model for anyone else, a browser preflight carrying every header an SDK may send is
//! allowed, a caller who leaves stops the chain, and a burst of large bodies leaves the Worker's
//! memory bounded and the Worker serving.
//! Run: `cargo test --test e2e_isolation` (builds the Worker; needs npm and the Rust toolchain).

mod e2e_support;

use e2e_support::fake_groq::TPM_LIMIT;
use e2e_support::fixtures::{Stack, CLIENT_KEY as ALICE_KEY, ORIGIN, OTHER_KEY as BOB_KEY};
use e2e_support::http;
use e2e_support::worker::{Extras, Worker};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const ATTEMPT_TIMEOUT_MS: u64 = 4_000;

/// One Worker for the file's tests, started on first use; its watchdog stops it when the test
/// process ends.
fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let registry = json!({
            // The first model's per-minute token limit is smaller than a big request.
            "roomy": ["tpm-roomy1", "ok-roomy2"],
            "tight": ["tpm-tight1", "tpm-tight2"],
            "hung": ["hang-hung1", "ok-hung2"],
            "fast": ["ok-fast"],
        });
        let timeout = ATTEMPT_TIMEOUT_MS.to_string();
        let vars = [
            ("MODEL_REGISTRY", registry.to_string()),
            ("ALLOWED_ORIGINS", ORIGIN.to_string()),
            ("ATTEMPT_TIMEOUT_MS", timeout),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stack = Stack::start(&vars, Extras::default());
        stack.fake.set_hang_for(Duration::from_secs(20));
        stack
    })
}

/// `content` as the one user message of a request to `task` with `key` (Alice's or Bob's).
fn ask(stack: &Stack, task: &str, key: &str, content: &str, id: &str) -> http::Response {
    let body = json!({"messages": [{"role": "user", "content": content}]});
    stack.post(&format!("/v1/tasks/{task}"), Some(key), id, &body)
}

/// About `bytes` of text: well over `TPM_LIMIT` tokens when `bytes` is 60 KB.
fn text_of(bytes: usize) -> String {
    "All work and no play. ".repeat(bytes / 22)
}

#[test]
fn one_callers_oversized_request_cools_nothing_for_anyone_else() {
    let stack = stack();
    let big = text_of(60_000);
    assert!(big.len() / 4 > TPM_LIMIT);

    // Alice's 60 KB: too large for the first model's per-minute limit, the next one takes it.
    let alice = ask(stack, "roomy", ALICE_KEY, &big, "iso-alice-roomy");
    assert_eq!(alice.status, 200, "{}", alice.text());
    let expected = Some("tpm-roomy1=request_too_large(413), ok-roomy2=ok(200)");
    assert_eq!(alice.header("x-attempts"), expected);
    // Bob's small request right after: the first model answers it, nothing was cooling.
    let bob = ask(stack, "roomy", BOB_KEY, "hi", "iso-bob-roomy");
    assert_eq!(bob.status, 200, "{}", bob.text());
    assert_eq!(bob.header("x-attempts"), Some("tpm-roomy1=ok(200)"));

    // Too large for every model of the task: Alice alone gets a 413, with nothing to wait for.
    for round in 0..2 {
        let alice = ask(
            stack,
            "tight",
            ALICE_KEY,
            &big,
            &format!("iso-alice-{round}"),
        );
        assert_eq!(alice.status, 413, "{}", alice.text());
        assert_eq!(alice.header("retry-after"), None);
        let error = &alice.json()["error"];
        assert_eq!(error["code"], "request_too_large");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("too large for every model"), "{error}");
        let bob = ask(stack, "tight", BOB_KEY, "hi", &format!("iso-bob-{round}"));
        assert_eq!(bob.status, 200, "{}", bob.text());
        assert_eq!(bob.header("x-attempts"), Some("tpm-tight1=ok(200)"));
    }
}

#[test]
fn a_preflight_carrying_every_sdk_header_is_allowed_for_an_allowed_origin() {
    let stack = stack();
    // What the OpenAI JS SDK sends from a browser, its helpers' and organisation headers included.
    let asked = "authorization, content-type, openai-organization, openai-project, \
                 x-stainless-arch, x-stainless-custom-poll-interval, x-stainless-helper-method, \
                 x-stainless-lang, x-stainless-os, x-stainless-package-version, \
                 x-stainless-poll-helper, x-stainless-retry-count, x-stainless-runtime, \
                 x-stainless-runtime-version, x-stainless-timeout";
    let preflight = |origin: &str| {
        let asking = [("access-control-request-method", "POST")];
        let headers = [
            ("origin", origin),
            asking[0],
            ("access-control-request-headers", asked),
        ];
        http::send(
            stack.port(),
            "OPTIONS",
            "/v1/chat/completions",
            &headers,
            b"",
        )
    };
    let allowed = preflight(ORIGIN);
    assert_eq!(allowed.status, 204, "{}", allowed.text());
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ORIGIN));
    let granted = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default();
    let granted: Vec<&str> = granted.split(", ").collect();
    for header in asked.split(',').map(str::trim) {
        assert!(
            granted.contains(&header),
            "`{header}` not allowed: {granted:?}"
        );
    }
    let other = preflight("https://evil.example");
    assert_eq!(other.status, 403);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("access-control-allow-headers"), None);
}

/// A caller who gives up on a chain whose first model hangs: the runtime's request signal aborts
/// the call in flight, and no other model is called. Sent to the Worker's own socket and left with
/// a TCP reset: how a bare workerd learns a caller has gone while the Worker waits (wrangler's
/// proxy in front does not pass a disconnect on; Cloudflare's edge does).
#[test]
fn a_caller_who_leaves_mid_chain_stops_it_and_no_other_model_is_called() {
    use std::io::Write;
    let stack = stack();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let request = format!(
        "POST /v1/tasks/hung HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         authorization: Bearer {ALICE_KEY}\r\nx-request-id: iso-leaver\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    let mut caller = std::net::TcpStream::connect(("127.0.0.1", stack.worker.own_port()))
        .expect("connect to the Worker's own socket");
    caller
        .write_all(request.as_bytes())
        .expect("send the request");
    // The first model hangs; the caller gives up at 2 s, before the attempt timeout (4 s).
    thread::sleep(Duration::from_secs(2));
    socket2::SockRef::from(&caller)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(caller);

    let line = stack
        .worker
        .wait_for_log_json(Duration::from_secs(10), |l| {
            l["event"] == "request" && l["request_id"] == "iso-leaver"
        })
        .unwrap_or_else(|| panic!("no request line:\n{}", stack.worker.logs()));
    assert_eq!(line["outcome"], "client_disconnected", "{line}");
    assert_eq!(line["status"], 499, "{line}");
    assert!(
        started.elapsed() < Duration::from_millis(ATTEMPT_TIMEOUT_MS),
        "the chain ended with the caller, not at the attempt timeout"
    );
    // Past the attempt timeout, the next model has still not been called.
    let past_timeout = Duration::from_millis(ATTEMPT_TIMEOUT_MS + 1_000);
    thread::sleep(past_timeout.saturating_sub(started.elapsed()));
    assert_eq!(stack.fake.calls_to("hang-hung1"), 1);
    // A model was called for nobody.
    assert_eq!(stack.fake.calls_to("ok-hung2"), 0);
}

/// Resident memory of the workerd that runs the Worker (not wrangler's proxy), in KiB.
fn worker_rss_kib(worker: &Worker) -> u64 {
    let group = worker.pid();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let pgid: u32 = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
        if comm != "workerd" || pgid != group {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let proxy = format!("entry=127.0.0.1:{}", worker.port());
        if String::from_utf8_lossy(&cmdline).contains(&proxy) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
        total += rss
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert!(total > 0, "no workerd of the Worker found in group {group}");
    total
}

/// How many 1 MiB bodies arrive at once in the burst test.
const BURST: usize = 60;

/// `BURST` requests at once, each with a body of `bytes`; their statuses, `Retry-After`s and
/// bodies.
fn burst(stack: &Stack, bytes: usize, id: &str) -> Vec<(u16, Option<String>, String)> {
    let body = json!({"messages": [{"role": "user", "content": text_of(bytes)}]});
    thread::scope(|s| {
        let send = |i| {
            let r = stack.post(
                "/v1/tasks/fast",
                Some(ALICE_KEY),
                &format!("{id}-{i}"),
                &body,
            );
            let retry = r.header("retry-after").map(str::to_string);
            (r.status, retry, r.text())
        };
        let sent: Vec<_> = (0..BURST).map(|i| s.spawn(move || send(i))).collect();
        sent.into_iter()
            .map(|t| t.join().expect("a sender panicked"))
            .collect()
    })
}

/// `BURST` bodies of 1 MiB at once: the router holds at most `MAX_INFLIGHT_BYTES` (8 MiB) of
/// them and sheds the rest with 503 and `Retry-After`, so the Worker's memory grows by a bounded
/// amount, and it answers the next request. Measured against a burst of bodies just over
/// `MAX_REQUEST_BYTES`, which the router refuses unread: what workerd itself holds for a burst.
#[test]
fn a_burst_of_large_bodies_leaves_memory_bounded_and_the_worker_serving() {
    let stack = stack();
    let small = ask(stack, "fast", BOB_KEY, "warm up", "iso-warm");
    assert_eq!(small.status, 200, "{}", small.text());

    let start = worker_rss_kib(&stack.worker);
    let refused = burst(stack, (1 << 20) + 1_000, "iso-unread");
    assert!(
        refused.iter().all(|(status, ..)| *status == 413),
        "{refused:?}"
    );
    let unread = worker_rss_kib(&stack.worker);
    let answers = burst(stack, 1_040_000, "iso-burst");
    let read = worker_rss_kib(&stack.worker);

    let served = answers.iter().filter(|(status, ..)| *status == 200).count();
    let shed: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    let workerd_mib = unread.saturating_sub(start) / 1024;
    let router_mib = read.saturating_sub(unread) / 1024;
    eprintln!(
        "e2e_isolation: {BURST} concurrent 1 MiB bodies: {served} served, {} shed; Worker RSS \
         {} MiB, +{workerd_mib} MiB after the unread burst, +{router_mib} MiB after the read one",
        shed.len(),
        start / 1024,
    );
    assert_eq!(served + shed.len(), answers.len(), "{answers:?}");
    assert!(served > 0, "none served");
    assert!(!shed.is_empty(), "none shed: the bound did not hold");
    for (_, retry_after, text) in shed {
        let error: Value = serde_json::from_str(text).expect("an OpenAI-shaped error");
        assert_eq!(error["error"]["code"], "overloaded", "{text}");
        assert!(retry_after.is_some(), "a shed request says when to retry");
    }
    // Unbounded, the router held about 3 MiB per body at once (RSS +180 MiB for 60).
    assert!(
        router_mib < 96,
        "the Worker grew by {router_mib} MiB reading the burst"
    );
    let small = ask(stack, "fast", BOB_KEY, "still there?", "iso-after");
    assert_eq!(small.status, 200, "{}", small.text());
}
