//! Native tests of the response cache (issue 26), with the cache in memory on the scripted
//! provider's fake clock (its "digest" is the key's text, so the key rules can be read): `CACHE`
//! read and refused like the registry; which fields make the key and which do not; entries
//! private to each caller unless shared; what is stored (whole successful answers, streamed or
//! not) and what never is (errors, mocks, broken streams); TTLs and the caller's
//! `Cache-Control`; a registry change never serving a model the chain dropped; hits in answers,
//! log lines and usage points, charging no budget. Run: `cargo test --test cache`.

mod support;

use serde_json::{json, Value};
use support::scripted::*;
use task_router::groq::provider::TransportError;
use task_router::http::cache::key_text;
use task_router::http::ledger::{LimitKind, Limits};
use task_router::http::request::ChatRequest;
use task_router::http::HttpRequest;

const REGISTRY: &str = r#"{"summarization":["m1"],"faq":["m1"],"fast":["m1"],"fallback":["m2"]}"#;
const PRICES: &str = r#"{"m1":{"input":1,"output":2},"m2":{"input":2,"output":4}}"#;
const CACHE: &str = r#"{"summarization":3600,"faq":{"ttl_s":86400,"shared":true}}"#;
const NOON: u64 = 1_796_731_200_000;
const WEB: &str = "Bearer client-secret-1";
const BATCH: &str = "Bearer client-secret-2";
const BODY: &str =
    r#"{"messages":[{"role":"user","content":"Summarize: the sky is blue."}],"temperature":0}"#;

