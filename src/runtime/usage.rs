//! The optional `USAGE` binding, a Workers Analytics Engine dataset: one data point per routed
//! request (`RequestRecord`'s usage point), queued while the request is answered and written
//! after it.

use std::cell::RefCell;

use serde::Serialize;
use worker::{
    AnalyticsEngineDataPoint, AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Env,
};

use crate::http::record::{RequestRecord, UsageSink};
use crate::routing::log::{write, Level};
use crate::runtime::ConsoleLog;

const BINDING: &str = "USAGE";

/// A data point and the request id it is for (named in the warn line should its write fail).
type Point = (String, AnalyticsEngineDataPoint);

/// The points one request recorded, when `USAGE` is bound (else it records nothing).
pub struct UsageQueue(Option<(AnalyticsEngineDataset, RefCell<Vec<Point>>)>);

impl UsageSink for UsageQueue {
    fn record(&self, record: &RequestRecord) {
        if let Some((_, points)) = &self.0 {
            let point = AnalyticsEngineDataPointBuilder::new()
                .indexes([record.usage_index()])
                .blobs(record.usage_blobs())
                .doubles(record.usage_doubles())
                .build();
            points.borrow_mut().push((record.request_id.clone(), point));
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
        struct UsageWriteFailed<'a> {
            request_id: &'a str,
        }
        let Some((dataset, points)) = self.0 else {
            return;
        };
        for (request_id, point) in points.into_inner() {
            if dataset.write_data_point(&point).is_err() {
                let line = UsageWriteFailed {
                    request_id: &request_id,
                };
                write(&log, Level::Warn, "usage_write_failed", &line);
            }
        }
    }
}
