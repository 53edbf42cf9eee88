//! Durable definitions: vhosts (with their metadata), users, permissions,
//! policies and operator policies, runtime and global parameters,
//! exchanges, queues and bindings, one JSON record per key in the
//! `definitions` tree.
//!
//! Keys start with a one-letter kind, then the parts that name the record
//! (`definition_keys` has the layout): `v` vhost, `u` user, `p` user and
//! vhost, `t` user, vhost and exchange (topic permissions), `l` vhost
//! (vhost limits), `P` vhost and name (policies), `O` vhost and name
//! (operator policies), `r` component, vhost and name (runtime parameters),
//! `g` name (global parameters), `e` vhost and name, `q` vhost and name,
//! and `b` vhost, source, `q|e` + destination, routing key and arguments
//! (bindings). Only keys are built from records; reading scans a kind's
//! range and decodes the values, so it never parses a key.
//!
//! A vhost's record was once its name alone (a JSON string); such records
//! still read, as a vhost without metadata.

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

use super::definition_keys::{binding_key, key};
use super::{Backend, Store, StoreError, StoreResult, Tree};

/// A vhost and its metadata, as RabbitMQ's `PUT /api/vhosts/{name}` sets
/// them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredVhost")]
pub struct VhostRecord {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// `classic`, `quorum` or `stream`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
}

/// What a vhost key holds: the full record, or the bare name older
/// stores wrote.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredVhost {
    Name(String),
    Record {
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        default_queue_type: Option<String>,
    },
}

impl From<StoredVhost> for VhostRecord {
    fn from(v: StoredVhost) -> VhostRecord {
        match v {
            StoredVhost::Name(name) => VhostRecord {
                name,
                ..Default::default()
            },
            StoredVhost::Record {
                name,
                description,
                tags,
                default_queue_type,
            } => VhostRecord {
                name,
                description,
                tags,
                default_queue_type,
            },
        }
    }
}

/// A runtime parameter (RabbitMQ's `/api/parameters/{component}/{vhost}/{name}`):
/// shovels, federation upstreams and the like, whose value the component
/// that owns it interprets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterRecord {
    pub component: String,
    pub vhost: String,
    pub name: String,
    pub value: serde_json::Value,
}

/// A broker-wide parameter (`internal_cluster_id`, `cluster_name`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalParameterRecord {
    pub name: String,
    pub value: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    /// RabbitMQ's name for the hash's algorithm. Records written before it
    /// was stored are SHA-256, the only algorithm Warren used then.
    #[serde(default = "default_hashing_algorithm")]
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    /// RabbitMQ's user limits (`max-connections`, `max-channels`).
    #[serde(default)]
    pub limits: serde_json::Map<String, serde_json::Value>,
}

fn default_hashing_algorithm() -> String {
    "rabbit_password_hashing_sha256".to_string()
}

/// Routing-key patterns of one user on one topic exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicPermissionRecord {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// RabbitMQ's `vhost-limits` of one vhost (`max-connections`, `max-queues`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VhostLimitsRecord {
    pub vhost: String,
    pub limits: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PermissionRecord {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A policy as the management API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    pub priority: i64,
    pub definition: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// A delayed-message exchange's store uid for its held messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_uid: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub vhost: String,
    pub name: String,
    /// Prefix of this queue's message keys.
    pub uid: u64,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// Deliveries paused by an operator (kept across restarts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// Everything recovered at boot.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    pub vhosts: Vec<VhostRecord>,
    pub users: Vec<UserRecord>,
    pub permissions: Vec<PermissionRecord>,
    pub topic_permissions: Vec<TopicPermissionRecord>,
    pub vhost_limits: Vec<VhostLimitsRecord>,
    pub policies: Vec<PolicyRecord>,
    pub operator_policies: Vec<PolicyRecord>,
    pub parameters: Vec<ParameterRecord>,
    pub global_parameters: Vec<GlobalParameterRecord>,
    pub exchanges: Vec<ExchangeRecord>,
    pub queues: Vec<QueueRecord>,
    pub bindings: Vec<BindingRecord>,
}

fn encode<T: Serialize>(record: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| StoreError::corrupt("definition", e))
}

fn scan_all<T: for<'de> Deserialize<'de>>(
    backend: &dyn Backend,
    kind: u8,
    what: &'static str,
) -> StoreResult<Vec<T>> {
    let from = [kind];
    let to = [kind + 1];
    let mut out = Vec::new();
    let mut start = from.to_vec();
    loop {
        let page = backend.scan(Tree::Definitions, &start, &to, 1024)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        start = last.clone();
        start.push(0);
        for (_, v) in &page {
            out.push(serde_json::from_slice(v).map_err(|e| StoreError::corrupt(what, e))?);
        }
    }
    Ok(out)
}

/// The highest queue uid in use, so new queues never reuse one.
pub(super) fn last_queue_uid(backend: &dyn Backend) -> StoreResult<Option<u64>> {
    let queues: Vec<QueueRecord> = scan_all(backend, b'q', "queue")?;
    Ok(queues.iter().map(|q| q.uid).max())
}

