use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;

use crate::common::*;

#[tokio::test]
async fn publish_and_consume_round_trip() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "hello".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "hello".into(),
        BasicPublishOptions::default(),
        b"Hello World!",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            "hello".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    assert_eq!(delivery.data, b"Hello World!");
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    server.shutdown().await;
}
