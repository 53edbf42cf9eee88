//! Users, passwords and per-vhost permissions.
//!
//! Passwords are stored as RabbitMQ stores them
//! (`rabbit_password_hashing_sha256`: base64 of a 4-byte salt followed by
//! SHA-256 of salt ‖ password) so definitions move between RabbitMQ and Warren
//! unchanged. Permissions are RabbitMQ's three regular expressions —
//! configure, write, read — matched (unanchored) against resource names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::RwLock;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::error::{AmqpError, AmqpResult};

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    /// base64(salt ‖ sha256(salt ‖ password)).
    pub password_hash: String,
    pub tags: Vec<String>,
}

impl User {
    pub fn new(name: &str, password: &str, tags: Vec<String>) -> User {
        User {
            name: name.to_string(),
            password_hash: hash_password(password),
            tags,
        }
    }

    pub fn check_password(&self, password: &str) -> bool {
        let Ok(raw) = BASE64.decode(&self.password_hash) else {
            return false;
        };
        if raw.len() != 4 + 32 {
            return false;
        }
        let (salt, digest) = raw.split_at(4);
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password.as_bytes());
        h.finalize().as_slice() == digest
    }
}

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 4];
    rand::fill(&mut salt);
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut raw = salt.to_vec();
    raw.extend_from_slice(h.finalize().as_slice());
    BASE64.encode(raw)
}

/// What a user may do in one vhost.
#[derive(Clone, Debug)]
pub struct Permission {
    pub configure: Regex,
    pub write: Regex,
    pub read: Regex,
}

impl Permission {
    pub fn full() -> Permission {
        Permission::new(".*", ".*", ".*").unwrap_or_else(|_| unreachable!())
    }

    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, regex::Error> {
        Ok(Permission {
            configure: permission_regex(configure)?,
            write: permission_regex(write)?,
            read: permission_regex(read)?,
        })
    }
}

/// RabbitMQ treats an empty pattern as "nothing", not "everything".
fn permission_regex(pattern: &str) -> Result<Regex, regex::Error> {
    if pattern.is_empty() {
        Regex::new("^$.")
    } else {
        Regex::new(pattern)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

#[derive(Debug, Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
    permissions: RwLock<HashMap<(String, String), Permission>>,
    /// Bumped whenever permissions change, so a check remembered under an
    /// older generation is made again.
    generation: AtomicU64,
}

impl Users {
    pub fn put_user(&self, user: User) {
        self.users.write().insert(user.name.clone(), user);
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    pub fn set_permission(&self, user: &str, vhost: &str, permission: Permission) {
        self.permissions
            .write()
            .insert((user.to_string(), vhost.to_string()), permission);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever any permission changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Check a username and password; `None` if they do not match a user.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        self.users
            .read()
            .get(name)
            .filter(|u| u.check_password(password))
            .cloned()
    }

    pub fn can_access_vhost(&self, user: &str, vhost: &str) -> bool {
        self.permissions
            .read()
            .contains_key(&(user.to_string(), vhost.to_string()))
    }

    /// Check one access right on a resource, with RabbitMQ's refusal text.
    /// `kind` is "queue" or "exchange".
    pub fn check(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        kind: &str,
        name: &str,
    ) -> AmqpResult<()> {
        let perms = self.permissions.read();
        let allowed = perms
            .get(&(user.to_string(), vhost.to_string()))
            .is_some_and(|p| {
                let re = match access {
                    Access::Configure => &p.configure,
                    Access::Write => &p.write,
                    Access::Read => &p.read,
                };
                // The default exchange is "amq.default" for permission checks.
                let subject = if kind == "exchange" && name.is_empty() {
                    "amq.default"
                } else {
                    name
                };
                re.is_match(subject)
            });
        if allowed {
            Ok(())
        } else {
            let shown = if kind == "exchange" && name.is_empty() {
                "amq.default"
            } else {
                name
            };
            Err(AmqpError::access_refused(format!(
                "access to {kind} '{shown}' in vhost '{vhost}' refused for user '{user}'"
            )))
        }
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
    fn verifies_a_hash_made_by_rabbitmq() {
        // Exported by RabbitMQ 3.10.8 (`rabbitmqctl export_definitions`) for
        // a user whose password is "guest".
        let u = User {
            name: "guest".into(),
            password_hash: "lRiuDqShe5RykxH8C/l0FX4iZRvEWZ6+R0llOTKg5OiGYL4M".into(),
            tags: vec![],
        };
        assert!(u.check_password("guest"));
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
            "ACCESS_REFUSED - access to queue 'other' in vhost '/' refused for user 'bob'"
        );
        assert!(
            users
                .check("bob", "/", Access::Write, "exchange", "x")
                .is_err()
        );
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
}
