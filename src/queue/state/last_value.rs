//! Last-value queues: with `x-last-value-key` (or Qpid's
//! `qpid.last_value_queue_key`) naming a header, a new message whose header
//! has a value some ready message already has replaces it — that one is
//! dropped (not dead-lettered) and the new one joins the tail — so the
//! queue holds only the newest message per value. Messages without the
//! header queue as usual; delivered (unacknowledged) ones are not replaced.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::super::ready::Found;
use super::QueueCore;
use crate::message::{self, Message};

/// The header a last-value queue is keyed by, and where its newest
/// message of each value sits.
#[derive(Debug)]
pub struct LastValues {
    header: String,
    /// Value → (level, seq) of the ready message that has it (possibly gone
    /// since: checked on use).
    newest: FxHashMap<Vec<u8>, (u8, u64)>,
}

impl LastValues {
    pub fn new(header: String) -> LastValues {
        LastValues {
            header,
            newest: FxHashMap::default(),
        }
    }

    /// The message's value of the key header, if it has one.
    fn value_of(&self, m: &Message) -> Option<Vec<u8>> {
        message::header_text(&m.properties, &self.header).map(String::into_bytes)
    }
}

impl<C> QueueCore<C> {
    /// A message just joined the ready list at (`level`, `seq`) — published,
    /// or read back from the store after a restart: in a last-value queue,
    /// of it and the ready message with its value, the older one goes.
    pub(super) fn replace_last_value(&mut self, m: &Arc<Message>, level: u8, seq: u64) {
        let Some(lv) = self.last_values.as_mut() else {
            return;
        };
        let Some(value) = lv.value_of(m) else {
            return;
        };
        let Some(&(other_level, other_seq)) = lv.newest.get(&value) else {
            lv.newest.insert(value, (level, seq));
            return;
        };
        // Sequence numbers count up: the higher is the newer.
        let (old_level, old_seq) = if other_seq < seq {
            lv.newest.insert(value, (level, seq));
            (other_level, other_seq)
        } else {
            (level, seq)
        };
        if let Found::Memory(old) = self.ready.remove(old_level, old_seq) {
            self.expiry.remove(old.expires_at, old_level, old_seq);
            self.forget(&old);
        }
    }

    /// Whether this is a last-value queue (it never pages: it holds one
    /// message per value).
    pub fn is_last_value(&self) -> bool {
        self.last_values.is_some()
    }
}
