//! `ModelChain`: the ordered models one request may try, and where each came from.

use crate::json::named;
use crate::routing::config::RoutingConfig;

named! {
    /// Which rule put a model in the chain; shown by diagnostics.
    pub enum ChainSource {
        /// `FORCE_MODEL`
        Forced = "forced",
        /// `DEFAULT_<TASK>_MODEL`
        TaskDefault = "task_default",
        /// `MODEL_REGISTRY[task]`
        Registry = "registry",
        /// `MODEL_REGISTRY["fallback"]`
        Fallback = "fallback",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    pub model: String,
    pub source: ChainSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChain {
    pub entries: Vec<ChainEntry>,
}

impl ModelChain {
    /// `[DEFAULT_T_MODEL] + MODEL_REGISTRY[T] + MODEL_REGISTRY["fallback"]`, first occurrence
    /// kept; with `FORCE_MODEL`, that model alone. `None` when `task` is not in the registry.
    pub fn for_task(config: &RoutingConfig, task: &str) -> Option<ModelChain> {
        let (task, models) = config.registry.tasks.get_key_value(task)?;
        if let Some(forced) = &config.force_model {
            return Some(ModelChain {
                entries: vec![ChainEntry {
                    model: forced.clone(),
                    source: ChainSource::Forced,
                }],
            });
        }
        let default = config.default_models.get(task);
        let candidates = default
            .into_iter()
            .map(|m| (m, ChainSource::TaskDefault))
            .chain(models.iter().map(|m| (m, ChainSource::Registry)))
            .chain(
                config
                    .registry
                    .fallback
                    .iter()
                    .map(|m| (m, ChainSource::Fallback)),
            );
        let mut entries: Vec<ChainEntry> = Vec::new();
        for (model, source) in candidates {
            if !entries.iter().any(|e| &e.model == model) {
                entries.push(ChainEntry {
                    model: model.clone(),
                    source,
                });
            }
        }
        Some(ModelChain { entries })
    }

    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.model.as_str())
    }
}
