//! Checking a parsed document against itself and against the broker,
//! before anything is changed: every reference resolves (to something that
//! exists or that the document creates), every pattern compiles, every
//! policy and queue declaration is one the broker would accept, and
//! nothing contradicts what exists (an inequivalent queue or exchange of
//! the same name is refused with RabbitMQ's 406 text).
//!
//! The result says, for each exchange, queue and binding, whether applying
//! it creates something, finds it already there, or passes it over.

use std::collections::{HashMap, HashSet};

use amq_protocol::types::AMQPValue;

use super::DefinitionsError;
use super::parse::{At, BindingPlan, ExchangePlan, Plan, QueuePlan};
use crate::broker::Broker;
use crate::broker::auth::TopicPermission;
use crate::broker::bindings::{Binding, DestinationName};
use crate::broker::equivalence::{check_exchange_equivalence, check_queue_equivalence};
use crate::broker::limits::reached;
use crate::broker::parameters::{check_component, check_value};
use crate::broker::pattern::{Pattern, PatternError};
use crate::broker::policies::{Policy, PolicyKind};
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare, is_predeclared};
use crate::exchange::{Exchange, ExchangeKind};
use crate::fields::type_name;
use crate::queue::args::{DeclareFlags, QueueArgs};

type Result<T> = std::result::Result<T, DefinitionsError>;

/// What applying one exchange, queue or binding will do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    Create,
    /// It exists, equivalent (or the document names it twice): left alone.
    Exists,
    /// Passed over (reserved names), with a note in the summary.
    Skip,
}

/// The outcome of a successful check.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    pub exchanges: Vec<Fate>,
    pub queues: Vec<Fate>,
    pub bindings: Vec<Fate>,
    pub skipped: Vec<String>,
}

struct Checker<'a> {
    broker: &'a Broker,
    plan: &'a Plan,
    /// The vhosts there will be: those that exist and those the document
    /// creates.
    vhosts: HashSet<String>,
}

pub(super) fn check(broker: &Broker, plan: &Plan) -> Result<Verdict> {
    let c = Checker {
        broker,
        plan,
        vhosts: broker
            .vhosts()
            .iter()
            .map(|v| v.name.clone())
            .chain(plan.vhosts.iter().map(|v| v.item.name.clone()))
            .collect(),
    };
    let mut verdict = Verdict::default();
    c.check_access()?;
    c.check_policies()?;
    verdict.exchanges = c.check_exchanges(&mut verdict.skipped)?;
    verdict.queues = c.check_queues(&mut verdict.skipped)?;
    verdict.bindings = c.check_bindings(&verdict)?;
    Ok(verdict)
}

/// A refusal's reason without the "Validation failed" wrapper the HTTP
/// API shows.
fn reason(e: crate::broker::AccessError) -> String {
    let text = e.to_string();
    text.strip_prefix("Validation failed\n\n")
        .map(|t| t.trim_end().to_string())
        .unwrap_or(text)
}

fn bad_regex(pattern: &str, e: &PatternError) -> String {
    format!("'{pattern}' is not a valid regular expression: {e}")
}

