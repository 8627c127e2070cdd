//! `ChatRequest`: a caller's chat-completions body, checked enough to refuse what every model
//! would refuse (each refusal names the field): the task it names (`model`, on the SDK routes),
//! its token limits against the task's cap, and the mock fields. What Groq receives is its
//! `ChatBody`: the caller's other fields, as they sent them.

use std::borrow::Cow;

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::groq::body::ChatBody;
use crate::http::mock::{Mock, MockFailure};
use crate::json::{cut, JsonKind, Members, Text};
use crate::routing::capabilities::{Needs, ReasoningParam};

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];
/// Groq accepts at most this many tools and stop sequences.
const MAX_TOOLS: usize = 128;
const MAX_STOP: usize = 4;
/// The two spellings of a completion-token limit; a task's cap applies to both.
const TOKEN_FIELDS: [&str; 2] = ["max_completion_tokens", "max_tokens"];

/// Why a body was refused: it is not a JSON object, or one field (`param`) is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Json(String),
    Field { param: String, message: String },
}

fn refuse(param: impl Into<String>, message: impl Into<String>) -> BodyError {
    BodyError::Field {
        param: param.into(),
        message: message.into(),
    }
}

/// A validated request body, borrowed from the bytes the caller sent.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    /// What Groq receives.
    pub body: ChatBody<'a>,
    /// The caller's `model`: a task name on the SDK routes.
    pub model: Option<Cow<'a, str>>,
    /// The token limits the caller asked for, by field, read by value.
    limits: Vec<(&'static str, f64)>,
    /// `mock_response` / `mock_failures`: answered by the mock provider, never by Groq.
    pub mock: Option<Mock>,
    /// The size of `messages`, for a mock answer's token estimate.
    pub prompt_bytes: usize,
    /// What it needs of a model: the capabilities its fields call for, its size.
    pub needs: Needs,
}

/// The fields the router reads for itself: never sent to Groq, set or `null`.
const ROUTER_FIELDS: [&str; 3] = ["model", "mock_response", "mock_failures"];

/// A number read by its value, whatever its spelling: `1e-2147483648` is 0, and a number beyond
/// `f64` is infinite (serde_json refuses to read it, the grammar allows it).
fn number(raw: &RawValue) -> Option<f64> {
    (JsonKind::of(raw) == JsonKind::Number).then(|| {
        serde_json::from_str(raw.get()).unwrap_or(if raw.get().starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        })
    })
}

/// A value read as `T`, or a 400 naming the field saying it must be `expected`.
fn typed<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, BodyError> {
    raw.map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|_| refuse(name, format!("`{name}` must be {expected}")))
}

fn of_kind(
    raw: Option<&RawValue>,
    name: &str,
    kinds: &[JsonKind],
    expected: &str,
) -> Result<(), BodyError> {
    match raw {
        Some(raw) if !kinds.contains(&JsonKind::of(raw)) => {
            Err(refuse(name, format!("`{name}` must be {expected}")))
        }
        _ => Ok(()),
    }
}

/// A number within `low..=high`; `between` says so in words (no float formatting in the bundle).
fn in_range(
    raw: Option<&RawValue>,
    name: &str,
    (low, high): (f64, f64),
    between: &str,
) -> Result<(), BodyError> {
    match raw.map(number) {
        Some(None) => Err(refuse(name, format!("`{name}` must be a number"))),
        Some(Some(v)) if !(low..=high).contains(&v) => {
            Err(refuse(name, format!("`{name}` must be {between}")))
        }
        _ => Ok(()),
    }
}

/// A whole number of at least 1 (by value: `1e3` is 1000).
fn positive(raw: Option<&RawValue>, name: &'static str) -> Result<Option<f64>, BodyError> {
    let Some(raw) = raw else { return Ok(None) };
    match number(raw) {
        Some(n) if n.fract() == 0.0 && n >= 1.0 => Ok(Some(n)),
        Some(n) if n.fract() == 0.0 => Err(refuse(name, format!("`{name}` must be at least 1"))),
        _ => Err(refuse(name, format!("`{name}` must be a positive integer"))),
    }
}

/// The non-empty string `type` of an object: a content part, a tool, a `response_format`.
fn type_of(raw: &RawValue) -> Option<Text<'_>> {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Text<'a>>,
    }
    if JsonKind::of(raw) != JsonKind::Object {
        return None;
    }
    let typed = serde_json::from_str::<Typed>(raw.get()).ok()?;
    typed.kind.filter(|k| !k.0.is_empty())
}

