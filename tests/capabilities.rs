//! Native tests of capability-aware chains (issue 24): what a request needs, read from its body;
//! which models can take it (`MODEL_CAPABILITIES`, and what Groq's refusals teach); models that
//! lack a hard need skipped without a call, soft hints dropped for the models that do not take
//! them, `400 no_capable_model` at once when no model can serve it, and `/v1/routes` and
//! `/healthz` saying what each model and chain can do. Run: `cargo test --test capabilities`.

mod support;

use std::cell::RefCell;

use serde_json::{json, Value};
use support::scripted::*;
use task_router::http::limit::Unlimited;
use task_router::http::request::ChatRequest;
use task_router::http::HttpRequest;
use task_router::routing::capabilities::{Capabilities, Capability, Fit, Needs, ReasoningParam};
use task_router::routing::health::HealthBook;

const REGISTRY: &str =
    r#"{"structured":["rl","plain","schema"],"tools":["notools1","notools2"],"fallback":["last"]}"#;

/// `rl` and `schema` take structured outputs and tools, `plain` neither; `last` is unknown.
const CAPABILITIES: &str = r#"{
    "rl": {"tools": true, "json_schema": true, "json_object": true, "images": false,
           "reasoning_params": ["reasoning_effort", "include_reasoning"],
           "context_window": 131072, "max_completion_tokens": 65536},
    "plain": {"tools": false, "json_schema": false, "json_object": true, "images": false},
    "schema": {"tools": true, "json_schema": true, "json_object": true, "images": false,
               "reasoning_params": ["reasoning_effort"], "reasoning_efforts": ["low", "medium", "high"],
               "context_window": 8192, "max_completion_tokens": 1024},
    "notools1": {"tools": false},
    "notools2": {"tools": false}
}"#;

fn needs(body: Value) -> Needs {
    let body = body.to_string();
    ChatRequest::parse(body.as_bytes(), true)
        .expect("a valid body")
        .needs
}

fn with(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[test]
fn what_a_request_needs_is_read_from_its_body() {
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {}}});
    let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}});
    let image = json!([{"type": "text", "text": "what is this?"},
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]);
    let table: Vec<(Value, Needs)> = vec![
        (with(json!({})), Needs { ..Needs::default() }),
        (
            with(json!({"tools": [tool]})),
            Needs {
                tools: true,
                ..Needs::default()
            },
        ),
        // No tools, an empty list, or a choice alone need none.
        (with(json!({"tools": []})), Needs { ..Needs::default() }),
        (
            with(json!({"tools": null, "tool_choice": "none"})),
            Needs { ..Needs::default() },
        ),
        (
            with(json!({"response_format": schema})),
            Needs {
                json_schema: true,
                ..Needs::default()
            },
        ),
        (
            with(json!({"response_format": {"type": "json_object"}})),
            Needs {
                json_object: true,
                ..Needs::default()
            },
        ),
        (
            with(json!({"response_format": {"type": "text"}})),
            Needs { ..Needs::default() },
        ),
        (
            json!({"messages": [{"role": "user", "content": image}]}),
            Needs {
                images: true,
                prompt_tokens: 34,
                ..Needs::default()
            },
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
            Needs {
                prompt_tokens: 13,
                ..Needs::default()
            },
        ),
        (
            with(
                json!({"reasoning_effort": "high", "include_reasoning": false, "reasoning_format": null}),
            ),
            Needs {
                reasoning: vec![ReasoningParam::Effort, ReasoningParam::Include],
                reasoning_effort: Some("high".into()),
                ..Needs::default()
            },
        ),
        (
            with(json!({"max_tokens": 100, "max_completion_tokens": 300})),
            Needs {
                completion_tokens: Some(300),
                ..Needs::default()
            },
        ),
    ];
    for (body, want) in table {
        // A token per 4 bytes of `messages`, rounded up.
        let prompt_tokens = (body["messages"].to_string().len() as u64).div_ceil(4);
        let want = Needs {
            prompt_tokens,
            ..want
        };
        assert_eq!(needs(body.clone()), want, "{body}");
    }
    // A task's cap given to a request that asked for no limit is its completion limit.
    let body = with(json!({})).to_string();
    let mut capped = ChatRequest::parse(body.as_bytes(), true).unwrap();
    capped.apply_token_cap(512, "MAX_X_TOKENS").unwrap();
    assert_eq!(capped.needs.completion_tokens, Some(512));
}

