//! Native tests of budgets (issue 25), with the ledgers in memory on the scripted provider's fake
//! clock: `BUDGETS` read and refused like the registry; scopes; what a request holds and what it
//! settles (answers, streams, breaks, timeouts, callers who leave, fallbacks); refusals with the
//! window's reset; every chat route charged and mocks never; the ledgers down, refused or let
//! through; `GET /v1/usage`; and no ledger asked at all without `BUDGETS`. The ledger's own
//! arithmetic (windows, holds, the tightest limit) is tested beside it, in `src/http/ledger.rs`.
//! Run: `cargo test --test budgets`.

mod support;

use serde_json::{json, Value};
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::auth::Caller;
use task_router::http::budget::{worst_case, ScopeKind, DEFAULT_HELD_COMPLETION_TOKENS};
use task_router::http::ledger::{LimitKind, Limits};
use task_router::http::HttpRequest;
use task_router::routing::capabilities::Needs;
use task_router::routing::chain::ModelChain;
use task_router::routing::log::Level;

const REGISTRY: &str = r#"{"fast":["m1","m2"],"reasoning":["m3"],"fallback":["f1"]}"#;
/// USD per million tokens: `m2` is the dearest of `fast`'s chain; `f1` and `m3` have no price.
const PRICES: &str = r#"{"m1":{"input":1,"output":2},"m2":{"input":2,"output":4}}"#;
/// 2026-12-08T12:00:00Z.
const NOON: u64 = 1_796_731_200_000;
const DAY_MS: u64 = 86_400_000;
const BODY: &str = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
/// What `completion()` reports: 55 prompt and 12 completion tokens.
const ANSWER_TOKENS: f64 = 67.0;

fn bindings_with(budgets: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MODEL_REGISTRY", REGISTRY.to_string()),
        ("MODEL_PRICES", PRICES.to_string()),
        ("GROQ_API_KEY", "gsk_provider_secret".to_string()),
        (
            "ROUTER_API_KEYS",
            "web:client-secret-1,batch:client-secret-2".to_string(),
        ),
        ("ALLOW_MOCK", "true".to_string()),
        ("BUDGET", "{}".to_string()),
        ("BUDGETS", budgets.to_string()),
        ("LOG_LEVEL", "info".to_string()),
    ]
}