fn has_type(raw: &RawValue) -> bool {
    type_of(raw).is_some()
}

/// The content part types that carry an image.
const IMAGE_PARTS: [&str; 2] = ["image_url", "input_image"];

/// Absent and `null` read alike, as Groq reads them.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|v| JsonKind::of(v) != JsonKind::Null)
}

fn list(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

impl<'a> ChatRequest<'a> {
    /// Parses a chat body. `model_field_allowed` is false on `/v1/tasks/{task}`, where a caller
    /// never names a model; the SDK routes read the task from `model`.
    pub fn parse(body: &'a [u8], model_field_allowed: bool) -> Result<Self, BodyError> {
        let members = members(body)?;
        let get = |name: &str| present(members.get(name));
        if members.get("model").is_some() && !model_field_allowed {
            return Err(refuse(
                "model",
                "`model` is not accepted: the router picks the model for the task in the URL",
            ));
        }
        let model = typed::<Text>(get("model"), "model", "a task name string")?.map(|t| t.0);
        let messages =
            get("messages").ok_or_else(|| refuse("messages", "`messages` is required"))?;
        let images = check_messages(messages)?;
        let mut limits = Vec::new();
        for name in TOKEN_FIELDS {
            if let Some(n) = positive(get(name), name)? {
                limits.push((name, n));
            }
        }
        check_sampling(&get)?;
        let stream = typed(get("stream"), "stream", "true or false")?.unwrap_or(false);
        check_tooling(&get)?;
        let mock = read_mock(get("mock_response"), get("mock_failures"), stream)?;
        let prompt_bytes = messages.get().len();
        let needs = needs(&get, images, prompt_bytes, &limits);
        let mut fields = members.0;
        fields.retain(|(key, _)| !ROUTER_FIELDS.contains(&key.as_ref()));
        Ok(ChatRequest {
            body: ChatBody {
                fields,
                stream,
                filled_cap: None,
                body_bytes: body.len(),
            },
            model,
            limits,
            mock,
            prompt_bytes,
            needs,
        })
    }

    /// Enforces a task's token cap on both `max_completion_tokens` and `max_tokens`: a larger
    /// request is refused; one that asks for no limit gets the cap as `max_completion_tokens`.
    pub fn apply_token_cap(&mut self, cap: u64, binding: &str) -> Result<(), BodyError> {
        if let Some((name, _)) = self.limits.iter().find(|(_, asked)| *asked > cap as f64) {
            return Err(refuse(
                *name,
                format!("`{name}` is above this task's cap of {cap} (`{binding}`)"),
            ));
        }
        if self.limits.is_empty() {
            self.body.filled_cap = Some(cap);
            self.needs.completion_tokens = Some(cap);
        }
        Ok(())
    }
}

/// What a (valid) request needs of a model: tools when it sends any, the structured output type
/// it asks for, image input when a message carries an image, the reasoning parameters it sets,
/// and room for its prompt (a token per 4 bytes of `messages`, rounded up) and completion.
fn needs<'v>(
    get: &impl Fn(&str) -> Option<&'v RawValue>,
    images: bool,
    prompt_bytes: usize,
    limits: &[(&'static str, f64)],
) -> Needs {
    let format = get("response_format").and_then(type_of);
    let format = format.as_ref().map(|t| t.0.as_ref());
    let tools = get("tools").and_then(list).is_some_and(|t| !t.is_empty());
    let reasoning = ReasoningParam::ALL.into_iter();
    let text = |name| get(name).and_then(|v| serde_json::from_str::<Text>(v.get()).ok());
    Needs {
        tools,
        json_schema: format == Some("json_schema"),
        json_object: format == Some("json_object"),
        images,
        reasoning: reasoning.filter(|p| get(p.as_str()).is_some()).collect(),
        reasoning_effort: text("reasoning_effort").map(|t| t.0.into_owned()),
        prompt_tokens: (prompt_bytes as u64).div_ceil(4),
        completion_tokens: limits.iter().map(|(_, n)| *n as u64).max(),
    }
}

/// A body's members, each sent once; a 400 for anything that is not a JSON object.
fn members(body: &[u8]) -> Result<Members<'_>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Json(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| BodyError::Json("the request body is not valid UTF-8".into()))?;
    let members: Members = serde_json::from_str(text).map_err(|e| {
        BodyError::Json(if e.is_data() {
            "the request body must be a JSON object".into()
        } else {
            format!("the request body is not valid JSON: {e}")
        })
    })?;
    if let Some(key) = members.duplicate() {
        let key = cut(key, 64);
        return Err(refuse(
            key,
            format!("`{key}` appears more than once; send each field once"),
        ));
    }
    Ok(members)
}

/// The sampling parameters: numbers in their ranges, `seed` whole, `n` one, `stop` at most four.
fn check_sampling<'v>(get: &impl Fn(&str) -> Option<&'v RawValue>) -> Result<(), BodyError> {
    for (name, range, between) in [
        ("temperature", (0.0, 2.0), "between 0 and 2"),
        ("top_p", (0.0, 1.0), "between 0 and 1"),
        ("frequency_penalty", (-2.0, 2.0), "between -2 and 2"),
        ("presence_penalty", (-2.0, 2.0), "between -2 and 2"),
    ] {
        in_range(get(name), name, range, between)?;
    }
    if get("seed").is_some_and(|s| number(s).is_none_or(|n| n.fract() != 0.0)) {
        return Err(refuse("seed", "`seed` must be an integer"));
    }
    if get("n").is_some_and(|n| number(n) != Some(1.0)) {
        return Err(refuse(
            "n",
            "`n` must be 1: Groq returns one choice per request",
        ));
    }
    for name in [
        "user",
        "reasoning_effort",
        "reasoning_format",
        "service_tier",
    ] {
        of_kind(get(name), name, &[JsonKind::String], "a string")?;
    }
    let Some(stop) = get("stop") else {
        return Ok(());
    };
    let ok = match JsonKind::of(stop) {
        JsonKind::String => true,
        _ => serde_json::from_str::<Vec<Text>>(stop.get()).is_ok_and(|s| s.len() <= MAX_STOP),
    };
    match ok {
        true => Ok(()),
        false => Err(refuse(
            "stop",
            format!("`stop` must be a string or a list of at most {MAX_STOP} strings"),
        )),
    }
}