impl Checker<'_> {
    fn vhost(&self, at: &str, vhost: &str) -> Result<()> {
        if self.vhosts.contains(vhost) {
            Ok(())
        } else {
            Err(DefinitionsError::invalid(
                format!("{at}.vhost"),
                format!("no such vhost '{vhost}'"),
            ))
        }
    }

    fn check_access(&self) -> Result<()> {
        let users: HashSet<String> = self
            .broker
            .users
            .users()
            .into_iter()
            .map(|u| u.name)
            .chain(self.plan.users.iter().map(|u| u.item.name.clone()))
            .collect();
        let user = |at: &str, name: &str| {
            if users.contains(name) {
                Ok(())
            } else {
                Err(DefinitionsError::invalid(
                    format!("{at}.user"),
                    format!("no such user '{name}'"),
                ))
            }
        };
        for At { at, item: p } in &self.plan.permissions {
            user(at, &p.user)?;
            self.vhost(at, &p.vhost)?;
            for (field, pattern) in [
                ("configure", &p.configure),
                ("write", &p.write),
                ("read", &p.read),
            ] {
                Pattern::new(pattern).map_err(|e| {
                    DefinitionsError::invalid(format!("{at}.{field}"), bad_regex(pattern, &e))
                })?;
            }
        }
        for At { at, item: t } in &self.plan.topic_permissions {
            user(at, &t.user)?;
            self.vhost(at, &t.vhost)?;
            for (field, pattern) in [("write", &t.write), ("read", &t.read)] {
                TopicPermission::new(&t.user, &t.vhost, pattern, "").map_err(|e| {
                    DefinitionsError::invalid(format!("{at}.{field}"), bad_regex(pattern, &e))
                })?;
            }
        }
        for At { at, item } in &self.plan.vhost_limits {
            self.vhost(at, &item.0)?;
        }
        for At { at, item } in &self.plan.parameters {
            self.vhost(at, &item.vhost)?;
            check_component(&item.component)
                .map_err(|e| DefinitionsError::invalid(format!("{at}.component"), reason(e)))?;
            check_value(&item.component, &item.name, &item.value)
                .map_err(|e| DefinitionsError::invalid(format!("{at}.value"), reason(e)))?;
        }
        Ok(())
    }

    fn check_policies(&self) -> Result<()> {
        for (kind, policies) in [
            (PolicyKind::User, &self.plan.policies),
            (PolicyKind::Operator, &self.plan.operator_policies),
        ] {
            for At { at, item } in policies {
                self.vhost(at, &item.vhost)?;
                Policy::of_kind(item.clone(), kind).map_err(|e| {
                    DefinitionsError::invalid(format!("{at}.{}", e.field), e.reason)
                })?;
            }
        }
        Ok(())
    }

    fn check_exchanges(&self, skipped: &mut Vec<String>) -> Result<Vec<Fate>> {
        let mut seen: HashMap<(&str, &str), &At<ExchangePlan>> = HashMap::new();
        let mut fates = Vec::with_capacity(self.plan.exchanges.len());
        for entry in &self.plan.exchanges {
            let At { at, item: x } = entry;
            self.vhost(at, &x.vhost)?;
            if is_predeclared(&x.name) || x.name.starts_with("amq.") {
                skipped.push(format!(
                    "{at}: exchange '{}' in vhost '{}' skipped: the default exchange and \
                     names starting with 'amq.' are reserved",
                    x.name, x.vhost
                ));
                fates.push(Fate::Skip);
                continue;
            }
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                return Err(DefinitionsError::invalid(
                    format!("{at}.type"),
                    format!("invalid exchange type '{}'", x.kind),
                ));
            };
            kind.check_arguments(&x.arguments).map_err(|e| {
                DefinitionsError::invalid(format!("{at}.arguments"), e.reply_text())
            })?;
            if let Some(ae) = x.arguments.inner().get("alternate-exchange")
                && !matches!(ae, AMQPValue::LongString(_) | AMQPValue::ShortString(_))
            {
                return Err(DefinitionsError::invalid(
                    format!("{at}.arguments"),
                    format!(
                        "invalid arg 'alternate-exchange' for exchange '{}' in vhost '{}': \
                         {{unacceptable_type,{}}}",
                        x.name,
                        x.vhost,
                        type_name(ae)
                    ),
                ));
            }
            if let Some(first) = seen.get(&(x.vhost.as_str(), x.name.as_str())) {
                if first.item != *x {
                    return Err(DefinitionsError::conflict(
                        at.clone(),
                        format!(
                            "exchange '{}' in vhost '{}' is also at {}, declared differently",
                            x.name, x.vhost, first.at
                        ),
                    ));
                }
                fates.push(Fate::Exists);
                continue;
            }
            seen.insert((&x.vhost, &x.name), entry);
            let current = self
                .broker
                .vhost(&x.vhost)
                .and_then(|v| v.exchange(&x.name));
            match current {
                Some(e) => {
                    check_exchange_equivalence(&e, &declare_exchange(x), &x.vhost)
                        .map_err(|e| DefinitionsError::conflict(at.clone(), e.reply_text()))?;
                    fates.push(Fate::Exists);
                }
                None => fates.push(Fate::Create),
            }
        }
        Ok(fates)
    }

    fn check_queues(&self, skipped: &mut Vec<String>) -> Result<Vec<Fate>> {
        let mut seen: HashMap<(&str, &str), &At<QueuePlan>> = HashMap::new();
        let mut created: HashMap<&str, usize> = HashMap::new();
        let mut fates = Vec::with_capacity(self.plan.queues.len());
        for entry in &self.plan.queues {
            let At { at, item: q } = entry;
            self.vhost(at, &q.vhost)?;
            if q.name.starts_with("amq.") {
                skipped.push(format!(
                    "{at}: queue '{}' in vhost '{}' skipped: names starting with 'amq.' are \
                     reserved",
                    q.name, q.vhost
                ));
                fates.push(Fate::Skip);
                continue;
            }
            let flags = DeclareFlags {
                durable: q.durable,
                exclusive: false,
                auto_delete: q.auto_delete,
            };
            QueueArgs::parse(&q.name, &q.vhost, flags, &q.arguments)
                .map_err(|e| DefinitionsError::invalid(at.clone(), e.reply_text()))?;
            if let Some(first) = seen.get(&(q.vhost.as_str(), q.name.as_str())) {
                if first.item != *q {
                    return Err(DefinitionsError::conflict(
                        at.clone(),
                        format!(
                            "queue '{}' in vhost '{}' is also at {}, declared differently",
                            q.name, q.vhost, first.at
                        ),
                    ));
                }
                fates.push(Fate::Exists);
                continue;
            }
            seen.insert((&q.vhost, &q.name), entry);
            let vhost = self.broker.vhost(&q.vhost);
            let current = vhost.as_ref().and_then(|v| v.find_queue(&q.name));
            if let Some(current) = current {
                if current.config.exclusive_owner.is_some() {
                    return Err(DefinitionsError::conflict(
                        at.clone(),
                        current.locked_error().reply_text(),
                    ));
                }
                check_queue_equivalence(&current, &declare_queue(q), &q.vhost)
                    .map_err(|e| DefinitionsError::conflict(at.clone(), e.reply_text()))?;
                fates.push(Fate::Exists);
                continue;
            }
            let new = created.entry(q.vhost.as_str()).or_default();
            *new += 1;
            let limit = self
                .plan
                .vhost_limits
                .iter()
                .rev()
                .find(|l| l.item.0 == q.vhost)
                .map(|l| l.item.1.max_queues)
                .or_else(|| vhost.as_ref().map(|v| v.limits().max_queues))
                .flatten();
            let count = vhost.as_ref().map_or(0, |v| v.queue_count()) + *new - 1;
            if let Some(limit) = reached(limit, count) {
                return Err(DefinitionsError::invalid(
                    at.clone(),
                    format!(
                        "cannot declare queue '{}': queue limit in vhost '{}' ({limit}) is \
                         reached",
                        q.name, q.vhost
                    ),
                ));
            }
            fates.push(Fate::Create);
        }
        Ok(fates)
    }

    /// The kind of the exchange `name` will be once the document is
    /// applied, if it will exist.
    fn exchange_kind(&self, verdict: &Verdict, vhost: &str, name: &str) -> Option<ExchangeKind> {
        if let Some(e) = self.broker.vhost(vhost).and_then(|v| v.exchange(name)) {
            return Some(e.kind);
        }
        let planned = self
            .plan
            .exchanges
            .iter()
            .zip(&verdict.exchanges)
            .find(|(x, fate)| **fate != Fate::Skip && x.item.vhost == vhost && x.item.name == name);
        if let Some((x, _)) = planned {
            return ExchangeKind::parse(&x.item.kind);
        }
        match name {
            "amq.direct" => Some(ExchangeKind::Direct),
            "amq.fanout" => Some(ExchangeKind::Fanout),
            "amq.topic" => Some(ExchangeKind::Topic),
            "amq.headers" | "amq.match" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    fn check_bindings(&self, verdict: &Verdict) -> Result<Vec<Fate>> {
        let planned_queues: HashSet<(&str, &str)> = self
            .plan
            .queues
            .iter()
            .zip(&verdict.queues)
            .filter(|(_, fate)| **fate != Fate::Skip)
            .map(|(q, _)| (q.item.vhost.as_str(), q.item.name.as_str()))
            .collect();
        let mut fates = Vec::with_capacity(self.plan.bindings.len());
        for At { at, item: b } in &self.plan.bindings {
            self.vhost(at, &b.vhost)?;
            if b.source.is_empty() || (b.destination.is_empty() && !b.destination_is_queue) {
                return Err(DefinitionsError::invalid(
                    at.clone(),
                    "operation not permitted on the default exchange",
                ));
            }
            let Some(kind) = self.exchange_kind(verdict, &b.vhost, &b.source) else {
                return Err(DefinitionsError::invalid(
                    format!("{at}.source"),
                    format!("no exchange '{}' in vhost '{}'", b.source, b.vhost),
                ));
            };
            let vhost = self.broker.vhost(&b.vhost);
            let found = if b.destination_is_queue {
                let current = vhost.as_ref().and_then(|v| v.find_queue(&b.destination));
                if let Some(q) = &current
                    && q.config.exclusive_owner.is_some()
                {
                    return Err(DefinitionsError::conflict(
                        format!("{at}.destination"),
                        q.locked_error().reply_text(),
                    ));
                }
                current.is_some()
                    || planned_queues.contains(&(b.vhost.as_str(), b.destination.as_str()))
            } else {
                self.exchange_kind(verdict, &b.vhost, &b.destination)
                    .is_some()
            };
            if !found {
                let what = if b.destination_is_queue {
                    "queue"
                } else {
                    "exchange"
                };
                return Err(DefinitionsError::invalid(
                    format!("{at}.destination"),
                    format!("no {what} '{}' in vhost '{}'", b.destination, b.vhost),
                ));
            }
            let probe = Exchange::new(
                b.source.as_str().into(),
                kind,
                true,
                false,
                false,
                Default::default(),
            );
            kind.check_binding_key(&b.routing_key)
                .map_err(|e| DefinitionsError::invalid(format!("{at}.routing_key"), e))?;
            probe
                .validate_binding(&b.routing_key, &b.arguments)
                .map_err(|e| {
                    DefinitionsError::invalid(format!("{at}.arguments"), e.reply_text())
                })?;
            let bound = vhost
                .as_ref()
                .is_some_and(|v| v.topology.lock().contains(&binding(b)));
            fates.push(if bound { Fate::Exists } else { Fate::Create });
        }
        Ok(fates)
    }
}

pub(super) fn declare_exchange(x: &ExchangePlan) -> ExchangeDeclare {
    ExchangeDeclare {
        name: x.name.as_str().into(),
        kind: x.kind.clone(),
        passive: false,
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x.arguments.clone(),
    }
}

pub(super) fn declare_queue(q: &QueuePlan) -> QueueDeclare {
    QueueDeclare {
        name: q.name.as_str().into(),
        passive: false,
        durable: q.durable,
        exclusive: false,
        auto_delete: q.auto_delete,
        arguments: q.arguments.clone(),
    }
}

fn binding(b: &BindingPlan) -> Binding {
    let name = b.destination.as_str().into();
    Binding {
        source: b.source.as_str().into(),
        destination: if b.destination_is_queue {
            DestinationName::Queue(name)
        } else {
            DestinationName::Exchange(name)
        },
        routing_key: b.routing_key.as_str().into(),
        arguments: b.arguments.clone(),
    }
}
