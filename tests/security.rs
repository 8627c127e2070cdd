//! Native tests of the edge-security rules: CORS, per-client rate limits, body size and media
//! type, parameter checks, token caps, and leaks. Run: `cargo test --test security`.

mod support;

use std::cell::{Cell, RefCell};

use serde_json::Value;
use support::fixtures::{request, HI};
use support::scripted::*;
use task_router::http::limit::{RateLimiter, Unlimited};
use task_router::http::{body_read, BodyRead, HttpRequest, HttpResponse};

const REGISTRY: &str = r#"{"fast":["m1"],"code-review":["m2"]}"#;
const BEARER: &str = "Bearer ck_web_secret";

/// Allows `budget` requests, then refuses; records the keys it was asked about.
struct CountingLimiter {
    budget: Cell<u32>,
    keys: RefCell<Vec<String>>,
}

impl CountingLimiter {
    fn new(budget: u32) -> Self {
        CountingLimiter {
            budget: Cell::new(budget),
            keys: RefCell::default(),
        }
    }
}

impl RateLimiter for CountingLimiter {
    async fn allow(&self, key: &str) -> bool {
        self.keys.borrow_mut().push(key.to_string());
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }
}

/// `req` with `extra` bindings and `limiter`; no key may reach the log or the answer.
fn send<L: RateLimiter>(
    extra: &[(&'static str, &str)],
    limiter: &L,
    req: HttpRequest<'_>,
) -> (HttpResponse, Vec<String>) {
    let mut pairs = vec![
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "gsk_provider_secret"),
        ("ROUTER_API_KEYS", "web:ck_web_secret"),
        // Every line, or the key-leak check below would read an empty log.
        EVERY_LINE,
    ];
    pairs.extend_from_slice(extra);
    let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
    let provider = provider.on("m2", completion("m2"), 1);
    let ex = exchange(&load(&pairs), &provider, limiter, &Default::default(), req);
    let logged: String = ex.log.iter().map(|(_, l)| l.to_string()).collect();
    for shown in [&logged, &ex.text] {
        let leaked = shown.contains("ck_web_secret") || shown.contains("gsk_provider_secret");
        assert!(!leaked, "a key leaked: {shown}");
    }
    (ex.response, provider.models_called())
}

/// [`send`] with no limit.
fn unlimited(extra: &[(&'static str, &str)], req: HttpRequest<'_>) -> (HttpResponse, Vec<String>) {
    send(extra, &Unlimited, req)
}

fn post(body: &str) -> HttpRequest<'_> {
    request("POST /v1/tasks/fast", Some(BEARER), body)
}

/// A valid `POST /v1/tasks/fast`, changed by `change`.
fn post_with(change: impl FnOnce(&mut HttpRequest)) -> HttpRequest<'static> {
    let mut req = post(HI);
    change(&mut req);
    req
}

/// A request for `route` from the browser origin `origin`.
fn from<'a>(origin: Option<&'a str>, route: &'a str, body: &'a str) -> HttpRequest<'a> {
    HttpRequest {
        origin,
        ..request(route, Some(BEARER), body)
    }
}

fn code(r: &HttpResponse) -> String {
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn headers<'a, const N: usize>(r: &'a HttpResponse, names: [&str; N]) -> [Option<&'a str>; N] {
    names.map(|name| r.header(name))
}

/// `ALLOWED_ORIGINS` in the CORS tests.
const ORIGINS: &str = "https://app.example.com, https://admin.example.com";
const APP: Option<&str> = Some("https://app.example.com");

