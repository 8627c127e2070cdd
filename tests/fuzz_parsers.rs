//! Property-based fuzzing (proptest) of everything that parses outside input: request bodies,
//! `MODEL_REGISTRY` and the other bindings, and request paths. Properties: never a panic, and
//! every input is either accepted or refused with a 4xx (bodies) or a named config error.
//!
//! Run: `cargo test --test fuzz_parsers`; more cases: `PROPTEST_CASES=100000 cargo test --release --test fuzz_parsers`.

mod scripted;

use std::cell::RefCell;

use proptest::prelude::*;
use scripted::*;
use task_router::api::{handle, HttpRequest, Reply, RequestEnv};
use task_router::config::{parse_registry, BindingValue};
use task_router::health::HealthBook;
use task_router::json;
use task_router::limit::Unlimited;
use task_router::log::MemoryLog;
use task_router::request::ChatRequest;

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
    prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("null".to_string()),
        Just("\"messages\"".to_string()),
        Just("\"role\"".to_string()),
        Just("\"content\"".to_string()),
        Just("\"user\"".to_string()),
        Just("\"model\"".to_string()),
        Just("\"max_tokens\"".to_string()),
        Just("-1".to_string()),
        Just("1e999".to_string()),
        Just("\"\\ud800\"".to_string()),
        "[a-z]{0,4}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn check_body(body: &[u8]) {
    for model_allowed in [false, true] {
        match ChatRequest::parse(body, model_allowed) {
            Ok(request) => {
                // An accepted body always yields a JSON object for Groq.
                let out: serde_json::Value =
                    serde_json::from_str(&request.body_for("m")).expect("valid JSON out");
                assert_eq!(out["model"], "m");
            }
            Err(error) => assert_eq!(error.status(), 400, "{error:?}"),
        }
    }
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

    /// The router's own JSON reader against `serde_json` as the oracle: same verdict on validity,
    /// and for objects the same members with the same values.
    #[test]
    fn json_reader_agrees_with_serde_json(body in mutated(), tokens in proptest::collection::vec(json_token(), 0..40)) {
        for text in [String::from_utf8_lossy(&body).into_owned(), tokens.concat()] {
            let serde = serde_json::from_str::<serde_json::Value>(&text);
            // Valid JSON grammar, but beyond f64: serde_json refuses it, the router passes it on
            // for Groq to judge (it parses no number it does not need).
            if serde.as_ref().is_err_and(|e| e.to_string().starts_with("number out of range")) {
                continue;
            }
            prop_assert_eq!(json::validate(&text).is_ok(), serde.is_ok(), "{}", text);
            if let Ok(serde_json::Value::Object(map)) = serde {
                let members = json::members(&text).expect("a valid object");
                for (key, value) in &map {
                    let ours = members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v).expect("key found");
                    let ours: serde_json::Value = serde_json::from_str(ours).expect("raw value is JSON");
                    prop_assert_eq!(&ours, value);
                }
            }
        }
    }

    /// A document's tape reads every nested object and list exactly as a scan of its bytes does.
    #[test]
    fn json_document_tape_agrees_with_scanning(body in mutated(), tokens in proptest::collection::vec(json_token(), 0..40)) {
        for text in [String::from_utf8_lossy(&body).into_owned(), tokens.concat()] {
            let doc = json::Document::parse(&text);
            prop_assert_eq!(doc.is_ok(), json::validate(&text).is_ok(), "{}", text);
            if let Ok(doc) = doc {
                prop_assert_eq!(doc.root(), text.trim());
                let mut pending = vec![doc.root()];
                while let Some(raw) = pending.pop() {
                    prop_assert_eq!(doc.members(raw), json::members(raw), "{}", raw);
                    prop_assert_eq!(doc.items(raw), json::items(raw), "{}", raw);
                    pending.extend(json::members(raw).unwrap_or_default().into_iter().map(|(_, v)| v));
                    pending.extend(json::items(raw).unwrap_or_default());
                }
            }
        }
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

    #[test]
    fn any_method_and_path_gets_an_answer(method in "[A-Z]{0,8}", path in "/\\PC{0,60}", body in mutated()) {
        let config = load(&[("MODEL_REGISTRY", r#"{"fast":["m1"]}"#), ("GROQ_API_KEY", "g"), ("ROUTER_API_KEYS", "k")]);
        let provider = ScriptedProvider::new().on("m1", completion("m1"), 1);
        let log = MemoryLog::default();
        let health = RefCell::new(HealthBook::default());
        let now = || 0;
        let env = RequestEnv { request_id: "r", now_ms: &now, log: &log, health: &health };
        let req = HttpRequest { authorization: Some("Bearer k"), ..HttpRequest::new(&method, &path, &body) };
        let Reply::Full(response) = block_on(handle(req, &config, &provider, &Unlimited, &env)) else {
            panic!("no stream was asked for");
        };
        prop_assert!(response.status < 500, "{} {}: {}", method, path, response.body);
        let json: serde_json::Value = serde_json::from_str(&response.body).expect("every answer is JSON");
        if response.status >= 400 {
            prop_assert!(json["error"]["message"].is_string());
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        // In a field the router passes through untouched, nesting is Groq's to judge; it must
        // only not crash the parser.
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"x"}}],"extra":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        check_body(body.as_bytes());
        let nested_content = format!(
            r#"{{"messages":[{{"role":"user","content":{}{}}}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(
            ChatRequest::parse(nested_content.as_bytes(), false)
                .unwrap_err()
                .status(),
            400
        );
        let nested_messages = format!(
            r#"{{"messages":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(
            ChatRequest::parse(nested_messages.as_bytes(), false)
                .unwrap_err()
                .status(),
            400
        );
    }
}