#[test]
fn a_model_lacking_a_hard_need_cannot_serve_and_soft_hints_are_dropped() {
    let known: Capabilities = serde_json::from_str(
        r#"{"tools": false, "json_schema": false, "json_object": true, "images": false,
            "reasoning_params": ["reasoning_effort"], "reasoning_efforts": ["low"],
            "context_window": 1000, "max_completion_tokens": 100}"#,
    )
    .unwrap();
    let serves = |dropped: Vec<ReasoningParam>| Fit::Serves { dropped };
    let need = |n: Needs| known.fit(&n);
    assert_eq!(need(Needs::default()), serves(vec![]));
    assert_eq!(
        need(Needs {
            tools: true,
            ..Needs::default()
        }),
        Fit::Lacks(Capability::Tools)
    );
    assert_eq!(
        need(Needs {
            json_schema: true,
            ..Needs::default()
        }),
        Fit::Lacks(Capability::JsonSchema)
    );
    assert_eq!(
        need(Needs {
            json_object: true,
            ..Needs::default()
        }),
        serves(vec![])
    );
    assert_eq!(
        need(Needs {
            images: true,
            ..Needs::default()
        }),
        Fit::Lacks(Capability::Images)
    );
    let completion = |n| Needs {
        prompt_tokens: 900,
        completion_tokens: Some(n),
        ..Needs::default()
    };
    assert_eq!(need(completion(100)), serves(vec![]), "900 + 100 fits 1000");
    assert_eq!(
        need(completion(101)),
        Fit::Lacks(Capability::MaxCompletionTokens)
    );
    let long = Needs {
        prompt_tokens: 1001,
        ..Needs::default()
    };
    assert_eq!(need(long), Fit::Lacks(Capability::ContextWindow));
    // Reasoning parameters it does not take, or a value it does not, are dropped for it alone.
    let reasoning = |effort: &str| Needs {
        reasoning: vec![ReasoningParam::Effort, ReasoningParam::Format],
        reasoning_effort: Some(effort.into()),
        ..Needs::default()
    };
    assert_eq!(need(reasoning("low")), serves(vec![ReasoningParam::Format]));
    assert_eq!(
        need(reasoning("high")),
        serves(vec![ReasoningParam::Effort, ReasoningParam::Format])
    );
    // Unknown is able: a model no entry describes serves anything, as it is sent.
    let everything = Needs {
        tools: true,
        json_schema: true,
        images: true,
        prompt_tokens: 1 << 30,
        ..reasoning("high")
    };
    assert_eq!(Capabilities::default().fit(&everything), serves(vec![]));
}

/// The harness for requests through the real API: one health book across requests.
struct Router {
    provider: ScriptedProvider,
    health: RefCell<HealthBook>,
}

impl Router {
    fn new(provider: ScriptedProvider) -> Router {
        Router {
            provider,
            health: RefCell::default(),
        }
    }

    fn ask(&self, task: &str, extra: Value) -> (Exchange, Vec<String>) {
        let pairs = [
            ("MODEL_REGISTRY", REGISTRY),
            ("MODEL_CAPABILITIES", CAPABILITIES),
            ("GROQ_API_KEY", "gsk_capabilities"),
            ("ROUTER_API_KEYS", "k"),
            EVERY_LINE,
        ];
        let before = self.provider.calls.borrow().len();
        let body = with(extra).to_string();
        let path = format!("/v1/tasks/{task}");
        let req = HttpRequest {
            authorization: Some("Bearer k"),
            ..HttpRequest::new("POST", &path, body.as_bytes())
        };
        let ex = exchange(&load(&pairs), &self.provider, &Unlimited, &self.health, req);
        let calls = self.provider.models_called()[before..].to_vec();
        (ex, calls)
    }
}

