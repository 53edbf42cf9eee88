//! RabbitMQ tutorial 5, "Topics", with lapin against Warren.
//! <https://www.rabbitmq.com/tutorials/tutorial-five-python>
//!
//! `emit-log-topic` publishes to the `topic_logs` topic exchange with a
//! dotted routing key such as `kern.critical` (`<facility>.<severity>`);
//! each `receive-logs-topic` binds its queue with patterns in which `*`
//! matches exactly one word and `#` zero or more words:
//!
//! ```text
//! cargo run --example tutorial_5_topics -- receive-logs-topic "#"
//! cargo run --example tutorial_5_topics -- receive-logs-topic "kern.*"
//! cargo run --example tutorial_5_topics -- receive-logs-topic "kern.*" "*.critical"
//! cargo run --example tutorial_5_topics -- emit-log-topic kern.critical "A critical kernel error"
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! `receive-logs-topic --count N` (or `EXAMPLE_MAX_MESSAGES=N`) exits after N
//! messages instead of running until Ctrl+C.

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, options::*,
    types::FieldTable,
};

#[derive(Parser)]
#[command(about = "RabbitMQ tutorial 5: Topics")]
enum Command {
    /// Publish a message with a dotted routing key (emit_log_topic.py).
    EmitLogTopic {
        /// The routing key, e.g. `kern.critical`.
        #[arg(default_value = "anonymous.info")]
        routing_key: String,
        /// The message (default "Hello World!").
        message: Vec<String>,
    },
    /// Print the messages matching the binding keys (receive_logs_topic.py).
    ReceiveLogsTopic {
        /// Binding keys, e.g. `"kern.*" "*.critical"` (quote them for the shell).
        #[arg(required = true)]
        binding_keys: Vec<String>,
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
            "topic_logs".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;

    match command {
        Command::EmitLogTopic {
            routing_key,
            message,
        } => emit_log_topic(&channel, routing_key, message).await?,
        Command::ReceiveLogsTopic {
            binding_keys,
            count,
        } => receive_logs_topic(&channel, binding_keys, count).await?,
    }

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

async fn emit_log_topic(
    channel: &Channel,
    routing_key: String,
    words: Vec<String>,
) -> lapin::Result<()> {
    let message = match words.join(" ") {
        m if m.is_empty() => "Hello World!".to_string(),
        m => m,
    };
    channel
        .basic_publish(
            "topic_logs".into(),
            routing_key.as_str().into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent '{routing_key}':'{message}'");
    Ok(())
}

async fn receive_logs_topic(
    channel: &Channel,
    binding_keys: Vec<String>,
    count: Option<usize>,
) -> lapin::Result<()> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await?;

    for binding_key in binding_keys {
        channel
            .queue_bind(
                queue.name().clone(),
                "topic_logs".into(),
                binding_key.into(),
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
