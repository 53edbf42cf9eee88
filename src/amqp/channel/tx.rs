//! The `tx` class: `tx.select` makes the channel transactional, and
//! publishes and settles are then held in a [`Transaction`] until
//! `tx.commit` applies them or `tx.rollback` drops them (rolled-back acks
//! leave their deliveries outstanding).

use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, tx};

use super::basic::Settle;
use super::publish::Routable;
use super::{Channel, server_only};
use crate::amqp::deliveries::Unacked;
use crate::amqp::session::Session;
use crate::broker::enqueue::Routed;
use crate::broker::vhost::Durability;
use crate::error::{AmqpError, AmqpResult};

/// Work buffered by `tx.select` until `tx.commit`.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    pub(super) publishes: Vec<Routable>,
    pub(super) settles: Vec<(Settle, Vec<(u64, Unacked)>)>,
}

impl Channel {
    pub(super) fn tx_method(&mut self, s: &Session, m: tx::AMQPMethod) -> AmqpResult<()> {
        use tx::AMQPMethod as M;
        match m {
            M::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                self.tx.get_or_insert_with(Transaction::default);
                let status = &self.deliveries.status;
                status.transactional.store(true, Ordering::Relaxed);
                s.reply(self.id, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
            }
            M::Commit(_) => {
                let tx = self.tx.as_mut().ok_or_else(not_transactional)?;
                let work = std::mem::take(tx);
                self.deliveries.tx_bytes.store(0, Ordering::Relaxed);
                self.deliveries.status.clear_uncommitted();
                let mut durability = Durability::Transient;
                for r in work.publishes {
                    match self.route_and_enqueue(s, r) {
                        Routed::Stored => durability = Durability::Durable,
                        Routed::Failed => {
                            return Err(AmqpError::internal_error(
                                "cannot store a message of the transaction",
                            ));
                        }
                        Routed::InMemory | Routed::Unroutable | Routed::Rejected => {}
                    }
                }
                for (how, taken) in work.settles {
                    self.apply_settle(s, how, taken);
                }
                self.exchange_tally.flush();
                // Acks of stored messages removed them from the store too;
                // commit-ok promises all of it is durable.
                s.reply_when_durable(
                    self.id,
                    AMQPClass::Tx(M::CommitOk(tx::CommitOk {})),
                    durability,
                );
            }
            M::Rollback(_) => {
                let tx = self.tx.as_mut().ok_or_else(not_transactional)?;
                let work = std::mem::take(tx);
                self.deliveries.tx_bytes.store(0, Ordering::Relaxed);
                self.deliveries.status.clear_uncommitted();
                // Acks inside a rolled-back transaction never happened: the
                // deliveries are outstanding again.
                let mut ledger = self.deliveries.ledger.lock();
                for (_, taken) in work.settles {
                    ledger.restore(taken);
                }
                drop(ledger);
                s.reply(self.id, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }

    /// A transaction holds its publishes (and acked deliveries) in memory
    /// until `tx.commit`: past `limits.max_transaction_bytes` it is refused.
    pub(super) fn check_transaction_size(&self, s: &Session) -> AmqpResult<()> {
        let max = s.broker.config.limits.max_transaction_bytes;
        let held = self.deliveries.tx_bytes.load(Ordering::Relaxed);
        if max != 0 && held > max {
            return Err(AmqpError::precondition_failed(format!(
                "transaction too large: it holds {held} bytes of messages, over the \
                 limit of {max} (limits.max_transaction_bytes); commit more often"
            )));
        }
        Ok(())
    }
}

fn not_transactional() -> AmqpError {
    AmqpError::precondition_failed("channel is not transactional")
}
