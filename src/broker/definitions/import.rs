//! Importing a definitions document: parse it, check all of it, and only
//! then apply it, in RabbitMQ's order — vhosts, users, permissions, topic
//! permissions, limits, parameters, policies, exchanges, queues, bindings —
//! so each item finds what it refers to.
//!
//! As in RabbitMQ, users, permissions, limits, parameters and policies in
//! the document replace what the broker holds under the same name (a
//! user's password and tags are the file's), while exchanges, queues and
//! bindings that exist are left as they are ("will not overwrite anything
//! already in the broker") — provided they are equivalent; an inequivalent
//! one refuses the whole document (RabbitMQ 3.10 ignores the difference
//! silently). A vhost entry with a description, tags or default queue type
//! sets them; one with a bare name leaves an existing vhost's alone.
//! Each change goes through the broker's own calls, so it is stored,
//! applied and audited as if made one by one, and the import itself is
//! audited with its summary.

use serde_json::{Value, json};

use super::check::{Fate, check, declare_exchange, declare_queue};
use super::parse::{Plan, parse};
use super::{DefinitionsError, DefinitionsErrorKind, ImportSummary};
use crate::broker::audit::Actor;
use crate::broker::{AccessError, Broker};
use crate::error::AmqpError;
use crate::queue::ConnectionId;

/// Imports declare nothing exclusive: no connection owns what they make.
const NO_CONNECTION: ConnectionId = 0;

type Result<T> = std::result::Result<T, DefinitionsError>;

fn access(at: &str, e: AccessError) -> DefinitionsError {
    match e {
        AccessError::Invalid(reason) => DefinitionsError::invalid(at, reason),
        other => DefinitionsError::internal(at, other.to_string()),
    }
}

fn amqp(at: &str, e: AmqpError) -> DefinitionsError {
    DefinitionsError::internal(at, e.reply_text())
}

impl Broker {
    /// Import a definitions document: the whole broker's (`vhost` `None`),
    /// or one vhost's (`Some`: every item goes to that vhost, which must
    /// exist; users, vhosts and permissions in the document are ignored).
    /// All of it is checked before anything changes; the first fault is
    /// returned with its location and nothing is imported.
    pub fn import_definitions(
        &self,
        defs: &Value,
        vhost: Option<&str>,
        actor: &Actor,
    ) -> Result<ImportSummary> {
        let _one_at_a_time = self.importing.lock();
        if let Some(v) = vhost
            && self.vhost(v).is_none()
        {
            return Err(DefinitionsError {
                location: "vhost".into(),
                reason: format!("no such vhost '{v}'"),
                kind: DefinitionsErrorKind::NotFound,
            });
        }
        let plan = parse(defs, vhost)?;
        let verdict = check(self, &plan)?;
        let mut summary = ImportSummary {
            skipped: verdict.skipped.clone(),
            ..Default::default()
        };
        self.apply_access(&plan, actor, &mut summary)?;
        self.apply_topology(&plan, &verdict, &mut summary, &actor.user)?;
        self.store
            .flush_now()
            .map_err(|e| DefinitionsError::internal("definitions", e.to_string()))?;
        self.audit.record(
            "definitions.imported",
            Some(actor),
            json!({"vhost": vhost, "summary": summary}),
        );
        tracing::info!(
            vhosts = summary.vhosts,
            users = summary.users,
            exchanges = summary.exchanges,
            queues = summary.queues,
            bindings = summary.bindings,
            unchanged = summary.unchanged,
            skipped = summary.skipped.len(),
            "imported definitions"
        );
        Ok(summary)
    }

