//! The timestamps carried in message bodies.
//!
//! A timestamp is nanoseconds since the Unix epoch, but read off the
//! monotonic clock: the wall clock is read once at start-up and the monotonic
//! clock's progress is added to it. Within one warren-perf process (where the
//! producers and consumers live) the difference of two timestamps is therefore
//! exact and immune to wall-clock steps; across processes on one host it is as
//! good as their wall clocks agree.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();

fn anchor() -> &'static (Instant, u64) {
    ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        (Instant::now(), wall)
    })
}

/// Nanoseconds since the Unix epoch, monotonic.
pub fn now_ns() -> u64 {
    let (at, wall) = anchor();
    wall + at.elapsed().as_nanos() as u64
}

/// The instant a timestamp from [`now_ns`] stands for, to sleep until it.
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    let (at, wall) = anchor();
    tokio::time::Instant::from_std(*at + Duration::from_nanos(ns.saturating_sub(*wall)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_round_trips() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        let at = instant_at(a + 1_000_000);
        let back = instant_at(a);
        assert_eq!(at - back, Duration::from_millis(1));
    }
}
