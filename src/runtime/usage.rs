//! The optional `USAGE` binding, a Workers Analytics Engine dataset: one data point per routed
//! request, queued while the request is answered and written after it, through `wait_until`.

use std::cell::RefCell;

use serde::Serialize;
use worker::{AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Env};

use crate::http::relay::{UsagePoint, UsageSink};
use crate::routing::log::{write, Level};
use crate::runtime::ConsoleLog;

const BINDING: &str = "USAGE";

/// The points one request recorded, when `USAGE` is bound (else it records nothing).
pub struct UsageQueue(Option<(AnalyticsEngineDataset, RefCell<Vec<UsagePoint>>)>);

impl UsageSink for UsageQueue {
    fn record(&self, point: UsagePoint) {
        if let Some((_, points)) = &self.0 {
            points.borrow_mut().push(point);
        }
    }
}

impl UsageQueue {
    pub fn new(env: &Env) -> UsageQueue {
        UsageQueue(
            env.analytics_engine(BINDING)
                .ok()
                .map(|d| (d, RefCell::default())),
        )
    }

    /// Writes the queued points; a write that fails is a warn line, never a failed request.
    pub fn flush(self, log: ConsoleLog) {
        #[derive(Serialize)]
        struct WriteFailed<'a> {
            level: Level,
            event: &'static str,
            request_id: &'a str,
        }
        let Some((dataset, points)) = self.0 else {
            return;
        };
        for point in points.into_inner() {
            let data = AnalyticsEngineDataPointBuilder::new()
                .indexes([point.index.as_str()])
                .blobs(point.blobs.iter().map(String::as_str))
                .doubles(point.doubles)
                .build();
            if dataset.write_data_point(&data).is_err() {
                let line = WriteFailed {
                    level: Level::Warn,
                    event: "usage_write_failed",
                    request_id: &point.blobs[4],
                };
                write(&log, Level::Warn, &line);
            }
        }
    }
}
