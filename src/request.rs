//! `ChatRequest`: a caller's chat-completions body, checked enough to refuse what every model
//! would refuse (each refusal names the field), and turned into Groq's body by setting only
//! `model`. The caller's other fields go through as the bytes they sent, in their order:
//! `messages` is scanned for shape, never copied into a tree or re-serialized.

use std::borrow::Cow;

use crate::error::ApiError;
use crate::json::{self, Kind};

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];
/// Groq accepts at most this many tools and stop sequences.
const MAX_TOOLS: usize = 128;
const MAX_STOP: usize = 4;

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

/// The body's members, the last of each name winning (as in every common JSON parser).
struct Fields<'a>(json::Object<'a>);

impl<'a> Fields<'a> {
    /// The raw value of `name`; `None` when absent or `null`.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).filter(|v| Kind::of(v) != Kind::Null)
    }

    /// The value read by `read`, or a 400 naming the field saying it must be `expected`.
    fn typed<T>(
        &self,
        name: &str,
        expected: &str,
        read: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => read(raw).map(Some).ok_or_else(|| {
                ApiError::invalid_field(name, format!("`{name}` must be {expected}"))
            }),
        }
    }

    fn positive(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.typed(name, "a positive integer", json::as_u64)? {
            Some(0) => Err(ApiError::invalid_field(
                name,
                format!("`{name}` must be at least 1"),
            )),
            n => Ok(n),
        }
    }

    /// A number within `range`; `between` says it in words (no float formatting in the bundle).
    fn in_range(&self, name: &str, range: (f64, f64), between: &str) -> Result<(), ApiError> {
        match self.typed(name, "a number", json::as_f64)? {
            Some(v) if !(range.0..=range.1).contains(&v) => Err(ApiError::invalid_field(
                name,
                format!("`{name}` must be {between}"),
            )),
            _ => Ok(()),
        }
    }

    fn of_kind(
        &self,
        name: &str,
        kinds: &[Kind],
        expected: &str,
    ) -> Result<Option<&'a str>, ApiError> {
        self.typed(name, expected, |raw| {
            kinds.contains(&Kind::of(raw)).then_some(())
        })?;
        Ok(self.get(name))
    }
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
        let refused = |e: json::JsonError| match e.what {
            "expected an object" => ApiError::bad_json("the request body must be a JSON object"),
            "nested too deeply" => ApiError::bad_json(format!(
                "the request body is nested deeper than {} levels ({e})",
                json::MAX_DEPTH
            )),
            _ => ApiError::bad_json(format!("the request body is not valid JSON: {e}")),
        };
        // One validating pass over the body; the checks below read nested values from its tape.
        let doc = json::Document::parse(text).map_err(refused)?;
        let fields = Fields(doc.object(doc.root()).map_err(refused)?);

        if fields.0.get("model").is_some() && !model_field_allowed {
            return Err(ApiError::invalid_field(
                "model",
                "`model` is not accepted: the router picks the model for the task in the URL",
            ));
        }
        let model = fields.typed("model", "a task name string", |raw| {
            json::as_str(raw).map(Cow::into_owned)
        })?;
        let messages = fields
            .get("messages")
            .ok_or_else(|| ApiError::invalid_field("messages", "`messages` is required"))?;
        check_messages(&doc, messages)?;

        let max_completion_tokens = fields.positive("max_completion_tokens")?;
        let max_tokens = fields.positive("max_tokens")?;
        fields.in_range("temperature", (0.0, 2.0), "between 0 and 2")?;
        fields.in_range("top_p", (0.0, 1.0), "between 0 and 1")?;
        fields.in_range("frequency_penalty", (-2.0, 2.0), "between -2 and 2")?;
        fields.in_range("presence_penalty", (-2.0, 2.0), "between -2 and 2")?;
        let stream = fields
            .typed("stream", "true or false", json::as_bool)?
            .unwrap_or(false);
        fields.typed("parallel_tool_calls", "true or false", json::as_bool)?;
        fields.of_kind("stream_options", &[Kind::Object], "an object")?;
        fields.typed("seed", "an integer", json::as_i64)?;
        for name in [
            "user",
            "reasoning_effort",
            "reasoning_format",
            "service_tier",
        ] {
            fields.of_kind(name, &[Kind::String], "a string")?;
        }
        if let Some(n) = fields.typed("n", "an integer", json::as_u64)? {
            if n != 1 {
                return Err(ApiError::invalid_field(
                    "n",
                    "`n` must be 1: Groq returns one choice per request",
                ));
            }
        }
        check_stop(&doc, &fields)?;
        check_tools(&doc, &fields)?;
        if let Some(format) = fields.of_kind("response_format", &[Kind::Object], "an object")? {
            if doc.member(format, "type").and_then(json::as_str).is_none() {
                return Err(ApiError::invalid_field(
                    "response_format.type",
                    "`response_format.type` must be a string",
                ));
            }
        }
        fields.of_kind(
            "tool_choice",
            &[Kind::String, Kind::Object],
            "a string or an object",
        )?;

        let mut joined = String::with_capacity(body.len());
        let Fields(object) = &fields;
        for (key, value) in &object.0 {
            if key == "model" {
                continue;
            }
            if !joined.is_empty() {
                joined.push(',');
            }
            json::push_string(&mut joined, key);
            joined.push(':');
            joined.push_str(value);
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
        json::push_string(&mut out, model);
        out.push(',');
        out.push_str(&self.fields);
        out.push('}');
        out
    }
}

