//! The fallback loop: walk a `ModelChain` in order until one model answers, recording an
//! `Attempt` per model, and say why a chain that produced no answer failed. For streams, a model
//! is committed to once its first event has arrived; until then a failure moves on to the next
//! model like any other.

use std::cell::RefCell;

use serde::Serialize;

use crate::groq::chat::ChatRequest;
use crate::groq::completion::{Completion, Usage};
use crate::groq::cut;
use crate::groq::outcome::{classify_error, redact, retry_after_secs, GroqError, Outcome};
use crate::groq::provider::{Provider, TransportError, UpstreamBody, UpstreamCall};
use crate::groq::sse::SseScanner;
use crate::routing::chain::ModelChain;
use crate::routing::config::CHAT_PATH;
use crate::routing::health::{HealthBook, HealthReport, SkipReason};
use crate::routing::log::{write, Level, Log};

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
    /// Why a model was skipped without a call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SkipReason>,
    /// What the runtime said when the call failed without an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Whether the caller has gone away: no model is called for a request nobody will read.
    pub caller_left: &'a dyn Fn() -> bool,
    pub log: &'a dyn Log,
    /// This isolate's memory of model health; borrowed briefly, never across an `await`.
    pub health: &'a RefCell<HealthBook>,
    /// The request is answered by the mock provider: its log lines say so.
    pub mock: bool,
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
    pub usage: Option<Usage>,
    /// `[DONE]` is already in `first`.
    pub done: bool,
}

/// A chain that produced no answer: why, and every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub why: Why,
    pub attempts: Vec<Attempt>,
}

