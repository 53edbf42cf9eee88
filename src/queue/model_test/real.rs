//! The real queue under test — core and shell over an in-memory store,
//! with a manual clock — and the channel and owner it talks to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amq_protocol::types::{AMQPValue, FieldTable};

use super::START;
use crate::message::Message;
use crate::queue::args::{DeadLetterTarget, DeclareFlags, Overflow, QueueArgs};
use crate::queue::{
    Clock, Consumer, ConsumerId, DeliveryTarget, Queue, QueueConfig, QueueEnv, QueueLimits,
    QueueOwner, QueuedMessage, Reason, Return,
};
use crate::store::{Backend, MemoryBackend, Store, StoreOptions};

pub(super) type Log = Arc<Mutex<Vec<(ConsumerId, QueuedMessage)>>>;

#[derive(Debug)]
pub(super) struct TestChannel {
    pub(super) log: Log,
    pub(super) blocked: AtomicBool,
}

impl DeliveryTarget for TestChannel {
    fn ready(&self, _: &Arc<Queue>, _: &Consumer) -> bool {
        !self.blocked.load(Ordering::Relaxed)
    }
    fn deliver(&self, _: &Arc<Queue>, c: &Consumer, m: QueuedMessage) {
        self.log.lock().unwrap().push((c.id, m));
    }
    fn cancelled(&self, _: &Arc<Queue>, _: &Consumer) {}
    fn owner(&self) -> (crate::queue::ConnectionId, u16) {
        (0, 1)
    }
}

#[derive(Debug, Default)]
pub(in crate::queue) struct TestOwner {
    pub(super) dead: Mutex<Vec<(u64, Reason)>>,
}

impl QueueOwner for TestOwner {
    fn dead_letter(&self, _: &Queue, _: &DeadLetterTarget, dead: Vec<(Arc<Message>, Reason)>) {
        let mut seen = self.dead.lock().unwrap();
        seen.extend(dead.iter().map(|(m, reason)| (id_of(m), *reason)));
    }
    fn expire(&self, _: &Arc<Queue>) {}
    fn admit_schema(&self, _: &Queue, _: &crate::schema::Rule, _: &Arc<Message>) -> bool {
        true
    }
}

pub(in crate::queue) fn id_of(m: &Message) -> u64 {
    u64::from_be_bytes(m.body[..8].try_into().unwrap())
}

#[derive(Clone, Debug)]
pub(super) struct Setup {
    pub(super) max_priority: Option<u8>,
    pub(super) queue_ttl: Option<u64>,
    pub(super) max_length: Option<(u64, Overflow)>,
    pub(super) delivery_limit: Option<u32>,
    pub(super) retry_ms: Option<u64>,
    pub(super) window: usize,
}

impl Setup {
    pub(super) fn arguments(&self) -> FieldTable {
        let mut t = FieldTable::default();
        let int = |n: u64| AMQPValue::LongLongInt(n as i64);
        let text = |s: &str| AMQPValue::LongString(s.into());
        t.insert("x-dead-letter-exchange".into(), text("dlx"));
        if let Some(p) = self.max_priority {
            t.insert("x-max-priority".into(), int(p.into()));
        }
        if let Some(ttl) = self.queue_ttl {
            t.insert("x-message-ttl".into(), int(ttl));
        }
        if let Some((max, overflow)) = self.max_length {
            t.insert("x-max-length".into(), int(max));
            let name = match overflow {
                Overflow::DropHead => "drop-head",
                Overflow::RejectPublish => "reject-publish",
                Overflow::RejectPublishDlx => "reject-publish-dlx",
            };
            t.insert("x-overflow".into(), text(name));
        }
        if let Some(limit) = self.delivery_limit {
            t.insert("x-delivery-limit".into(), int(limit.into()));
        }
        if let Some(ms) = self.retry_ms {
            t.insert("x-delayed-retry-type".into(), text("failed"));
            t.insert("x-delayed-retry-min".into(), int(ms));
            t.insert("x-delayed-retry-max".into(), int(ms));
        }
        t
    }
}

pub(super) struct Real {
    pub(super) setup: Setup,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) clock: Arc<AtomicU64>,
    pub(super) owner: Arc<TestOwner>,
    pub(super) log: Log,
    pub(super) config: QueueConfig,
    pub(super) queue: Arc<Queue>,
    pub(super) consumers: Vec<(ConsumerId, bool, Arc<TestChannel>)>,
    /// Deliveries awaiting a settle, in delivery-tag order.
    pub(super) outstanding: Vec<(Option<ConsumerId>, QueuedMessage)>,
    pub(super) next_consumer: u64,
}

pub(in crate::queue) fn store_over(backend: &Arc<dyn Backend>) -> Arc<Store> {
    // No periodic flush: nothing happens behind the test's back.
    let options = StoreOptions {
        group_commit_max_batch: 64,
        group_commit_max_delay: std::time::Duration::ZERO,
        cache_bytes: 0,
        flush_interval: std::time::Duration::from_secs(3600),
        flow_unwritten_bytes: 64 << 20,
        write_stall: std::time::Duration::from_secs(10),
    };
    Arc::new(Store::over_with(backend.clone(), &options).unwrap())
}

