//! The `queue` class: declare (including the passive declare of the
//! direct reply-to pseudo-queue), bind, unbind, purge and delete, with
//! RabbitMQ's shortcuts for an empty queue name or routing key.

use amq_protocol::protocol::{AMQPClass, queue};
use amq_protocol::types::{AMQPValue, ShortString};
use serde_json::json;

use super::{Channel, REPLY_TO, server_only};
use crate::amqp::session::Session;
use crate::broker::auth::Access;
use crate::broker::vhost::QueueDeclare;
use crate::error::AmqpResult;
use crate::metrics::ChurnEvent;

impl Channel {
    pub(super) fn queue_method(&mut self, s: &Session, m: queue::AMQPMethod) -> AmqpResult<()> {
        use queue::AMQPMethod as M;
        match m {
            M::Declare(d) => {
                // An empty name declares a server-named queue, or (passive)
                // refers to the channel's last queue.
                let name = if d.queue.as_str().is_empty() && !d.passive {
                    d.queue
                } else {
                    self.queue_name(d.queue)?
                };
                if d.passive && name.as_str() == REPLY_TO {
                    let consumers = self.reply_queue.as_ref().map_or(0, |q| q.consumer_count());
                    if !d.nowait {
                        s.reply(
                            self.id,
                            AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                                queue: name,
                                message_count: 0,
                                consumer_count: consumers,
                            })),
                        );
                    }
                    return Ok(());
                }
                if d.passive {
                    s.check_any("queue", name.as_str())?;
                } else if !name.as_str().is_empty() {
                    s.check(Access::Configure, "queue", name.as_str())?;
                }
                let dead_letter_exchange = match d.arguments.inner().get("x-dead-letter-exchange") {
                    Some(AMQPValue::LongString(x)) => {
                        Some(String::from_utf8_lossy(x.as_bytes()).into_owned())
                    }
                    Some(AMQPValue::ShortString(x)) => Some(x.as_str().to_string()),
                    _ => None,
                };
                let declared = s.vhost.declare_queue(
                    s.connection_id,
                    &QueueDeclare {
                        name: name.clone(),
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: d.arguments,
                    },
                    |final_name| {
                        // A server-named queue is checked under the name
                        // it gets, as RabbitMQ does.
                        if name.as_str().is_empty() {
                            s.check(Access::Configure, "queue", final_name)?;
                        }
                        // A new queue that dead-letters needs read on itself
                        // and write on its dead-letter exchange.
                        if let Some(dlx) = &dead_letter_exchange {
                            s.check(Access::Read, "queue", final_name)?;
                            s.check(Access::Write, "exchange", dlx)?;
                        }
                        Ok(())
                    },
                    &s.user,
                )?;
                let (queue, messages, consumers, durability) = (
                    declared.queue,
                    declared.messages,
                    declared.consumers,
                    declared.durability,
                );
                s.broker.metrics.churn(ChurnEvent::QueueDeclared);
                let name = queue.config.name.clone();
                if declared.created {
                    s.audit("queue.created", || {
                        json!({"name": name.as_str(), "durable": d.durable,
                               "exclusive": d.exclusive, "auto_delete": d.auto_delete})
                    });
                }
                self.last_queue = Some(name.clone());
                if !d.nowait {
                    s.reply_when_durable(
                        self.id,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: name,
                            message_count: messages,
                            consumer_count: consumers,
                        })),
                        durability,
                    );
                }
            }
            M::Bind(b) => {
                let key = routing_key_shortcut(b.routing_key, &b.queue, &self.last_queue);
                let name = self.queue_name(b.queue)?;
                self.check_binding_to(
                    s,
                    "queue",
                    name.as_str(),
                    b.exchange.as_str(),
                    key.as_str(),
                )?;
                let durability = s.vhost.bind_queue(
                    s.connection_id,
                    name.as_str(),
                    b.exchange.as_str(),
                    key.as_str(),
                    &b.arguments,
                    &s.user,
                )?;
                s.audit("binding.created", || {
                    json!({"source": b.exchange.as_str(), "destination": name.as_str(),
                           "destination_type": "queue", "routing_key": key.as_str()})
                });
                if !b.nowait {
                    s.reply_when_durable(
                        self.id,
                        AMQPClass::Queue(M::BindOk(queue::BindOk {})),
                        durability,
                    );
                }
            }
            M::Unbind(b) => {
                let key = routing_key_shortcut(b.routing_key, &b.queue, &self.last_queue);
                let name = self.queue_name(b.queue)?;
                self.check_binding_to(
                    s,
                    "queue",
                    name.as_str(),
                    b.exchange.as_str(),
                    key.as_str(),
                )?;
                let durability = s.vhost.unbind_queue(
                    s.connection_id,
                    name.as_str(),
                    b.exchange.as_str(),
                    key.as_str(),
                    &b.arguments,
                    &s.user,
                )?;
                s.audit("binding.deleted", || {
                    json!({"source": b.exchange.as_str(), "destination": name.as_str(),
                           "destination_type": "queue", "routing_key": key.as_str()})
                });
                s.reply_when_durable(
                    self.id,
                    AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})),
                    durability,
                );
            }
            M::Purge(p) => {
                let name = self.queue_name(p.queue)?;
                s.check(Access::Read, "queue", name.as_str())?;
                let (count, durability) = s.vhost.purge_queue(s.connection_id, name.as_str())?;
                if !p.nowait {
                    // Once purge-ok is sent, the purged messages cannot come
                    // back after a crash.
                    s.reply_when_durable(
                        self.id,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk {
                            message_count: count,
                        })),
                        durability,
                    );
                }
            }
            M::Delete(d) => {
                let name = self.queue_name(d.queue)?;
                s.check(Access::Configure, "queue", name.as_str())?;
                let existed = s.broker.audit.is_enabled()
                    && s.vhost.queue(s.connection_id, name.as_str()).is_ok();
                // This channel's own consumers of the queue are told after
                // delete-ok, as by RabbitMQ.
                self.deliveries.hold_cancels();
                let deleted = s.vhost.delete_queue(
                    s.connection_id,
                    name.as_str(),
                    d.if_unused,
                    d.if_empty,
                    &s.user,
                );
                let cancels = self.deliveries.take_held_cancels();
                let (count, durability) = match deleted {
                    Ok(deleted) => deleted,
                    Err(e) => {
                        cancels.into_iter().for_each(|m| s.reply(self.id, m));
                        return Err(e);
                    }
                };
                if existed {
                    s.audit("queue.deleted", || json!({"name": name.as_str()}));
                }
                if d.nowait {
                    cancels.into_iter().for_each(|m| s.reply(self.id, m));
                } else {
                    let ok = AMQPClass::Queue(M::DeleteOk(queue::DeleteOk {
                        message_count: count,
                    }));
                    s.reply_when_durable_then(self.id, ok, durability, cancels);
                }
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }
}

/// `queue.bind` / `queue.unbind` with both the queue name and the routing
/// key empty use the last declared queue's name as the key, as RabbitMQ
/// does; an empty key with a named queue is just the empty key.
fn routing_key_shortcut(
    key: ShortString,
    queue: &ShortString,
    last_queue: &Option<ShortString>,
) -> ShortString {
    match last_queue {
        Some(last) if key.as_str().is_empty() && queue.as_str().is_empty() => last.clone(),
        _ => key,
    }
}
