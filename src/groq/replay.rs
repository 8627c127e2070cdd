//! A stream made whole, and a whole answer made a stream, in Groq's shapes: the cache stores a
//! streamed answer as the chat completion its chunks add up to (`assemble`), and serves a stored
//! completion to a streamed request as the events Groq would have sent (`stream_of`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::sse::event_data;
use crate::json::{read, Text};

/// One chunk of Groq's stream, as far as assembling reads it.
#[derive(Deserialize)]
struct GroqChunk<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    created: Option<u64>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    system_fingerprint: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    x_groq: Option<ChunkXGroq<'a>>,
}

#[derive(Deserialize)]
struct ChunkXGroq<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    index: u32,
    #[serde(borrow, default)]
    delta: Delta<'a>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize, Default)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Text<'a>>,
    #[serde(borrow)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    arguments: Option<Text<'a>>,
}

/// A chat completion as Groq writes it, with what the cache keeps of one.
#[derive(Serialize, Deserialize)]
struct Whole<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    object: Text<'a>,
    #[serde(default)]
    created: u64,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    choices: Vec<WholeChoice<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    x_groq: Option<WholeXGroq<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WholeXGroq<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WholeChoice<'a> {
    index: u32,
    #[serde(borrow)]
    message: Message<'a>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Serialize, Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    #[serde(borrow)]
    content: Option<Text<'a>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    reasoning: Option<Text<'a>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Serialize, Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    function: Function<'a>,
}

#[derive(Serialize, Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    arguments: Text<'a>,
}

fn text(s: String) -> Text<'static> {
    Text(s.into())
}

/// The chat completion a whole stream (`[DONE]` seen, no error) adds up to, and its
/// `finish_reason`: its content, reasoning and tool calls joined, Groq's usage. `None` when it
/// is not one answer (several choices, no chunk, a chunk that is not JSON).
pub fn assemble(stream: &[u8]) -> Option<(Vec<u8>, String)> {
    let events = event_data(stream);
    let (mut id, mut created, mut model, mut fingerprint, mut usage) = (None, 0, None, None, None);
    let mut groq_id = None::<String>;
    let (mut content, mut reasoning) = (None::<String>, None::<String>);
    let mut calls: Vec<(String, String, String, String)> = Vec::new();
    let mut finish = None;
    for data in events.iter().filter(|d| d.trim_ascii() != b"[DONE]") {
        let chunk: GroqChunk = read(data)?;
        id = id.or(chunk.id.map(|t| t.0.into_owned()));
        created = chunk.created.unwrap_or(created);
        model = model.or(chunk.model.map(|t| t.0.into_owned()));
        fingerprint = fingerprint.or(chunk.system_fingerprint.map(RawValue::to_owned));
        let (groq_id_now, groq_usage) = chunk.x_groq.map_or((None, None), |x| (x.id, x.usage));
        groq_id = groq_id.or(groq_id_now.map(|t| t.0.into_owned()));
        if let Some(u) = chunk.usage.or(groq_usage) {
            usage = Some(u.to_owned());
        }
        for choice in chunk.choices {
            if choice.index != 0 {
                return None;
            }
            let delta = choice.delta;
            if let Some(more) = delta.content {
                content.get_or_insert_default().push_str(&more.0);
            }
            if let Some(more) = delta.reasoning {
                reasoning.get_or_insert_default().push_str(&more.0);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                if calls.len() <= call.index {
                    calls.resize_with(call.index + 1, Default::default);
                }
                let slot = &mut calls[call.index];
                if let Some(v) = call.id {
                    slot.0.push_str(&v.0);
                }
                if let Some(v) = call.kind {
                    slot.1.push_str(&v.0);
                }
                if let Some(f) = call.function {
                    slot.2.push_str(f.name.as_ref().map_or("", |n| &n.0));
                    slot.3.push_str(f.arguments.as_ref().map_or("", |a| &a.0));
                }
            }
            finish = choice.finish_reason.map(|f| f.0.into_owned()).or(finish);
        }
    }
    let finish = finish?;
    let tool_calls = (!calls.is_empty()).then(|| {
        let each = calls
            .into_iter()
            .map(|(id, kind, name, arguments)| ToolCall {
                id: text(id),
                kind: text(if kind.is_empty() {
                    "function".into()
                } else {
                    kind
                }),
                function: Function {
                    name: text(name),
                    arguments: text(arguments),
                },
            });
        each.collect()
    });
    let usage = usage.as_deref();
    let whole = Whole {
        id: text(id?),
        object: Text("chat.completion".into()),
        created,
        model: text(model?),
        choices: vec![WholeChoice {
            index: 0,
            message: Message {
                role: Text("assistant".into()),
                content: content.map(text),
                reasoning: reasoning.map(text),
                tool_calls,
            },
            finish_reason: Some(Text(finish.clone().into())),
        }],
        usage,
        system_fingerprint: fingerprint.as_deref(),
        x_groq: Some(WholeXGroq {
            id: groq_id.map(text),
        }),
    };
    let json = serde_json::to_vec(&whole).ok()?;
    Some((json, finish))
}

/// The model a stored completion says answered it.
pub fn model_of(completion: &[u8]) -> Option<String> {
    let whole: Whole = read(completion)?;
    Some(whole.model.0.into_owned())
}