/// The configuration of a durable queue "q" with `arguments` (its uid
/// from `store`).
pub(in crate::queue) fn durable_config(store: &Store, arguments: FieldTable) -> QueueConfig {
    let flags = DeclareFlags {
        durable: true,
        exclusive: false,
        auto_delete: false,
    };
    QueueConfig {
        name: "q".into(),
        vhost: "/".into(),
        durable: true,
        auto_delete: false,
        exclusive_owner: None,
        args: QueueArgs::parse("q", "/", flags, &arguments).unwrap(),
        arguments,
        uid: store.new_queue_uid(),
    }
}

/// A queue's surroundings over `store`, on a manual `clock`, keeping
/// `window` ready messages in memory (and reading the rest back a quarter
/// of that at a time).
pub(in crate::queue) fn queue_env(
    store: Arc<Store>,
    clock: &Arc<AtomicU64>,
    owner: &Arc<TestOwner>,
    window: usize,
) -> Arc<QueueEnv> {
    let limits = QueueLimits {
        window,
        ..QueueLimits::unbounded()
    };
    let env = QueueEnv::with_clock(store, limits, Clock::Manual(clock.clone()));
    let owner: Arc<dyn QueueOwner> = owner.clone();
    env.set_owner(Arc::downgrade(&owner));
    env
}

impl Real {
    pub(super) fn new(setup: Setup) -> Real {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let clock = Arc::new(AtomicU64::new(START));
        let owner = Arc::new(TestOwner::default());
        let store = store_over(&backend);
        let config = durable_config(&store, setup.arguments());
        let env = Real::env(&setup, store, &clock, &owner);
        let queue = Queue::new(config.clone(), env, Default::default());
        Real {
            setup,
            backend,
            clock,
            owner,
            log: Log::default(),
            config,
            queue,
            consumers: Vec::new(),
            outstanding: Vec::new(),
            next_consumer: 1,
        }
    }

    pub(super) fn env(
        setup: &Setup,
        store: Arc<Store>,
        clock: &Arc<AtomicU64>,
        owner: &Arc<TestOwner>,
    ) -> Arc<QueueEnv> {
        queue_env(store, clock, owner, setup.window)
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// What the broker's timer would do at this moment.
    pub(super) fn fire_timer(&self) {
        loop {
            let due = self.queue.env.deadlines.due(self.now());
            if due.is_empty() {
                return;
            }
            for q in due {
                q.on_deadline(self.now());
            }
        }
    }

    /// Deliveries made since the last call, recorded as outstanding.
    pub(super) fn take_deliveries(&mut self) -> Vec<(ConsumerId, u64, bool)> {
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        log.into_iter()
            .map(|(id, m)| {
                let seen = (id, id_of(&m.message), m.redelivered);
                let no_ack = self
                    .consumers
                    .iter()
                    .any(|(c, no_ack, _)| *c == id && *no_ack);
                if !no_ack {
                    self.outstanding.push((Some(id), m));
                }
                seen
            })
            .collect()
    }

    pub(super) fn restart(&mut self, clean: bool) {
        // A purge's stored ranges are removed in the background; a crash
        // test of that lives with the store.
        while !self.queue.env.store.cleanup_idle() {
            std::thread::yield_now();
        }
        let store = self.queue.env.store.clone();
        if clean {
            // Connections close first: their unacknowledged messages come
            // back one by one, then their consumers go.
            for (_, _, ch) in &self.consumers {
                ch.blocked.store(true, Ordering::Relaxed);
            }
            for (consumer, m) in std::mem::take(&mut self.outstanding) {
                self.queue.requeue(consumer, vec![m], Return::Returned);
            }
            for (id, _, _) in std::mem::take(&mut self.consumers) {
                self.queue.cancel(id);
            }
            let mut counts: Vec<(u64, u8, u64)> = self
                .queue
                .durable_ready()
                .into_iter()
                .map(|(l, n)| (self.config.uid, l, n))
                .collect();
            if counts.is_empty() {
                counts.push((self.config.uid, 0, 0));
            }
            store.save_counts(&counts).unwrap();
            store.close().unwrap();
        } else {
            // Everything published counts as confirmed: it is on disk.
            store.flush_now().unwrap();
            self.outstanding.clear();
            self.consumers.clear();
        }
        self.log.lock().unwrap().clear();
        drop(store);
        let old = std::mem::replace(
            &mut self.queue,
            Queue::new(
                self.config.clone(),
                QueueEnv::for_tests(),
                Default::default(),
            ),
        );
        drop(old);
        let store = store_over(&self.backend);
        let counts = store.take_counts().unwrap();
        store.sweep(std::collections::HashSet::from([self.config.uid]));
        let env = Real::env(&self.setup, store.clone(), &self.clock, &self.owner);
        let counts = counts.get(&self.config.uid).map(Vec::as_slice);
        self.queue = Queue::recover(self.config.clone(), env, Default::default(), counts);
        while !store.cleanup_idle() {
            std::thread::yield_now();
        }
        if counts.is_none() {
            for at in self.queue.stored_from() {
                let n = store
                    .count_entries(self.config.uid, at.level, at.from)
                    .unwrap();
                self.queue.set_recovered_count(at, n);
            }
        }
    }
}
