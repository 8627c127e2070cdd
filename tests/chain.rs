//! Native table tests of configuration parsing and chain building: every override and every
//! way `MODEL_REGISTRY` and the other bindings can be wrong. Run: `cargo test --test chain`.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::fixtures::bindings_of;
use support::scripted::{bindings, load};
use task_router::bindings::BindingValue;
use task_router::http::config::Config;
use task_router::routing::chain::{ChainSource, ModelChain};
use task_router::routing::log::Level;

const REGISTRY: &str =
    r#"{"fast":["a","b"],"reasoning":["c","a"],"code-review":["d"],"fallback":["b","e"]}"#;

/// `TASK | BINDING=VALUE, … | MODEL/SOURCE …` (`none` for no chain), with `REGISTRY` unless a
/// `MODEL_REGISTRY` is given.
const CHAINS: &[&str] = &[
    // The task's list, then the fallback list, duplicates dropped.
    "fast | | a/registry b/registry e/fallback",
    "reasoning | | c/registry a/registry b/fallback e/fallback",
    // `DEFAULT_<TASK>_MODEL` goes first; one already in the list moves to the front once.
    "fast | DEFAULT_FAST_MODEL=z | z/task_default a/registry b/registry e/fallback",
    "fast | DEFAULT_FAST_MODEL=b | b/task_default a/registry e/fallback",
    // A custom task with a dash maps to `DEFAULT_CODE_REVIEW_MODEL`.
    "code-review | DEFAULT_CODE_REVIEW_MODEL=y | y/task_default d/registry b/fallback e/fallback",
    // Another task's default does not apply; a blank one is unset.
    "fast | DEFAULT_REASONING_MODEL=y | a/registry b/registry e/fallback",
    "fast | DEFAULT_FAST_MODEL=   | a/registry b/registry e/fallback",
    // `FORCE_MODEL` pins every task, custom ones too, to one model, no fallback; empty, it is off.
    "fast | FORCE_MODEL=x, DEFAULT_FAST_MODEL=z | x/forced",
    "code-review | FORCE_MODEL=x | x/forced",
    "reasoning | FORCE_MODEL= | c/registry a/registry b/fallback e/fallback",
    // Unknown tasks, `fallback` (no task), and no invented task for `FORCE_MODEL`.
    "summarization | | none",
    "fallback | | none",
    "nope | FORCE_MODEL=x | none",
    // No fallback list.
    r#"fast | MODEL_REGISTRY={"fast":["a"]} | a/registry"#,
];

/// `BINDING=VALUE, …` as binding pairs, with `REGISTRY` unless a `MODEL_REGISTRY` is given.
fn pairs(text: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut pairs = bindings_of(text);
    if !pairs.iter().any(|(name, _)| *name == "MODEL_REGISTRY") {
        pairs.insert(0, ("MODEL_REGISTRY", REGISTRY));
    }
    pairs
}

#[test]
fn chain_building_table() {
    for case in CHAINS {
        let [task, given, want] = [0, 1, 2].map(|i| case.split('|').nth(i).unwrap());
        let (task, want) = (task.trim(), want.trim());
        let config = load(&pairs(given.trim_start())).expect("valid config");
        let chain = ModelChain::for_task(&config.routing, task).map(|chain| {
            let entries = chain.entries.into_iter();
            let entries = entries.map(|e| format!("{}/{}", e.model, source(e.source)));
            entries.collect::<Vec<_>>().join(" ")
        });
        assert_eq!(chain.as_deref().unwrap_or("none"), want, "{case}");
    }
}

fn source(source: ChainSource) -> &'static str {
    match source {
        ChainSource::Registry => "registry",
        ChainSource::Fallback => "fallback",
        ChainSource::TaskDefault => "task_default",
        ChainSource::Forced => "forced",
    }
}

#[test]
fn registry_as_a_wrangler_table_and_as_a_json_string_agree() {
    let mut as_table: BTreeMap<&str, BindingValue> = BTreeMap::new();
    as_table.insert("MODEL_REGISTRY", BindingValue::Json(REGISTRY.to_string()));
    let from_table = Config::load(&as_table).unwrap();
    let from_text = Config::load(&bindings(&[("MODEL_REGISTRY", REGISTRY)])).unwrap();
    assert_eq!(from_table.routing.registry, from_text.routing.registry);
    let expected = vec!["code-review", "fast", "reasoning"];
    assert_eq!(from_table.routing.task_names(), expected);
    // A JSON string inside a JSON value (what some dashboards store) works too.
    as_table.insert(
        "MODEL_REGISTRY",
        BindingValue::Json(json!(REGISTRY).to_string()),
    );
    let expected = from_text.routing.registry;
    assert_eq!(Config::load(&as_table).unwrap().routing.registry, expected);
}

