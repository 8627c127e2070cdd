//! End-to-end tests of mock answers (issue 15) and of `wrangler.toml`'s own tables, on the real
//! Worker under `wrangler dev` started as `npm start` starts it: the registry and prices of
//! `wrangler.toml`, no `GROQ_API_KEY`, `ALLOW_MOCK` and `ALLOW_UNAUTHENTICATED` on. `GROQ_BASE_URL`
//! points at a fake Groq that only counts: a mock request that reached it fails the test.
//!
//! - The README's "Try it" snippets run as printed (curl and the OpenAI SDK, only the port
//!   changed) and print what their `# →` lines say (`…` stands for any text).
//! - `tests/sdk/mock_clients.py` drives the mock through the official OpenAI and Groq SDKs.
//! - `[vars.MODEL_REGISTRY]` and `[vars.MODEL_PRICES]` reach the Worker as tables and parse.
//!
//! Run: `cargo test --test e2e_mock -- --nocapture`. Needs what `tests/e2e.rs` needs, and `curl`.

mod e2e_support;

use e2e_support::fixtures::Stack;
use e2e_support::http;
use e2e_support::process::{self, python, run_with_timeout};
use e2e_support::worker::{manifest_dir, Extras};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Where the README's snippets call the router.
const README_BASE: &str = "http://127.0.0.1:8787";

/// The Worker as `npm start` runs it (`package.json`'s `--var`s), with an empty `GROQ_API_KEY` so
/// that a developer's `.dev.vars` cannot give it one, and the fake Groq never given its key.
fn npm_start() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let vars = [("ALLOW_MOCK", "true"), ("ALLOW_UNAUTHENTICATED", "true")];
        // `Stack` gives the Worker client keys: `npm start` has none.
        let vars = [
            vars[0],
            vars[1],
            ("GROQ_API_KEY", ""),
            ("ROUTER_API_KEYS", ""),
        ];
        Stack::start(&vars, Extras::default())
    })
}

/// A README snippet that says what it prints.
struct Snippet {
    language: String,
    /// One command (curl, with its continuation lines) or the whole Python block.
    code: String,
    /// The `# →` line's text.
    expect: String,
}

/// The fenced blocks of README's "Try it" section that carry `# →` lines: in a `sh` block each
/// command is followed by its own; a `python` block runs whole, its `# →` lines joined.
fn readme_snippets() -> Vec<Snippet> {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).expect("read README.md");
    let section = readme.split("\n## ").find(|s| s.starts_with("Try it"));
    let section = section.expect("README has a \"## Try it\" section");
    let mut snippets = Vec::new();
    let mut blocks = section.split("```").skip(1).step_by(2);
    for block in blocks.by_ref() {
        let (language, body) = block.split_once('\n').unwrap_or((block, ""));
        if !body.contains("# →") {
            continue;
        }
        let arrow = |line: &str| {
            line.trim()
                .strip_prefix("# →")
                .map(|e| e.trim().to_string())
        };
        if language == "python" {
            let expect: Vec<String> = body.lines().filter_map(arrow).collect();
            let (code, expect) = (body.into(), expect.join("\n"));
            snippets.push(Snippet {
                language: language.into(),
                code,
                expect,
            });
            continue;
        }
        assert_eq!(language, "sh", "README \"Try it\" block in {language:?}");
        let mut code = String::new();
        for line in body.lines() {
            if let Some(expect) = arrow(line) {
                assert!(
                    !code.is_empty(),
                    "`# →` without a command before it: {line}"
                );
                let code = std::mem::take(&mut code);
                snippets.push(Snippet {
                    language: language.into(),
                    code,
                    expect,
                });
            } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                code.push_str(line);
                code.push('\n');
            }
        }
        assert!(
            code.is_empty(),
            "a README command without a `# →` line: {code}"
        );
    }
    snippets
}

