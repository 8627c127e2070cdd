//! Property-based fuzzing (proptest) of everything that parses outside input: request bodies,
//! `MODEL_REGISTRY` and the other bindings, and request paths. Properties: never a panic; every
//! input is either accepted or refused with a 4xx (bodies) or a named config error; a key sent
//! twice is always refused by name; numbers are judged by value whatever their exponent.
//!
//! Run: `cargo test --test fuzz_parsers`; more cases: `PROPTEST_CASES=100000 cargo test --release --test fuzz_parsers`.

mod support;

use proptest::prelude::*;
use serde_json::Value;
use support::scripted::*;
use task_router::bindings::BindingValue;
use task_router::http::error::ApiError;
use task_router::http::limit::Unlimited;
use task_router::http::request::{BodyError, ChatRequest};
use task_router::http::HttpRequest;
use task_router::routing::registry::parse_registry;

const VALID: &str = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"temperature":0.5,"stop":["x"],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"stream":false}"#;

/// `VALID` with a few bytes replaced, inserted or removed: mostly near-JSON, the interesting kind.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((0..VALID.len(), any::<u8>(), 0..3u8), 1..6).prop_map(|edits| {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        bytes
    })
}

fn json_token() -> impl Strategy<Value = String> {
    let tokens = r#"{ } [ ] , : null "messages" "role" "content" "user" "model" "max_tokens" -1 1e999 "\ud800""#;
    let tokens: Vec<String> = tokens.split(' ').map(String::from).collect();
    // Each fixed token as likely as a made-up word.
    let words = "[a-z]{0,4}".prop_map(|s| format!("\"{s}\""));
    prop_oneof![16 => prop::sample::select(tokens), 1 => words]
}

fn check_body(body: &[u8]) {
    for model_allowed in [false, true] {
        match ChatRequest::parse(body, model_allowed) {
            Ok(request) => {
                // An accepted body always yields a JSON object for Groq: `model` set, every other
                // member as sent.
                let out = request.body.for_model("m").to_vec();
                // Valid JSON at any depth (a raw value has no recursion limit)...
                serde_json::from_slice::<&serde_json::value::RawValue>(&out)
                    .expect("valid JSON out");
                // ...and, where serde_json can build both trees, the caller's with `model` set
                // (and the router's own mock fields gone).
                if let (Ok(mut sent), Ok(out)) = (
                    serde_json::from_slice::<Value>(body),
                    serde_json::from_slice::<Value>(&out),
                ) {
                    sent["model"] = "m".into();
                    if let Some(fields) = sent.as_object_mut() {
                        fields.remove("mock_response");
                        fields.remove("mock_failures");
                    }
                    assert_eq!(out, sent);
                }
            }
            Err(error) => assert_eq!(ApiError::from(error).status(), 400),
        }
    }
}

fn refused_param(body: &str) -> Option<String> {
    match ChatRequest::parse(body.as_bytes(), true) {
        Err(BodyError::Field { param, .. }) => Some(param),
        _ => None,
    }
}

