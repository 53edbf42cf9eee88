//! Changing who may do what, at run time: users (password or RabbitMQ
//! hash, tags, limits), permissions, topic permissions and vhost limits.
//! This is the Rust API the HTTP API and the CLI call; each change takes
//! effect at once for open connections (checks read the current tables),
//! is made durable in the store's definitions before the call returns, and
//! is written to the audit trail with who made it.

use serde_json::json;

use super::Broker;
use super::audit::Actor;
use super::auth::{HashingAlgorithm, PermissionPatterns, User, hash_password, is_well_formed};
use super::limits::{UserLimits, VhostLimits};
use crate::store::{
    PermissionRecord, StoreError, TopicPermissionRecord, UserRecord, VhostLimitsRecord,
};

/// Why a management call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// No such user or vhost (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// A malformed pattern, hash or name (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Something the broker could not carry out (HTTP 500).
    #[error("{0}")]
    Internal(String),
    /// The change could not be made durable (HTTP 500).
    #[error("cannot write definitions: {0}")]
    Store(#[from] StoreError),
}

/// How a user proves who they are.
#[derive(Clone, Debug)]
pub enum Password {
    /// A clear-text password, hashed here (SHA-256).
    Clear(String),
    /// A hash in RabbitMQ's format (from a definitions export).
    Hash {
        hash: String,
        algorithm: HashingAlgorithm,
    },
    /// No password: the user can only log in with EXTERNAL.
    None,
}

/// The stored form of a user.
pub(super) fn user_record(u: &User) -> UserRecord {
    let limits = match serde_json::to_value(u.limits) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    UserRecord {
        name: u.name.clone(),
        password_hash: u.password_hash.clone(),
        hashing_algorithm: u.hashing_algorithm.name().to_string(),
        tags: u.tags.clone(),
        limits,
    }
}

fn hashed(password: Password) -> Result<(String, HashingAlgorithm), AccessError> {
    match password {
        Password::Clear(p) if p.is_empty() => Err(AccessError::Invalid(
            "a blank password is not allowed; use Password::None for certificate-only users".into(),
        )),
        Password::Clear(p) => Ok((
            hash_password(HashingAlgorithm::Sha256, &p),
            HashingAlgorithm::Sha256,
        )),
        Password::Hash { hash, algorithm } => {
            if !is_well_formed(algorithm, &hash) {
                return Err(AccessError::Invalid(format!(
                    "'{hash}' is not a {} password hash",
                    algorithm.name()
                )));
            }
            Ok((hash, algorithm))
        }
        Password::None => Ok((String::new(), HashingAlgorithm::Sha256)),
    }
}

impl Broker {
    pub(super) fn no_user(name: &str) -> AccessError {
        AccessError::NotFound(format!("no such user '{name}'"))
    }

    pub(super) fn no_vhost(name: &str) -> AccessError {
        AccessError::NotFound(format!("no such vhost '{name}'"))
    }

    /// Create a user, or replace the password and tags of an existing one
    /// (RabbitMQ's `PUT /api/users/{name}`). Limits are kept.
    pub fn put_user(
        &self,
        name: &str,
        password: Password,
        tags: Vec<String>,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        if name.is_empty() {
            return Err(AccessError::Invalid("user name must not be empty".into()));
        }
        let (password_hash, hashing_algorithm) = hashed(password)?;
        let existed = self.users.user(name);
        let user = User {
            name: name.to_string(),
            password_hash,
            hashing_algorithm,
            tags: tags.clone(),
            limits: existed.as_ref().map(|u| u.limits).unwrap_or_default(),
        };
        self.store.put_user(&user_record(&user))?;
        self.store.flush_now()?;
        self.users.put_user(user);
        let event = if existed.is_some() {
            "user.updated"
        } else {
            "user.created"
        };
        self.audit
            .record(event, Some(actor), json!({"name": name, "tags": tags}));
        // As RabbitMQ's PUT /api/users: created (or a new password), then
        // the tags.
        let first = if existed.is_some() {
            "user.password.changed"
        } else {
            "user.created"
        };
        self.events
            .emit_json(first, &actor.user, || json!({"name": name}));
        self.events.emit_json(
            "user.tags.set",
            &actor.user,
            || json!({"name": name, "tags": tags}),
        );
        Ok(())
    }

