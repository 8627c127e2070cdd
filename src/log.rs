//! `Log`: one JSON object per line, which Workers Logs indexes by field. Lines carry ids,
//! models, outcomes, timings and token counts — never message content, never a key.

use crate::json::JsonObject;

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

    /// A log line's opening fields: `{"level":…,"event":…`.
    pub fn line(self, event: &str) -> JsonObject {
        JsonObject::new()
            .str("level", self.as_str())
            .str("event", event)
    }
}

pub trait Log {
    /// `line` is one JSON object; the sink adds nothing but the transport.
    fn emit(&self, level: Level, line: String);
}

/// Collects lines in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryLog(pub std::cell::RefCell<Vec<(Level, String)>>);

impl Log for MemoryLog {
    fn emit(&self, level: Level, line: String) {
        self.0.borrow_mut().push((level, line));
    }
}
