"""Error scope: a channel error closes only its channel, a connection error
only its connection; everything else goes on working."""

import time

import pika
import pika.exceptions
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from amqp_support import Deliveries, channel_error, depth


def connection_error(conn, timeout=5.0):
    """Run the I/O loop until the broker closes the connection; return the
    ConnectionClosedByBroker."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    except ConnectionClosedByBroker as e:
        return e
    pytest.fail("the broker did not close the connection")


def still_works(conn, names, label):
    """A full round trip on a new channel of `conn`."""
    ch = conn.channel()
    q = names.q(label)
    ch.queue_declare(q)
    ch.basic_publish("", q, b"still here")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"still here"
    return ch


def test_a_channel_error_leaves_other_channels_and_connections_working(connect, names):
    conn = connect()
    other_conn = connect()
    healthy = conn.channel()
    doomed = conn.channel()
    h = names.q("h")
    healthy.queue_declare(h)
    consumer = Deliveries(conn, healthy, h)
    with pytest.raises(ChannelClosedByBroker) as ei:
        doomed.queue_declare(names.q("nope"), passive=True)
    assert ei.value.reply_code == 404
    assert doomed.is_closed
    assert conn.is_open and healthy.is_open
    # The healthy channel's consumer still gets messages...
    healthy.basic_publish("", h, b"ok")
    assert consumer.wait(1)[0][2] == b"ok"
    # ...and the other connection sees the same broker.
    other = other_conn.channel()
    other.basic_publish("", h, b"from the other connection")
    assert consumer.wait(2)[1][2] == b"from the other connection"
    still_works(conn, names, "after")


def test_an_asynchronous_channel_error_closes_only_that_channel(connect, broker, names):
    conn = connect()
    healthy = conn.channel()
    doomed = conn.channel()
    q = names.q("q")
    healthy.queue_declare(q)
    # basic.publish has no reply: the error arrives as a channel.close.
    doomed.basic_publish(names.x("missing"), "k", b"x")
    e = channel_error(doomed)
    assert e.reply_code == 404
    assert e.reply_text == (f"NOT_FOUND - no exchange '{names.exchanges[-1]}' "
                            f"in vhost '{broker.vhost}'")
    assert conn.is_open
    healthy.basic_publish("", q, b"fine")
    assert depth(healthy, q, 1) == 1


def test_a_connection_error_closes_only_that_connection(connect, names):
    victim = connect()
    bystander = connect()
    bch = bystander.channel()
    q = names.q("t")
    bch.queue_declare(q)
    bconsumer = Deliveries(bystander, bch, q)

    ch = victim.channel()
    ch.basic_consume(q, lambda *a: None, consumer_tag="x")
    # pika refuses to reuse a tag itself, so send the basic.consume raw.
    ch._impl._send_method(pika.spec.Basic.Consume(queue=q, consumer_tag="x"))
    e = connection_error(victim)
    assert (e.reply_code, e.reply_text) == (
        530, "NOT_ALLOWED - attempt to reuse consumer tag 'x'")
    assert victim.is_closed
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        victim.channel()

    # The other connection, its consumer and new connections are fine.
    assert bystander.is_open and bch.is_open
    bch.basic_publish("", q, b"after")
    assert bconsumer.wait(1)[0][2] == b"after"
    still_works(connect(), names, "fresh")


def test_a_channel_error_returns_the_channels_unacked_messages(connect, names):
    conn = connect()
    ch = conn.channel()
    q = names.q("unacked")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"held")
    method, _, _ = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag + 100)
    e = channel_error(ch)
    assert e.reply_code == 406
    observer = conn.channel()
    assert depth(observer, q, 1) == 1
    method, _, body = observer.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"held", True)


def test_a_closed_channel_number_can_be_reused(conn, names):
    ch = conn.channel()
    number = ch.channel_number
    with pytest.raises(ChannelClosedByBroker):
        ch.queue_declare(names.q("missing"), passive=True)
    again = conn.channel(channel_number=number)
    assert again.channel_number == number
    q = names.q("reuse")
    again.queue_declare(q)
    again.basic_publish("", q, b"x")
    assert again.basic_get(q, auto_ack=True)[2] == b"x"
