//! `Log`: one JSON object per line, which Workers Logs indexes by field. Lines carry ids,
//! models, outcomes, timings and token counts — never message content, never a key. Each line
//! is a `#[derive(Serialize)]` struct that opens with its `level` and `event`.

use serde::Serialize;

use crate::groq::named;

named! {
    /// Ordered by severity: `Info < Warn < Error`.
    #[derive(PartialOrd, Ord)]
    pub enum Level {
        Info = "info",
        Warn = "warn",
        Error = "error",
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

/// Writes `line` (a struct whose `level` field is `level`) if the log takes that level.
pub fn write<T: Serialize>(log: &dyn Log, level: Level, line: &T) {
    if log.enabled(level) {
        if let Ok(text) = serde_json::to_string(line) {
            log.emit(level, text);
        }
    }
}

impl<L: Log + ?Sized> Log for &L {
    fn emit(&self, level: Level, line: String) {
        (**self).emit(level, line)
    }

    fn enabled(&self, level: Level) -> bool {
        (**self).enabled(level)
    }
}

/// Passes on the lines at `min` or above (`LOG_LEVEL`), drops the rest.
#[derive(Debug, Clone, Copy)]
pub struct Filtered<L> {
    pub inner: L,
    pub min: Level,
}

impl<L: Log> Log for Filtered<L> {
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
