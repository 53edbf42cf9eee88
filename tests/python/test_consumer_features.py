"""Consumer features: single active consumer, consumer priorities
(x-priority) and direct reply-to (amq.rabbitmq.reply-to)."""

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqp_support import Deliveries, channel_error, get_one

REPLY_TO = "amq.rabbitmq.reply-to"


def test_single_active_consumer(conn, names):
    setup = conn.channel()
    q = names.q("sac")
    setup.queue_declare(q, arguments={"x-single-active-consumer": True})
    first_ch, second_ch = conn.channel(), conn.channel()
    first = Deliveries(conn, first_ch, q, consumer_tag="first")
    second = Deliveries(conn, second_ch, q, consumer_tag="second")
    assert setup.queue_declare(q, passive=True).method.consumer_count == 2
    for i in range(3):
        setup.basic_publish("", q, f"m{i}".encode())
    first.wait(3)
    assert second.quiet(0.2)
    assert first.bodies() == [b"m0", b"m1", b"m2"]
    for method, _, _ in first.items:
        first_ch.basic_ack(method.delivery_tag)

    first_ch.basic_cancel("first")
    for i in range(3, 5):
        setup.basic_publish("", q, f"m{i}".encode())
    second.wait(2)
    assert second.bodies() == [b"m3", b"m4"]
    assert len(first.items) == 3


def test_single_active_consumer_unacked_messages_go_to_the_next_one(conn, names):
    setup = conn.channel()
    q = names.q("sac")
    setup.queue_declare(q, arguments={"x-single-active-consumer": True})
    first_ch, second_ch = conn.channel(), conn.channel()
    first = Deliveries(conn, first_ch, q)
    second = Deliveries(conn, second_ch, q)
    setup.basic_publish("", q, b"held 1")
    setup.basic_publish("", q, b"held 2")
    first.wait(2)
    assert second.quiet(0.1)
    # Closing the channel requeues both; the second consumer takes over.
    first_ch.close()
    second.wait(2)
    assert [(b, m.redelivered) for (m, _, b) in second.items] == [
        (b"held 1", True), (b"held 2", True)]


def test_consumer_priority_takes_all_while_it_has_credit(conn, names):
    setup = conn.channel()
    q = names.q("prio")
    setup.queue_declare(q)
    # The low-priority consumer comes first, so this is not registration order.
    low = Deliveries(conn, conn.channel(), q, auto_ack=True)
    high = Deliveries(conn, conn.channel(), q, auto_ack=True,
                      arguments={"x-priority": 10})
    for i in range(10):
        setup.basic_publish("", q, str(i).encode())
    high.wait(10)
    assert low.quiet(0.1)
    assert low.items == []


def test_consumer_priority_spills_over_when_the_high_one_is_full(conn, names):
    setup = conn.channel()
    q = names.q("prio")
    setup.queue_declare(q)
    low_ch, high_ch = conn.channel(), conn.channel()
    high_ch.basic_qos(prefetch_count=1)
    low = Deliveries(conn, low_ch, q, arguments={"x-priority": 1})
    high = Deliveries(conn, high_ch, q, arguments={"x-priority": 5})
    setup.basic_publish("", q, b"0")
    high.wait(1)
    # High is full (prefetch 1, unacked): the next ones go to low.
    setup.basic_publish("", q, b"1")
    setup.basic_publish("", q, b"2")
    low.wait(2)
    assert high.quiet(0.1)
    assert (high.bodies(), low.bodies()) == ([b"0"], [b"1", b"2"])
    # Room again on high: it gets the next one.
    high_ch.basic_ack(high.items[0][0].delivery_tag)
    setup.basic_publish("", q, b"3")
    high.wait(2)
    assert low.quiet(0.1)
    assert (high.bodies(), low.bodies()) == ([b"0", b"3"], [b"1", b"2"])


def test_direct_reply_to_round_trip(connect, names):
    client, server = connect(), connect()
    cch, sch = client.channel(), server.channel()
    requests = names.q("rpc")
    sch.queue_declare(requests)
    replies = Deliveries(client, cch, REPLY_TO, auto_ack=True)
    cch.basic_publish("", requests, b"ping",
                      pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c-1"))
    _, props, body = get_one(sch, requests)
    assert body == b"ping"
    # The broker rewrote reply_to to a name only this consumer receives.
    assert props.reply_to.startswith(REPLY_TO + ".")
    assert len(props.reply_to) > len(REPLY_TO) + 1
    assert props.correlation_id == "c-1"
    sch.basic_publish("", props.reply_to, b"pong",
                      pika.BasicProperties(correlation_id=props.correlation_id))
    (method, rprops, rbody), = replies.wait(1)
    assert (rbody, rprops.correlation_id) == (b"pong", "c-1")
    assert (method.consumer_tag, method.exchange, method.routing_key) == (
        replies.tag, "", props.reply_to)
    # The pseudo-queue shows its consumer.
    ok = cch.queue_declare(REPLY_TO, passive=True)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (
        REPLY_TO, 0, 1)


def test_direct_reply_to_needs_no_ack_mode(ch):
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.basic_consume(REPLY_TO, lambda *args: None, auto_ack=False)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")


def test_direct_reply_to_needs_a_consumer_first(ch, names):
    ch.basic_publish("", names.q("rpc"), b"ping", pika.BasicProperties(reply_to=REPLY_TO))
    err = channel_error(ch)
    assert (err.reply_code, err.reply_text) == (
        406, "PRECONDITION_FAILED - fast reply consumer does not exist")
