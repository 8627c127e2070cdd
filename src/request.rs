//! `ChatRequest`: a caller's chat-completions body, checked just enough to refuse what every
//! model would refuse, and turned into Groq's body by setting only `model`. The caller's other
//! fields go through as the bytes they sent (no re-serialization of `messages`).

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// A validated request body, ready to be sent to any model of the chain.
#[derive(Debug)]
pub struct ChatRequest {
    /// `"k":v` pairs of every caller field except `model`, joined by `,`.
    fields: String,
    pub stream: bool,
    /// The caller's `model` (a task name on the SDK routes).
    pub model: Option<String>,
}

impl ChatRequest {
    /// Parses a task request body. `model_field_allowed` is false on `/v1/tasks/{task}`, where a
    /// caller never names a model; the SDK routes read the task from `model` before calling this.
    pub fn parse(body: &[u8], model_field_allowed: bool) -> Result<ChatRequest, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_json(
                "the request body is empty; send a JSON object",
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_json("the request body is not valid UTF-8"))?;
        let fields: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| {
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
        let model = check_optional::<String>(&fields, "model", "a task name string")?;
        let messages = fields
            .get("messages")
            .ok_or_else(|| ApiError::invalid_field("messages", "`messages` is required"))?;
        check_messages(messages)?;
        check_optional::<u64>(&fields, "max_tokens", "a positive integer")?;
        check_optional::<u64>(&fields, "max_completion_tokens", "a positive integer")?;
        for name in ["max_tokens", "max_completion_tokens"] {
            if let Some(0) = get::<u64>(&fields, name) {
                return Err(ApiError::invalid_field(
                    name,
                    format!("`{name}` must be at least 1"),
                ));
            }
        }
        if let Some(t) = check_optional::<f64>(&fields, "temperature", "a number")? {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid_field(
                    "temperature",
                    "`temperature` must be between 0 and 2",
                ));
            }
        }
        check_optional::<f64>(&fields, "top_p", "a number")?;
        let stream = check_optional::<bool>(&fields, "stream", "true or false")?.unwrap_or(false);

        let mut joined = String::with_capacity(body.len());
        for (key, value) in &fields {
            if key == "model" {
                continue;
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
        })
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

fn push_json_string(out: &mut String, s: &str) {
    // Serializing a `&str` cannot fail.
    out.push_str(&serde_json::to_string(s).expect("a str serializes to JSON"));
}

fn get<'a, T: Deserialize<'a>>(fields: &BTreeMap<String, &'a RawValue>, name: &str) -> Option<T> {
    fields
        .get(name)
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// `Ok(None)` when absent or `null`; a 400 naming the field when it has the wrong type.
fn check_optional<'a, T: Deserialize<'a>>(
    fields: &BTreeMap<String, &'a RawValue>,
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

fn check_messages(raw: &RawValue) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        role: Option<std::borrow::Cow<'a, str>>,
        content: Option<IgnoredAny>,
    }
    let messages: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::invalid_field("messages", "`messages` must be a list of message objects")
    })?;
    if messages.is_empty() {
        return Err(ApiError::invalid_field(
            "messages",
            "`messages` must not be empty",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let message: Message = serde_json::from_str(m.get()).map_err(|_| {
            ApiError::invalid_field(
                &param,
                format!("`{param}` must be an object with a string `role`"),
            )
        })?;
        let role = message.role.ok_or_else(|| {
            ApiError::invalid_field(
                format!("{param}.role"),
                format!("`{param}.role` is required"),
            )
        })?;
        if !ROLES.contains(&role.as_ref()) {
            return Err(ApiError::invalid_field(
                format!("{param}.role"),
                format!("`{param}.role` must be one of {}", ROLES.join(", ")),
            ));
        }
        // An assistant turn may carry only `tool_calls`; every other role needs content.
        if message.content.is_none() && role != "assistant" {
            return Err(ApiError::invalid_field(
                format!("{param}.content"),
                format!("`{param}.content` is required"),
            ));
        }
    }
    Ok(())
}
