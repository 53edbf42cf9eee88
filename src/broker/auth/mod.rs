//! Who may log in and what they may do: users (RabbitMQ password hashes,
//! tags, limits), per-vhost permissions and topic permissions, and the
//! checks made on every operation with RabbitMQ's refusal texts.
//!
//! Everything lives behind one read-write lock, read on every check and
//! written only by the management calls in `broker::access`, which also
//! make the changes durable. A generation number changes with every change
//! of permissions, so a channel that remembers a check (the publish path's
//! last target) makes it again after any change.
//!
//! Passwords: `password` (hash formats). Permission patterns: `permission`.

mod password;
mod permission;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::limits::UserLimits;
use crate::error::{AmqpError, AmqpResult};
pub use password::{HashingAlgorithm, hash_password, is_well_formed, verify};
pub use permission::{Access, Permission, TopicPermission};

/// The tags RabbitMQ knows; others are kept and shown but grant nothing.
pub const KNOWN_TAGS: &[&str] = &[
    "administrator",
    "monitoring",
    "management",
    "policymaker",
    "impersonator",
];

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    /// base64(salt ‖ digest(salt ‖ password)); empty: no password login.
    pub password_hash: String,
    pub hashing_algorithm: HashingAlgorithm,
    pub tags: Vec<String>,
    pub limits: UserLimits,
}

impl User {
    /// A user with a freshly hashed password (SHA-256, RabbitMQ's default).
    pub fn new(name: &str, password: &str, tags: Vec<String>) -> User {
        User {
            name: name.to_string(),
            password_hash: hash_password(HashingAlgorithm::Sha256, password),
            hashing_algorithm: HashingAlgorithm::Sha256,
            tags,
            limits: UserLimits::default(),
        }
    }

    pub fn check_password(&self, password: &str) -> bool {
        verify(self.hashing_algorithm, &self.password_hash, password)
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Source patterns of a permission, for listing and storing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionPatterns {
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug)]
struct Entry<T> {
    patterns: T,
    compiled: Permission,
}

#[derive(Debug)]
struct TopicEntry {
    write: String,
    read: String,
    compiled: TopicPermission,
}

#[derive(Debug, Default)]
struct Tables {
    users: HashMap<String, User>,
    /// By (user, vhost).
    permissions: HashMap<(String, String), Entry<PermissionPatterns>>,
    /// By (user, vhost), then exchange.
    topic: HashMap<(String, String), HashMap<String, TopicEntry>>,
}

#[derive(Debug, Default)]
pub struct Users {
    tables: RwLock<Tables>,
    /// Bumped whenever permissions change, so a check remembered under an
    /// older generation is made again.
    generation: AtomicU64,
}

/// A topic permission as listed: (user, vhost, exchange, write, read).
pub type TopicPermissionRow = (String, String, String, String, String);

impl Users {
    pub fn put_user(&self, user: User) {
        self.tables.write().users.insert(user.name.clone(), user);
        self.bump();
    }

    /// Remove a user with its permissions and topic permissions; whether
    /// it existed.
    pub fn remove_user(&self, name: &str) -> bool {
        let mut t = self.tables.write();
        let existed = t.users.remove(name).is_some();
        t.permissions.retain(|(u, _), _| u != name);
        t.topic.retain(|(u, _), _| u != name);
        drop(t);
        self.bump();
        existed
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.tables.read().users.get(name).cloned()
    }

    pub fn users(&self) -> Vec<User> {
        self.tables.read().users.values().cloned().collect()
    }

    /// Change a user in place; false if there is no such user.
    pub fn update_user(&self, name: &str, f: impl FnOnce(&mut User)) -> bool {
        let found = self.tables.write().users.get_mut(name).map(f).is_some();
        self.bump();
        found
    }

    /// Set a user's permissions on a vhost (the patterns compile first).
    pub fn set_permission_patterns(
        &self,
        user: &str,
        vhost: &str,
        patterns: PermissionPatterns,
    ) -> Result<(), crate::broker::pattern::PatternError> {
        let compiled = Permission::new(&patterns.configure, &patterns.write, &patterns.read)?;
        self.tables.write().permissions.insert(
            (user.to_string(), vhost.to_string()),
            Entry { patterns, compiled },
        );
        self.bump();
        Ok(())
    }

