//! End to end, under `wrangler dev` against the fake Groq: health memory (a gone model costs one
//! call, not one per request), the request deadline over hung models, `GET /v1/routes`, the
//! scheduled probe through `/__scheduled`, and gone verdicts shared through the `MODEL_HEALTH`
//! KV namespace between two separate Workers.
//!
//! Run: `cargo test --test e2e_health` (needs node/npm; the first build installs tools).

mod e2e_support;

use e2e_support::attempts::{outcomes, pairs};
use std::time::{Duration, Instant};

use e2e_support::fake_groq::FakeGroq;
use e2e_support::http;
use e2e_support::worker::{Extras, Worker};
use serde_json::json;

const GROQ_KEY: &str = "gsk_e2e_health";
const CLIENT_KEY: &str = "ck_health";

fn vars<'a>(
    fake: &'a FakeGroq,
    registry: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, String)> {
    let mut v = vec![
        ("GROQ_BASE_URL", fake.base_url()),
        ("GROQ_API_KEY", GROQ_KEY.to_string()),
        ("ROUTER_API_KEYS", format!("health:{CLIENT_KEY}")),
        ("MODEL_REGISTRY", registry.to_string()),
    ];
    v.extend(extra.iter().map(|(k, val)| (*k, val.to_string())));
    v
}

fn start(fake: &FakeGroq, registry: &str, extra: &[(&str, &str)], extras: Extras<'_>) -> Worker {
    let owned = vars(fake, registry, extra);
    let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Worker::start_with(&borrowed, extras)
}

fn ask(worker: &Worker, task: &str) -> http::Response {
    let body = json!({"messages": [{"role": "user", "content": "health check prompt"}]});
    http::post_json(
        worker.port(),
        &format!("/v1/tasks/{task}"),
        Some(CLIENT_KEY),
        &body,
    )
}

#[test]
fn a_gone_model_is_paid_for_once_and_hung_models_hit_the_deadline() {
    let fake = FakeGroq::start(GROQ_KEY);
    let registry = r#"{"learn":["gone-h1","ok-h1"],"hung":["hang-h1","hang-h2","hang-h3"]}"#;
    let worker = start(
        &fake,
        registry,
        &[
            ("ATTEMPT_TIMEOUT_MS", "1500"),
            ("REQUEST_TIMEOUT_MS", "4000"),
        ],
        Extras::default(),
    );

    let first = ask(&worker, "learn");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(fake.models_called(), vec!["gone-h1", "ok-h1"]);
    for _ in 0..4 {
        let r = ask(&worker, "learn");
        assert_eq!(r.status, 200);
        assert_eq!(
            outcomes(&r.json()),
            pairs(&[("gone-h1", "skipped"), ("ok-h1", "ok")])
        );
        assert_eq!(r.json()["attempts"][0]["reason"], "gone");
        assert_eq!(
            r.header("x-attempts"),
            Some("gone-h1=skipped(gone), ok-h1=ok(200)")
        );
    }
    assert_eq!(
        fake.calls_to("gone-h1"),
        1,
        "five requests, one call to the gone model"
    );
    assert_eq!(fake.calls_to("ok-h1"), 5);

    let routes = http::get(worker.port(), "/v1/routes", Some(CLIENT_KEY));
    assert_eq!(routes.status, 200);
    let learn = routes.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "learn")
        .cloned()
        .unwrap();
    assert_eq!(learn["chain"][0]["model"], "gone-h1");
    assert_eq!(learn["chain"][0]["source"], "registry");
    assert_eq!(learn["chain"][0]["health"]["state"], "gone");
    assert!(learn["chain"][0]["health"]["since"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(learn["chain"][1]["health"]["state"], "healthy");
    assert_eq!(http::get(worker.port(), "/v1/routes", None).status, 401);

    let started = Instant::now();
    let r = ask(&worker, "hung");
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "deadline_exceeded");
    assert!(
        elapsed >= Duration::from_millis(3_900) && elapsed < Duration::from_millis(5_500),
        "answered after {elapsed:?}, the deadline is 4 s"
    );
    assert_eq!(
        outcomes(&r.json()),
        pairs(&[
            ("hang-h1", "timeout"),
            ("hang-h2", "timeout"),
            ("hang-h3", "timeout")
        ])
    );
}

