//! The fallback loop: walk a `ModelChain` in order until one model answers, recording an
//! `Attempt` per model, and turn a chain that failed into the one error the caller should see.
//! For streams, a model is committed to once its first event has arrived; until then a failure
//! moves on to the next model like any other.

use std::cell::RefCell;

use crate::chain::ModelChain;
use crate::completion::{Completion, TokenCounts};
use crate::error::ApiError;
use crate::health::{Availability, HealthBook, SkipReason};
use crate::json::{self, JsonObject};
use crate::log::{Level, Log};
use crate::outcome::{classify_error, redact_org_ids, retry_after_secs, GroqError, Outcome};
use crate::provider::{Provider, TransportError, UpstreamBody, UpstreamCall};
use crate::request::ChatRequest;
use crate::sse::SseScanner;

/// One model tried for one request; shown to callers in `attempts` and in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub model: String,
    pub outcome: Outcome,
    /// Groq's HTTP status; `None` when there was no answer (timeout, connection error).
    pub status: Option<u16>,
    /// Groq's error `code`, when it sent one.
    pub code: Option<String>,
    /// Why a model was skipped without a call.
    pub reason: Option<SkipReason>,
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
    /// When the whole request must be answered (same clock as `now_ms`).
    pub deadline_ms: u64,
    /// How long a gone verdict lasts.
    pub gone_ttl_ms: u64,
    /// Epoch milliseconds.
    pub now_ms: &'a dyn Fn() -> u64,
    pub log: &'a dyn Log,
    /// This isolate's memory of model health; borrowed briefly, never across an `await`.
    pub health: &'a RefCell<HealthBook>,
}

/// A chain that produced an answer.
pub struct Routed<B> {
    pub model: String,
    pub answer: Answer<B>,
    pub attempts: Vec<Attempt>,
}

pub enum Answer<B> {
    /// A whole chat completion: Groq's bytes, and what the router read from them.
    Complete {
        body: Vec<u8>,
        completion: Completion,
    },
    /// A stream whose first event has arrived; the relay forwards `first`, then the rest of `body`.
    Stream(StreamStart<B>),
}

pub struct StreamStart<B> {
    /// Whole events received so far, as Groq sent them.
    pub first: Vec<u8>,
    pub scanner: SseScanner,
    pub body: B,
    pub usage: Option<TokenCounts>,
    /// `[DONE]` is already in `first`.
    pub done: bool,
}

/// A failed attempt's details the final verdict needs.
#[derive(Default)]
struct Failure {
    retry_after_secs: Option<u64>,
    error: Option<GroqError>,
}

type Tried<B> = (Outcome, Option<u16>, Failure, Option<Answer<B>>);

/// What the verdict on a failed chain needs beyond the attempts: the earliest `Retry-After` of
/// the rate-limited ones, and Groq's reason from the last one that could not serve the request.
#[derive(Default)]
struct FailureNotes {
    retry_after_secs: Option<u64>,
    cannot_serve: Option<GroqError>,
}