fn check_stop<'a>(doc: &json::Document<'a>, fields: &Fields<'a>) -> Result<(), ApiError> {
    let refused = || {
        ApiError::invalid_field(
            "stop",
            format!("`stop` must be a string or a list of at most {MAX_STOP} strings"),
        )
    };
    let Some(raw) = fields.get("stop") else {
        return Ok(());
    };
    match Kind::of(raw) {
        Kind::String => Ok(()),
        Kind::Array => {
            let items = doc.items(raw).map_err(|_| refused())?;
            if items.len() <= MAX_STOP && items.iter().all(|i| Kind::of(i) == Kind::String) {
                Ok(())
            } else {
                Err(refused())
            }
        }
        _ => Err(refused()),
    }
}

fn check_tools<'a>(doc: &json::Document<'a>, fields: &Fields<'a>) -> Result<(), ApiError> {
    let Some(raw) = fields.of_kind("tools", &[Kind::Array], "a list of tool objects")? else {
        return Ok(());
    };
    let tools = doc
        .items(raw)
        .map_err(|_| ApiError::invalid_field("tools", "`tools` must be a list of tool objects"))?;
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid_field(
            "tools",
            format!("`tools` may hold at most {MAX_TOOLS} tools"),
        ));
    }
    for (i, tool) in tools.iter().enumerate() {
        if doc.member(tool, "type").and_then(json::as_str).is_none() {
            return Err(ApiError::invalid_field(
                format!("tools[{i}]"),
                format!("`tools[{i}]` must be an object with a string `type`"),
            ));
        }
    }
    Ok(())
}

/// Checks every message: an object with a known `role` and, where the role needs it, `content`
/// that is a string or a list of parts each with a string `type`.
fn check_messages<'a>(doc: &json::Document<'a>, raw: &'a str) -> Result<(), ApiError> {
    let messages = match Kind::of(raw) {
        Kind::Array => doc
            .items(raw)
            .map_err(|_| ApiError::invalid_field("messages", "`messages` must be a list"))?,
        _ => {
            return Err(ApiError::invalid_field(
                "messages",
                "`messages` must be a list of message objects",
            ))
        }
    };
    if messages.is_empty() {
        return Err(ApiError::invalid_field(
            "messages",
            "`messages` must not be empty",
        ));
    }
    for (i, message) in messages.iter().enumerate() {
        check_message(doc, i, message)?;
    }
    Ok(())
}

fn check_message<'a>(doc: &json::Document<'a>, i: usize, raw: &'a str) -> Result<(), ApiError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let members = match Kind::of(raw) {
        Kind::Object => doc.object(raw).ok(),
        _ => None,
    }
    .map(Fields)
    .ok_or_else(|| {
        let param = format!("messages[{i}]");
        ApiError::invalid_field(
            &param,
            format!("`{param}` must be an object with a string `role` and `content`"),
        )
    })?;
    let role = members.get("role").ok_or_else(|| {
        ApiError::invalid_field(field("role"), format!("`{}` is required", field("role")))
    })?;
    let role = json::as_str(role)
        .filter(|r| ROLES.contains(&r.as_ref()))
        .ok_or_else(|| {
            ApiError::invalid_field(
                field("role"),
                format!("`{}` must be one of {}", field("role"), ROLES.join(", ")),
            )
        })?;
    match members.get("content") {
        Some(content) if content_ok(doc, content) => Ok(()),
        Some(_) => Err(ApiError::invalid_field(
            field("content"),
            format!(
                "`{}` must be a string or a list of parts with a `type`",
                field("content")
            ),
        )),
        // An assistant turn that calls tools may have no content.
        None if role == "assistant" && members.get("tool_calls").is_some() => Ok(()),
        None => Err(ApiError::invalid_field(
            field("content"),
            format!("`{}` is required for role `{role}`", field("content")),
        )),
    }
}

fn content_ok<'a>(doc: &json::Document<'a>, raw: &'a str) -> bool {
    match Kind::of(raw) {
        Kind::String => true,
        Kind::Array => doc.items(raw).is_ok_and(|parts| {
            parts.iter().all(|part| {
                doc.member(part, "type")
                    .and_then(json::as_str)
                    .is_some_and(|t| !t.is_empty())
            })
        }),
        _ => false,
    }
}
