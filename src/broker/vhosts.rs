//! Creating, describing and deleting vhosts at run time, durably and
//! audited.
//!
//! A vhost carries RabbitMQ's metadata — a description, tags and a default
//! queue type (the body of `PUT /api/vhosts/{name}`) — stored with its
//! record. Warren keeps the default queue type for tools and exports; it
//! does not yet change what a declaration without `x-queue-type` makes.
//!
//! Deleting a vhost first closes its connections (320 CONNECTION_FORCED,
//! "vhost '…' is deleted", as RabbitMQ), so no client acts in it while it
//! goes, then removes its queues with their messages, its exchanges,
//! bindings, policies, operator policies, parameters, limits and every
//! user's permissions on it, from memory and from the store.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::Actor;
use super::{AccessError, Broker, VHost};
use crate::store::VhostRecord;

/// The queue types a vhost may name as its default.
pub const QUEUE_TYPES: &[&str] = &["classic", "quorum", "stream"];

/// What RabbitMQ keeps about a vhost besides its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostMetadata {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `classic`, `quorum` or `stream`; unset means classic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
}

impl VhostMetadata {
    /// The metadata RabbitMQ gives the vhost it creates at first boot.
    pub fn default_vhost() -> VhostMetadata {
        VhostMetadata {
            description: "Default virtual host".into(),
            ..Default::default()
        }
    }

    /// Refuse what RabbitMQ would refuse.
    pub fn validate(&self) -> Result<(), String> {
        match &self.default_queue_type {
            Some(t) if !QUEUE_TYPES.contains(&t.as_str()) => Err(format!(
                "default queue type '{t}' is not one of {}",
                QUEUE_TYPES.join(", ")
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn record(&self, name: &str) -> VhostRecord {
        VhostRecord {
            name: name.to_string(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            default_queue_type: self.default_queue_type.clone(),
        }
    }

    pub(super) fn of(record: &VhostRecord) -> VhostMetadata {
        VhostMetadata {
            description: record.description.clone(),
            tags: record.tags.clone(),
            default_queue_type: record.default_queue_type.clone(),
        }
    }
}

impl Broker {
    /// Create a vhost (nothing happens if it exists).
    pub fn create_vhost(&self, name: &str, actor: &Actor) -> Result<Arc<VHost>, AccessError> {
        if let Some(v) = self.vhost(name) {
            return Ok(v);
        }
        self.create_vhost_with(name, VhostMetadata::default(), actor)
    }

    /// Create a vhost with `metadata`, or replace the metadata of an
    /// existing one (RabbitMQ's `PUT /api/vhosts/{name}`).
    pub fn create_vhost_with(
        &self,
        name: &str,
        metadata: VhostMetadata,
        actor: &Actor,
    ) -> Result<Arc<VHost>, AccessError> {
        if name.is_empty() {
            return Err(AccessError::Invalid("vhost name must not be empty".into()));
        }
        metadata.validate().map_err(AccessError::Invalid)?;
        let existing = self.vhost(name);
        if let Some(v) = &existing
            && v.metadata() == metadata
        {
            return Ok(v.clone());
        }
        self.store.put_vhost(&metadata.record(name))?;
        self.store.flush_now()?;
        let v = self.add_vhost(name);
        v.set_metadata(metadata.clone());
        let event = if existing.is_some() {
            "vhost.updated"
        } else {
            "vhost.created"
        };
        self.audit.record(
            event,
            Some(actor),
            json!({"vhost": name, "metadata": metadata}),
        );
        self.events.emit_json(event, &actor.user, || {
            json!({
                "name": name,
                "description": metadata.description,
                "tags": metadata.tags,
                "default_queue_type": metadata.default_queue_type.as_deref().unwrap_or("undefined"),
                "tracing": false,
                "cluster_state": {self.node_name.as_str(): "running"},
            })
        });
        Ok(v)
    }

    /// A vhost's description, tags and default queue type; `None` if there
    /// is no such vhost.
    pub fn vhost_metadata(&self, name: &str) -> Option<VhostMetadata> {
        self.vhost(name).map(|v| v.metadata())
    }

    /// Delete a vhost and everything in it.
    pub fn delete_vhost(&self, name: &str, actor: &Actor) -> Result<(), AccessError> {
        let Some(vhost) = self.vhosts.write().remove(name) else {
            return Err(AccessError::NotFound(format!("no such vhost '{name}'")));
        };
        let closed =
            self.close_connections(|c| c.vhost == name, &format!("vhost '{name}' is deleted"));
        vhost
            .delete_contents(&actor.user)
            .map_err(|e| AccessError::Internal(e.detail))?;
        for (user, vhost_name, exchange, _, _) in self.users.topic_permissions() {
            if vhost_name == name {
                self.store.delete_topic_permission(&user, name, &exchange)?;
            }
        }
        for user in self.users.forget_vhost(name) {
            self.store.delete_permission(&user, name)?;
        }
        for p in self.parameters.forget_vhost(name) {
            if p.component == crate::schema::COMPONENT {
                self.schemas.remove(name, &p.name);
            }
            self.store.delete_parameter(&p.component, name, &p.name)?;
        }
        self.store.delete_vhost_limits(name)?;
        self.store.delete_vhost(name)?;
        self.store.flush_now()?;
        tracing::info!(vhost = %name, connections = closed, "deleted vhost");
        self.audit
            .record("vhost.deleted", Some(actor), json!({"vhost": name}));
        self.events
            .emit_json("vhost.deleted", &actor.user, || json!({"name": name}));
        Ok(())
    }
}
