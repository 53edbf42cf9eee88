//! RabbitMQ tutorial 3, "Publish/Subscribe", with lapin against Warren.
//! <https://www.rabbitmq.com/tutorials/tutorial-three-python>
//!
//! `emit-log` publishes to the `logs` fanout exchange; every `receive-logs`
//! binds its own exclusive, server-named queue to it, so each one gets a copy
//! of every message. Start one or more receivers, then emit:
//!
//! ```text
//! cargo run --example tutorial_3_publish_subscribe -- receive-logs
//! cargo run --example tutorial_3_publish_subscribe -- receive-logs
//! cargo run --example tutorial_3_publish_subscribe -- emit-log info: Hello World!
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! `receive-logs --count N` (or `EXAMPLE_MAX_MESSAGES=N`) exits after N
//! messages instead of running until Ctrl+C.

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, options::*,
    types::FieldTable,
};

#[derive(Parser)]
#[command(about = "RabbitMQ tutorial 3: Publish/Subscribe")]
enum Command {
    /// Publish a log message to the `logs` exchange (emit_log.py).
    EmitLog {
        /// The message (default "info: Hello World!").
        message: Vec<String>,
    },
    /// Print every message published to `logs` (receive_logs.py).
    ReceiveLogs {
        /// Exit after N messages instead of running forever.
        #[arg(long, env = "EXAMPLE_MAX_MESSAGES")]
        count: Option<usize>,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let command = Command::parse();
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;

    channel
        .exchange_declare(
            "logs".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;

    match command {
        Command::EmitLog { message } => emit_log(&channel, message).await?,
        Command::ReceiveLogs { count } => receive_logs(&channel, count).await?,
    }

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

async fn emit_log(channel: &Channel, words: Vec<String>) -> lapin::Result<()> {
    let message = match words.join(" ") {
        m if m.is_empty() => "info: Hello World!".to_string(),
        m => m,
    };
    // A fanout exchange ignores the routing key.
    channel
        .basic_publish(
            "logs".into(),
            "".into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent '{message}'");
    Ok(())
}

async fn receive_logs(channel: &Channel, count: Option<usize>) -> lapin::Result<()> {
    // An empty name lets the broker pick one (amq.gen-...); exclusive means
    // the queue is deleted when this connection closes.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await?;

    channel
        .queue_bind(
            queue.name().clone(),
            "logs".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!(" [*] Waiting for logs. To exit press CTRL+C");

    // Stop after `--count` messages; without it, run forever.
    let mut messages = consumer.take(count.unwrap_or(usize::MAX));
    while let Some(delivery) = messages.next().await {
        let delivery = delivery?;
        println!(
            " [x] Received '{}'",
            String::from_utf8_lossy(&delivery.data)
        );
    }
    Ok(())
}