fn config(pairs: &[(&'static str, String)]) -> task_router::http::config::LoadedConfig {
    let borrowed: Vec<(&'static str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    load(&borrowed)
}

fn provider() -> ScriptedProvider {
    let provider = ScriptedProvider::new()
        .on("m1", completion("m1"), 5)
        .on("m2", completion("m2"), 5)
        .on("m3", completion("m3"), 5);
    provider.clock.set(NOON);
    provider
}

fn request<'a>(path: &'a str, key: &'a str, body: &'a str) -> HttpRequest<'a> {
    HttpRequest {
        authorization: Some(key),
        ..HttpRequest::new("POST", path, body.as_bytes())
    }
}

const WEB: &str = "Bearer client-secret-1";

/// One request through the router with budgets in `ledgers`.
fn send(
    budgets: &str,
    provider: &ScriptedProvider,
    ledgers: &MemoryLedgers,
    req: HttpRequest<'_>,
) -> Exchange {
    let config = config(&bindings_with(budgets));
    exchange_budgeted(&config, provider, ledgers, req, SinkBuffer::default())
}

fn spent(ledgers: &MemoryLedgers, scope: &str, limits: Limits) -> Vec<(LimitKind, f64, f64)> {
    let usage = ledgers.usage_of(scope, &limits);
    usage.iter().map(|u| (u.limit, u.spent, u.held)).collect()
}

fn request_line(ex: &Exchange) -> &Value {
    let mut lines = ex.log.iter().filter(|(_, l)| l["event"] == "request");
    &lines.next_back().expect("a request line").1
}

const TOKENS_PER_DAY: Limits = Limits {
    usd_per_day: None,
    usd_per_month: None,
    tokens_per_day: Some(1_000_000),
    tokens_per_month: None,
};

#[test]
fn budgets_are_read_like_the_registry_and_refused_with_what_is_wrong() {
    let good = r#"{"user":{"usd_per_day":0.5},"client":{"usd_per_month":100},
        "client:web":{"usd_per_day":20,"tokens_per_day":5000000},
        "task:reasoning":{"usd_per_day":30},"global":{"usd_per_day":50}}"#;
    let loaded = config(&bindings_with(good)).expect("valid budgets");
    assert_eq!(loaded.budgets.limits.len(), 5);
    assert_eq!(
        loaded.budgets.limits["client:web"].tokens_per_day,
        Some(5_000_000)
    );
    assert!(!loaded.budgets.fail_open);
    let bad = [
        (
            r#"{"users":{"usd_per_day":1}}"#,
            "`BUDGETS.users` is not a scope",
        ),
        (
            r#"{"client:mobile":{"usd_per_day":1}}"#,
            "no client of that name in `ROUTER_API_KEYS`",
        ),
        (
            r#"{"task:nope":{"usd_per_day":1}}"#,
            "no task of that name in `MODEL_REGISTRY`",
        ),
        (
            r#"{"user":{"usd_per_day":-1}}"#,
            "USD limits must be 0 or more",
        ),
        (r#"{"user":{}}"#, "`BUDGETS.user` sets no limit"),
        (
            r#"{"user":{"usd_per_week":1}}"#,
            "unknown field `usd_per_week`",
        ),
        (r#"{"user":{"tokens_per_day":1.5}}"#, "whole numbers"),
        (r#"["user"]"#, "BUDGETS"),
    ];
    for (budgets, says) in bad {
        let problems = config(&bindings_with(budgets)).expect_err(budgets);
        let problem = problems
            .iter()
            .find(|p| p.binding == "BUDGETS")
            .expect(budgets);
        assert!(
            problem.message.contains(says),
            "{budgets}: {}",
            problem.message
        );
    }
    // Budgets with nowhere to keep them: the Durable Object binding is named.
    let mut unbound = bindings_with(r#"{"global":{"usd_per_day":1}}"#);
    unbound.retain(|(k, _)| *k != "BUDGET");
    let problems = config(&unbound).expect_err("no ledger binding");
    assert!(problems[0]
        .message
        .contains("no Durable Object is bound as `BUDGET`"));
    // Without `BUDGETS` the binding is not needed.
    unbound.retain(|(k, _)| *k != "BUDGETS");
    assert!(config(&unbound).is_ok());
}

#[test]
fn each_caller_is_charged_in_its_own_scope_and_the_shared_ones() {
    let budgets = r#"{"user":{"usd_per_day":1},"client":{"usd_per_day":2},
        "client:web":{"usd_per_day":3},"task:fast":{"usd_per_day":4},"global":{"usd_per_day":5}}"#;
    let config = config(&bindings_with(budgets)).unwrap();
    let ids = |caller: Caller, ip, task| {
        let scopes = config.budgets.scopes(&caller, ip, task);
        scopes
            .into_iter()
            .map(|s| (s.id, s.kind, s.limits.usd_per_day))
            .collect::<Vec<_>>()
    };
    let user = Caller {
        name: Some("alice".into()),
        user: true,
        tasks: None,
    };
    assert_eq!(
        ids(user, None, "fast"),
        vec![
            ("user:alice".to_string(), ScopeKind::User, Some(1.0)),
            ("task:fast".to_string(), ScopeKind::Task, Some(4.0)),
            ("global".to_string(), ScopeKind::Global, Some(5.0)),
        ]
    );
    // A named client's own entry replaces `client`; other clients share `client`'s limits, each
    // in a scope of its own.
    let web = Caller {
        name: Some("web".into()),
        ..Caller::default()
    };
    let batch = Caller {
        name: Some("batch".into()),
        ..Caller::default()
    };
    assert_eq!(
        ids(web, None, "reasoning")[0],
        ("client:web".into(), ScopeKind::Client, Some(3.0))
    );
    assert_eq!(
        ids(batch, None, "reasoning")[0],
        ("client:batch".into(), ScopeKind::Client, Some(2.0))
    );
    // An anonymous caller is a user, by IP; a user named like a client is not that client.
    let anonymous = ids(Caller::default(), Some("203.0.113.7"), "reasoning");
    assert_eq!(
        anonymous[0],
        ("ip:203.0.113.7".into(), ScopeKind::User, Some(1.0))
    );
    let named_web = Caller {
        name: Some("web".into()),
        user: true,
        tasks: None,
    };
    assert_eq!(ids(named_web, None, "reasoning")[0].0, "user:web");
    // Scopes without a limit are not asked.
    let only_global = crate::config(&bindings_with(r#"{"global":{"tokens_per_day":10}}"#)).unwrap();
    let scopes = only_global.budgets.scopes(&Caller::default(), None, "fast");
    assert_eq!(scopes.len(), 1);
}

#[test]
fn a_request_holds_its_worst_case_at_the_dearest_model_of_its_chain() {
    let config = config(&bindings_with(r#"{"global":{"usd_per_day":1}}"#)).unwrap();
    let fast = ModelChain::for_task(&config.routing, "fast").unwrap();
    let needs = Needs {
        prompt_tokens: 1_000,
        completion_tokens: Some(500),
        ..Needs::default()
    };
    // m2 is the dearest: 1,000 × $2/M + 500 × $4/M; f1 has no price and adds none.
    let held = worst_case(&needs, &fast, &config.routing);
    assert_eq!(held.tokens, 1_500);
    assert!(
        (held.usd - (2_000.0 + 2_000.0) / 1e6).abs() < 1e-12,
        "{held:?}"
    );
    // Without a completion limit: the largest its models allow, else the default.
    let unlimited = Needs {
        completion_tokens: None,
        ..needs.clone()
    };
    let held = worst_case(&unlimited, &fast, &config.routing);
    assert_eq!(held.tokens, 1_000 + DEFAULT_HELD_COMPLETION_TOKENS);
    let mut pairs = bindings_with(r#"{"global":{"usd_per_day":1}}"#);
    pairs.push((
        "MODEL_CAPABILITIES",
        r#"{"m1":{"max_completion_tokens":32768}}"#.into(),
    ));
    let capped = crate::config(&pairs).unwrap();
    let held = worst_case(&unlimited, &fast, &capped.routing);
    assert_eq!(held.tokens, 1_000 + 32_768);
    // A chain with no price at all holds tokens only.
    let reasoning = ModelChain::for_task(&config.routing, "reasoning").unwrap();
    assert_eq!(worst_case(&needs, &reasoning, &config.routing).usd, 0.0);
}

#[test]
fn an_answer_settles_its_real_cost_and_releases_the_rest() {
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    let budgets = r#"{"client:web":{"usd_per_day":1,"tokens_per_day":1000000}}"#;
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    // m1 answered: 55 × $1/M + 12 × $2/M, and 67 tokens; nothing is held any more.
    let limits = Limits {
        usd_per_day: Some(1.0),
        tokens_per_day: Some(1_000_000),
        ..Limits::default()
    };
    let usd = (55.0 + 24.0) / 1e6;
    assert_eq!(
        spent(&ledgers, "client:web", limits),
        vec![
            (LimitKind::UsdPerDay, usd, 0.0),
            (LimitKind::TokensPerDay, ANSWER_TOKENS, 0.0)
        ]
    );
    let line = request_line(&ex);
    assert_eq!(line["budget_scopes"], json!(["client:web"]));
    assert_eq!(ex.usage[0].blobs[5], "client:web");
    // Reserve and settle: one ledger operation each.
    assert_eq!(ledgers.asked.get(), 2);
}

#[test]
fn over_budget_is_429_until_the_window_resets_and_groq_is_not_called() {
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    // Two answers' worth of tokens: the third request finds the day spent.
    let budgets = r#"{"client:web":{"tokens_per_day":134}}"#;
    for _ in 0..2 {
        let ex = send(
            budgets,
            &provider,
            &ledgers,
            request("/v1/tasks/fast", WEB, BODY),
        );
        assert_eq!(ex.response.status, 200);
    }
    let calls = provider.calls.borrow().len();
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    assert_eq!(ex.response.status, 429, "{}", ex.text);
    assert_eq!(provider.calls.borrow().len(), calls, "Groq was called");
    let error = &ex.json()["error"];
    assert_eq!(
        (&error["code"], &error["type"]),
        (&json!("budget_exceeded"), &json!("rate_limit_error"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("this client key's daily token budget (134 tokens) is spent; it resets at 2026-12-09T00:00:00Z"), "{message}");
    assert!(
        !message.contains("web"),
        "the scope's identity is never said: {message}"
    );
    // Retry-After: the seconds to the next UTC midnight (the clock has moved on 20 ms).
    let to_midnight = (NOON + DAY_MS / 2 - provider.now()).div_ceil(1000);
    assert_eq!(
        ex.response.header("retry-after"),
        Some(to_midnight.to_string().as_str())
    );
    assert_eq!(request_line(&ex)["outcome"], "budget_exceeded");
    // The next day starts afresh.
    provider.clock.set(NOON + DAY_MS);
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    assert_eq!(ex.response.status, 200);
}

#[test]
fn the_tightest_limit_decides_and_says_its_own_window() {
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    // The user's month is spent, and the task's day: the month resets later, so it decides.
    let budgets = r#"{"user":{"tokens_per_month":60},"task:fast":{"tokens_per_day":60}}"#;
    let mut pairs = bindings_with(budgets);
    pairs.push(("ALLOW_UNAUTHENTICATED", "true".into()));
    let config = config(&pairs);
    let anonymous = |body| HttpRequest {
        client_ip: Some("203.0.113.7"),
        ..HttpRequest::new("POST", "/v1/tasks/fast", body)
    };
    let ex = exchange_budgeted(
        &config,
        &provider,
        &ledgers,
        anonymous(BODY.as_bytes()),
        SinkBuffer::default(),
    );
    assert_eq!(ex.response.status, 200);
    let ex = exchange_budgeted(
        &config,
        &provider,
        &ledgers,
        anonymous(BODY.as_bytes()),
        SinkBuffer::default(),
    );
    assert_eq!(ex.response.status, 429);
    let message = ex.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with(
            "your monthly token budget (60 tokens) is spent; it resets at 2027-01-01T00:00:00Z"
        ),
        "{message}"
    );
    assert!(!message.contains("203.0.113.7"));
    // A refusal in one scope holds nothing in the others.
    let task = Limits {
        tokens_per_day: Some(60),
        ..Limits::default()
    };
    assert_eq!(
        spent(&ledgers, "task:fast", task),
        vec![(LimitKind::TokensPerDay, ANSWER_TOKENS, 0.0)]
    );
    // Only the task's day left: tomorrow says the task's scope.
    let task_only = r#"{"task:fast":{"tokens_per_day":60}}"#;
    let ex = send(
        task_only,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    let message = ex.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("the task `fast`'s daily token budget"),
        "{message}"
    );
}

#[test]
fn every_chat_route_is_charged_streams_included_and_mocks_never() {
    let stream = Script::Stream(vec![bytes(ROLE, 5), bytes(&format!("{FINAL}{DONE}"), 5)]);
    let provider = provider().on("m1", stream, 5);
    let ledgers = MemoryLedgers::new(&provider.clock);
    let budgets = r#"{"client:web":{"tokens_per_day":1000000}}"#;
    let sdk = r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let task_stream = r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let routes = [
        ("/v1/chat/completions", sdk),
        ("/openai/v1/chat/completions", sdk),
        ("/v1/tasks/fast", task_stream),
    ];
    for (i, (path, body)) in routes.into_iter().enumerate() {
        let ex = send(budgets, &provider, &ledgers, request(path, WEB, body));
        assert!(ex.streamed, "{path}: {}", ex.text);
        // Each stream is charged the usage of Groq's final chunk: 12 tokens.
        let want = 12.0 * (i + 1) as f64;
        assert_eq!(
            spent(&ledgers, "client:web", TOKENS_PER_DAY)[0].1,
            want,
            "{path}"
        );
    }
    // A mock request asks no ledger at all.
    let asked = ledgers.asked.get();
    let mock = r#"{"messages":[{"role":"user","content":"hi"}],"mock_response":"ok"}"#;
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, mock),
    );
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    assert_eq!(ledgers.asked.get(), asked);
    assert!(request_line(&ex).get("budget_scopes").is_none());
}

#[test]
fn what_groq_may_have_billed_unreported_settles_at_least_the_reservation() {
    let budgets = r#"{"client:web":{"tokens_per_day":1000000}}"#;
    // The hold: ⌈32 bytes of messages / 4⌉ = 8 prompt tokens and the 100 asked for.
    let held = 108.0;
    let broken = Script::Stream(vec![
        bytes(ROLE, 5),
        bytes(HELLO, 5),
        Step::Fail(TransportError::Connection("reset".into())),
    ]);
    let stream_body =
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100,"stream":true}"#;
    let cases: Vec<(&str, ScriptedProvider, &str, f64)> = vec![
        // A stream that broke before Groq's usage: the reservation.
        (
            "a broken stream",
            provider().on("m1", broken, 5),
            stream_body,
            held,
        ),
        // m1 timed out (Groq may have run it), m2 answered: at least the reservation.
        (
            "a timeout, then an answer",
            provider().on("m1", Script::Fail(TransportError::Timeout), 5),
            BODY,
            held,
        ),
        // Every model timed out: the reservation, never zero.
        (
            "every model timed out",
            provider()
                .on("m1", Script::Fail(TransportError::Timeout), 5)
                .on("m2", Script::Fail(TransportError::Timeout), 5)
                .on("f1", Script::Fail(TransportError::Timeout), 5),
            BODY,
            held,
        ),
        // A 429 is not billed: the answer that followed is all.
        (
            "rate-limited, then an answer",
            provider().on("m1", rate_limited("3"), 5),
            BODY,
            ANSWER_TOKENS,
        ),
        // Groq's errors are not billed: nothing.
        (
            "every model failed with an error",
            provider()
                .on("m1", reply(500, "{}"), 5)
                .on("m2", reply(503, "{}"), 5)
                .on("f1", reply(500, "{}"), 5),
            BODY,
            0.0,
        ),
    ];
    for (name, provider, body, want) in cases {
        let ledgers = MemoryLedgers::new(&provider.clock);
        let ex = send(
            budgets,
            &provider,
            &ledgers,
            request("/v1/tasks/fast", WEB, body),
        );
        let charged = spent(&ledgers, "client:web", TOKENS_PER_DAY)[0];
        assert_eq!((charged.1, charged.2), (want, 0.0), "{name}: {}", ex.text);
    }
    // A caller who leaves while the model answers, or mid-stream: Groq may have billed it.
    let leaving = provider().on("m1", Script::Fail(TransportError::CallerLeft), 5);
    leaving.caller_leaves_after.set(Some(1));
    let ledgers = MemoryLedgers::new(&leaving.clock);
    let ex = send(
        budgets,
        &leaving,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    assert_eq!(
        request_line(&ex)["outcome"],
        "client_disconnected",
        "{}",
        ex.text
    );
    assert_eq!(spent(&ledgers, "client:web", TOKENS_PER_DAY)[0].1, held);
    let stream = Script::Stream(vec![bytes(ROLE, 5), bytes(HELLO, 5), bytes(HELLO, 5)]);
    let streaming = provider().on("m1", stream, 5);
    let ledgers = MemoryLedgers::new(&streaming.clock);
    let config = config(&bindings_with(budgets));
    let req = request("/v1/tasks/fast", WEB, stream_body);
    let ex = exchange_budgeted(
        &config,
        &streaming,
        &ledgers,
        req,
        SinkBuffer::leaving_after(1),
    );
    assert_eq!(
        request_line(&ex)["outcome"],
        "client_disconnected",
        "{}",
        ex.text
    );
    assert_eq!(spent(&ledgers, "client:web", TOKENS_PER_DAY)[0].1, held);
}

#[test]
fn unreachable_ledgers_refuse_by_default_and_let_through_when_told_and_logged() {
    let budgets = r#"{"global":{"usd_per_day":10}}"#;
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    ledgers.down.set(true);
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    assert_eq!(ex.response.status, 503);
    assert_eq!(ex.json()["error"]["code"], "budget_unavailable");
    assert_eq!(ex.response.header("retry-after"), Some("1"));
    assert!(provider.calls.borrow().is_empty());
    let (level, line) = ex
        .log
        .iter()
        .find(|(_, l)| l["event"] == "budget_unavailable")
        .unwrap();
    assert_eq!(
        (*level, &line["let_through"]),
        (Level::Error, &json!(false))
    );

    let mut open = bindings_with(budgets);
    open.push(("BUDGET_FAIL_OPEN", "true".into()));
    let ex = exchange_budgeted(
        &config(&open),
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
        SinkBuffer::default(),
    );
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    let (level, line) = ex
        .log
        .iter()
        .find(|(_, l)| l["event"] == "budget_unavailable")
        .unwrap();
    assert_eq!(
        (*level, &line["let_through"], &line["request_id"]),
        (Level::Error, &json!(true), &json!(REQUEST_ID))
    );
    assert!(
        request_line(&ex).get("budget_scopes").is_none(),
        "charged nowhere"
    );
}

#[test]
fn without_budgets_no_ledger_is_asked() {
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    let mut pairs = bindings_with("");
    pairs.retain(|(k, _)| *k != "BUDGETS");
    let ex = exchange_budgeted(
        &config(&pairs),
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
        SinkBuffer::default(),
    );
    assert_eq!(ex.response.status, 200);
    let usage = HttpRequest {
        authorization: Some(WEB),
        ..HttpRequest::new("GET", "/v1/usage", b"")
    };
    let ex = exchange_budgeted(
        &config(&pairs),
        &provider,
        &ledgers,
        usage,
        SinkBuffer::default(),
    );
    assert_eq!(
        ex.json(),
        json!({"object": "budget", "scope": null, "limits": []})
    );
    assert_eq!(ledgers.asked.get(), 0);
}

#[test]
fn a_caller_reads_its_own_budget_from_v1_usage() {
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    let budgets =
        r#"{"client":{"usd_per_day":0.5,"tokens_per_month":1000},"global":{"usd_per_day":50}}"#;
    send(
        budgets,
        &provider,
        &ledgers,
        request("/v1/tasks/fast", WEB, BODY),
    );
    let usage = |key| HttpRequest {
        authorization: Some(key),
        origin: Some("https://app.example"),
        ..HttpRequest::new("GET", "/v1/usage", b"")
    };
    let ex = send(budgets, &provider, &ledgers, usage(WEB));
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    let usd = (55.0 + 24.0) / 1e6;
    assert_eq!(
        ex.json(),
        json!({"object": "budget", "scope": "client", "limits": [
            {"limit": "usd_per_day", "value": 0.5, "spent": usd, "held": 0.0, "remaining": 0.5 - usd,
             "resets_ms": NOON + DAY_MS / 2, "resets_at": "2026-12-09T00:00:00Z"},
            {"limit": "tokens_per_month", "value": 1000.0, "spent": ANSWER_TOKENS, "held": 0.0,
             "remaining": 1000.0 - ANSWER_TOKENS, "resets_ms": 1_798_761_600_000u64,
             "resets_at": "2027-01-01T00:00:00Z"}
        ]})
    );
    // Another client sees its own scope, untouched.
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        usage("Bearer client-secret-2"),
    );
    assert_eq!(ex.json()["limits"][0]["spent"], 0.0);
    // Refused like every route without a key; 503 when the ledger cannot answer.
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        HttpRequest::new("GET", "/v1/usage", b""),
    );
    assert_eq!(ex.response.status, 401);
    ledgers.down.set(true);
    let ex = send(budgets, &provider, &ledgers, usage(WEB));
    assert_eq!(
        (ex.response.status, &ex.json()["error"]["code"]),
        (503, &json!("budget_unavailable"))
    );
}

#[test]
fn healthz_warns_of_a_usd_budget_over_unpriced_models() {
    let provider = provider();
    let ledgers = MemoryLedgers::new(&provider.clock);
    let budgets = r#"{"task:reasoning":{"usd_per_day":5},"task:fast":{"tokens_per_day":5}}"#;
    let ex = send(
        budgets,
        &provider,
        &ledgers,
        HttpRequest::new("GET", "/healthz", b""),
    );
    let warnings = ex.json()["warnings"].as_array().unwrap().clone();
    let budget: Vec<&Value> = warnings
        .iter()
        .filter(|w| w["code"] == "budget_unpriced")
        .collect();
    assert_eq!(budget.len(), 1, "{warnings:?}");
    let message = budget[0]["message"].as_str().unwrap();
    assert!(
        message.contains("`task:reasoning`")
            && message.contains("`m3`")
            && message.contains("`f1`"),
        "{message}"
    );
}

const ROLE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"x_groq\":{\"id\":\"req_1\"}}\n\n";
const HELLO: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const FINAL: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
