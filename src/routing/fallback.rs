//! The fallback loop: walk a `ModelChain` in order until one model answers, recording an
//! `Attempt` per model, and say why a chain that produced no answer failed (`ChainFailure`). For
//! streams, a model is committed to once its first event has arrived; until then a failure moves
//! on to the next model like any other.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::groq::body::{ChatBody, GroqBody};
use crate::groq::completion::{Completion, Usage};
use crate::groq::outcome::{
    classify_error, redact, retry_after_secs, unsupported, GroqError, Outcome, Unsupported,
};
use crate::groq::provider::{Provider, TransportError, UpstreamBody, UpstreamCall, UpstreamHead};
use crate::groq::sse::SseScanner;
use crate::json::cut;
use crate::routing::capabilities::{Capabilities, Capability, Fit, Needs, ReasoningParam};
use crate::routing::chain::ModelChain;
use crate::routing::config::CHAT_PATH;
use crate::routing::health::{HealthBook, HealthReport, SkipReason};
use crate::routing::log::{write, Level, Log};

/// What became of one model for one request: called, and what that came to; or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Called(Outcome),
    /// Not called: health memory says it is gone, cooling, or its circuit is open.
    Skipped(SkipReason),
    /// Not called: it lacks what the request needs.
    Unable(Capability),
}

impl Verdict {
    /// The `outcome` shown: the call's, or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Called(outcome) => outcome.as_str(),
            Verdict::Skipped(_) | Verdict::Unable(_) => "skipped",
        }
    }

    /// Why a model was skipped: its health, or what it lacks.
    pub fn skip_reason(self) -> Option<&'static str> {
        match self {
            Verdict::Called(_) => None,
            Verdict::Skipped(reason) => Some(reason.as_str()),
            Verdict::Unable(lacking) => Some(lacking.skip_reason()),
        }
    }

    fn called(self) -> Option<Outcome> {
        match self {
            Verdict::Called(outcome) => Some(outcome),
            Verdict::Skipped(_) | Verdict::Unable(_) => None,
        }
    }
}

/// One model tried for one request; shown to callers in `attempts` and in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub model: String,
    pub verdict: Verdict,
    /// Groq's HTTP status; `None` when there was no answer (timeout, connection error).
    pub status: Option<u16>,
    /// Groq's error `code`, when it sent one.
    pub code: Option<String>,
    /// What the runtime said when the call failed without an answer.
    pub error: Option<String>,
    /// Parameters left out for this model, which does not take them.
    pub dropped: Vec<&'static str>,
    pub duration_ms: u64,
}

impl Attempt {
    fn skipped(model: &str, verdict: Verdict) -> Attempt {
        Attempt {
            model: model.to_string(),
            verdict,
            status: None,
            code: None,
            error: None,
            dropped: Vec::new(),
            duration_ms: 0,
        }
    }

    /// Whether this is the outcome of a call.
    pub fn is(&self, outcome: Outcome) -> bool {
        self.verdict == Verdict::Called(outcome)
    }
}

impl Serialize for Attempt {
    /// `{"model","outcome","status","code"?,"reason"?,"error"?,"dropped"?,"duration_ms"}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Attempt", 8)?;
        out.serialize_field("model", &self.model)?;
        out.serialize_field("outcome", self.verdict.as_str())?;
        out.serialize_field("status", &self.status)?;
        if let Some(code) = &self.code {
            out.serialize_field("code", code)?;
        }
        if let Some(reason) = self.verdict.skip_reason() {
            out.serialize_field("reason", reason)?;
        }
        if let Some(error) = &self.error {
            out.serialize_field("error", error)?;
        }
        if !self.dropped.is_empty() {
            out.serialize_field("dropped", &self.dropped)?;
        }
        out.serialize_field("duration_ms", &self.duration_ms)?;
        out.end()
    }
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
    /// `MODEL_CAPABILITIES`.
    pub capabilities: &'a BTreeMap<String, Capabilities>,
    /// What the request needs of a model.
    pub needs: &'a Needs,
}

impl RouteContext<'_> {
    /// Whether `model` can take the request: what the configuration says of it, with what
    /// Groq taught this isolate.
    fn fit(&self, model: &str, now_ms: u64) -> Fit {
        let health = self.health.borrow();
        let learned = health.learned(model, now_ms);
        Capabilities::merged(self.capabilities.get(model), learned).fit(self.needs)
    }
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
pub struct ChainFailure {
    pub reason: FailureReason,
    pub attempts: Vec<Attempt>,
}

