//! The store's background worker: removes what purges and deletions left
//! behind, clears the previous run's paged-out messages and sweeps keys of
//! queues that no longer exist — one job at a time, on one thread, however
//! many purges arrive.
//!
//! Stopping (at shutdown) waits for the job in hand and drops the rest:
//! nothing depends on them for correctness — a purged range is recorded
//! and resumed at the next boot, a deleted queue's keys are swept then.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::{StoreError, StoreResult};

type Job = Box<dyn FnOnce() -> StoreResult<()> + Send>;

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    running: bool,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<Jobs>,
    wake: Condvar,
}

pub(super) struct Cleanup {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cleanup")
    }
}

impl Cleanup {
    pub fn start() -> StoreResult<Cleanup> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("warren-cleanup".into())
            .spawn(move || run(&worker))
            .map_err(|e| StoreError::Io(format!("cannot start the cleanup thread: {e}")))?;
        Ok(Cleanup {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue a job.
    pub fn run(&self, job: impl FnOnce() -> StoreResult<()> + Send + 'static) {
        let mut jobs = self.shared.jobs.lock();
        if jobs.stopping {
            return;
        }
        jobs.queue.push_back(Box::new(job));
        drop(jobs);
        self.shared.wake.notify_one();
    }

    /// No job waiting or running.
    pub fn is_idle(&self) -> bool {
        let jobs = self.shared.jobs.lock();
        jobs.queue.is_empty() && !jobs.running
    }

    /// Finish the job in hand, drop the rest, and join the thread.
    pub fn stop(&self) {
        {
            let mut jobs = self.shared.jobs.lock();
            jobs.stopping = true;
            jobs.queue.clear();
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.jobs.lock();
            loop {
                if jobs.stopping {
                    return;
                }
                if let Some(job) = jobs.queue.pop_front() {
                    jobs.running = true;
                    break job;
                }
                shared.wake.wait(&mut jobs);
            }
        };
        if let Err(e) = job() {
            tracing::error!("background store cleanup failed: {e}");
        }
        shared.jobs.lock().running = false;
    }
}