#[test]
fn preflight_for_an_allowed_origin_needs_no_auth() {
    let cors = [("ALLOWED_ORIGINS", ORIGINS)];
    let preflight = |origin, asked| HttpRequest {
        requested_headers: asked,
        ..HttpRequest {
            origin,
            ..HttpRequest::new("OPTIONS", "/v1/chat/completions", b"")
        }
    };
    let (r, calls) = unlimited(&cors, preflight(APP, None));
    assert_eq!(r.status, 204);
    let want = [
        APP,
        Some("POST, OPTIONS"),
        Some("Origin, Access-Control-Request-Headers"),
    ];
    let cors_headers = [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "vary",
    ];
    assert_eq!(headers(&r, cors_headers), want);
    let allowed = r.header("access-control-allow-headers").unwrap();
    let both = allowed.contains("authorization") && allowed.contains("content-type");
    assert!(both, "{allowed}");
    assert!(calls.is_empty());

    // What a preflight asks for is what it is allowed: every header an SDK may add (the OpenAI
    // JS SDK's helpers and organisation headers among them), and only header names.
    let asked = "Authorization, Content-Type, X-Stainless-Helper-Method, x-stainless-poll-helper, \
                 x-stainless-custom-poll-interval, openai-organization, openai-project, \
                 x-some-future-sdk-header, bad header, a\r\nb";
    let (r, _) = unlimited(&cors, preflight(APP, Some(asked)));
    let granted = "authorization, content-type, x-stainless-helper-method, \
                   x-stainless-poll-helper, x-stainless-custom-poll-interval, \
                   openai-organization, openai-project, x-some-future-sdk-header";
    assert_eq!(r.header("access-control-allow-headers"), Some(granted));
    // Another origin asking the same is told nothing.
    let (r, _) = unlimited(&cors, preflight(Some("https://evil.example"), Some(asked)));
    assert_eq!(
        (r.status, r.header("access-control-allow-headers")),
        (403, None)
    );

    let models = from(Some("https://admin.example.com"), "OPTIONS /v1/models", "");
    let (r, _) = unlimited(&cors, models);
    let expected = Some("GET, HEAD, OPTIONS");
    assert_eq!(r.header("access-control-allow-methods"), expected);
}

#[test]
fn other_origins_get_no_cors_headers() {
    let evil = Some("https://evil.example");
    let lookalike = Some("https://app.example.com.evil.example");
    for (allowed, origin) in [(APP, evil), (APP, lookalike), (APP, None), (None, APP)] {
        let extra: Vec<_> = allowed
            .map(|a| ("ALLOWED_ORIGINS", a))
            .into_iter()
            .collect();
        let (r, _) = unlimited(&extra, from(origin, "OPTIONS /v1/tasks/fast", ""));
        assert_eq!(
            (r.status, code(&r)),
            (403, "origin_not_allowed".into()),
            "{origin:?}"
        );
        assert_eq!(r.header("access-control-allow-origin"), None);

        let (r, _) = unlimited(&extra, from(origin, "POST /v1/tasks/fast", HI));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin:?}");
        // `Vary: Origin` whenever CORS is on.
        assert_eq!(r.header("vary").is_some(), allowed.is_some());
    }
}

#[test]
fn answers_to_allowed_origins_echo_the_origin_and_expose_router_headers() {
    for allowed in ["https://app.example.com", "*"] {
        let (r, _) = unlimited(
            &[("ALLOWED_ORIGINS", allowed)],
            from(APP, "POST /v1/tasks/fast", HI),
        );
        assert_eq!(r.status, 200);
        let [origin, vary] = headers(&r, ["access-control-allow-origin", "vary"]);
        assert_eq!((origin, vary), (APP, Some("Origin")));
        let exposed = r.header("access-control-expose-headers").unwrap();
        assert!(exposed.contains("x-model-used"));
    }
    // Errors carry CORS headers too, so the browser can read them.
    let req = post_with(|r| (r.origin, r.authorization) = (APP, None));
    let (r, _) = unlimited(&[("ALLOWED_ORIGINS", "*")], req);
    let allowed = r.header("access-control-allow-origin");
    assert_eq!((r.status, allowed), (401, APP));
}

#[test]
fn bad_allowed_origins_are_config_errors() {
    let path = "https://app.example.com/path";
    for bad in ["app.example.com", path, "https://*.example.com"] {
        let errors = load(&[("MODEL_REGISTRY", REGISTRY), ("ALLOWED_ORIGINS", bad)]).unwrap_err();
        assert_eq!(errors[0].binding, "ALLOWED_ORIGINS", "{bad}");
    }
}

#[test]
fn rate_limits_are_per_client_name_and_answer_429_with_retry_after() {
    let limiter = CountingLimiter::new(2);
    let (mut statuses, mut calls) = (Vec::new(), 0);
    for _ in 0..3 {
        let (r, c) = send(&[], &limiter, post(HI));
        statuses.push(r.status);
        calls += c.len();
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("60"));
            assert_eq!(code(&r), "client_rate_limited");
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    // A limited request never reaches Groq.
    assert_eq!(calls, 2);
    assert_eq!(limiter.keys.borrow().as_slice(), ["client:web"; 3]);

    let anonymous = CountingLimiter::new(5);
    let req = post_with(|r| (r.client_ip, r.authorization) = (Some("203.0.113.9"), None));
    let open = [("ALLOW_UNAUTHENTICATED", "true"), ("ROUTER_API_KEYS", "")];
    send(&open, &anonymous, req);
    assert_eq!(anonymous.keys.borrow().as_slice(), ["ip:203.0.113.9"]);

    let period = [("RATE_LIMIT_PERIOD_S", "10")];
    let (r, _) = send(&period, &CountingLimiter::new(0), post(HI));
    assert_eq!(r.header("retry-after"), Some("10"));
}

