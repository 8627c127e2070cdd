//! The Worker's bindings, read and checked: `Bindings` (the runtime's `Env`, a map in tests),
//! `Reader` (reads each binding once, noting every problem rather than stopping at the first),
//! `ConfigFinding` (a problem, or a warning, naming its binding), table bindings, and URLs.
//! Each layer reads its own bindings with a `Reader`; `http::config::Config::load` composes them.
//! Messages say what is wrong and what is expected, never the value that was set: any binding may
//! hold a secret pasted into the wrong place.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::json::{cut, JsonKind, Members};

/// A binding's value as the Worker runtime hands it over: `wrangler.toml` `[vars]` tables arrive
/// as objects (given here as their JSON text), everything set with `--var`, the dashboard or
/// `wrangler secret` as text.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingValue {
    Text(String),
    Json(String),
}

/// Where bindings come from: the Worker `Env` in production, a map in tests.
pub trait Bindings {
    fn get(&self, name: &str) -> Option<BindingValue>;
}

impl Bindings for BTreeMap<&str, BindingValue> {
    fn get(&self, name: &str) -> Option<BindingValue> {
        BTreeMap::get(self, name).cloned()
    }
}

/// Something the configuration check found: a problem (routed requests answer with `code`,
/// `/healthz` 503) or, from the checks that say so, a warning (`/healthz` still 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigFinding {
    pub binding: String,
    pub code: &'static str,
    pub message: String,
}

impl ConfigFinding {
    pub fn invalid(binding: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigFinding {
            code: "config_invalid",
            binding: binding.into(),
            message: message.into(),
        }
    }
}

/// Reads bindings, collecting every problem rather than stopping at the first.
pub struct Reader<'b, B> {
    bindings: &'b B,
    pub problems: Vec<ConfigFinding>,
}

impl<'b, B: Bindings> Reader<'b, B> {
    pub fn new(bindings: &'b B) -> Self {
        Reader {
            bindings,
            problems: Vec::new(),
        }
    }

    /// The binding as the runtime gives it, unread.
    pub fn raw(&self, name: &str) -> Option<BindingValue> {
        self.bindings.get(name)
    }

    /// The value, or `default` with the problem noted against `binding`.
    pub fn ok<T>(&mut self, binding: &str, parsed: Result<T, String>, default: T) -> T {
        parsed.unwrap_or_else(|e| {
            self.problems.push(ConfigFinding::invalid(binding, e));
            default
        })
    }