impl ChainFailure {
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
pub enum FailureReason {
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
    /// No model of the chain can take the request: what it needs that they lack.
    NoCapableModel {
        task: String,
        lacking: Vec<Capability>,
    },
}

/// One call's result: its outcome and status, what the verdict needs, and the answer if any.
struct CallResult<B> {
    outcome: Outcome,
    status: Option<u16>,
    retry_after_secs: Option<u64>,
    error: Option<GroqError>,
    transport: Option<String>,
    answer: Option<Answer<B>>,
    /// What Groq's refusal says the model lacks (a request that used it).
    lacks: Option<Unsupported>,
}

impl<B> CallResult<B> {
    fn status(outcome: Outcome, status: Option<u16>) -> CallResult<B> {
        CallResult {
            outcome,
            status,
            retry_after_secs: None,
            error: None,
            transport: None,
            answer: None,
            lacks: None,
        }
    }

    fn transport(e: TransportError) -> CallResult<B> {
        match e {
            TransportError::Timeout => CallResult::status(Outcome::Timeout, None),
            TransportError::Connection(why) => CallResult {
                transport: Some(why),
                ..CallResult::status(Outcome::ConnectionError, None)
            },
            TransportError::CallerLeft => CallResult::status(Outcome::ClientDisconnected, None),
        }
    }

    /// A refusal: Groq's error and retry hints decide what it means. A plain 400 naming
    /// something the request uses as unsupported is about this model: another may take it.
    fn refused(head: &UpstreamHead, body: &[u8], needs: &Needs) -> CallResult<B> {
        let error = GroqError::from_body(body);
        let mut outcome =
            classify_error(head.status, error.as_ref().and_then(|e| e.code.as_deref()));
        let lacks = error
            .as_ref()
            .and_then(unsupported)
            .filter(|u| uses(needs, *u));
        if outcome == Outcome::InvalidRequest && lacks.is_some() {
            outcome = Outcome::CannotServe;
        }
        CallResult {
            lacks: lacks.filter(|_| outcome == Outcome::CannotServe),
            retry_after_secs: retry_after_secs(
                head.retry_after.as_deref(),
                head.reset_tokens.as_deref(),
                head.reset_requests.as_deref(),
            ),
            error,
            ..CallResult::status(outcome, Some(head.status))
        }
    }
}

/// Groq's reasons from the last models that refused the request alone, for the verdict.
#[derive(Default)]
struct Refusals {
    cannot_serve: Option<GroqError>,
    too_large: Option<GroqError>,
}

impl Refusals {
    /// Whether a failed call ends the chain (and why); a refusal of this request alone is kept
    /// for the verdict, should every model refuse it.
    fn stop<B>(&mut self, called: CallResult<B>, past_deadline: bool) -> Option<FailureReason> {
        match called.outcome {
            Outcome::InvalidRequest => {
                let reason = called.error.unwrap_or_default();
                Some(FailureReason::Rejected(Box::new(reason)))
            }
            Outcome::ProviderAuthFailed => Some(FailureReason::ProviderAuth),
            Outcome::ClientDisconnected => Some(FailureReason::CallerLeft),
            Outcome::Timeout if past_deadline => Some(FailureReason::Deadline),
            Outcome::CannotServe if called.error.is_some() => {
                self.cannot_serve = called.error;
                None
            }
            Outcome::TooLarge if called.error.is_some() => {
                self.too_large = called.error;
                None
            }
            _ => None,
        }
    }
}

pub async fn route<P: Provider>(
    ctx: &RouteContext<'_>,
    chain: &ModelChain,
    body: &ChatBody<'_>,
    provider: &P,
) -> Result<Routed<P::Body>, ChainFailure> {
    let mut attempts: Vec<Attempt> = Vec::with_capacity(chain.entries.len());
    let mut refusals = Refusals::default();
    let failed = |reason, attempts| Err(ChainFailure { reason, attempts });
    if let Some(reason) = no_capable_model(ctx, chain, &mut attempts) {
        return failed(reason, attempts);
    }
    // The chain, then the models whose circuit is open, as a last resort. Gone models are never
    // called, nor rate-limited ones before Groq's `retry-after` has passed.
    let mut order: Vec<(&str, bool)> = chain.models().map(|m| (m, false)).collect();

    let mut i = 0;
    while let Some(&(model, last_resort)) = order.get(i) {
        i += 1;
        let started = (ctx.now_ms)();
        if started >= ctx.deadline_ms {
            return failed(FailureReason::Deadline, attempts);
        }
        if (ctx.caller_left)() {
            return failed(FailureReason::CallerLeft, attempts);
        }
        let dropped: Vec<&'static str> = match ctx.fit(model, started) {
            Fit::Lacks(lacking) => {
                let attempt = Attempt::skipped(model, Verdict::Unable(lacking));
                log_attempt(ctx, attempts.len() + 1, &attempt);
                attempts.push(attempt);
                continue;
            }
            Fit::Serves { dropped } => dropped.into_iter().map(ReasoningParam::as_str).collect(),
        };
        let skip = ctx.health.borrow_mut().availability(model, started);
        if let Some(reason) = skip.filter(|_| !last_resort) {
            if reason == SkipReason::CircuitOpen {
                order.push((model, true));
            }
            attempts.push(Attempt::skipped(model, Verdict::Skipped(reason)));
            continue;
        }

        let timeout_ms = ctx.attempt_timeout_ms.min(ctx.deadline_ms - started);
        let body = body.for_model(model).without(&dropped);
        let called = try_model(ctx, model, body, provider, started, timeout_ms).await;
        let ended = (ctx.now_ms)();
        let attempt = record(ctx, model, &called, (started, ended), dropped);
        log_and_push(ctx, attempt, &mut attempts, called.outcome);
        if let Some(answer) = called.answer {
            return Ok(Routed {
                model: model.to_string(),
                answer,
                attempts,
            });
        }
        if let Some(reason) = refusals.stop(called, ended >= ctx.deadline_ms) {
            return failed(reason, attempts);
        }
    }
    let reason = exhausted(ctx, &attempts, refusals);
    failed(reason, attempts)
}