#[test]
fn defaults_when_optional_bindings_are_absent() {
    let c = load(&[("MODEL_REGISTRY", REGISTRY)]).unwrap();
    assert_eq!(c.routing.groq_base_url, "https://api.groq.com");
    assert_eq!(c.routing.attempt_timeout_ms, 15_000);
    assert_eq!(c.routing.force_model, None);
    assert_eq!(c.routing.groq_api_key, None);
    assert!(!c.client_auth.is_configured());
    // Every request accounted for by default.
    assert_eq!(c.log_level, Level::Info);
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

/// `BINDING=VALUE → BINDING: MESSAGE`: a bad configuration (beside `REGISTRY` unless it is a
/// `MODEL_REGISTRY`) and the problem it is reported as.
const BAD_CONFIGS: &[&str] = &[
    "→ MODEL_REGISTRY: not set",
    "MODEL_REGISTRY={fast: [a]} → MODEL_REGISTRY: not valid JSON",
    "MODEL_REGISTRY= → MODEL_REGISTRY: not valid JSON",
    r#"MODEL_REGISTRY=["a"] → MODEL_REGISTRY: must be an object"#,
    r#"MODEL_REGISTRY={"fast":[]} → MODEL_REGISTRY: `MODEL_REGISTRY.fast` is an empty list"#,
    r#"MODEL_REGISTRY={"fast":"a"} → MODEL_REGISTRY: must be a list of model ids"#,
    r#"MODEL_REGISTRY={"fast":["a",7]} → MODEL_REGISTRY: `MODEL_REGISTRY.fast[1]` must be a model id string, got a number"#,
    r#"MODEL_REGISTRY={"fast":[""]} → MODEL_REGISTRY: `MODEL_REGISTRY.fast[0]`: a model id is empty"#,
    r#"MODEL_REGISTRY={"fast":["a b"]} → MODEL_REGISTRY: not a valid model id"#,
    r#"MODEL_REGISTRY={"fast":["a","a"]} → MODEL_REGISTRY: duplicate entry `a`"#,
    r#"MODEL_REGISTRY={"Fast":["a"]} → MODEL_REGISTRY: task name `Fast`"#,
    r#"MODEL_REGISTRY={"code review":["a"]} → MODEL_REGISTRY: task name `code review`"#,
    r#"MODEL_REGISTRY={"fallback":["a"]} → MODEL_REGISTRY: defines no task"#,
    r#"MODEL_REGISTRY={"a-b":["x"],"a_b":["y"]} → MODEL_REGISTRY: both map to `DEFAULT_A_B_MODEL`"#,
    "FORCE_MODEL=two words → FORCE_MODEL: not a valid model id",
    "DEFAULT_FAST_MODEL=x\ny → DEFAULT_FAST_MODEL: not a valid model id",
    "GROQ_BASE_URL=api.groq.com → GROQ_BASE_URL: must start with https://",
    "GROQ_BASE_URL=https:// → GROQ_BASE_URL: no host",
    "ATTEMPT_TIMEOUT_MS=soon → ATTEMPT_TIMEOUT_MS: whole number",
    "ATTEMPT_TIMEOUT_MS=0 → ATTEMPT_TIMEOUT_MS: from 1 to",
    r#"ALLOW_UNAUTHENTICATED=yes → ALLOW_UNAUTHENTICATED: "true" or "false""#,
    "ROUTER_API_KEYS=web: → ROUTER_API_KEYS: no key",
    r#"LOG_LEVEL=debug → LOG_LEVEL: "info", "warn" or "error""#,
];

/// Each bad configuration is reported, never panics, and names the binding and the problem.
#[test]
fn bad_config_table() {
    for case in BAD_CONFIGS {
        let (given, want) = case
            .split_once("→ ")
            .expect("BINDING=VALUE → BINDING: MESSAGE");
        let (binding, needle) = want.split_once(": ").expect("BINDING: MESSAGE");
        let pairs = match given.trim() {
            "" => Vec::new(),
            given => pairs(given),
        };
        let errors = load(&pairs).expect_err(case);
        let found = errors.iter().any(|e| {
            e.binding == binding && e.code == "config_invalid" && e.message.contains(needle)
        });
        assert!(found, "{case}: got {errors:?}");
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
    // The config problem answers routed requests.
    assert_eq!(errors[0].code, "config_invalid");
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