/// Tools, their choice and the answer's format: the shapes every model needs.
fn check_tooling<'v>(get: &impl Fn(&str) -> Option<&'v RawValue>) -> Result<(), BodyError> {
    typed::<bool>(
        get("parallel_tool_calls"),
        "parallel_tool_calls",
        "true or false",
    )?;
    of_kind(
        get("stream_options"),
        "stream_options",
        &[JsonKind::Object],
        "an object",
    )?;
    if let Some(tools) = get("tools") {
        check_tools(tools)?;
    }
    if let Some(format) = get("response_format") {
        of_kind(
            Some(format),
            "response_format",
            &[JsonKind::Object],
            "an object",
        )?;
        if !has_type(format) {
            return Err(refuse(
                "response_format.type",
                "`response_format.type` must be a string",
            ));
        }
    }
    of_kind(
        get("tool_choice"),
        "tool_choice",
        &[JsonKind::String, JsonKind::Object],
        "a string or an object",
    )
}

/// `mock_response` (a string) and `mock_failures` (outcome names), when either is there.
fn read_mock(
    response: Option<&RawValue>,
    failures: Option<&RawValue>,
    stream: bool,
) -> Result<Option<Mock>, BodyError> {
    if response.is_none() && failures.is_none() {
        return Ok(None);
    }
    let response = typed::<Text>(response, "mock_response", "a string")?;
    let names = MockFailure::names().join(", ");
    let expected = format!("a list of outcome names: {names}");
    let failures = typed::<Vec<Text>>(failures, "mock_failures", &expected)?;
    let failures = failures.unwrap_or_default().into_iter().map(|Text(name)| {
        MockFailure::named(&name).ok_or_else(|| {
            refuse(
                "mock_failures",
                format!("`mock_failures` must be {expected}"),
            )
        })
    });
    let failures = failures.collect::<Result<Vec<_>, _>>()?;
    if failures.contains(&MockFailure::StreamBreak) && !stream {
        let message = "`mock_failures`: `stream_break` breaks a stream; send `\"stream\": true`";
        return Err(refuse("mock_failures", message));
    }
    Ok(Some(Mock {
        response: response.map(|t| t.0.into_owned()),
        failures,
    }))
}