/// A stored completion as the stream Groq would have sent: the role, the reasoning, the
/// content and the tool calls each in one chunk, the final chunk with `finish_reason` and
/// `x_groq.usage`, the `usage` chunk when `include_usage` asked for it, and `data: [DONE]`.
pub fn stream_of(completion: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    #[derive(Serialize)]
    struct Out<'r> {
        id: &'r str,
        object: &'static str,
        created: u64,
        model: &'r str,
        #[serde(skip_serializing_if = "Option::is_none")]
        system_fingerprint: Option<&'r RawValue>,
        choices: Vec<OutChoice<'r>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<&'r RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        x_groq: Option<OutXGroq<'r>>,
    }
    #[derive(Serialize)]
    struct OutXGroq<'r> {
        id: &'r str,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<&'r RawValue>,
    }
    #[derive(Serialize)]
    struct OutChoice<'r> {
        index: u32,
        delta: OutDelta<'r>,
        logprobs: Option<()>,
        finish_reason: Option<&'r str>,
    }
    #[derive(Serialize, Default)]
    struct OutDelta<'r> {
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'r str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<&'r str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning: Option<&'r str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_calls: Option<Vec<OutToolCall<'r>>>,
    }
    #[derive(Serialize)]
    struct OutToolCall<'r> {
        index: usize,
        id: &'r str,
        #[serde(rename = "type")]
        kind: &'r str,
        function: &'r Function<'r>,
    }
    let whole: Whole = read(completion)?;
    let choice = whole.choices.first()?;
    let message = &choice.message;
    let groq_id = whole.x_groq.as_ref().and_then(|x| x.id.as_ref());
    let groq_id = groq_id.map_or(whole.id.0.as_ref(), |id| id.0.as_ref());
    let chunk = |delta: OutDelta<'_>, finish: Option<&str>, last: bool| {
        let out = Out {
            id: &whole.id.0,
            object: "chat.completion.chunk",
            created: whole.created,
            model: &whole.model.0,
            system_fingerprint: whole.system_fingerprint,
            choices: vec![OutChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
            x_groq: Some(OutXGroq {
                id: groq_id,
                usage: if last { whole.usage } else { None },
            }),
        };
        event(&out)
    };
    let mut stream = chunk(
        OutDelta {
            role: Some("assistant"),
            content: Some(""),
            ..OutDelta::default()
        },
        None,
        false,
    );
    if let Some(reasoning) = &message.reasoning {
        let delta = OutDelta {
            reasoning: Some(&reasoning.0),
            ..OutDelta::default()
        };
        stream.extend(chunk(delta, None, false));
    }
    if let Some(content) = message.content.as_ref().filter(|c| !c.0.is_empty()) {
        let delta = OutDelta {
            content: Some(&content.0),
            ..OutDelta::default()
        };
        stream.extend(chunk(delta, None, false));
    }
    if let Some(calls) = &message.tool_calls {
        let calls = calls.iter().enumerate().map(|(index, call)| OutToolCall {
            index,
            id: &call.id.0,
            kind: &call.kind.0,
            function: &call.function,
        });
        let delta = OutDelta {
            tool_calls: Some(calls.collect()),
            ..OutDelta::default()
        };
        stream.extend(chunk(delta, None, false));
    }
    let finish = choice.finish_reason.as_ref().map(|f| f.0.as_ref());
    stream.extend(chunk(OutDelta::default(), finish, true));
    if include_usage {
        let out = Out {
            id: &whole.id.0,
            object: "chat.completion.chunk",
            created: whole.created,
            model: &whole.model.0,
            system_fingerprint: whole.system_fingerprint,
            choices: Vec::new(),
            usage: whole.usage,
            x_groq: None,
        };
        stream.extend(event(&out));
    }
    stream.extend_from_slice(b"data: [DONE]\n\n");
    Some(stream)
}

fn event(chunk: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_vec(chunk).expect("chunks always serialize");
    [&b"data: "[..], &json, b"\n\n"].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"x_groq\":{\"id\":\"req_1\"}}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\\"x\\\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_stream_adds_up_to_its_completion_and_back() {
        let (whole, finish) = assemble(STREAM.as_bytes()).unwrap();
        assert_eq!(finish, "stop");
        let json: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(json["choices"][0]["message"]["content"], "Hello \"x\"");
        assert_eq!(json["usage"]["total_tokens"], 12);
        assert_eq!(
            (&json["model"], &json["object"]),
            (&"m".into(), &"chat.completion".into())
        );
        assert_eq!(model_of(&whole).as_deref(), Some("m"));
        let replayed = stream_of(&whole, true).unwrap();
        let text = String::from_utf8(replayed.clone()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(
            text.contains(r#""choices":[],"usage":{"prompt_tokens":9"#),
            "{text}"
        );
        // Replayed, it adds up to the same answer.
        let (again, _) = assemble(&replayed).unwrap();
        assert_eq!(again, whole);
    }

    #[test]
    fn tool_calls_are_joined_by_index() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (whole, finish) = assemble(stream.as_bytes()).unwrap();
        assert_eq!(finish, "tool_calls");
        let json: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        let call = &json["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(call["id"], "call_1");
        let replayed = String::from_utf8(stream_of(&whole, false).unwrap()).unwrap();
        assert!(replayed.contains(r#""tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]"#), "{replayed}");
        // Several choices are not one answer.
        let two = STREAM.replace(
            "\"index\":0,\"delta\":{\"content\":\"Hel\"}",
            "\"index\":1,\"delta\":{\"content\":\"Hel\"}",
        );
        assert!(assemble(two.as_bytes()).is_none());
    }
}
