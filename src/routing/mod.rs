//! The routing core: the model tables and routing's other bindings, tasks and their model
//! chains, model health, the fallback loop, the scheduled probe, and the log-line writer every
//! layer writes through. Uses `groq`; returns routing results (who answered, every attempt, why a
//! chain failed), never HTTP types.

pub mod capabilities;
pub mod chain;
pub mod config;
pub mod fallback;
pub mod health;
pub mod log;
pub mod probe;
pub mod registry;
pub mod task;
