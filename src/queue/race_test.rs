//! Races between a queue reading a page of its stored messages, which it
//! does with the queue unlocked, and what arrives meanwhile; made
//! deterministic with a store backend that stops inside the read.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::model_test::message;
use super::model_test::real::{TestOwner, durable_config, id_of, queue_env, store_over};
use super::{Queue, QueueEnv};
use crate::store::gated_backend::GatedBackend;
use crate::store::{Backend, MemoryBackend, Store};

fn env(store: &Arc<Store>, owner: &Arc<TestOwner>, window: usize) -> Arc<QueueEnv> {
    let clock = Arc::new(AtomicU64::new(super::model_test::START));
    queue_env(store.clone(), &clock, owner, window)
}

fn durable_queue(store: &Arc<Store>, owner: &Arc<TestOwner>, window: usize) -> Arc<Queue> {
    let config = durable_config(store, Default::default());
    Queue::new(config, env(store, owner, window), Default::default())
}

fn get_all(queue: &Arc<Queue>) -> Vec<u64> {
    let mut ids = Vec::new();
    while queue.get(true, |m, _| ids.push(id_of(&m.message))) {}
    ids
}

/// A message published while the last page of a queue's stored messages is
/// being read is past what the read can see. The short page must not be
/// taken for the end of the stored region then: the new message would be
/// left in the store, never delivered until a restart (seen as a confirmed
/// message missing after a shovel's source restarted under load).
#[test]
fn a_message_published_during_a_short_page_read_is_delivered() {
    let backend = Arc::new(GatedBackend::default());
    let store = store_over(&(backend.clone() as Arc<dyn Backend>));
    let owner = Arc::new(TestOwner::default());
    // 40 in memory, 5 more only in the store; pages of 10.
    let queue = durable_queue(&store, &owner, 40);
    for id in 1..=45 {
        queue.publish(message(id, 0, None, true));
    }
    store.flush_now().unwrap();
    let (entered, release) = backend.arm_scan();
    let reader = {
        let queue = queue.clone();
        std::thread::spawn(move || get_all(&queue))
    };
    // The reader is inside the read of the last 5; a publish arrives.
    entered.recv().unwrap();
    queue.publish(message(46, 0, None, true));
    release.send(()).unwrap();
    let mut ids = reader.join().unwrap();
    ids.extend(get_all(&queue));
    assert_eq!(ids, (1..=46).collect::<Vec<_>>());
}

/// After a crash a durable queue's size is estimated, then counted in the
/// background. A message kept in the store after the count has looked but
/// before it is set must still be counted: a region counted short ends a
/// page early, and its last messages stay in the store unread.
#[test]
fn a_message_published_while_a_recovered_queue_is_counted_is_delivered() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let owner = Arc::new(TestOwner::default());
    let config = {
        let store = store_over(&backend);
        let queue = durable_queue(&store, &owner, 40);
        for id in 1..=60 {
            queue.publish(message(id, 0, None, true));
        }
        store.flush_now().unwrap();
        queue.config.clone()
    };
    // The broker was killed: a new store over what was written.
    let store = store_over(&backend);
    let queue = Queue::recover(
        config.clone(),
        env(&store, &owner, 40),
        Default::default(),
        None,
    );
    let [at] = queue.stored_from()[..] else {
        panic!("one level stored: {:?}", queue.stored_from());
    };
    let counted = store.count_entries(config.uid, at.level, at.from).unwrap();
    queue.publish(message(61, 0, None, true));
    queue.set_recovered_count(at, counted);
    assert_eq!(get_all(&queue), (1..=61).collect::<Vec<_>>());
}
