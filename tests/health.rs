//! Native tests of health memory and the request deadline in the routing loop, with a fake
//! clock: a model that failed is not paid for again, skipped models are last resorts (gone ones
//! never), and no request outlives `REQUEST_TIMEOUT_MS`. Run: `cargo test --test health`.

mod support;

use std::cell::RefCell;
use support::attempts::{row, rows};

use serde_json::Value;
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::limit::Unlimited;
use task_router::http::{HttpRequest, HttpResponse};
use task_router::routing::health::HealthBook;
use task_router::routing::log::Level;

const REGISTRY: &str = r#"{"fast":["m1","m2"],"solo":["s1"],"fallback":["f1"]}"#;

struct Router {
    provider: ScriptedProvider,
    health: RefCell<HealthBook>,
    extra: Vec<(&'static str, &'static str)>,
    /// The log lines of the last request.
    last_log: RefCell<Vec<(Level, Value)>>,
}

/// A router over `models`, each answering its script at once.
fn router<const N: usize>(models: [(&str, Script); N]) -> Router {
    let provider = ScriptedProvider::new();
    let provider = models
        .into_iter()
        .fold(provider, |p, (m, script)| p.on(m, script, 0));
    Router::new(provider)
}

impl Router {
    fn new(provider: ScriptedProvider) -> Self {
        Router {
            provider,
            health: RefCell::new(HealthBook::default()),
            extra: Vec::new(),
            last_log: RefCell::default(),
        }
    }

    fn with(mut self, name: &'static str, value: &'static str) -> Self {
        self.extra.push((name, value));
        self
    }

    fn advance(&self, ms: u64) {
        self.provider.clock.set(self.provider.clock.get() + ms);
    }

    /// One request; returns the response, its JSON body and the models called by *this* request.
    fn ask(&self, method: &str, path: &str) -> (HttpResponse, Value, Vec<String>) {
        let mut pairs = vec![("MODEL_REGISTRY", REGISTRY), ("GROQ_API_KEY", "gsk_x")];
        pairs.extend([("ROUTER_API_KEYS", "k"), EVERY_LINE]);
        pairs.extend(self.extra.iter().copied());
        let before = self.provider.calls.borrow().len();
        let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        let request = HttpRequest {
            authorization: Some("Bearer k"),
            ..HttpRequest::new(method, path, body.as_bytes())
        };
        let (config, provider) = (load(&pairs), &self.provider);
        let ex = exchange(&config, provider, &Unlimited, &self.health, request);
        let calls = self.provider.models_called()[before..].to_vec();
        let json = ex.json();
        *self.last_log.borrow_mut() = ex.log;
        (ex.response, json, calls)
    }

    fn fast(&self) -> (HttpResponse, Value, Vec<String>) {
        self.ask("POST", "/v1/tasks/fast")
    }
}

#[test]
fn a_gone_model_costs_one_call_not_one_per_request() {
    let provider = ScriptedProvider::new().on("m1", gone_404("m1"), 20);
    let router = Router::new(provider.on("m2", completion("m2"), 20));
    let (r, _, calls) = router.fast();
    assert_eq!((r.status, calls), (200, vec!["m1".into(), "m2".into()]));
    for _ in 0..5 {
        router.advance(60_000);
        let (r, body, calls) = router.fast();
        assert_eq!(r.status, 200);
        assert_eq!(calls, vec!["m2"], "the gone model is not called again");
        let expected = vec![row("m1", "skipped", Some("gone")), row("m2", "ok", None)];
        assert_eq!(rows(&body), expected);
        assert_eq!(r.header("x-attempts"), Some("m1=skipped(gone), m2=ok(200)"));
        // Skipping costs no call and no log line: the request line alone tells it.
        let log = router.last_log.borrow();
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].1["event"], "request");
        assert_eq!(log[0].1["attempts"], 2);
    }
    // After MODEL_GONE_TTL_S (default one hour) it is tried again.
    router.advance(3_600_000);
    let (_, _, calls) = router.fast();
    assert_eq!(calls, vec!["m1", "m2"]);
}

#[test]
fn gone_ttl_is_configurable() {
    let router = router([("m1", gone_404("m1")), ("m2", completion("m2"))]);
    let router = router.with("MODEL_GONE_TTL_S", "10");
    router.fast();
    router.advance(9_999);
    assert_eq!(router.fast().2, vec!["m2"]);
    router.advance(1);
    assert_eq!(router.fast().2, vec!["m1", "m2"]);
}

