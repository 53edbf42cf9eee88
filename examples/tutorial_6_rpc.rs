//! RabbitMQ tutorial 6, "RPC", with lapin against Warren.
//! <https://www.rabbitmq.com/tutorials/tutorial-six-python>
//!
//! `rpc-server` answers Fibonacci requests from `rpc_queue`. `rpc-client`
//! declares an exclusive, server-named callback queue, sends a request with
//! `reply_to` set to that queue and a fresh `correlation_id`, and waits for the
//! reply carrying the same id. Start the server, then call it:
//!
//! ```text
//! cargo run --example tutorial_6_rpc -- rpc-server
//! cargo run --example tutorial_6_rpc -- rpc-client 30
//! ```
//!
//! The broker address comes from `AMQP_ADDR`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! `rpc-server --count N` (or `EXAMPLE_MAX_MESSAGES=N`) exits after N
//! requests instead of running until Ctrl+C.

use clap::Parser;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer,
    options::*,
    types::{FieldTable, ShortString},
};

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(about = "RabbitMQ tutorial 6: RPC")]
enum Command {
    /// Answer fib(n) requests from `rpc_queue` (rpc_server.py).
    RpcServer {
        /// Exit after N requests instead of running forever.
        #[arg(long, env = "EXAMPLE_MAX_MESSAGES")]
        count: Option<usize>,
    },
    /// Ask the server for fib(n) and print the answer (rpc_client.py).
    RpcClient {
        #[arg(default_value_t = 30)]
        n: u64,
    },
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let addr = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match Command::parse() {
        Command::RpcServer { count } => rpc_server(&addr, count).await,
        Command::RpcClient { n } => {
            let mut fibonacci_rpc = FibonacciRpcClient::new(&addr).await?;
            println!(" [x] Requesting fib({n})");
            let response = fibonacci_rpc.call(n).await?;
            println!(" [.] Got '{response}'");
            fibonacci_rpc.close().await?;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- server

fn fib(n: u64) -> u64 {
    match n {
        0 => 0,
        1 => 1,
        n => fib(n - 1) + fib(n - 2),
    }
}

async fn rpc_server(addr: &str, count: Option<usize>) -> Result<(), Error> {
    let connection = Connection::connect(addr, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;

    channel
        .queue_declare(
            "rpc_queue".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // One request at a time per server; run more servers to scale out.
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            "rpc_queue".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(" [x] Awaiting RPC requests");

    // Stop after `--count` requests; without it, run forever.
    let mut requests = consumer.take(count.unwrap_or(usize::MAX));
    while let Some(delivery) = requests.next().await {
        let delivery = delivery?;
        let n: u64 = std::str::from_utf8(&delivery.data)?.trim().parse()?;
        println!(" [.] fib({n})");
        let response = fib(n).to_string();

        // Reply to the queue the client named, echoing its correlation id.
        let reply_to = delivery.properties.reply_to().clone().unwrap_or_default();
        let correlation_id = delivery
            .properties
            .correlation_id()
            .clone()
            .unwrap_or_default();
        channel
            .basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                response.as_bytes(),
                BasicProperties::default().with_correlation_id(correlation_id),
            )
            .await?;
        delivery.ack(BasicAckOptions::default()).await?;
    }

    connection.close(200, "Bye".into()).await?;
    Ok(())
}

// ---------------------------------------------------------------- client

struct FibonacciRpcClient {
    connection: Connection,
    channel: Channel,
    callback_queue: ShortString,
    // Keep the consumer alive: lapin cancels it when it is dropped.
    responses: Consumer,
}

impl FibonacciRpcClient {
    async fn new(addr: &str) -> lapin::Result<Self> {
        let connection = Connection::connect(addr, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;

        // An exclusive queue with a broker-generated name, just for our replies.
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await?;
        let callback_queue = queue.name().clone();

        let responses = channel
            .basic_consume(
                callback_queue.clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;

        Ok(Self {
            connection,
            channel,
            callback_queue,
            responses,
        })
    }

    async fn call(&mut self, n: u64) -> Result<u64, Error> {
        // A unique id per request, so a reply can be matched to its request.
        let correlation_id: ShortString = format!("{:032x}", rand::random::<u128>()).into();
        self.channel
            .basic_publish(
                "".into(),
                "rpc_queue".into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default()
                    .with_reply_to(self.callback_queue.clone())
                    .with_correlation_id(correlation_id.clone()),
            )
            .await?;

        // Ignore any reply that is not for this request (e.g. a late answer
        // to an earlier one).
        while let Some(delivery) = self.responses.next().await {
            let delivery = delivery?;
            if delivery.properties.correlation_id().as_ref() == Some(&correlation_id) {
                return Ok(std::str::from_utf8(&delivery.data)?.parse()?);
            }
        }
        Err("the reply consumer was cancelled".into())
    }

    async fn close(&self) -> lapin::Result<()> {
        self.connection.close(200, "Bye".into()).await
    }
}
