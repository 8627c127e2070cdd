//! The end-to-end tests' setup module (`mod e2e_support;`):
//! - `fake_groq`: a fake Groq upstream on 127.0.0.1 (a hyper server) speaking Groq's statuses,
//!   bodies, headers and SSE;
//! - `http`: a blocking HTTP/1.1 client (on ureq) that also reports a stream's pieces as they come;
//! - `worker`: runs the real Worker under `wrangler dev`;
//! - `process`: runs child processes (curl, the Python SDK scripts) to the end or a deadline;
//! - `attempts`: the native support's reader of an answer's `attempts` list, shared.

// Each test binary uses part of it.
#![allow(dead_code)]

#[path = "../support/attempts.rs"]
pub mod attempts;
pub mod fake_groq;
pub mod fixtures;
pub mod http;
pub mod process;
pub mod worker;
