//! The routing core's CPU cost per request, timed natively: workerd freezes `Date.now()` and
//! `performance.now()` inside a request, so timers in the Worker cannot measure this.
//!
//! Run: `cargo bench --bench core` (the `bench` profile inherits `[profile.release]`: LTO,
//! `opt-level = "z"`, as the wasm bundle is built). No dependencies beyond the crate's own: each
//! operation runs in batches sized to take about 10 ms, `SAMPLES` batches per operation, and the
//! table shows the median and the fastest batch per operation. Expect the wasm build in workerd to
//! be slower than these native figures by a small factor; what matters here is their size next to
//! the Worker's whole CPU cost per request (`benches/bench.py` reads that from `/proc`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use task_router::bindings::BindingValue;
use task_router::groq::completion::Completion;
use task_router::groq::outcome::{classify_error, GroqError};
use task_router::groq::sse::SseScanner;
use task_router::http::config::Config;
use task_router::http::request::ChatRequest;
use task_router::routing::chain::ModelChain;

const SAMPLES: usize = 15;
const BATCH_TARGET: Duration = Duration::from_millis(10);
const BIG_BODY_BYTES: usize = 1 << 20;

const SMALL_TASK_BODY: &str = r#"{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi in one word."}],"max_completion_tokens":64,"temperature":0.2}"#;

/// Groq's answer as `benches/upstream.py` sends it.
const COMPLETION: &str = r#"{"id":"chatcmpl-bench-1","object":"chat.completion","created":1742425217,"model":"ok-a","choices":[{"index":0,"message":{"role":"assistant","content":"Hi! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.0121,"prompt_tokens":44,"prompt_time":0.0021,"completion_tokens":10,"completion_time":0.0083,"total_tokens":54,"total_time":0.0104},"system_fingerprint":"fp_bench","x_groq":{"id":"req_bench_1"},"service_tier":"on_demand"}"#;

const GONE: &str = r#"{"error":{"message":"The model `gone-a` does not exist or you do not have access to it.","type":"invalid_request_error","code":"model_not_found"}}"#;

/// A caller's body on `/v1/chat/completions` of exactly `BIG_BODY_BYTES`, most of it one message.
fn big_sdk_body() -> String {
    let frame = r#"{"model":"fast","messages":[{"role":"user","content":""}],"max_completion_tokens":64,"temperature":0.2}"#;
    let pad = BIG_BODY_BYTES - frame.len();
    let lorem = "The quick brown fox jumps over the lazy dog. "
        .repeat(pad / 45 + 1)
        .chars()
        .take(pad)
        .collect::<String>();
    let body = frame.replacen(r#""content":"""#, &format!(r#""content":"{lorem}""#), 1);
    assert_eq!(body.len(), BIG_BODY_BYTES);
    body
}

/// The stream `benches/upstream.py` sends: role chunk, 3 content chunks, final chunk with
/// `x_groq.usage`, `[DONE]`; as separate events so it can also be fed one event at a time.
fn stream_events() -> Vec<String> {
    let chunk = |choice: serde_json::Value, extra: Option<serde_json::Value>| {
        let mut c = json!({"id": "chatcmpl-bench-1", "object": "chat.completion.chunk",
            "created": 1742425217, "model": "ok-a", "system_fingerprint": "fp_bench",
            "choices": [choice]});
        if let Some(x) = extra {
            c["x_groq"] = x;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(
        json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
        Some(json!({"id": "req_bench_1"})),
    )];
    for word in ["Hi!", " How can I", " help?"] {
        events.push(chunk(
            json!({"index": 0, "delta": {"content": word}, "logprobs": null, "finish_reason": null}),
            None,
        ));
    }
    events.push(chunk(
        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}),
        Some(
            json!({"id": "req_bench_1", "usage": {"queue_time": 0.0121, "prompt_tokens": 44,
            "prompt_time": 0.0021, "completion_tokens": 5, "completion_time": 0.004,
            "total_tokens": 49, "total_time": 0.0061}}),
        ),
    ));
    events.push("data: [DONE]\n\n".to_string());
    events
}

