//! The end-to-end tests' setup module (`mod e2e_support;`):
//! - `fake_groq`: a fake Groq upstream on 127.0.0.1 (a hyper server) speaking Groq's statuses,
//!   bodies, headers and SSE;
//! - `http`: a blocking HTTP/1.1 client (on ureq) that also reports a stream's pieces as they come;
//! - `worker`: runs the real Worker under `wrangler dev`;
//! - `process`: runs child processes (curl, the Python SDK scripts) to the end or a deadline;
//! - `fixtures`: the keys, the chat body, a fake Groq with its Worker, and answer checks;
//! - `attempts` and `checks`: the native support's reader of `attempts` lists and JSON check.

// Each test binary uses part of it.
#![allow(dead_code)]

#[path = "../support/attempts.rs"]
pub mod attempts;
#[path = "../support/checks.rs"]
pub mod checks;
pub mod fake_groq;
pub mod fixtures;
pub mod http;
pub mod process;
pub mod worker;
