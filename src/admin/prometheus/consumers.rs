//! Per-consumer acknowledgement lag (group `consumer_ack_metrics`, per
//! object only): the deliveries each consumer holds unacknowledged and the
//! seconds since it last acknowledged one — a consumer that holds messages
//! and has not acked for long is stuck. RabbitMQ has no such families.

use std::sync::Arc;

use metrics::Label;

use super::exposition::{Exposition, Family, Kind};
use super::objects::Shape;
use crate::queue::{ConsumerView, Queue, now_ms};

const UNACKED: Family = Family {
    name: "consumer_unacked_messages",
    kind: Kind::Gauge,
    help: "Deliveries a consumer holds unacknowledged",
};
const SINCE_ACK: Family = Family {
    name: "consumer_seconds_since_last_ack",
    kind: Kind::Gauge,
    help: "Seconds since a consumer last acknowledged or rejected a delivery (absent if it never did)",
};

pub struct ConsumerSample {
    labels: Vec<Label>,
    unacked: u32,
    last_settled_ms: u64,
}

impl ConsumerSample {
    /// The consumers of `q` (none read unless it has some).
    pub fn of(
        vhost: &str,
        q: &Arc<Queue>,
        channel_name: impl Fn(&ConsumerView) -> String,
    ) -> Vec<Self> {
        if q.consumer_count() == 0 {
            return Vec::new();
        }
        q.view()
            .consumers
            .iter()
            .map(|c| ConsumerSample {
                labels: vec![
                    Label::new("vhost", vhost.to_string()),
                    Label::new("queue", q.name().to_string()),
                    Label::new("consumer_tag", c.tag.to_string()),
                    Label::new("channel", channel_name(c)),
                ],
                unacked: c.unacked,
                last_settled_ms: c.last_settled_ms,
            })
            .collect()
    }
}

pub fn write(
    out: &mut Exposition,
    prefix: &str,
    shape: Shape,
    consumers: &[ConsumerSample],
    wants: impl Fn(&str) -> bool,
) {
    if !wants("consumer_ack_metrics") || shape != Shape::PerObject {
        return;
    }
    let unacked: Vec<(Vec<Label>, f64)> = consumers
        .iter()
        .map(|c| (c.labels.clone(), f64::from(c.unacked)))
        .collect();
    out.family(prefix, &UNACKED, &unacked);
    let now = now_ms();
    let since: Vec<(Vec<Label>, f64)> = consumers
        .iter()
        .filter(|c| c.last_settled_ms != 0)
        .map(|c| {
            let ms = now.saturating_sub(c.last_settled_ms);
            (c.labels.clone(), ms as f64 / 1000.0)
        })
        .collect();
    out.family(prefix, &SINCE_ACK, &since);
}