#[test]
fn a_gone_model_is_never_a_last_resort() {
    let router = router([
        ("m1", gone_404("m1")),
        ("m2", reply(500, "{}")),
        ("f1", reply(503, "{}")),
    ]);
    router.fast();
    let (r, body, calls) = router.fast();
    assert_eq!(r.status, 502);
    assert_eq!(calls, vec!["m2", "f1"]);
    assert_eq!(rows(&body)[0], row("m1", "skipped", Some("gone")));
}

#[test]
fn a_rate_limited_model_cools_for_retry_after() {
    let router = router([("m1", rate_limited("8")), ("m2", completion("m2"))]);
    assert_eq!(router.fast().2, vec!["m1", "m2"]);
    router.advance(7_000);
    let (_, body, calls) = router.fast();
    // Cooling: skipped while another model can answer.
    assert_eq!(calls, vec!["m2"]);
    assert_eq!(rows(&body)[0], row("m1", "skipped", Some("rate_limited")));
    router.advance(1_000);
    // Cooled down: tried again.
    assert_eq!(router.fast().2, vec!["m1", "m2"]);
}

#[test]
fn a_request_too_large_for_one_model_cools_nothing_for_the_next_request() {
    // Groq's 413 is about the request (more tokens than the model's per-minute limit), not the
    // model: the next model is tried, and the next request calls the first model again.
    let router = router([("m1", too_large("m1")), ("m2", completion("m2"))]);
    for _ in 0..3 {
        let (r, body, calls) = router.fast();
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(calls, vec!["m1", "m2"]);
        assert_eq!(rows(&body)[0], row("m1", "request_too_large", None));
    }
    let (_, routes, _) = router.ask("GET", "/v1/routes");
    assert_eq!(routes["data"][0]["chain"][0]["health"]["state"], "healthy");
}

#[test]
fn too_large_for_every_model_is_that_callers_413_and_blocks_no_one() {
    let router = router([("s1", too_large("s1")), ("f1", too_large("f1"))]);
    for _ in 0..2 {
        let (r, body, calls) = router.ask("POST", "/v1/tasks/solo");
        assert_eq!(r.status, 413, "{body}");
        assert_eq!(calls, vec!["s1", "f1"], "every model is asked, every time");
        // Retrying it unchanged cannot help.
        assert_eq!(r.header("retry-after"), None);
        assert_eq!(body["error"]["code"], "request_too_large");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("too large for every model"), "{message}");
        assert!(message.contains("Limit 6000, Requested 14368"), "{message}");
        assert!(!message.contains("org_01abc"), "{message}");
        assert_eq!(
            rows(&body),
            vec![
                row("s1", "request_too_large", None),
                row("f1", "request_too_large", None)
            ]
        );
    }
}

#[test]
fn too_large_for_some_and_rate_limited_for_the_rest_is_a_429_for_the_rest() {
    // A retry may find the rate-limited model free, and it may take the request.
    let router = router([
        ("m1", too_large("m1")),
        ("m2", rate_limited("6")),
        ("f1", gone_404("f1")),
    ]);
    let (r, body, _) = router.fast();
    assert_eq!(r.status, 429, "{body}");
    assert_eq!(r.header("retry-after"), Some("6"));
}

#[test]
fn open_circuits_are_tried_last_cooling_models_not_before_retry_after() {
    let router = router([
        ("m1", reply(503, "{}")),
        ("m2", rate_limited("30")),
        ("f1", gone_404("f1")),
    ]);
    for _ in 0..3 {
        router.fast();
    }
    // m1's circuit is open, m2 cools for 30 s, f1 is gone: m1 is skipped, then tried as the
    // last resort; m2 is not called again before Groq said it may be, f1 not at all.
    let (r, body, calls) = router.fast();
    assert_eq!(calls, vec!["m1"]);
    assert_eq!(r.status, 502);
    let want = [
        row("m1", "skipped", Some("circuit_open")),
        row("m2", "skipped", Some("rate_limited")),
        row("f1", "skipped", Some("gone")),
        row("m1", "upstream_error", None),
    ];
    assert_eq!(rows(&body), want);
    // Four attempts, three models.
    let expected = "all 3 models for this task failed; see `attempts`";
    assert_eq!(body["error"]["message"], expected);
}

/// Groq's `retry-after` is honoured: once every model of the chain is rate-limited, a request
/// inside the window makes no call and answers 429 with the moment the first model frees up.
#[test]
fn an_all_rate_limited_chain_answers_429_at_once_until_retry_after() {
    let router = router([("s1", rate_limited("8")), ("f1", rate_limited("20"))]);
    let (r, _, calls) = router.ask("POST", "/v1/tasks/solo");
    assert_eq!((r.status, calls.len()), (429, 2));
    assert_eq!(r.header("retry-after"), Some("8"));
    router.advance(3_000);
    let (r, body, calls) = router.ask("POST", "/v1/tasks/solo");
    assert_eq!(r.status, 429);
    assert!(calls.is_empty(), "no call inside the window: {calls:?}");
    // The first model frees up in 5 s.
    assert_eq!(r.header("retry-after"), Some("5"));
    let want = [
        row("s1", "skipped", Some("rate_limited")),
        row("f1", "skipped", Some("rate_limited")),
    ];
    assert_eq!(rows(&body), want);
    let expected = Some("s1=skipped(rate_limited), f1=skipped(rate_limited)");
    assert_eq!(r.header("x-attempts"), expected);
    router.advance(5_000);
    // `s1` cooled down.
    assert_eq!(router.ask("POST", "/v1/tasks/solo").2, vec!["s1"]);
}

