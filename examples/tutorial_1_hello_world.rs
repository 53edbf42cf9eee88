//! RabbitMQ tutorial 1, "Hello World!", with lapin against Warren.
//! <https://www.rabbitmq.com/tutorials/tutorial-one-python>
//!
//! A producer sends one message to the `hello` queue; a consumer prints the
//! messages it receives from that queue. Start the consumer, then the producer:
//!
//! ```text
//! cargo run --example tutorial_1_hello_world -- receive
//! cargo run --example tutorial_1_hello_world -- send
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! `receive --count N` (or `EXAMPLE_MAX_MESSAGES=N`) exits after N messages
//! instead of running until Ctrl+C.

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, options::*, types::FieldTable,
};

#[derive(Parser)]
#[command(about = "RabbitMQ tutorial 1: Hello World!")]
enum Command {
    /// Send "Hello World!" to the `hello` queue (send.py).
    Send,
    /// Print the messages arriving on the `hello` queue (receive.py).
    Receive {
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

    match command {
        Command::Send => send(&channel).await?,
        Command::Receive { count } => receive(&channel, count).await?,
    }

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

async fn send(channel: &Channel) -> lapin::Result<()> {
    channel
        .queue_declare(
            "hello".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .basic_publish(
            "".into(),
            "hello".into(),
            BasicPublishOptions::default(),
            b"Hello World!",
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent 'Hello World!'");
    Ok(())
}

async fn receive(channel: &Channel, count: Option<usize>) -> lapin::Result<()> {
    // Declaring a queue is idempotent: whichever program starts first creates it.
    channel
        .queue_declare(
            "hello".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let consumer = channel
        .basic_consume(
            "hello".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true, // auto_ack=True in the Python tutorial
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");

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
