//! Exchanges: where a published message finds its queues.
//!
//! An [`Exchange`] owns a [`Router`] — one implementation per exchange type,
//! each in its own file — that maps a routing key (and, for headers
//! exchanges, the message headers) to [`Destination`]s. Routers are pure,
//! synchronous data structures: no locks inside, no I/O, and they may return
//! the same destination twice (the caller de-duplicates).
//!
//! The canonical list of bindings lives in `broker::bindings`; routers are the
//! fast index derived from it and are only mutated alongside it.
//!
//! [`routing`] follows routers' answers across exchange-to-exchange
//! bindings and alternate exchanges to the queues a message reaches. This
//! module sits below `broker` and never imports it: what routing needs of
//! a vhost (lookups by name) is passed in.

pub mod consistent_hash;
pub mod delayed;
mod direct;
mod fanout;
pub mod federation;
mod headers;
mod modulus_hash;
pub mod routing;
pub mod super_stream;
mod topic;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use parking_lot::RwLock;

use crate::error::AmqpResult;
use crate::metrics::rates::EventCounts;
use crate::queue::Queue;

pub use consistent_hash::ConsistentHashRouter;
pub use direct::DirectRouter;
pub use fanout::FanoutRouter;
pub use headers::HeadersRouter;
pub use modulus_hash::ModulusHashRouter;
pub use super_stream::SuperStreamRouter;
pub use topic::TopicRouter;

/// The exchange types Warren implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// Warren's partitioned stream: routes by a hash of the routing key.
    SuperStream,
    /// RabbitMQ's consistent-hash plugin: one destination by weighted hash.
    ConsistentHash,
    /// RabbitMQ 4.3's modulus hash: one destination by hash modulo N.
    ModulusHash,
    /// The delayed-message plugin's: routes as its `x-delayed-type`, later.
    DelayedMessage,
    /// The upstream end of a federation link: a fanout that stops messages
    /// going round a cycle (`federation`).
    FederationUpstream,
}

impl ExchangeKind {
    pub const ALL: [ExchangeKind; 9] = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Headers,
        ExchangeKind::Topic,
        ExchangeKind::SuperStream,
        ExchangeKind::ConsistentHash,
        ExchangeKind::ModulusHash,
        ExchangeKind::DelayedMessage,
        ExchangeKind::FederationUpstream,
    ];

    /// RabbitMQ's description of the type (the management overview).
    pub fn description(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "AMQP direct exchange, as per the AMQP specification",
            ExchangeKind::Fanout => "AMQP fanout exchange, as per the AMQP specification",
            ExchangeKind::Topic => "AMQP topic exchange, as per the AMQP specification",
            ExchangeKind::Headers => "AMQP headers exchange, as per the AMQP specification",
            ExchangeKind::SuperStream => {
                "Super stream: routes to one partition stream by a hash of the routing key"
            }
            ExchangeKind::ConsistentHash => "Consistent Hashing Exchange",
            ExchangeKind::ModulusHash => "Modulus Hashing Exchange",
            ExchangeKind::DelayedMessage => "Delayed Message Exchange.",
            ExchangeKind::FederationUpstream => "Federation upstream helper exchange",
        }
    }

    pub fn parse(name: &str) -> Option<ExchangeKind> {
        match name {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            "x-super-stream" => Some(ExchangeKind::SuperStream),
            "x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            "x-modulus-hash" => Some(ExchangeKind::ModulusHash),
            "x-delayed-message" => Some(ExchangeKind::DelayedMessage),
            "x-federation-upstream" => Some(ExchangeKind::FederationUpstream),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::SuperStream => "x-super-stream",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::ModulusHash => "x-modulus-hash",
            ExchangeKind::DelayedMessage => "x-delayed-message",
            ExchangeKind::FederationUpstream => "x-federation-upstream",
        }
    }

    fn new_router(self) -> Box<dyn Router> {
        match self {
            ExchangeKind::Direct => Box::<DirectRouter>::default(),
            ExchangeKind::Fanout | ExchangeKind::FederationUpstream => {
                Box::<FanoutRouter>::default()
            }
            ExchangeKind::Topic => Box::<TopicRouter>::default(),
            ExchangeKind::Headers => Box::<HeadersRouter>::default(),
            ExchangeKind::SuperStream => Box::<SuperStreamRouter>::default(),
            ExchangeKind::ConsistentHash => Box::<ConsistentHashRouter>::default(),
            ExchangeKind::ModulusHash => Box::<ModulusHashRouter>::default(),
            // Built by the type it routes as (`Exchange::new`).
            ExchangeKind::DelayedMessage => Box::<DirectRouter>::default(),
        }
    }

    /// RabbitMQ's refusal (a 406) of exchange arguments this type cannot
    /// use.
    pub fn check_arguments(self, arguments: &FieldTable) -> AmqpResult<()> {
        crate::queue::dedup::DedupArgs::parse(arguments)
            .map_err(crate::error::AmqpError::precondition_failed)?;
        crate::schema::Rule::from_arguments(arguments)
            .map_err(crate::error::AmqpError::precondition_failed)?;
        match self {
            ExchangeKind::ConsistentHash => consistent_hash::HashOn::of_arguments(arguments)
                .map(drop)
                .map_err(crate::error::AmqpError::precondition_failed),
            ExchangeKind::DelayedMessage => {
                let inner = delayed::delayed_type(arguments)?;
                inner.check_arguments(arguments)
            }
            ExchangeKind::FederationUpstream => federation::HopFilter::of_arguments(arguments)
                .map(drop)
                .map_err(crate::error::AmqpError::precondition_failed),
            _ => Ok(()),
        }
    }

    /// RabbitMQ's refusal (a 406) of a binding key this type cannot use.
    pub fn check_binding_key(self, routing_key: &str) -> Result<(), String> {
        match self {
            ExchangeKind::ConsistentHash => consistent_hash::weight_of(routing_key).map(drop),
            _ => Ok(()),
        }
    }
}

