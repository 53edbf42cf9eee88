//! Events about exchanges, queues and bindings.

use amq_protocol::types::AMQPValue;

use super::{Events, connection_pid, flag, table, text};
use crate::broker::bindings::{Binding, DestinationName};
use crate::exchange::Exchange;
use crate::queue::Queue;
use crate::queue::args::QueueType;

/// The topology's events, with the properties RabbitMQ gives them.
impl Events {
    pub fn queue_created(&self, queue: &Queue, by: &str) {
        self.emit("queue.created", || {
            let c = &queue.config;
            let mut props = vec![
                ("name", text(c.name.as_str())),
                ("vhost", text(c.vhost.as_str())),
                ("durable", flag(c.durable)),
                ("auto_delete", flag(c.auto_delete)),
                ("arguments", table(&c.arguments)),
            ];
            // As RabbitMQ: a classic queue says who owns it and no type; a
            // stream is never exclusive and does not say so.
            match c.args.queue_type {
                QueueType::Stream => props.push(("type", text("rabbit_stream_queue"))),
                QueueType::Quorum => {
                    props.push(("type", text("rabbit_quorum_queue")));
                    props.push(("exclusive", flag(false)));
                }
                _ => {
                    let owner = c
                        .exclusive_owner
                        .map(|id| connection_pid(self.node(), id))
                        .unwrap_or_default();
                    props.push(("owner_pid", text(owner)));
                    props.push(("exclusive", flag(c.exclusive_owner.is_some())));
                }
            }
            props.push(("user_who_performed_action", text(by)));
            props
        });
    }

    pub fn queue_deleted(&self, queue: &Queue, by: &str) {
        self.emit("queue.deleted", || {
            let c = &queue.config;
            vec![
                ("name", text(c.name.as_str())),
                ("vhost", text(c.vhost.as_str())),
                ("user_who_performed_action", text(by)),
            ]
        });
    }

    pub fn exchange_created(&self, vhost: &str, x: &Exchange, by: &str) {
        self.emit("exchange.created", || {
            vec![
                ("name", text(x.name.as_str())),
                ("vhost", text(vhost)),
                ("type", text(x.kind.as_str())),
                ("durable", flag(x.durable)),
                ("auto_delete", flag(x.auto_delete)),
                ("internal", flag(x.internal)),
                ("arguments", table(&x.arguments)),
                ("policy", text(x.policy_name().unwrap_or_default())),
                ("user_who_performed_action", text(by)),
            ]
        });
    }

    pub fn exchange_deleted(&self, vhost: &str, x: &Exchange, by: &str) {
        self.emit("exchange.deleted", || {
            vec![
                ("name", text(x.name.as_str())),
                ("vhost", text(vhost)),
                ("user_who_performed_action", text(by)),
            ]
        });
    }

    pub fn binding_created(&self, vhost: &str, b: &Binding, by: &str) {
        self.emit("binding.created", || binding_props(vhost, b, by));
    }

    pub fn binding_deleted(&self, vhost: &str, b: &Binding, by: &str) {
        self.emit("binding.deleted", || binding_props(vhost, b, by));
    }
}

fn binding_props(vhost: &str, b: &Binding, by: &str) -> Vec<(&'static str, AMQPValue)> {
    let kind = match b.destination {
        DestinationName::Queue(_) => "queue",
        DestinationName::Exchange(_) => "exchange",
    };
    vec![
        ("source_name", text(b.source.as_str())),
        ("source_kind", text("exchange")),
        ("destination_name", text(b.destination.name())),
        ("destination_kind", text(kind)),
        ("routing_key", text(b.routing_key.as_str())),
        ("arguments", table(&b.arguments)),
        ("vhost", text(vhost)),
        ("user_who_performed_action", text(by)),
    ]
}
