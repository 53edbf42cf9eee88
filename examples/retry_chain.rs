//! Retries with a back-off and a parking queue, done by the broker itself.
//!
//! A consumer that cannot process a message rejects it with `requeue=true`,
//! and the work queue `retry.work` decides what happens next:
//!
//! - `x-delayed-retry-type: "failed"`, `x-delayed-retry-min: 200`,
//!   `x-delayed-retry-max: 1000`: a rejected message waits
//!   min × (failed deliveries so far) ms, at most max, before it is delivered
//!   again, so the retries come 200, 400 and 600 ms apart instead of in a
//!   tight loop;
//! - `x-delivery-limit: 3`: a message rejected more than three times (the
//!   first delivery and three retries) is dead-lettered with reason
//!   `delivery_limit` instead of coming back;
//! - `x-dead-letter-exchange: retry.dlx`: the fanout exchange that routes it
//!   to the parking queue `retry.parking`, for a human or a repair job.
//!
//! Each redelivery carries `x-delivery-count` (the failed deliveries so far);
//! the parked copy carries `x-death` (reason, count, queue) and
//! `x-first-death-queue`. These are RabbitMQ 4.3 quorum-queue arguments
//! (there, declare the queue with `x-queue-type: quorum`); Warren honours them
//! on every queue, so `retry.work` here is a durable classic queue. RabbitMQ
//! users without delayed retry build the back-off out of TTL queues and
//! dead-letter exchanges instead: see `delay_queue.rs`.
//!
//! ```text
//! cargo run --example retry_chain
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`). The program exits by
//! itself once the message is parked (about 1.2 s).

use std::time::{Duration, Instant};

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind,
    message::Delivery,
    options::*,
    types::{AMQPValue, FieldTable, LongString},
};

type Error = Box<dyn std::error::Error>;

const WORK: &str = "retry.work";
const DLX: &str = "retry.dlx";
const PARKING: &str = "retry.parking";
const DELIVERY_LIMIT: i64 = 3;
const RETRY_MIN_MS: i64 = 200;
const RETRY_MAX_MS: i64 = 1000;

/// Give up if the message is not parked by then (e.g. a broker that ignores
/// the arguments would redeliver it forever).
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Delayed retries and a parking queue for messages that keep failing")]
struct Args {}

#[tokio::main]
async fn main() -> Result<(), Error> {
    Args::parse();
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;

    // The parking lot first, so nothing dead-lettered is ever unroutable.
    channel
        .exchange_declare(
            DLX.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            PARKING.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            PARKING.into(),
            DLX.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut args = FieldTable::default();
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert("x-dead-letter-exchange".into(), string(DLX));
    args.insert("x-delayed-retry-type".into(), string("failed"));
    args.insert(
        "x-delayed-retry-min".into(),
        AMQPValue::LongLongInt(RETRY_MIN_MS),
    );
    args.insert(
        "x-delayed-retry-max".into(),
        AMQPValue::LongLongInt(RETRY_MAX_MS),
    );
    channel
        .queue_declare(WORK.into(), QueueDeclareOptions::durable(), args)
        .await?;

    // Both queues are durable: start clean if an earlier run was interrupted.
    for queue in [WORK, PARKING] {
        channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await?;
    }

    let mut work = channel
        .basic_consume(
            WORK.into(),
            "".into(),
            BasicConsumeOptions::default(), // manual acknowledgements
            FieldTable::default(),
        )
        .await?;
    let mut parking = channel
        .basic_consume(
            PARKING.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let message = "order #42";
    channel
        .basic_publish(
            "".into(),
            WORK.into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
    println!(" [x] Sent '{message}' to {WORK}");

    let (attempts, reason) =
        tokio::time::timeout(DEADLINE, fail_until_parked(&mut work, &mut parking))
            .await
            .map_err(|_| format!("the message was not parked within {} s", DEADLINE.as_secs()))??;
    println!(" [x] parked after {attempts} deliveries (reason {reason})");

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

/// Reject every delivery from `work` until the message shows up in
/// `parking`; returns the number of deliveries and the dead-letter reason.
async fn fail_until_parked(
    work: &mut Consumer,
    parking: &mut Consumer,
) -> Result<(usize, String), Error> {
    let mut attempts = 0;
    let mut previous: Option<Instant> = None;
    loop {
        tokio::select! {
            Some(delivery) = work.next() => {
                let delivery = delivery?;
                let now = Instant::now();
                attempts += 1;
                let count = header(&delivery, "x-delivery-count").and_then(int);
                let count_text = count.map_or("absent".to_string(), |n| n.to_string());
                let since = match previous {
                    // The broker held the message back for min × count ms.
                    Some(at) => format!(
                        ", {} ms after attempt {} (retry delay {} ms)",
                        (now - at).as_millis(),
                        attempts - 1,
                        (RETRY_MIN_MS * count.unwrap_or(0)).min(RETRY_MAX_MS),
                    ),
                    None => String::new(),
                };
                println!(
                    " [x] Attempt {attempts}: '{}', x-delivery-count {count_text}{since}; rejecting it",
                    String::from_utf8_lossy(&delivery.data),
                );
                previous = Some(now);
                delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
            }
            Some(delivery) = parking.next() => {
                let delivery = delivery?;
                // x-death is newest first: its head is the death just now.
                let death = header(&delivery, "x-death").and_then(|deaths| match deaths {
                    AMQPValue::FieldArray(list) => list.as_slice().first().cloned(),
                    _ => None,
                });
                let death = match death {
                    Some(AMQPValue::FieldTable(death)) => death,
                    _ => return Err("the parked message has no x-death header".into()),
                };
                let reason = death.inner().get("reason").map_or("?".to_string(), text);
                let count = death.inner().get("count").and_then(int).unwrap_or(0);
                let first_queue =
                    header(&delivery, "x-first-death-queue").map_or("?".to_string(), text);
                println!(
                    " [x] Parked in {PARKING}: '{}', x-death reason {reason}, count {count}, x-first-death-queue {first_queue}",
                    String::from_utf8_lossy(&delivery.data),
                );
                delivery.ack(BasicAckOptions::default()).await?;
                return Ok((attempts, reason));
            }
            else => return Err("the broker cancelled the consumers".into()),
        }
    }
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(name)
}

/// Brokers pick the integer width; accept any.
fn int(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::LongLongInt(n) => n,
        _ => return None,
    })
}

fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}
