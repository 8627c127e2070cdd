//! `Completion`: the parts of Groq's chat completion the router reads, and `TaskAnswer`, the
//! router's own 200 body for `/v1/tasks/{task}`. Groq's `usage` and `tool_calls` are kept as
//! the bytes Groq sent.

use crate::json::{self, JsonObject, Kind};
use crate::router::{attempts_json, Attempt};

/// What the router reads of a chat completion. `usage` and `tool_calls` stay Groq's raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: Option<String>,
    pub tool_calls: Option<String>,
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Option<String>,
}

/// Token counts for logs, read from Groq's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

impl TokenCounts {
    /// Reads the counts from a `usage` object; anything else counts as none.
    pub fn from_usage(usage: Option<&str>) -> TokenCounts {
        let Some(usage) = usage.and_then(|u| json::Object::parse(u).ok()) else {
            return TokenCounts::default();
        };
        let count = |name: &str| usage.get(name).and_then(json::as_u64);
        TokenCounts {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
        }
    }
}

/// `Some(raw)` unless absent or `null`.
fn present(raw: Option<&str>) -> Option<&str> {
    raw.filter(|r| Kind::of(r) != Kind::Null)
}

fn text(raw: Option<&str>) -> Option<String> {
    present(raw).and_then(json::as_str).map(|s| s.into_owned())
}

impl Completion {
    /// `None` unless `body` is a chat completion with at least one choice: a 200 that is anything
    /// else (an HTML portal page, a model list) is an upstream failure, not an answer.
    pub fn parse(body: &[u8]) -> Option<Completion> {
        let body = std::str::from_utf8(body).ok()?;
        // One validating pass over the answer, the nested objects read from its tape (the
        // strings read below, `content` among them, are decoded from their raw text).
        let doc = json::Document::parse(body).ok()?;
        let object = doc.object(doc.root()).ok()?;
        let get = |name: &str| object.get(name);
        if present(get("object"))
            .is_some_and(|o| json::as_str(o).as_deref() != Some("chat.completion"))
        {
            return None;
        }
        let choices = doc.items(get("choices")?).ok()?;
        let choice = doc.object(choices.first()?).ok()?;
        let message = doc.object(choice.get("message")?).ok()?;
        Some(Completion {
            content: text(message.get("content")),
            tool_calls: present(message.get("tool_calls")).map(str::to_string),
            reasoning: text(message.get("reasoning")),
            finish_reason: text(choice.get("finish_reason")),
            usage: present(get("usage")).map(str::to_string),
        })
    }

    pub fn tokens(&self) -> TokenCounts {
        TokenCounts::from_usage(self.usage.as_deref())
    }
}

/// The 200 body of `POST /v1/tasks/{task}`: `content`, `model_used`, `finish_reason`, `usage`,
/// `task`, `request_id`, `attempts` (and `tool_calls` / `reasoning` when the model sent them).
pub fn task_answer(
    completion: &Completion,
    model_used: &str,
    task: &str,
    request_id: &str,
    attempts: &[Attempt],
) -> String {
    JsonObject::new()
        .opt_str("content", completion.content.as_deref())
        .maybe(completion.tool_calls.as_deref(), |o, t| {
            o.raw("tool_calls", t)
        })
        .maybe(completion.reasoning.as_deref(), |o, r| {
            o.str("reasoning", r)
        })
        .str("model_used", model_used)
        .opt_str("finish_reason", completion.finish_reason.as_deref())
        .raw("usage", completion.usage.as_deref().unwrap_or("null"))
        .str("task", task)
        .str("request_id", request_id)
        .raw("attempts", &attempts_json(attempts))
        .finish()
}