impl Store {
    fn put_definition(&self, key: Vec<u8>, value: StoreResult<Vec<u8>>) -> StoreResult<()> {
        if !self.durable {
            return Ok(());
        }
        let value = value?;
        self.note(self.backend.insert(Tree::Definitions, &key, &value))
    }

    fn delete_definition(&self, key: Vec<u8>) -> StoreResult<()> {
        if !self.durable {
            return Ok(());
        }
        self.note(self.backend.remove(Tree::Definitions, &key))
    }

    pub fn put_vhost(&self, vhost: &VhostRecord) -> StoreResult<()> {
        self.put_definition(key(b'v', &[&vhost.name]), encode(vhost))
    }

    pub fn delete_vhost(&self, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'v', &[name]))
    }

    pub fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.put_definition(key(b'u', &[&user.name]), encode(user))
    }

    pub fn delete_user(&self, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'u', &[name]))
    }

    pub fn put_permission(&self, p: &PermissionRecord) -> StoreResult<()> {
        self.put_definition(key(b'p', &[&p.user, &p.vhost]), encode(p))
    }

    pub fn delete_permission(&self, user: &str, vhost: &str) -> StoreResult<()> {
        self.delete_definition(key(b'p', &[user, vhost]))
    }

    pub fn put_topic_permission(&self, t: &TopicPermissionRecord) -> StoreResult<()> {
        self.put_definition(key(b't', &[&t.user, &t.vhost, &t.exchange]), encode(t))
    }

    pub fn delete_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
    ) -> StoreResult<()> {
        self.delete_definition(key(b't', &[user, vhost, exchange]))
    }

    pub fn put_vhost_limits(&self, l: &VhostLimitsRecord) -> StoreResult<()> {
        self.put_definition(key(b'l', &[&l.vhost]), encode(l))
    }

    pub fn delete_vhost_limits(&self, vhost: &str) -> StoreResult<()> {
        self.delete_definition(key(b'l', &[vhost]))
    }

    pub fn put_policy(&self, p: &PolicyRecord) -> StoreResult<()> {
        self.put_definition(key(b'P', &[&p.vhost, &p.name]), encode(p))
    }

    pub fn delete_policy(&self, vhost: &str, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'P', &[vhost, name]))
    }

    pub fn put_operator_policy(&self, p: &PolicyRecord) -> StoreResult<()> {
        self.put_definition(key(b'O', &[&p.vhost, &p.name]), encode(p))
    }

    pub fn delete_operator_policy(&self, vhost: &str, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'O', &[vhost, name]))
    }

    pub fn put_parameter(&self, p: &ParameterRecord) -> StoreResult<()> {
        self.put_definition(key(b'r', &[&p.component, &p.vhost, &p.name]), encode(p))
    }

    pub fn delete_parameter(&self, component: &str, vhost: &str, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'r', &[component, vhost, name]))
    }

    pub fn put_global_parameter(&self, p: &GlobalParameterRecord) -> StoreResult<()> {
        self.put_definition(key(b'g', &[&p.name]), encode(p))
    }

    pub fn delete_global_parameter(&self, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'g', &[name]))
    }

    pub fn put_exchange(&self, e: &ExchangeRecord) -> StoreResult<()> {
        self.put_definition(key(b'e', &[&e.vhost, &e.name]), encode(e))
    }

    pub fn delete_exchange(&self, vhost: &str, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'e', &[vhost, name]))
    }

    pub fn put_queue(&self, q: &QueueRecord) -> StoreResult<()> {
        self.put_definition(key(b'q', &[&q.vhost, &q.name]), encode(q))
    }

    pub fn delete_queue(&self, vhost: &str, name: &str) -> StoreResult<()> {
        self.delete_definition(key(b'q', &[vhost, name]))
    }

    pub fn put_binding(&self, b: &BindingRecord) -> StoreResult<()> {
        self.put_definition(binding_key(b), encode(b))
    }

    pub fn delete_binding(&self, b: &BindingRecord) -> StoreResult<()> {
        self.delete_definition(binding_key(b))
    }

    /// Read every definition (at boot).
    pub fn load_definitions(&self) -> StoreResult<Definitions> {
        let b = self.backend.as_ref();
        Ok(Definitions {
            vhosts: scan_all(b, b'v', "vhost")?,
            users: scan_all(b, b'u', "user")?,
            permissions: scan_all(b, b'p', "permission")?,
            topic_permissions: scan_all(b, b't', "topic permission")?,
            vhost_limits: scan_all(b, b'l', "vhost limits")?,
            policies: scan_all(b, b'P', "policy")?,
            operator_policies: scan_all(b, b'O', "operator policy")?,
            parameters: scan_all(b, b'r', "parameter")?,
            global_parameters: scan_all(b, b'g', "global parameter")?,
            exchanges: scan_all(b, b'e', "exchange")?,
            queues: scan_all(b, b'q', "queue")?,
            bindings: scan_all(b, b'b', "binding")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn definitions_round_trip_and_delete() {
        let store = Store::in_memory_for_tests();
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
        store.put_vhost(&vhost("/")).unwrap();
        store
            .put_queue(&QueueRecord {
                vhost: "/".into(),
                name: "q".into(),
                uid: 7,
                auto_delete: false,
                arguments: args.clone(),
                paused: false,
            })
            .unwrap();
        let binding = BindingRecord {
            vhost: "/".into(),
            source: "amq.direct".into(),
            destination: "q".into(),
            destination_is_queue: true,
            routing_key: "k".into(),
            arguments: args.clone(),
        };
        store.put_binding(&binding).unwrap();
        let d = store.load_definitions().unwrap();
        assert_eq!(d.vhosts, vec![vhost("/")]);
        assert_eq!(d.queues[0].arguments, args);
        assert_eq!(d.bindings, vec![binding.clone()]);
        assert_eq!(last_queue_uid(store.backend.as_ref()).unwrap(), Some(7));
        store.delete_binding(&binding).unwrap();
        store.delete_queue("/", "q").unwrap();
        let d = store.load_definitions().unwrap();
        assert!(d.bindings.is_empty() && d.queues.is_empty());
    }

    fn vhost(name: &str) -> VhostRecord {
        VhostRecord {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_vhost_stored_as_its_bare_name_reads_without_metadata() {
        let store = Store::in_memory_for_tests();
        store
            .backend
            .insert(Tree::Definitions, b"vold", br#""old""#)
            .unwrap();
        let new = VhostRecord {
            name: "new".into(),
            description: "fresh".into(),
            tags: vec!["a".into(), "b".into()],
            default_queue_type: Some("quorum".into()),
        };
        store.put_vhost(&new).unwrap();
        let d = store.load_definitions().unwrap();
        assert_eq!(d.vhosts, vec![new, vhost("old")]);
        let partial: VhostRecord = serde_json::from_str(r#"{"name":"p"}"#).unwrap();
        assert_eq!(partial, vhost("p"));
        assert!(serde_json::from_str::<VhostRecord>("3").is_err());
    }

    #[test]
    fn parameters_and_operator_policies_round_trip_and_delete() {
        let store = Store::in_memory_for_tests();
        let p = ParameterRecord {
            component: "federation-upstream".into(),
            vhost: "/".into(),
            name: "up".into(),
            value: serde_json::json!({"uri": "amqp://h", "expires": 1000}),
        };
        let g = GlobalParameterRecord {
            name: "cluster_name".into(),
            value: "c1".into(),
        };
        let op = PolicyRecord {
            vhost: "/".into(),
            name: "cap".into(),
            pattern: ".*".into(),
            apply_to: "queues".into(),
            priority: 0,
            definition: serde_json::from_str(r#"{"max-length": 2}"#).unwrap(),
        };
        store.put_parameter(&p).unwrap();
        store.put_global_parameter(&g).unwrap();
        store.put_operator_policy(&op).unwrap();
        let d = store.load_definitions().unwrap();
        assert_eq!(d.parameters, vec![p]);
        assert_eq!(d.global_parameters, vec![g]);
        assert_eq!(d.operator_policies, vec![op]);
        assert!(d.policies.is_empty());
        store
            .delete_parameter("federation-upstream", "/", "up")
            .unwrap();
        store.delete_global_parameter("cluster_name").unwrap();
        store.delete_operator_policy("/", "cap").unwrap();
        let d = store.load_definitions().unwrap();
        assert!(d.parameters.is_empty() && d.global_parameters.is_empty());
        assert!(d.operator_policies.is_empty());
    }

    #[test]
    fn a_user_record_from_before_algorithms_and_limits_reads() {
        let old = br#"{"name":"bob","password_hash":"x","tags":["management"]}"#;
        let u: UserRecord = serde_json::from_slice(old).unwrap();
        assert_eq!(u.hashing_algorithm, "rabbit_password_hashing_sha256");
        assert!(u.limits.is_empty());
    }

    #[test]
    fn access_records_round_trip_and_delete() {
        let store = Store::in_memory_for_tests();
        let t = TopicPermissionRecord {
            user: "bob".into(),
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            write: "^a".into(),
            read: ".*".into(),
        };
        store.put_topic_permission(&t).unwrap();
        let mut limits = serde_json::Map::new();
        limits.insert("max-queues".into(), 3.into());
        let l = VhostLimitsRecord {
            vhost: "/".into(),
            limits,
        };
        store.put_vhost_limits(&l).unwrap();
        let d = store.load_definitions().unwrap();
        assert_eq!(d.topic_permissions, vec![t]);
        assert_eq!(d.vhost_limits, vec![l]);
        store
            .delete_topic_permission("bob", "/", "amq.topic")
            .unwrap();
        store.delete_vhost_limits("/").unwrap();
        let d = store.load_definitions().unwrap();
        assert!(d.topic_permissions.is_empty() && d.vhost_limits.is_empty());
    }

    #[test]
    fn an_ephemeral_store_keeps_nothing() {
        let store = Store::ephemeral();
        store.put_vhost(&vhost("/")).unwrap();
        assert!(store.load_definitions().unwrap().vhosts.is_empty());
    }
}