    /// Change a user's password (or hash, or remove it).
    pub fn change_password(
        &self,
        name: &str,
        password: Password,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let mut user = self.users.user(name).ok_or_else(|| Broker::no_user(name))?;
        (user.password_hash, user.hashing_algorithm) = hashed(password)?;
        self.store.put_user(&user_record(&user))?;
        self.store.flush_now()?;
        self.users.put_user(user);
        self.audit
            .record("user.password.changed", Some(actor), json!({"name": name}));
        self.events.emit_json(
            "user.password.changed",
            &actor.user,
            || json!({"name": name}),
        );
        Ok(())
    }

    pub fn set_user_tags(
        &self,
        name: &str,
        tags: Vec<String>,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let mut user = self.users.user(name).ok_or_else(|| Broker::no_user(name))?;
        user.tags = tags.clone();
        self.store.put_user(&user_record(&user))?;
        self.store.flush_now()?;
        self.users.put_user(user);
        self.audit.record(
            "user.tags.set",
            Some(actor),
            json!({"name": name, "tags": tags}),
        );
        self.events.emit_json(
            "user.tags.set",
            &actor.user,
            || json!({"name": name, "tags": tags}),
        );
        Ok(())
    }

    /// Delete a user with its permissions; its connections are closed
    /// (320, "user '…' is deleted"), as RabbitMQ does.
    pub fn delete_user(&self, name: &str, actor: &Actor) -> Result<(), AccessError> {
        if self.users.user(name).is_none() {
            return Err(Broker::no_user(name));
        }
        for (u, vhost, _) in self.users.permissions() {
            if u == name {
                self.store.delete_permission(name, &vhost)?;
            }
        }
        for (u, vhost, exchange, _, _) in self.users.topic_permissions() {
            if u == name {
                self.store
                    .delete_topic_permission(name, &vhost, &exchange)?;
            }
        }
        self.store.delete_user(name)?;
        self.store.flush_now()?;
        self.users.remove_user(name);
        self.close_connections(|c| c.user == name, &format!("user '{name}' is deleted"));
        self.audit
            .record("user.deleted", Some(actor), json!({"name": name}));
        self.events
            .emit_json("user.deleted", &actor.user, || json!({"name": name}));
        Ok(())
    }

