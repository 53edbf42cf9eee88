//! Fixed-rate publishing.
//!
//! The pacer is a schedule, not a sleep per message: message `n` (0-based) is
//! due at `start + n / rate`. Whenever the producer wakes it sends every
//! message that has come due, in one batch (one write), and then sleeps until
//! the next one is due. Timer granularity (about 1 ms in tokio) and scheduling
//! delays therefore only bunch messages up; they never lower the long-run
//! rate, which stays exact as long as the producer keeps up. If it falls more
//! than one second's worth of messages behind (a stalled machine), the backlog
//! beyond that is forgiven so that a stall is not followed by a long burst.

pub struct Pacer {
    rate: f64,
    start_ns: u64,
    /// Messages accounted for since `start_ns` (sent or forgiven).
    sent: u64,
    max_burst: u64,
}

impl Pacer {
    /// `rate` in messages per second (must be > 0).
    pub fn new(rate: f64, now_ns: u64) -> Self {
        Pacer {
            rate,
            start_ns: now_ns,
            sent: 0,
            max_burst: (rate.ceil() as u64).max(1),
        }
    }

    /// How many messages are due now and may be sent.
    pub fn available(&mut self, now_ns: u64) -> u64 {
        let elapsed = now_ns.saturating_sub(self.start_ns) as f64;
        // The epsilon keeps a wake-up at exactly `next_due_ns` from rounding
        // down to the previous message.
        let due = (elapsed * self.rate / 1e9 + 1e-6).floor() as u64 + 1;
        let mut owed = due.saturating_sub(self.sent);
        if owed > self.max_burst {
            // Forgive what lies beyond one second's worth.
            self.sent += owed - self.max_burst;
            owed = self.max_burst;
        }
        owed
    }

    /// Account for `n` messages sent.
    pub fn record(&mut self, n: u64) {
        self.sent += n;
    }

    /// When the next message falls due.
    pub fn next_due_ns(&self) -> u64 {
        self.start_ns + (self.sent as f64 * 1e9 / self.rate).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn first_message_is_due_at_once() {
        let mut p = Pacer::new(1000.0, 5 * S);
        assert_eq!(p.available(5 * S), 1);
        p.record(1);
        assert_eq!(p.available(5 * S), 0);
        assert_eq!(p.next_due_ns(), 5 * S + 1_000_000);
    }

    #[test]
    fn batches_what_came_due_and_keeps_the_long_run_rate() {
        // 20 000 msg/s woken every 1.3 ms (a coarse, irregular timer).
        let mut p = Pacer::new(20_000.0, 0);
        let mut sent = 0;
        let mut now = 0;
        while now < 10 * S {
            let n = p.available(now);
            p.record(n);
            sent += n;
            now += 1_300_000;
        }
        // Exactly the messages due in [0, 10 s): 200 000, give or take the
        // batch in flight at the last wake-up.
        assert!((199_970..=200_001).contains(&sent), "{sent}");
    }

    #[test]
    fn sleeping_until_next_due_yields_one_message() {
        let mut p = Pacer::new(5000.0, 0);
        let mut now = 0;
        for _ in 0..10_000 {
            let n = p.available(now);
            assert_eq!(n, 1);
            p.record(n);
            now = p.next_due_ns();
        }
        // 10 000 messages at 5000/s: the last was due at 1.9998 s.
        assert_eq!(now, 2 * S);
    }

    #[test]
    fn a_stall_is_forgiven_beyond_one_second() {
        let mut p = Pacer::new(100.0, 0);
        let first = p.available(0);
        p.record(first);
        // Stalled for 10 s: at most one second's worth comes out at once.
        let n = p.available(10 * S);
        assert_eq!(n, 100);
        p.record(n);
        assert_eq!(p.available(10 * S), 0);
        // And the schedule carries on from there at the same rate.
        assert_eq!(p.available(10 * S + S / 2), 50);
    }

    #[test]
    fn fractional_rates() {
        let mut p = Pacer::new(0.5, 0);
        let first = p.available(0);
        p.record(first);
        assert_eq!(p.available(S), 0);
        assert_eq!(p.next_due_ns(), 2 * S);
        assert_eq!(p.available(2 * S), 1);
    }
}