#[test]
fn bodies_are_read_within_their_limit_and_the_isolates_bytes_in_flight() {
    let limits = [
        ("MAX_REQUEST_BYTES", "1000"),
        ("MAX_INFLIGHT_BYTES", "4000"),
    ];
    let config = load(&[("MODEL_REGISTRY", REGISTRY), limits[0], limits[1]]);
    let read = |hold, declared| BodyRead::Read {
        limit: 1000,
        declared,
        hold,
        max_in_flight: 4000,
    };
    for (method, length, want) in [
        ("GET", Some("10"), BodyRead::None),
        ("OPTIONS", None, BodyRead::None),
        ("POST", Some("1001"), BodyRead::TooLarge),
        ("POST", Some(" 999 "), read(999, true)),
        // Chunked: held for the most it may be until it is read.
        ("POST", None, read(1000, false)),
        ("POST", Some("many"), read(1000, false)),
    ] {
        let read = body_read(method, length, &config);
        assert_eq!(read, want, "{method} {length:?}");
    }
    // Over the bound: 503 with `Retry-After`, before the body is read or Groq is called.
    let (r, calls) = unlimited(&[], post_with(|r| r.overloaded = true));
    assert_eq!((r.status, code(&r)), (503, "overloaded".to_string()));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(calls.is_empty());
}

#[test]
fn size_and_media_type_limits() {
    let content = "x".repeat(2_000);
    let big = format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}]}}"#);
    let (r, calls) = unlimited(&[("MAX_REQUEST_BYTES", "1024")], post(&big));
    assert_eq!((r.status, code(&r)), (413, "request_too_large".to_string()));
    assert!(calls.is_empty());
    let (r, _) = unlimited(&[("MAX_REQUEST_BYTES", "4096")], post(&big));
    assert_eq!(r.status, 200);
    let truncated = post_with(|r| r.body_too_large = true);
    assert_eq!(unlimited(&[], truncated).0.status, 413);

    let form = Some("application/x-www-form-urlencoded");
    for content_type in [None, Some("text/plain"), form, Some("application/jsonx")] {
        let (r, _) = unlimited(&[], post_with(|r| r.content_type = content_type));
        let refused = (r.status, code(&r));
        let wanted = (415, "unsupported_media_type".into());
        assert_eq!(refused, wanted, "{content_type:?}");
    }
    let content_type = Some("application/json; charset=utf-8");
    let (r, _) = unlimited(&[], post_with(|r| r.content_type = content_type));
    assert_eq!(r.status, 200);
}

/// `FIELDS → PARAM`: a valid message and `FIELDS` (or, starting with `{`, a whole body), and the
/// parameter its refusal names.
const PARAMETERS: &[&str] = &[
    r#""top_p":1.5 → top_p"#,
    r#""top_p":"high" → top_p"#,
    r#""temperature":"hot" → temperature"#,
    r#""n":2 → n"#,
    r#""stop":["a","b","c","d","e"] → stop"#,
    r#""stop":7 → stop"#,
    r#""tools":{} → tools"#,
    r#""tools":[{"function":{}}] → tools[0]"#,
    r#""response_format":"json" → response_format"#,
    r#""response_format":{} → response_format.type"#,
    r#""tool_choice":3 → tool_choice"#,
    r#""seed":"x" → seed"#,
    r#""max_completion_tokens":0 → max_completion_tokens"#,
    r#""frequency_penalty":-3 → frequency_penalty"#,
    r#""stream_options":true → stream_options"#,
    r#"{"messages":[{"role":"user","content":7}]} → messages[0].content"#,
    r#"{"messages":[{"role":"user","content":[{"text":"x"}]}]} → messages[0].content"#,
    r#"{"messages":[{"role":"user","content":null}]} → messages[0].content"#,
    r#"{"messages":[{"role":"assistant"}]} → messages[0].content"#,
    r#"{"messages":[{"role":"user","content":"a"},"hi"]} → messages[1]"#,
    r#"{"messages":[null]} → messages[0]"#,
    r#"{"messages":[{"role":7,"content":"a"}]} → messages[0].role"#,
];