#[test]
fn the_circuit_opens_after_three_failures_and_half_opens_after_the_cool_down() {
    let router = router([("m1", reply(503, "{}")), ("m2", completion("m2"))]);
    for _ in 0..3 {
        assert_eq!(router.fast().2, vec!["m1", "m2"]);
    }
    let (_, body, calls) = router.fast();
    assert_eq!(calls, vec!["m2"]);
    assert_eq!(rows(&body)[0], row("m1", "skipped", Some("circuit_open")));
    router.advance(30_000);
    assert_eq!(router.fast().2, vec!["m1", "m2"], "half-open: one probe");
    // The failed probe reopened the circuit.
    assert_eq!(router.fast().2, vec!["m2"]);
}

#[test]
fn a_chain_of_hung_models_answers_504_at_the_deadline() {
    let hang = || Script::Fail(TransportError::Timeout);
    let router = Router::new(
        ScriptedProvider::new()
            .on("m1", hang(), 60_000)
            .on("m2", hang(), 60_000)
            .on("f1", hang(), 60_000),
    )
    .with("ATTEMPT_TIMEOUT_MS", "2000")
    .with("REQUEST_TIMEOUT_MS", "5000");
    let start = router.provider.now();
    let (r, body, calls) = router.fast();
    assert_eq!(r.status, 504);
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    // Answered exactly at the deadline.
    assert_eq!(router.provider.now() - start, 5_000);
    assert_eq!(calls, vec!["m1", "m2", "f1"]);
    let timeouts: Vec<u64> = router
        .provider
        .calls
        .borrow()
        .iter()
        .map(|c| c.timeout_ms)
        .collect();
    // The last attempt gets only the time left.
    assert_eq!(timeouts, vec![2_000, 2_000, 1_000]);
    assert_eq!(rows(&body).len(), 3);
}

#[test]
fn the_deadline_stops_before_calling_another_model() {
    let router = Router::new(
        ScriptedProvider::new()
            .on("m1", reply(500, "{}"), 3_000)
            .on("m2", reply(500, "{}"), 3_000)
            .on("f1", completion("f1"), 0),
    )
    .with("REQUEST_TIMEOUT_MS", "6000");
    let (r, _, calls) = router.fast();
    assert_eq!(r.status, 504);
    assert_eq!(calls, vec!["m1", "m2"], "no time was left for f1");
}

#[test]
fn routes_show_chains_sources_and_health() {
    use task_router::groq::outcome::Outcome;
    let router = Router::new(ScriptedProvider::new()).with("DEFAULT_FAST_MODEL", "d1");
    router
        .health
        .borrow_mut()
        .record("m1", Outcome::ModelGone, None, 0, 3_600_000);
    router
        .health
        .borrow_mut()
        .record("m2", Outcome::RateLimited, Some(8_000), 0, 3_600_000);
    let (r, body, calls) = router.ask("GET", "/v1/routes");
    assert_eq!(r.status, 200, "{body}");
    assert!(calls.is_empty());
    let fast = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "fast")
        .unwrap();
    let entry = |e: &Value| format!("{} {} {}", e["model"], e["source"], e["health"]["state"]);
    let chain: Vec<String> = fast["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(entry)
        .collect();
    let wanted = r#""d1" "task_default" "healthy", "m1" "registry" "gone", "m2" "registry" "cooling", "f1" "fallback" "healthy""#;
    assert_eq!(chain.join(", "), wanted);
    assert_eq!(fast["chain"][2]["health"]["reason"], "rate_limited");
    assert_eq!(fast["chain"][2]["health"]["until"], "1970-01-01T00:00:08Z");
    assert_eq!(fast["chain"][1]["health"]["since"], "1970-01-01T00:00:00Z");

    let config = load(&[
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "g"),
        ("ROUTER_API_KEYS", "k"),
    ]);
    let req = HttpRequest::new("GET", "/v1/routes", b"");
    let r = exchange(&config, &router.provider, &Unlimited, &router.health, req).response;
    assert_eq!(r.status, 401, "routes need a client key");
}