fn pairs(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("MODEL_REGISTRY", REGISTRY.to_string()),
        ("MODEL_PRICES", PRICES.to_string()),
        ("GROQ_API_KEY", "gsk_provider_secret".to_string()),
        (
            "ROUTER_API_KEYS",
            "web:client-secret-1,batch:client-secret-2".to_string(),
        ),
        ("ALLOW_MOCK", "true".to_string()),
        ("BUDGET", "{}".to_string()),
        ("CACHE", CACHE.to_string()),
        ("LOG_LEVEL", "info".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    pairs
}

fn config(pairs: &[(&'static str, String)]) -> task_router::http::config::LoadedConfig {
    let borrowed: Vec<(&'static str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    load(&borrowed)
}

/// A provider, its cache and ledgers, on one clock.
struct World {
    provider: ScriptedProvider,
    cache: MemoryCache,
    ledgers: MemoryLedgers,
    config: Vec<(&'static str, String)>,
}

impl World {
    fn new(provider: ScriptedProvider) -> World {
        provider.clock.set(NOON);
        World {
            cache: MemoryCache::new(&provider.clock),
            ledgers: MemoryLedgers::new(&provider.clock),
            provider,
            config: pairs(&[]),
        }
    }

    fn send(&self, req: HttpRequest<'_>) -> Exchange {
        let config = config(&self.config);
        let stores = (&self.ledgers, &self.cache);
        exchange_stored(&config, &self.provider, stores, req, SinkBuffer::default())
    }

    fn post(&self, path: &str, key: &str, body: &str) -> Exchange {
        self.send(HttpRequest {
            authorization: Some(key),
            ..HttpRequest::new("POST", path, body.as_bytes())
        })
    }

    fn with_header(&self, path: &str, cache_control: &str, body: &str) -> Exchange {
        self.send(HttpRequest {
            authorization: Some(WEB),
            cache_control: Some(cache_control),
            ..HttpRequest::new("POST", path, body.as_bytes())
        })
    }

    fn calls(&self) -> usize {
        self.provider.calls.borrow().len()
    }
}

fn answering() -> ScriptedProvider {
    ScriptedProvider::new()
        .on("m1", completion("m1"), 5)
        .on("m2", completion("m2"), 5)
}

fn status(ex: &Exchange) -> Option<&str> {
    ex.response.header("x-cache-status")
}

fn request_line(ex: &Exchange) -> &Value {
    let mut lines = ex.log.iter().filter(|(_, l)| l["event"] == "request");
    &lines.next_back().expect("a request line").1
}

#[test]
fn cache_is_read_like_the_registry_and_refused_with_what_is_wrong() {
    let loaded = config(&pairs(&[])).expect("valid");
    let summarization = loaded.cache.policy("summarization").unwrap();
    assert_eq!((summarization.ttl_s, summarization.shared), (3600, false));
    let faq = loaded.cache.policy("faq").unwrap();
    assert_eq!((faq.ttl_s, faq.shared), (86400, true));
    assert!(loaded.cache.policy("fast").is_none());
    let bad = [
        (r#"{"nope":60}"#, "`CACHE.nope`: no task of that name"),
        (r#"{"fast":0}"#, "the TTL must be 1 to 31536000 seconds"),
        (
            r#"{"fast":31536001}"#,
            "the TTL must be 1 to 31536000 seconds",
        ),
        (
            r#"{"fast":1.5}"#,
            "must be seconds (a whole number) or { ttl_s, shared }",
        ),
        (r#"{"fast":{"ttl":60}}"#, "unknown field `ttl`"),
        (
            r#"{"fast":{"ttl_s":60,"shared":"yes"}}"#,
            "`CACHE.fast` must be",
        ),
        (r#"["fast"]"#, "`CACHE` must be an object"),
    ];
    for (cache, says) in bad {
        let problems = config(&pairs(&[("CACHE", cache)])).expect_err(cache);
        let problem = problems.iter().find(|p| p.binding == "CACHE").expect(cache);
        assert!(
            problem.message.contains(says),
            "{cache}: {}",
            problem.message
        );
    }
}

#[test]
fn the_key_is_the_request_groq_receives_minus_what_does_not_change_the_answer() {
    let key_of = |task: &str, owner: Option<&str>, text: &str| {
        let request = ChatRequest::parse(text.as_bytes(), false).expect("valid");
        String::from_utf8(key_text(task, owner, &request.body)).unwrap()
    };
    let key = |task: &str, owner: Option<&str>, body: Value| key_of(task, owner, &body.to_string());
    let base = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0});
    let same = key("t", Some("client:web"), base.clone());
    // Field order, spacing, `stream`, `stream_options` and `user` leave it as it is.
    let spaced =
        r#"{ "temperature" : 0 , "messages" : [ { "content" : "hi", "role" : "user" } ] }"#;
    assert_eq!(key_of("t", Some("client:web"), spaced), same);
    let unchanged = [
        json!({"temperature": 0, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "stream": true,
               "stream_options": {"include_usage": true}, "user": "end-user-7"}),
    ];
    for body in unchanged {
        assert_eq!(key("t", Some("client:web"), body.clone()), same, "{body}");
    }
    // Everything else Groq reads changes it, and so do the task and the owner.
    let changed = [
        json!({"messages": [{"role": "user", "content": "hi!"}], "temperature": 0}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "seed": 1}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 9}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0,
               "response_format": {"type": "json_object"}}),
    ];
    for body in changed {
        assert_ne!(key("t", Some("client:web"), body.clone()), same, "{body}");
    }
    assert_ne!(key("u", Some("client:web"), base.clone()), same);
    assert_ne!(key("t", Some("client:batch"), base.clone()), same);
    assert_ne!(key("t", None, base), same);
    assert!(
        same.starts_with(r#"{"cache":1,"task":"t","owner":"client:web","request":{"messages""#),
        "{same}"
    );
}

#[test]
fn an_identical_request_is_answered_from_the_cache_once_stored() {
    let world = World::new(answering());
    let sdk_body = BODY.replacen('{', r#"{"model":"summarization","#, 1);
    let first = world.post("/v1/chat/completions", WEB, &sdk_body);
    assert_eq!((first.response.status, status(&first)), (200, Some("miss")));
    let second = world.post("/v1/chat/completions", WEB, &sdk_body);
    assert_eq!(
        (second.response.status, status(&second)),
        (200, Some("hit")),
        "{}",
        second.text
    );
    assert_eq!(world.calls(), 1, "Groq answered once");
    // The SDK route's hit is the completion Groq sent, byte for byte.
    assert_eq!(second.text, first.text);
    assert_eq!(second.response.header("x-model-used"), Some("m1"));
    assert_eq!(second.response.header("x-attempts"), None);
    // The log line and the usage point: the tokens, no cost, what it saved.
    let saved = (55.0 + 24.0) / 1e6;
    let line = request_line(&second);
    assert_eq!(
        (
            &line["cache"],
            &line["cost_usd"],
            &line["saved_usd"],
            &line["total_tokens"]
        ),
        (&json!("hit"), &json!(0.0), &json!(saved), &json!(67))
    );
    assert_eq!(request_line(&first)["cache"], "miss");
    assert_eq!(second.usage[0].blobs[6], "hit");
    assert_eq!(
        (second.usage[0].doubles[3], second.usage[0].doubles[7]),
        (0.0, saved)
    );
    // The task route says it in its answer.
    let task = world.post("/v1/tasks/summarization", WEB, BODY);
    let answer = task.json();
    assert_eq!(
        (&answer["cache"], &answer["attempts"]),
        (&json!("hit"), &json!([]))
    );
    assert_eq!(answer["usage"]["cost_usd"], 0.0);
    assert_eq!(answer["content"], "hello from m1");
    assert_eq!(world.calls(), 1);
}

#[test]
fn entries_are_private_to_each_caller_unless_the_task_is_shared() {
    let world = World::new(answering());
    world.post("/v1/tasks/summarization", WEB, BODY);
    let other = world.post("/v1/tasks/summarization", BATCH, BODY);
    assert_eq!(
        status(&other),
        Some("miss"),
        "another client never gets this one's answer"
    );
    assert_eq!(world.calls(), 2);
    world.post("/v1/tasks/faq", WEB, BODY);
    let shared = world.post("/v1/tasks/faq", BATCH, BODY);
    assert_eq!(status(&shared), Some("hit"));
    assert_eq!(world.calls(), 3);
    // A task without `CACHE` says nothing and asks nothing.
    let asked = world.cache.asked.borrow().len();
    let plain = world.post("/v1/tasks/fast", WEB, BODY);
    assert_eq!((plain.response.status, status(&plain)), (200, None));
    assert!(plain.json().get("cache").is_none());
    assert_eq!(world.cache.asked.borrow().len(), asked);
}

#[test]
fn only_whole_successful_answers_are_stored() {
    // Errors: every model failed, twice over.
    let failing = World::new(ScriptedProvider::new().on("m1", reply(500, "{}"), 5).on(
        "m2",
        reply(503, "{}"),
        5,
    ));
    for _ in 0..2 {
        let ex = failing.post("/v1/tasks/summarization", WEB, BODY);
        assert_eq!((ex.response.status, status(&ex)), (502, Some("miss")));
    }
    assert!(failing.cache.entries.borrow().is_empty());
    // A cut-off answer Groq flagged (`content_filter`) is not whole.
    let filtered = completion("m1");
    let Script::Reply(mut r) = filtered else {
        unreachable!()
    };
    r.body = String::from_utf8(r.body)
        .unwrap()
        .replace("\"stop\"", "\"content_filter\"")
        .into_bytes();
    let world = World::new(answering().on("m1", Script::Reply(r), 5));
    world.post("/v1/tasks/summarization", WEB, BODY);
    assert!(world.cache.entries.borrow().is_empty());
    // A mock's answer is skipped: neither read nor stored.
    let world = World::new(answering());
    let mock = r#"{"messages":[{"role":"user","content":"hi"}],"mock_response":"canned"}"#;
    for _ in 0..2 {
        let ex = world.post("/v1/tasks/summarization", WEB, mock);
        assert_eq!((ex.response.status, status(&ex)), (200, Some("skip")));
        assert_eq!(ex.json()["content"], "canned");
    }
    assert!(world.cache.entries.borrow().is_empty() && world.cache.asked.borrow().is_empty());
    // A stream that broke before its end.
    let broken = Script::Stream(vec![
        bytes(ROLE, 5),
        bytes(HELLO, 5),
        Step::Fail(TransportError::Connection("reset".into())),
    ]);
    for mode in ["pipe", "filter"] {
        let mut world = World::new(answering().on("m1", broken.clone(), 5));
        world.config.push(("STREAM_RELAY", mode.into()));
        let ex = world.post("/v1/tasks/summarization", WEB, &stream_body(false));
        assert!(ex.streamed);
        assert_eq!(request_line(&ex)["outcome"], "stream_interrupted", "{mode}");
        assert!(world.cache.entries.borrow().is_empty(), "{mode}");
    }
}

fn stream_body(include_usage: bool) -> String {
    let options = if include_usage {
        r#","stream_options":{"include_usage":true}"#
    } else {
        ""
    };
    BODY.replace(
        "\"temperature\":0",
        &format!("\"temperature\":0,\"stream\":true{options}"),
    )
}

#[test]
fn a_streamed_answer_is_stored_whole_and_served_either_way() {
    let whole = Script::Stream(vec![
        bytes(ROLE, 5),
        bytes(HELLO, 5),
        bytes(&format!("{FINAL}{DONE}"), 5),
    ]);
    for mode in ["pipe", "filter"] {
        let mut world = World::new(answering().on("m1", whole.clone(), 5));
        world.config.push(("STREAM_RELAY", mode.into()));
        let streamed = world.post("/v1/tasks/summarization", WEB, &stream_body(false));
        assert!(
            streamed.streamed && streamed.text.ends_with("data: [DONE]\n\n"),
            "{mode}"
        );
        assert_eq!(status(&streamed), Some("miss"));
        // Not streamed: the completion the stream added up to.
        let later = world.post("/v1/tasks/summarization", WEB, BODY);
        assert_eq!(status(&later), Some("hit"), "{mode}: {}", later.text);
        let answer = later.json();
        assert_eq!(
            (&answer["content"], &answer["finish_reason"]),
            (&json!("hello"), &json!("stop"))
        );
        assert_eq!(answer["usage"]["total_tokens"], 12);
        assert_eq!(world.calls(), 1, "{mode}");
    }
    // A whole answer served to a streamed request: Groq's events, the usage chunk when asked.
    let world = World::new(answering());
    world.post("/v1/tasks/summarization", WEB, BODY);
    let streamed = world.post("/v1/tasks/summarization", WEB, &stream_body(true));
    assert_eq!(status(&streamed), Some("hit"));
    assert_eq!(
        streamed.response.header("content-type"),
        Some("text/event-stream")
    );
    let events: Vec<&str> = streamed
        .text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(said, "hello from m1");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(
        (
            &usage_chunk["choices"],
            &usage_chunk["usage"]["total_tokens"]
        ),
        (&json!([]), &json!(67))
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(world.calls(), 1);
    assert_eq!(request_line(&streamed)["stream"], true);
}

#[test]
fn entries_expire_and_callers_may_ask_for_less_never_more() {
    let world = World::new(answering());
    world.post("/v1/tasks/summarization", WEB, BODY);
    world.provider.clock.set(NOON + 600_000);
    // Ten minutes old: a caller's `max-age=300` will not take it, and its fresh answer is stored.
    let fresh = world.with_header("/v1/tasks/summarization", "max-age=300", BODY);
    assert_eq!(status(&fresh), Some("miss"));
    assert_eq!(world.calls(), 2);
    let hit = world.with_header("/v1/tasks/summarization", "max-age=300", BODY);
    assert_eq!(status(&hit), Some("hit"));
    // More than the task's TTL buys nothing: past an hour, a miss.
    world.provider.clock.set(NOON + 600_000 + 3_601_000);
    let expired = world.with_header("/v1/tasks/summarization", "max-age=999999", BODY);
    assert_eq!(status(&expired), Some("miss"));
    assert_eq!(world.calls(), 3);
    // `no-cache`: not served from the cache, but the fresh answer is stored.
    let refreshed = world.with_header("/v1/tasks/summarization", "no-cache", BODY);
    assert_eq!(status(&refreshed), Some("miss"));
    assert_eq!(world.calls(), 4);
    // `no-store`: neither read nor written.
    let world = World::new(answering());
    let skipped = world.with_header("/v1/tasks/summarization", "no-store", BODY);
    assert_eq!(status(&skipped), Some("skip"));
    assert!(world.cache.entries.borrow().is_empty() && world.cache.asked.borrow().is_empty());
}

#[test]
fn a_model_the_chain_no_longer_holds_is_never_served() {
    let mut world = World::new(answering());
    world.post("/v1/tasks/summarization", WEB, BODY);
    // The operator pins m2: the stored answer came from m1.
    world.config.push(("FORCE_MODEL", "m2".into()));
    let pinned = world.post("/v1/tasks/summarization", WEB, BODY);
    assert_eq!(status(&pinned), Some("miss"));
    assert_eq!(pinned.response.header("x-model-used"), Some("m2"));
    assert_eq!(world.calls(), 2);
    // m2's answer replaced it; m2 is in the chain, so it is served.
    let again = world.post("/v1/tasks/summarization", WEB, BODY);
    assert_eq!(
        (status(&again), again.response.header("x-model-used")),
        (Some("hit"), Some("m2"))
    );
}

#[test]
fn a_hit_charges_no_budget() {
    let mut world = World::new(answering());
    world
        .config
        .push(("BUDGETS", r#"{"client":{"tokens_per_day":1000000}}"#.into()));
    world.post("/v1/tasks/summarization", WEB, BODY);
    let limits = Limits {
        tokens_per_day: Some(1_000_000),
        ..Limits::default()
    };
    let spent = || world.ledgers.usage_of("client:web", &limits)[0];
    assert_eq!(
        (spent().limit, spent().spent),
        (LimitKind::TokensPerDay, 67.0)
    );
    let asked = world.ledgers.asked.get();
    let hit = world.post("/v1/tasks/summarization", WEB, BODY);
    assert_eq!(status(&hit), Some("hit"));
    assert_eq!(spent().spent, 67.0);
    assert_eq!(world.ledgers.asked.get(), asked, "no ledger was asked");
    assert!(request_line(&hit).get("budget_scopes").is_none());
}

#[test]
fn routes_show_each_tasks_cache() {
    let world = World::new(answering());
    let routes = world.send(HttpRequest {
        authorization: Some(WEB),
        ..HttpRequest::new("GET", "/v1/routes", b"")
    });
    let data = routes.json()["data"].clone();
    let cache_of = |task: &str| {
        let route = data
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task"] == task)
            .unwrap();
        route["cache"].clone()
    };
    assert_eq!(
        cache_of("summarization"),
        json!({"ttl_s": 3600, "shared": false})
    );
    assert_eq!(cache_of("faq"), json!({"ttl_s": 86400, "shared": true}));
    assert_eq!(cache_of("fast"), Value::Null);
}

const ROLE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"x_groq\":{\"id\":\"req_1\"}}\n\n";
const HELLO: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const FINAL: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
