//! OpenTelemetry through lapin: the real binary exports its spans of a
//! message carrying `traceparent` to an OTLP/HTTP receiver started here
//! (protobuf decoded with `opentelemetry-proto`); the consumer gets the
//! same `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::common::{declare, eventually, next, spawn_warren};

type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP receiver on an ephemeral port; returns its base URL.
async fn otlp_receiver(spans: Received) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let spans = spans.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = spans.lock().unwrap();
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        kept.extend(ss.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key} of {} is {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(any_value::Value::IntValue(n)) => *n,
        other => panic!("{key} of {} is {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_message_has_the_brokers_spans_and_keeps_its_traceparent() {
    let received = Received::default();
    let endpoint = otlp_receiver(received.clone()).await;
    let broker = tokio::task::spawn_blocking(move || {
        spawn_warren(
            &["--ephemeral".into()],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ],
            None,
        )
    })
    .await
    .unwrap();
    let conn = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = "lapin-traced";
    declare(&ch, q).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent.as_str())),
    );
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        b"hello",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            q.into(),
            "lapin-ctag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = next(&mut consumer).await;
    let got = delivery.properties.headers().as_ref().unwrap();
    assert_eq!(
        got.inner().get("traceparent"),
        Some(&AMQPValue::LongString(LongString::from(
            traceparent.as_str()
        )))
    );
    delivery.ack(BasicAckOptions::default()).await.unwrap();

    let wanted = [
        "receive amq.default",
        "enqueue lapin-traced",
        "deliver lapin-traced",
        "ack lapin-traced",
    ];
    let complete = eventually(Duration::from_secs(10), || {
        let spans = received.lock().unwrap();
        wanted.iter().all(|w| {
            spans
                .iter()
                .any(|s| s.name == *w && hex(&s.trace_id) == trace_id)
        })
    })
    .await;
    let spans = received.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(complete, "spans received: {names:?}");
    let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
    let receive = find("receive amq.default");
    assert_eq!(hex(&receive.parent_span_id), parent);
    assert_eq!(text(receive, "messaging.system"), "rabbitmq");
    assert_eq!(
        text(receive, "messaging.rabbitmq.destination.routing_key"),
        q
    );
    let enqueue = find("enqueue lapin-traced");
    assert_eq!(enqueue.parent_span_id, receive.span_id);
    assert_eq!(text(enqueue, "messaging.destination.name"), q);
    let deliver = find("deliver lapin-traced");
    assert_eq!(hex(&deliver.parent_span_id), parent);
    assert_eq!(
        int(deliver, "messaging.rabbitmq.message.delivery_tag"),
        delivery.delivery_tag as i64
    );
    assert_eq!(text(deliver, "warren.consumer_tag"), "lapin-ctag");
    let ack = find("ack lapin-traced");
    assert_eq!(text(ack, "messaging.operation.type"), "settle");
    assert_eq!(
        int(ack, "messaging.rabbitmq.message.delivery_tag"),
        delivery.delivery_tag as i64
    );
    drop(broker);
}
