//! `Log`: one JSON object per line, which Workers Logs indexes by field. Lines carry ids,
//! models, outcomes, timings and token counts — never message content, never a key.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

pub trait Log {
    /// `line` is a JSON object; the sink adds nothing but the transport.
    fn emit(&self, level: Level, line: Value);
}

/// Collects lines in memory: for tests, and anywhere lines must be inspected before they leave.
#[derive(Debug, Default)]
pub struct MemoryLog(pub std::cell::RefCell<Vec<(Level, Value)>>);

impl Log for MemoryLog {
    fn emit(&self, level: Level, line: Value) {
        self.0.borrow_mut().push((level, line));
    }
}
