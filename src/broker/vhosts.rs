//! Creating and deleting vhosts at run time, durably and audited.
//!
//! Deleting a vhost first closes its connections (320 CONNECTION_FORCED,
//! "vhost '…' is deleted", as RabbitMQ), so no client acts in it while it
//! goes, then removes its queues with their messages, its exchanges,
//! bindings, policies, limits and every user's permissions on it, from
//! memory and from the store.

use std::sync::Arc;

use serde_json::json;

use super::audit::Actor;
use super::{AccessError, Broker, VHost};

impl Broker {
    /// Create a vhost (nothing happens if it exists).
    pub fn create_vhost(&self, name: &str, actor: &Actor) -> Result<Arc<VHost>, AccessError> {
        if name.is_empty() {
            return Err(AccessError::Invalid("vhost name must not be empty".into()));
        }
        if let Some(v) = self.vhost(name) {
            return Ok(v);
        }
        self.store.put_vhost(name)?;
        self.store.flush_now()?;
        let v = self.add_vhost(name);
        self.audit
            .record("vhost.created", Some(actor), json!({"vhost": name}));
        Ok(v)
    }

    /// Delete a vhost and everything in it.
    pub fn delete_vhost(&self, name: &str, actor: &Actor) -> Result<(), AccessError> {
        let Some(vhost) = self.vhosts.write().remove(name) else {
            return Err(AccessError::NotFound(format!("no such vhost '{name}'")));
        };
        let closed =
            self.close_connections(|c| c.vhost == name, &format!("vhost '{name}' is deleted"));
        vhost
            .delete_contents()
            .map_err(|e| AccessError::Internal(e.detail))?;
        for (user, vhost_name, exchange, _, _) in self.users.topic_permissions() {
            if vhost_name == name {
                self.store.delete_topic_permission(&user, name, &exchange)?;
            }
        }
        for user in self.users.forget_vhost(name) {
            self.store.delete_permission(&user, name)?;
        }
        self.store.delete_vhost_limits(name)?;
        self.store.delete_vhost(name)?;
        self.store.flush_now()?;
        tracing::info!(vhost = %name, connections = closed, "deleted vhost");
        self.audit
            .record("vhost.deleted", Some(actor), json!({"vhost": name}));
        Ok(())
    }
}
