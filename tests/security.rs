//! Native tests of the edge-security rules: CORS, per-client rate limits, body size and media
//! type, parameter checks, token caps, and leaks. Run: `cargo test --test security`.

mod support;

use std::cell::{Cell, RefCell};

use serde_json::Value;
use support::scripted::*;
use task_router::http::limit::{RateLimiter, Unlimited};
use task_router::http::{body_read, BodyRead, HttpRequest, HttpResponse};

const REGISTRY: &str = r#"{"fast":["m1"],"code-review":["m2"]}"#;
const OK_BODY: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

/// Allows `budget` requests, then refuses; records the keys it was asked about.
struct CountingLimiter {
    budget: Cell<u32>,
    keys: RefCell<Vec<String>>,
}

impl RateLimiter for CountingLimiter {
    async fn allow(&self, key: &str) -> bool {
        self.keys.borrow_mut().push(key.to_string());
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }
}

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
    let provider =
        ScriptedProvider::new()
            .on("m1", completion("m1"), 1)
            .on("m2", completion("m2"), 1);
    let ex = exchange(&load(&pairs), &provider, limiter, &Default::default(), req);
    let logged: String = ex.log.iter().map(|(_, l)| l.to_string()).collect();
    assert!(
        !logged.contains("ck_web_secret") && !logged.contains("gsk_provider_secret"),
        "a key leaked into logs"
    );
    assert!(!ex.text.contains("ck_web_secret") && !ex.text.contains("gsk_provider_secret"));
    (ex.response, provider.models_called())
}

fn post<'a>(body: &'a str) -> HttpRequest<'a> {
    HttpRequest {
        authorization: Some("Bearer ck_web_secret"),
        ..HttpRequest::new("POST", "/v1/tasks/fast", body.as_bytes())
    }
}

fn code(r: &HttpResponse) -> String {
    serde_json::from_slice::<Value>(&r.body).unwrap()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `ALLOWED_ORIGINS` in the CORS tests.
const ORIGINS: &str = "https://app.example.com, https://admin.example.com";

#[test]
fn preflight_for_an_allowed_origin_needs_no_auth() {
    let req = HttpRequest {
        origin: Some("https://app.example.com"),
        ..HttpRequest::new("OPTIONS", "/v1/chat/completions", b"")
    };
    let (r, calls) = send(&[("ALLOWED_ORIGINS", ORIGINS)], &Unlimited, req);
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    let headers = r.header("access-control-allow-headers").unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(
        r.header("vary"),
        Some("Origin, Access-Control-Request-Headers")
    );
    assert!(calls.is_empty());

    // What a preflight asks for is what it is allowed: every header an SDK may add (the OpenAI
    // JS SDK's helpers and organisation headers among them), and only header names.
    let asked = "Authorization, Content-Type, X-Stainless-Helper-Method, x-stainless-poll-helper, \
                 x-stainless-custom-poll-interval, openai-organization, openai-project, \
                 x-some-future-sdk-header, bad header, a\r\nb";
    let req = HttpRequest {
        origin: Some("https://app.example.com"),
        requested_headers: Some(asked),
        ..HttpRequest::new("OPTIONS", "/v1/chat/completions", b"")
    };
    let (r, _) = send(&[("ALLOWED_ORIGINS", ORIGINS)], &Unlimited, req);
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some(
            "authorization, content-type, x-stainless-helper-method, x-stainless-poll-helper, \
             x-stainless-custom-poll-interval, openai-organization, openai-project, \
             x-some-future-sdk-header"
        )
    );
    // Another origin asking the same is told nothing.
    let req = HttpRequest {
        origin: Some("https://evil.example"),
        requested_headers: Some(asked),
        ..HttpRequest::new("OPTIONS", "/v1/chat/completions", b"")
    };
    let (r, _) = send(&[("ALLOWED_ORIGINS", ORIGINS)], &Unlimited, req);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-headers"), None);

    let models = HttpRequest {
        origin: Some("https://admin.example.com"),
        ..HttpRequest::new("OPTIONS", "/v1/models", b"")
    };
    let (r, _) = send(&[("ALLOWED_ORIGINS", ORIGINS)], &Unlimited, models);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
}