/// When no model of the chain can take the request (by what the configuration and Groq said
/// of each): why, with each model's attempt saying what it lacks. Nothing is called then.
fn no_capable_model(
    ctx: &RouteContext<'_>,
    chain: &ModelChain,
    attempts: &mut Vec<Attempt>,
) -> Option<FailureReason> {
    let now = (ctx.now_ms)();
    let mut lacking: Vec<Capability> = Vec::new();
    for model in chain.models() {
        match ctx.fit(model, now) {
            Fit::Serves { .. } => {
                attempts.clear();
                return None;
            }
            Fit::Lacks(missing) => {
                attempts.push(Attempt::skipped(model, Verdict::Unable(missing)));
                lacking.push(missing);
            }
        }
    }
    lacking.sort_unstable();
    lacking.dedup();
    Some(FailureReason::NoCapableModel {
        task: ctx.task.to_string(),
        lacking,
    })
}

/// Whether the request used what Groq's refusal says the model lacks: only then is the refusal
/// about the model.
fn uses(needs: &Needs, lacks: Unsupported) -> bool {
    match lacks {
        Unsupported::ResponseFormat {
            json_schema,
            json_object,
        } => (needs.json_schema && !json_schema) || (needs.json_object && !json_object),
        Unsupported::Tools => needs.tools,
        Unsupported::ImageContent => needs.images,
        Unsupported::Param(name) => needs.reasoning.iter().any(|p| p.as_str() == name),
        Unsupported::MaxCompletionTokens(max) => needs.completion_tokens.is_some_and(|n| n > max),
    }
}

/// What a refusal teaches of a model, for as long as a gone verdict lasts.
fn learn(ctx: &RouteContext<'_>, model: &str, lacks: Unsupported, now_ms: u64) {
    let until_ms = now_ms + ctx.gone_ttl_ms;
    let mut health = ctx.health.borrow_mut();
    health.learn(model, until_ms, now_ms, |known| match lacks {
        Unsupported::ResponseFormat {
            json_schema,
            json_object,
        } => {
            known.json_schema = Some(json_schema);
            known.json_object = Some(json_object);
        }
        Unsupported::Tools => known.tools = Some(false),
        Unsupported::ImageContent => known.images = Some(false),
        Unsupported::Param(name) => {
            let params = ReasoningParam::ALL.map(|p| p.as_str().to_string()).to_vec();
            let mut takes = known.reasoning_params.take().unwrap_or(params);
            takes.retain(|p| p != name);
            known.reasoning_params = Some(takes);
        }
        Unsupported::MaxCompletionTokens(max) => known.max_completion_tokens = Some(max),
    });
}