    /// Set an already compiled permission (tests and the default user).
    pub fn set_permission(&self, user: &str, vhost: &str, permission: Permission) {
        let patterns = PermissionPatterns {
            configure: permission.configure.as_str().to_string(),
            write: permission.write.as_str().to_string(),
            read: permission.read.as_str().to_string(),
        };
        self.tables.write().permissions.insert(
            (user.to_string(), vhost.to_string()),
            Entry {
                patterns,
                compiled: permission,
            },
        );
        self.bump();
    }

    /// Whether there was a permission to clear.
    pub fn clear_permission(&self, user: &str, vhost: &str) -> bool {
        let removed = self
            .tables
            .write()
            .permissions
            .remove(&(user.to_string(), vhost.to_string()))
            .is_some();
        self.bump();
        removed
    }

    /// Every permission: (user, vhost, patterns).
    pub fn permissions(&self) -> Vec<(String, String, PermissionPatterns)> {
        self.tables
            .read()
            .permissions
            .iter()
            .map(|((u, v), e)| (u.clone(), v.clone(), e.patterns.clone()))
            .collect()
    }

    pub fn set_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), crate::broker::pattern::PatternError> {
        let compiled = TopicPermission::new(user, vhost, write, read)?;
        self.tables
            .write()
            .topic
            .entry((user.to_string(), vhost.to_string()))
            .or_default()
            .insert(
                exchange.to_string(),
                TopicEntry {
                    write: write.to_string(),
                    read: read.to_string(),
                    compiled,
                },
            );
        self.bump();
        Ok(())
    }

    /// Clear one exchange's topic permission, or all of a user's in a vhost
    /// (`exchange` `None`). Returns the exchanges cleared.
    pub fn clear_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Vec<String> {
        let mut t = self.tables.write();
        let key = (user.to_string(), vhost.to_string());
        let cleared = match (exchange, t.topic.get_mut(&key)) {
            (_, None) => Vec::new(),
            (None, Some(_)) => t
                .topic
                .remove(&key)
                .map(|m| m.into_keys().collect())
                .unwrap_or_default(),
            (Some(x), Some(m)) => {
                let removed = m.remove(x).map(|_| vec![x.to_string()]).unwrap_or_default();
                if m.is_empty() {
                    t.topic.remove(&key);
                }
                removed
            }
        };
        drop(t);
        self.bump();
        cleared
    }

    pub fn topic_permissions(&self) -> Vec<TopicPermissionRow> {
        let t = self.tables.read();
        let mut out = Vec::new();
        for ((u, v), by_exchange) in &t.topic {
            for (x, e) in by_exchange {
                out.push((
                    u.clone(),
                    v.clone(),
                    x.clone(),
                    e.write.clone(),
                    e.read.clone(),
                ));
            }
        }
        out
    }

    /// Forget every permission and topic permission on a deleted vhost.
    pub fn forget_vhost(&self, vhost: &str) -> Vec<String> {
        let mut t = self.tables.write();
        let users: Vec<String> = t
            .permissions
            .keys()
            .filter(|(_, v)| v == vhost)
            .map(|(u, _)| u.clone())
            .collect();
        t.permissions.retain(|(_, v), _| v != vhost);
        t.topic.retain(|(_, v), _| v != vhost);
        drop(t);
        self.bump();
        users
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever any user or permission changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Check a user name and password; `None` if they do not match a user.
    /// An unknown name costs the same hash as a wrong password, so timing
    /// does not tell which names exist.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        let user = self.user(name);
        match user {
            Some(u) if u.check_password(password) => Some(u),
            Some(_) => None,
            None => {
                let _ = verify(
                    HashingAlgorithm::Sha256,
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    password,
                );
                None
            }
        }
    }

    pub fn can_access_vhost(&self, user: &str, vhost: &str) -> bool {
        self.tables
            .read()
            .permissions
            .contains_key(&(user.to_string(), vhost.to_string()))
    }