fn check_tools(raw: &RawValue) -> Result<(), BodyError> {
    let tools =
        list(raw).ok_or_else(|| refuse("tools", "`tools` must be a list of tool objects"))?;
    if tools.len() > MAX_TOOLS {
        return Err(refuse(
            "tools",
            format!("`tools` may hold at most {MAX_TOOLS} tools"),
        ));
    }
    match tools.iter().position(|t| !has_type(t)) {
        Some(i) => Err(refuse(
            format!("tools[{i}]"),
            format!("`tools[{i}]` must be an object with a string `type`"),
        )),
        None => Ok(()),
    }
}

/// One entry of `messages`, read in the same pass as the list: the fields the router checks
/// when it is an object, or what it is instead.
enum Entry<'a> {
    Message {
        role: Option<&'a RawValue>,
        content: Option<&'a RawValue>,
        tool_calls: Option<&'a RawValue>,
        /// A field sent twice.
        twice: Option<&'static str>,
    },
    Not(JsonKind),
}

impl<'de: 'a, 'a> Deserialize<'de> for Entry<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Entry<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Entry<'de>, M::Error> {
                let (mut role, mut content, mut tool_calls, mut twice) = (None, None, None, None);
                while let Some(Text(key)) = map.next_key()? {
                    let (slot, name) = match key.as_ref() {
                        "role" => (&mut role, "role"),
                        "content" => (&mut content, "content"),
                        "tool_calls" => (&mut tool_calls, "tool_calls"),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.replace(map.next_value()?).is_some() {
                        twice = Some(name);
                    }
                }
                let present = |v: Option<&'de RawValue>| present(v);
                Ok(Entry::Message {
                    role: present(role),
                    content: present(content),
                    tool_calls: present(tool_calls),
                    twice,
                })
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Entry<'de>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Entry::Not(JsonKind::List))
            }
            fn visit_str<E>(self, _: &str) -> Result<Entry<'de>, E> {
                Ok(Entry::Not(JsonKind::String))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Entry<'de>, E> {
                Ok(Entry::Not(JsonKind::Bool))
            }
            fn visit_unit<E>(self) -> Result<Entry<'de>, E> {
                Ok(Entry::Not(JsonKind::Null))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Entry<'de>, E> {
                Ok(Entry::Not(JsonKind::Number))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Entry<'de>, E> {
                Ok(Entry::Not(JsonKind::Number))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Entry<'de>, E> {
                Ok(Entry::Not(JsonKind::Number))
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// Checks every message, in one pass over the list: an object with a known `role` and, where
/// the role needs it, `content` that is a string or a list of parts each with a string `type`.
/// Checks every message; whether any carries an image.
fn check_messages(raw: &RawValue) -> Result<bool, BodyError> {
    let messages: Vec<Entry> = serde_json::from_str(raw.get())
        .ok()
        .filter(|_| JsonKind::of(raw) == JsonKind::List)
        .ok_or_else(|| refuse("messages", "`messages` must be a list of message objects"))?;
    if messages.is_empty() {
        return Err(refuse("messages", "`messages` must not be empty"));
    }
    let mut images = false;
    for (i, message) in messages.iter().enumerate() {
        images |= check_message(i, message)?;
    }
    Ok(images)
}

