//! Not a test: the recorder of the fuzz targets' seed corpus
//! (`fuzz/corpus/<target>/`), ignored in normal runs. Run it with
//!
//! ```sh
//! cargo test --test it record_fuzz_corpus -- --ignored
//! ```
//!
//! It puts a recording proxy between lapin and a real broker (on disk, with
//! frame_max 8192 so that bodies span frames), runs client sessions that
//! between them send every method lapin has and properties of every kind,
//! and cuts what the clients sent into each target's seeds: a connection's
//! bytes after its handshake (connection, assembler, frame_decoder — whole
//! and cut mid-frame), each kind of method payload once (methods), each
//! distinct content header's properties (properties), and the definitions
//! the broker stored (definitions). The config seeds are the shipped
//! `config.toml` and small files beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::{AMQPClass, connection};
use bytes::BytesMut;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren::amqp::codec::{self, Frame};

use crate::common::*;

/// Everything each client connection sent, in connection order.
type Recorded = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// Forward every connection to `broker`, keeping what the client sent.
async fn proxy(listener: TcpListener, broker: std::net::SocketAddr, recorded: Recorded) {
    while let Ok((client, _)) = listener.accept().await {
        let server = TcpStream::connect(broker).await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        recorded.lock().unwrap().push(log.clone());
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = client_rd.read(&mut buf).await {
                if n == 0 || server_wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = server_wr.shutdown().await;
        });
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
        });
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Headers of every field type lapin can send, a nested table and array,
/// and `CC`.
fn rich_headers() -> FieldTable {
    table(&[
        ("bool", AMQPValue::Boolean(true)),
        ("byte", AMQPValue::ShortShortInt(-5)),
        ("short", AMQPValue::ShortInt(-300)),
        ("int", AMQPValue::LongInt(70_000)),
        ("long", AMQPValue::LongLongInt(-1 << 40)),
        ("float", AMQPValue::Float(2.5)),
        ("double", AMQPValue::Double(1.5)),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("text", text("long string \u{e9}")),
        ("void", AMQPValue::Void),
        (
            "nested",
            AMQPValue::FieldTable(table(&[("inner", AMQPValue::LongInt(7))])),
        ),
        (
            "list",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Boolean(false),
                text("a"),
                AMQPValue::LongInt(1),
            ])),
        ),
        (
            "CC",
            AMQPValue::FieldArray(FieldArray::from(vec![text("cc.key")])),
        ),
    ])
}

fn every_property() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(rich_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply.here".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_001)
        .with_type("type-x".into())
        .with_user_id("guest".into())
        .with_app_id("app-y".into())
        .with_cluster_id("cluster-z".into())
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap();
}

