//! The management API's ways of writing values: counters with a
//! `_details.rate` sibling, `message_stats`, ISO-8601 and epoch times,
//! argument tables.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// `name: count` and `name_details: {"rate": r}`.
pub fn counter(out: &mut Map<String, Value>, name: &str, count: u64, rate: f64) {
    out.insert(name.to_string(), count.into());
    out.insert(format!("{name}_details"), json!({ "rate": rate }));
}

/// A `message_stats` object from parallel names, counts and rates.
pub fn message_stats(names: &[&str], counts: &[u64], rates: &[f64]) -> Map<String, Value> {
    let mut m = Map::new();
    for ((name, count), rate) in names.iter().zip(counts).zip(rates) {
        counter(&mut m, name, *count, *rate);
    }
    m
}

/// Adds RabbitMQ's derived `deliver_get` (every delivery and get) to a
/// `message_stats` map that has the four parts.
pub fn add_deliver_get(m: &mut Map<String, Value>) {
    let parts = ["deliver", "deliver_no_ack", "get", "get_no_ack"];
    let count: u64 = parts.iter().filter_map(|p| m.get(*p)?.as_u64()).sum();
    let rate: f64 = parts
        .iter()
        .filter_map(|p| m.get(&format!("{p}_details"))?.get("rate")?.as_f64())
        .sum();
    counter(m, "deliver_get", count, rate);
}

/// Milliseconds since the epoch (`connected_at`).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RabbitMQ's ISO-8601 form, `2026-11-22T05:53:41.432+00:00` (`idle_since`).
pub fn iso8601(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_read_as_rabbitmq_writes_them() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_326_854_198);
        assert_eq!(epoch_ms(t), 1_795_326_854_198);
        assert_eq!(iso8601(t), "2026-11-22T05:54:14.198+00:00");
    }

    #[test]
    fn deliver_get_sums_the_deliveries() {
        let mut m = message_stats(&["deliver", "get", "ack"], &[3, 2, 9], &[1.0, 0.5, 0.0]);
        add_deliver_get(&mut m);
        assert_eq!(m["deliver_get"], 5);
        assert_eq!(m["deliver_get_details"], json!({"rate": 1.5}));
        assert_eq!(m["ack_details"], json!({"rate": 0.0}));
    }
}
