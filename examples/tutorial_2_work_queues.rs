//! RabbitMQ tutorial 2, "Work queues", with lapin against Warren.
//! <https://www.rabbitmq.com/tutorials/tutorial-two-python>
//!
//! `new-task` puts a task on the durable `task_queue`; each `worker` takes one
//! task at a time (prefetch 1), "works" one second per dot in the message, and
//! acknowledges it when done. Start two workers, then send a few tasks and
//! watch them being shared:
//!
//! ```text
//! cargo run --example tutorial_2_work_queues -- worker
//! cargo run --example tutorial_2_work_queues -- worker
//! cargo run --example tutorial_2_work_queues -- new-task First message.
//! cargo run --example tutorial_2_work_queues -- new-task Second message..
//! cargo run --example tutorial_2_work_queues -- new-task Third message...
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! `worker --count N` (or `EXAMPLE_MAX_MESSAGES=N`) exits after N tasks
//! instead of running until Ctrl+C.

use std::time::Duration;

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, options::*, types::FieldTable,
};

#[derive(Parser)]
#[command(about = "RabbitMQ tutorial 2: Work queues")]
enum Command {
    /// Queue a task; each '.' in it is one second of work (new_task.py).
    NewTask {
        /// The task (default "Hello World!").
        message: Vec<String>,
    },
    /// Take tasks from `task_queue` one at a time (worker.py).
    Worker {
        /// Exit after N tasks instead of running forever.
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

    // A durable queue survives a broker restart (both sides must agree on it).
    channel
        .queue_declare(
            "task_queue".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;

    match command {
        Command::NewTask { message } => new_task(&channel, message).await?,
        Command::Worker { count } => worker(&channel, count).await?,
    }

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

async fn new_task(channel: &Channel, words: Vec<String>) -> lapin::Result<()> {
    let message = match words.join(" ") {
        m if m.is_empty() => "Hello World!".to_string(),
        m => m,
    };
    channel
        .basic_publish(
            "".into(),
            "task_queue".into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            // delivery_mode 2: persistent, so the task survives a restart too.
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
    println!(" [x] Sent '{message}'");
    Ok(())
}

async fn worker(channel: &Channel, count: Option<usize>) -> lapin::Result<()> {
    // Fair dispatch: don't give a worker a new task until it has acknowledged
    // the previous one.
    channel.basic_qos(1, BasicQosOptions::default()).await?;

    let consumer = channel
        .basic_consume(
            "task_queue".into(),
            "".into(),
            BasicConsumeOptions::default(), // manual acknowledgements
            FieldTable::default(),
        )
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");

    // Stop after `--count` tasks; without it, run forever.
    let mut tasks = consumer.take(count.unwrap_or(usize::MAX));
    while let Some(delivery) = tasks.next().await {
        let delivery = delivery?;
        let body = String::from_utf8_lossy(&delivery.data);
        println!(" [x] Received '{body}'");
        let dots = body.matches('.').count() as u64;
        tokio::time::sleep(Duration::from_secs(dots)).await;
        println!(" [x] Done");
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
