//! Warren: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
//!
//! # Layout
//!
//! The path of one `basic.publish`, socket to socket (in full, with every
//! function, task and lock it crosses, in `docs/architecture.md`):
//!
//! - [`server`] accepts a TCP connection (on the sockets [`listeners`]
//!   binds) and spawns [`amqp::connection`].
//! - [`amqp::codec`] cuts frames off the read buffer; [`amqp::assembler`]
//!   joins method, header and body frames into one message.
//! - [`amqp::channel`] validates the publish and asks the vhost
//!   ([`broker::vhost`]) to route it: [`exchange::routing`] finds the queues.
//! - Each matching [`queue`] enqueues it — its core ([`queue::state`])
//!   decides, its shell writes to the [`store`] and dispatches — handing the
//!   message to a consumer's channel ([`amqp::deliveries`]).
//! - The consumer's connection [`amqp::outbox`] batches the encoded frames
//!   and its writer task puts them on the socket.
//!
//! Around that: [`config`] (layered TOML), [`broker`] (vhosts, users,
//! connections, alarms, dead-lettering), [`admin`] (HTTP API and
//! Prometheus), [`metrics`], and [`fields`] (AMQP field values, at the
//! bottom of every layer).
//!
//! # Lock ordering
//!
//! Locks are short, never held across `.await`, and always taken in this
//! order (a later lock may be taken while holding an earlier one, never the
//! reverse):
//!
//! 1. vhost topology (`VHost::topology`)
//! 2. vhost exchange, queue and policy maps
//! 3. exchange router
//! 4. queue state
//! 5. channel ledger (`Deliveries::ledger`) or confirm tracker
//! 6. connection outbox
//!
//! The deadlines heap and the store's internal locks are leaves.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren::StartupError> {
//! let server = warren::Server::start(warren::Config::ephemeral()).await?;
//! println!("broker at {}", server.amqp_url());
//! # Ok(()) }
//! ```

pub mod admin;
pub mod amqp;
pub mod broker;
pub mod config;
pub mod error;
pub mod exchange;
pub mod fields;
#[doc(hidden)]
pub mod fuzzing;
pub mod links;
pub mod listeners;
pub mod message;
pub mod metrics;
pub mod queue;
pub mod schema;
pub mod server;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use error::AmqpError;
pub use server::Server;
pub use startup::StartupError;
