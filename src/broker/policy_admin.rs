//! Setting and clearing policies and operator policies through the
//! broker: the Rust API the HTTP API, the CLI and definitions imports call.
//!
//! Each change is validated (a refusal is [`AccessError::Invalid`] with
//! RabbitMQ's reason: "Validation failed", a blank line, the reason), made
//! durable (written and flushed) before the call returns, applied to the
//! vhost's queues and exchanges at once, and audited. Which policy wins and
//! how it reaches a queue is `vhost_policies`' business.

use serde_json::json;

use super::audit::Actor;
use super::policies::PolicyKind;
use super::vhost_policies::SetPolicyError;
use super::{AccessError, Broker};
use crate::store::PolicyRecord;

impl Broker {
    /// Add or replace a policy in `vhost` (`record.vhost` is ignored).
    pub fn set_policy(
        &self,
        vhost: &str,
        record: PolicyRecord,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        self.set_policy_of(PolicyKind::User, vhost, record, actor)
    }

    /// Remove a policy; `NotFound` if `vhost` has none of that name.
    pub fn clear_policy(&self, vhost: &str, name: &str, actor: &Actor) -> Result<(), AccessError> {
        self.clear_policy_of(PolicyKind::User, vhost, name, actor)
    }

    /// The policies of one vhost, or of all (by vhost, then name).
    pub fn policies(&self, vhost: Option<&str>) -> Vec<PolicyRecord> {
        self.policies_of(PolicyKind::User, vhost)
    }

    /// Add or replace an operator policy: it may only set limits and TTLs
    /// (`policies::OPERATOR_KEYS`), and where the queue or its policy sets
    /// the same key the lower value applies.
    pub fn set_operator_policy(
        &self,
        vhost: &str,
        record: PolicyRecord,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        self.set_policy_of(PolicyKind::Operator, vhost, record, actor)
    }

    /// Remove an operator policy; `NotFound` if there is none of that name.
    pub fn clear_operator_policy(
        &self,
        vhost: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        self.clear_policy_of(PolicyKind::Operator, vhost, name, actor)
    }

    /// The operator policies of one vhost, or of all.
    pub fn operator_policies(&self, vhost: Option<&str>) -> Vec<PolicyRecord> {
        self.policies_of(PolicyKind::Operator, vhost)
    }

    fn set_policy_of(
        &self,
        kind: PolicyKind,
        vhost: &str,
        mut record: PolicyRecord,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let v = self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        if record.name.is_empty() {
            return Err(AccessError::Invalid("policy name must not be empty".into()));
        }
        record.vhost = vhost.to_string();
        let audited = json!({
            "vhost": vhost,
            "name": record.name,
            "pattern": record.pattern,
            "apply-to": record.apply_to,
            "priority": record.priority,
            "definition": record.definition,
        });
        let _ = v.set_policy_of(kind, record).map_err(|e| match e {
            SetPolicyError::Invalid(e) => {
                AccessError::Invalid(format!("Validation failed\n\n{}\n", e.reason))
            }
            SetPolicyError::Store(e) => AccessError::Store(e),
        })?;
        self.store.flush_now()?;
        // RabbitMQ announces operator policies as `policy.set` too.
        self.events
            .emit_json("policy.set", &actor.user, || audited.clone());
        self.audit.record(&event(kind, "set"), Some(actor), audited);
        Ok(())
    }

    fn clear_policy_of(
        &self,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let v = self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        if !v.clear_policy_of(kind, name)? {
            return Err(AccessError::NotFound(format!(
                "no {} '{name}' in vhost '{vhost}'",
                match kind {
                    PolicyKind::User => "policy",
                    PolicyKind::Operator => "operator policy",
                }
            )));
        }
        self.store.flush_now()?;
        self.audit.record(
            &event(kind, "cleared"),
            Some(actor),
            json!({"vhost": vhost, "name": name}),
        );
        let cleared = match kind {
            PolicyKind::User => "policy.cleared",
            PolicyKind::Operator => "operator.policy.cleared",
        };
        self.events.emit_json(
            cleared,
            &actor.user,
            || json!({"vhost": vhost, "name": name}),
        );
        Ok(())
    }

    fn policies_of(&self, kind: PolicyKind, vhost: Option<&str>) -> Vec<PolicyRecord> {
        let mut vhosts = match vhost {
            Some(name) => self.vhost(name).into_iter().collect(),
            None => self.vhosts(),
        };
        vhosts.sort_by(|a, b| a.name.cmp(&b.name));
        vhosts
            .iter()
            .flat_map(|v| match kind {
                PolicyKind::User => v.policies(),
                PolicyKind::Operator => v.operator_policies(),
            })
            .collect()
    }
}

fn event(kind: PolicyKind, what: &str) -> String {
    match kind {
        PolicyKind::User => format!("policy.{what}"),
        PolicyKind::Operator => format!("operator.policy.{what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::Value;

    fn record(name: &str, definition: Value) -> PolicyRecord {
        PolicyRecord {
            vhost: String::new(),
            name: name.into(),
            pattern: "^q".into(),
            apply_to: "queues".into(),
            priority: 0,
            definition: definition.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn policies_are_validated_kept_listed_and_cleared() {
        let b = Broker::ephemeral(Config::ephemeral());
        let actor = Actor::internal();
        let e = b
            .set_policy("/", record("p", json!({"max-length": -1})), &actor)
            .unwrap_err();
        match e {
            AccessError::Invalid(text) => assert_eq!(
                text,
                "Validation failed\n\n-1 is not a valid maximum length\n"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.set_policy("nope", record("p", json!({"max-length": 1})), &actor),
            Err(AccessError::NotFound(_))
        ));
        b.set_policy("/", record("p", json!({"max-length": 1})), &actor)
            .unwrap();
        let listed = b.policies(None);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].vhost, "/");
        assert_eq!(b.policies(Some("/")), listed);
        assert!(b.policies(Some("nope")).is_empty());
        assert!(b.operator_policies(None).is_empty());
        b.clear_policy("/", "p", &actor).unwrap();
        assert!(matches!(
            b.clear_policy("/", "p", &actor),
            Err(AccessError::NotFound(_))
        ));
    }

    #[test]
    fn operator_policies_refuse_other_keys() {
        let b = Broker::ephemeral(Config::ephemeral());
        let actor = Actor::internal();
        let e = b
            .set_operator_policy(
                "/",
                record("op", json!({"dead-letter-exchange": "x"})),
                &actor,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised"),
            "{e}"
        );
        b.set_operator_policy("/", record("op", json!({"max-length": 2})), &actor)
            .unwrap();
        assert_eq!(b.operator_policies(Some("/")).len(), 1);
        assert!(b.policies(None).is_empty());
        b.clear_operator_policy("/", "op", &actor).unwrap();
        assert!(b.operator_policies(None).is_empty());
    }
}
