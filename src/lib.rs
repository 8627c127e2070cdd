//! task-router: callers ask for AI work by task; the router picks Groq models for the task from
//! configuration and falls back along the task's chain until one answers.
//!
//! Everything but `worker_shell` is the routing core: plain Rust with no `worker` types, tested
//! natively with `cargo test`. `worker_shell` adapts it to the Workers runtime.

pub mod api;
pub mod auth;
pub mod chain;
pub mod completion;
pub mod config;
pub mod cors;
pub mod error;
pub mod health;
pub mod json;
pub mod limit;
pub mod log;
pub mod outcome;
pub mod probe;
pub mod provider;
pub mod relay;
pub mod request;
pub mod router;
pub mod sse;
pub mod task;

#[cfg(target_arch = "wasm32")]
mod worker_shell;
