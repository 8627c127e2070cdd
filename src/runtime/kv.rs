//! The optional `MODEL_HEALTH` KV namespace: "gone" verdicts shared across isolates and
//! locations, one key per model (`gone:<model>`) holding its verdict as JSON and expiring with it.
//! Read key by key for the models the configuration routes to: KV's `list` answers through
//! `serde_json::Value` metadata, which would cost the bundle ~10 KiB gzip for a handful of keys.

use std::cell::RefCell;

use serde::Serialize;
use worker::kv::KvStore;
use worker::Env;

use crate::json::read;
use crate::routing::config::RoutingConfig;
use crate::routing::health::{GoneVerdict, HealthBook};
use crate::routing::log::{write, Level};
use crate::runtime::{now_ms, ConsoleLog};

const BINDING: &str = "MODEL_HEALTH";
const GONE_KEY_PREFIX: &str = "gone:";
/// KV refuses shorter expirations.
const KV_MIN_TTL_S: u64 = 60;

#[derive(Clone)]
pub struct HealthKv(KvStore);

fn key(model: &str) -> String {
    format!("{GONE_KEY_PREFIX}{model}")
}

impl HealthKv {
    pub fn from_env(env: &Env) -> Option<HealthKv> {
        env.kv(BINDING).ok().map(HealthKv)
    }

    /// Reads the shared verdicts on the models in use into this isolate's memory; a KV that
    /// cannot be read changes nothing.
    pub async fn sync(&self, config: &RoutingConfig, health: &RefCell<HealthBook>) {
        let mut shared = Vec::new();
        for model in config.models_in_use().into_keys() {
            match self.0.get(&key(&model)).text().await {
                Ok(Some(text)) => shared.extend(read(text.as_bytes()).map(|v| (model, v))),
                Ok(None) => {}
                Err(_) => return,
            }
        }
        health.borrow_mut().sync_shared(&shared, now_ms());
    }

    /// Writes gone verdicts with an expiry, so every isolate learns them; a failed write is a
    /// warn line (the verdict still holds in this isolate).
    pub async fn share_gone(
        &self,
        verdicts: Vec<(String, GoneVerdict)>,
        ttl_ms: u64,
        log: ConsoleLog,
    ) {
        #[derive(Serialize)]
        struct KvWriteFailed<'a> {
            model: &'a str,
        }
        for (model, verdict) in verdicts {
            let put = async {
                let value = serde_json::to_string(&verdict)?;
                self.0
                    .put_bytes(&key(&model), value.as_bytes())?
                    .expiration_ttl((ttl_ms / 1000).max(KV_MIN_TTL_S))
                    .execute()
                    .await
            };
            if put.await.is_err() {
                let line = KvWriteFailed { model: &model };
                write(&log, Level::Warn, "kv_write_failed", &line);
            }
        }
    }

    /// Deletes the shared verdicts on models Groq lists again (best effort: a verdict left
    /// behind expires on its own).
    pub async fn clear(&self, listed: &[String]) {
        for model in listed {
            let _ = self.0.delete(&key(model)).await;
        }
    }
}
