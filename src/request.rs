//! `ChatRequest`: a caller's chat-completions body, checked enough to refuse what every model
//! would refuse (each refusal names the field), and turned into Groq's body by setting only
//! `model`. The caller's other fields go through as the bytes they sent: `messages` is scanned
//! for shape, never copied into a tree or re-serialized.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ApiError;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];
/// Groq accepts at most this many tools and stop sequences.
const MAX_TOOLS: usize = 128;
const MAX_STOP: usize = 4;
/// Deepest nesting accepted in any field; `serde_json` enforces the same on `messages`.
const MAX_DEPTH: usize = 128;

/// A validated request body, ready to be sent to any model of the chain.
#[derive(Debug)]
pub struct ChatRequest {
    /// `"k":v` pairs of every caller field except `model`, joined by `,`.
    fields: String,
    pub stream: bool,
    /// The caller's `model` (a task name on the SDK routes).
    pub model: Option<String>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
}

impl ChatRequest {
    /// Parses a chat body. `model_field_allowed` is false on `/v1/tasks/{task}`, where a caller
    /// never names a model; the SDK routes read the task from `model`.
    pub fn parse(body: &[u8], model_field_allowed: bool) -> Result<ChatRequest, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_json(
                "the request body is empty; send a JSON object",
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_json("the request body is not valid UTF-8"))?;
        let fields: BTreeMap<Cow<str>, &RawValue> = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                ApiError::bad_json("the request body must be a JSON object")
            } else {
                ApiError::bad_json(format!("the request body is not valid JSON: {e}"))
            }
        })?;

        if fields.contains_key("model") && !model_field_allowed {
            return Err(ApiError::invalid_field(
                "model",
                "`model` is not accepted: the router picks the model for the task in the URL",
            ));
        }
        let model = typed::<String>(&fields, "model", "a task name string")?;
        let messages = fields
            .get("messages")
            .ok_or_else(|| ApiError::invalid_field("messages", "`messages` is required"))?;
        check_messages(messages)?;

        let max_completion_tokens = positive(&fields, "max_completion_tokens")?;
        let max_tokens = positive(&fields, "max_tokens")?;
        in_range(&fields, "temperature", 0.0, 2.0)?;
        in_range(&fields, "top_p", 0.0, 1.0)?;
        in_range(&fields, "frequency_penalty", -2.0, 2.0)?;
        in_range(&fields, "presence_penalty", -2.0, 2.0)?;
        let stream = typed::<bool>(&fields, "stream", "true or false")?.unwrap_or(false);
        typed::<bool>(&fields, "parallel_tool_calls", "true or false")?;
        typed::<serde_json::Map<String, Value>>(&fields, "stream_options", "an object")?;
        typed::<i64>(&fields, "seed", "an integer")?;
        for name in [
            "user",
            "reasoning_effort",
            "reasoning_format",
            "service_tier",
        ] {
            typed::<String>(&fields, name, "a string")?;
        }
        if let Some(n) = typed::<u64>(&fields, "n", "an integer")? {
            if n != 1 {
                return Err(ApiError::invalid_field(
                    "n",
                    "`n` must be 1: Groq returns one choice per request",
                ));
            }
        }
        check_stop(&fields)?;
        check_tools(&fields)?;
        if let Some(format) =
            typed::<serde_json::Map<String, Value>>(&fields, "response_format", "an object")?
        {
            if !format.get("type").is_some_and(Value::is_string) {
                return Err(ApiError::invalid_field(
                    "response_format.type",
                    "`response_format.type` must be a string",
                ));
            }
        }
        match fields
            .get("tool_choice")
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
        {
            None | Some(Ok(Value::String(_) | Value::Object(_) | Value::Null)) => {}
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "tool_choice",
                    "`tool_choice` must be a string or an object",
                ))
            }
        }

        let mut joined = String::with_capacity(body.len());
        for (key, value) in &fields {
            if key == "model" {
                continue;
            }
            // Passed-through fields are not parsed, so their nesting is checked here: a hostile
            // body must not reach Groq (or any JSON parser after us) as a stack bomb.
            if key != "messages" && too_deep(value.get()) {
                return Err(ApiError::invalid_field(
                    key.as_ref(),
                    format!("`{key}` is nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            if !joined.is_empty() {
                joined.push(',');
            }
            push_json_string(&mut joined, key);
            joined.push(':');
            joined.push_str(value.get());
        }
        Ok(ChatRequest {
            fields: joined,
            stream,
            model,
            max_tokens: max_completion_tokens.or(max_tokens),
        })
    }

    /// Enforces a task's token cap: a larger request is refused; one that asks for no limit
    /// gets the cap as `max_completion_tokens`.
    pub fn apply_token_cap(&mut self, cap: u64, binding: &str) -> Result<(), ApiError> {
        match self.max_tokens {
            Some(asked) if asked > cap => Err(ApiError::invalid_field(
                "max_tokens",
                format!("`max_tokens` / `max_completion_tokens` is {asked}, above this task's cap of {cap} (`{binding}`)"),
            )),
            Some(_) => Ok(()),
            None => {
                self.fields.push_str(&format!(",\"max_completion_tokens\":{cap}"));
                self.max_tokens = Some(cap);
                Ok(())
            }
        }
    }

    /// Groq's body for `model`: the caller's fields with `model` set.
    pub fn body_for(&self, model: &str) -> String {
        let mut out = String::with_capacity(self.fields.len() + model.len() + 16);
        out.push_str("{\"model\":");
        push_json_string(&mut out, model);
        out.push(',');
        out.push_str(&self.fields);
        out.push('}');
        out
    }
}

type Fields<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

/// Whether valid JSON `text` nests arrays/objects deeper than `MAX_DEPTH`.
fn too_deep(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn push_json_string(out: &mut String, s: &str) {
    // Serializing a `&str` cannot fail.
    out.push_str(&serde_json::to_string(s).expect("a str serializes to JSON"));
}

/// `Ok(None)` when absent or `null`; a 400 naming the field when it has the wrong type.
fn typed<'a, T: Deserialize<'a>>(
    fields: &Fields<'a>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|_| ApiError::invalid_field(name, format!("`{name}` must be {expected}"))),
    }
}

fn positive(fields: &Fields<'_>, name: &str) -> Result<Option<u64>, ApiError> {
    match typed::<u64>(fields, name, "a positive integer")? {
        Some(0) => Err(ApiError::invalid_field(
            name,
            format!("`{name}` must be at least 1"),
        )),
        n => Ok(n),
    }
}

fn in_range(fields: &Fields<'_>, name: &str, min: f64, max: f64) -> Result<(), ApiError> {
    match typed::<f64>(fields, name, "a number")? {
        Some(v) if !(min..=max).contains(&v) => Err(ApiError::invalid_field(
            name,
            format!("`{name}` must be between {min} and {max}"),
        )),
        _ => Ok(()),
    }
}

fn check_stop(fields: &Fields<'_>) -> Result<(), ApiError> {
    let Some(raw) = fields.get("stop") else {
        return Ok(());
    };
    let ok = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null | Value::String(_)) => true,
        Ok(Value::Array(items)) => items.len() <= MAX_STOP && items.iter().all(Value::is_string),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "stop",
            format!("`stop` must be a string or a list of at most {MAX_STOP} strings"),
        ))
    }
}

