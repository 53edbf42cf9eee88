//! What a vhost writes to the store: its durable exchanges, queues and
//! bindings as definition records, and the rules for which of them
//! survive a restart.
//!
//! Every write here happens under the `topology` lock (the callers in
//! `topology` hold it), so the store sees changes in the order they
//! happen. Each function reports whether it wrote, which the caller turns
//! into a [`Durability`](super::vhost::Durability). Only what the docs
//! call "kept across restarts" (docs/storage.md) is written; nothing here
//! touches the routers or the binding set.

use super::bindings::{Binding, DestinationName};
use super::vhost::VHost;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::Exchange;
use crate::queue::{Queue, QueueConfig};
use crate::store::{BindingRecord, ExchangeRecord, QueueRecord, StoreError};

fn store_failed(e: StoreError) -> AmqpError {
    AmqpError::internal_error(format!("cannot write definitions: {e}"))
}

/// An exchange whose definition survives a restart. Predeclared (`amq.*`)
/// exchanges count as durable but are recreated at boot, not stored.
fn exchange_survives(e: &Exchange) -> bool {
    e.durable && !e.auto_delete
}

fn exchange_is_stored(e: &Exchange) -> bool {
    exchange_survives(e) && !e.name.as_str().is_empty() && !e.name.as_str().starts_with("amq.")
}

impl VHost {
    /// Store a newly declared exchange if it survives restarts; true if
    /// written.
    pub(super) fn store_exchange(&self, exchange: &Exchange) -> AmqpResult<bool> {
        if !exchange_is_stored(exchange) {
            return Ok(false);
        }
        self.store()
            .put_exchange(&ExchangeRecord {
                vhost: self.name.clone(),
                name: exchange.name.as_str().to_string(),
                kind: exchange.kind.as_str().to_string(),
                auto_delete: exchange.auto_delete,
                internal: exchange.internal,
                arguments: exchange.arguments.clone(),
                delay_uid: exchange.delayed.get().map(|d| d.uid()),
            })
            .map_err(store_failed)?;
        Ok(true)
    }

    /// Delete a deleted exchange's record if it had one; true if written.
    pub(super) fn unstore_exchange(&self, exchange: &Exchange) -> AmqpResult<bool> {
        if !exchange_is_stored(exchange) {
            return Ok(false);
        }
        self.store()
            .delete_exchange(&self.name, exchange.name.as_str())
            .map_err(store_failed)?;
        Ok(true)
    }

    /// Store a newly declared queue if it survives restarts; true if
    /// written. The record carries the queue's uid, which keys its
    /// messages.
    pub(super) fn store_queue(&self, config: &QueueConfig) -> AmqpResult<bool> {
        self.store_queue_state(config, false)
    }

    /// Write a queue's record with its paused flag; true if written.
    pub(super) fn store_queue_state(&self, config: &QueueConfig, paused: bool) -> AmqpResult<bool> {
        if !config.survives_restart() {
            return Ok(false);
        }
        self.store()
            .put_queue(&QueueRecord {
                vhost: self.name.clone(),
                name: config.name.as_str().to_string(),
                uid: config.uid,
                auto_delete: config.auto_delete,
                arguments: config.arguments.clone(),
                paused,
            })
            .map_err(store_failed)?;
        Ok(true)
    }

    /// Delete a deleted queue's record if it had one; true if written.
    pub(super) fn unstore_queue(&self, queue: &Queue) -> AmqpResult<bool> {
        if !queue.config.survives_restart() {
            return Ok(false);
        }
        self.store()
            .delete_queue(&self.name, queue.name())
            .map_err(store_failed)?;
        Ok(true)
    }

    /// Whether both ends of a binding survive a restart, so it does too.
    fn binding_survives(&self, b: &Binding) -> bool {
        let source = self
            .exchange(b.source.as_str())
            .is_some_and(|e| exchange_survives(&e));
        let destination = match &b.destination {
            DestinationName::Queue(q) => self
                .queues
                .read()
                .get(q.as_str())
                .is_some_and(|q| q.config.survives_restart()),
            DestinationName::Exchange(e) => self
                .exchange(e.as_str())
                .is_some_and(|e| exchange_survives(&e)),
        };
        source && destination
    }

    fn binding_record(&self, b: &Binding) -> BindingRecord {
        let (destination, destination_is_queue) = match &b.destination {
            DestinationName::Queue(q) => (q.as_str().to_string(), true),
            DestinationName::Exchange(e) => (e.as_str().to_string(), false),
        };
        BindingRecord {
            vhost: self.name.clone(),
            source: b.source.as_str().to_string(),
            destination,
            destination_is_queue,
            routing_key: b.routing_key.as_str().to_string(),
            arguments: b.arguments.clone(),
        }
    }

    /// Store a new binding if it survives restarts; true if written.
    pub(super) fn record_binding(&self, b: &Binding) -> AmqpResult<bool> {
        if !self.binding_survives(b) {
            return Ok(false);
        }
        self.store()
            .put_binding(&self.binding_record(b))
            .map_err(store_failed)?;
        Ok(true)
    }

    /// Delete a binding's record if it had one; true if written. Called
    /// while both ends still exist.
    pub(super) fn forget_binding(&self, b: &Binding) -> AmqpResult<bool> {
        if !self.binding_survives(b) {
            return Ok(false);
        }
        self.store()
            .delete_binding(&self.binding_record(b))
            .map_err(store_failed)?;
        Ok(true)
    }
}
