//! `Completion`: the parts of Groq's chat completion the router reads, kept as the JSON Groq
//! sent, and `Usage`, its token counts. Also Groq's completions and stream chunks written the way
//! Groq writes them, for the answers the router makes itself (the mock provider's).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::json::{read, Text};

/// Token counts from Groq's `usage` (a completion's, or a stream's final chunk's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

impl Usage {
    /// Both counts, and their total.
    pub fn counted(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens: Some(prompt_tokens),
            completion_tokens: Some(completion_tokens),
            total_tokens: Some(prompt_tokens + completion_tokens),
            prompt_tokens_details: None,
        }
    }

    /// Prompt tokens served from Groq's prompt cache, where Groq reports them.
    pub fn cached_tokens(&self) -> Option<u64> {
        self.prompt_tokens_details?.cached_tokens
    }

    /// Reads the counts from a `usage` object; anything else counts as none.
    pub fn of(raw: Option<&RawValue>) -> Usage {
        raw.and_then(|u| serde_json::from_str(u.get()).ok())
            .unwrap_or_default()
    }
}

/// What the router reads of a chat completion: Groq's own JSON for each part, never decoded.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: Option<Box<RawValue>>,
    pub tool_calls: Option<Box<RawValue>>,
    pub reasoning: Option<Box<RawValue>>,
    pub finish_reason: Option<Box<RawValue>>,
    pub usage: Option<Box<RawValue>>,
    pub tokens: Usage,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    object: Option<Text<'a>>,
    #[serde(borrow)]
    choices: Vec<WireChoice<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    #[serde(borrow)]
    message: WireMessage<'a>,
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
}

impl Completion {
    /// `None` unless `body` is a chat completion with at least one choice: a 200 that is anything
    /// else (an HTML portal page, a model list) is an upstream failure, not an answer.
    pub fn parse(body: &[u8]) -> Option<Completion> {
        let wire: Wire = read(body)?;
        if wire.object.is_some_and(|o| o.0 != "chat.completion") {
            return None;
        }
        let choice = wire.choices.into_iter().next()?;
        let owned = |raw: Option<&RawValue>| raw.map(RawValue::to_owned);
        Some(Completion {
            content: owned(choice.message.content),
            tool_calls: owned(choice.message.tool_calls),
            reasoning: owned(choice.message.reasoning),
            finish_reason: owned(choice.finish_reason),
            tokens: Usage::of(wire.usage),
            usage: owned(wire.usage),
        })
    }
}

/// What a written message or delta says: the role, the text.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Said<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

/// A chat completion, or one chunk of a stream, as Groq writes it.
#[derive(Serialize)]
struct Written<'a> {
    id: &'a str,
    object: &'a str,
    created: u64,
    model: &'a str,
    choices: [WrittenChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
    x_groq: WrittenXGroq<'a>,
}

#[derive(Serialize)]
struct WrittenChoice<'a> {
    index: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Said<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Said<'a>>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct WrittenXGroq<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
}

/// A whole chat completion saying `message`, as Groq writes it (the router's own ids).
pub fn write_completion(model: &str, message: Said<'_>, usage: &Usage) -> Vec<u8> {
    let written = Written {
        id: "chatcmpl-router",
        object: "chat.completion",
        created: 0,
        model,
        choices: [WrittenChoice {
            index: 0,
            message: Some(message),
            delta: None,
            finish_reason: Some("stop"),
        }],
        usage: Some(usage),
        x_groq: WrittenXGroq {
            id: "req_router",
            usage: None,
        },
    };
    serde_json::to_vec(&written).expect("completions always serialize")
}

/// One event of a stream, `data: {chunk}` and its blank line, as Groq writes it: the final one
/// carries `finish_reason` and Groq's `x_groq.usage`.
pub fn write_chunk(
    model: &str,
    delta: Said<'_>,
    finish_reason: Option<&str>,
    usage: Option<&Usage>,
) -> Vec<u8> {
    let written = Written {
        id: "chatcmpl-router",
        object: "chat.completion.chunk",
        created: 0,
        model,
        choices: [WrittenChoice {
            index: 0,
            message: None,
            delta: Some(delta),
            finish_reason,
        }],
        usage: None,
        x_groq: WrittenXGroq {
            id: "req_router",
            usage,
        },
    };
    let json = serde_json::to_vec(&written).expect("chunks always serialize");
    [&b"data: "[..], &json, b"\n\n"].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_completion_and_refuses_what_is_not_one() {
        let body = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"x\""},"finish_reason":"stop"}],"usage":{"queue_time":0.1,"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let c = Completion::parse(body).unwrap();
        assert_eq!(c.content.unwrap().get(), r#""hi \"x\"""#);
        assert_eq!(c.tokens.total_tokens, Some(12));
        assert_eq!(c.tokens.cached_tokens(), Some(4));
        assert!(c.tool_calls.is_none());
        for not_one in [
            &br#"{"object":"list","data":[]}"#[..],
            br#"{"object":"chat.completion","choices":[]}"#,
            b"<html>",
        ] {
            assert!(Completion::parse(not_one).is_none());
        }
    }
}
