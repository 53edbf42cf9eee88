//! Permissions as RabbitMQ's internal backend keeps them: per user and
//! vhost, three regular expressions — configure, write, read — matched
//! (unanchored) against resource names; and per user, vhost and topic
//! exchange, a write and a read expression matched against routing keys.
//!
//! An empty pattern means "nothing" (RabbitMQ reads it as `^$`). Topic
//! patterns may name `{username}` and `{vhost}`, replaced (regex-escaped)
//! by the user's name and the vhost before compiling, once, when the
//! permission is set.

use crate::broker::pattern::{Pattern, PatternError};

/// One of the three access rights RabbitMQ checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

impl Access {
    /// How RabbitMQ names the right in a refusal ("configure access to …").
    pub fn name(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// What a user may do in one vhost. The source patterns are kept for
/// listing and storing.
#[derive(Clone, Debug)]
pub struct Permission {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permission {
    pub fn full() -> Permission {
        Permission::new(".*", ".*", ".*").unwrap_or_else(|_| unreachable!())
    }

    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, PatternError> {
        Ok(Permission {
            configure: permission_regex(configure)?,
            write: permission_regex(write)?,
            read: permission_regex(read)?,
        })
    }

    pub fn allows(&self, access: Access, name: &str) -> bool {
        let re = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        re.is_match(name)
    }
}

/// Routing-key rules of one user on one topic exchange of one vhost.
#[derive(Clone, Debug)]
pub struct TopicPermission {
    pub write: Pattern,
    pub read: Pattern,
}

impl TopicPermission {
    /// Compile `write` and `read` for `user` in `vhost`, expanding
    /// `{username}` and `{vhost}`.
    pub fn new(
        user: &str,
        vhost: &str,
        write: &str,
        read: &str,
    ) -> Result<TopicPermission, PatternError> {
        let expand = |p: &str| {
            p.replace("{username}", &regex::escape(user))
                .replace("{vhost}", &regex::escape(vhost))
        };
        Ok(TopicPermission {
            write: permission_regex(&expand(write))?,
            read: permission_regex(&expand(read))?,
        })
    }

    pub fn allows(&self, access: Access, routing_key: &str) -> bool {
        match access {
            Access::Write => self.write.is_match(routing_key),
            Access::Read => self.read.is_match(routing_key),
            Access::Configure => false,
        }
    }
}

/// RabbitMQ treats an empty pattern as "nothing", not "everything".
fn permission_regex(pattern: &str) -> Result<Pattern, PatternError> {
    if pattern.is_empty() {
        Pattern::new("^$")
    } else {
        Pattern::new(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_patterns_allow_nothing_but_the_empty_name() {
        let p = Permission::new("", "^x-", ".*").unwrap();
        assert!(!p.allows(Access::Configure, "q"));
        assert!(p.allows(Access::Write, "x-1"));
        assert!(!p.allows(Access::Write, "y-x-1"));
        assert!(p.allows(Access::Read, "anything"));
    }

    #[test]
    fn topic_patterns_expand_user_and_vhost_escaped() {
        let t = TopicPermission::new("a.b", "v/1", "^{username}\\.", "^{vhost}$").unwrap();
        assert!(t.allows(Access::Write, "a.b.x"));
        assert!(
            !t.allows(Access::Write, "aXb.x"),
            "the dot in the name is literal"
        );
        assert!(t.allows(Access::Read, "v/1"));
        assert!(!t.allows(Access::Read, "v/12"));
    }
}
