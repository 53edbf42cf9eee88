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
use super::log::Logs;
use super::unwritten::Unwritten;
use super::{Backend, FailureHook, StoreError, StoreOptions, StoreResult};

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
    /// How long a write and flush may take before the store is taken as
    /// failed and the cycle's waiters are nacked.
    stall: Duration,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The cycle writing now: when it started, and its waiters until it
    /// completes them (or [`GroupCommit::check_stall`] gives up on it).
    in_flight: Mutex<Option<(Instant, Vec<Waiter>)>>,
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

/// What the thread works with.
struct Worker {
    shared: Arc<Shared>,
    backend: Arc<dyn Backend>,
    unwritten: Arc<Unwritten>,
    logs: Arc<Logs>,
    epochs: Option<Arc<Epochs>>,
    health: Arc<Health>,
    max_batch: usize,
    max_delay: Duration,
    interval: Duration,
}

impl GroupCommit {
    pub fn start(
        backend: Arc<dyn Backend>,
        unwritten: Arc<Unwritten>,
        logs: Arc<Logs>,
        epochs: Option<Arc<Epochs>>,
        health: Arc<Health>,
        options: &StoreOptions,
    ) -> StoreResult<GroupCommit> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            in_flight: Mutex::new(None),
        });
        let worker = Worker {
            shared: shared.clone(),
            backend,
            unwritten,
            logs,
            epochs,
            health,
            max_batch: options.group_commit_max_batch.max(1),
            max_delay: options.group_commit_max_delay,
            interval: options.flush_interval,
        };
        let thread = std::thread::Builder::new()
            .name("warren-group-commit".into())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Io(format!("cannot start the group-commit thread: {e}")))?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
            stall: options.write_stall,
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

    /// A write or flush that has not returned within the stall limit
    /// (sled can wait forever for a write that failed): its waiters are
    /// nacked now, and the store counts as failed until a cycle completes.
    /// True if it was stalled.
    pub fn check_stall(&self, health: &Health) -> bool {
        let waiters = {
            let mut in_flight = self.shared.in_flight.lock();
            match &mut *in_flight {
                Some((started, waiters)) if started.elapsed() > self.stall => {
                    std::mem::take(waiters)
                }
                _ => return false,
            }
        };
        let e = StoreError::Io(format!(
            "a write to the disk has not finished in {} ms",
            self.stall.as_millis()
        ));
        health.fail(&e);
        for waiter in waiters {
            waiter(Err(e.clone()));
        }
        true
    }

    /// Complete pending waiters, then stop the thread. False if the thread
    /// is stuck in a write past the stall limit: it is left behind (it
    /// cannot be interrupted), and the store must not be written again.
    pub fn stop(&self) -> bool {
        self.shared.state.lock().stopping = true;
        self.shared.wake.notify_one();
        let Some(t) = self.thread.lock().take() else {
            return true;
        };
        loop {
            if t.is_finished() {
                let _ = t.join();
                return true;
            }
            let stuck = self
                .shared
                .in_flight
                .lock()
                .as_ref()
                .is_some_and(|(started, _)| started.elapsed() > self.stall);
            if stuck {
                tracing::error!(
                    "the group-commit thread is stuck in a write to the disk; stopping without it"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
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

impl Worker {
    fn run(self) {
        let shared = &self.shared;
        loop {
            let batch = {
                let mut st = shared.state.lock();
                let mut periodic = Instant::now() + self.interval;
                while st.waiters.is_empty() && !st.stopping && !st.woken {
                    if shared.wake.wait_until(&mut st, periodic).timed_out() {
                        if st.dirty {
                            break;
                        }
                        periodic = Instant::now() + self.interval;
                    }
                }
                if st.waiters.is_empty() && st.stopping {
                    return;
                }
                let woken = std::mem::take(&mut st.woken);
                if !self.max_delay.is_zero() && !st.stopping && !woken {
                    let deadline = Instant::now() + self.max_delay;
                    while st.waiters.len() < self.max_batch && !st.stopping {
                        if shared.wake.wait_until(&mut st, deadline).timed_out() {
                            break;
                        }
                    }
                }
                st.dirty = false;
                std::mem::take(&mut st.waiters)
            };
            *shared.in_flight.lock() = Some((Instant::now(), batch));
            let result = self.cycle();
            // Taken by `check_stall` if the cycle stalled: those waiters
            // were nacked already.
            let batch = shared.in_flight.lock().take().map(|(_, b)| b);
            match &result {
                Ok(()) => self.health.wrote(),
                Err(e) => {
                    // What failed stays unwritten: the next cycle, at the
                    // latest one interval away, tries again — publishers
                    // are blocked meanwhile, so nobody else would ask.
                    self.health.fail(e);
                    shared.state.lock().dirty = true;
                }
            }
            for waiter in batch.into_iter().flatten() {
                waiter(result.clone());
            }
        }
    }

    /// Write what is due and flush. What queues left unwritten goes first:
    /// every waiter of the cycle was registered after its entries were
    /// accepted, so the flush covers them. Stream logs sync their own
    /// files; sled keeps their tracked offsets, flushed with the rest.
    /// Each flush carries the next epoch, recorded outside sled once the
    /// flush has made it durable (`epoch.rs`).
    fn cycle(&self) -> StoreResult<()> {
        let backend = self.backend.as_ref();
        self.logs.sync(backend)?;
        self.unwritten.write(backend, false)?;
        let epoch = self.epochs.as_ref().map(|e| e.advance(backend));
        let epoch = epoch.transpose()?;
        backend.flush()?;
        if let (Some(epochs), Some(epoch)) = (&self.epochs, epoch) {
            epochs.durable(epoch, false);
        }
        Ok(())
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
            Arc::new(Logs::new(Logs::temporary_dir(), true, 0)),
            None,
            Arc::default(),
            &StoreOptions {
                group_commit_max_batch: 8,
                group_commit_max_delay: Duration::from_millis(1),
                cache_bytes: 0,
                flush_interval: Duration::from_millis(50),
                flow_unwritten_bytes: 0,
                write_stall: Duration::from_secs(10),
            },
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