/// Declarations of every kind, with arguments; durable, so that they are
/// stored (the definitions seeds).
async fn session_topology(url: &str) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind) in [
        ("fz.topic", ExchangeKind::Topic),
        ("fz.headers", ExchangeKind::Headers),
        ("fz.fanout", ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await
            .unwrap();
    }
    ch.exchange_declare(
        "fz.direct".into(),
        ExchangeKind::Direct,
        durable,
        table(&[("alternate-exchange", text("fz.fanout"))]),
    )
    .await
    .unwrap();
    let queue_args = table(&[
        ("x-message-ttl", AMQPValue::LongInt(60_000)),
        ("x-max-length", AMQPValue::LongInt(1000)),
        ("x-overflow", text("reject-publish")),
        ("x-dead-letter-exchange", text("fz.fanout")),
        ("x-dead-letter-routing-key", text("dead")),
        ("x-max-priority", AMQPValue::ShortShortUInt(9)),
    ]);
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("fz.work".into(), durable_q, queue_args)
        .await
        .unwrap();
    ch.queue_declare(
        "fz.lazy".into(),
        durable_q,
        table(&[
            ("x-queue-mode", text("lazy")),
            ("x-expires", AMQPValue::LongInt(3_600_000)),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
        ]),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "fz.work".into(),
        "fz.topic".into(),
        "orders.*.created.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "fz.lazy".into(),
        "fz.headers".into(),
        "".into(),
        QueueBindOptions::default(),
        table(&[("x-match", text("any")), ("region", text("eu"))]),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "fz.fanout".into(),
        "fz.topic".into(),
        "audit.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let exclusive = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_unbind(
        "fz.work".into(),
        "fz.topic".into(),
        "never.bound".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_delete(
        exclusive.name().as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "fz.gone".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_unbind(
        "fz.fanout".into(),
        "fz.topic".into(),
        "not.bound".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_delete("fz.gone".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// Publishes with confirms: properties of every kind, a body spanning
/// frames, an empty body, mandatory and unroutable.
async fn session_publish(url: &str) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&ch, "fz.plain").await;
    publish(&ch, "", "fz.plain", b"hello", every_property()).await;
    publish(&ch, "", "fz.plain", b"", BasicProperties::default()).await;
    publish(
        &ch,
        "",
        "fz.plain",
        &[b'x'; 10_000],
        BasicProperties::default(),
    )
    .await;
    publish(
        &ch,
        "fz.topic",
        "orders.eu.created.x",
        b"{}",
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2),
    )
    .await;
    publish(
        &ch,
        "fz.headers",
        "",
        b"h",
        BasicProperties::default().with_headers(table(&[("region", text("eu"))])),
    )
    .await;
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"back",
        BasicProperties::default().with_priority(3),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    ch.wait_for_confirms().await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// Consumers and gets: qos, ack, nack multiple, reject, recover, cancel,
/// purge.
async fn session_consume(url: &str) {
    use futures_lite::StreamExt;
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "fz.c").await;
    for i in 0..6u8 {
        put(&ch, "fz.c", &[b'0' + i]).await;
    }
    ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "fz.c".into(),
            "fz-tag".into(),
            BasicConsumeOptions::default(),
            table(&[("x-priority", AMQPValue::LongInt(5))]),
        )
        .await
        .unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    let second = consumer.next().await.unwrap().unwrap();
    let third = consumer.next().await.unwrap().unwrap();
    first.ack(BasicAckOptions::default()).await.unwrap();
    third
        .nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        })
        .await
        .unwrap();
    let again = consumer.next().await.unwrap().unwrap();
    again
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    drop(second);
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    ch.basic_cancel("fz-tag".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let got = ch
        .basic_get("fz.c".into(), BasicGetOptions::default())
        .await
        .unwrap();
    if let Some(m) = got {
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.basic_get("fz.c".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    ch.queue_purge("fz.c".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    ch.channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap();
    ch.close(200, "bye".into()).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// Transactions, and a channel closed by a soft error.
async fn session_tx(url: &str) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "fz.tx").await;
    ch.tx_select().await.unwrap();
    put(&ch, "fz.tx", b"committed").await;
    ch.tx_commit().await.unwrap();
    put(&ch, "fz.tx", b"rolled back").await;
    ch.tx_rollback().await.unwrap();
    let other = conn.create_channel().await.unwrap();
    let _ = other
        .queue_declare(
            "fz.missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    conn.close(200, "done".into()).await.unwrap();
}

/// The bytes after the handshake: everything past `connection.open`.
fn after_handshake(stream: &[u8]) -> Option<Vec<u8>> {
    let mut buf = BytesMut::from(stream.get(8..)?);
    loop {
        match codec::decode(&mut buf, 0).ok()?? {
            Frame::Method { method, .. }
                if matches!(
                    *method,
                    AMQPClass::Connection(connection::AMQPMethod::Open(_))
                ) =>
            {
                return Some(buf.to_vec());
            }
            _ => {}
        }
    }
}

/// The frames of `bytes`, each with the bytes it was cut from.
fn frames(bytes: &[u8]) -> Vec<(Frame, Vec<u8>)> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        let before = buf.clone();
        match codec::decode(&mut buf, 0) {
            Ok(Some(frame)) => {
                let used = before.len() - buf.len();
                out.push((frame, before[..used].to_vec()));
            }
            _ => return out,
        }
    }
}

fn write_seeds(dir: &Path, seeds: &BTreeMap<String, Vec<u8>>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn definition_seeds(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let store =
        warren::store::Store::open(dir, &warren::Config::defaults().storage.store_options())
            .expect("the recorded broker's store opens");
    let defs = store.load_definitions().unwrap();
    let mut records: Vec<(String, u8, Vec<u8>)> = Vec::new();
    let mut add = |what: &str, kind: u8, json: Vec<u8>| records.push((what.into(), kind, json));
    for v in &defs.vhosts {
        add("vhost", b'v', serde_json::to_vec(v).unwrap());
    }
    for u in &defs.users {
        add("user", b'u', serde_json::to_vec(u).unwrap());
    }
    for p in &defs.permissions {
        add("permission", b'p', serde_json::to_vec(p).unwrap());
    }
    for e in &defs.exchanges {
        add("exchange", b'e', serde_json::to_vec(e).unwrap());
    }
    for q in &defs.queues {
        add("queue", b'q', serde_json::to_vec(q).unwrap());
    }
    for b in &defs.bindings {
        add("binding", b'b', serde_json::to_vec(b).unwrap());
    }
    let policy = warren::store::PolicyRecord {
        vhost: "/".into(),
        name: "fz-policy".into(),
        pattern: "^fz\\.".into(),
        apply_to: "queues".into(),
        priority: 1,
        definition: serde_json::from_str(
            r#"{"max-length": 10, "dead-letter-exchange": "fz.fanout", "message-ttl": 1000}"#,
        )
        .unwrap(),
    };
    add("policy", b'P', serde_json::to_vec(&policy).unwrap());
    let line = |(_, kind, json): &(String, u8, Vec<u8>)| [&[*kind][..], json].concat();
    let mut seeds = BTreeMap::new();
    seeds.insert(
        "all".to_string(),
        records.iter().map(line).collect::<Vec<_>>().join(&b'\n'),
    );
    for (i, r) in records.iter().enumerate() {
        seeds
            .entry(r.0.clone())
            .or_insert_with(|| line(&records[i]));
    }
    seeds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes fuzz/corpus; run by hand to re-record the seeds"]
async fn record_fuzz_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.limits.frame_max = 8192;
    let server = start_with(config).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "amqp://guest:guest@{}/%2f?heartbeat=0&frame_max=8192",
        listener.local_addr().unwrap()
    );
    let recorded: Recorded = Arc::default();
    tokio::spawn(proxy(listener, server.amqp_addr(), recorded.clone()));
    session_topology(&url).await;
    session_publish(&url).await;
    session_consume(&url).await;
    session_tx(&url).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    server.shutdown().await;

    let names = ["topology", "publish", "consume", "tx"];
    let streams: Vec<(String, Vec<u8>)> = recorded
        .lock()
        .unwrap()
        .iter()
        .zip(names)
        .map(|(log, name)| {
            let bytes = log.lock().unwrap().clone();
            (
                name.to_string(),
                after_handshake(&bytes).expect("a handshake"),
            )
        })
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let whole: BTreeMap<String, Vec<u8>> = streams.iter().cloned().collect();
    write_seeds(&root.join("connection"), &whole);
    write_seeds(&root.join("assembler"), &whole);

    let mut decoder = whole.clone();
    let mut methods = BTreeMap::new();
    let mut properties = BTreeMap::new();
    for (name, bytes) in &streams {
        let frames = frames(bytes);
        // A publish's frames cut inside the header and inside the body.
        if let Some((_, raw)) = frames.iter().find(|(f, _)| matches!(f, Frame::Body { .. })) {
            decoder.insert(format!("{name}-body-cut"), raw[..raw.len() / 2].to_vec());
        }
        for (frame, raw) in &frames {
            match frame {
                Frame::Method { method, .. } => {
                    let kind = format!(
                        "{}.{}",
                        method.get_amqp_class_id(),
                        method.get_amqp_method_id()
                    );
                    methods
                        .entry(kind)
                        .or_insert_with(|| raw[7..raw.len() - 1].to_vec());
                }
                Frame::Header { .. } => {
                    let props = raw[7 + 12..raw.len() - 1].to_vec();
                    let n = properties.len();
                    if !properties.values().any(|p| *p == props) {
                        properties.insert(format!("header-{n}"), props);
                    }
                }
                _ => {}
            }
        }
    }
    write_seeds(&root.join("frame_decoder"), &decoder);
    write_seeds(&root.join("methods"), &methods);
    write_seeds(&root.join("properties"), &properties);
    write_seeds(&root.join("definitions"), &definition_seeds(dir.path()));

    let shipped =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
    let config_seeds: BTreeMap<String, Vec<u8>> = [
        ("shipped", shipped),
        (
            "small-with-env",
            b"[amqp]\nport = 5673\n[limits]\nheartbeat = 30\nframe_max = 4096\n\0\
              WARREN_LIMITS__CHANNEL_MAX=16\nWARREN_AUTH__DEFAULT_VHOST=v\nRABBITMQ_DEFAULT_USER=u\n"
                .to_vec(),
        ),
        (
            "storage",
            b"[storage]\nephemeral = false\ndata_dir = \"/tmp/w\"\n[log]\nlevel = \"debug\"\n"
                .to_vec(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    write_seeds(&root.join("config"), &config_seeds);
}
