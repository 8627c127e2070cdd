//! Support code for the end-to-end tests: a fake Groq upstream (`fake_groq`, a hyper server), a
//! blocking HTTP/1.1 client (`http`, on ureq) and a harness that runs the real Worker under
//! `wrangler dev` (`worker`). Integration test files include it with `mod support;`.

pub mod fake_groq;
pub mod http;
pub mod worker;