/// The bindings a deployed router reads: `wrangler.toml`'s `[vars]` (the registry as the table
/// wrangler hands over as an object) plus the two secrets.
fn deployed_bindings() -> BTreeMap<&'static str, BindingValue> {
    let text = |s: &str| BindingValue::Text(s.to_string());
    BTreeMap::from([
        ("GROQ_BASE_URL", text("https://api.groq.com")),
        ("ATTEMPT_TIMEOUT_MS", text("15000")),
        ("REQUEST_TIMEOUT_MS", text("45000")),
        ("MODEL_GONE_TTL_S", text("3600")),
        ("FORCE_MODEL", text("")),
        ("RATE_LIMIT_PERIOD_S", text("60")),
        ("MAX_REQUEST_BYTES", text("1048576")),
        ("ALLOWED_ORIGINS", text("")),
        ("ALLOW_UNAUTHENTICATED", text("false")),
        ("LOG_LEVEL", text("warn")),
        ("GROQ_API_KEY", text("gsk_bench_provider_key")),
        ("ROUTER_API_KEYS", text("web:ck_web_key,batch:ck_batch_key")),
        (
            "MODEL_REGISTRY",
            BindingValue::Json(
                json!({
                    "fast": ["openai/gpt-oss-20b"],
                    "reasoning": ["openai/gpt-oss-120b"],
                    "summarization": ["openai/gpt-oss-120b"],
                    "fallback": ["openai/gpt-oss-20b", "openai/gpt-oss-120b"],
                })
                .to_string(),
            ),
        ),
    ])
}

struct Row {
    name: &'static str,
    input: String,
    bytes: usize,
    median: f64,
    fastest: f64,
}