/// Where a binding leads: a queue, or another exchange (exchange-to-exchange
/// bindings). Compared and hashed by identity.
#[derive(Clone, Debug)]
pub enum Destination {
    Queue(Arc<Queue>),
    Exchange(Arc<Exchange>),
}

impl Destination {
    /// What hashing routers seed a binding with: kind and name.
    fn identity(&self) -> String {
        match self {
            Destination::Queue(q) => format!("q:{}", q.name()),
            Destination::Exchange(e) => format!("e:{}", e.name),
        }
    }

    /// Exchanges before queues, then by name (RabbitMQ's resource order).
    fn sort_key(&self) -> (bool, String) {
        match self {
            Destination::Queue(q) => (true, q.name().to_string()),
            Destination::Exchange(e) => (false, e.name.to_string()),
        }
    }

    fn addr(&self) -> usize {
        match self {
            Destination::Queue(q) => Arc::as_ptr(q) as *const () as usize,
            Destination::Exchange(e) => Arc::as_ptr(e) as *const () as usize,
        }
    }
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        self.addr() == other.addr()
    }
}

impl Eq for Destination {}

impl Hash for Destination {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr().hash(state)
    }
}

/// The routing index of one exchange type.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// Reject binding arguments this type cannot use (e.g. a bad `x-match`).
    fn validate(&self, _arguments: &FieldTable) -> AmqpResult<()> {
        Ok(())
    }
    fn bind(&mut self, destination: Destination, routing_key: &str, arguments: &FieldTable);
    fn unbind(&mut self, destination: &Destination, routing_key: &str, arguments: &FieldTable);
    /// Push every destination the message reaches onto `out`.
    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>);
}

#[derive(Debug)]
pub struct Exchange {
    pub name: ShortString,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// What a consistent-hash exchange hashes.
    hash_on: consistent_hash::HashOn,
    /// What an `x-federation-upstream` exchange lets through.
    hops: Option<federation::HopFilter>,
    /// How it routes: its kind, or a delayed-message exchange's
    /// `x-delayed-type`.
    pub routes_as: ExchangeKind,
    /// Ids of messages seen, with `x-message-deduplication` (in memory).
    pub dedup: Option<crate::queue::dedup::DedupCache>,
    /// A delayed-message exchange's held messages (set by its vhost).
    pub delayed: std::sync::OnceLock<Arc<delayed::DelayBuffer>>,
    /// The `alternate-exchange` argument: where unroutable messages go.
    pub alternate: Option<ShortString>,
    /// The `alternate-exchange` of the policy that applies, and the
    /// policy's name; the argument wins over it.
    policy: RwLock<Option<(String, ShortString)>>,
    /// The schema its messages must match: `x-schema-subject` in its
    /// arguments, else the policy's `schema-subject`.
    schema_arg: Option<Arc<crate::schema::Rule>>,
    schema: crate::schema::Gate,
    router: RwLock<Box<dyn Router>>,
    /// Set when the exchange leaves its vhost, so holders of the `Arc` (a
    /// channel's last publish target) know to look the name up again.
    deleted: AtomicBool,
    /// Messages published to it ([`PUBLISH_IN`]) and routed on from it
    /// ([`PUBLISH_OUT`]), for operators.
    pub stats: EventCounts<2>,
}

pub const PUBLISH_IN: usize = 0;
pub const PUBLISH_OUT: usize = 1;

