//! Helpers shared by the behaviour tests.

#![allow(dead_code)]

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren::{Config, Server};

/// A broker configuration that stores in `dir` (on ephemeral ports).
pub fn on_disk(dir: &std::path::Path) -> Config {
    let mut c = Config::ephemeral();
    c.storage.ephemeral = false;
    c.storage.data_dir = dir.to_path_buf();
    c
}

/// Start a throwaway broker on ephemeral ports.
pub async fn start() -> Server {
    start_with(Config::ephemeral()).await
}

pub async fn start_with(config: Config) -> Server {
    Server::start(config).await.expect("broker starts")
}

pub async fn connect(server: &Server) -> Connection {
    Connection::connect(&server.amqp_url(), ConnectionProperties::default())
        .await
        .expect("lapin connects")
}

pub async fn channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("channel opens")
}

/// The AMQP reply code and text carried by a lapin error, if it is a
/// protocol error from the broker.
pub fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => {
            Some((err.get_id(), err.get_message().as_str().to_string()))
        }
        _ => None,
    }
}

/// Assert a lapin result failed with the given reply code; returns the text.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, lapin::Error>, code: u16) -> String {
    match r {
        Ok(v) => panic!("expected reply code {code}, got success: {v:?}"),
        Err(e) => match amqp_error(&e) {
            Some((c, text)) => {
                assert_eq!(c, code, "unexpected reply code, text: {text}");
                text
            }
            None => panic!("expected reply code {code}, got {e:?}"),
        },
    }
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Errors from asynchronous methods (publish, ack) arrive as events: the
/// reply code and text of the next channel or connection the broker closes.
/// Create the listener with `conn.events_listener()` before the offending
/// call.
pub async fn next_error(
    events: &mut (impl futures_lite::Stream<Item = lapin::Event> + Unpin),
) -> (u16, String) {
    use futures_lite::StreamExt;
    let wait = async {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(e) = event
                && let Some(found) = amqp_error(&e)
            {
                return found;
            }
        }
        panic!("event stream ended without an error");
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("an error event in time")
}

/// Declare a plain (non-durable, shared) queue.
pub async fn declare(ch: &Channel, q: &str) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Publish `body` to the default exchange, routed to queue `q`.
pub async fn put(ch: &Channel, q: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

/// How many messages are ready in `q` (a passive declare).
pub async fn depth(ch: &Channel, q: &str) -> u32 {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// The next delivery of a consumer, within 5 s.
pub async fn next(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer still open")
        .expect("delivery ok")
}

/// Nothing arrives within a short wait.
pub async fn quiet(consumer: &mut lapin::Consumer) -> bool {
    use futures_lite::StreamExt;
    tokio::time::timeout(Duration::from_millis(200), consumer.next())
        .await
        .is_err()
}

/// The real broker binary, running as a child process.
pub struct BrokerProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the real binary (ephemeral ports, on 127.0.0.1) with extra `args`
/// and `env`, optionally under an open-files limit, and wait until it
/// accepts connections.
pub fn spawn_warren(args: &[String], env: &[(&str, &str)], fd_limit: Option<u32>) -> BrokerProcess {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_warren");
    let mut command = match fd_limit {
        // The shell sets the limit, then becomes the broker.
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command
        .args([
            "--amqp-port",
            "0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .env("WARREN_AMQP__BIND", "127.0.0.1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("spawn warren");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.expect("broker log");
        if let Some(addr) = line.split("started TCP listener on ").nth(1) {
            port = addr
                .trim()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
        if line.contains("Server startup complete") {
            break;
        }
        assert!(!line.contains("ERROR"), "broker failed to start: {line}");
    }
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let port = port.expect("the broker logged its port (did it fail to open the store?)");
    BrokerProcess {
        child,
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
    }
}

/// A memory backend that runs `before_write` before every insert, remove
/// and flush (a failing or a slow disk).
pub struct HookedBackend {
    inner: warren::store::MemoryBackend,
    before_write: Box<dyn Fn() -> warren::store::StoreResult<()> + Send + Sync>,
}

impl std::fmt::Debug for HookedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookedBackend")
    }
}

impl HookedBackend {
    pub fn new(
        before_write: impl Fn() -> warren::store::StoreResult<()> + Send + Sync + 'static,
    ) -> HookedBackend {
        HookedBackend {
            inner: Default::default(),
            before_write: Box::new(before_write),
        }
    }
}

impl warren::store::Backend for HookedBackend {
    fn get(
        &self,
        tree: warren::store::Tree,
        key: &[u8],
    ) -> warren::store::StoreResult<Option<Vec<u8>>> {
        self.inner.get(tree, key)
    }
    fn insert(
        &self,
        tree: warren::store::Tree,
        key: &[u8],
        value: &[u8],
    ) -> warren::store::StoreResult<()> {
        (self.before_write)()?;
        self.inner.insert(tree, key, value)
    }
    fn remove(&self, tree: warren::store::Tree, key: &[u8]) -> warren::store::StoreResult<()> {
        (self.before_write)()?;
        self.inner.remove(tree, key)
    }
    fn take(
        &self,
        tree: warren::store::Tree,
        key: &[u8],
    ) -> warren::store::StoreResult<Option<Vec<u8>>> {
        (self.before_write)()?;
        self.inner.take(tree, key)
    }
    fn scan(
        &self,
        tree: warren::store::Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> warren::store::StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(tree, from, to, limit)
    }
    fn last_key(
        &self,
        tree: warren::store::Tree,
        from: &[u8],
        to: &[u8],
    ) -> warren::store::StoreResult<Option<Vec<u8>>> {
        self.inner.last_key(tree, from, to)
    }
    fn flush(&self) -> warren::store::StoreResult<()> {
        (self.before_write)()?;
        self.inner.flush()
    }
}
