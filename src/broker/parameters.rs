//! Runtime parameters: per-vhost values owned by a component (shovels,
//! federation upstreams, …) and broker-wide global parameters (such as
//! `internal_cluster_id`), as RabbitMQ's `rabbit_runtime_parameters`.
//!
//! Each change is validated, written to the store and flushed, applied in
//! memory and audited, like the calls in `access`. Values are kept as the
//! JSON they came as: the component that owns a parameter interprets it,
//! and until one does (federation and shovels hook in later) any component
//! name is accepted. Two components are not generic: `vhost-limits` is the
//! vhost's limits (handed to [`Broker::set_vhost_limits`]), and `policy` /
//! `operator_policy` have calls of their own.

use std::collections::BTreeMap;

use parking_lot::RwLock;
use serde_json::{Value, json};

use super::audit::Actor;
use super::limits::VhostLimits;
use super::{AccessError, Broker};
use crate::store::{GlobalParameterRecord, ParameterRecord};

/// The global parameter that names the cluster to tools.
pub const CLUSTER_ID: &str = "internal_cluster_id";

/// The global parameter that holds the cluster's name.
pub const CLUSTER_NAME: &str = "cluster_name";

/// The component whose parameter holds a vhost's limits.
pub const VHOST_LIMITS: &str = "vhost-limits";

/// Every runtime and global parameter, by key.
#[derive(Debug, Default)]
pub struct Parameters {
    /// By (component, vhost, name).
    vhost: RwLock<BTreeMap<(String, String, String), Value>>,
    global: RwLock<BTreeMap<String, Value>>,
}

impl Parameters {
    pub(super) fn restore(&self, params: &[ParameterRecord], globals: &[GlobalParameterRecord]) {
        let mut v = self.vhost.write();
        for p in params {
            v.insert(
                (p.component.clone(), p.vhost.clone(), p.name.clone()),
                p.value.clone(),
            );
        }
        let mut g = self.global.write();
        for p in globals {
            g.insert(p.name.clone(), p.value.clone());
        }
    }

