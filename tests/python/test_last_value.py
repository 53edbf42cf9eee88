"""Last-value queues (Warren's; RabbitMQ has none): x-last-value-key (or
Qpid's qpid.last_value_queue_key) names a header, and a queue keeps only
the newest ready message per value of it."""

import pika
import pytest

from amqp_support import depth, get_all, warren_on, warren_only

pytestmark = warren_only


@pytest.mark.parametrize("argument", ["x-last-value-key", "qpid.last_value_queue_key"])
def test_the_newest_message_per_key_replaces_the_older(ch, names, argument):
    q = names.q("lvq")
    ch.queue_declare(q, arguments={argument: "symbol"})
    for symbol, price in [("ACME", 1), ("INIT", 7), ("ACME", 2), ("ACME", 3), ("INIT", 8)]:
        ch.basic_publish("", q, f"{symbol}={price}".encode(),
                         pika.BasicProperties(headers={"symbol": symbol}))
    ch.basic_publish("", q, b"no-key")
    assert depth(ch, q, expect=3) == 3
    # Each replacement joins the tail.
    assert [b for _, _, b in get_all(ch, q)] == [b"ACME=3", b"INIT=8", b"no-key"]


def test_a_delivered_message_is_not_replaced(conn, names):
    ch = conn.channel()
    q = names.q("lvq")
    ch.queue_declare(q, arguments={"x-last-value-key": "k"})
    ch.basic_publish("", q, b"v1", pika.BasicProperties(headers={"k": "a"}))
    method, _, body = ch.basic_get(q)
    assert body == b"v1"
    ch.basic_publish("", q, b"v2", pika.BasicProperties(headers={"k": "a"}))
    ch.basic_publish("", q, b"v3", pika.BasicProperties(headers={"k": "a"}))
    assert depth(ch, q, expect=1) == 1
    ch.basic_ack(method.delivery_tag)
    assert [b for _, _, b in get_all(ch, q)] == [b"v3"]


def test_a_key_that_is_not_a_string_is_refused(connect, names):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(names.q("bad"), arguments={"x-last-value-key": 5})
    assert e.value.reply_code == 406


def test_a_durable_last_value_queue_keeps_the_newest_across_a_restart(tmp_path):
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        ch.queue_declare("prices", durable=True, arguments={"x-last-value-key": "symbol"})
        ch.confirm_delivery()
        for price in range(5):
            ch.basic_publish("", "prices", f"ACME={price}".encode(), pika.BasicProperties(
                delivery_mode=2, headers={"symbol": "ACME"}))
        conn.close()
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        assert [b for _, _, b in get_all(ch, "prices")] == [b"ACME=4"]
        conn.close()
