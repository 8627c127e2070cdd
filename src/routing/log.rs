//! `Log`: one JSON object per line, which Workers Logs indexes by field. Lines carry ids,
//! models, outcomes, timings and token counts — never message content, never a key. `write`
//! opens every line with its `level` and `event`, then the fields of a `#[derive(Serialize)]`
//! struct.

use serde::Serialize;

use crate::json::named;

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

/// Writes a line with no more than its `level` and `event`.
pub fn note(log: &dyn Log, level: Level, event: &str) {
    #[derive(Serialize)]
    struct Nothing {}
    write(log, level, event, &Nothing {});
}

/// Writes one line, `{"level":…,"event":…,` then `fields`' members, if the log takes `level`.
pub fn write<T: Serialize>(log: &dyn Log, level: Level, event: &str, fields: &T) {
    #[derive(Serialize)]
    struct LineHead<'a> {
        level: Level,
        event: &'a str,
    }
    if !log.enabled(level) {
        return;
    }
    let (Ok(head), Ok(fields)) = (
        serde_json::to_string(&LineHead { level, event }),
        serde_json::to_string(fields),
    ) else {
        return;
    };
    // Both are objects: the head without its `}`, then the fields without their `{`.
    let members = fields.strip_prefix('{').unwrap_or(&fields);
    let separator = if members == "}" { "" } else { "," };
    let line = [&head[..head.len() - 1], separator, members].concat();
    log.emit(level, line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_opens_with_its_level_and_event() {
        #[derive(Serialize)]
        struct Fields {
            model: &'static str,
        }
        #[derive(Serialize)]
        struct NoFields {}
        let log = MemoryLog::default();
        write(&log, Level::Warn, "attempt", &Fields { model: "m" });
        write(&log, Level::Info, "probe", &NoFields {});
        let lines: Vec<String> = log.0.into_inner().into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            lines,
            [
                r#"{"level":"warn","event":"attempt","model":"m"}"#,
                r#"{"level":"info","event":"probe"}"#
            ]
        );
    }
}
