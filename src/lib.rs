//! task-router: callers ask for AI work by task; the router picks Groq models for the task from
//! configuration and falls back along the task's chain until one answers.
//!
//! The layers, each using only those listed before it:
//! - `groq`: Groq's wire format and the `Provider` seam to the network;
//! - `routing`: config, tasks, chains, model health, the fallback loop, the probe;
//! - `http`: the caller-facing API (routes, auth, CORS, answers, errors, the stream relay);
//! - `runtime`: the Workers shell, the only code that names `worker` (wasm32 only).
//!
//! Everything but `runtime` is plain Rust, tested natively with `cargo test`.

pub mod groq;
pub mod http;
pub mod routing;

#[cfg(target_arch = "wasm32")]
mod runtime;
