//! `Completion`: the parts of Groq's chat completion the router reads, and `TaskAnswer`, the
//! router's own 200 body for `/v1/tasks/{task}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::router::Attempt;

#[derive(Debug, Clone, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub object: Option<String>,
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Choice {
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<String>,
}

/// Token counts for logs, read from Groq's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenCounts {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

impl TokenCounts {
    pub fn from_usage(usage: Option<&Value>) -> TokenCounts {
        let field = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64);
        TokenCounts {
            prompt_tokens: field("prompt_tokens"),
            completion_tokens: field("completion_tokens"),
            total_tokens: field("total_tokens"),
        }
    }
}

impl Completion {
    /// `None` unless `body` is a chat completion with at least one choice: a 200 that is anything
    /// else (an HTML portal page, a model list) is an upstream failure, not an answer.
    pub fn parse(body: &[u8]) -> Option<Completion> {
        let completion: Completion = serde_json::from_slice(body).ok()?;
        let object_ok = completion
            .object
            .as_deref()
            .is_none_or(|o| o == "chat.completion");
        (object_ok && !completion.choices.is_empty()).then_some(completion)
    }

    pub fn tokens(&self) -> TokenCounts {
        TokenCounts::from_usage(self.usage.as_ref())
    }
}

/// The 200 body of `POST /v1/tasks/{task}`.
#[derive(Debug, Serialize)]
pub struct TaskAnswer<'a> {
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<&'a str>,
    pub model_used: &'a str,
    pub finish_reason: Option<&'a str>,
    pub usage: Option<&'a Value>,
    pub task: &'a str,
    pub request_id: &'a str,
    pub attempts: &'a [Attempt],
}

impl<'a> TaskAnswer<'a> {
    pub fn new(
        completion: &'a Completion,
        model_used: &'a str,
        task: &'a str,
        request_id: &'a str,
        attempts: &'a [Attempt],
    ) -> Self {
        // `parse` guarantees a first choice.
        let choice = &completion.choices[0];
        TaskAnswer {
            content: choice.message.content.as_deref(),
            tool_calls: choice.message.tool_calls.as_ref(),
            reasoning: choice.message.reasoning.as_deref(),
            model_used,
            finish_reason: choice.finish_reason.as_deref(),
            usage: completion.usage.as_ref(),
            task,
            request_id,
            attempts,
        }
    }
}