#[test]
fn other_origins_get_no_cors_headers() {
    for (allowed, origin) in [
        (
            Some("https://app.example.com"),
            Some("https://evil.example"),
        ),
        (
            Some("https://app.example.com"),
            Some("https://app.example.com.evil.example"),
        ),
        (Some("https://app.example.com"), None),
        (None, Some("https://app.example.com")),
    ] {
        let extra: Vec<(&'static str, &str)> = allowed
            .map(|a| ("ALLOWED_ORIGINS", a))
            .into_iter()
            .collect();
        let req = HttpRequest {
            origin,
            ..HttpRequest::new("OPTIONS", "/v1/tasks/fast", b"")
        };
        let (r, _) = send(&extra, &Unlimited, req);
        assert_eq!(r.status, 403, "{allowed:?} {origin:?}");
        assert_eq!(code(&r), "origin_not_allowed");
        assert_eq!(r.header("access-control-allow-origin"), None);

        let req = HttpRequest {
            origin,
            ..post(OK_BODY)
        };
        let (r, _) = send(&extra, &Unlimited, req);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "{allowed:?} {origin:?}"
        );
        // `Vary: Origin` whenever CORS is on.
        assert_eq!(r.header("vary").is_some(), allowed.is_some());
    }
}

#[test]
fn answers_to_allowed_origins_echo_the_origin_and_expose_router_headers() {
    for allowed in ["https://app.example.com", "*"] {
        let req = HttpRequest {
            origin: Some("https://app.example.com"),
            ..post(OK_BODY)
        };
        let (r, _) = send(&[("ALLOWED_ORIGINS", allowed)], &Unlimited, req);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert!(r
            .header("access-control-expose-headers")
            .unwrap()
            .contains("x-model-used"));
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    // Errors carry CORS headers too, so the browser can read them.
    let req = HttpRequest {
        origin: Some("https://app.example.com"),
        authorization: None,
        ..post(OK_BODY)
    };
    let (r, _) = send(&[("ALLOWED_ORIGINS", "*")], &Unlimited, req);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[test]
fn bad_allowed_origins_are_config_errors() {
    for bad in [
        "app.example.com",
        "https://app.example.com/path",
        "https://*.example.com",
    ] {
        let errors = load(&[("MODEL_REGISTRY", REGISTRY), ("ALLOWED_ORIGINS", bad)]).unwrap_err();
        assert_eq!(errors[0].binding, "ALLOWED_ORIGINS", "{bad}");
    }
}

#[test]
fn rate_limits_are_per_client_name_and_answer_429_with_retry_after() {
    let limiter = CountingLimiter {
        budget: Cell::new(2),
        keys: RefCell::default(),
    };
    let mut statuses = Vec::new();
    let mut calls = 0;
    for _ in 0..3 {
        let (r, c) = send(&[], &limiter, post(OK_BODY));
        statuses.push(r.status);
        calls += c.len();
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("60"));
            assert_eq!(code(&r), "client_rate_limited");
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(calls, 2, "a limited request never reaches Groq");
    assert_eq!(
        limiter.keys.borrow().as_slice(),
        ["client:web", "client:web", "client:web"]
    );

    let anonymous = CountingLimiter {
        budget: Cell::new(5),
        keys: RefCell::default(),
    };
    let req = HttpRequest {
        client_ip: Some("203.0.113.9"),
        authorization: None,
        ..post(OK_BODY)
    };
    send(
        &[("ALLOW_UNAUTHENTICATED", "true"), ("ROUTER_API_KEYS", "")],
        &anonymous,
        req,
    );
    assert_eq!(anonymous.keys.borrow().as_slice(), ["ip:203.0.113.9"]);

    let (r, _) = send(
        &[("RATE_LIMIT_PERIOD_S", "10")],
        &CountingLimiter {
            budget: Cell::new(0),
            keys: RefCell::default(),
        },
        post(OK_BODY),
    );
    assert_eq!(r.header("retry-after"), Some("10"));
}

#[test]
fn bodies_are_read_within_their_limit_and_the_isolates_bytes_in_flight() {
    let config = load(&[
        ("MODEL_REGISTRY", REGISTRY),
        ("MAX_REQUEST_BYTES", "1000"),
        ("MAX_INFLIGHT_BYTES", "4000"),
    ]);
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
        assert_eq!(
            body_read(method, length, &config),
            want,
            "{method} {length:?}"
        );
    }
    // Over the bound: 503 with `Retry-After`, before the body is read or Groq is called.
    let shed = HttpRequest {
        overloaded: true,
        ..post(OK_BODY)
    };
    let (r, calls) = send(&[], &Unlimited, shed);
    assert_eq!((r.status, code(&r)), (503, "overloaded".to_string()));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(calls.is_empty());
}

#[test]
fn size_and_media_type_limits() {
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2_000)
    );
    let (r, calls) = send(&[("MAX_REQUEST_BYTES", "1024")], &Unlimited, post(&big));
    assert_eq!((r.status, code(&r)), (413, "request_too_large".to_string()));
    assert!(calls.is_empty());
    let (r, _) = send(&[("MAX_REQUEST_BYTES", "4096")], &Unlimited, post(&big));
    assert_eq!(r.status, 200);
    let truncated = HttpRequest {
        body_too_large: true,
        ..post(OK_BODY)
    };
    assert_eq!(send(&[], &Unlimited, truncated).0.status, 413);

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
    ] {
        let req = HttpRequest {
            content_type,
            ..post(OK_BODY)
        };
        let (r, _) = send(&[], &Unlimited, req);
        assert_eq!(
            (r.status, code(&r)),
            (415, "unsupported_media_type".to_string()),
            "{content_type:?}"
        );
    }
    let req = HttpRequest {
        content_type: Some("application/json; charset=utf-8"),
        ..post(OK_BODY)
    };
    assert_eq!(send(&[], &Unlimited, req).0.status, 200);
}

