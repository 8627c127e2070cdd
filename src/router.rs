//! The fallback loop: walk a `ModelChain` in order until one model answers, recording an
//! `Attempt` per model, and turn a chain that failed into the one error the caller should see.

use serde::Serialize;
use serde_json::json;

use crate::chain::ModelChain;
use crate::completion::Completion;
use crate::error::ApiError;
use crate::log::{Level, Log};
use crate::outcome::{classify_error, redact_org_ids, retry_after_secs, GroqError, Outcome};
use crate::provider::{Provider, TransportError, UpstreamCall};
use crate::request::ChatRequest;

/// One model tried for one request; shown to callers in `attempts` and in logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub model: String,
    pub outcome: Outcome,
    /// Groq's HTTP status; `None` when there was no answer (timeout, connection error).
    pub status: Option<u16>,
    /// Groq's error `code`, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub duration_ms: u64,
}

/// What the loop needs besides the chain and the body.
pub struct RouteContext<'a> {
    pub request_id: &'a str,
    pub task: &'a str,
    /// `{GROQ_BASE_URL}/openai/v1/chat/completions`
    pub url: &'a str,
    pub api_key: &'a str,
    pub attempt_timeout_ms: u64,
    /// Milliseconds since some fixed point; only differences are used.
    pub now_ms: &'a dyn Fn() -> u64,
    pub log: &'a dyn Log,
}

/// A chain that produced an answer.
#[derive(Debug)]
pub struct Routed {
    pub model: String,
    pub completion: Completion,
    pub attempts: Vec<Attempt>,
}

/// A failed attempt's details the final verdict needs.
struct Failure {
    retry_after_secs: Option<u64>,
    error: Option<GroqError>,
}

pub async fn route<P: Provider>(
    ctx: &RouteContext<'_>,
    chain: &ModelChain,
    request: &ChatRequest,
    provider: &P,
) -> Result<Routed, ApiError> {
    let mut attempts: Vec<Attempt> = Vec::with_capacity(chain.entries.len());
    let mut failures: Vec<Failure> = Vec::with_capacity(chain.entries.len());

    for model in chain.models() {
        let started = (ctx.now_ms)();
        let result = provider
            .chat(UpstreamCall {
                url: ctx.url,
                api_key: ctx.api_key,
                model,
                body: request.body_for(model),
                timeout_ms: ctx.attempt_timeout_ms,
            })
            .await;
        let duration_ms = (ctx.now_ms)().saturating_sub(started);

        let (outcome, status, failure, completion) = match result {
            Err(TransportError::Timeout) => (Outcome::Timeout, None, None, None),
            Err(TransportError::Connection(_)) => (Outcome::ConnectionError, None, None, None),
            Ok(reply) if (200..300).contains(&reply.status) => match Completion::parse(&reply.body)
            {
                Some(c) => (Outcome::Ok, Some(reply.status), None, Some(c)),
                None => (Outcome::InvalidResponse, Some(reply.status), None, None),
            },
            Ok(reply) => {
                let error = GroqError::from_body(&reply.body);
                let outcome =
                    classify_error(reply.status, error.as_ref().and_then(|e| e.code.as_deref()));
                let failure = Failure {
                    retry_after_secs: retry_after_secs(
                        reply.retry_after.as_deref(),
                        reply.reset_tokens.as_deref(),
                        reply.reset_requests.as_deref(),
                    ),
                    error,
                };
                (outcome, Some(reply.status), Some(failure), None)
            }
        };
        let code = failure
            .as_ref()
            .and_then(|f| f.error.as_ref())
            .and_then(|e| e.code.clone());
        let attempt = Attempt {
            model: model.to_string(),
            outcome,
            status,
            code,
            duration_ms,
        };
        log_attempt(ctx, attempts.len() + 1, &attempt);
        attempts.push(attempt);

        if let Some(completion) = completion {
            return Ok(Routed {
                model: model.to_string(),
                completion,
                attempts,
            });
        }
        let failure = failure.unwrap_or(Failure {
            retry_after_secs: None,
            error: None,
        });
        match outcome {
            Outcome::InvalidRequest => return Err(rejected(failure.error, attempts)),
            Outcome::ProviderAuthFailed => return Err(ApiError::ProviderAuthFailed { attempts }),
            _ => failures.push(failure),
        }
    }
    Err(verdict(attempts, failures))
}

/// The error for a chain in which every model failed with a failure that allowed fallback.
fn verdict(attempts: Vec<Attempt>, failures: Vec<Failure>) -> ApiError {
    // A gone model is the operator's problem, not a reason the caller should stop retrying: when
    // every model that still exists was rate-limited, the caller gets 429 and when to come back.
    let live = || {
        attempts
            .iter()
            .zip(&failures)
            .filter(|(a, _)| a.outcome != Outcome::ModelGone)
    };
    let all_live_are = |o: Outcome| live().count() > 0 && live().all(|(a, _)| a.outcome == o);

    if all_live_are(Outcome::RateLimited) {
        let retry_after_secs = live()
            .filter_map(|(_, f)| f.retry_after_secs)
            .min()
            .unwrap_or(1);
        return ApiError::RateLimited {
            retry_after_secs,
            attempts,
        };
    }
    // No model could take this request (too long for every context window, say): that is the
    // caller's to fix, so answer 400 with Groq's own reason.
    if all_live_are(Outcome::CannotServe) {
        let error = live().filter_map(|(_, f)| f.error.clone()).next_back();
        return rejected(error, attempts);
    }
    ApiError::AllModelsFailed { attempts }
}

fn rejected(error: Option<GroqError>, attempts: Vec<Attempt>) -> ApiError {
    let error = error.unwrap_or_default();
    ApiError::UpstreamRejected {
        message: redact_org_ids(
            error
                .message
                .as_deref()
                .unwrap_or("Groq refused the request"),
        ),
        code: error.code,
        param: error.param,
        attempts,
    }
}

fn log_attempt(ctx: &RouteContext<'_>, number: usize, attempt: &Attempt) {
    let level = match attempt.outcome {
        Outcome::Ok => Level::Info,
        Outcome::ProviderAuthFailed => Level::Error,
        _ => Level::Warn,
    };
    let mut line = json!({
        "level": level.as_str(),
        "event": "attempt",
        "request_id": ctx.request_id,
        "task": ctx.task,
        "model": attempt.model,
        "attempt": number,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "error_code": attempt.code,
        "duration_ms": attempt.duration_ms,
    });
    let hint = match attempt.outcome {
        Outcome::ModelGone => Some(format!(
            "model `{}` is gone at Groq; remove or replace it in `MODEL_REGISTRY` / `DEFAULT_*_MODEL` / `FORCE_MODEL`",
            attempt.model
        )),
        Outcome::ProviderAuthFailed => Some("Groq rejected `GROQ_API_KEY`; rotate the secret".to_string()),
        _ => None,
    };
    if let Some(hint) = hint {
        line["hint"] = json!(hint);
    }
    ctx.log.emit(level, line);
}
