//! The scheduled probe: compare the models the configuration routes to with what Groq's
//! `GET /openai/v1/models` lists, so a retired model is known before a user pays for it.

use std::collections::BTreeMap;

use crate::chain::ModelChain;
use crate::config::Config;
use crate::health::{GoneVerdict, HealthBook};
use crate::json;
use crate::log::{Level, Log};

/// Every model some task's chain can reach, with the tasks that reach it.
pub fn models_in_use(config: &Config) -> BTreeMap<String, Vec<String>> {
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in config.task_names() {
        for model in ModelChain::for_task(config, task)
            .iter()
            .flat_map(ModelChain::models)
        {
            uses.entry(model.to_string())
                .or_default()
                .push(task.to_string());
        }
    }
    uses
}

/// The ids in Groq's model list; `Err` says why the answer is not one.
pub fn listed_models(status: u16, body: &[u8]) -> Result<Vec<String>, String> {
    if status != 200 {
        return Err(format!("Groq answered {status}"));
    }
    let not_a_list = || "not a model list".to_string();
    let body = std::str::from_utf8(body).map_err(|_| not_a_list())?;
    let data = json::member(body, "data").ok_or_else(not_a_list)?;
    json::items(data)
        .map_err(|_| not_a_list())?
        .into_iter()
        .map(|entry| {
            json::member(entry, "id")
                .and_then(json::as_str)
                .map(|id| id.into_owned())
                .ok_or_else(not_a_list)
        })
        .collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbeResult {
    /// Models in use that Groq no longer lists, now marked gone, with their verdicts.
    pub retired: Vec<(String, GoneVerdict)>,
    /// Models in use that Groq lists: any gone verdict on them is cleared.
    pub listed: Vec<String>,
}

/// Applies a successful probe to the health book and logs what operators must act on.
pub fn apply(
    config: &Config,
    listed: &[String],
    book: &mut HealthBook,
    now_ms: u64,
    log: &dyn Log,
) -> ProbeResult {
    let mut result = ProbeResult::default();
    let in_use = models_in_use(config);
    for (model, tasks) in &in_use {
        if listed.iter().any(|id| id == model) {
            book.clear_gone(model);
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
        let line = Level::Error
            .line("model_retired")
            .str("model", model)
            .raw("tasks", &json::array(tasks.iter().map(|t| json::string(t))))
            .str("hint", &hint)
            .finish();
        log.emit(Level::Error, line);
        result.retired.push((model.clone(), verdict));
    }
    let line = Level::Info
        .line("probe")
        .num("models_in_use", in_use.len() as u64)
        .num("listed", result.listed.len() as u64)
        .raw(
            "retired",
            &json::array(result.retired.iter().map(|(m, _)| json::string(m))),
        )
        .finish();
    log.emit(Level::Info, line);
    result
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::BindingValue;
    use crate::health::Availability;
    use crate::log::MemoryLog;

    fn config(extra: &[(&'static str, &str)]) -> Config {
        let mut b: BTreeMap<&str, BindingValue> = BTreeMap::new();
        b.insert(
            "MODEL_REGISTRY",
            BindingValue::Text(r#"{"fast":["a","b"],"code-review":["c"],"fallback":["b"]}"#.into()),
        );
        for (k, v) in extra {
            b.insert(k, BindingValue::Text(v.to_string()));
        }
        Config::load(&b).unwrap()
    }

    #[test]
    fn models_in_use_include_defaults_and_fallback() {
        let uses = models_in_use(&config(&[("DEFAULT_CODE_REVIEW_MODEL", "d")]));
        let want: BTreeMap<String, Vec<String>> = [
            ("a", vec!["fast"]),
            ("b", vec!["code-review", "fast"]),
            ("c", vec!["code-review"]),
            ("d", vec!["code-review"]),
        ]
        .into_iter()
        .map(|(m, t)| (m.to_string(), t.into_iter().map(str::to_string).collect()))
        .collect();
        assert_eq!(uses, want);
        let forced = models_in_use(&config(&[("FORCE_MODEL", "x")]));
        assert_eq!(forced.keys().collect::<Vec<_>>(), vec!["x"]);
    }

    #[test]
    fn listed_models_reads_groqs_list_or_says_why_not() {
        let body = br#"{"object":"list","data":[{"id":"a","object":"model","active":true},{"id":"b","object":"model"}]}"#;
        assert_eq!(
            listed_models(200, body),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(listed_models(401, b"{}").unwrap_err().contains("401"));
        assert!(listed_models(200, b"<html>")
            .unwrap_err()
            .contains("not a model list"));
    }

    #[test]
    fn unlisted_models_are_retired_and_listed_ones_cleared() {
        let config = config(&[]);
        let mut book = HealthBook::default();
        book.record("a", crate::outcome::Outcome::ModelGone, None, 0, 3_600_000);
        book.take_unshared();
        let log = MemoryLog::default();
        let result = apply(
            &config,
            &["a".to_string(), "b".to_string()],
            &mut book,
            10,
            &log,
        );
        assert_eq!(result.listed, vec!["a", "b"]);
        assert_eq!(
            result
                .retired
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>(),
            vec!["c"]
        );
        assert_eq!(
            book.availability("a", 11),
            Availability::Available,
            "listed again: cleared"
        );
        assert!(matches!(book.availability("c", 11), Availability::Gone(_)));
        let lines: Vec<(Level, serde_json::Value)> = log
            .0
            .borrow()
            .iter()
            .map(|(level, line)| (*level, serde_json::from_str(line).unwrap()))
            .collect();
        let retired = lines
            .iter()
            .find(|(_, l)| l["event"] == "model_retired")
            .unwrap();
        assert_eq!(retired.0, Level::Error);
        assert_eq!(retired.1["model"], "c");
        assert_eq!(retired.1["tasks"], serde_json::json!(["code-review"]));
    }
}
