//! The optional `CLIENT_RATE_LIMITER` binding (Workers Rate Limiting), keyed per client.

use worker::{Env, RateLimiter as Binding};

use crate::http::limit::RateLimiter;
use crate::routing::log::{note, Level};
use crate::runtime::ConsoleLog;

const BINDING: &str = "CLIENT_RATE_LIMITER";

pub struct BindingLimiter(Option<Binding>, ConsoleLog);

impl BindingLimiter {
    pub fn from_env(env: &Env, log: ConsoleLog) -> Self {
        BindingLimiter(env.rate_limiter(BINDING).ok(), log)
    }

    pub fn is_bound(&self) -> bool {
        self.0.is_some()
    }
}

impl RateLimiter for BindingLimiter {
    async fn allow(&self, key: &str) -> bool {
        let Some(binding) = &self.0 else {
            return true;
        };
        match binding.limit(key.to_string()).await {
            Ok(outcome) => outcome.success,
            // Fail open: a limiter outage must not take the router down with it.
            Err(_) => {
                note(&self.1, Level::Warn, "rate_limiter_unavailable");
                true
            }
        }
    }
}