    fn apply_access(&self, plan: &Plan, actor: &Actor, summary: &mut ImportSummary) -> Result<()> {
        for v in &plan.vhosts {
            let (at, item) = (&v.at, &v.item);
            match &item.metadata {
                Some(m) => self.create_vhost_with(&item.name, m.clone(), actor),
                None => self.create_vhost(&item.name, actor),
            }
            .map_err(|e| access(at, e))?;
            summary.vhosts += 1;
        }
        for u in &plan.users {
            let (at, item) = (&u.at, &u.item);
            self.put_user(&item.name, item.password.clone(), item.tags.clone(), actor)
                .map_err(|e| access(at, e))?;
            if let Some(limits) = item.limits {
                self.set_user_limits(&item.name, limits, actor)
                    .map_err(|e| access(at, e))?;
            }
            summary.users += 1;
        }
        for p in &plan.permissions {
            let i = &p.item;
            self.set_permissions(&i.user, &i.vhost, &i.configure, &i.write, &i.read, actor)
                .map_err(|e| access(&p.at, e))?;
            summary.permissions += 1;
        }
        for t in &plan.topic_permissions {
            let i = &t.item;
            self.set_topic_permissions(&i.user, &i.vhost, &i.exchange, &i.write, &i.read, actor)
                .map_err(|e| access(&t.at, e))?;
            summary.topic_permissions += 1;
        }
        for l in &plan.vhost_limits {
            let (vhost, limits) = &l.item;
            self.set_vhost_limits(vhost, *limits, actor)
                .map_err(|e| access(&l.at, e))?;
            summary.vhost_limits += 1;
        }
        for p in &plan.parameters {
            let i = &p.item;
            self.set_parameter(&i.component, &i.vhost, &i.name, i.value.clone(), actor)
                .map_err(|e| access(&p.at, e))?;
            summary.parameters += 1;
        }
        for g in &plan.global_parameters {
            self.set_global_parameter(&g.item.name, g.item.value.clone(), actor)
                .map_err(|e| access(&g.at, e))?;
            summary.global_parameters += 1;
        }
        for p in &plan.policies {
            self.set_policy(&p.item.vhost, p.item.clone(), actor)
                .map_err(|e| access(&p.at, e))?;
            summary.policies += 1;
        }
        for p in &plan.operator_policies {
            self.set_operator_policy(&p.item.vhost, p.item.clone(), actor)
                .map_err(|e| access(&p.at, e))?;
            summary.operator_policies += 1;
        }
        Ok(())
    }

    fn apply_topology(
        &self,
        plan: &Plan,
        verdict: &super::check::Verdict,
        summary: &mut ImportSummary,
        by: &str,
    ) -> Result<()> {
        let vhost = |at: &str, name: &str| {
            self.vhost(name).ok_or_else(|| {
                DefinitionsError::internal(at, format!("vhost '{name}' was deleted meanwhile"))
            })
        };
        for (x, fate) in plan.exchanges.iter().zip(&verdict.exchanges) {
            match fate {
                Fate::Create => {
                    let v = vhost(&x.at, &x.item.vhost)?;
                    let _ = v
                        .declare_exchange(&declare_exchange(&x.item), || Ok(()), by)
                        .map_err(|e| amqp(&x.at, e))?;
                    summary.exchanges += 1;
                }
                Fate::Exists => summary.unchanged += 1,
                Fate::Skip => {}
            }
        }
        for (q, fate) in plan.queues.iter().zip(&verdict.queues) {
            match fate {
                Fate::Create => {
                    let v = vhost(&q.at, &q.item.vhost)?;
                    v.declare_queue(NO_CONNECTION, &declare_queue(&q.item), |_| Ok(()), by)
                        .map_err(|e| amqp(&q.at, e))?;
                    summary.queues += 1;
                }
                Fate::Exists => summary.unchanged += 1,
                Fate::Skip => {}
            }
        }
        for (b, fate) in plan.bindings.iter().zip(&verdict.bindings) {
            match fate {
                Fate::Create => {
                    let i = &b.item;
                    let v = vhost(&b.at, &i.vhost)?;
                    let bound = if i.destination_is_queue {
                        v.bind_queue(
                            NO_CONNECTION,
                            &i.destination,
                            &i.source,
                            &i.routing_key,
                            &i.arguments,
                            by,
                        )
                    } else {
                        v.bind_exchange(&i.destination, &i.source, &i.routing_key, &i.arguments, by)
                    };
                    let _ = bound.map_err(|e| amqp(&b.at, e))?;
                    summary.bindings += 1;
                }
                Fate::Exists => summary.unchanged += 1,
                Fate::Skip => {}
            }
        }
        Ok(())
    }
}
