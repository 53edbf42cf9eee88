//! The `exchange` class: declare, delete, bind and unbind, each checked
//! against the session's permissions and answered once the change is as
//! durable as the exchange.

use amq_protocol::protocol::{AMQPClass, exchange};

use super::{Channel, server_only};
use crate::amqp::session::Session;
use crate::broker::auth::Access;
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
                if !d.passive {
                    s.check(Access::Configure, "exchange", d.exchange.as_str())?;
                }
                let durability = s.vhost.declare_exchange(&ExchangeDeclare {
                    name: d.exchange,
                    kind: d.kind.as_str().to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                })?;
                if !d.nowait {
                    reply(M::DeclareOk(exchange::DeclareOk {}), durability);
                }
            }
            M::Delete(d) => {
                s.check(Access::Configure, "exchange", d.exchange.as_str())?;
                let durability = s.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    reply(M::DeleteOk(exchange::DeleteOk {}), durability);
                }
            }
            M::Bind(b) => {
                s.check(Access::Write, "exchange", b.destination.as_str())?;
                s.check(Access::Read, "exchange", b.source.as_str())?;
                let durability = s.vhost.bind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    reply(M::BindOk(exchange::BindOk {}), durability);
                }
            }
            M::Unbind(b) => {
                s.check(Access::Write, "exchange", b.destination.as_str())?;
                s.check(Access::Read, "exchange", b.source.as_str())?;
                let durability = s.vhost.unbind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    reply(M::UnbindOk(exchange::UnbindOk {}), durability);
                }
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }
}
