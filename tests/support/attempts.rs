//! Reads the `attempts` list of an answer or an error body, for the native and end-to-end tests
//! alike: `(model, outcome)` pairs, or rows that add the skip reason.

use serde_json::Value;

/// The `attempts` of a task answer, else of the error in an error body.
fn list(body: &Value) -> &[Value] {
    body.get("attempts")
        .or_else(|| body["error"].get("attempts"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no attempts list in {body}"))
}

fn text(attempt: &Value, field: &str) -> String {
    attempt[field].as_str().unwrap_or_default().to_string()
}

/// `(model, outcome)` per attempt.
pub fn outcomes(body: &Value) -> Vec<(String, String)> {
    list(body)
        .iter()
        .map(|a| (text(a, "model"), text(a, "outcome")))
        .collect()
}

/// `(model, outcome, reason)` per attempt; `reason` is set on skipped models.
pub fn rows(body: &Value) -> Vec<(String, String, Option<String>)> {
    list(body)
        .iter()
        .map(|a| {
            let reason = a["reason"].as_str().map(str::to_string);
            (text(a, "model"), text(a, "outcome"), reason)
        })
        .collect()
}

pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

pub fn row(model: &str, outcome: &str, reason: Option<&str>) -> (String, String, Option<String>) {
    (
        model.to_string(),
        outcome.to_string(),
        reason.map(str::to_string),
    )
}