fn schema() -> Value {
    json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}})
}

/// Groq's refusal of structured outputs by a model that lacks them (a 400, no code).
fn refuses_json_schema() -> Script {
    groq_error(
        400,
        "invalid_request_error",
        None,
        "'response_format.type' : value is not one of the allowed values ['text','json_object']",
    )
}

#[test]
fn a_json_schema_request_falls_back_past_a_model_without_structured_outputs_uncalled() {
    // [rate-limited capable, incapable, capable]: the third answers, the second is never called.
    let router = Router::new(
        ScriptedProvider::new()
            .on("rl", rate_limited("9"), 0)
            .on("plain", refuses_json_schema(), 0)
            .on("schema", completion("schema"), 0),
    );
    let (ex, calls) = router.ask("structured", schema());
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    assert_eq!(calls, vec!["rl", "schema"]);
    assert_eq!(
        ex.response.header("x-attempts"),
        Some("rl=rate_limited(429), plain=skipped(lacks_json_schema), schema=ok(200)")
    );
    let skipped = &ex.json()["attempts"][1];
    assert_eq!(
        (skipped["outcome"].clone(), skipped["reason"].clone()),
        (json!("skipped"), json!("lacks_json_schema"))
    );
    let line = ex
        .log
        .iter()
        .find(|(_, l)| l["event"] == "attempt" && l["model"] == "plain");
    let line = &line.expect("an attempt line for the skipped model").1;
    assert_eq!(line["reason"], "lacks_json_schema");
    // Without structured outputs asked for, the same model serves.
    let router = Router::new(ScriptedProvider::new().on("rl", rate_limited("9"), 0).on(
        "plain",
        completion("plain"),
        0,
    ));
    let (ex, calls) = router.ask("structured", json!({}));
    assert_eq!(ex.response.status, 200);
    assert_eq!(calls, vec!["rl", "plain"]);
}

#[test]
fn no_capable_model_is_a_400_at_once_naming_the_capability_and_the_task() {
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {}}});
    let router = Router::new(ScriptedProvider::new().on("last", completion("last"), 0));
    // `last` (the fallback) is unknown, so able: it answers.
    let (ex, calls) = router.ask("tools", json!({"tools": [tool.clone()]}));
    assert_eq!((ex.response.status, calls), (200, vec!["last".to_string()]));

    let pairs = [
        ("MODEL_REGISTRY", r#"{"tools":["notools1","notools2"]}"#),
        ("MODEL_CAPABILITIES", CAPABILITIES),
        ("GROQ_API_KEY", "gsk_capabilities"),
        ("ROUTER_API_KEYS", "k"),
    ];
    let provider = ScriptedProvider::new();
    let body = with(json!({"tools": [tool]})).to_string();
    let req = HttpRequest {
        authorization: Some("Bearer k"),
        ..HttpRequest::new("POST", "/v1/tasks/tools", body.as_bytes())
    };
    let ex = exchange(
        &load(&pairs),
        &provider,
        &Unlimited,
        &Default::default(),
        req,
    );
    assert_eq!(ex.response.status, 400, "{}", ex.text);
    assert!(provider.models_called().is_empty(), "no call to Groq");
    let error = &ex.json()["error"];
    assert_eq!(error["code"], "no_capable_model");
    assert_eq!(error["type"], "invalid_request_error");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`tools`") && message.contains("tool calls"),
        "{message}"
    );
    assert_eq!(
        error["attempts"],
        json!([
            {"model": "notools1", "outcome": "skipped", "status": null, "reason": "lacks_tools", "duration_ms": 0},
            {"model": "notools2", "outcome": "skipped", "status": null, "reason": "lacks_tools", "duration_ms": 0},
        ])
    );
}

