//! Events about clients: connections, channels, consumers and logins.
//!
//! RabbitMQ names connections and channels by Erlang process id; Warren has
//! none, so it makes one of the same shape from the node name and the
//! connection's id (and the channel's number): `<warren@host.17.0>` for
//! connection 17, `<warren@host.17.3>` for its channel 3. The same
//! connection or channel always gets the same one, so a `*.created` event
//! can be matched with its `*.closed`.

use std::net::SocketAddr;

use amq_protocol::types::AMQPValue;

use super::{Events, flag, number, table, text};
use crate::broker::connections::{ClientConnection, ConnectionDetails};
use crate::queue::{ConnectionId, Consumer, Queue};

/// The process id a connection's events carry.
pub fn connection_pid(node: &str, connection: ConnectionId) -> String {
    format!("<{node}.{connection}.0>")
}

/// The process id a channel's events carry.
pub fn channel_pid(node: &str, connection: ConnectionId, channel: u16) -> String {
    format!("<{node}.{connection}.{channel}>")
}

/// How a channel is named in RabbitMQ: its connection's name and number.
fn channel_name(connection: &str, channel: u16) -> String {
    format!("{connection} ({channel})")
}

fn host(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

/// RabbitMQ prints its protocol version as an Erlang tuple.
const PROTOCOL: &str = "{0,9,1}";

/// The name a client gave its connection (`connection_name`), if any.
fn user_provided_name(c: &ClientConnection) -> Option<AMQPValue> {
    match c.details.client_properties.inner().get("connection_name")? {
        AMQPValue::LongString(s) => Some(text(s.to_string())),
        AMQPValue::ShortString(s) => Some(text(s.as_str())),
        _ => None,
    }
}

/// Who tried to log in, how and from where.
pub struct Login<'a> {
    pub user: &'a str,
    pub mechanism: &'a str,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

impl Events {
    pub fn connection_created(&self, node: &str, c: &ClientConnection) {
        self.emit("connection.created", || {
            let d = &c.details;
            let connected_at = c
                .connected_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64);
            let (ssl_protocol, ssl_cipher) = d.tls.clone().unwrap_or_default();
            let mut props = vec![
                ("pid", text(connection_pid(node, c.id))),
                ("name", text(d.name.as_str())),
                ("type", text("network")),
                ("port", number(u64::from(d.local.port()))),
                ("peer_port", number(u64::from(c.peer.port()))),
                ("host", text(host(d.local))),
                ("peer_host", text(host(c.peer))),
                ("ssl", flag(c.tls)),
                ("peer_cert_subject", text("")),
                ("peer_cert_issuer", text("")),
                ("peer_cert_validity", text("")),
                ("auth_mechanism", text(d.auth_mechanism.as_str())),
                ("ssl_protocol", text(ssl_protocol)),
                ("ssl_key_exchange", text("")),
                ("ssl_cipher", text(ssl_cipher)),
                ("ssl_hash", text("")),
                ("protocol", text(PROTOCOL)),
                ("user", text(c.user.as_str())),
                ("vhost", text(c.vhost.as_str())),
                ("timeout", number(u64::from(d.heartbeat))),
                ("frame_max", number(u64::from(d.frame_max))),
                ("channel_max", number(u64::from(d.channel_max))),
                ("client_properties", table(&d.client_properties)),
                ("connected_at", number(connected_at)),
                ("node", text(node)),
                ("user_who_performed_action", text(c.user.as_str())),
            ];
            if let Some(name) = user_provided_name(c) {
                props.push(("user_provided_name", name));
            }
            props
        });
    }

    pub fn connection_closed(&self, node: &str, c: &ClientConnection) {
        self.emit("connection.closed", || {
            let mut props = vec![
                ("pid", text(connection_pid(node, c.id))),
                ("name", text(c.details.name.as_str())),
                ("node", text(node)),
                ("client_properties", table(&c.details.client_properties)),
            ];
            if let Some(name) = user_provided_name(c) {
                props.push(("user_provided_name", name));
            }
            props
        });
    }

    pub fn channel_created(&self, node: &str, c: &ClientConnection, channel: u16) {
        self.emit("channel.created", || {
            vec![
                ("pid", text(channel_pid(node, c.id, channel))),
                ("name", text(channel_name(&c.details.name, channel))),
                ("connection", text(connection_pid(node, c.id))),
                ("number", number(u64::from(channel))),
                ("user", text(c.user.as_str())),
                ("vhost", text(c.vhost.as_str())),
                ("user_who_performed_action", text(c.user.as_str())),
            ]
        });
    }

    pub fn channel_closed(&self, node: &str, c: &ClientConnection, channel: u16) {
        self.emit("channel.closed", || {
            vec![
                ("pid", text(channel_pid(node, c.id, channel))),
                ("user_who_performed_action", text(c.user.as_str())),
            ]
        });
    }

    /// A consumer on `queue`, made on `channel` (its pid) by `by`.
    pub fn consumer_created<C>(
        &self,
        queue: &Queue,
        consumer: &Consumer<C>,
        channel: &str,
        by: &str,
    ) {
        self.emit("consumer.created", || {
            vec![
                ("consumer_tag", text(consumer.tag.as_str())),
                ("exclusive", flag(consumer.exclusive)),
                ("ack_required", flag(!consumer.no_ack)),
                ("channel", text(channel)),
                ("queue", text(queue.config.name.as_str())),
                ("vhost", text(queue.config.vhost.as_str())),
                ("prefetch_count", number(u64::from(consumer.prefetch))),
                ("arguments", table(&consumer.arguments)),
                ("user_who_performed_action", text(by)),
            ]
        });
    }

    /// A consumer is gone: cancelled, its channel closed or its queue
    /// deleted.
    pub fn consumer_deleted(&self, queue: &Queue, tag: &str, channel: &str, by: &str) {
        self.emit("consumer.deleted", || {
            vec![
                ("consumer_tag", text(tag)),
                ("channel", text(channel)),
                ("queue", text(queue.config.name.as_str())),
                ("vhost", text(queue.config.vhost.as_str())),
                ("user_who_performed_action", text(by)),
            ]
        });
    }

    /// A login over AMQP: its credentials accepted, or refused with
    /// `error` (RabbitMQ's text; RabbitMQ sends it as a list of character
    /// codes, Warren as a string).
    pub fn authentication(&self, login: &Login<'_>, error: Option<&str>) {
        let kind = match error {
            None => "user.authentication.success",
            Some(_) => "user.authentication.failure",
        };
        self.emit(kind, || {
            let mut props: Vec<(&'static str, AMQPValue)> = vec![
                ("connection_type", text("network")),
                ("name", text(login.user)),
                ("host", text(host(login.local))),
                (
                    "connection_name",
                    text(ConnectionDetails::name_of(login.peer, login.local)),
                ),
                ("peer_host", text(host(login.peer))),
                ("peer_port", number(u64::from(login.peer.port()))),
                ("protocol", text(PROTOCOL)),
                ("auth_mechanism", text(login.mechanism)),
                ("ssl", flag(login.tls)),
            ];
            if let Some(e) = error {
                props.push(("error", text(e)));
            }
            props
        });
    }
}
