//! The native tests' setup module (`mod support;`); it compiles no HTTP server and no `wrangler`
//! runner (those are `tests/e2e_support`):
//! - `scripted`: the native harness — a scripted fake `Provider`, bindings, and `exchange`, one
//!   request through the router's HTTP API with a fake clock;
//! - `fixtures`: the client key, a chat body, and requests in one line;
//! - `attempts` and `checks`: reading an answer's `attempts` list, and checking JSON (the
//!   end-to-end tests include these two too).

// Each test binary uses part of it.
#![allow(dead_code)]

pub mod attempts;
pub mod checks;
pub mod fixtures;
pub mod scripted;
