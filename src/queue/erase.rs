//! Erasure by header, as the shell carries it out: what the core holds in
//! memory first, then every record the store holds for the queue — ready
//! in its stored region, or delivered and not settled (its record goes
//! now, so a restart cannot bring it back).

use std::sync::Arc;

use super::Queue;
use super::locked::blocking;
use super::state::EraseAt;
use crate::message::HeaderMatch;
use crate::store::{Slot, StoreResult};

impl Queue {
    /// Erase every message of this queue that carries `header`; returns
    /// how many. Durable once the store next syncs.
    pub fn erase(self: &Arc<Self>, header: &Arc<HeaderMatch>) -> StoreResult<u64> {
        if let Some(stream) = &self.stream {
            return stream.erase(header);
        }
        let (mut erased, levels) = {
            let mut st = self.lock();
            (st.core.erase_in_memory(header), st.core.level_count())
        };
        let store = &self.env.store;
        let uid = self.config.uid;
        let stored = blocking(|| store.matching(uid, levels, &|m| header.matches(&m.properties)))?;
        let mut st = self.lock();
        let mut i = 0;
        while let Some(&(level, seq)) = stored.get(i) {
            match st.core.erase_at(level, seq) {
                EraseAt::Busy => {
                    st.wait_for_page();
                    continue;
                }
                EraseAt::Erased => erased += 1,
                EraseAt::Stored => {
                    erased += u64::from(self.take_from_store(&mut st, level, seq, false))
                }
                EraseAt::NotReady => {
                    let slot = Slot { uid, level, seq };
                    let taken = st.unlocked(|| store.take_stored(slot, false, false))?;
                    erased += u64::from(taken.is_some());
                }
            }
            i += 1;
        }
        Ok(erased)
    }
}
