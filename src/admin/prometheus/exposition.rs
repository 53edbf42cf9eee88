//! Families built at scrape time (one sample per queue, channel or
//! connection), written in the Prometheus text format with
//! `metrics-exporter-prometheus`'s own formatting functions, so label
//! escaping and layout match what its recorder renders for the rest.

use indexmap::IndexMap;
use metrics::{Key, Label};
use metrics_exporter_prometheus::LabelSet;
use metrics_exporter_prometheus::formatting::{
    write_help_line, write_metric_line, write_type_line,
};

/// A text exposition being written.
pub struct Exposition {
    pub text: String,
    no_globals: IndexMap<String, String>,
}

/// One family: its name, type and help.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

impl Exposition {
    pub fn new(base: String) -> Exposition {
        Exposition {
            text: base,
            no_globals: IndexMap::new(),
        }
    }

    /// Write `family` under `prefix` (`rabbitmq_` or `rabbitmq_detailed_`)
    /// with its samples; a family with no samples still gets its header,
    /// as RabbitMQ's has.
    pub fn family(&mut self, prefix: &str, family: &Family, samples: &[(Vec<Label>, f64)]) {
        let name = format!("{prefix}{}", family.name);
        write_help_line(&mut self.text, &name, None, None, family.help);
        write_type_line(&mut self.text, &name, None, None, family.kind.as_str());
        for (labels, value) in samples {
            let key = Key::from_parts(name.clone(), labels.clone());
            let set = LabelSet::from_key_and_global(&key, &self.no_globals);
            write_metric_line::<&str, f64>(&mut self.text, &name, None, &set, None, *value, None);
        }
    }

    /// A histogram: cumulative `_bucket{le=…}` lines for `bounds` (then
    /// `+Inf`), `_sum` and `_count`. `counts` are per bucket, not
    /// cumulative, with `+Inf`'s last.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: Vec<Label>,
        bounds: &[u64],
        counts: &[u64],
        sum: u64,
    ) {
        let bounds: Vec<String> = bounds.iter().map(u64::to_string).collect();
        self.histograms(name, help, &bounds, &[(labels, counts, sum as f64)]);
    }

    /// A histogram family with a series per label set: `bounds` written as
    /// given in `le`, each series' counts per bucket (`+Inf`'s last) and
    /// its sum.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[String],
        series: &[(Vec<Label>, &[u64], f64)],
    ) {
        write_help_line(&mut self.text, name, None, None, help);
        write_type_line(&mut self.text, name, None, None, "histogram");
        for (labels, counts, sum) in series {
            let key = Key::from_parts(name.to_string(), labels.clone());
            let set = LabelSet::from_key_and_global(&key, &self.no_globals);
            let mut cumulative = 0u64;
            for (i, count) in counts.iter().enumerate() {
                cumulative += count;
                let le = bounds.get(i).map_or("+Inf", String::as_str);
                write_metric_line(
                    &mut self.text,
                    name,
                    Some("bucket"),
                    &set,
                    Some(("le", le)),
                    cumulative,
                    None,
                );
            }
            write_metric_line::<&str, f64>(
                &mut self.text,
                name,
                Some("sum"),
                &set,
                None,
                *sum,
                None,
            );
            write_metric_line::<&str, u64>(
                &mut self.text,
                name,
                Some("count"),
                &set,
                None,
                cumulative,
                None,
            );
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, prefix: &str, family: &Family, value: f64) {
        self.family(prefix, family, &[(Vec::new(), value)]);
    }
}
