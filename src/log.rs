//! `Log`: one JSON object per line, which Workers Logs indexes by field. Lines carry ids,
//! models, outcomes, timings and token counts — never message content, never a key.

use crate::json::JsonObject;

/// Ordered by severity: `Info < Warn < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    /// `LOG_LEVEL`'s spellings: `info`, `warn`, `error` (any case, spaces around ignored).
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
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

    /// Whether a line at `level` would be written: callers skip building one that would not.
    fn enabled(&self, _level: Level) -> bool {
        true
    }
}

/// Passes on the lines at `min` or above (`LOG_LEVEL`), drops the rest.
pub struct Filtered<'a> {
    pub inner: &'a dyn Log,
    pub min: Level,
}

impl Log for Filtered<'_> {
    fn emit(&self, level: Level, line: String) {
        if self.enabled(level) {
            self.inner.emit(level, line);
        }
    }

    fn enabled(&self, level: Level) -> bool {
        level >= self.min && self.inner.enabled(level)
    }
}

/// Collects lines in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryLog(pub std::cell::RefCell<Vec<(Level, String)>>);

impl Log for MemoryLog {
    fn emit(&self, level: Level, line: String) {
        self.0.borrow_mut().push((level, line));
    }
}