/// A key as the caller may spell it: plain, or with one character `\u`-escaped.
fn spelled(key: &str, escape_at: usize) -> String {
    let at = escape_at % key.len();
    let c = key.as_bytes()[at];
    format!("{}\\u{:04x}{}", &key[..at], c, &key[at + 1..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn request_parser_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_body(&body);
    }

    #[test]
    fn request_parser_never_panics_on_mutated_bodies(body in mutated()) {
        check_body(&body);
    }

    #[test]
    fn request_parser_never_panics_on_token_soup(tokens in proptest::collection::vec(json_token(), 0..40)) {
        check_body(tokens.concat().as_bytes());
    }

    /// A member sent twice, under any spelling of its key, is refused naming it.
    #[test]
    fn a_duplicated_key_is_refused_by_name(
        key in prop_oneof![Just("max_tokens"), Just("temperature"), Just("messages"), Just("stream"), Just("x_extra"), Just("model")],
        escape_at in 0usize..20,
        escaped in any::<bool>(),
        first_value in prop_oneof![Just("1"), Just("99999"), Just("\"x\""), Just("[{\"role\":\"user\",\"content\":\"hi\"}]")],
    ) {
        let second = if escaped { spelled(key, escape_at) } else { key.to_string() };
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"{key}":{first_value},"{second}":{first_value}}}"#
        );
        prop_assert_eq!(refused_param(&body), Some(key.to_string()), "{}", body);
    }

    /// `temperature` is judged by its value, whatever the exponent: in range if Rust's own float
    /// parser reads it between 0 and 2 (`1e-2147483648` is 0; `1e400` is infinite).
    #[test]
    fn numbers_are_judged_by_value_at_any_exponent(
        mantissa in prop_oneof![Just("0"), Just("1"), Just("1.5"), Just("25"), Just("-1")],
        exponent in prop_oneof![any::<i64>(), -400i64..400, Just(i64::from(i32::MIN)), Just(i64::from(i32::MAX))],
    ) {
        let number = format!("{mantissa}e{exponent}");
        let value: f64 = number.parse().expect("Rust reads any JSON number");
        let body = format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"temperature":{number}}}"#);
        let verdict = refused_param(&body);
        prop_assert_eq!(verdict.is_none(), (0.0..=2.0).contains(&value), "{} read as {}", number, value);
        prop_assert!(verdict.is_none_or(|p| p == "temperature"));
    }

    #[test]
    fn registry_parser_never_panics(text in "\\PC{0,200}", tokens in proptest::collection::vec(json_token(), 0..30)) {
        for input in [text, tokens.concat()] {
            if let Err(message) = parse_registry(BindingValue::Text(input)) {
                prop_assert!(message.contains("MODEL_REGISTRY"), "{}", message);
            }
        }
    }

    #[test]
    fn config_loader_never_panics(values in proptest::collection::vec("\\PC{0,40}", 12)) {
        let names = ["MODEL_REGISTRY", "FORCE_MODEL", "DEFAULT_FAST_MODEL", "GROQ_BASE_URL", "ROUTER_API_KEYS",
                     "ALLOW_UNAUTHENTICATED", "ATTEMPT_TIMEOUT_MS", "REQUEST_TIMEOUT_MS", "MODEL_GONE_TTL_S",
                     "MAX_REQUEST_BYTES", "ALLOWED_ORIGINS", "MAX_FAST_TOKENS"];
        let pairs: Vec<(&'static str, &str)> = names.iter().copied().zip(values.iter().map(String::as_str)).collect();
        if let Err(errors) = load(&pairs) {
            for e in errors {
                prop_assert!(names.contains(&e.binding.as_str()) || e.binding == "GROQ_API_KEY", "{:?}", e);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    /// Task names of any characters and length: a valid registry or an error naming
    /// `MODEL_REGISTRY`, never a panic (a name over 64 bytes cut inside a character once was).
    #[test]
    fn long_non_ascii_task_names_are_refused_not_a_panic(name in "\\PC{1,80}", pad in 0usize..70) {
        let name = format!("{}{name}", "a".repeat(pad));
        let registry = serde_json::json!({ name.clone(): ["m"] }).to_string();
        match load(&[("MODEL_REGISTRY", &registry)]) {
            Ok(config) => prop_assert!(name.len() <= 64 && config.routing.task_names() == vec![name.as_str()]),
            Err(errors) => prop_assert!(errors.iter().any(|e| e.binding == "MODEL_REGISTRY" && e.code == "config_invalid")),
        }
    }

    #[test]
    fn any_method_and_path_gets_an_answer(method in "[A-Z]{0,8}", path in "/\\PC{0,60}", body in mutated()) {
        let config = load(&[("MODEL_REGISTRY", r#"{"fast":["m1"]}"#), ("GROQ_API_KEY", "g"), ("ROUTER_API_KEYS", "k")]);
        let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
        let req = HttpRequest { authorization: Some("Bearer k"), ..HttpRequest::new(&method, &path, &body) };
        let ex = exchange(&config, &provider, &Unlimited, &Default::default(), req);
        prop_assert!(!ex.streamed, "no stream was asked for");
        prop_assert!(ex.response.status < 500, "{} {}: {}", method, path, ex.text);
        let json = ex.json();
        if ex.response.status >= 400 {
            prop_assert!(json["error"]["message"].is_string());
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        // In a field the router passes through untouched, nesting is Groq's to judge; it must
        // only not crash the parser.
        let nest = "[".repeat(depth) + &"]".repeat(depth);
        let body = format!(r#"{{"messages":[{{"role":"user","content":"x"}}],"extra":{nest}}}"#);
        check_body(body.as_bytes());
        let nested_content = format!(r#"{{"messages":[{{"role":"user","content":{nest}}}]}}"#);
        assert!(ChatRequest::parse(nested_content.as_bytes(), false).is_err());
        let nested_messages = format!(r#"{{"messages":{nest}}}"#);
        assert!(ChatRequest::parse(nested_messages.as_bytes(), false).is_err());
    }
}
