//! Applying policies in a vhost: the set of policies, which one applies to
//! each queue and exchange, and re-applying them when the set changes.
//!
//! What a policy is, how one is validated and which wins among several is
//! `policies`' business; this file only holds a vhost's set and hands the
//! winner to its queues and exchanges. Policy changes are serialised with
//! topology changes by the `topology` lock, so a queue declared meanwhile
//! cannot miss one.

use std::sync::Arc;

use amq_protocol::types::ShortString;

use super::policies::{self, Policy};
use super::vhost::{Durability, VHost};
use crate::exchange::Exchange;
use crate::queue::args::QueueType;
use crate::store::PolicyRecord;

impl VHost {
    pub(super) fn queue_policy(&self, name: &str, kind: QueueType) -> Option<Arc<Policy>> {
        let policies = self.policies.read();
        policies::winner(policies.iter().filter(|p| p.applies_to_queue(name, kind))).cloned()
    }

    /// The policies of this vhost.
    pub fn policies(&self) -> Vec<PolicyRecord> {
        let mut out: Vec<PolicyRecord> = self
            .policies
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
        let policy = Arc::new(Policy::new(record)?);
        let _topology = self.topology.lock();
        self.store()
            .put_policy(&policy.record)
            .map_err(|e| e.to_string())?;
        {
            let mut policies = self.policies.write();
            policies.retain(|p| p.name() != policy.name());
            policies.push(policy);
        }
        self.apply_policies();
        Ok(Durability::Durable)
    }

    /// Remove a policy; false if there was none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<bool, String> {
        let _topology = self.topology.lock();
        let removed = {
            let mut policies = self.policies.write();
            let before = policies.len();
            policies.retain(|p| p.name() != name);
            policies.len() != before
        };
        if removed {
            self.store()
                .delete_policy(&self.name, name)
                .map_err(|e| e.to_string())?;
            self.apply_policies();
        }
        Ok(removed)
    }

    /// Re-evaluate which policy applies to every queue and exchange.
    fn apply_policies(&self) {
        for q in self.queues() {
            let policy = self.queue_policy(q.name(), q.config.args.queue_type);
            q.apply_policy(policy.as_ref().map(|p| (p.name(), &p.queue)));
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
    }
}
