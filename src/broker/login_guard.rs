//! Slowing and capping failed logins per client address.
//!
//! RabbitMQ waits 3 s before it closes a connection whose login failed;
//! Warren does that too (`amqp::handshake`) and, on top, remembers each
//! address's failures of the last minute: a repeated failure is answered
//! only after a delay that grows with them, and past
//! `auth.max_failed_logins_per_minute` the address's logins are refused
//! without looking at the credentials until the minute has passed. Memory
//! is bounded: at most [`MAX_ADDRESSES`] addresses are remembered, the
//! quietest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const WINDOW: Duration = Duration::from_secs(60);
const MAX_ADDRESSES: usize = 16_384;
/// Failures remembered per address (enough for any sensible cap).
const MAX_PER_ADDRESS: usize = 1024;
/// The longest a refusal is held back.
const MAX_DELAY: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct LoginGuard {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginGuard {
    /// Failures of `ip` within the last minute.
    pub fn recent_failures(&self, ip: IpAddr) -> usize {
        let now = Instant::now();
        let mut map = self.failures.lock();
        match map.get_mut(&ip) {
            Some(times) => {
                prune(times, now);
                let n = times.len();
                if n == 0 {
                    map.remove(&ip);
                }
                n
            }
            None => 0,
        }
    }

    /// Record a failure of `ip`; returns how long to hold the refusal
    /// back: `step` per earlier failure within the minute, at most 3 s.
    pub fn failed(&self, ip: IpAddr, step: Duration) -> Duration {
        let now = Instant::now();
        let mut map = self.failures.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
            if map.len() >= MAX_ADDRESSES {
                let quietest = map
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(q) = quietest {
                    map.remove(&q);
                }
            }
        }
        let times = map.entry(ip).or_default();
        prune(times, now);
        let earlier = times.len() as u32;
        if times.len() >= MAX_PER_ADDRESS {
            times.pop_front();
        }
        times.push_back(now);
        step.saturating_mul(earlier).min(MAX_DELAY)
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) > WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_recent_failures_and_are_capped() {
        let g = LoginGuard::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let step = Duration::from_millis(500);
        assert_eq!(g.failed(ip, step), Duration::ZERO);
        assert_eq!(g.failed(ip, step), step);
        assert_eq!(g.failed(ip, step), step * 2);
        for _ in 0..10 {
            g.failed(ip, step);
        }
        assert_eq!(g.failed(ip, step), MAX_DELAY);
        assert_eq!(g.recent_failures(ip), 14);
        assert_eq!(g.recent_failures([10, 0, 0, 2].into()), 0);
    }
}
