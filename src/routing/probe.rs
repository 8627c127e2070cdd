//! The scheduled probe: compare the models the configuration routes to with what Groq's
//! `GET /openai/v1/models` lists, so a retired model is known before a user pays for it.

use serde::Serialize;

use crate::groq::ListedModel;
use crate::routing::config::RoutingConfig;
use crate::routing::health::{GoneVerdict, HealthBook};
use crate::routing::log::{write, Level, Log};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbeResult {
    /// Models in use that Groq no longer lists, now marked gone, with their verdicts.
    pub retired: Vec<(String, GoneVerdict)>,
    /// Models in use that Groq lists: any gone verdict on them is cleared.
    pub listed: Vec<String>,
    /// Those of `listed` that were held gone until now: the verdicts to unshare.
    pub cleared: Vec<String>,
}

#[derive(Serialize)]
struct Retired<'a> {
    model: &'a str,
    tasks: &'a [&'a str],
    hint: String,
}

#[derive(Serialize)]
struct Probed<'a> {
    models_in_use: usize,
    listed: usize,
    retired: Vec<&'a str>,
}

/// Applies a successful probe to the health book and logs what operators must act on.
pub fn apply(
    config: &RoutingConfig,
    listed: &[ListedModel],
    book: &mut HealthBook,
    now_ms: u64,
    log: &dyn Log,
) -> ProbeResult {
    let mut result = ProbeResult::default();
    let in_use = config.models_in_use();
    for (model, tasks) in &in_use {
        if let Some(limits) = listed.iter().find(|m| m.id == *model) {
            // Groq's limits fill what `MODEL_CAPABILITIES` leaves unknown, until the next probe
            // (or longer, when one fails).
            let until_ms = now_ms + config.model_gone_ttl_ms;
            book.learn(model, until_ms, now_ms, |known| {
                known.context_window = limits.context_window.or(known.context_window);
                known.max_completion_tokens =
                    limits.max_completion_tokens.or(known.max_completion_tokens);
            });
            if book.clear_gone(model) {
                result.cleared.push(model.clone());
            }
            result.listed.push(model.clone());
            continue;
        }
        let verdict = GoneVerdict {
            since_ms: now_ms,
            until_ms: now_ms + config.model_gone_ttl_ms,
            reason: "not listed by Groq's GET /openai/v1/models".to_string(),
        };
        book.mark_gone(model, verdict.clone());
        let hint = format!(
            "Groq no longer lists `{model}`; replace it in `MODEL_REGISTRY` (or the `DEFAULT_*_MODEL` / `FORCE_MODEL` that names it)"
        );
        let line = Retired { model, tasks, hint };
        write(log, Level::Error, "model_retired", &line);
        result.retired.push((model.clone(), verdict));
    }
    let line = Probed {
        models_in_use: in_use.len(),
        listed: result.listed.len(),
        retired: result.retired.iter().map(|(m, _)| m.as_str()).collect(),
    };
    write(log, Level::Info, "probe", &line);
    result
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::*;
    use crate::bindings::{BindingValue, Reader};
    use crate::groq::listed_models;
    use crate::groq::outcome::Outcome;
    use crate::routing::health::SkipReason;
    use crate::routing::log::MemoryLog;

    fn config(extra: &[(&'static str, &str)]) -> RoutingConfig {
        let registry = r#"{"fast":["a","b"],"code-review":["c"],"fallback":["b"]}"#;
        let b: BTreeMap<&str, BindingValue> = [("MODEL_REGISTRY", registry)]
            .iter()
            .chain(extra)
            .map(|(k, v)| (*k, BindingValue::Text(v.to_string())))
            .collect();
        let mut reader = Reader::new(&b);
        let config = RoutingConfig::read(&mut reader);
        assert_eq!(reader.problems, []);
        config
    }

    #[test]
    fn models_in_use_include_defaults_and_fallback() {
        let config = config(&[("DEFAULT_CODE_REVIEW_MODEL", "d")]);
        let uses = serde_json::to_value(config.models_in_use()).unwrap();
        let want = json!({"a": ["fast"], "b": ["code-review", "fast"], "c": ["code-review"], "d": ["code-review"]});
        assert_eq!(uses, want);
        let forced = super::tests::config(&[("FORCE_MODEL", "x")]);
        assert_eq!(forced.models_in_use().keys().collect::<Vec<_>>(), vec!["x"]);
    }

    #[test]
    fn listed_models_reads_groqs_list_or_says_why_not() {
        let body = br#"{"object":"list","data":[{"id":"a","object":"model","active":true,"context_window":131072,"max_completion_tokens":65536},{"id":"b","object":"model"}]}"#;
        let ids: Vec<String> = listed_models(200, body)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(listed_models(401, b"{}"), Err("Groq answered 401".into()));
        assert_eq!(
            listed_models(200, b"<html>"),
            Err("not a model list".into())
        );
    }

    #[test]
    fn unlisted_models_are_retired_and_listed_ones_cleared() {
        let mut book = HealthBook::default();
        book.record("a", Outcome::ModelGone, None, 0, 3_600_000);
        book.take_unshared();
        let log = MemoryLog::default();
        let listed = [
            ListedModel {
                id: "a".into(),
                context_window: Some(8192),
                max_completion_tokens: Some(1024),
            },
            ListedModel {
                id: "b".into(),
                context_window: None,
                max_completion_tokens: None,
            },
        ];
        let result = apply(&config(&[]), &listed, &mut book, 10, &log);
        // Groq's limits for a model are learned, where it lists them.
        let learned = book.learned("a", 11).expect("limits learned");
        assert_eq!(
            (learned.context_window, learned.max_completion_tokens),
            (Some(8192), Some(1024))
        );
        assert_eq!(book.learned("b", 11).map(|c| c.context_window), Some(None));
        assert_eq!(result.listed, vec!["a", "b"]);
        assert_eq!(result.cleared, vec!["a"], "only `a` was held gone");
        let retired: Vec<&str> = result.retired.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(retired, vec!["c"]);
        assert_eq!(book.availability("a", 11), None, "listed again: cleared");
        assert_eq!(book.availability("c", 11), Some(SkipReason::Gone));
        let lines = log.0.borrow();
        let (level, line) = lines
            .iter()
            .find(|(_, l)| l.contains("model_retired"))
            .unwrap();
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(*level, Level::Error);
        assert_eq!(
            (&line["model"], &line["tasks"]),
            (&json!("c"), &json!(["code-review"]))
        );
    }
}