    /// A text binding, trimmed; unset or blank is `None`. An object where text belongs is an error.
    pub fn text(&mut self, name: &str) -> Option<String> {
        match self.bindings.get(name)? {
            BindingValue::Text(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            BindingValue::Json(_) => self.ok(name, Err(format!("`{name}` must be a string")), None),
        }
    }

    /// A whole number from 1 to `max`, or `default` when unset.
    pub fn number(&mut self, name: &str, default: u64, max: u64, unit: &str) -> u64 {
        let parsed = match self.text(name) {
            None => Some(default),
            Some(raw) => raw.parse().ok().filter(|n| (1..=max).contains(n)),
        };
        let message = format!("`{name}` must be a whole number of {unit} from 1 to {max}");
        self.ok(name, parsed.ok_or(message), default)
    }

    /// One of `choices` (any case), or the first of them when unset.
    pub fn one_of<T: Copy>(&mut self, name: &str, choices: &[(&str, T)], expected: &str) -> T {
        let given = self.text(name);
        let given = given.as_deref().unwrap_or(choices[0].0);
        let found = choices
            .iter()
            .find(|(text, _)| text.eq_ignore_ascii_case(given))
            .map(|(_, value)| *value);
        self.ok(
            name,
            found.ok_or(format!("`{name}` must be {expected}")),
            choices[0].1,
        )
    }

    /// `"true"` or `"false"`; false when unset.
    pub fn flag(&mut self, name: &str) -> bool {
        self.one_of(
            name,
            &[("false", false), ("true", true)],
            "\"true\" or \"false\"",
        )
    }

    /// A value that `parse` reads, or `default` when unset.
    pub fn parsed<T>(&mut self, name: &str, parse: fn(&str) -> Result<T, String>, default: T) -> T {
        match self.text(name) {
            None => default,
            Some(text) => self.ok(
                name,
                parse(&text).map_err(|e| format!("`{name}` {e}")),
                default,
            ),
        }
    }

    /// A table binding read by `read` (see [`table`]), or `T::default()` when unset.
    pub fn table<T: Default>(
        &mut self,
        name: &str,
        holds: &str,
        read: impl FnOnce(&Members) -> Result<T, String>,
    ) -> T {
        match self.bindings.get(name) {
            None => T::default(),
            Some(value) => {
                let parsed = table(name, value, holds, read);
                self.ok(name, parsed, T::default())
            }
        }
    }
}

/// A table binding (`[vars.NAME]` in `wrangler.toml`, or its JSON as text, even a JSON string
/// holding it, as some dashboards store it): its members, each key once, handed to `read`.
pub fn table<T>(
    name: &str,
    value: BindingValue,
    holds: &str,
    read: impl FnOnce(&Members) -> Result<T, String>,
) -> Result<T, String> {
    let (BindingValue::Text(text) | BindingValue::Json(text)) = value;
    let invalid = |e: serde_json::Error| format!("`{name}` is not valid JSON: {e}");
    let mut raw: &RawValue = serde_json::from_str(&text).map_err(invalid)?;
    let inner: String;
    if JsonKind::of(raw) == JsonKind::String {
        inner = serde_json::from_str(raw.get()).map_err(invalid)?;
        raw = serde_json::from_str(&inner).map_err(invalid)?;
    }
    if JsonKind::of(raw) != JsonKind::Object {
        let got = JsonKind::of(raw).described();
        return Err(format!("`{name}` must be an object of {holds}, got {got}"));
    }
    let members: Members = serde_json::from_str(raw.get()).map_err(invalid)?;
    match members.duplicate() {
        Some(key) => Err(format!("`{name}` names `{}` twice", cut(key, 64))),
        None => read(&members),
    }
}

/// An `http://` or `https://` URL's parts the checks look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpUrl<'u> {
    pub https: bool,
    /// The host and maybe a port (`[::1]:8080`).
    pub authority: &'u str,
    /// What follows the authority: a path, query or fragment (maybe empty).
    pub rest: &'u str,
}

impl<'u> HttpUrl<'u> {
    /// `None` unless `url` is `http(s)://` with an authority, no credentials and no whitespace.
    pub fn parse(url: &'u str) -> Option<HttpUrl<'u>> {
        let (https, after) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(after), _) => (true, after),
            (_, Some(after)) => (false, after),
            _ => return None,
        };
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let fine =
            !authority.is_empty() && !authority.contains('@') && !url.contains(char::is_whitespace);
        fine.then_some(HttpUrl {
            https,
            authority,
            rest,
        })
    }

    /// The host without its port.
    pub fn host(&self) -> &'u str {
        match self.authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => self.authority,
        }
    }

    /// This machine: where plain `http://` is acceptable for a test provider.
    pub fn is_loopback(&self) -> bool {
        matches!(self.host(), "127.0.0.1" | "localhost" | "[::1]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let url = HttpUrl::parse("https://api.groq.com/openai/v1").unwrap();
        assert_eq!(
            (url.https, url.authority, url.rest),
            (true, "api.groq.com", "/openai/v1")
        );
        let local = HttpUrl::parse("http://127.0.0.1:8787?x").unwrap();
        assert!(!local.https && local.is_loopback());
        assert_eq!(local.host(), "127.0.0.1");
        for bad in [
            "ftp://x",
            "https://",
            "https://user:pw@host",
            "https://a b",
            "host",
        ] {
            assert_eq!(HttpUrl::parse(bad), None, "{bad}");
        }
    }
}