#[test]
fn parameter_checks_name_the_field() {
    let m = r#""messages":[{"role":"user","content":"hi"}]"#;
    for case in PARAMETERS {
        let (fields, param) = case.split_once(" → ").expect("FIELDS → PARAM");
        let body = match fields.starts_with('{') {
            true => fields.to_string(),
            false => format!("{{{m},{fields}}}"),
        };
        let (r, calls) = unlimited(&[], post(&body));
        let json: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
        assert!(calls.is_empty());
    }
    for ok in [
        format!(r#"{{{m},"stop":["a","b"],"n":1,"seed":3,"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":"auto"}}"#),
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","tool_calls":[{"id":"1"}]},{"role":"tool","content":"r","tool_call_id":"1"}]}"#.to_string(),
    ] {
        assert_eq!(unlimited(&[], post(&ok)).0.status, 200, "{ok}");
    }
}

#[test]
fn a_tasks_token_cap_refuses_more_and_fills_in_a_missing_limit() {
    let capped = [("MAX_FAST_TOKENS", "256"), ("MAX_CODE_REVIEW_TOKENS", "64")];
    let over = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1000}"#;
    let (r, _) = unlimited(&capped, post(over));
    assert_eq!(r.status, 400);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("MAX_FAST_TOKENS"), "{text}");
    let within = r#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":256}"#;
    assert_eq!(unlimited(&capped, post(within)).0.status, 200);

    let keys = [("GROQ_API_KEY", "g"), ("ROUTER_API_KEYS", "k")];
    let config = load(&[("MODEL_REGISTRY", REGISTRY), keys[0], keys[1], capped[0]]);
    let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
    let req = request("POST /v1/tasks/fast", Some("Bearer k"), HI);
    exchange(&config, &provider, &Unlimited, &Default::default(), req);
    assert_eq!(
        provider.calls.borrow()[0].body["max_completion_tokens"],
        256
    );
}

/// Issue 13: a key pasted into any other binding — as it is, inside a URL, as a task name or as
/// a model id — is never shown: not by `/healthz` (which needs no key), routed or anonymous
/// answers, `/v1/routes`, `/v1/models`, their headers, nor any log line. Both where the key also
/// sits where it belongs, and (for the provider key, known by its `gsk_` shape) where it moved.
#[test]
fn a_key_pasted_into_any_other_binding_is_never_shown() {
    const PROVIDER: &str = "gsk_provider_secret_0123";
    const CLIENT: &str = "ck_web_secret_0123";
    let places = "GROQ_BASE_URL ATTEMPT_TIMEOUT_MS REQUEST_TIMEOUT_MS MODEL_GONE_TTL_S \
        MAX_REQUEST_BYTES RATE_LIMIT_PERIOD_S LOG_LEVEL ALLOW_UNAUTHENTICATED ALLOWED_ORIGINS \
        FORCE_MODEL DEFAULT_FAST_MODEL MAX_FAST_TOKENS MODEL_REGISTRY";
    let (keyed, clients) = (format!("Bearer {CLIENT}"), format!("web:{CLIENT}"));
    let mut checked = 0;
    for (secret, also_where_it_belongs) in [(PROVIDER, true), (PROVIDER, false), (CLIENT, true)] {
        let provider_key = if also_where_it_belongs {
            PROVIDER
        } else {
            "not-a-key"
        };
        for place in places.split_whitespace() {
            for value in [
                secret.to_string(),
                format!("https://user:{secret}@host.example"),
                format!("ftp://user:{secret}@127.0.0.1:1"),
                format!(r#"{{"{secret}":["m1"]}}"#),
                format!(r#"{{"fast":["{secret}"]}}"#),
            ] {
                let registry = [REGISTRY, &value][usize::from(place == "MODEL_REGISTRY")];
                let config = load(&[
                    ("MODEL_REGISTRY", registry),
                    ("GROQ_API_KEY", provider_key),
                    ("ROUTER_API_KEYS", &clients),
                    ("LOG_LEVEL", "info"),
                    (place, &value),
                ]);
                let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
                let requests = [
                    request("GET /healthz", None, ""),
                    request("POST /v1/tasks/fast", None, HI),
                    request("POST /v1/tasks/fast", Some(&keyed), HI),
                    request("GET /v1/routes", Some(&keyed), ""),
                    request("GET /v1/models", Some(&keyed), ""),
                ];
                for req in requests {
                    let ex = exchange(&config, &provider, &Unlimited, &Default::default(), req);
                    let headers = format!("{:?}", ex.response.headers);
                    let logged = format!("{:?}", ex.log);
                    for shown in [&ex.text, &headers, &logged] {
                        assert!(!shown.contains(secret), "{place} = {value}: {shown}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 3 * 13 * 5 * 5);
}