    /// Check one access right on a resource, with RabbitMQ's refusal text.
    /// `kind` is "queue" or "exchange"; the default exchange is checked
    /// (and named) as `amq.default`.
    pub fn check(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        kind: &str,
        name: &str,
    ) -> AmqpResult<()> {
        let name = resource_name(kind, name);
        if self.allows(user, vhost, access, name) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format!(
            "{} access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'",
            access.name()
        )))
    }

    /// A passive declare needs some right on the resource, any of the
    /// three; a refusal reads like a declare's (configure).
    pub fn check_any(&self, user: &str, vhost: &str, kind: &str, name: &str) -> AmqpResult<()> {
        let shown = resource_name(kind, name);
        if [Access::Read, Access::Write]
            .into_iter()
            .any(|a| self.allows(user, vhost, a, shown))
        {
            return Ok(());
        }
        self.check(user, vhost, Access::Configure, kind, name)
    }

    fn allows(&self, user: &str, vhost: &str, access: Access, name: &str) -> bool {
        self.tables
            .read()
            .permissions
            .get(&(user.to_string(), vhost.to_string()))
            .is_some_and(|e| e.compiled.allows(access, name))
    }

    /// Whether the user has any topic permission in the vhost: when not,
    /// topic checks are skipped altogether (no pattern to match).
    pub fn has_topic_permissions(&self, user: &str, vhost: &str) -> bool {
        self.tables
            .read()
            .topic
            .contains_key(&(user.to_string(), vhost.to_string()))
    }

    /// Check a routing key (publish: write) or binding key (bind: read)
    /// against the user's topic permission on a topic exchange. No topic
    /// permission for the exchange means allowed, as in RabbitMQ.
    pub fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        access: Access,
        routing_key: &str,
    ) -> AmqpResult<()> {
        let allowed = self
            .tables
            .read()
            .topic
            .get(&(user.to_string(), vhost.to_string()))
            .and_then(|m| m.get(exchange))
            .is_none_or(|e| e.compiled.allows(access, routing_key));
        if allowed {
            return Ok(());
        }
        Err(AmqpError::access_refused(format!(
            "{} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' \
             refused for user '{user}'",
            access.name()
        )))
    }
}

fn resource_name<'a>(kind: &str, name: &'a str) -> &'a str {
    if kind == "exchange" && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_verifies() {
        let u = User::new("guest", "guest", vec![]);
        assert!(u.check_password("guest"));
        assert!(!u.check_password("nope"));
    }

    #[test]
    fn permissions_follow_rabbitmq_rules() {
        let users = Users::default();
        users.put_user(User::new("bob", "pw", vec![]));
        users.set_permission("bob", "/", Permission::new("^bob-.*", "", ".*").unwrap());
        assert!(
            users
                .check("bob", "/", Access::Configure, "queue", "bob-1")
                .is_ok()
        );
        let e = users
            .check("bob", "/", Access::Configure, "queue", "other")
            .unwrap_err();
        assert_eq!(
            e.reply_text(),
            "ACCESS_REFUSED - configure access to queue 'other' in vhost '/' refused for user 'bob'"
        );
        assert!(
            users
                .check("bob", "/", Access::Write, "exchange", "x")
                .is_err()
        );
        let e = users
            .check("bob", "/", Access::Write, "exchange", "")
            .unwrap_err();
        assert!(e.detail.contains("exchange 'amq.default'"), "{}", e.detail);
        assert!(
            users
                .check("bob", "/", Access::Read, "exchange", "")
                .is_ok()
        );
        assert!(
            users
                .check("bob", "/other", Access::Read, "queue", "q")
                .is_err()
        );
    }

    #[test]
    fn a_passive_declare_needs_any_right() {
        let users = Users::default();
        users.set_permission("bob", "/", Permission::new("", "", "^r$").unwrap());
        assert!(users.check_any("bob", "/", "queue", "r").is_ok());
        let e = users.check_any("bob", "/", "queue", "x").unwrap_err();
        assert!(e.detail.starts_with("configure access"), "{}", e.detail);
    }

    #[test]
    fn topic_permissions_apply_per_exchange() {
        let users = Users::default();
        assert!(!users.has_topic_permissions("bob", "/"));
        users
            .set_topic_permission("bob", "/", "amq.topic", "^{username}\\.", "^public\\.")
            .unwrap();
        assert!(users.has_topic_permissions("bob", "/"));
        let check = |x, a, k| users.check_topic("bob", "/", x, a, k);
        assert!(check("amq.topic", Access::Write, "bob.x").is_ok());
        let e = check("amq.topic", Access::Write, "alice.x").unwrap_err();
        assert_eq!(
            e.reply_text(),
            "ACCESS_REFUSED - write access to topic 'alice.x' in exchange 'amq.topic' in vhost \
             '/' refused for user 'bob'"
        );
        assert!(check("amq.topic", Access::Read, "public.a").is_ok());
        assert!(check("other", Access::Write, "anything").is_ok());
        assert_eq!(
            users.clear_topic_permission("bob", "/", None),
            vec!["amq.topic".to_string()]
        );
        assert!(!users.has_topic_permissions("bob", "/"));
    }
}