impl FailureNotes {
    fn note(&mut self, outcome: Outcome, failure: Failure) {
        match outcome {
            Outcome::RateLimited => {
                self.retry_after_secs = match (self.retry_after_secs, failure.retry_after_secs) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Outcome::CannotServe if failure.error.is_some() => self.cannot_serve = failure.error,
            _ => {}
        }
    }
}

pub async fn route<P: Provider>(
    ctx: &RouteContext<'_>,
    chain: &ModelChain,
    request: &ChatRequest,
    provider: &P,
) -> Result<Routed<P::Body>, ApiError> {
    let mut attempts: Vec<Attempt> = Vec::with_capacity(chain.entries.len());
    let mut notes = FailureNotes::default();
    // The chain, then the models health memory skipped (but not gone ones), as a last resort.
    let mut order: Vec<(&str, bool)> = chain.models().map(|m| (m, false)).collect();

    let mut i = 0;
    while let Some(&(model, last_resort)) = order.get(i) {
        i += 1;
        let started = (ctx.now_ms)();
        if started >= ctx.deadline_ms {
            return Err(ApiError::DeadlineExceeded { attempts });
        }
        if !last_resort {
            let availability = ctx.health.borrow_mut().availability(model, started);
            let reason = match availability {
                Availability::Available => None,
                Availability::Gone(_) => Some(SkipReason::Gone),
                Availability::Skip(reason) => {
                    order.push((model, true));
                    Some(reason)
                }
            };
            if let Some(reason) = reason {
                attempts.push(Attempt {
                    model: model.to_string(),
                    outcome: Outcome::Skipped,
                    status: None,
                    code: None,
                    reason: Some(reason),
                    duration_ms: 0,
                });
                continue;
            }
        }

        let timeout_ms = ctx.attempt_timeout_ms.min(ctx.deadline_ms - started);
        let (outcome, status, failure, answer) =
            try_model(ctx, model, request, provider, started, timeout_ms).await;
        let ended = (ctx.now_ms)();
        ctx.health.borrow_mut().record(
            model,
            outcome,
            failure.retry_after_secs.map(|s| s * 1000),
            ended,
            ctx.gone_ttl_ms,
        );
        let attempt = Attempt {
            model: model.to_string(),
            outcome,
            status,
            code: failure.error.as_ref().and_then(|e| e.code.clone()),
            reason: None,
            duration_ms: ended.saturating_sub(started),
        };
        // An answer from the first model called is told by the request line alone; once a called
        // model has failed, every call gets its own line, the answering one included.
        let failed_before = attempts.iter().any(|a| a.outcome != Outcome::Skipped);
        if outcome != Outcome::Ok || failed_before {
            log_attempt(ctx, attempts.len() + 1, &attempt);
        }
        attempts.push(attempt);

        if let Some(answer) = answer {
            return Ok(Routed {
                model: model.to_string(),
                answer,
                attempts,
            });
        }
        match outcome {
            Outcome::InvalidRequest => return Err(rejected(failure.error, attempts)),
            Outcome::ProviderAuthFailed => return Err(ApiError::ProviderAuthFailed { attempts }),
            Outcome::Timeout if ended >= ctx.deadline_ms => {
                return Err(ApiError::DeadlineExceeded { attempts })
            }
            _ => notes.note(outcome, failure),
        }
    }
    Err(verdict(attempts, notes))
}

async fn try_model<P: Provider>(
    ctx: &RouteContext<'_>,
    model: &str,
    request: &ChatRequest,
    provider: &P,
    started: u64,
    timeout_ms: u64,
) -> Tried<P::Body> {
    let deadline = started + timeout_ms;
    let remaining = || deadline.saturating_sub((ctx.now_ms)()).max(1);
    let transport = |e: TransportError| -> Tried<P::Body> {
        let outcome = match e {
            TransportError::Timeout => Outcome::Timeout,
            TransportError::Connection(_) => Outcome::ConnectionError,
        };
        (outcome, None, Failure::default(), None)
    };

    let call = UpstreamCall {
        url: ctx.url,
        api_key: ctx.api_key,
        model,
        body: request.body_for(model),
        timeout_ms,
        streamed: request.stream,
    };
    let (head, mut body) = match provider.send(call).await {
        Ok(sent) => sent,
        Err(e) => return transport(e),
    };
    let status = Some(head.status);

    if !(200..300).contains(&head.status) {
        // The error body explains the status; if it cannot be read, the status alone decides.
        let bytes = body.read_all(remaining()).await.unwrap_or_default();
        let error = GroqError::from_body(&bytes);
        let outcome = classify_error(head.status, error.as_ref().and_then(|e| e.code.as_deref()));
        let failure = Failure {
            retry_after_secs: retry_after_secs(
                head.retry_after.as_deref(),
                head.reset_tokens.as_deref(),
                head.reset_requests.as_deref(),
            ),
            error,
        };
        return (outcome, status, failure, None);
    }

    if !request.stream {
        return match body.read_all(remaining()).await {
            Err(e) => transport(e),
            Ok(bytes) => match Completion::parse(&bytes) {
                Some(completion) => (
                    Outcome::Ok,
                    status,
                    Failure::default(),
                    Some(Answer::Complete {
                        body: bytes,
                        completion,
                    }),
                ),
                None => (Outcome::InvalidResponse, status, Failure::default(), None),
            },
        };
    }

    // Stream: wait for the first event; until then this model can still be abandoned.
    let mut scanner = SseScanner::default();
    let mut first = Vec::new();
    loop {
        let chunk = match body.next_chunk(remaining()).await {
            Err(e) => return transport(e),
            // Ended before its first event: nothing was relayed, so another model may answer.
            Ok(None) => return (Outcome::UpstreamError, status, Failure::default(), None),
            Ok(Some(chunk)) => chunk,
        };
        let scanned = scanner.push(&chunk);
        first.extend_from_slice(&scanned.forward);
        if let Some(error) = scanned.error {
            let outcome = classify_error(error.status_code.unwrap_or(500), error.code.as_deref());
            let failure = Failure {
                retry_after_secs: None,
                error: Some(error),
            };
            return (outcome, status, failure, None);
        }
        if scanned.data_events > 0 || scanned.done {
            let start = StreamStart {
                first,
                scanner,
                body,
                usage: scanned.usage,
                done: scanned.done,
            };
            return (
                Outcome::Ok,
                status,
                Failure::default(),
                Some(Answer::Stream(start)),
            );
        }
    }
}

/// The error for a chain in which every model failed with a failure that allowed fallback.
fn verdict(attempts: Vec<Attempt>, notes: FailureNotes) -> ApiError {
    // A gone model is the operator's problem, not a reason the caller should stop retrying: when
    // every model that still exists was rate-limited, the caller gets 429 and when to come back.
    // Skipped entries made no call; a skipped model that was retried has its own attempt.
    let mut live = attempts
        .iter()
        .map(|a| a.outcome)
        .filter(|o| !matches!(o, Outcome::ModelGone | Outcome::Skipped));
    let all_live = live.next().filter(|&first| live.all(|o| o == first));

    match all_live {
        Some(Outcome::RateLimited) => ApiError::RateLimited {
            retry_after_secs: notes.retry_after_secs.unwrap_or(1),
            attempts,
        },
        // No model could take this request (too long for every context window, say): that is
        // the caller's to fix, so answer 400 with Groq's own reason.
        Some(Outcome::CannotServe) => rejected(notes.cannot_serve, attempts),
        _ => ApiError::AllModelsFailed { attempts },
    }
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
    if !ctx.log.enabled(level) {
        return;
    }
    let hint = match attempt.outcome {
        Outcome::ModelGone => Some(format!(
            "model `{}` is gone at Groq; remove or replace it in `MODEL_REGISTRY` / `DEFAULT_*_MODEL` / `FORCE_MODEL`",
            attempt.model
        )),
        Outcome::ProviderAuthFailed => Some("Groq rejected `GROQ_API_KEY`; rotate the secret".to_string()),
        _ => None,
    };
    let line = level
        .line("attempt")
        .str("request_id", ctx.request_id)
        .str("task", ctx.task)
        .str("model", &attempt.model)
        .num("attempt", number as u64)
        .str("outcome", attempt.outcome.as_str())
        .opt_num("status", attempt.status.map(u64::from))
        .opt_str("error_code", attempt.code.as_deref())
        .num("duration_ms", attempt.duration_ms)
        .maybe(hint.as_deref(), |o, h| o.str("hint", h))
        .finish();
    ctx.log.emit(level, line);
}

/// The attempts list as JSON, for answers and errors.
pub fn attempts_json(attempts: &[Attempt]) -> String {
    json::array(attempts.iter().map(|a| {
        JsonObject::new()
            .str("model", &a.model)
            .str("outcome", a.outcome.as_str())
            .opt_num("status", a.status.map(u64::from))
            .maybe(a.code.as_deref(), |o, c| o.str("code", c))
            .maybe(a.reason, |o, r| o.str("reason", r.as_str()))
            .num("duration_ms", a.duration_ms)
            .finish()
    }))
}