/// What one call teaches: the model's health (a committed stream is judged when it ends, by the
/// relay) and capabilities, and its attempt.
fn record<B>(
    ctx: &RouteContext<'_>,
    model: &str,
    called: &CallResult<B>,
    (started, ended): (u64, u64),
    dropped: Vec<&'static str>,
) -> Attempt {
    if let Some(lacks) = called.lacks {
        learn(ctx, model, lacks, ended);
    }
    // One that always breaks mid-way must not count as a success at its first event.
    if !matches!(called.answer, Some(Answer::Stream(_))) {
        let retry_after_ms = called.retry_after_secs.map(|s| s * 1000);
        let mut health = ctx.health.borrow_mut();
        health.record(
            model,
            called.outcome,
            retry_after_ms,
            ended,
            ctx.gone_ttl_ms,
        );
    }
    // The runtime's words, bounded, without the key or Groq's address (a proxy's URL may carry
    // a key of its own).
    let base = ctx.url.trim_end_matches(CHAT_PATH);
    let error = called.transport.as_ref();
    Attempt {
        model: model.to_string(),
        verdict: Verdict::Called(called.outcome),
        status: called.status,
        code: called.error.as_ref().and_then(|e| e.code.clone()),
        error: error.map(|e| cut(&redact(e, &[ctx.api_key, base]), 200).into()),
        dropped,
        duration_ms: ended.saturating_sub(started),
    }
}

/// An answer from the first model called is told by the request line alone; once a called model
/// has failed, every call gets its own line, the answering one included.
fn log_and_push(
    ctx: &RouteContext<'_>,
    attempt: Attempt,
    attempts: &mut Vec<Attempt>,
    outcome: Outcome,
) {
    let failed_before = attempts.iter().any(|a| a.verdict.called().is_some());
    if outcome != Outcome::Ok || failed_before {
        log_attempt(ctx, attempts.len() + 1, &attempt);
    }
    attempts.push(attempt);
}

/// Why a chain that ran out of models produced no answer. A gone model is the operator's
/// problem, not a reason the caller should stop retrying: when every model that still exists is
/// rate-limited, called or cooling, the caller gets 429 and the moment the first of them frees
/// up. A skipped open circuit was retried: its own attempt stands for it. Models that refused
/// this request alone (too large for their per-minute limit, or more than they can serve) would
/// refuse it again: the caller's retry is for the others.
fn exhausted(ctx: &RouteContext<'_>, attempts: &[Attempt], refusals: Refusals) -> FailureReason {
    let rate_limited = |a: &Attempt| {
        a.is(Outcome::RateLimited) || a.verdict == Verdict::Skipped(SkipReason::RateLimited)
    };
    let refused = |a: &Attempt| a.is(Outcome::TooLarge) || a.is(Outcome::CannotServe);
    let live: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| {
            !a.is(Outcome::ModelGone)
                && !matches!(
                    a.verdict,
                    Verdict::Skipped(SkipReason::Gone | SkipReason::CircuitOpen)
                        | Verdict::Unable(_)
                )
        })
        .collect();
    let candidates: Vec<&Attempt> = live.iter().copied().filter(|a| !refused(a)).collect();
    if !candidates.is_empty() && candidates.iter().all(|a| rate_limited(a)) {
        let now = (ctx.now_ms)();
        let health = ctx.health.borrow();
        let frees_up = candidates
            .iter()
            .filter_map(|a| match health.report(&a.model, now) {
                HealthReport::Cooling { until_ms, .. } => Some(until_ms),
                _ => None,
            });
        let wait_ms = frees_up.min().map_or(0, |t| t.saturating_sub(now));
        return FailureReason::RateLimited {
            retry_after_secs: wait_ms.div_ceil(1000).max(1),
        };
    }
    if live.is_empty() || !candidates.is_empty() {
        return FailureReason::AllFailed;
    }
    if live.iter().all(|a| a.is(Outcome::TooLarge)) {
        // Larger than every model's per-minute token limit: retrying it as it is cannot help.
        return FailureReason::TooLarge(Box::new(refusals.too_large.unwrap_or_default()));
    }
    // No model could take this request (too long for every context window, say): that is the
    // caller's to fix, with Groq's own reason.
    let reason = refusals.cannot_serve.or(refusals.too_large);
    FailureReason::Rejected(Box::new(reason.unwrap_or_default()))
}

