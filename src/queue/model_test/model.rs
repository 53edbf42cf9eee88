//! The reference model: what RabbitMQ's semantics say a queue holds and
//! delivers, written as plainly as possible.

use std::collections::BTreeMap;

use super::START;
use super::real::Setup;
use crate::queue::args::Overflow;
use crate::queue::{ConsumerId, Reason};

#[derive(Clone, Debug)]
pub(super) struct MMsg {
    pub(super) id: u64,
    pub(super) seq: u64,
    pub(super) level: u8,
    pub(super) expires_at: u64,
    pub(super) persistent: bool,
    pub(super) redelivered: bool,
    pub(super) failed: u32,
    pub(super) not_before: u64,
}

#[derive(Debug)]
pub(super) struct MConsumer {
    pub(super) id: ConsumerId,
    pub(super) prefetch: u16,
    pub(super) no_ack: bool,
    pub(super) unacked: u32,
    pub(super) blocked: bool,
}

impl MConsumer {
    pub(super) fn can_take(&self) -> bool {
        !self.blocked && (self.no_ack || self.prefetch == 0 || self.unacked < self.prefetch.into())
    }
}

pub(super) struct Model {
    pub(super) setup: Setup,
    pub(super) now: u64,
    pub(super) next_seq: u64,
    /// Delivery order: highest level first, then sequence.
    pub(super) ready: BTreeMap<(std::cmp::Reverse<u8>, u64), MMsg>,
    pub(super) delayed: Vec<MMsg>,
    pub(super) outstanding: Vec<(Option<ConsumerId>, MMsg)>,
    pub(super) consumers: Vec<MConsumer>,
    pub(super) cursor: usize,
    pub(super) dead: Vec<(u64, Reason)>,
    pub(super) delivered: Vec<(ConsumerId, u64, bool)>,
}

pub(super) fn key(m: &MMsg) -> (std::cmp::Reverse<u8>, u64) {
    (std::cmp::Reverse(m.level), m.seq)
}

pub(super) fn has_expired(at: u64, now: u64) -> bool {
    at != 0 && now > at
}

impl Model {
    pub(super) fn new(setup: Setup) -> Model {
        Model {
            setup,
            now: START,
            next_seq: 0,
            ready: BTreeMap::new(),
            delayed: Vec::new(),
            outstanding: Vec::new(),
            consumers: Vec::new(),
            cursor: 0,
            dead: Vec::new(),
            delivered: Vec::new(),
        }
    }

    pub(super) fn length(&self) -> u64 {
        (self.ready.len() + self.delayed.len()) as u64
    }