    /// Forget a deleted vhost's parameters; returns them.
    pub(super) fn forget_vhost(&self, vhost: &str) -> Vec<ParameterRecord> {
        let mut v = self.vhost.write();
        let gone: Vec<ParameterRecord> = v
            .iter()
            .filter(|((_, vh, _), _)| vh == vhost)
            .map(|((component, vhost, name), value)| ParameterRecord {
                component: component.clone(),
                vhost: vhost.clone(),
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        v.retain(|(_, vh, _), _| vh != vhost);
        gone
    }

    pub(super) fn global(&self, name: &str) -> Option<Value> {
        self.global.read().get(name).cloned()
    }
}

/// `rabbitmq-cluster-id-` and 22 characters of URL-safe base64 (16 random
/// bytes), the form RabbitMQ's `internal_cluster_id` takes.
pub fn new_cluster_id() -> String {
    use base64::Engine;
    let mut raw = [0u8; 16];
    rand::fill(&mut raw);
    format!(
        "rabbitmq-cluster-id-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

impl Broker {
    /// The cluster's name: the `cluster_name` global parameter (`PUT
    /// /api/cluster-name`), or the node's name. Federation tells brokers
    /// apart by it.
    pub fn cluster_name(&self) -> String {
        match self.parameters.global(CLUSTER_NAME) {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => self.default_cluster_name.clone(),
        }
    }

    /// Set a runtime parameter. `component` may be anything but `policy`
    /// and `operator_policy`; `vhost-limits` (name `limits`) sets the
    /// vhost's limits.
    pub fn set_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
        value: Value,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        check_component(component)?;
        if name.is_empty() {
            return Err(AccessError::Invalid(
                "parameter name must not be empty".into(),
            ));
        }
        if self.vhost(vhost).is_none() {
            return Err(Broker::no_vhost(vhost));
        }
        if component == VHOST_LIMITS {
            return self.set_vhost_limits(vhost, vhost_limits(name, &value)?, actor);
        }
        check_value(component, name, &value)?;
        let record = ParameterRecord {
            component: component.into(),
            vhost: vhost.into(),
            name: name.into(),
            value,
        };
        self.store.put_parameter(&record)?;
        self.store.flush_now()?;
        if component == crate::schema::COMPONENT {
            // Checked by `check_value`: it parses.
            let _ = self.schemas.load(vhost, name, &record.value);
        }
        self.parameters.vhost.write().insert(
            (component.into(), vhost.into(), name.into()),
            record.value.clone(),
        );
        self.audit.record(
            "parameter.set",
            Some(actor),
            json!({"component": component, "vhost": vhost, "name": name, "value": record.value}),
        );
        self.events.emit_json(
            "parameter.set",
            &actor.user,
            || json!({"component": component, "vhost": vhost, "name": name, "value": record.value}),
        );
        Ok(())
    }

    /// Clear a runtime parameter; `NotFound` if there is none.
    pub fn clear_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        check_component(component)?;
        if component == VHOST_LIMITS {
            if self
                .vhost(vhost)
                .is_none_or(|v| v.limits() == VhostLimits::default())
            {
                return Err(no_parameter(component, vhost, name));
            }
            return self.set_vhost_limits(vhost, VhostLimits::default(), actor);
        }
        let key = (component.to_string(), vhost.to_string(), name.to_string());
        if !self.parameters.vhost.read().contains_key(&key) {
            return Err(no_parameter(component, vhost, name));
        }
        self.store.delete_parameter(component, vhost, name)?;
        self.store.flush_now()?;
        self.parameters.vhost.write().remove(&key);
        if component == crate::schema::COMPONENT {
            self.schemas.remove(vhost, name);
        }
        self.audit.record(
            "parameter.cleared",
            Some(actor),
            json!({"component": component, "vhost": vhost, "name": name}),
        );
        self.events.emit_json(
            "parameter.cleared",
            &actor.user,
            || json!({"component": component, "vhost": vhost, "name": name}),
        );
        Ok(())
    }

    /// Every runtime parameter (vhost limits and policies excepted), by
    /// component, vhost and name.
    pub fn parameters(&self) -> Vec<ParameterRecord> {
        self.parameters
            .vhost
            .read()
            .iter()
            .map(|((component, vhost, name), value)| ParameterRecord {
                component: component.clone(),
                vhost: vhost.clone(),
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    pub fn set_global_parameter(
        &self,
        name: &str,
        value: Value,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        if name.is_empty() {
            return Err(AccessError::Invalid(
                "parameter name must not be empty".into(),
            ));
        }
        let record = GlobalParameterRecord {
            name: name.into(),
            value,
        };
        self.store.put_global_parameter(&record)?;
        self.store.flush_now()?;
        self.parameters
            .global
            .write()
            .insert(name.into(), record.value.clone());
        self.audit.record(
            "global.parameter.set",
            Some(actor),
            json!({"name": name, "value": record.value}),
        );
        self.events.emit_json(
            "parameter.set",
            &actor.user,
            || json!({"component": "global", "name": name, "value": record.value}),
        );
        Ok(())
    }

    /// Clear a global parameter; `NotFound` if there is none.
    pub fn clear_global_parameter(&self, name: &str, actor: &Actor) -> Result<(), AccessError> {
        if !self.parameters.global.read().contains_key(name) {
            return Err(AccessError::NotFound(format!(
                "no global parameter '{name}'"
            )));
        }
        self.store.delete_global_parameter(name)?;
        self.store.flush_now()?;
        self.parameters.global.write().remove(name);
        self.audit.record(
            "global.parameter.cleared",
            Some(actor),
            json!({"name": name}),
        );
        self.events.emit_json(
            "parameter.cleared",
            &actor.user,
            || json!({"component": "global", "name": name}),
        );
        Ok(())
    }

    /// Every global parameter, by name.
    pub fn global_parameters(&self) -> Vec<GlobalParameterRecord> {
        self.parameters
            .global
            .read()
            .iter()
            .map(|(name, value)| GlobalParameterRecord {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// Give the broker its cluster id if it has none (first boot, or a
    /// store written before Warren kept one). Written, not flushed.
    pub(super) fn ensure_cluster_id(&self) -> crate::store::StoreResult<()> {
        if self.parameters.global(CLUSTER_ID).is_some() {
            return Ok(());
        }
        let record = GlobalParameterRecord {
            name: CLUSTER_ID.into(),
            value: Value::String(new_cluster_id()),
        };
        self.store.put_global_parameter(&record)?;
        self.parameters
            .global
            .write()
            .insert(record.name, record.value);
        Ok(())
    }
}

/// The components Warren knows.
const COMPONENTS: &[&str] = &[
    crate::schema::COMPONENT,
    "federation-upstream",
    "federation-upstream-set",
    "shovel",
    VHOST_LIMITS,
];

pub(super) fn check_component(component: &str) -> Result<(), AccessError> {
    match component {
        "" => Err(AccessError::Invalid("component must not be empty".into())),
        "policy" | "operator_policy" => Err(AccessError::Invalid(format!(
            "component '{component}' is set with the policy calls, not as a parameter"
        ))),
        c if COMPONENTS.contains(&c) => Ok(()),
        c => Err(AccessError::Invalid(format!(
            "Validation failed\n\ncomponent {c} not found\n"
        ))),
    }
}

/// RabbitMQ's check of a value: the shovel and federation components
/// parse it as their plugins do; others take any value.
pub(super) fn check_value(component: &str, name: &str, value: &Value) -> Result<(), AccessError> {
    use super::link_specs::{ShovelSpec, UpstreamSpec, parse_upstream_set_named};
    let checked = match component {
        "shovel" => ShovelSpec::parse_named(name, value).map(drop),
        "federation-upstream" => UpstreamSpec::parse_named(name, value).map(drop),
        "federation-upstream-set" => parse_upstream_set_named(name, value).map(drop),
        crate::schema::COMPONENT => crate::schema::Subject::parse(value).map(drop),
        _ => Ok(()),
    };
    checked.map_err(|reason| AccessError::Invalid(format!("Validation failed\n\n{reason}\n")))
}

fn no_parameter(component: &str, vhost: &str, name: &str) -> AccessError {
    AccessError::NotFound(format!(
        "no parameter '{name}' of component '{component}' in vhost '{vhost}'"
    ))
}

/// A `vhost-limits` parameter's value as limits.
pub(super) fn vhost_limits(name: &str, value: &Value) -> Result<VhostLimits, AccessError> {
    if name != "limits" {
        return Err(AccessError::Invalid(format!(
            "the vhost-limits parameter is named 'limits', not '{name}'"
        )));
    }
    let Value::Object(map) = value else {
        return Err(AccessError::Invalid(format!(
            "vhost limits must be an object, got {value}"
        )));
    };
    for (k, v) in map {
        if !matches!(k.as_str(), "max-connections" | "max-queues") {
            return Err(AccessError::Invalid(format!(
                "unrecognised vhost limit '{k}' (max-connections, max-queues)"
            )));
        }
        if v.as_i64().is_none() {
            return Err(AccessError::Invalid(format!(
                "{k} must be an integer, got {v}"
            )));
        }
    }
    serde_json::from_value(value.clone()).map_err(|e| AccessError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn cluster_ids_look_like_rabbitmqs() {
        let id = new_cluster_id();
        let tail = id.strip_prefix("rabbitmq-cluster-id-").unwrap();
        assert_eq!(tail.len(), 22);
        assert!(
            tail.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(id, new_cluster_id());
    }

    #[test]
    fn parameters_need_a_vhost_and_a_generic_component() {
        let b = Broker::ephemeral(Config::ephemeral());
        let actor = Actor::internal();
        let v = json!({"uri": "amqp://upstream"});
        assert!(matches!(
            b.set_parameter("federation-upstream", "nope", "up", v.clone(), &actor),
            Err(AccessError::NotFound(_))
        ));
        assert!(matches!(
            b.set_parameter("policy", "/", "p", v.clone(), &actor),
            Err(AccessError::Invalid(_))
        ));
        b.set_parameter("federation-upstream", "/", "up", v.clone(), &actor)
            .unwrap();
        assert_eq!(b.parameters().len(), 1);
        assert_eq!(b.parameters()[0].value, v);
        b.set_parameter(
            "vhost-limits",
            "/",
            "limits",
            json!({"max-queues": 3}),
            &actor,
        )
        .unwrap();
        assert_eq!(b.vhost("/").unwrap().limits().max_queues, Some(3));
        assert_eq!(
            b.parameters().len(),
            1,
            "limits are not a generic parameter"
        );
        assert!(
            b.set_parameter("vhost-limits", "/", "limits", json!({"colour": 1}), &actor)
                .is_err()
        );
        b.clear_parameter("vhost-limits", "/", "limits", &actor)
            .unwrap();
        assert_eq!(b.vhost("/").unwrap().limits(), VhostLimits::default());
        b.clear_parameter("federation-upstream", "/", "up", &actor)
            .unwrap();
        assert!(matches!(
            b.clear_parameter("federation-upstream", "/", "up", &actor),
            Err(AccessError::NotFound(_))
        ));
    }

    #[test]
    fn global_parameters_and_the_seeded_cluster_id() {
        let b = Broker::ephemeral(Config::ephemeral());
        let actor = Actor::internal();
        let ids: Vec<_> = b
            .global_parameters()
            .into_iter()
            .filter(|p| p.name == CLUSTER_ID)
            .collect();
        assert_eq!(ids.len(), 1);
        assert!(
            ids[0]
                .value
                .as_str()
                .unwrap()
                .starts_with("rabbitmq-cluster-id-")
        );
        b.set_global_parameter("cluster_name", json!("blue"), &actor)
            .unwrap();
        assert_eq!(b.global_parameters().len(), 2);
        b.clear_global_parameter("cluster_name", &actor).unwrap();
        assert!(matches!(
            b.clear_global_parameter("cluster_name", &actor),
            Err(AccessError::NotFound(_))
        ));
    }
}
