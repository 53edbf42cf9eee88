"""Helpers for the stream tests (test_streams.py, test_super_streams.py):
declaring streams, publishing with confirms, and a collecting consumer."""

import struct

import pika
import pika.data
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from amqp_support import RABBITMQ_URL, pump, wait_until

STREAM = {"x-queue-type": "stream"}

# RabbitMQ refreshes a stream's message count every ~5 s; Warren at once.
COUNT_TIMEOUT = 15.0 if RABBITMQ_URL else 3.0

rabbitmq_only = pytest.mark.skipif(
    not RABBITMQ_URL,
    reason="records what RabbitMQ 3.10.8 does where Warren deliberately differs")


# ------------------------------------------------------------------ helpers

def declare(ch, q, **args):
    """queue.declare a durable stream with extra x-arguments; the method."""
    return ch.queue_declare(q, durable=True, arguments=dict(STREAM, **args)).method


def publish(conn, q, bodies, properties=None):
    """Publish each body to q on a confirming channel, one at a time (each
    waits for its confirm, so on RabbitMQ each is a chunk of its own)."""
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", q, body, properties)
    ch.close()


def msgs(n, start=0, prefix="m"):
    return [f"{prefix}{i}".encode() for i in range(start, start + n)]


class Reader:
    """A stream consumer on a channel of its own: basic.qos(prefetch), then
    basic.consume with `x-stream-offset` = offset (left out when None) and
    any other arguments. Deliveries are collected and, unless ack=False,
    acked as they arrive."""

    def __init__(self, conn, q, offset=None, prefetch=100, ack=True,
                 tag=None, arguments=None, exclusive=False):
        self.conn = conn
        self.ch = conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        args = dict(arguments or {})
        if offset is not None:
            args["x-stream-offset"] = offset
        self.ack = ack
        self.items = []
        self.cancelled = []
        self.ch.add_on_cancel_callback(self.cancelled.append)
        self.tag = self.ch.basic_consume(q, self._on_message, arguments=args,
                                         consumer_tag=tag, exclusive=exclusive)

    def _on_message(self, ch, method, properties, body):
        self.items.append((method, properties, body))
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    def wait(self, n, timeout=5.0):
        ok = wait_until(self.conn, lambda: len(self.items) >= n, timeout)
        assert ok, f"expected {n} deliveries, got {len(self.items)}: {self.bodies()}"
        return self

    def quiet(self, seconds=0.2):
        before = len(self.items)
        pump(self.conn, seconds)
        return len(self.items) == before

    def exactly(self, bodies, quiet=0.2):
        """Wait for len(bodies) deliveries, then a quiet spell; the bodies
        received must be exactly `bodies`."""
        self.wait(len(bodies))
        self.quiet(quiet)
        assert self.bodies() == list(bodies)
        return self

    def bodies(self):
        return [b for (_, _, b) in self.items]

    def offsets(self):
        return [p.headers["x-stream-offset"] for (_, p, _) in self.items]

    def cancel(self):
        self.ch.basic_cancel(self.tag)


def first_retained(conn, q, timeout=2.0):
    """The body of the first message a consumer from "first" gets, or None
    if none arrives within `timeout`."""
    r = Reader(conn, q, "first", prefetch=1, ack=False)
    wait_until(conn, lambda: r.items, timeout)
    body = r.items[0][2] if r.items else None
    r.ch.close()
    return body


def read_all(conn, q, expect_last, timeout=5.0):
    """Everything a consumer from "first" gets, once a body `expect_last`
    arrived; the Reader."""
    r = Reader(conn, q, "first", prefetch=1000)
    assert wait_until(conn, lambda: expect_last in r.bodies(), timeout), r.bodies()
    r.quiet(0.1)
    return r


def roundtrip(ch):
    """A synchronous method on ch, so an asynchronous refusal surfaces."""
    ch.exchange_declare("amq.direct", exchange_type="direct", passive=True)


def refused_on_channel(fn):
    """fn() must make the broker close the channel; (code, text)."""
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn()
    return ei.value.reply_code, ei.value.reply_text


def refused_on_connection(conn, fn):
    """fn() must make the broker close the connection; (code, text)."""
    with pytest.raises(ConnectionClosedByBroker) as ei:
        fn()
        for _ in range(40):
            conn.process_data_events(time_limit=0.05)
    return ei.value.reply_code, ei.value.reply_text


class offset_header_types:
    """A context manager: while active, the AMQP field-type byte of every
    `x-stream-offset` header value pika decodes is appended to .kinds
    (pika decodes signed 32- and 64-bit integers both to int)."""

    def __enter__(self):
        self.kinds = kinds = []
        self._orig = pika.data.decode_table
        data = pika.data

        def decode_table(encoded, offset):
            result = {}
            size = struct.unpack_from(">I", encoded, offset)[0]
            offset += 4
            limit = offset + size
            while offset < limit:
                key, offset = data.decode_short_string(encoded, offset)
                if key == "x-stream-offset":
                    kinds.append(bytes(encoded[offset:offset + 1]))
                value, offset = data.decode_value(encoded, offset)
                result[key] = value
            return result, offset

        pika.data.decode_table = decode_table
        return self

    def __exit__(self, *exc):
        pika.data.decode_table = self._orig
        return False


def prefix(vhost, q, arg):
    return f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '{vhost}'"