impl Exchange {
    pub fn new(
        name: ShortString,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        let alternate = match arguments.inner().get("alternate-exchange") {
            // A name over 255 bytes names no exchange: ignored.
            Some(AMQPValue::LongString(s)) => {
                ShortString::try_new(String::from_utf8_lossy(s.as_bytes())).ok()
            }
            Some(AMQPValue::ShortString(s)) => Some(s.clone()),
            _ => None,
        };
        // Refused on declare; a stored exchange with bad ones hashes keys.
        let hash_on = consistent_hash::HashOn::of_arguments(&arguments).unwrap_or_default();
        // Refused on declare; a stored exchange with bad ones has none.
        let schema_arg = crate::schema::Rule::from_arguments(&arguments)
            .ok()
            .flatten()
            .map(Arc::new);
        let hops = (kind == ExchangeKind::FederationUpstream)
            .then(|| federation::HopFilter::of_arguments(&arguments).ok())
            .flatten();
        let dedup = crate::queue::dedup::DedupArgs::parse(&arguments)
            .ok()
            .flatten()
            .map(crate::queue::dedup::DedupCache::new);
        let routes_as = match kind {
            ExchangeKind::DelayedMessage => {
                delayed::delayed_type(&arguments).unwrap_or(ExchangeKind::Direct)
            }
            kind => kind,
        };
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            hash_on,
            hops,
            routes_as,
            dedup,
            delayed: std::sync::OnceLock::new(),
            alternate,
            policy: RwLock::new(None),
            schema: crate::schema::Gate::new(schema_arg.clone()),
            schema_arg,
            router: RwLock::new(routes_as.new_router()),
            deleted: AtomicBool::new(false),
            stats: EventCounts::default(),
        }
    }

    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Where unroutable messages go, if anywhere.
    pub fn alternate_exchange(&self) -> Option<ShortString> {
        self.alternate
            .clone()
            .or_else(|| self.policy.read().as_ref().map(|(_, ae)| ae.clone()))
    }

    /// A policy with an `alternate-exchange` applies (or none does).
    /// The policy that applies to it, if one does.
    pub fn policy_name(&self) -> Option<String> {
        self.policy.read().as_ref().map(|(name, _)| name.clone())
    }

    pub fn set_policy_alternate(&self, policy: Option<(String, ShortString)>) {
        *self.policy.write() = policy;
    }

    /// The schema its messages must match, if any.
    pub fn schema_rule(&self) -> Option<Arc<crate::schema::Rule>> {
        self.schema.rule()
    }

    /// The policy's schema rule (its argument's wins).
    pub fn set_policy_schema(&self, rule: Option<crate::schema::Rule>) {
        self.schema
            .replace(self.schema_arg.clone().or(rule.map(Arc::new)));
    }

    /// The nameless default exchange routes by queue name and has no router
    /// state of its own; the vhost resolves it.
    pub fn is_default(&self) -> bool {
        self.name.as_str().is_empty()
    }

    pub fn validate_binding(&self, routing_key: &str, arguments: &FieldTable) -> AmqpResult<()> {
        self.routes_as
            .check_binding_key(routing_key)
            .map_err(crate::error::AmqpError::precondition_failed)?;
        self.router.read().validate(arguments)
    }

    pub fn bind(&self, destination: Destination, routing_key: &str, arguments: &FieldTable) {
        self.router
            .write()
            .bind(destination, routing_key, arguments)
    }

    pub fn unbind(&self, destination: &Destination, routing_key: &str, arguments: &FieldTable) {
        self.router
            .write()
            .unbind(destination, routing_key, arguments)
    }

    pub fn route(&self, routing_key: &str, message: &RouteHeaders<'_>, out: &mut Vec<Destination>) {
        let router = self.router.read();
        match self.routes_as {
            ExchangeKind::Headers => router.route(routing_key, message.get(), out),
            ExchangeKind::ConsistentHash => {
                let key = self.hash_on.key_of(routing_key, message);
                router.route(&key, None, out)
            }
            ExchangeKind::FederationUpstream => {
                if self
                    .hops
                    .as_ref()
                    .is_none_or(|f| f.should_forward(message.get()))
                {
                    router.route(routing_key, None, out)
                }
            }
            _ => router.route(routing_key, None, out),
        }
    }
}

/// A message's header table as routing sees it: decoded from the raw
/// properties only when a headers exchange asks. Decoding builds every key
/// and value, and most routes never look.
pub struct RouteHeaders<'a> {
    properties: Option<&'a [u8]>,
    table: std::cell::OnceCell<Option<FieldTable>>,
}

impl<'a> RouteHeaders<'a> {
    /// The headers of raw content-header properties (well-formed: checked
    /// on publish).
    pub fn of_properties(properties: &'a [u8]) -> RouteHeaders<'a> {
        RouteHeaders {
            properties: Some(properties),
            table: std::cell::OnceCell::new(),
        }
    }

    /// Headers already decoded.
    pub fn decoded(table: Option<FieldTable>) -> RouteHeaders<'static> {
        RouteHeaders {
            properties: None,
            table: std::cell::OnceCell::from(table),
        }
    }

    /// Raw properties too, for routers that hash a property.
    pub fn with_properties<'b>(self, properties: &'b [u8]) -> RouteHeaders<'b>
    where
        'a: 'b,
    {
        RouteHeaders {
            properties: Some(properties),
            table: self.table,
        }
    }

    /// All the properties, decoded (consistent hashing on a property).
    pub fn properties(&self) -> Option<amq_protocol::protocol::BasicProperties> {
        self.properties.and_then(crate::message::parse)
    }

    pub fn get(&self) -> Option<&FieldTable> {
        self.table
            .get_or_init(|| {
                self.properties
                    .and_then(crate::message::parse)
                    .and_then(|p| p.headers().clone())
            })
            .as_ref()
    }
}
