//! Erasure by header (the right to erasure): every message of a vhost
//! whose header equals a value leaves every queue and stream it is in —
//! ready, stored, or out with a consumer (then its record goes now and the
//! message is dropped if it comes back) — and every delayed-message
//! exchange holding it, durably once the store has synced, never
//! dead-lettered. Counted per queue, audited, announced on
//! the event exchange (`messages.erased`), and counted in
//! `warren_messages_erased_total`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::audit::Actor;
use super::{AccessError, Broker, VHost};
use crate::message::HeaderMatch;
use crate::store::{StoreError, StoreResult};

/// What an erasure removed.
#[derive(Debug, Serialize)]
pub struct Erasure {
    pub vhost: String,
    pub header: String,
    pub value: String,
    /// Messages erased in all.
    pub erased: u64,
    /// The queues and streams that held any, with how many.
    pub queues: Vec<ErasedIn>,
    /// Delayed-message exchanges that held any, with how many.
    pub exchanges: Vec<ErasedIn>,
}

#[derive(Debug, Serialize)]
pub struct ErasedIn {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub erased: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("header name must not be empty")]
    NoHeader,
    /// The store failed part way: what was erased before stays erased.
    #[error("erasure stopped at '{at}': {error}")]
    Store { at: String, error: StoreError },
}

impl Broker {
    /// Erase every message in `vhost` whose header `header` equals `value`
    /// (compared as text). Blocks on the store: call it off the runtime's
    /// workers. The caller waits for the store's next sync before it tells
    /// anyone the messages are gone.
    pub fn erase_by_header(
        &self,
        vhost: &str,
        header: &str,
        value: &str,
        actor: &Actor,
    ) -> Result<Erasure, ErasureError> {
        if header.is_empty() {
            return Err(ErasureError::NoHeader);
        }
        let v = self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        let matcher = Arc::new(HeaderMatch {
            name: header.to_string(),
            value: value.to_string(),
        });
        let mut report = Erasure {
            vhost: vhost.to_string(),
            header: header.to_string(),
            value: value.to_string(),
            erased: 0,
            queues: Vec::new(),
            exchanges: Vec::new(),
        };
        let failure = erase_everywhere(&v, &matcher, &mut report).err();
        self.metrics.erased(vhost, report.erased);
        // The trail is the operator's proof that the erasure was done, so
        // it names the header and value it was asked for.
        self.audit.record(
            "messages.erased",
            Some(actor),
            json!({
                "vhost": vhost,
                "header": header,
                "value": value,
                "erased": report.erased,
                "queues": report.queues,
                "exchanges": report.exchanges,
                "error": failure.as_ref().map(|e| e.to_string()),
            }),
        );
        self.events.emit_json("messages.erased", &actor.user, || {
            json!({
                "vhost": vhost,
                "header": header,
                "erased": report.erased,
            })
        });
        tracing::info!(
            vhost,
            header,
            erased = report.erased,
            user = %actor.user,
            "messages erased by header"
        );
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// Erase from every queue and stream of `v`, then from every
/// delayed-message exchange (a message held there would reach its queues
/// later), tallying into `report`; stops at the first store failure.
fn erase_everywhere(
    v: &VHost,
    matcher: &Arc<HeaderMatch>,
    report: &mut Erasure,
) -> Result<(), ErasureError> {
    for q in v.queues_sorted() {
        let kind = q.config.args.queue_type.as_str();
        report.tally(
            Holder::Queue,
            q.config.name.as_str(),
            kind,
            q.erase(matcher),
        )?;
    }
    for e in v.exchanges() {
        if let Some(buffer) = e.delayed.get() {
            let erased = buffer.erase(&|m| matcher.matches(&m.properties));
            report.tally(
                Holder::Exchange,
                e.name.as_str(),
                "x-delayed-message",
                erased,
            )?;
        }
    }
    Ok(())
}

/// Which list of the report a holder goes in.
enum Holder {
    Queue,
    Exchange,
}

impl Erasure {
    /// Count what one queue or exchange gave up.
    fn tally(
        &mut self,
        holder: Holder,
        name: &str,
        kind: &'static str,
        result: StoreResult<u64>,
    ) -> Result<(), ErasureError> {
        let erased = result.map_err(|error| ErasureError::Store {
            at: name.to_string(),
            error,
        })?;
        if erased > 0 {
            self.erased += erased;
            let place = ErasedIn {
                name: name.to_string(),
                kind,
                erased,
            };
            match holder {
                Holder::Queue => self.queues.push(place),
                Holder::Exchange => self.exchanges.push(place),
            }
        }
        Ok(())
    }
}
