//! task-router: callers ask for AI work by task; the router picks Groq models for the task from
//! configuration and falls back along the task's chain until one answers.
//!
//! The layers, each using only those listed before it:
//! - `json`, `bindings`: the crate's JSON helpers, and the Worker's bindings read and checked;
//! - `groq`: Groq's wire format only (the body sent, completions, SSE, errors and what each
//!   means, `Outcome`) and the `Provider` seam to the network; knows nothing of callers;
//! - `routing`: the model tables, tasks, chains, model health, the fallback loop, the probe, the
//!   log-line writer; returns routing results, never HTTP types;
//! - `http`: the caller-facing API: routes, the caller's request, auth, JWTs, CORS, limits, the
//!   mock provider, answers, errors, the request record, the stream relay, and `Config`;
//! - `runtime`: the Workers shell, the only code that names `worker` (wasm32 only).
//!
//! Everything but `runtime` is plain Rust, tested natively with `cargo test`.

pub mod bindings;
pub mod json;

pub mod groq;
pub mod http;
pub mod routing;

#[cfg(target_arch = "wasm32")]
mod runtime;