    pub(super) fn publish(
        &mut self,
        id: u64,
        priority: u8,
        ttl: Option<u64>,
        persistent: bool,
    ) -> bool {
        if let Some((max, overflow)) = self.setup.max_length
            && overflow != Overflow::DropHead
            && self.length() >= max
        {
            if overflow == Overflow::RejectPublishDlx {
                self.dead.push((id, Reason::MaxLen));
            }
            return false;
        }
        let ttl = match (self.setup.queue_ttl, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let m = MMsg {
            id,
            seq: self.next_seq,
            level: priority.min(self.setup.max_priority.unwrap_or(0)),
            expires_at: ttl.map_or(0, |t| (self.now + t).max(1)),
            persistent,
            redelivered: false,
            failed: 0,
            not_before: 0,
        };
        self.next_seq += 1;
        let (k, at) = (key(&m), m.expires_at);
        self.ready.insert(k, m);
        self.dispatch();
        if at != 0 && at <= self.now && self.ready.remove(&k).is_some() {
            self.dead.push((id, Reason::Expired));
        }
        if let Some((max, Overflow::DropHead)) = self.setup.max_length {
            while self.length() > max {
                let Some((_, m)) = self.ready.pop_first() else {
                    break;
                };
                self.dead.push((m.id, Reason::MaxLen));
            }
        }
        true
    }

    /// The head of the queue, expiring what has expired on the way.
    pub(super) fn head(&mut self) -> Option<MMsg> {
        while let Some((_, m)) = self.ready.pop_first() {
            if has_expired(m.expires_at, self.now) {
                self.dead.push((m.id, Reason::Expired));
                continue;
            }
            return Some(m);
        }
        None
    }

    pub(super) fn dispatch(&mut self) {
        loop {
            let n = self.consumers.len();
            if self.ready.is_empty() || n == 0 {
                return;
            }
            let offset = if self.cursor < n { self.cursor } else { 0 };
            let Some(i) = (0..n)
                .map(|k| (offset + k) % n)
                .find(|&i| self.consumers[i].can_take())
            else {
                return;
            };
            self.cursor = (i + 1) % n;
            let Some(m) = self.head() else {
                return;
            };
            let c = &mut self.consumers[i];
            self.delivered.push((c.id, m.id, m.redelivered));
            if !c.no_ack {
                c.unacked += 1;
                self.outstanding.push((Some(c.id), m));
            }
        }
    }

    pub(super) fn get(&mut self, no_ack: bool) -> Option<(u64, bool)> {
        self.promote();
        let m = self.head()?;
        let seen = (m.id, m.redelivered);
        if !no_ack {
            self.outstanding.push((None, m));
        }
        Some(seen)
    }

    pub(super) fn settle(&mut self, consumer: Option<ConsumerId>) {
        if let Some(c) = self.consumers.iter_mut().find(|c| Some(c.id) == consumer) {
            c.unacked = c.unacked.saturating_sub(1);
        }
    }

    pub(super) fn take(&mut self, which: usize) -> Option<(Option<ConsumerId>, MMsg)> {
        if self.outstanding.is_empty() {
            return None;
        }
        let (consumer, m) = self.outstanding.remove(which % self.outstanding.len());
        self.settle(consumer);
        Some((consumer, m))
    }

    pub(super) fn requeue(&mut self, mut m: MMsg, failed: bool) {
        if failed {
            m.failed += 1;
            if self.setup.delivery_limit.is_some_and(|l| m.failed > l) {
                self.dead.push((m.id, Reason::DeliveryLimit));
                return;
            }
        }
        m.redelivered = true;
        match self.setup.retry_ms.filter(|_| failed) {
            Some(ms) => {
                m.not_before = self.now + ms;
                self.delayed.push(m);
            }
            None => {
                m.not_before = 0;
                self.ready.insert(key(&m), m);
            }
        }
    }

    pub(super) fn promote(&mut self) {
        let now = self.now;
        let (due, later): (Vec<MMsg>, Vec<MMsg>) =
            self.delayed.drain(..).partition(|m| m.not_before <= now);
        self.delayed = later;
        for m in due {
            self.ready.insert(key(&m), m);
        }
    }

    /// Whatever is due at this moment happens (the broker's timer).
    pub(super) fn timer(&mut self) {
        self.promote();
        let now = self.now;
        let expired: Vec<_> = self
            .ready
            .iter()
            .filter(|(_, m)| has_expired(m.expires_at, now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(m) = self.ready.remove(&k) {
                self.dead.push((m.id, Reason::Expired));
            }
        }
        let dead = &mut self.dead;
        self.delayed.retain(|m| {
            let gone = has_expired(m.expires_at, now);
            if gone {
                dead.push((m.id, Reason::Expired));
            }
            !gone
        });
        self.dispatch();
    }

    pub(super) fn restart(&mut self, clean: bool) {
        if clean {
            for (consumer, m) in std::mem::take(&mut self.outstanding) {
                self.settle(consumer);
                self.requeue(m, false);
            }
        } else {
            for (_, m) in std::mem::take(&mut self.outstanding) {
                self.ready.insert(key(&m), m);
            }
        }
        self.consumers.clear();
        self.cursor = 0;
        self.ready.retain(|_, m| m.persistent);
        self.delayed.retain(|m| m.persistent);
        if !clean {
            for m in self.ready.values_mut().chain(self.delayed.iter_mut()) {
                m.redelivered = true;
            }
        }
    }
}
