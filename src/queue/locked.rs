//! The queue's lock as the shell takes it: [`Locked`] carries out, when
//! dropped, what the core decided while it was held — store records, the
//! timer, the memory budget, flow release — then dead-letters what died,
//! outside the lock.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::{Queue, Shell};
use crate::telemetry::spans;

/// The queue's lock. Dropping it carries out what the core asked for —
/// store records, the timer, the memory budget — then releases the lock and
/// dead-letters what died meanwhile, so no path can forget any of it.
pub(super) struct Locked<'a> {
    pub(super) queue: &'a Arc<Queue>,
    pub(super) guard: Option<MutexGuard<'a, Shell>>,
    /// Release the lock fairly (to the longest waiter).
    pub(super) fair: bool,
}

impl Deref for Locked<'_> {
    type Target = Shell;
    fn deref(&self) -> &Shell {
        self.guard.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Shell {
        self.guard.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Locked<'_> {
    /// Run `f` (a store read) with the queue unlocked, and on a runtime
    /// worker as blocking work, so neither this queue's other users nor the
    /// worker's other tasks wait for the disk. What the core decided so far
    /// goes to the store first, so nothing overtakes it.
    pub(super) fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        if let Some(mut st) = self.guard.take() {
            self.queue.apply_store_effects(&mut st.core);
            drop(st);
        }
        let r = blocking(f);
        self.guard = Some(self.queue.state.lock());
        r
    }

    /// Wait, unlocked, for the page another thread is reading.
    pub(super) fn wait_for_page(&mut self) {
        if let Some(st) = self.guard.as_mut() {
            self.queue.apply_store_effects(&mut st.core);
            self.queue.page_done.wait(st);
        }
    }
}

/// Run blocking work: off the runtime's worker when on one (the
/// multi-threaded runtime moves its other tasks elsewhere meanwhile).
pub(super) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut st) = self.guard.take() else {
            return;
        };
        let queue = self.queue;
        queue.apply_store_effects(&mut st.core);
        if let Some(at) = st.core.next_wake()
            && st.armed.is_none_or(|armed| at < armed)
        {
            st.armed = Some(at);
            queue.env.deadlines.arm(at, queue);
        }
        let used = st.core.memory_bytes();
        queue.env.budget.adjust(st.accounted, used);
        st.accounted = used;
        queue.release_flow(&st);
        let dead = std::mem::take(&mut st.core.effects.dead);
        let target = if dead.is_empty() {
            None
        } else {
            st.core.settings().dead_letter.clone()
        };
        if self.fair {
            MutexGuard::unlock_fair(st);
        } else {
            drop(st);
        }
        if crate::telemetry::enabled() {
            let exchange = target.as_ref().map(|t| t.exchange.as_str());
            for (message, reason) in &dead {
                let properties = &message.properties;
                spans::died(properties, queue.name(), reason.as_str(), exchange);
            }
        }
        if let Some(target) = target
            && let Some(owner) = queue.env.owner()
        {
            owner.dead_letter(queue, &target, dead);
        }
    }
}
