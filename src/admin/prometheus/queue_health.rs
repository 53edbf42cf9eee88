//! Queue health (group `queue_health_metrics`; Warren's, RabbitMQ has no
//! such families): the age of each queue's oldest ready message, and how
//! long messages waited between arriving at the broker and their first
//! delivery (a histogram). `/metrics` gives the oldest age over all queues
//! and the latency histogram summed over them; the per-object endpoints
//! one series per queue.

use metrics::Label;

use super::exposition::{Exposition, Family, Kind};
use super::objects::Shape;
use crate::queue::{LATENCY_BUCKETS_MS, LatencyHistogram, now_ms};

const OLDEST: Family = Family {
    name: "queue_oldest_ready_message_age_seconds",
    kind: Kind::Gauge,
    help: "Seconds since the oldest ready message of a queue arrived (absent when none is ready)",
};
const LATENCY: &str = "queue_delivery_latency_seconds";
const LATENCY_HELP: &str =
    "Time messages waited between arriving at the broker and their first delivery from a queue";

/// One queue, as this group reads it.
pub struct HealthSample {
    pub labels: Vec<Label>,
    /// When its oldest ready message arrived (ms since the epoch).
    pub oldest_ready_ms: Option<u64>,
    pub latency: LatencyHistogram,
}

pub fn write(
    out: &mut Exposition,
    prefix: &str,
    shape: Shape,
    queues: &[HealthSample],
    wants: impl Fn(&str) -> bool,
) {
    if !wants("queue_health_metrics") {
        return;
    }
    let now = now_ms();
    let age = |q: &HealthSample| {
        q.oldest_ready_ms
            .map(|t| now.saturating_sub(t) as f64 / 1000.0)
    };
    let bounds: Vec<String> = LATENCY_BUCKETS_MS
        .iter()
        // As client libraries write them: "0.001", "5.0".
        .map(|ms| format!("{:?}", *ms as f64 / 1000.0))
        .collect();
    let name = format!("{prefix}{LATENCY}");
    match shape {
        Shape::Aggregated => {
            let oldest = queues.iter().filter_map(age).max_by(f64::total_cmp);
            let samples: Vec<(Vec<Label>, f64)> =
                oldest.map(|a| (Vec::new(), a)).into_iter().collect();
            out.family(prefix, &OLDEST, &samples);
            let mut total = LatencyHistogram::default();
            for q in queues {
                for (sum, n) in total.buckets.iter_mut().zip(q.latency.buckets) {
                    *sum += n;
                }
                total.sum_ms += q.latency.sum_ms;
            }
            let sum = total.sum_ms as f64 / 1000.0;
            out.histograms(
                &name,
                LATENCY_HELP,
                &bounds,
                &[(Vec::new(), &total.buckets, sum)],
            );
        }
        Shape::PerObject => {
            let samples: Vec<(Vec<Label>, f64)> = queues
                .iter()
                .filter_map(|q| Some((q.labels.clone(), age(q)?)))
                .collect();
            out.family(prefix, &OLDEST, &samples);
            let series: Vec<(Vec<Label>, &[u64], f64)> = queues
                .iter()
                .filter(|q| q.latency.count() > 0)
                .map(|q| {
                    let sum = q.latency.sum_ms as f64 / 1000.0;
                    (q.labels.clone(), &q.latency.buckets[..], sum)
                })
                .collect();
            out.histograms(&name, LATENCY_HELP, &bounds, &series);
        }
    }
}
