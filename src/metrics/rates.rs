//! Counts and their rates per object, as the management API shows them:
//! `"publish": 12, "publish_details": {"rate": 2.4}`.
//!
//! An object (a queue, an exchange, a channel, a connection) bumps its
//! [`EventCounts`] on its own paths with relaxed atomic adds — no lock, no
//! clock read. Rates are not worked out per event: the broker's stats
//! sampler observes every object every few seconds (RabbitMQ's
//! `collect_statistics_interval`) and [`Rates`] keeps, per value, the
//! change over the last interval divided by its length. A reader takes the
//! last rates as they are, so listing a page of queues costs the page, and
//! the hot path pays one atomic add per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Rates of change of `N` values between the sampler's last two looks.
#[derive(Debug)]
pub struct Rates<const N: usize> {
    state: Mutex<RateState<N>>,
}

#[derive(Debug)]
struct RateState<const N: usize> {
    at: Option<Instant>,
    last: [u64; N],
    rates: [f64; N],
}

impl<const N: usize> Default for Rates<N> {
    fn default() -> Self {
        Rates {
            state: Mutex::new(RateState {
                at: None,
                last: [0; N],
                rates: [0.0; N],
            }),
        }
    }
}

impl<const N: usize> Rates<N> {
    /// Record `values` as seen at `now`. Values may go down (gauges such as
    /// a queue's depth), giving negative rates, as RabbitMQ's do.
    pub fn observe(&self, now: Instant, values: [u64; N]) {
        let mut st = self.state.lock();
        if let Some(at) = st.at {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs <= 0.0 {
                return;
            }
            for (i, v) in values.iter().enumerate() {
                st.rates[i] = (*v as f64 - st.last[i] as f64) / secs;
            }
        }
        st.at = Some(now);
        st.last = values;
    }

    /// The rates per second over the last interval (zeros before two looks).
    pub fn get(&self) -> [f64; N] {
        self.state.lock().rates
    }
}

/// `N` event counters of one object, with their rates.
#[derive(Debug)]
pub struct EventCounts<const N: usize> {
    values: [AtomicU64; N],
    rates: Rates<N>,
}

impl<const N: usize> Default for EventCounts<N> {
    fn default() -> Self {
        EventCounts {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            rates: Rates::default(),
        }
    }
}

impl<const N: usize> EventCounts<N> {
    #[inline]
    pub fn add(&self, event: usize, n: u64) {
        if let Some(v) = self.values.get(event) {
            v.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, event: usize) -> u64 {
        self.values
            .get(event)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    pub fn values(&self) -> [u64; N] {
        std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed))
    }

    /// The sampler's look.
    pub fn sample(&self, now: Instant) {
        self.rates.observe(now, self.values());
    }

    /// Counts and rates together.
    pub fn snapshot(&self) -> ([u64; N], [f64; N]) {
        (self.values(), self.rates.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rate_is_the_change_over_the_last_interval() {
        let c: EventCounts<2> = EventCounts::default();
        let t0 = Instant::now();
        c.add(0, 5);
        c.sample(t0);
        assert_eq!(c.snapshot(), ([5, 0], [0.0, 0.0]));
        c.add(0, 10);
        c.add(1, 1);
        c.sample(t0 + Duration::from_secs(5));
        assert_eq!(c.snapshot(), ([15, 1], [2.0, 0.2]));
        // Nothing happened in the next interval: the rate falls to zero.
        c.sample(t0 + Duration::from_secs(10));
        assert_eq!(c.snapshot().1, [0.0, 0.0]);
        c.add(7, 1); // out of range: ignored
    }

    #[test]
    fn a_gauge_that_falls_has_a_negative_rate() {
        let r: Rates<1> = Rates::default();
        let t0 = Instant::now();
        r.observe(t0, [10]);
        r.observe(t0 + Duration::from_secs(2), [4]);
        assert_eq!(r.get(), [-3.0]);
    }
}