/// Checks one message; whether it carries an image.
fn check_message(i: usize, message: &Entry) -> Result<bool, BodyError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let (role, content, tool_calls) = match message {
        Entry::Message {
            twice: Some(name), ..
        } => {
            let whole = format!("messages[{i}]");
            let message = format!("`{whole}` sends `{name}` more than once; send each field once");
            return Err(refuse(whole, message));
        }
        Entry::Message {
            role,
            content,
            tool_calls,
            twice: None,
        } => (role, content, tool_calls),
        Entry::Not(kind) => {
            let whole = format!("messages[{i}]");
            let got = kind.described();
            let message = format!(
                "`{whole}` must be an object with a string `role` and `content`, got {got}"
            );
            return Err(refuse(whole, message));
        }
    };
    let role =
        role.ok_or_else(|| refuse(field("role"), format!("`{}` is required", field("role"))))?;
    let role = serde_json::from_str::<Text>(role.get())
        .ok()
        .filter(|r| ROLES.contains(&r.0.as_ref()))
        .ok_or_else(|| {
            let param = field("role");
            refuse(
                &param,
                format!("`{param}` must be one of {}", ROLES.join(", ")),
            )
        })?;
    // `Some(images)` when the content is well formed: a string, or parts each with a type.
    let parts = |c: &RawValue| match JsonKind::of(c) {
        JsonKind::String => Some(false),
        JsonKind::List => {
            let types: Option<Vec<Text>> = list(c)?.iter().map(|p| type_of(p)).collect();
            Some(types?.iter().any(|t| IMAGE_PARTS.contains(&t.0.as_ref())))
        }
        _ => None,
    };
    match content.map(|c| (c, parts(c))) {
        Some((_, Some(images))) => Ok(images),
        Some(_) => {
            let param = field("content");
            let message = format!("`{param}` must be a string or a list of parts with a `type`");
            Err(refuse(param, message))
        }
        // An assistant turn that calls tools may have no content.
        None if role.0 == "assistant" && tool_calls.is_some() => Ok(false),
        None => {
            let param = field("content");
            Err(refuse(
                &param,
                format!("`{param}` is required for role `{}`", role.0),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    fn parse(body: &str) -> Result<ChatRequest<'_>, BodyError> {
        ChatRequest::parse(body.as_bytes(), true)
    }

    fn param(body: &str) -> String {
        match parse(body) {
            Err(BodyError::Field { param, .. }) => param,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_key_sent_twice_is_refused_by_name() {
        assert_eq!(
            param(&format!(r#"{{{HI},"max_tokens":99999,"max_tokens":10}}"#)),
            "max_tokens"
        );
        // Escapes do not hide a duplicate.
        assert_eq!(
            param(&format!(r#"{{{HI},"top_p":1,"top\u005fp":1}}"#)),
            "top_p"
        );
        assert_eq!(
            param(r#"{"messages":[{"role":"user","role":"user","content":"x"}]}"#),
            "messages[0]"
        );
    }

    #[test]
    fn both_token_fields_are_capped() {
        for body in [
            format!(r#"{{{HI},"max_completion_tokens":10,"max_tokens":99999}}"#),
            format!(r#"{{{HI},"max_tokens":1e5}}"#),
        ] {
            let mut r = parse(&body).unwrap();
            let e = r.apply_token_cap(256, "MAX_FAST_TOKENS").unwrap_err();
            assert!(
                matches!(e, BodyError::Field { ref param, .. } if param == "max_tokens"),
                "{e:?}"
            );
        }
        let within = format!(r#"{{{HI},"max_tokens":256}}"#);
        assert_eq!(parse(&within).unwrap().apply_token_cap(256, "B"), Ok(()));
        let unasked = format!("{{{HI}}}");
        let mut r = parse(&unasked).unwrap();
        r.apply_token_cap(64, "B").unwrap();
        let sent: serde_json::Value =
            serde_json::from_slice(&r.body.for_model("m").to_vec()).unwrap();
        assert_eq!(sent["max_completion_tokens"], 64);
    }

    #[test]
    fn numbers_are_read_by_value() {
        assert!(parse(&format!(r#"{{{HI},"temperature":1e-2147483648}}"#)).is_ok());
        assert!(parse(&format!(r#"{{{HI},"temperature":0.02e2}}"#)).is_ok());
        assert_eq!(
            param(&format!(r#"{{{HI},"temperature":1e400}}"#)),
            "temperature"
        );
        assert_eq!(
            param(&format!(r#"{{{HI},"max_tokens":1e-2147483648}}"#)),
            "max_tokens"
        );
        assert!(parse(&format!(r#"{{{HI},"n":1.0,"seed":1e3}}"#)).is_ok());
    }

    #[test]
    fn mock_fields_never_reach_groq_even_null() {
        let body = format!(r#"{{{HI},"mock_failures":null,"mock_response":null,"seed":1}}"#);
        let r = parse(&body).unwrap();
        assert!(r.mock.is_none(), "null asks for no mock");
        assert_eq!(
            String::from_utf8(r.body.for_model("m").to_vec()).unwrap(),
            format!(r#"{{"model":"m",{HI},"seed":1}}"#)
        );
    }

    #[test]
    fn body_for_sets_model_and_keeps_the_rest_as_sent() {
        let body = format!(r#"{{"model":"fast",{HI},"x":{{"a" : [1, 2.50]}}}}"#);
        let r = parse(&body).unwrap();
        assert_eq!(r.model.as_deref(), Some("fast"));
        assert_eq!(
            String::from_utf8(r.body.for_model("m\"1").to_vec()).unwrap(),
            r#"{"model":"m\"1","messages":[{"role":"user","content":"hi"}],"x":{"a" : [1, 2.50]}}"#
        );
    }
}
