//! The `exchange` class: declare, delete, bind and unbind, each checked
//! against the session's permissions and answered once the change is as
//! durable as the exchange.

use amq_protocol::protocol::{AMQPClass, exchange};
use amq_protocol::types::AMQPValue;
use serde_json::json;

use super::{Channel, server_only};
use crate::amqp::session::Session;
use crate::broker::auth::Access;
use crate::broker::super_stream::partition_names;
use crate::broker::vhost::{Durability, ExchangeDeclare};
use crate::error::AmqpResult;

impl Channel {
    pub(super) fn exchange_method(
        &mut self,
        s: &Session,
        m: exchange::AMQPMethod,
    ) -> AmqpResult<()> {
        use exchange::AMQPMethod as M;
        let reply = |method: M, durability: Durability| {
            s.reply_when_durable(self.id, AMQPClass::Exchange(method), durability)
        };
        match m {
            M::Declare(d) => {
                let name = d.exchange.as_str();
                if d.passive {
                    if !name.is_empty() {
                        s.check_any("exchange", name)?;
                    }
                } else {
                    s.check(Access::Configure, "exchange", name)?;
                }
                // A new exchange with an alternate exchange also needs read
                // on itself and write on the alternate (RabbitMQ's table).
                let alternate = match d.arguments.inner().get("alternate-exchange") {
                    Some(AMQPValue::LongString(ae)) => {
                        Some(String::from_utf8_lossy(ae.as_bytes()).into_owned())
                    }
                    Some(AMQPValue::ShortString(ae)) => Some(ae.as_str().to_string()),
                    _ => None,
                };
                let declare = ExchangeDeclare {
                    name: d.exchange.clone(),
                    kind: d.kind.as_str().to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                };
                let (durability, created) = s.vhost.declare_exchange(
                    &declare,
                    || {
                        if let Some(ae) = &alternate {
                            s.check(Access::Read, "exchange", name)?;
                            s.check(Access::Write, "exchange", ae)?;
                        }
                        // A super stream's partitions are declared and bound
                        // with it: what queue.declare and queue.bind need.
                        let partitions = partition_names(name, &declare.kind, &declare.arguments)?;
                        if !partitions.is_empty() {
                            s.check(Access::Read, "exchange", name)?;
                        }
                        for p in &partitions {
                            s.check(Access::Configure, "queue", p)?;
                            s.check(Access::Write, "queue", p)?;
                        }
                        Ok(())
                    },
                    &s.user,
                )?;
                if created {
                    s.audit("exchange.created", || {
                        json!({"name": name, "type": declare.kind, "durable": declare.durable,
                               "auto_delete": declare.auto_delete, "internal": declare.internal})
                    });
                }
                if !d.nowait {
                    reply(M::DeclareOk(exchange::DeclareOk {}), durability);
                }
            }
            M::Delete(d) => {
                let name = d.exchange.as_str();
                s.check(Access::Configure, "exchange", name)?;
                let existed = s.broker.audit.is_enabled() && s.vhost.exchange(name).is_some();
                let durability = s.vhost.delete_exchange(name, d.if_unused, &s.user)?;
                if existed {
                    s.audit("exchange.deleted", || json!({"name": name}));
                }
                if !d.nowait {
                    reply(M::DeleteOk(exchange::DeleteOk {}), durability);
                }
            }
            M::Bind(b) => {
                self.check_binding(
                    s,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let durability = s.vhost.bind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    &s.user,
                )?;
                s.audit("binding.created", || {
                    json!({"source": b.source.as_str(), "destination": b.destination.as_str(),
                           "destination_type": "exchange", "routing_key": b.routing_key.as_str()})
                });
                if !b.nowait {
                    reply(M::BindOk(exchange::BindOk {}), durability);
                }
            }
            M::Unbind(b) => {
                self.check_binding(
                    s,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let durability = s.vhost.unbind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    &s.user,
                )?;
                s.audit("binding.deleted", || {
                    json!({"source": b.source.as_str(), "destination": b.destination.as_str(),
                           "destination_type": "exchange", "routing_key": b.routing_key.as_str()})
                });
                if !b.nowait {
                    reply(M::UnbindOk(exchange::UnbindOk {}), durability);
                }
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }

    /// The checks of `exchange.bind`/`unbind` (destination an exchange) and
    /// `queue.bind`/`unbind` (`destination` then names a queue and
    /// `queue_destination` is set): write on the destination, read on the
    /// source, and on a topic exchange the topic read permission on the
    /// binding key.
    pub(super) fn check_binding(
        &self,
        s: &Session,
        destination: &str,
        source: &str,
        key: &str,
    ) -> AmqpResult<()> {
        self.check_binding_to(s, "exchange", destination, source, key)
    }

    pub(super) fn check_binding_to(
        &self,
        s: &Session,
        destination_kind: &str,
        destination: &str,
        source: &str,
        key: &str,
    ) -> AmqpResult<()> {
        s.check(Access::Write, destination_kind, destination)?;
        s.check(Access::Read, "exchange", source)?;
        if let Some(x) = s.vhost.exchange(source) {
            s.check_topic(&x, Access::Read, key)?;
        }
        Ok(())
    }
}