#[test]
fn the_scheduled_probe_retires_unlisted_models_and_clears_listed_ones() {
    let fake = FakeGroq::start(GROQ_KEY);
    let registry = r#"{"probe":["ok-p1","ok-p2"],"other":["ok-p3"]}"#;
    let worker = start(
        &fake,
        registry,
        &[],
        Extras {
            args: &["--test-scheduled"],
            ..Extras::default()
        },
    );
    let scheduled = || {
        let r = http::get(worker.port(), "/__scheduled?cron=*/15+*+*+*+*", None);
        assert_eq!(r.status, 200, "{}", r.text());
    };

    // Groq lists ok-p2 and ok-p3 but no longer ok-p1.
    fake.set_models(vec!["ok-p2".into(), "ok-p3".into(), "unrelated".into()]);
    scheduled();
    let retired = worker
        .wait_for_log_json(Duration::from_secs(5), |l| l["event"] == "model_retired")
        .unwrap_or_else(|| panic!("no model_retired line:\n{}", worker.logs()));
    assert_eq!(retired["model"], "ok-p1");
    assert_eq!(retired["tasks"], json!(["probe"]));
    assert!(
        worker
            .logs()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("model_retired")),
        "logged at error level"
    );
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.path.starts_with("/openai/v1/models"))
            .count(),
        1
    );
    assert!(
        fake.calls().iter().all(|c| c.authorized),
        "the probe sends the provider key"
    );

    let r = ask(&worker, "probe");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        outcomes(&r.json()),
        pairs(&[("ok-p1", "skipped"), ("ok-p2", "ok")])
    );
    assert_eq!(
        fake.calls_to("ok-p1"),
        0,
        "retired before any user paid for it"
    );

    // A failed probe changes nothing.
    fake.set_models_status(401);
    scheduled();
    worker
        .wait_for_log_json(Duration::from_secs(5), |l| l["event"] == "probe_failed")
        .unwrap_or_else(|| panic!("no probe_failed line:\n{}", worker.logs()));
    assert_eq!(
        outcomes(&ask(&worker, "probe").json())[0],
        ("ok-p1".to_string(), "skipped".to_string())
    );

    // Listed again: cleared.
    fake.clear_models_status();
    fake.set_models(vec!["ok-p1".into(), "ok-p2".into(), "ok-p3".into()]);
    scheduled();
    let deadline = Instant::now() + Duration::from_secs(5);
    while worker
        .log_lines_json()
        .iter()
        .filter(|l| l["event"] == "probe")
        .count()
        < 2
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = ask(&worker, "probe");
    assert_eq!(outcomes(&r.json()), pairs(&[("ok-p1", "ok")]));
    assert_eq!(fake.calls_to("ok-p1"), 1);
}

#[test]
fn gone_verdicts_are_shared_between_workers_through_kv() {
    let fake = FakeGroq::start(GROQ_KEY);
    let state = std::env::temp_dir().join(format!("task-router-kv-{}", std::process::id()));
    let state_arg = state.to_string_lossy().to_string();
    let kv = "[[kv_namespaces]]\nbinding = \"MODEL_HEALTH\"\nid = \"e2e-model-health\"\n";
    let args = ["--persist-to", state_arg.as_str()];
    let registry = r#"{"shared":["gone-k1","ok-k1"]}"#;

    let first = start(
        &fake,
        registry,
        &[],
        Extras {
            toml: Some(kv),
            args: &args,
            ..Extras::default()
        },
    );
    assert_eq!(ask(&first, "shared").status, 200);
    assert_eq!(fake.calls_to("gone-k1"), 1);
    // The verdict is written after the response; give it a moment, then stop this Worker.
    std::thread::sleep(Duration::from_millis(1_500));
    drop(first);

    let second = start(
        &fake,
        registry,
        &[],
        Extras {
            toml: Some(kv),
            args: &args,
            ..Extras::default()
        },
    );
    let r = ask(&second, "shared");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        outcomes(&r.json()),
        pairs(&[("gone-k1", "skipped"), ("ok-k1", "ok")]),
        "a new Worker learns the verdict from KV before its first request"
    );
    assert_eq!(fake.calls_to("gone-k1"), 1);
    drop(second);
    let _ = std::fs::remove_dir_all(&state);
}

/// Issue 14: with a `USAGE` Analytics Engine dataset bound (which `wrangler dev` accepts and
/// drops the writes of), the Worker answers as before, plain and streamed, and logs no failure
/// to write; the data point's fields are checked natively (`tests/fallback.rs`).
#[test]
fn a_worker_with_a_usage_dataset_answers_normally() {
    let fake = FakeGroq::start(GROQ_KEY);
    let usage =
        "[[analytics_engine_datasets]]\nbinding = \"USAGE\"\ndataset = \"task_router_usage\"\n";
    let extras = Extras {
        toml: Some(usage),
        ..Extras::default()
    };
    let worker = start(&fake, r#"{"fast":["ok-u1"]}"#, &[], extras);
    let plain = ask(&worker, "fast");
    assert_eq!(plain.status, 200, "{}", plain.text());
    let streamed = json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let streamed = http::post_json(worker.port(), "/v1/tasks/fast", Some(CLIENT_KEY), &streamed);
    assert_eq!(streamed.status, 200);
    assert!(
        streamed.text().ends_with("data: [DONE]\n\n"),
        "{}",
        streamed.text()
    );
    let lines = worker.wait_for_log_json(Duration::from_secs(5), |l| {
        l["event"] == "request" && l["stream"] == true
    });
    assert!(lines.is_some(), "{}", worker.logs());
    for bad in ["usage_write_failed", "Uncaught", "panicked"] {
        assert!(!worker.logs().contains(bad), "{bad}:\n{}", worker.logs());
    }
}