#[test]
fn parameter_checks_name_the_field() {
    let m = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases = [
        (format!(r#"{{{m},"top_p":1.5}}"#), "top_p"),
        (format!(r#"{{{m},"top_p":"high"}}"#), "top_p"),
        (format!(r#"{{{m},"temperature":"hot"}}"#), "temperature"),
        (format!(r#"{{{m},"n":2}}"#), "n"),
        (format!(r#"{{{m},"stop":["a","b","c","d","e"]}}"#), "stop"),
        (format!(r#"{{{m},"stop":7}}"#), "stop"),
        (format!(r#"{{{m},"tools":{{}}}}"#), "tools"),
        (
            format!(r#"{{{m},"tools":[{{"function":{{}}}}]}}"#),
            "tools[0]",
        ),
        (
            format!(r#"{{{m},"response_format":"json"}}"#),
            "response_format",
        ),
        (
            format!(r#"{{{m},"response_format":{{}}}}"#),
            "response_format.type",
        ),
        (format!(r#"{{{m},"tool_choice":3}}"#), "tool_choice"),
        (format!(r#"{{{m},"seed":"x"}}"#), "seed"),
        (
            format!(r#"{{{m},"max_completion_tokens":0}}"#),
            "max_completion_tokens",
        ),
        (
            format!(r#"{{{m},"frequency_penalty":-3}}"#),
            "frequency_penalty",
        ),
        (
            format!(r#"{{{m},"stream_options":true}}"#),
            "stream_options",
        ),
        (
            r#"{"messages":[{"role":"user","content":7}]}"#.to_string(),
            "messages[0].content",
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"text":"x"}]}]}"#.to_string(),
            "messages[0].content",
        ),
        (
            r#"{"messages":[{"role":"user","content":null}]}"#.to_string(),
            "messages[0].content",
        ),
        (
            r#"{"messages":[{"role":"assistant"}]}"#.to_string(),
            "messages[0].content",
        ),
        (
            r#"{"messages":[{"role":"user","content":"a"},"hi"]}"#.to_string(),
            "messages[1]",
        ),
        (
            r#"{"messages":[{"role":7,"content":"a"}]}"#.to_string(),
            "messages[0].role",
        ),
    ];
    for (body, param) in cases {
        let (r, calls) = send(&[], &Unlimited, post(&body));
        let json: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(json["error"]["param"], param, "{body}: {json}");
        assert!(calls.is_empty());
    }
    for ok in [
        format!(r#"{{{m},"stop":["a","b"],"n":1,"seed":3,"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":"auto"}}"#),
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","tool_calls":[{"id":"1"}]},{"role":"tool","content":"r","tool_call_id":"1"}]}"#.to_string(),
    ] {
        assert_eq!(send(&[], &Unlimited, post(&ok)).0.status, 200, "{ok}");
    }
}

#[test]
fn a_tasks_token_cap_refuses_more_and_fills_in_a_missing_limit() {
    let capped = [("MAX_FAST_TOKENS", "256"), ("MAX_CODE_REVIEW_TOKENS", "64")];
    let (r, _) = send(
        &capped,
        &Unlimited,
        post(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1000}"#),
    );
    assert_eq!(r.status, 400);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("MAX_FAST_TOKENS"), "{text}");
    let (r, _) = send(
        &capped,
        &Unlimited,
        post(r#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":256}"#),
    );
    assert_eq!(r.status, 200);

    let config = load(&[
        ("MODEL_REGISTRY", REGISTRY),
        ("GROQ_API_KEY", "g"),
        ("ROUTER_API_KEYS", "k"),
        ("MAX_FAST_TOKENS", "256"),
    ]);
    let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
    let req = HttpRequest {
        authorization: Some("Bearer k"),
        ..HttpRequest::new("POST", "/v1/tasks/fast", OK_BODY.as_bytes())
    };
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
    let places = [
        "GROQ_BASE_URL",
        "ATTEMPT_TIMEOUT_MS",
        "REQUEST_TIMEOUT_MS",
        "MODEL_GONE_TTL_S",
        "MAX_REQUEST_BYTES",
        "RATE_LIMIT_PERIOD_S",
        "LOG_LEVEL",
        "ALLOW_UNAUTHENTICATED",
        "ALLOWED_ORIGINS",
        "FORCE_MODEL",
        "DEFAULT_FAST_MODEL",
        "MAX_FAST_TOKENS",
        "MODEL_REGISTRY",
    ];
    let keyed = format!("Bearer {CLIENT}");
    let mut checked = 0;
    for (secret, also_where_it_belongs) in [(PROVIDER, true), (PROVIDER, false), (CLIENT, true)] {
        let provider_key = if also_where_it_belongs {
            PROVIDER
        } else {
            "not-a-key"
        };
        for place in places {
            for value in [
                secret.to_string(),
                format!("https://user:{secret}@host.example"),
                format!("ftp://user:{secret}@127.0.0.1:1"),
                format!(r#"{{"{secret}":["m1"]}}"#),
                format!(r#"{{"fast":["{secret}"]}}"#),
            ] {
                let registry = if place == "MODEL_REGISTRY" {
                    &value
                } else {
                    REGISTRY
                };
                let bindings = [
                    ("MODEL_REGISTRY", registry),
                    ("GROQ_API_KEY", provider_key),
                    ("ROUTER_API_KEYS", &format!("web:{CLIENT}")),
                    ("LOG_LEVEL", "info"),
                    (place, &value),
                ];
                let config = load(&bindings);
                let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
                let requests = [
                    HttpRequest::new("GET", "/healthz", b""),
                    HttpRequest::new("POST", "/v1/tasks/fast", OK_BODY.as_bytes()),
                    HttpRequest {
                        authorization: Some(&keyed),
                        ..post(OK_BODY)
                    },
                    HttpRequest {
                        authorization: Some(&keyed),
                        ..HttpRequest::new("GET", "/v1/routes", b"")
                    },
                    HttpRequest {
                        authorization: Some(&keyed),
                        ..HttpRequest::new("GET", "/v1/models", b"")
                    },
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
