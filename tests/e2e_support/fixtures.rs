//! What the end-to-end files share: the keys and the prompt, a fake Groq with the Worker in front
//! of it ([`Stack`]), the requests every file sends, and the checks every file makes of answers
//! and of the Worker's output.

pub use super::checks::assert_has;
use super::fake_groq::FakeGroq;
use super::http::{self, Response, StreamResponse};
use super::worker::{Extras, Worker};
use serde_json::{json, Value};
use std::time::Duration;

/// The `GROQ_API_KEY` the Worker sends and the fake expects; never in an answer or the output.
pub const PROVIDER_KEY: &str = "gsk_e2e_provider_key_5f1c0d9a";
/// The client `e2e`'s key (`ROUTER_API_KEYS`): logs and limits name the client, never the key.
pub const CLIENT_KEY: &str = "ck_e2e_client_key_8b2e4a71";
/// The client `other`'s key.
pub const OTHER_KEY: &str = "ck_e2e_other_key_7a03c8b5";
/// The user message of every chat body here: never in the Worker's output.
pub const PROMPT: &str = "e2e private prompt: the quick brown fox";
/// The browser origin `ALLOWED_ORIGINS` lets in.
pub const ORIGIN: &str = "https://app.example.com";
/// How long a log line may trail the answer that caused it.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// A chat body tagged with `tag` (Groq's `user` field passes through the router untouched), so a
/// test finds its own calls at the fake.
pub fn chat_body(tag: &str) -> Value {
    json!({"messages": [{"role": "user", "content": PROMPT}], "user": tag})
}

/// A fake Groq and the Worker calling it, shared by a file's tests through a `static OnceLock`
/// (the Worker's watchdog stops it when the test process ends).
pub struct Stack {
    pub fake: FakeGroq,
    pub worker: Worker,
}

impl Stack {
    /// A fake Groq, and a Worker calling it with [`PROVIDER_KEY`], the clients `e2e` and `other`,
    /// and `vars` (which may replace those; `{groq}` in a value stands for the fake's address).
    pub fn start(vars: &[(&str, &str)], extras: Extras<'_>) -> Stack {
        let fake = FakeGroq::start(PROVIDER_KEY);
        let clients = format!("e2e:{CLIENT_KEY},other:{OTHER_KEY}");
        let mut all = vec![("GROQ_BASE_URL", "{groq}"), ("GROQ_API_KEY", PROVIDER_KEY)];
        all.push(("ROUTER_API_KEYS", &clients));
        all.extend_from_slice(vars);
        let groq = |value: &str| value.replace("{groq}", &fake.base_url());
        let all: Vec<(&str, String)> = all.into_iter().map(|(k, v)| (k, groq(v))).collect();
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let worker = Worker::start_with(&all, extras);
        Stack { fake, worker }
    }

    pub fn port(&self) -> u16 {
        self.worker.port()
    }

    /// `POST path` with a JSON body, `key` as the bearer token and `id` as `x-request-id` (none
    /// when empty).
    pub fn post(&self, path: &str, key: Option<&str>, id: &str, body: &Value) -> Response {
        let (headers, body) = (headers(key, id), body.to_string());
        let (port, headers) = (self.port(), as_refs(&headers));
        http::send(port, "POST", path, &headers, body.as_bytes())
    }

    /// The usual routed request: the client key, `x-request-id: id`, a chat body tagged `id`.
    pub fn ask(&self, task: &str, id: &str) -> Response {
        let path = format!("/v1/tasks/{task}");
        self.post(&path, Some(CLIENT_KEY), id, &chat_body(id))
    }

    /// [`Stack::post`], returning once the head is in: the body is read as it comes.
    pub fn stream(&self, path: &str, id: &str, body: &Value) -> StreamResponse {
        let (headers, body) = (headers(Some(CLIENT_KEY), id), body.to_string());
        let (port, headers) = (self.port(), as_refs(&headers));
        http::stream(port, "POST", path, &headers, body.as_bytes())
    }

    /// The models the fake was asked for by requests tagged `tag`, in arrival order.
    pub fn models_for(&self, tag: &str) -> Vec<String> {
        let calls = self
            .fake
            .calls()
            .into_iter()
            .filter(|call| call.body["user"] == tag);
        calls.filter_map(|call| call.model).collect()
    }

    /// The first log line matching `predicate`; panics with the output if none comes.
    pub fn log_line(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let line = self.worker.wait_for_log_json(LOG_WAIT, predicate);
        line.unwrap_or_else(|| panic!("no such log line; output:\n{}", self.worker.logs()))
    }

    /// The `event: request` line logged for request `id`.
    pub fn request_line(&self, id: &str) -> Value {
        self.log_line(|line| line["event"] == "request" && line["request_id"] == id)
    }

    /// Nothing the Worker printed so far holds one of `secrets`.
    pub fn assert_output_holds_none_of(&self, secrets: &[&str]) {
        let output = self.worker.logs();
        for secret in secrets {
            assert!(
                !output.contains(secret),
                "{secret:?} in the output:\n{output}"
            );
        }
    }
}

/// `content-type: application/json`, `x-request-id: id` unless `id` is empty, and with `key`, its
/// bearer token.
fn headers(key: Option<&str>, id: &str) -> Vec<(&'static str, String)> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    headers.extend((!id.is_empty()).then(|| ("x-request-id", id.to_string())));
    headers.extend(key.map(|key| ("authorization", format!("Bearer {key}"))));
    headers
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Neither the body nor a header of `response` holds one of `secrets`.
pub fn assert_answer_holds_none_of(response: &Response, secrets: &[&str]) {
    let headers = format!("{:?}", response.headers);
    for secret in secrets {
        let (text, what) = (response.text(), format!("{secret:?}"));
        assert!(!text.contains(secret), "the answer holds {what}: {text}");
        assert!(
            !headers.contains(secret),
            "a header holds {what}: {headers}"
        );
    }
}

/// An `attempts` list with each `duration_ms` checked to be a number and then removed, so the
/// rest compares whole.
pub fn without_durations(attempts: &Value) -> Value {
    let list = attempts.as_array();
    let list = list.unwrap_or_else(|| panic!("not an attempts list: {attempts}"));
    list.iter()
        .map(|attempt| {
            let mut attempt = attempt.clone();
            let duration = attempt
                .as_object_mut()
                .and_then(|a| a.remove("duration_ms"));
            assert!(
                duration.is_some_and(|d| d.is_u64()),
                "duration_ms in {attempt}"
            );
            attempt
        })
        .collect()
}

/// What the Worker makes up when the caller sent no usable id: `req_` and 16 hex digits.
pub fn assert_generated_id(id: &str) {
    let hex = id.strip_prefix("req_").unwrap_or("");
    let generated = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(generated, "not a generated request id: {id:?}");
}

/// Every header of `want` (an object) has that value in `headers` (the first of its name); a
/// `null` wanted is a header missing.
#[track_caller]
pub fn assert_headers(headers: &[(String, String)], want: Value) {
    let mut object = serde_json::Map::new();
    for (name, value) in headers.iter().rev() {
        object.insert(name.clone(), json!(value));
    }
    assert_has(&Value::Object(object), want);
}