    /// Set `user`'s configure / write / read patterns on `vhost`.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        self.users.user(user).ok_or_else(|| Broker::no_user(user))?;
        self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        let patterns = PermissionPatterns {
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        };
        // Compile before anything is written.
        super::auth::Permission::new(configure, write, read)
            .map_err(|e| AccessError::Invalid(format!("invalid permission pattern: {e}")))?;
        self.store.put_permission(&PermissionRecord {
            user: user.into(),
            vhost: vhost.into(),
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        })?;
        self.store.flush_now()?;
        self.users
            .set_permission_patterns(user, vhost, patterns)
            .map_err(|e| AccessError::Invalid(format!("invalid permission pattern: {e}")))?;
        self.audit.record(
            "permission.created",
            Some(actor),
            json!({"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read}),
        );
        self.events.emit_json("permission.created", &actor.user, || {
            json!({"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read})
        });
        Ok(())
    }

    /// Remove `user`'s permissions on `vhost`: every later operation of its
    /// open connections there is refused.
    pub fn clear_permissions(
        &self,
        user: &str,
        vhost: &str,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        self.store.delete_permission(user, vhost)?;
        self.store.flush_now()?;
        if !self.users.clear_permission(user, vhost) {
            return Err(AccessError::NotFound(format!(
                "no permissions for user '{user}' in vhost '{vhost}'"
            )));
        }
        self.audit.record(
            "permission.deleted",
            Some(actor),
            json!({"user": user, "vhost": vhost}),
        );
        self.events.emit_json(
            "permission.deleted",
            &actor.user,
            || json!({"user": user, "vhost": vhost}),
        );
        Ok(())
    }

    /// Set `user`'s routing-key patterns on topic exchange `exchange` of
    /// `vhost` (`{username}` and `{vhost}` are expanded).
    pub fn set_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        self.users.user(user).ok_or_else(|| Broker::no_user(user))?;
        self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        super::auth::TopicPermission::new(user, vhost, write, read)
            .map_err(|e| AccessError::Invalid(format!("invalid topic permission pattern: {e}")))?;
        self.store.put_topic_permission(&TopicPermissionRecord {
            user: user.into(),
            vhost: vhost.into(),
            exchange: exchange.into(),
            write: write.into(),
            read: read.into(),
        })?;
        self.store.flush_now()?;
        self.users
            .set_topic_permission(user, vhost, exchange, write, read)
            .map_err(|e| AccessError::Invalid(format!("invalid topic permission pattern: {e}")))?;
        self.audit.record(
            "topic.permission.created",
            Some(actor),
            json!({"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read}),
        );
        self.events.emit_json("topic.permission.created", &actor.user, || {
            json!({"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read})
        });
        Ok(())
    }

    /// Clear `user`'s topic permission on one exchange, or on all
    /// (`exchange` `None`) in `vhost`.
    pub fn clear_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let cleared = self.users.clear_topic_permission(user, vhost, exchange);
        for x in &cleared {
            self.store.delete_topic_permission(user, vhost, x)?;
        }
        self.store.flush_now()?;
        if cleared.is_empty() {
            return Err(AccessError::NotFound(format!(
                "no topic permissions for user '{user}' in vhost '{vhost}'"
            )));
        }
        self.audit.record(
            "topic.permission.deleted",
            Some(actor),
            json!({"user": user, "vhost": vhost, "exchanges": cleared}),
        );
        self.events.emit_json(
            "topic.permission.deleted",
            &actor.user,
            || json!({"user": user, "vhost": vhost}),
        );
        Ok(())
    }

    /// Replace a vhost's limits (`VhostLimits::default()` clears them).
    /// They apply to the next connection and queue declaration.
    pub fn set_vhost_limits(
        &self,
        vhost: &str,
        limits: VhostLimits,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let v = self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        if limits == VhostLimits::default() {
            self.store.delete_vhost_limits(vhost)?;
        } else {
            let map = match serde_json::to_value(limits) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            self.store.put_vhost_limits(&VhostLimitsRecord {
                vhost: vhost.into(),
                limits: map,
            })?;
        }
        self.store.flush_now()?;
        v.set_limits(limits);
        self.audit.record(
            "vhost.limits.set",
            Some(actor),
            json!({"vhost": vhost, "limits": limits}),
        );
        // RabbitMQ's names no vhost (only its `parameter.set` does); this
        // one adds it.
        let cleared = limits == VhostLimits::default();
        self.events.emit_json(
            if cleared {
                "vhost.limits.cleared"
            } else {
                "vhost.limits.set"
            },
            &actor.user,
            || limit_fields(json!({"name": "limits", "vhost": vhost}), &limits),
        );
        Ok(())
    }

    /// Replace a user's limits (`UserLimits::default()` clears them).
    pub fn set_user_limits(
        &self,
        user: &str,
        limits: UserLimits,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let mut u = self.users.user(user).ok_or_else(|| Broker::no_user(user))?;
        u.limits = limits;
        self.store.put_user(&user_record(&u))?;
        self.store.flush_now()?;
        self.users.put_user(u);
        self.audit.record(
            "user.limits.set",
            Some(actor),
            json!({"user": user, "limits": limits}),
        );
        let cleared = limits == UserLimits::default();
        self.events.emit_json(
            if cleared {
                "user.limits.cleared"
            } else {
                "user.limits.set"
            },
            &actor.user,
            || limit_fields(json!({"name": "limits", "username": user}), &limits),
        );
        Ok(())
    }
}

/// An event's fields with each limit that is set as a header of its own
/// (`max-connections: 5`), as RabbitMQ's `*.limits.set` events carry them.
fn limit_fields(
    mut fields: serde_json::Value,
    limits: &impl serde::Serialize,
) -> serde_json::Value {
    if let (Some(out), Ok(serde_json::Value::Object(set))) =
        (fields.as_object_mut(), serde_json::to_value(limits))
    {
        for (k, v) in set {
            if !v.is_null() {
                out.insert(k, v);
            }
        }
    }
    fields
}
