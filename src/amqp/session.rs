//! What every channel of a connection shares once the connection is open:
//! who the client is, which vhost it uses, and where replies go.

use std::sync::Arc;

use amq_protocol::protocol::AMQPClass;

use super::codec;
use super::outbox::Outbox;
use crate::broker::auth::Access;
use crate::broker::{Broker, VHost};
use crate::error::AmqpResult;
use crate::queue::ConnectionId;

#[derive(Debug)]
pub struct Session {
    pub broker: Arc<Broker>,
    pub vhost: Arc<VHost>,
    pub user: String,
    pub connection_id: ConnectionId,
    pub outbox: Arc<Outbox>,
    pub frame_max: u32,
    /// The client advertised `consumer_cancel_notify`.
    pub cancel_notify: bool,
}

impl Session {
    /// Check the user's permission on a resource of this vhost.
    pub fn check(&self, access: Access, kind: &str, name: &str) -> AmqpResult<()> {
        self.broker
            .users
            .check(&self.user, &self.vhost.name, access, kind, name)
    }

    /// Queue a method frame for the client.
    pub fn reply(&self, channel: u16, method: AMQPClass) {
        self.outbox
            .append(|buf| codec::encode_method(buf, channel, &method));
    }
}
