//! The response cache (`CACHE`) on the Workers Cache API: `caches.default`, in the data center
//! that answers (entries do not replicate to others). An entry is the stored completion under a
//! synthetic GET URL named by its key, with `Cache-Control: max-age` set to the task's TTL and
//! the time it was stored; writes are queued and made after the answer.

use std::cell::RefCell;

use serde::Serialize;
use worker::{Cache, Headers, Response, ResponseBuilder};

use crate::http::cache::{CacheWrites, CachedAnswer, ResponseCache};
use crate::routing::log::{write, Level};
use crate::runtime::crypto::sha256_hex;
use crate::runtime::ConsoleLog;

/// When an entry was stored (epoch ms), for a caller's `max-age`.
const STORED_HEADER: &str = "x-stored-ms";

/// The URL an entry is kept under.
fn url(key: &str) -> String {
    format!("https://task-router.cache/v1/{key}")
}

/// The isolate's view of the cache for one request, and what it is to store.
#[derive(Default)]
pub struct WorkersCache {
    queued: RefCell<Vec<(String, CachedAnswer, u64)>>,
}

impl ResponseCache for WorkersCache {
    async fn digest(&self, text: &[u8]) -> Result<String, String> {
        sha256_hex(text).await
    }

    async fn get(&self, key: &str) -> Option<CachedAnswer> {
        let mut found = Cache::default().get(url(key), false).await.ok()??;
        let stored = found.headers().get(STORED_HEADER).ok()??;
        Some(CachedAnswer {
            stored_ms: stored.parse().ok()?,
            completion: found.bytes().await.ok()?,
        })
    }
}

impl CacheWrites for WorkersCache {
    fn put(&self, key: &str, answer: CachedAnswer, ttl_s: u64) {
        self.queued
            .borrow_mut()
            .push((key.to_string(), answer, ttl_s));
    }
}

impl WorkersCache {
    /// Stores the queued answers; one that fails is a warn line (the next request stores it).
    pub async fn flush(&self, log: ConsoleLog) {
        #[derive(Serialize)]
        struct CacheWriteFailed<'a> {
            error: &'a str,
        }
        for (key, answer, ttl_s) in self.queued.take() {
            let stored = entry(answer, ttl_s);
            let put = match stored {
                Ok(response) => Cache::default().put(url(&key), response).await,
                Err(e) => Err(e),
            };
            if let Err(e) = put {
                let line = CacheWriteFailed {
                    error: &e.to_string(),
                };
                write(&log, Level::Warn, "cache_write_failed", &line);
            }
        }
    }
}

fn entry(answer: CachedAnswer, ttl_s: u64) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", &format!("max-age={ttl_s}"))?;
    headers.set(STORED_HEADER, &answer.stored_ms.to_string())?;
    Ok(ResponseBuilder::new()
        .with_headers(headers)
        .fixed(answer.completion))
}
