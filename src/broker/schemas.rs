//! Schemas enforced at the broker: registering versions of a subject
//! (kept as `schema-subject` runtime parameters, so they are stored,
//! exported and imported as definitions), and what happens to a message
//! that does not match the schema its exchange or queue is bound to: not
//! enqueued (a publisher in confirm mode gets a nack), counted, logged at
//! debug, announced on the event exchange (`schema.validation.failed`), and
//! sent to the rule's invalid-message exchange with an `x-schema-error`
//! header when there is one.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, LongString};
use serde_json::{Value, json};

use super::audit::Actor;
use super::{AccessError, Broker};
use crate::exchange::RouteHeaders;
use crate::message::{self, Message};
use crate::schema::{self, Level, RegisterError, Registration, Rule, SchemaType};

/// Where a rule was enforced, for the event and the log.
#[derive(Clone, Copy, Debug)]
pub enum SchemaSite<'a> {
    Exchange(&'a str),
    Queue(&'a str),
}

/// Why registering failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Not a valid schema (Confluent answers 422).
    #[error("{0}")]
    Invalid(String),
    /// Breaks the compatibility level (409).
    #[error("{0}")]
    Incompatible(String),
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl Broker {
    /// Register `text` as the next version of `subject` in `vhost` (the
    /// same schema again gives its existing id and version).
    pub fn register_schema(
        &self,
        vhost: &str,
        subject: &str,
        kind: &str,
        text: &str,
        actor: &Actor,
    ) -> Result<Registration, SchemaError> {
        let kind = SchemaType::parse(kind).map_err(SchemaError::Invalid)?;
        if self.vhost(vhost).is_none() {
            return Err(Broker::no_vhost(vhost).into());
        }
        let registration = self
            .schemas
            .plan_register(vhost, subject, kind, text)
            .map_err(|e| match e {
                RegisterError::Invalid(r) => SchemaError::Invalid(r),
                RegisterError::Incompatible(r) => SchemaError::Incompatible(r),
            })?;
        if let Some(value) = &registration.value {
            self.set_parameter(schema::COMPONENT, vhost, subject, value.clone(), actor)?;
        }
        Ok(registration)
    }

    /// Set a subject's compatibility level (the subject may have no
    /// versions yet).
    pub fn set_schema_compatibility(
        &self,
        vhost: &str,
        subject: &str,
        level: Level,
        actor: &Actor,
    ) -> Result<(), AccessError> {
        let value = self.schemas.with_level(vhost, subject, level);
        self.set_parameter(schema::COMPONENT, vhost, subject, value, actor)
    }

    /// Whether `message` matches `rule` in `vhost`; a refused one is dealt
    /// with here (counted, logged, announced, sent to the invalid-message
    /// exchange).
    pub fn enforce_schema(
        &self,
        vhost: &str,
        site: SchemaSite<'_>,
        rule: &Rule,
        message: &Arc<Message>,
    ) -> bool {
        let props = message::parse(&message.properties).unwrap_or_default();
        let schema_id = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-schema-id"))
            .and_then(crate::fields::int_value)
            .and_then(|n| u32::try_from(n).ok());
        let content_type = props.content_type().as_ref().map(|c| c.as_str());
        let Err(reason) =
            self.schemas
                .check(vhost, &rule.binding, &message.body, content_type, schema_id)
        else {
            return true;
        };
        let (kind, name) = match site {
            SchemaSite::Exchange(n) => ("exchange", n),
            SchemaSite::Queue(n) => ("queue", n),
        };
        let subject = &rule.binding.subject;
        self.metrics.schema_refused(vhost, subject);
        tracing::debug!(
            vhost,
            subject,
            "{kind} '{name}' refused a message: {reason}"
        );
        self.events
            .emit_json("schema.validation.failed", "rmq-internal", || {
                json!({"vhost": vhost, kind: name, "subject": subject, "reason": reason,
                   "routing_key": message.routing_key.as_str()})
            });
        if let Some(target) = &rule.invalid_exchange {
            self.route_invalid(vhost, target, message, props, &reason);
        }
        false
    }

    /// Publish a refused message to `target` with `x-schema-error`.
    fn route_invalid(
        &self,
        vhost: &str,
        target: &str,
        message: &Arc<Message>,
        props: amq_protocol::protocol::BasicProperties,
        reason: &str,
    ) {
        let Some(v) = self.vhost(vhost) else {
            return;
        };
        let Some(exchange) = v.exchange(target) else {
            tracing::debug!(
                vhost,
                "no invalid-message exchange '{target}': the message is dropped"
            );
            return;
        };
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            "x-schema-error".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let props = props.with_headers(headers.clone());
        let invalid = Arc::new(Message {
            exchange: exchange.name.clone(),
            properties: message::encode(&props),
            received_ms: crate::queue::now_ms(),
            ..message.as_ref().clone()
        });
        // Its own schema rule does not apply: it is where refusals go.
        let mut queues = Vec::new();
        v.route(
            &exchange,
            invalid.routing_key.as_str(),
            &RouteHeaders::decoded(Some(headers)),
            &mut queues,
        );
        queues.retain(|q| q.schema_rule().is_none());
        crate::broker::enqueue::enqueue(&invalid, &mut queues, &mut Vec::new());
    }

    /// The catalogue: every subject with its versions and where it is
    /// bound (exchanges and queues, by argument or policy).
    pub fn schema_catalogue(&self, vhost: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        for (vh, name, subject) in self.schemas.subjects(vhost) {
            let mut bound = Vec::new();
            if let Some(v) = self.vhost(&vh) {
                for x in v.exchanges() {
                    if let Some(rule) = x.schema_rule()
                        && rule.binding.subject == name
                    {
                        bound.push(json!({"type": "exchange", "name": x.name.as_str(),
                                          "version": rule.binding.version}));
                    }
                }
                for q in v.queues_sorted() {
                    if let Some(rule) = q.schema_rule()
                        && rule.binding.subject == name
                    {
                        bound.push(json!({"type": "queue", "name": q.name(),
                                          "version": rule.binding.version}));
                    }
                }
            }
            let versions: Vec<Value> = subject
                .versions
                .iter()
                .map(|v| json!({"version": v.version, "id": v.id, "schemaType": v.kind.as_str()}))
                .collect();
            out.push(json!({
                "vhost": vh,
                "subject": name,
                "compatibility": subject.level().as_str(),
                "versions": versions,
                "bound_to": bound,
            }));
        }
        out
    }
}
