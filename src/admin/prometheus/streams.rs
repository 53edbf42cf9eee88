//! Stream families: RabbitMQ's `stream_consumer_max_offset_lag` (detailed
//! group `stream_consumer_metrics`), and Warren's per-stream offsets and
//! storage (group `stream_metrics`) and per-consumer offset and lag (group
//! `stream_consumer_offsets`).
//!
//! Offsets only mean something per object: the aggregated `/metrics`
//! carries the lag and storage sums, not summed offsets.

use metrics::Label;

use super::exposition::{Exposition, Family, Kind};
use super::objects::Shape;
use crate::queue::Queue;
use crate::queue::stream::StreamInfo;

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

pub struct StreamSample {
    vhost: String,
    name: String,
    info: StreamInfo,
}

impl StreamSample {
    pub fn of(vhost: &str, q: &Queue) -> Option<StreamSample> {
        Some(StreamSample {
            vhost: vhost.to_string(),
            name: q.name().to_string(),
            info: q.stream.as_ref()?.info(),
        })
    }

    fn labels(&self) -> Vec<Label> {
        vec![
            Label::new("vhost", self.vhost.clone()),
            Label::new("queue", self.name.clone()),
        ]
    }

    fn max_lag(&self) -> u64 {
        self.info.consumers.iter().map(|c| c.lag).max().unwrap_or(0)
    }
}

type StreamValue = fn(&StreamSample) -> u64;

/// Per stream; `summed` says whether the aggregated endpoint sums it.
const STREAM_METRICS: [(Family, StreamValue, bool); 5] = [
    (
        gauge("stream_first_offset", "First offset still kept in a stream"),
        |s| s.info.first_offset,
        false,
    ),
    (
        gauge(
            "stream_committed_offset",
            "Offset the next message appended to a stream gets; all below it are durable",
        ),
        |s| s.info.committed_offset,
        false,
    ),
    (
        gauge("stream_messages", "Messages kept in a stream"),
        |s| s.info.committed_offset.saturating_sub(s.info.first_offset),
        true,
    ),
    (
        gauge("stream_segments", "Segment files of a stream"),
        |s| s.info.segments as u64,
        true,
    ),
    (
        gauge("stream_segment_bytes", "Bytes of a stream's segment files"),
        |s| s.info.bytes,
        true,
    ),
];

const MAX_LAG: Family = gauge(
    "stream_consumer_max_offset_lag",
    "Highest consumer offset lag",
);
const CONSUMER_OFFSET: Family = gauge(
    "stream_consumer_offset",
    "Offset a stream consumer reads next",
);
const CONSUMER_LAG: Family = gauge(
    "stream_consumer_offset_lag",
    "Messages between a stream consumer and the end of its stream",
);

pub fn write(
    out: &mut Exposition,
    prefix: &str,
    shape: Shape,
    streams: &[StreamSample],
    wants: impl Fn(&str) -> bool,
) {
    if wants("stream_consumer_metrics") {
        let samples = match shape {
            Shape::Aggregated => {
                vec![(
                    Vec::new(),
                    streams.iter().map(StreamSample::max_lag).max().unwrap_or(0) as f64,
                )]
            }
            Shape::PerObject => streams
                .iter()
                .map(|s| (s.labels(), s.max_lag() as f64))
                .collect(),
        };
        out.family(prefix, &MAX_LAG, &samples);
    }
    if wants("stream_metrics") {
        for (family, value, summed) in &STREAM_METRICS {
            let samples = match shape {
                Shape::Aggregated if !summed => continue,
                Shape::Aggregated => {
                    vec![(Vec::new(), streams.iter().map(value).sum::<u64>() as f64)]
                }
                Shape::PerObject => streams
                    .iter()
                    .map(|s| (s.labels(), value(s) as f64))
                    .collect(),
            };
            out.family(prefix, family, &samples);
        }
    }
    if wants("stream_consumer_offsets") && shape == Shape::PerObject {
        let per_consumer = |read: fn(u64, u64) -> u64| -> Vec<(Vec<Label>, f64)> {
            streams
                .iter()
                .flat_map(|s| {
                    s.info.consumers.iter().map(move |c| {
                        let mut labels = s.labels();
                        labels.push(Label::new("consumer_tag", c.tag.clone()));
                        (labels, read(c.offset, c.lag) as f64)
                    })
                })
                .collect()
        };
        out.family(prefix, &CONSUMER_OFFSET, &per_consumer(|offset, _| offset));
        out.family(prefix, &CONSUMER_LAG, &per_consumer(|_, lag| lag));
    }
}