impl Failed {
    /// How many models the chain went through: a model skipped, then tried as a last resort,
    /// has two attempts.
    pub fn models_tried(&self) -> usize {
        let mut models: Vec<&str> = self.attempts.iter().map(|a| a.model.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        models.len()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Groq refused the request as every model would, or no model could serve it: its reason.
    Rejected(Box<GroqError>),
    /// Groq rejected the provider key.
    ProviderAuth,
    /// Every model that still exists was rate-limited; the earliest moment one frees up.
    RateLimited { retry_after_secs: u64 },
    /// The request is larger than every model's per-minute token limit: Groq's reason (the last).
    TooLarge(Box<GroqError>),
    /// Every model failed.
    AllFailed,
    /// `REQUEST_TIMEOUT_MS` passed first.
    Deadline,
    /// The caller went away: the attempt in flight was abandoned, no other model called.
    CallerLeft,
}

/// One call's result: its outcome and status, what the verdict needs, and the answer if any.
struct Tried<B> {
    outcome: Outcome,
    status: Option<u16>,
    retry_after_secs: Option<u64>,
    error: Option<GroqError>,
    transport: Option<String>,
    answer: Option<Answer<B>>,
}

impl<B> Tried<B> {
    fn status(outcome: Outcome, status: Option<u16>) -> Tried<B> {
        Tried {
            outcome,
            status,
            retry_after_secs: None,
            error: None,
            transport: None,
            answer: None,
        }
    }

    fn transport(e: TransportError) -> Tried<B> {
        match e {
            TransportError::Timeout => Tried::status(Outcome::Timeout, None),
            TransportError::Connection(why) => Tried {
                transport: Some(why),
                ..Tried::status(Outcome::ConnectionError, None)
            },
            TransportError::CallerLeft => Tried::status(Outcome::ClientDisconnected, None),
        }
    }
}

pub async fn route<P: Provider>(
    ctx: &RouteContext<'_>,
    chain: &ModelChain,
    request: &ChatRequest<'_>,
    provider: &P,
) -> Result<Routed<P::Body>, Failed> {
    let mut attempts: Vec<Attempt> = Vec::with_capacity(chain.entries.len());
    // Groq's reasons from the last models that could not serve the request or found it too
    // large, for the verdict.
    let mut cannot_serve: Option<GroqError> = None;
    let mut too_large: Option<GroqError> = None;
    let failed = |why, attempts| Err(Failed { why, attempts });
    // The chain, then the models whose circuit is open, as a last resort. Gone models are never
    // called, nor rate-limited ones before Groq's `retry-after` has passed.
    let mut order: Vec<(&str, bool)> = chain.models().map(|m| (m, false)).collect();

    let mut i = 0;
    while let Some(&(model, last_resort)) = order.get(i) {
        i += 1;
        let started = (ctx.now_ms)();
        if started >= ctx.deadline_ms {
            return failed(Why::Deadline, attempts);
        }
        if (ctx.caller_left)() {
            return failed(Why::CallerLeft, attempts);
        }
        let skip = ctx.health.borrow_mut().availability(model, started);
        if let Some(reason) = skip.filter(|_| !last_resort) {
            if reason == SkipReason::CircuitOpen {
                order.push((model, true));
            }
            attempts.push(Attempt {
                reason: Some(reason),
                ..attempt(model, Outcome::Skipped, None, 0)
            });
            continue;
        }

        let timeout_ms = ctx.attempt_timeout_ms.min(ctx.deadline_ms - started);
        let tried = try_model(ctx, model, request, provider, started, timeout_ms).await;
        let ended = (ctx.now_ms)();
        // A committed stream is judged when it ends, by the relay: one that always breaks
        // mid-way must not count as a success at its first event.
        if !matches!(tried.answer, Some(Answer::Stream(_))) {
            ctx.health.borrow_mut().record(
                model,
                tried.outcome,
                tried.retry_after_secs.map(|s| s * 1000),
                ended,
                ctx.gone_ttl_ms,
            );
        }
        // The runtime's words, bounded, without the key or Groq's address (a proxy's URL may
        // carry a key of its own).
        let base = ctx.url.trim_end_matches(CHAT_PATH);
        let error = tried
            .transport
            .map(|e| cut(&redact(&e, &[ctx.api_key, base]), 200).into());
        let attempt = Attempt {
            code: tried.error.as_ref().and_then(|e| e.code.clone()),
            error,
            ..attempt(
                model,
                tried.outcome,
                tried.status,
                ended.saturating_sub(started),
            )
        };
        // An answer from the first model called is told by the request line alone; once a called
        // model has failed, every call gets its own line, the answering one included.
        let failed_before = attempts.iter().any(|a| a.outcome != Outcome::Skipped);
        if tried.outcome != Outcome::Ok || failed_before {
            log_attempt(ctx, attempts.len() + 1, &attempt);
        }
        attempts.push(attempt);

        if let Some(answer) = tried.answer {
            return Ok(Routed {
                model: model.to_string(),
                answer,
                attempts,
            });
        }
        match tried.outcome {
            Outcome::InvalidRequest => {
                return failed(
                    Why::Rejected(Box::new(tried.error.unwrap_or_default())),
                    attempts,
                )
            }
            Outcome::ProviderAuthFailed => return failed(Why::ProviderAuth, attempts),
            Outcome::ClientDisconnected => return failed(Why::CallerLeft, attempts),
            Outcome::Timeout if ended >= ctx.deadline_ms => return failed(Why::Deadline, attempts),
            Outcome::CannotServe if tried.error.is_some() => cannot_serve = tried.error,
            Outcome::TooLarge if tried.error.is_some() => too_large = tried.error,
            _ => {}
        }
    }

    // A gone model is the operator's problem, not a reason the caller should stop retrying: when
    // every model that still exists is rate-limited, called or cooling, the caller gets 429 and
    // the moment the first of them frees up. A skipped open circuit was retried: its own attempt
    // stands for it. Models that refused this request alone (too large for their per-minute
    // limit, or more than they can serve) would refuse it again: the caller's retry is for the
    // others.
    let rate_limited = |a: &Attempt| {
        a.outcome == Outcome::RateLimited || a.reason == Some(SkipReason::RateLimited)
    };
    let refused = |a: &Attempt| matches!(a.outcome, Outcome::TooLarge | Outcome::CannotServe);
    let live: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| {
            a.outcome != Outcome::ModelGone
                && !matches!(a.reason, Some(SkipReason::Gone | SkipReason::CircuitOpen))
        })
        .collect();
    let candidates: Vec<&Attempt> = live.iter().copied().filter(|a| !refused(a)).collect();
    let why = if !candidates.is_empty() && candidates.iter().all(|a| rate_limited(a)) {
        let now = (ctx.now_ms)();
        let health = ctx.health.borrow();
        let frees_up = candidates
            .iter()
            .filter_map(|a| match health.report(&a.model, now) {
                HealthReport::Cooling { until_ms, .. } => Some(until_ms),
                _ => None,
            });
        let wait_ms = frees_up.min().map_or(0, |t| t.saturating_sub(now));
        Why::RateLimited {
            retry_after_secs: wait_ms.div_ceil(1000).max(1),
        }
    } else if live.is_empty() || !candidates.is_empty() {
        Why::AllFailed
    } else if live.iter().all(|a| a.outcome == Outcome::TooLarge) {
        // Larger than every model's per-minute token limit: retrying it as it is cannot help.
        Why::TooLarge(Box::new(too_large.unwrap_or_default()))
    } else {
        // No model could take this request (too long for every context window, say): that is
        // the caller's to fix, with Groq's own reason.
        Why::Rejected(Box::new(cannot_serve.or(too_large).unwrap_or_default()))
    };
    failed(why, attempts)
}

fn attempt(model: &str, outcome: Outcome, status: Option<u16>, duration_ms: u64) -> Attempt {
    Attempt {
        model: model.to_string(),
        outcome,
        status,
        code: None,
        reason: None,
        error: None,
        duration_ms,
    }
}

async fn try_model<P: Provider>(
    ctx: &RouteContext<'_>,
    model: &str,
    request: &ChatRequest<'_>,
    provider: &P,
    started: u64,
    timeout_ms: u64,
) -> Tried<P::Body> {
    let deadline = started + timeout_ms;
    let remaining = || deadline.saturating_sub((ctx.now_ms)()).max(1);
    let call = UpstreamCall {
        url: ctx.url,
        api_key: ctx.api_key,
        model,
        body: request.groq_body(model),
        timeout_ms,
        streamed: request.stream,
    };
    let (head, mut body) = match provider.send(call).await {
        Ok(sent) => sent,
        Err(e) => return Tried::transport(e),
    };
    let status = Some(head.status);

    if !(200..300).contains(&head.status) {
        // The error body explains the status; if it cannot be read, the status alone decides.
        let bytes = body.read_all(remaining()).await.unwrap_or_default();
        let error = GroqError::from_body(&bytes);
        let outcome = classify_error(head.status, error.as_ref().and_then(|e| e.code.as_deref()));
        return Tried {
            retry_after_secs: retry_after_secs(
                head.retry_after.as_deref(),
                head.reset_tokens.as_deref(),
                head.reset_requests.as_deref(),
            ),
            error,
            ..Tried::status(outcome, status)
        };
    }

    if !request.stream {
        return match body.read_all(remaining()).await {
            Err(e) => Tried::transport(e),
            Ok(body) => match Completion::parse(&body) {
                Some(completion) => Tried {
                    answer: Some(Answer::Complete { body, completion }),
                    ..Tried::status(Outcome::Ok, status)
                },
                None => Tried::status(Outcome::InvalidResponse, status),
            },
        };
    }

    // Stream: wait for the first event; until then this model can still be abandoned.
    let mut scanner = SseScanner::default();
    let mut first = Vec::new();
    loop {
        let chunk = match body.next_chunk(remaining()).await {
            Err(e) => return Tried::transport(e),
            // Ended before its first event: nothing was relayed, so another model may answer.
            Ok(None) => return Tried::status(Outcome::UpstreamError, status),
            Ok(Some(chunk)) => chunk,
        };
        let scanned = scanner.push(&chunk);
        first.extend_from_slice(&scanned.forward);
        if let Some(error) = scanned.error {
            let outcome = error.outcome();
            return Tried {
                error: Some(error),
                ..Tried::status(outcome, status)
            };
        }
        if scanned.data_events > 0 || scanned.done {
            let start = StreamStart {
                first,
                scanner,
                body,
                usage: scanned.usage,
                done: scanned.done,
            };
            return Tried {
                answer: Some(Answer::Stream(start)),
                ..Tried::status(Outcome::Ok, status)
            };
        }
    }
}

#[derive(Serialize)]
struct AttemptLine<'a> {
    level: Level,
    event: &'static str,
    request_id: &'a str,
    task: &'a str,
    model: &'a str,
    attempt: usize,
    outcome: Outcome,
    status: Option<u16>,
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mock: bool,
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
    let line = AttemptLine {
        level,
        event: "attempt",
        request_id: ctx.request_id,
        task: ctx.task,
        model: &attempt.model,
        attempt: number,
        outcome: attempt.outcome,
        status: attempt.status,
        error_code: attempt.code.as_deref(),
        error: attempt.error.as_deref(),
        duration_ms: attempt.duration_ms,
        hint,
        mock: ctx.mock,
    };
    write(ctx.log, level, &line);
}
