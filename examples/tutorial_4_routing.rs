//! RabbitMQ tutorial 4, "Routing", with lapin against Warren.
//! <https://www.rabbitmq.com/tutorials/tutorial-four-python>
//!
//! `emit-log-direct` publishes to the `direct_logs` direct exchange with the
//! severity as routing key; each `receive-logs-direct` binds its queue once per
//! severity it wants, and only gets those. For example, save warnings and
//! errors in one terminal, see everything in another, then emit:
//!
//! ```text
//! cargo run --example tutorial_4_routing -- receive-logs-direct warning error
//! cargo run --example tutorial_4_routing -- receive-logs-direct info warning error
//! cargo run --example tutorial_4_routing -- emit-log-direct error "Run. Run. Or it will explode."
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! `receive-logs-direct --count N` (or `EXAMPLE_MAX_MESSAGES=N`) exits after
//! N messages instead of running until Ctrl+C.

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, options::*,
    types::FieldTable,
};

#[derive(Parser)]
#[command(about = "RabbitMQ tutorial 4: Routing")]
enum Command {
    /// Publish a message with a severity (emit_log_direct.py).
    EmitLogDirect {
        /// The routing key: info, warning, error, ...
        #[arg(default_value = "info")]
        severity: String,
        /// The message (default "Hello World!").
        message: Vec<String>,
    },
    /// Print the messages of the given severities (receive_logs_direct.py).
    ReceiveLogsDirect {
        /// The severities to subscribe to, e.g. `info warning error`.
        #[arg(required = true)]
        severities: Vec<String>,
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
            "direct_logs".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;

    match command {
        Command::EmitLogDirect { severity, message } => {
            emit_log_direct(&channel, severity, message).await?
        }
        Command::ReceiveLogsDirect { severities, count } => {
            receive_logs_direct(&channel, severities, count).await?
        }
    }

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

async fn emit_log_direct(
    channel: &Channel,
    severity: String,
    words: Vec<String>,
) -> lapin::Result<()> {
    let message = match words.join(" ") {
        m if m.is_empty() => "Hello World!".to_string(),
        m => m,
    };
    channel
        .basic_publish(
            "direct_logs".into(),
            severity.as_str().into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent '{severity}':'{message}'");
    Ok(())
}

async fn receive_logs_direct(
    channel: &Channel,
    severities: Vec<String>,
    count: Option<usize>,
) -> lapin::Result<()> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await?;

    // One binding per severity: the direct exchange delivers a message to the
    // queues whose binding key equals its routing key.
    for severity in severities {
        channel
            .queue_bind(
                queue.name().clone(),
                "direct_logs".into(),
                severity.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

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
            " [x] Received '{}':'{}'",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.data)
        );
    }
    Ok(())
}