#[test]
fn a_refusal_naming_what_a_model_lacks_moves_on_and_is_remembered() {
    // `last` has no entry: Groq's refusal of structured outputs teaches it.
    let pairs = [
        ("MODEL_REGISTRY", r#"{"t":["last","after"]}"#),
        ("GROQ_API_KEY", "gsk_capabilities"),
        ("ROUTER_API_KEYS", "k"),
    ];
    let provider = ScriptedProvider::new()
        .on("last", refuses_json_schema(), 0)
        .on("after", completion("after"), 0);
    let health = RefCell::default();
    let ask = |extra: Value| {
        let body = with(extra).to_string();
        let req = HttpRequest {
            authorization: Some("Bearer k"),
            ..HttpRequest::new("POST", "/v1/tasks/t", body.as_bytes())
        };
        let before = provider.calls.borrow().len();
        let ex = exchange(&load(&pairs), &provider, &Unlimited, &health, req);
        (ex, provider.models_called()[before..].to_vec())
    };
    let (ex, calls) = ask(schema());
    assert_eq!(
        (ex.response.status, calls),
        (200, vec!["last".to_string(), "after".into()])
    );
    assert_eq!(
        ex.response.header("x-attempts"),
        Some("last=cannot_serve(400), after=ok(200)")
    );
    // Learned: the next structured request skips it without a call; a plain one still calls it.
    let (ex, calls) = ask(schema());
    assert_eq!(calls, vec!["after"]);
    assert_eq!(
        ex.response.header("x-attempts"),
        Some("last=skipped(lacks_json_schema), after=ok(200)")
    );
    let (_, calls) = ask(json!({}));
    assert_eq!(calls, vec!["last"]);

    // A 400 every model would give (a schema Groq does not take) still stops the chain.
    let provider = ScriptedProvider::new()
        .on("last", groq_error(400, "invalid_request_error", None, "invalid schema for response format: response_format/json_schema/x: minItems is not supported"), 0)
        .on("after", completion("after"), 0);
    let req_body = with(schema()).to_string();
    let req = HttpRequest {
        authorization: Some("Bearer k"),
        ..HttpRequest::new("POST", "/v1/tasks/t", req_body.as_bytes())
    };
    let ex = exchange(
        &load(&pairs),
        &provider,
        &Unlimited,
        &Default::default(),
        req,
    );
    assert_eq!(ex.response.status, 400);
    assert_eq!(provider.models_called(), vec!["last"]);
}

#[test]
fn a_reasoning_parameter_a_model_does_not_take_is_dropped_for_it_alone() {
    let router = Router::new(ScriptedProvider::new().on("rl", reply(500, "{}"), 0).on(
        "plain",
        completion("plain"),
        0,
    ));
    let (ex, _) = router.ask(
        "structured",
        json!({"reasoning_effort": "low", "reasoning_format": "parsed", "include_reasoning": true}),
    );
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    let sent: Vec<Value> = router
        .provider
        .calls
        .borrow()
        .iter()
        .map(|c| c.body.clone())
        .collect();
    // `rl` takes effort and include, not format; `plain` says nothing of reasoning: all of it.
    assert_eq!(sent[0]["reasoning_format"], Value::Null);
    assert_eq!(
        (
            sent[0]["reasoning_effort"].clone(),
            sent[0]["include_reasoning"].clone()
        ),
        (json!("low"), json!(true))
    );
    assert_eq!(sent[1]["reasoning_format"], "parsed");
    let attempts = &ex.json()["attempts"];
    assert_eq!(attempts[0]["dropped"], json!(["reasoning_format"]));
    assert_eq!(attempts[1].get("dropped"), None);
}

#[test]
fn routes_and_healthz_say_what_each_model_and_chain_can_do() {
    let pairs = [
        ("MODEL_REGISTRY", REGISTRY),
        ("MODEL_CAPABILITIES", CAPABILITIES),
        ("GROQ_API_KEY", "gsk_capabilities"),
        ("ROUTER_API_KEYS", "k"),
    ];
    let provider = ScriptedProvider::new();
    let routes = HttpRequest {
        authorization: Some("Bearer k"),
        ..HttpRequest::new("GET", "/v1/routes", b"")
    };
    let routes = exchange(
        &load(&pairs),
        &provider,
        &Unlimited,
        &Default::default(),
        routes,
    )
    .json();
    let chain = &routes["data"][0]["chain"];
    assert_eq!(routes["data"][0]["task"], "structured");
    assert_eq!(chain[0]["model"], "rl");
    assert_eq!(chain[0]["capabilities"]["context_window"], 131072);
    assert_eq!(chain[1]["capabilities"]["json_schema"], false);
    assert_eq!(chain[3]["model"], "last");
    assert_eq!(chain[3]["capabilities"], Value::Null, "unknown");

    let health = HttpRequest::new("GET", "/healthz", b"");
    let health = exchange(
        &load(&pairs),
        &provider,
        &Unlimited,
        &Default::default(),
        health,
    )
    .json();
    let said: Vec<(String, String)> = health["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["binding"] == "MODEL_CAPABILITIES")
        .map(|w| {
            (
                w["code"].as_str().unwrap().into(),
                w["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        said.iter()
            .any(|(code, m)| code == "capabilities_unknown" && m.contains("`last`")),
        "{said:?}"
    );
    // `tools` reaches `last`, whose capabilities are unknown: no fact about it. A chain of
    // models all known to lack images is.
    assert!(
        !said
            .iter()
            .any(|(_, m)| m.contains("`tools`") && m.contains("tool calls")),
        "{said:?}"
    );
    assert!(
        !said
            .iter()
            .any(|(_, m)| m.contains("`structured`") && m.contains("image input")),
        "`last` may take images: {said:?}"
    );
    let only_known = [
        ("MODEL_REGISTRY", r#"{"tools":["notools1","notools2"]}"#),
        ("MODEL_CAPABILITIES", CAPABILITIES),
        ("GROQ_API_KEY", "gsk_capabilities"),
    ];
    let health = HttpRequest::new("GET", "/healthz", b"");
    let health = exchange(
        &load(&only_known),
        &provider,
        &Unlimited,
        &Default::default(),
        health,
    )
    .json();
    assert_eq!(health["status"], "ok");
    let messages: Vec<&str> = health["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"no model of `tools` takes tool calls (`tools`): such requests are refused with 400 `no_capable_model`"),
        "{messages:?}"
    );
}

#[test]
fn model_capabilities_are_validated_naming_the_binding_and_the_entry() {
    for (value, said) in [
        (r#"{"m": {"tools": "yes"}}"#, "`MODEL_CAPABILITIES.m`"),
        (r#"{"m": {"vision": true}}"#, "`MODEL_CAPABILITIES.m`"),
        (
            r#"{"m": {"reasoning_params": ["think_harder"]}}"#,
            "`think_harder`",
        ),
        (r#"{"m": {"context_window": 0}}"#, "at least 1"),
        (r#"{"m": {}, "m": {}}"#, "twice"),
        (r#"["m"]"#, "must be an object"),
        (r#"{"a b": {}}"#, "not a valid model id"),
    ] {
        let errors = load(&[
            ("MODEL_REGISTRY", r#"{"fast":["m"]}"#),
            ("MODEL_CAPABILITIES", value),
        ])
        .expect_err(value);
        let error = errors
            .iter()
            .find(|e| e.binding == "MODEL_CAPABILITIES")
            .expect(value);
        assert_eq!(error.code, "config_invalid");
        assert!(error.message.contains(said), "{value}: {}", error.message);
    }
}