/// Times `op` in `SAMPLES` batches of about `BATCH_TARGET` each; ns per call.
fn time<R>(name: &'static str, input: String, bytes: usize, mut op: impl FnMut() -> R) -> Row {
    // Warm up and size the batch.
    let mut per_batch = 1usize;
    loop {
        let started = Instant::now();
        for _ in 0..per_batch {
            black_box(op());
        }
        let took = started.elapsed();
        if took >= BATCH_TARGET / 4 {
            let scale = BATCH_TARGET.as_secs_f64() / took.as_secs_f64();
            per_batch = ((per_batch as f64 * scale).ceil() as usize).max(1);
            break;
        }
        per_batch *= 4;
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_batch {
                black_box(op());
            }
            started.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let row = Row {
        name,
        input,
        bytes,
        median: samples[SAMPLES / 2],
        fastest: samples[0],
    };
    eprintln!("  {:<34} {:>12.0} ns/op", row.name, row.median);
    row
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let small = SMALL_TASK_BODY.as_bytes();
    let big = big_sdk_body();
    let events = stream_events();
    let whole_stream = events.concat();
    let bindings = deployed_bindings();
    let config = Config::load(&bindings).expect("the deployed bindings are valid");
    let small_request = ChatRequest::parse(small, false).expect("the small body is valid");
    let big_request = ChatRequest::parse(big.as_bytes(), true).expect("the 1 MiB body is valid");
    assert!(Completion::parse(COMPLETION.as_bytes()).is_some());
    let gone = GroqError::from_body(GONE.as_bytes()).expect("Groq's 404 body parses");
    assert_eq!(
        classify_error(404, gone.code.as_deref()),
        task_router::groq::outcome::Outcome::ModelGone
    );
    let mut check = SseScanner::default().push(whole_stream.as_bytes());
    assert!(check.done && check.data_events == 5 && check.usage.is_some());
    check.forward.clear();

    eprintln!("task-router core, native: {SAMPLES} batches of ~{BATCH_TARGET:?} per operation");
    let rows = vec![
        time(
            "`Config::load`",
            "deployed `[vars]` + 2 secrets".into(),
            0,
            || Config::load(black_box(&bindings)),
        ),
        time(
            "`ChatRequest::parse`",
            format!("small, {} B (`/v1/tasks`)", small.len()),
            small.len(),
            || ChatRequest::parse(black_box(small), false),
        ),
        time(
            "`ChatRequest::parse`",
            "1 MiB (`/v1/chat/completions`)".into(),
            big.len(),
            || ChatRequest::parse(black_box(big.as_bytes()), true),
        ),
        time(
            "`ModelChain::for_task`",
            "`fast`, deployed registry".into(),
            0,
            || ModelChain::for_task(black_box(&config.routing), black_box("fast")),
        ),
        time(
            "`GroqBody::to_vec` (sets `model`)",
            "small".into(),
            small.len(),
            || {
                let request = black_box(&small_request);
                request
                    .body
                    .for_model(black_box("openai/gpt-oss-20b"))
                    .to_vec()
            },
        ),
        time(
            "`GroqBody::to_vec` (sets `model`)",
            "1 MiB".into(),
            big.len(),
            || {
                let request = black_box(&big_request);
                request
                    .body
                    .for_model(black_box("openai/gpt-oss-20b"))
                    .to_vec()
            },
        ),
        time(
            "`Completion::parse`",
            format!("Groq 200, {} B", COMPLETION.len()),
            COMPLETION.len(),
            || Completion::parse(black_box(COMPLETION.as_bytes())),
        ),
        time(
            "`GroqError::from_body` + `classify_error`",
            format!("Groq 404 `model_not_found`, {} B", GONE.len()),
            GONE.len(),
            || {
                let error = GroqError::from_body(black_box(GONE.as_bytes()));
                classify_error(404, error.as_ref().and_then(|e| e.code.as_deref()))
            },
        ),
        time(
            "`SseScanner::push`",
            format!("whole stream in one push, {} B", whole_stream.len()),
            whole_stream.len(),
            || SseScanner::default().push(black_box(whole_stream.as_bytes())),
        ),
        time(
            "`SseScanner::push`",
            format!("same stream, one push per event ({})", events.len()),
            whole_stream.len(),
            || {
                let mut scanner = SseScanner::default();
                let mut forwarded = 0;
                for event in &events {
                    forwarded += scanner.push(black_box(event.as_bytes())).forward.len();
                }
                forwarded
            },
        ),
    ];

    println!(
        "task-router core, native, release profile: median and fastest of {SAMPLES} batches\n"
    );
    println!("| operation | input | median | fastest | throughput |");
    println!("|---|---|---:|---:|---:|");
    for row in &rows {
        let throughput = if row.bytes >= 64 * 1024 {
            format!("{:.0} MB/s", row.bytes as f64 / row.median * 1e3)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.name,
            row.input,
            fmt_ns(row.median),
            fmt_ns(row.fastest),
            throughput
        );
    }
    let per_request = |picks: &[(&str, &str)]| -> f64 {
        picks
            .iter()
            .map(|(name, input)| {
                rows.iter()
                    .find(|r| r.name == *name && r.input.starts_with(input))
                    .expect("a timed row")
                    .median
            })
            .sum()
    };
    let small_total = per_request(&[
        ("`Config::load`", "deployed"),
        ("`ChatRequest::parse`", "small"),
        ("`ModelChain::for_task`", "`fast`"),
        ("`GroqBody::to_vec` (sets `model`)", "small"),
        ("`Completion::parse`", "Groq 200"),
    ]);
    let big_total = per_request(&[
        ("`Config::load`", "deployed"),
        ("`ChatRequest::parse`", "1 MiB"),
        ("`ModelChain::for_task`", "`fast`"),
        ("`GroqBody::to_vec` (sets `model`)", "1 MiB"),
        ("`Completion::parse`", "Groq 200"),
    ]);
    println!(
        "\nCore work per plain request (config, parse, chain, body, answer): small {}, 1 MiB {}.",
        fmt_ns(small_total),
        fmt_ns(big_total)
    );
}
