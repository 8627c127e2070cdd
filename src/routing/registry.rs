//! The model tables: `MODEL_REGISTRY` (task → models, and the universal `fallback` list) and
//! `MODEL_PRICES` (model → USD per million tokens), validated like every binding, with errors
//! naming the binding and the entry. Model ids are the only values quoted back, cut short.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::bindings::{table, BindingValue};
use crate::groq::completion::Usage;
use crate::json::{cut, JsonKind, Text};
use crate::routing::task::{TaskType, FALLBACK_KEY};

/// Task → models in priority order, plus the universal `fallback` list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    pub tasks: BTreeMap<TaskType, Vec<String>>,
    pub fallback: Vec<String>,
}

/// A model's price in USD per million tokens (`MODEL_PRICES`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    /// What `usage` cost: prompt tokens at `input`, completion tokens at `output`. `None` unless
    /// Groq reported both counts.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let (prompt, completion) = (usage.prompt_tokens?, usage.completion_tokens?);
        Some((prompt as f64 * self.input + completion as f64 * self.output) / 1e6)
    }
}

pub const MODEL_ID_RULE: &str = "1 to 256 characters, no spaces, quotes or control characters";

pub fn model_id_ok(model: &str) -> bool {
    let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || c == '"';
    !model.is_empty() && model.len() <= 256 && !model.contains(bad)
}

/// Parses `MODEL_REGISTRY` from either form; the error names what is wrong and where.
pub fn parse_registry(value: BindingValue) -> Result<Registry, String> {
    table("MODEL_REGISTRY", value, "task → [model ids]", |members| {
        let mut registry = Registry::default();
        for (key, models) in &members.0 {
            let models = parse_model_list(key, models)?;
            if key == FALLBACK_KEY {
                registry.fallback = models;
            } else {
                let task = TaskType::parse(key).map_err(|e| format!("`MODEL_REGISTRY`: {e}"))?;
                registry.tasks.insert(task, models);
            }
        }
        match registry.tasks.is_empty() {
            true => Err("`MODEL_REGISTRY` defines no task (only `fallback` or nothing)".into()),
            false => Ok(registry),
        }
    })
}

/// Parses `MODEL_PRICES`: model id → `{"input": …, "output": …}`, USD per million tokens.
pub fn parse_prices(value: BindingValue) -> Result<BTreeMap<String, Price>, String> {
    let holds = "model id → {\"input\": USD per 1M prompt tokens, \"output\": USD per 1M completion tokens}";
    table("MODEL_PRICES", value, holds, |members| {
        let mut prices = BTreeMap::new();
        for (model, raw) in &members.0 {
            let at = format!("`MODEL_PRICES.{}`", cut(model, 64));
            if !model_id_ok(model) {
                return Err(format!("{at} is not a valid model id ({MODEL_ID_RULE})"));
            }
            match serde_json::from_str::<Price>(raw.get()) {
                Ok(p) if [p.input, p.output].iter().all(|v| v.is_finite() && *v >= 0.0) => {
                    prices.insert(model.to_string(), p);
                }
                _ => return Err(format!("{at} must be {{\"input\": n, \"output\": n}}, USD per million tokens, 0 or more")),
            }
        }
        Ok(prices)
    })
}

fn parse_model_list(key: &str, models: &RawValue) -> Result<Vec<String>, String> {
    let key = cut(key, 64);
    let items: Vec<&RawValue> = match JsonKind::of(models) {
        JsonKind::List => serde_json::from_str(models.get()).map_err(|e| e.to_string())?,
        kind => {
            return Err(format!(
                "`MODEL_REGISTRY.{key}` must be a list of model ids, got {}",
                kind.described()
            ))
        }
    };
    if items.is_empty() {
        return Err(format!("`MODEL_REGISTRY.{key}` is an empty list"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Ok(Text(model)) = serde_json::from_str(item.get()) else {
            return Err(format!(
                "`MODEL_REGISTRY.{key}[{i}]` must be a model id string, got {}",
                JsonKind::of(item).described()
            ));
        };
        let shown = cut(&model, 64);
        if model.is_empty() {
            return Err(format!("`MODEL_REGISTRY.{key}[{i}]`: a model id is empty"));
        }
        if !model_id_ok(&model) {
            return Err(format!(
                "`MODEL_REGISTRY.{key}[{i}]`: `{shown}` is not a valid model id ({MODEL_ID_RULE})"
            ));
        }
        if out.iter().any(|m| *m == model) {
            return Err(format!("`MODEL_REGISTRY.{key}`: duplicate entry `{shown}`"));
        }
        out.push(model.into_owned());
    }
    Ok(out)
}
