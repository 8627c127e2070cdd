//! The tests' one setup module; each test file includes it with `mod support;` and uses what it
//! needs:
//! - `scripted`: the native harness — a scripted fake `Provider`, bindings, and `exchange`, one
//!   request through the router's HTTP API with a fake clock;
//! - `attempts`: reading an answer's `attempts` list, natively and end to end alike;
//! - `fake_groq`: a fake Groq upstream on 127.0.0.1 (a hyper server) speaking Groq's statuses,
//!   bodies, headers and SSE;
//! - `http`: a blocking HTTP/1.1 client (on ureq) that also reports a stream's pieces as they come;
//! - `worker`: runs the real Worker under `wrangler dev`;
//! - `process`: runs child processes (curl, the Python SDK scripts) to the end or a deadline.

pub mod attempts;
pub mod fake_groq;
pub mod http;
pub mod process;
pub mod scripted;
pub mod worker;
