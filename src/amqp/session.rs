//! What every channel of a connection shares once the connection is open:
//! who the client is, which vhost it uses, and where replies go.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::protocol::AMQPClass;
use tokio::sync::oneshot;

use super::codec;
use super::outbox::Outbox;
use crate::broker::audit::Actor;
use crate::broker::auth::Access;
use crate::broker::vhost::Durability;
use crate::broker::{Broker, VHost};
use crate::error::AmqpResult;
use crate::queue::{ConnectionId, Queue};
use crate::store::{Store, StoreResult};

/// A reply held back until the store has flushed what it reports on.
#[derive(Debug)]
pub struct Deferred {
    pub channel: u16,
    pub reply: AMQPClass,
    /// Methods that must follow the reply on the same channel.
    pub then: Vec<AMQPClass>,
    pub flushed: oneshot::Receiver<StoreResult<()>>,
}

#[derive(Debug)]
pub struct Session {
    pub broker: Arc<Broker>,
    pub vhost: Arc<VHost>,
    pub user: String,
    pub peer: SocketAddr,
    pub connection_id: ConnectionId,
    pub outbox: Arc<Outbox>,
    pub frame_max: u32,
    /// The client advertised `consumer_cancel_notify`.
    pub cancel_notify: bool,
    /// A reply waiting for a flush; the connection stops processing frames
    /// until it is sent, so replies keep their order.
    pub deferred: RefCell<Option<Deferred>>,
    /// Queues this connection published to that are holding their
    /// publishers back (flow control): the connection stops reading until
    /// they release it.
    pub in_flow: RefCell<Vec<Arc<Queue>>>,
    /// This connection handed persistent messages to the store since the
    /// last check: it is held back too while the store is backlogged.
    pub stored: std::cell::Cell<bool>,
    /// The time messages of the current read batch arrived (ms since the
    /// epoch), read once per batch when the first message needs it; 0:
    /// not read yet.
    pub received_ms: std::cell::Cell<u64>,
}

impl Session {
    /// When the messages of this read batch arrived.
    pub fn received_ms(&self) -> u64 {
        match self.received_ms.get() {
            0 => {
                let now = crate::queue::now_ms();
                self.received_ms.set(now);
                now
            }
            then => then,
        }
    }

    /// Check the user's permission on a resource of this vhost.
    pub fn check(&self, access: Access, kind: &str, name: &str) -> AmqpResult<()> {
        self.broker
            .users
            .check(&self.user, &self.vhost.name, access, kind, name)
    }

    /// A passive declare: any of the three rights on the resource will do.
    pub fn check_any(&self, kind: &str, name: &str) -> AmqpResult<()> {
        self.broker
            .users
            .check_any(&self.user, &self.vhost.name, kind, name)
    }

    /// A topic permission check, on a topic exchange only.
    pub fn check_topic(
        &self,
        exchange: &crate::exchange::Exchange,
        access: Access,
        key: &str,
    ) -> AmqpResult<()> {
        if exchange.kind != crate::exchange::ExchangeKind::Topic {
            return Ok(());
        }
        self.broker.users.check_topic(
            &self.user,
            &self.vhost.name,
            exchange.name.as_str(),
            access,
            key,
        )
    }

    /// Record a change to definitions in the audit trail (the fields are
    /// built only when the trail is on).
    pub fn audit(&self, event: &str, fields: impl FnOnce() -> serde_json::Value) {
        if self.broker.audit.is_enabled() {
            let actor = Actor::amqp(&self.user, self.peer);
            let mut f = fields();
            if let serde_json::Value::Object(m) = &mut f {
                m.insert("vhost".into(), self.vhost.name.clone().into());
            }
            self.broker.audit.record(event, Some(&actor), f);
        }
    }

    /// Queue a method frame for the client.
    pub fn reply(&self, channel: u16, method: AMQPClass) {
        self.outbox
            .append(|buf| codec::encode_method(buf, channel, &method));
    }

    /// Reply now, or, if durable state changed, once it is flushed.
    pub fn reply_when_durable(&self, channel: u16, method: AMQPClass, durability: Durability) {
        self.reply_when_durable_then(channel, method, durability, Vec::new());
    }

    /// As [`Session::reply_when_durable`], with `then` sent right after the
    /// reply.
    pub fn reply_when_durable_then(
        &self,
        channel: u16,
        method: AMQPClass,
        durability: Durability,
        then: Vec<AMQPClass>,
    ) {
        match durability {
            Durability::Transient => {
                self.reply(channel, method);
                for m in then {
                    self.reply(channel, m);
                }
            }
            Durability::Durable => {
                *self.deferred.borrow_mut() = Some(Deferred {
                    channel,
                    reply: method,
                    then,
                    flushed: self.store().synced(),
                })
            }
        }
    }

    pub fn store(&self) -> &Store {
        &self.broker.store
    }
}
