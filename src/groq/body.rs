//! `ChatBody`: the chat-completions body Groq receives, made of a caller's. Their fields go
//! through as the bytes they sent, in their order; only `model` is set (first), and, where a
//! task caps tokens and the caller asked for no limit, the cap as `max_completion_tokens`.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// What Groq receives for a request, for any model.
#[derive(Debug)]
pub struct ChatBody<'a> {
    /// The caller's fields Groq reads (not `model`, not the router's own), as sent.
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `"stream": true`: the answer is an event stream.
    pub stream: bool,
    /// A task's cap, sent as `max_completion_tokens` when the caller asked for no limit.
    pub filled_cap: Option<u64>,
    /// The size of the caller's body: Groq's is about as large.
    pub body_bytes: usize,
}

impl<'a> ChatBody<'a> {
    /// The body for `model`, written where its reader wants it.
    pub fn for_model<'r>(&'r self, model: &'r str) -> GroqBody<'r, 'a> {
        GroqBody {
            model,
            body: self,
            dropped: &[],
        }
    }
}

/// The body Groq receives for one model, written straight into its destination, so a large body
/// is not held twice (the Worker writes it into the upstream request's JS buffer).
pub struct GroqBody<'r, 'a> {
    model: &'r str,
    body: &'r ChatBody<'a>,
    /// Fields left out for this model, which does not take them.
    dropped: &'r [&'r str],
}

impl<'r> GroqBody<'r, '_> {
    /// The body without `fields` (a model's unsupported optional parameters).
    pub fn without(self, fields: &'r [&'r str]) -> Self {
        GroqBody {
            dropped: fields,
            ..self
        }
    }

    /// Whether Groq answers it with an event stream.
    pub fn streamed(&self) -> bool {
        self.body.stream
    }

    /// About how many bytes the body takes: the caller's body plus the model, and room for a cap.
    pub fn size_hint(&self) -> usize {
        self.body.body_bytes + self.model.len() + 64
    }

    /// Writes the body into `out`; fails only when `out` does.
    pub fn write_into(&self, out: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(out, self).map_err(std::io::Error::other)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Sized once: grown from serde_json's default by doubling, a 1 MiB body was copied
        // about twice more.
        let mut out = Vec::with_capacity(self.size_hint());
        self.write_into(&mut out)
            .expect("strings and raw JSON always serialize into a Vec");
        out
    }
}

impl Serialize for GroqBody<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        let kept =
            (self.body.fields.iter()).filter(|(key, _)| !self.dropped.contains(&key.as_ref()));
        for (key, value) in kept {
            map.serialize_entry(key, value)?;
        }
        if let Some(cap) = self.body.filled_cap {
            map.serialize_entry("max_completion_tokens", &cap)?;
        }
        map.end()
    }
}
