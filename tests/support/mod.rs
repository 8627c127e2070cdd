//! The native tests' setup module (`mod support;`); it compiles no HTTP server and no `wrangler`
//! runner (those are `tests/e2e_support`):
//! - `scripted`: the native harness — a scripted fake `Provider`, bindings, and `exchange`, one
//!   request through the router's HTTP API with a fake clock;
//! - `attempts`: reading an answer's `attempts` list (the end-to-end tests include it too).

// Each test binary uses part of it.
#![allow(dead_code)]

pub mod attempts;
pub mod scripted;
