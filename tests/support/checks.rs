//! Checks of JSON answers and log lines, for the native and end-to-end tests alike.

use serde_json::Value;

/// Every field of `want` (an object) has that value in `value`; a `null` wanted is a null or a
/// missing field.
#[track_caller]
pub fn assert_has(value: &Value, want: Value) {
    for (key, wanted) in want.as_object().expect("an object of wanted fields") {
        let got = value.get(key).unwrap_or(&Value::Null);
        assert_eq!(got, wanted, "`{key}` in {value}");
    }
}
