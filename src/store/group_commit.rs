//! Group commit: one thread turns many writers' "make this durable" requests
//! into one flush.
//!
//! Writers apply their changes to the backend themselves, then register a
//! waiter. The thread takes every waiter registered so far, flushes once, and
//! completes them all with the flush's result. While a flush runs, new
//! waiters gather for the next one, so under load each flush covers many
//! publishes; an idle broker flushes at once. `max_delay` lets a flush wait a
//! little for company, up to `max_batch` waiters.
//!
//! Before each flush the thread writes what queues left unwritten (see
//! `unwritten`): every entry it writes was accepted before its waiter was
//! registered, so the flush covers it. Writes nobody waits for (acks,
//! delivery marks, paged-out messages) are flushed at least every
//! `interval`, which bounds what a crash can lose of them; when too much is
//! waiting in memory a writer asks for a cycle at once ([`GroupCommit::wake`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::epoch::Epochs;
use super::unwritten::Unwritten;
use super::{Backend, FailureHook, StoreError, StoreResult};

/// Whether the store can write, as the last attempt found.
#[derive(Debug, Default)]
pub(super) struct Health {
    failed: AtomicBool,
    /// Run on each change from writing to failing (the broker raises its
    /// disk alarm; [`Health::has_failed`] clears it).
    hook: OnceLock<FailureHook>,
}

impl Health {
    pub fn set_hook(&self, hook: FailureHook) {
        let _ = self.hook.set(hook);
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// A write or flush failed.
    pub fn fail(&self, e: &StoreError) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "the store cannot write: {e}; what is not written yet is kept in memory and \
                 retried, publishes waiting for it are nacked"
            );
            if let Some(hook) = self.hook.get() {
                (hook.0)();
            }
        }
    }

    /// A group commit wrote and flushed everything it had.
    fn wrote(&self) {
        if self.failed.swap(false, Ordering::AcqRel) {
            tracing::info!("the store writes again");
        }
    }
}

/// Called once the writes made before it was registered are durable (or
/// failed to become so).
pub type Waiter = Box<dyn FnOnce(StoreResult<()>) + Send>;

#[derive(Debug)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

#[derive(Default)]
struct State {
    waiters: Vec<Waiter>,
    /// Something was written since the last flush.
    dirty: bool,
    /// A writer asked for a cycle now.
    woken: bool,
    stopping: bool,
}

impl GroupCommit {
    pub fn start(
        backend: Arc<dyn Backend>,
        unwritten: Arc<Unwritten>,
        epochs: Option<Arc<Epochs>>,
        health: Arc<Health>,
        max_batch: usize,
        max_delay: Duration,
        interval: Duration,
    ) -> StoreResult<GroupCommit> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("warren-group-commit".into())
            .spawn(move || {
                run(
                    worker,
                    backend,
                    unwritten,
                    epochs,
                    health,
                    max_batch.max(1),
                    max_delay,
                    interval,
                )
            })
            .map_err(|e| StoreError::Io(format!("cannot start the group-commit thread: {e}")))?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Note an unflushed write, to be flushed within the interval.
    pub fn touch(&self) {
        let mut st = self.shared.state.lock();
        st.dirty = true;
    }

    /// Run a cycle now, waiter or not.
    pub fn wake(&self) {
        let mut st = self.shared.state.lock();
        st.dirty = true;
        st.woken = true;
        drop(st);
        self.shared.wake.notify_one();
    }

    pub fn after_flush(&self, waiter: Waiter) {
        let mut st = self.shared.state.lock();
        st.waiters.push(waiter);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Complete pending waiters, then stop the thread.
    pub fn stop(&self) {
        self.shared.state.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for GroupCommit {
    /// The thread holds the backend (and with it the database's lock): it
    /// must not outlive the store.
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    shared: Arc<Shared>,
    backend: Arc<dyn Backend>,
    unwritten: Arc<Unwritten>,
    epochs: Option<Arc<Epochs>>,
    health: Arc<Health>,
    max_batch: usize,
    max_delay: Duration,
    interval: Duration,
) {
    loop {
        let batch = {
            let mut st = shared.state.lock();
            let mut periodic = Instant::now() + interval;
            while st.waiters.is_empty() && !st.stopping && !st.woken {
                if shared.wake.wait_until(&mut st, periodic).timed_out() {
                    if st.dirty {
                        break;
                    }
                    periodic = Instant::now() + interval;
                }
            }
            if st.waiters.is_empty() && st.stopping {
                return;
            }
            let woken = std::mem::take(&mut st.woken);
            if !max_delay.is_zero() && !st.stopping && !woken {
                let deadline = Instant::now() + max_delay;
                while st.waiters.len() < max_batch && !st.stopping {
                    if shared.wake.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
            }
            st.dirty = false;
            std::mem::take(&mut st.waiters)
        };
        // What queues left unwritten goes first: every waiter taken above
        // was registered after its entries were accepted, so this flush
        // covers them.
        // Each flush carries the next epoch, recorded outside sled once
        // the flush has made it durable (`epoch.rs`).
        let result = unwritten.write(backend.as_ref(), false).and_then(|()| {
            let epoch = epochs.as_ref().map(|e| e.advance(backend.as_ref()));
            let epoch = epoch.transpose()?;
            backend.flush()?;
            Ok(epoch)
        });
        let result = match result {
            Ok(epoch) => {
                if let (Some(epochs), Some(epoch)) = (&epochs, epoch) {
                    epochs.durable(epoch, false);
                }
                health.wrote();
                Ok(())
            }
            Err(e) => {
                // What failed stays unwritten: the next cycle, at the
                // latest one interval away, tries again — publishers are
                // blocked meanwhile, so nobody else would ask.
                health.fail(&e);
                shared.state.lock().dirty = true;
                Err(e)
            }
        };
        for waiter in batch {
            waiter(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory_backend::MemoryBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_waiter_is_completed_and_stop_drains() {
        let gc = GroupCommit::start(
            Arc::new(MemoryBackend::default()),
            Arc::new(Unwritten::new(b't', 0)),
            None,
            Arc::default(),
            8,
            Duration::from_millis(1),
            Duration::from_millis(50),
        )
        .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let d = done.clone();
            gc.after_flush(Box::new(move |r| {
                assert!(r.is_ok());
                d.fetch_add(1, Ordering::SeqCst);
            }));
        }
        gc.stop();
        assert_eq!(done.load(Ordering::SeqCst), 100);
    }
}