fn check_tools(fields: &Fields<'_>) -> Result<(), ApiError> {
    let Some(tools) = typed::<Vec<&RawValue>>(fields, "tools", "a list of tool objects")? else {
        return Ok(());
    };
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid_field(
            "tools",
            format!("`tools` may hold at most {MAX_TOOLS} tools"),
        ));
    }
    for (i, tool) in tools.iter().enumerate() {
        #[derive(Deserialize)]
        struct Tool<'a> {
            #[serde(rename = "type", borrow)]
            _kind: Cow<'a, str>,
        }
        if serde_json::from_str::<Tool>(tool.get()).is_err() {
            return Err(ApiError::invalid_field(
                format!("tools[{i}]"),
                format!("`tools[{i}]` must be an object with a string `type`"),
            ));
        }
    }
    Ok(())
}

/// One message, read for shape only: strings are borrowed or skipped, never collected.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

/// What `content` holds: text, a list of typed parts, or something else (refused).
enum Content {
    Text,
    Parts,
    Other,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Content, E> {
                Ok(Content::Text)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                #[derive(Deserialize)]
                struct Part<'a> {
                    #[serde(rename = "type", borrow, default)]
                    kind: Option<Cow<'a, str>>,
                }
                let mut all_parts = true;
                while let Some(part) = seq.next_element::<Option<Part>>()? {
                    all_parts &= part.and_then(|p| p.kind).is_some_and(|k| !k.is_empty());
                }
                Ok(if all_parts {
                    Content::Parts
                } else {
                    Content::Other
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Content::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Content, E> {
                Ok(Content::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Content, E> {
                Ok(Content::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Content, E> {
                Ok(Content::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Content, E> {
                Ok(Content::Other)
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// Checks every message in one pass over `messages`, remembering which one failed and why.
fn check_messages(raw: &RawValue) -> Result<(), ApiError> {
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let count = MessagesSeed { failure: &failure }.deserialize(&mut de);
    match (count, failure.into_inner()) {
        (_, Some(error)) => Err(error),
        (Ok(0), None) => Err(ApiError::invalid_field(
            "messages",
            "`messages` must not be empty",
        )),
        (Ok(_), None) => Ok(()),
        (Err(_), None) => Err(ApiError::invalid_field(
            "messages",
            "`messages` must be a list of message objects",
        )),
    }
}

struct MessagesSeed<'f> {
    failure: &'f RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for MessagesSeed<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut i = 0;
        loop {
            let message = match seq.next_element::<Message>() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(i),
                Err(e) => {
                    let param = format!("messages[{i}]");
                    *self.failure.borrow_mut() = Some(ApiError::invalid_field(
                        &param,
                        format!("`{param}` must be an object with a string `role` and `content`"),
                    ));
                    return Err(e);
                }
            };
            if let Err(error) = check_message(i, &message) {
                *self.failure.borrow_mut() = Some(error);
                return Err(de::Error::custom("invalid message"));
            }
            i += 1;
        }
    }
}

fn check_message(i: usize, message: &Message<'_>) -> Result<(), ApiError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let role = message.role.as_deref().ok_or_else(|| {
        ApiError::invalid_field(field("role"), format!("`{}` is required", field("role")))
    })?;
    if !ROLES.contains(&role) {
        return Err(ApiError::invalid_field(
            field("role"),
            format!("`{}` must be one of {}", field("role"), ROLES.join(", ")),
        ));
    }
    match (&message.content, role) {
        (Some(Content::Text | Content::Parts), _) => Ok(()),
        // An assistant turn that calls tools may have no content.
        (None, "assistant") if message.tool_calls.is_some() => Ok(()),
        (None, _) => Err(ApiError::invalid_field(
            field("content"),
            format!("`{}` is required for role `{role}`", field("content")),
        )),
        (Some(Content::Other), _) => Err(ApiError::invalid_field(
            field("content"),
            format!(
                "`{}` must be a string or a list of parts with a `type`",
                field("content")
            ),
        )),
    }
}
