//! Native table tests of configuration parsing and chain building: every override and every
//! way `MODEL_REGISTRY` and the other bindings can be wrong. Run: `cargo test --test chain`.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::scripted::{bindings, load};
use task_router::bindings::BindingValue;
use task_router::http::config::Config;
use task_router::routing::chain::{ChainSource, ModelChain};
use task_router::routing::log::Level;

/// Bindings as (name, value) pairs, and a chain as (model, source) pairs.
type Pairs<'a> = Vec<(&'static str, &'a str)>;
type Chain = Option<Vec<(String, ChainSource)>>;

const REGISTRY: &str =
    r#"{"fast":["a","b"],"reasoning":["c","a"],"code-review":["d"],"fallback":["b","e"]}"#;

fn chain(pairs: &[(&'static str, &str)], task: &str) -> Option<Vec<(String, ChainSource)>> {
    let config = load(pairs).expect("valid config");
    ModelChain::for_task(&config.routing, task)
        .map(|c| c.entries.into_iter().map(|e| (e.model, e.source)).collect())
}

#[test]
fn chain_building_table() {
    use ChainSource::*;
    let s = |m: &str, src| (m.to_string(), src);
    let cases: Vec<(&str, Pairs, &str, Chain)> = vec![
        (
            "task list then fallback, duplicates dropped",
            vec![("MODEL_REGISTRY", REGISTRY)],
            "fast",
            Some(vec![s("a", Registry), s("b", Registry), s("e", Fallback)]),
        ),
        (
            "fallback models after the task's own",
            vec![("MODEL_REGISTRY", REGISTRY)],
            "reasoning",
            Some(vec![
                s("c", Registry),
                s("a", Registry),
                s("b", Fallback),
                s("e", Fallback),
            ]),
        ),
        (
            "DEFAULT_<TASK>_MODEL goes first",
            vec![("MODEL_REGISTRY", REGISTRY), ("DEFAULT_FAST_MODEL", "z")],
            "fast",
            Some(vec![
                s("z", TaskDefault),
                s("a", Registry),
                s("b", Registry),
                s("e", Fallback),
            ]),
        ),
        (
            "a default already in the list moves to the front once",
            vec![("MODEL_REGISTRY", REGISTRY), ("DEFAULT_FAST_MODEL", "b")],
            "fast",
            Some(vec![
                s("b", TaskDefault),
                s("a", Registry),
                s("e", Fallback),
            ]),
        ),
        (
            "custom task with a dash maps to DEFAULT_CODE_REVIEW_MODEL",
            vec![
                ("MODEL_REGISTRY", REGISTRY),
                ("DEFAULT_CODE_REVIEW_MODEL", "y"),
            ],
            "code-review",
            Some(vec![
                s("y", TaskDefault),
                s("d", Registry),
                s("b", Fallback),
                s("e", Fallback),
            ]),
        ),
        (
            "another task's default does not apply",
            vec![
                ("MODEL_REGISTRY", REGISTRY),
                ("DEFAULT_REASONING_MODEL", "y"),
            ],
            "fast",
            Some(vec![s("a", Registry), s("b", Registry), s("e", Fallback)]),
        ),
        (
            "blank default is unset",
            vec![("MODEL_REGISTRY", REGISTRY), ("DEFAULT_FAST_MODEL", "  ")],
            "fast",
            Some(vec![s("a", Registry), s("b", Registry), s("e", Fallback)]),
        ),
        (
            "FORCE_MODEL pins every task to one model, no fallback",
            vec![
                ("MODEL_REGISTRY", REGISTRY),
                ("FORCE_MODEL", "x"),
                ("DEFAULT_FAST_MODEL", "z"),
            ],
            "fast",
            Some(vec![s("x", Forced)]),
        ),
        (
            "FORCE_MODEL applies to custom tasks too",
            vec![("MODEL_REGISTRY", REGISTRY), ("FORCE_MODEL", "x")],
            "code-review",
            Some(vec![s("x", Forced)]),
        ),
        (
            "empty FORCE_MODEL is off",
            vec![("MODEL_REGISTRY", REGISTRY), ("FORCE_MODEL", "")],
            "reasoning",
            Some(vec![
                s("c", Registry),
                s("a", Registry),
                s("b", Fallback),
                s("e", Fallback),
            ]),
        ),
        (
            "unknown task",
            vec![("MODEL_REGISTRY", REGISTRY)],
            "summarization",
            None,
        ),
        (
            "`fallback` is not a task",
            vec![("MODEL_REGISTRY", REGISTRY)],
            "fallback",
            None,
        ),
        (
            "FORCE_MODEL does not invent tasks",
            vec![("MODEL_REGISTRY", REGISTRY), ("FORCE_MODEL", "x")],
            "nope",
            None,
        ),
        (
            "no fallback list",
            vec![("MODEL_REGISTRY", r#"{"fast":["a"]}"#)],
            "fast",
            Some(vec![s("a", Registry)]),
        ),
    ];
    for (name, pairs, task, want) in cases {
        assert_eq!(chain(&pairs, task), want, "{name}");
    }
}

#[test]
fn registry_as_a_wrangler_table_and_as_a_json_string_agree() {
    let mut as_table: BTreeMap<&str, BindingValue> = BTreeMap::new();
    as_table.insert("MODEL_REGISTRY", BindingValue::Json(REGISTRY.to_string()));
    let from_table = Config::load(&as_table).unwrap();
    let from_text = Config::load(&bindings(&[("MODEL_REGISTRY", REGISTRY)])).unwrap();
    assert_eq!(from_table.routing.registry, from_text.routing.registry);
    assert_eq!(
        from_table.routing.task_names(),
        vec!["code-review", "fast", "reasoning"]
    );
    // A JSON string inside a JSON value (what some dashboards store) works too.
    as_table.insert(
        "MODEL_REGISTRY",
        BindingValue::Json(json!(REGISTRY).to_string()),
    );
    assert_eq!(
        Config::load(&as_table).unwrap().routing.registry,
        from_text.routing.registry
    );
}

#[test]
fn defaults_when_optional_bindings_are_absent() {
    let c = load(&[("MODEL_REGISTRY", REGISTRY)]).unwrap();
    assert_eq!(c.routing.groq_base_url, "https://api.groq.com");
    assert_eq!(c.routing.attempt_timeout_ms, 15_000);
    assert_eq!(c.routing.force_model, None);
    assert_eq!(c.routing.groq_api_key, None);
    assert!(!c.client_auth.is_configured());
    assert_eq!(
        c.log_level,
        Level::Info,
        "every request accounted for by default"
    );
}

#[test]
fn log_level_spellings() {
    for (given, want) in [
        ("info", Level::Info),
        ("warn", Level::Warn),
        ("WARN", Level::Warn),
        (" error ", Level::Error),
    ] {
        let c = load(&[("MODEL_REGISTRY", REGISTRY), ("LOG_LEVEL", given)]).unwrap();
        assert_eq!(c.log_level, want, "{given:?}");
    }
}

#[test]
fn base_url_spellings() {
    for (given, want) in [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://api.groq.com/", "https://api.groq.com"),
        ("https://api.groq.com/openai/v1", "https://api.groq.com"),
        ("https://proxy.example/groq", "https://proxy.example/groq"),
    ] {
        let c = load(&[("MODEL_REGISTRY", REGISTRY), ("GROQ_BASE_URL", given)]).unwrap();
        assert_eq!(c.routing.groq_base_url, want, "{given}");
    }
}

/// Each bad configuration is reported, never panics, and names the binding and the problem.
#[test]
fn bad_config_table() {
    let cases: Vec<(Pairs, &str, &str)> = vec![
        (vec![], "MODEL_REGISTRY", "not set"),
        (
            vec![("MODEL_REGISTRY", "{fast: [a]}")],
            "MODEL_REGISTRY",
            "not valid JSON",
        ),
        (
            vec![("MODEL_REGISTRY", "")],
            "MODEL_REGISTRY",
            "not valid JSON",
        ),
        (
            vec![("MODEL_REGISTRY", r#"["a"]"#)],
            "MODEL_REGISTRY",
            "must be an object",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fast":[]}"#)],
            "MODEL_REGISTRY",
            "`MODEL_REGISTRY.fast` is an empty list",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fast":"a"}"#)],
            "MODEL_REGISTRY",
            "must be a list of model ids",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fast":["a",7]}"#)],
            "MODEL_REGISTRY",
            "`MODEL_REGISTRY.fast[1]` must be a model id string, got a number",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fast":[""]}"#)],
            "MODEL_REGISTRY",
            "`MODEL_REGISTRY.fast[0]`: a model id is empty",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fast":["a b"]}"#)],
            "MODEL_REGISTRY",
            "not a valid model id",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fast":["a","a"]}"#)],
            "MODEL_REGISTRY",
            "duplicate entry `a`",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"Fast":["a"]}"#)],
            "MODEL_REGISTRY",
            "task name `Fast`",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"code review":["a"]}"#)],
            "MODEL_REGISTRY",
            "task name `code review`",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"fallback":["a"]}"#)],
            "MODEL_REGISTRY",
            "defines no task",
        ),
        (
            vec![("MODEL_REGISTRY", r#"{"a-b":["x"],"a_b":["y"]}"#)],
            "MODEL_REGISTRY",
            "both map to `DEFAULT_A_B_MODEL`",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("FORCE_MODEL", "two words")],
            "FORCE_MODEL",
            "not a valid model id",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("DEFAULT_FAST_MODEL", "x\ny")],
            "DEFAULT_FAST_MODEL",
            "not a valid model id",
        ),
        (
            vec![
                ("MODEL_REGISTRY", REGISTRY),
                ("GROQ_BASE_URL", "api.groq.com"),
            ],
            "GROQ_BASE_URL",
            "must start with https://",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("GROQ_BASE_URL", "https://")],
            "GROQ_BASE_URL",
            "no host",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("ATTEMPT_TIMEOUT_MS", "soon")],
            "ATTEMPT_TIMEOUT_MS",
            "whole number",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("ATTEMPT_TIMEOUT_MS", "0")],
            "ATTEMPT_TIMEOUT_MS",
            "from 1 to",
        ),
        (
            vec![
                ("MODEL_REGISTRY", REGISTRY),
                ("ALLOW_UNAUTHENTICATED", "yes"),
            ],
            "ALLOW_UNAUTHENTICATED",
            "\"true\" or \"false\"",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("ROUTER_API_KEYS", "web:")],
            "ROUTER_API_KEYS",
            "no key",
        ),
        (
            vec![("MODEL_REGISTRY", REGISTRY), ("LOG_LEVEL", "debug")],
            "LOG_LEVEL",
            "\"info\", \"warn\" or \"error\"",
        ),
    ];
    for (pairs, binding, needle) in cases {
        let errors = load(&pairs).expect_err(&format!("{pairs:?} should be refused"));
        assert!(
            errors.iter().any(|e| e.binding == binding
                && e.code == "config_invalid"
                && e.message.contains(needle)),
            "{pairs:?}: want {binding} containing {needle:?}, got {errors:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let errors = load(&[
        ("MODEL_REGISTRY", "nope"),
        ("ATTEMPT_TIMEOUT_MS", "-1"),
        ("GROQ_BASE_URL", "ftp://x"),
    ])
    .unwrap_err();
    let bindings: Vec<&str> = errors.iter().map(|e| e.binding.as_str()).collect();
    assert_eq!(
        bindings,
        vec![
            "MODEL_REGISTRY",
            "GROQ_BASE_URL",
            "ATTEMPT_TIMEOUT_MS",
            "GROQ_API_KEY"
        ]
    );
    assert_eq!(
        errors[0].code, "config_invalid",
        "the config problem answers routed requests"
    );
    assert_eq!(errors[3].code, "provider_key_missing");
}

#[test]
fn an_object_where_text_belongs_is_refused() {
    let mut b = bindings(&[("MODEL_REGISTRY", REGISTRY)]);
    b.insert(
        "FORCE_MODEL",
        BindingValue::Json(json!({"model": "x"}).to_string()),
    );
    let errors = Config::load(&b).unwrap_err();
    assert_eq!(errors[0].binding, "FORCE_MODEL");
    assert!(errors[0].message.contains("must be a string"));
}