async fn try_model<P: Provider>(
    ctx: &RouteContext<'_>,
    model: &str,
    body: GroqBody<'_, '_>,
    provider: &P,
    started: u64,
    timeout_ms: u64,
) -> CallResult<P::Body> {
    let deadline = started + timeout_ms;
    let remaining = || deadline.saturating_sub((ctx.now_ms)()).max(1);
    let streamed = body.streamed();
    let call = UpstreamCall {
        url: ctx.url,
        api_key: ctx.api_key,
        model,
        body,
        timeout_ms,
        streamed,
    };
    let (head, answer) = match provider.send(call).await {
        Ok(sent) => sent,
        Err(e) => return CallResult::transport(e),
    };
    let status = Some(head.status);
    if !(200..300).contains(&head.status) {
        // The error body explains the status; if it cannot be read, the status alone decides.
        let bytes = answer.read_all(remaining()).await.unwrap_or_default();
        return CallResult::refused(&head, &bytes, ctx.needs);
    }
    if streamed {
        return first_event(answer, status, &remaining).await;
    }
    match answer.read_all(remaining()).await {
        Err(e) => CallResult::transport(e),
        Ok(body) => match Completion::parse(&body) {
            Some(completion) => CallResult {
                answer: Some(Answer::Complete { body, completion }),
                ..CallResult::status(Outcome::Ok, status)
            },
            None => CallResult::status(Outcome::InvalidResponse, status),
        },
    }
}

/// Waits for a stream's first event; until then this model can still be abandoned.
async fn first_event<B: UpstreamBody>(
    mut answer: B,
    status: Option<u16>,
    remaining: &impl Fn() -> u64,
) -> CallResult<B> {
    let mut scanner = SseScanner::default();
    let mut first = Vec::new();
    loop {
        let chunk = match answer.next_chunk(remaining()).await {
            Err(e) => return CallResult::transport(e),
            // Ended before its first event: nothing was relayed, so another model may answer.
            Ok(None) => return CallResult::status(Outcome::UpstreamError, status),
            Ok(Some(chunk)) => chunk,
        };
        let scanned = scanner.push(&chunk);
        first.extend_from_slice(&scanned.forward);
        if let Some(error) = scanned.error {
            let outcome = error.outcome();
            return CallResult {
                error: Some(error),
                ..CallResult::status(outcome, status)
            };
        }
        if scanned.data_events > 0 || scanned.done {
            let start = StreamStart {
                first,
                scanner,
                body: answer,
                usage: scanned.usage,
                done: scanned.done,
            };
            return CallResult {
                answer: Some(Answer::Stream(start)),
                ..CallResult::status(Outcome::Ok, status)
            };
        }
    }
}

#[derive(serde::Serialize)]
struct AttemptLine<'a> {
    request_id: &'a str,
    task: &'a str,
    model: &'a str,
    attempt: usize,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    status: Option<u16>,
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dropped: &'a [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mock: bool,
}

/// An attempt's line: a call that failed (and every call after one), or a model skipped for
/// what it lacks (which an operator may want to change).
fn log_attempt(ctx: &RouteContext<'_>, number: usize, attempt: &Attempt) {
    let level = match attempt.verdict {
        Verdict::Called(Outcome::Ok) | Verdict::Unable(_) => Level::Info,
        Verdict::Called(Outcome::ProviderAuthFailed) => Level::Error,
        Verdict::Called(_) => Level::Warn,
        Verdict::Skipped(_) => return,
    };
    if !ctx.log.enabled(level) {
        return;
    }
    let hint = match attempt.verdict {
        Verdict::Called(Outcome::ModelGone) => Some(format!(
            "model `{}` is gone at Groq; remove or replace it in `MODEL_REGISTRY` / `DEFAULT_*_MODEL` / `FORCE_MODEL`",
            attempt.model
        )),
        Verdict::Called(Outcome::ProviderAuthFailed) => {
            Some("Groq rejected `GROQ_API_KEY`; rotate the secret".to_string())
        }
        _ => None,
    };
    let line = AttemptLine {
        request_id: ctx.request_id,
        task: ctx.task,
        model: &attempt.model,
        attempt: number,
        outcome: attempt.verdict.as_str(),
        reason: attempt.verdict.skip_reason(),
        status: attempt.status,
        error_code: attempt.code.as_deref(),
        error: attempt.error.as_deref(),
        duration_ms: attempt.duration_ms,
        dropped: &attempt.dropped,
        hint,
        mock: ctx.mock,
    };
    write(ctx.log, level, "attempt", &line);
}
