//! `TaskType`: the name a caller routes by, and the binding names derived from it.

use std::borrow::Borrow;
use std::fmt;

use crate::json::cut;

/// The registry key holding the universal fallback list; not a task a caller may ask for.
pub const FALLBACK_KEY: &str = "fallback";

const MAX_TASK_NAME_LEN: usize = 64;

/// A validated task name: 1–64 of lowercase ASCII letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskType(String);

impl TaskType {
    /// Checks `name` against the task-name rule; the error says what is wrong with it.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("a task name is empty".to_string());
        }
        if name.len() > MAX_TASK_NAME_LEN {
            return Err(format!(
                "task name `{}…` is longer than {MAX_TASK_NAME_LEN} bytes",
                cut(name, 32)
            ));
        }
        // `name` is at most 64 bytes from here: shown whole.
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "task name `{name}` contains `{bad}`; use lowercase letters, digits, `-` and `_`"
            ));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `code-review` → `DEFAULT_CODE_REVIEW_MODEL`.
    pub fn default_model_binding(&self) -> String {
        format!("DEFAULT_{}_MODEL", self.binding_part())
    }

    /// `code-review` → `MAX_CODE_REVIEW_TOKENS`.
    pub fn max_tokens_binding(&self) -> String {
        format!("MAX_{}_TOKENS", self.binding_part())
    }

    fn binding_part(&self) -> String {
        self.0
            .chars()
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    }
}

// Lets registry maps keyed by `TaskType` be looked up with a caller's `&str`.
impl Borrow<str> for TaskType {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_follow_the_rule() {
        for ok in ["fast", "reasoning", "code-review", "a_b", "x1", "9"] {
            assert!(TaskType::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "Fast",
            "code review",
            "a/b",
            "é",
            "a.b",
            &"x".repeat(65),
            // Longer than 64 bytes with its 64th byte inside a character: refused, no panic.
            &format!("a{}", "é".repeat(40)),
        ] {
            assert!(TaskType::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn max_tokens_binding_names() {
        let task = TaskType::parse("code-review").unwrap();
        assert_eq!(task.max_tokens_binding(), "MAX_CODE_REVIEW_TOKENS");
    }

    #[test]
    fn default_binding_names() {
        let cases = [
            ("fast", "DEFAULT_FAST_MODEL"),
            ("reasoning", "DEFAULT_REASONING_MODEL"),
            ("summarization", "DEFAULT_SUMMARIZATION_MODEL"),
            ("code-review", "DEFAULT_CODE_REVIEW_MODEL"),
            ("a_b-c", "DEFAULT_A_B_C_MODEL"),
        ];
        for (task, binding) in cases {
            assert_eq!(
                TaskType::parse(task).unwrap().default_model_binding(),
                binding
            );
        }
    }
}