/// `text` holds each `…`-separated part of `expect`, in order.
fn matches(text: &str, expect: &str) -> bool {
    let mut rest = text;
    for part in expect.split('…').map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn readme_try_it_snippets_print_what_they_say_without_a_key() {
    let Stack { fake, worker } = npm_start();
    let snippets = readme_snippets();
    let count = |language: &str| snippets.iter().filter(|s| s.language == language).count();
    let found = snippets.len();
    assert!(
        count("sh") >= 3 && count("python") >= 1,
        "README snippets found: {found}"
    );
    process::require_python_sdks();
    for snippet in &snippets {
        let code = snippet.code.replace(README_BASE, &worker.base_url());
        let mut command = match snippet.language.as_str() {
            "sh" => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &code]).env("NO_PROXY", "127.0.0.1");
                sh
            }
            _ => {
                let mut py = python();
                py.args(["-c", &code]);
                py
            }
        };
        let ran = run_with_timeout(&mut command, Duration::from_secs(60));
        eprintln!("$ {}{}", code.trim_end(), ran.output());
        let (output, expect) = (ran.output(), &snippet.expect);
        assert!(ran.succeeded(), "README snippet failed:\n{code}\n{output}");
        let printed = matches(&ran.stdout, expect);
        let logs = worker.logs();
        assert!(
            printed,
            "not `# → {expect}`:\n{code}\n{output}\n--- worker logs\n{logs}"
        );
    }
    // No mock request reaches Groq.
    assert!(fake.calls().is_empty(), "{:?}", fake.models_called());

    // No key, mocks on: a real request is refused saying why, and still never reaches Groq.
    let body = json!({"messages": [{"role": "user", "content": "Say hi"}]});
    let real = npm_start().post("/v1/tasks/fast", None, "e2e-mock-real", &body);
    let code = &real.json()["error"]["code"];
    assert_eq!((real.status, code), (500, &json!("provider_key_missing")));
    assert!(fake.calls().is_empty());
}

#[test]
fn official_sdks_drive_the_mock() {
    process::require_python_sdks();
    let Stack { fake, worker } = npm_start();
    let mut command = python();
    command
        .arg("tests/sdk/mock_clients.py")
        .arg(worker.base_url())
        .arg("any-key-is-fine-here");
    let script = run_with_timeout(&mut command, Duration::from_secs(180));
    let (output, logs) = (script.output(), worker.logs());
    eprintln!("tests/sdk/mock_clients.py:\n{output}");
    assert!(script.succeeded(), "{output}\n--- worker logs\n{logs}");
    // 5 checks per SDK.
    assert_eq!(script.stdout.matches("ok   ").count(), 10);
    // No mock request reaches Groq.
    assert!(fake.calls().is_empty(), "{:?}", fake.models_called());

    // Every mock request's line says so, with its tokens and cost, and changed no model's health.
    let lines: Vec<Value> = worker.log_lines_json();
    // (The README test's one real request, refused, is no mock.)
    let real = |l: &&Value| l["request_id"] == "e2e-mock-real";
    let requests = lines.iter().filter(|l| l["event"] == "request" && !real(l));
    let requests: Vec<&Value> = requests.collect();
    assert!(requests.len() >= 10, "{} request lines", requests.len());
    assert!(requests.iter().all(|l| l["mock"] == true), "{requests:?}");
    assert!(
        requests.iter().any(|l| l["cost_usd"].is_f64()),
        "{requests:?}"
    );
    let routes = http::get(worker.port(), "/v1/routes", None).json();
    let tasks = routes["data"].as_array().into_iter().flatten();
    let chains = tasks.flat_map(|task| task["chain"].as_array().into_iter().flatten());
    let states: Vec<&Value> = chains.map(|entry| &entry["health"]["state"]).collect();
    // No mock failure changes health.
    assert!(
        !states.is_empty() && states.iter().all(|s| *s == "healthy"),
        "{routes}"
    );
}

/// No `MODEL_REGISTRY`, `MODEL_PRICES` or `MODEL_CAPABILITIES` override: the `wrangler.toml`
/// tables reach the Worker as objects, not strings, and parse.
#[test]
fn the_registry_and_prices_of_wrangler_toml_load() {
    let stack = npm_start();
    let health = http::get(stack.port(), "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.text());
    // Every model is priced and its capabilities known: the warnings are that only mocks can be
    // answered, with no key, and that no task's models take images (`MODEL_CAPABILITIES`).
    let health = health.json();
    let no_images = "no model of `fast`, `reasoning` or `summarization` takes image input: such requests are refused with 400 `no_capable_model`";
    let warnings = health["warnings"].as_array().expect("warnings");
    let said: Vec<(&Value, &Value)> = warnings
        .iter()
        .map(|w| (&w["code"], &w["message"]))
        .collect();
    assert_eq!(said.len(), 2, "{health}");
    assert_eq!(said[0].0, "mock_only");
    assert_eq!(said[1], (&json!("capability_missing"), &json!(no_images)));
    let response = stack.post("/v1/tasks/nope", None, "e2e-toml", &json!({}));
    assert_eq!(response.status, 404, "{}", response.text());
    let message = &response.json()["error"]["message"];
    let tasks = "known tasks: `fast`, `reasoning`, `summarization`";
    assert_eq!(message, &format!("unknown task `nope`; {tasks}"));
}
