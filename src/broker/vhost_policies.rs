//! Applying policies in a vhost: its set of policies and of operator
//! policies, which of each applies to each queue and exchange, and
//! re-applying them when a set changes.
//!
//! What a policy is, how one is validated and which wins among several is
//! `policies`' business; this file only holds a vhost's sets and hands the
//! winners to its queues and exchanges (how a queue combines the two is
//! `QueueSettings::merge`'s). Policy changes are serialised with topology
//! changes by the `topology` lock, so a queue declared meanwhile cannot
//! miss one. Nothing here flushes the store: the broker-level calls do.

use std::sync::Arc;

use amq_protocol::types::ShortString;
use parking_lot::RwLock;
use serde_json::{Map, Value};

use super::policies::{self, Policy, PolicyError, PolicyKind};
use super::vhost::{Durability, VHost};
use crate::exchange::Exchange;
use crate::queue::args::{AppliedPolicies, QueueType};
use crate::store::{PolicyRecord, StoreError};

/// Why a policy could not be set.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetPolicyError {
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The policy and operator policy that apply to one queue.
#[derive(Clone, Debug, Default)]
pub(super) struct Winners {
    pub policy: Option<Arc<Policy>>,
    pub operator: Option<Arc<Policy>>,
}

impl Winners {
    pub fn applied(&self) -> AppliedPolicies<'_> {
        AppliedPolicies {
            policy: self.policy.as_ref().map(|p| (p.name(), &p.queue)),
            operator: self.operator.as_ref().map(|p| (p.name(), &p.queue)),
        }
    }
}

impl VHost {
    pub(super) fn queue_policies(&self, name: &str, kind: QueueType) -> Winners {
        let pick = |set: &RwLock<Vec<Arc<Policy>>>| {
            let set = set.read();
            policies::winner(set.iter().filter(|p| p.applies_to_queue(name, kind))).cloned()
        };
        Winners {
            policy: pick(&self.policies),
            operator: pick(&self.operator_policies),
        }
    }

    /// The name and definition of the policy that applies to exchange
    /// `name`, if one does (federation links read their keys from it).
    pub fn exchange_policy_definition(&self, name: &str) -> Option<(String, Map<String, Value>)> {
        let set = self.policies.read();
        policies::winner(set.iter().filter(|p| p.applies_to_exchange(name)))
            .map(|p| (p.name().to_string(), p.record.definition.clone()))
    }

    /// The name and definition of the policy that applies to queue `name`.
    pub fn queue_policy_definition(
        &self,
        name: &str,
        kind: QueueType,
    ) -> Option<(String, Map<String, Value>)> {
        self.queue_policies(name, kind)
            .policy
            .map(|p| (p.name().to_string(), p.record.definition.clone()))
    }

    fn set_of(&self, kind: PolicyKind) -> &RwLock<Vec<Arc<Policy>>> {
        match kind {
            PolicyKind::User => &self.policies,
            PolicyKind::Operator => &self.operator_policies,
        }
    }

    /// The policies of this vhost.
    pub fn policies(&self) -> Vec<PolicyRecord> {
        self.records(PolicyKind::User)
    }

    /// The operator policies of this vhost.
    pub fn operator_policies(&self) -> Vec<PolicyRecord> {
        self.records(PolicyKind::Operator)
    }

    fn records(&self, kind: PolicyKind) -> Vec<PolicyRecord> {
        let mut out: Vec<PolicyRecord> = self
            .set_of(kind)
            .read()
            .iter()
            .map(|p| p.record.clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Add or replace a policy and apply it to the queues it matches. The
    /// error (a 400 in the admin API) says what is wrong with it.
    pub fn set_policy(&self, record: PolicyRecord) -> Result<Durability, String> {
        self.set_policy_of(PolicyKind::User, record)
            .map_err(|e| e.to_string())
    }

    /// Remove a policy; false if there was none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<bool, String> {
        self.clear_policy_of(PolicyKind::User, name)
            .map_err(|e| e.to_string())
    }

    /// Add or replace a policy or operator policy, written to the store
    /// (not flushed) and applied.
    pub(super) fn set_policy_of(
        &self,
        kind: PolicyKind,
        record: PolicyRecord,
    ) -> Result<Durability, SetPolicyError> {
        let policy = Arc::new(Policy::of_kind(record, kind)?);
        let _topology = self.topology.lock();
        match kind {
            PolicyKind::User => self.store().put_policy(&policy.record),
            PolicyKind::Operator => self.store().put_operator_policy(&policy.record),
        }?;
        {
            let mut set = self.set_of(kind).write();
            set.retain(|p| p.name() != policy.name());
            set.push(policy);
        }
        self.apply_policies();
        Ok(Durability::Durable)
    }

    /// Remove a policy or operator policy; false if there was none of that
    /// name.
    pub(super) fn clear_policy_of(&self, kind: PolicyKind, name: &str) -> Result<bool, StoreError> {
        let _topology = self.topology.lock();
        let removed = {
            let mut set = self.set_of(kind).write();
            let before = set.len();
            set.retain(|p| p.name() != name);
            set.len() != before
        };
        if removed {
            match kind {
                PolicyKind::User => self.store().delete_policy(&self.name, name),
                PolicyKind::Operator => self.store().delete_operator_policy(&self.name, name),
            }?;
            self.apply_policies();
        }
        Ok(removed)
    }

    /// Re-evaluate which policies apply to every queue and exchange.
    fn apply_policies(&self) {
        for q in self.queues() {
            let winners = self.queue_policies(q.name(), q.config.args.queue_type);
            q.apply_policy(winners.applied());
        }
        for e in self.exchanges() {
            self.apply_exchange_policy(&e);
        }
    }

    pub(super) fn apply_exchange_policy(&self, exchange: &Exchange) {
        let policies = self.policies.read();
        let policy = policies::winner(
            policies
                .iter()
                .filter(|p| p.applies_to_exchange(exchange.name.as_str())),
        );
        exchange.set_policy_alternate(policy.and_then(|p| {
            let ae = p.alternate_exchange.as_ref()?;
            Some((p.name().to_string(), ShortString::from(ae.clone())))
        }));
        exchange.set_policy_schema(policy.and_then(|p| p.queue.schema.clone()));
    }
}
