//! Groq's wire format: the chat body the router sends, the completions, SSE chunks and errors it
//! reads, what each answer means for routing (`Outcome`), and the `Provider` seam to the network.
//! Knows nothing of callers or of routing policy.

pub mod body;
pub mod completion;
pub mod outcome;
pub mod provider;
pub mod replay;
pub mod sse;

/// A model in Groq's `GET /openai/v1/models`, with the limits Groq lists for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ListedModel {
    pub id: String,
    pub context_window: Option<u64>,
    pub max_completion_tokens: Option<u64>,
}

/// The models in Groq's answer to `GET /openai/v1/models`; `Err` says why it is not a list.
pub fn listed_models(status: u16, body: &[u8]) -> Result<Vec<ListedModel>, String> {
    #[derive(serde::Deserialize)]
    struct ModelList {
        data: Vec<ListedModel>,
    }
    if status != 200 {
        return Err(format!("Groq answered {status}"));
    }
    let list: ModelList = crate::json::read(body).ok_or("not a model list")?;
    Ok(list.data)
}
