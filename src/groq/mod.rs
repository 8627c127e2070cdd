//! Groq's wire format: the chat body the router sends, the completions, SSE chunks and errors it
//! reads, what each answer means for routing (`Outcome`), and the `Provider` seam to the network.
//! Knows nothing of callers or of routing policy.

pub mod chat;
pub mod completion;
pub mod mock;
pub mod outcome;
pub mod provider;
pub mod sse;
mod text;

pub(crate) use text::named;
pub use text::{cut, read, Kind, Members, Text};

/// The model ids in Groq's `GET /openai/v1/models` answer; `None` when it is not a model list.
pub fn listed_models(body: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Model {
        id: String,
    }
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Model>,
    }
    let list: List = read(body)?;
    Some(list.data.into_iter().map(|m| m.id).collect())
}
