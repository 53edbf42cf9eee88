//! A delay queue out of a message TTL and a dead-letter exchange: the classic
//! RabbitMQ recipe, which works unchanged on Warren.
//!
//! Messages are published to `delay.500ms`, a queue that nobody consumes
//! from, declared with:
//!
//! - `x-message-ttl: 500`: each message expires 500 ms after it was queued;
//! - `x-dead-letter-exchange: ""` and `x-dead-letter-routing-key:
//!   delay.ready`: an expired message is republished through the default
//!   exchange to the queue `delay.ready`, with an `x-death` header (reason
//!   `expired`).
//!
//! Consumers read `delay.ready` and see each message about 500 ms after it
//! was sent. A message may also carry its own, shorter, `expiration`: the
//! lower of the two wins. Warren expires such a message on time wherever it is
//! in the queue; RabbitMQ only expires messages at the head of a queue, so
//! there the 200 ms message below would wait behind the two before it and
//! come out last, after 500 ms.
//!
//! For retries with a back-off, Warren (like RabbitMQ 4.3 quorum queues) can
//! delay redeliveries itself, without a chain of TTL queues: see
//! `retry_chain.rs`.
//!
//! ```text
//! cargo run --example delay_queue
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`). The program exits by
//! itself once every message it sent has come out of the delay.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    message::Delivery,
    options::*,
    types::{AMQPValue, FieldTable, LongString},
};

type Error = Box<dyn std::error::Error>;

const DELAY_MS: i64 = 500;
const DELAY_QUEUE: &str = "delay.500ms";
const READY: &str = "delay.ready";

/// Give up if the messages have not all come out by then.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "A delay queue: message TTL plus a dead-letter exchange")]
struct Args {}

#[tokio::main]
async fn main() -> Result<(), Error> {
    Args::parse();
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;

    channel
        .queue_declare(
            READY.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(DELAY_MS));
    args.insert("x-dead-letter-exchange".into(), string(""));
    args.insert("x-dead-letter-routing-key".into(), string(READY));
    channel
        .queue_declare(DELAY_QUEUE.into(), QueueDeclareOptions::durable(), args)
        .await?;

    // Both queues are durable: start clean if an earlier run was interrupted.
    for queue in [DELAY_QUEUE, READY] {
        channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await?;
    }

    let mut ready = channel
        .basic_consume(
            READY.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // The last one has its own, shorter expiration, and is queued behind the
    // other two.
    let messages = [
        ("message 1", None),
        ("message 2", None),
        ("message 3", Some("200")),
    ];
    let mut sent_at = HashMap::new();
    for (body, expiration) in messages {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(ms) = expiration {
            properties = properties.with_expiration(ms.into());
        }
        channel
            .basic_publish(
                "".into(),
                DELAY_QUEUE.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await?;
        sent_at.insert(body.to_string(), Instant::now());
        match expiration {
            Some(ms) => println!(" [x] Sent '{body}' to {DELAY_QUEUE} (expiration {ms} ms)"),
            None => println!(" [x] Sent '{body}' to {DELAY_QUEUE} (queue TTL {DELAY_MS} ms)"),
        }
    }

    let received = async {
        let mut reasons = BTreeSet::new();
        for _ in 0..messages.len() {
            let delivery = match ready.next().await {
                Some(delivery) => delivery?,
                None => return Err::<_, Error>("the broker cancelled the consumer".into()),
            };
            let body = String::from_utf8_lossy(&delivery.data).into_owned();
            let delayed = sent_at
                .get(&body)
                .map_or("?".to_string(), |at| at.elapsed().as_millis().to_string());
            let (death_reason, queue) = last_death(&delivery);
            println!(
                " [x] Received '{body}' after {delayed} ms (x-death reason {death_reason}, queue {queue})"
            );
            delivery.ack(BasicAckOptions::default()).await?;
            reasons.insert(death_reason);
        }
        Ok(reasons.into_iter().collect::<Vec<_>>().join(", "))
    };
    let reason = tokio::time::timeout(DEADLINE, received)
        .await
        .map_err(|_| {
            format!(
                "the messages did not all arrive within {} s",
                DEADLINE.as_secs()
            )
        })??;
    println!(
        " [x] all {} messages delayed (reason {reason})",
        messages.len()
    );

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

/// The reason and queue of the newest `x-death` entry ("?" if missing).
fn last_death(delivery: &Delivery) -> (String, String) {
    let newest = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|deaths| match deaths {
            AMQPValue::FieldArray(list) => list.as_slice().first(),
            _ => None,
        });
    let field = |name: &str| match newest {
        Some(AMQPValue::FieldTable(death)) => death.inner().get(name).map_or("?".into(), text),
        _ => "?".to_string(),
    };
    (field("reason"), field("queue"))
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}
