"""The basic class through pika: consume, get, ack/nack/reject, QoS,
returns, CC/BCC, user-id validation, properties and bodies."""

import datetime
import decimal
import time

import pika
import pika.compat
import pika.data
import pika.exceptions
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqp_support import Deliveries, channel_error, depth, wait_until


def declare(ch, names, label="q"):
    q = names.q(label)
    ch.queue_declare(q)
    return q


def put(ch, q, *bodies):
    for body in bodies:
        ch.basic_publish("", q, body if isinstance(body, bytes) else body.encode())


def test_publish_consume_ack_round_trip(conn, names):
    """Tutorial 1, with an ack."""
    ch = conn.channel()
    q = declare(ch, names, "hello")
    ch.basic_publish("", q, b"Hello World!")
    got = Deliveries(conn, ch, q)
    method, props, body = got.wait(1)[0]
    assert body == b"Hello World!"
    assert (method.exchange, method.routing_key) == ("", q)
    assert method.consumer_tag == got.tag
    assert method.delivery_tag == 1
    assert method.redelivered is False
    ch.basic_ack(method.delivery_tag)
    ch.close()
    # Acked, so closing the channel requeued nothing.
    assert depth(conn.channel(), q) == 0


def test_work_queue_tutorial_two(connect, names):
    """Tutorial 2: two workers with prefetch 1 share durable tasks, acking
    each when done."""
    producer = connect()
    pch = producer.channel()
    q = names.q("task_queue")
    pch.queue_declare(q, durable=True)
    for i in range(6):
        pch.basic_publish("", q, f"task {i}".encode(),
                          pika.BasicProperties(delivery_mode=2))
    workers = []
    for _ in range(2):
        c = connect()
        wch = c.channel()
        wch.basic_qos(prefetch_count=1)
        workers.append((c, wch, Deliveries(c, wch, q)))
    acked = [0, 0]
    deadline = time.monotonic() + 10
    while sum(acked) < 6:
        assert time.monotonic() < deadline, f"only {sum(acked)} of 6 tasks done"
        for i, (c, wch, got) in enumerate(workers):
            c.process_data_events(time_limit=0.01)
            pending = got.items[acked[i]:]
            assert len(pending) <= 1, "prefetch 1 exceeded"
            for method, props, body in pending:
                assert props.delivery_mode == 2
                wch.basic_ack(method.delivery_tag)
                acked[i] += 1
    done = sorted(body for _, _, got in workers for _, _, body in got.items)
    assert done == [f"task {i}".encode() for i in range(6)]
    # Both workers got work.
    assert all(n >= 1 for n in acked), acked


def test_basic_get_and_get_empty(ch, names):
    q = declare(ch, names, "g")
    assert ch.basic_get(q) == (None, None, None)
    put(ch, q, "a", "b")
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"a"
    assert method.NAME == "Basic.GetOk"
    assert method.message_count == 1
    assert (method.exchange, method.routing_key, method.redelivered) == ("", q, False)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.message_count) == (b"b", 0)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_per_consumer_prefetch_limits_unacked_deliveries(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "pf")
    put(ch, q, *[str(i) for i in range(10)])
    ch.basic_qos(prefetch_count=2)
    got = Deliveries(conn, ch, q)
    got.wait(2)
    assert got.quiet(), "prefetch 2 exceeded"
    assert got.bodies() == [b"0", b"1"]
    ch.basic_ack(got.items[0][0].delivery_tag)
    got.wait(3)
    assert got.bodies()[2] == b"2"
    assert got.quiet(), "prefetch 2 exceeded after one ack"
    # A second consumer on the same channel has its own limit of 2.
    other = Deliveries(conn, ch, q)
    other.wait(2)
    assert other.quiet(0.2)
    assert other.bodies() == [b"3", b"4"]


def test_global_prefetch_is_shared_by_the_channels_consumers(conn, names):
    ch = conn.channel()
    a, b = declare(ch, names, "a"), declare(ch, names, "b")
    for _ in range(5):
        put(ch, a, "a")
        put(ch, b, "b")
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ca = Deliveries(conn, ch, a)
    ca.wait(3)
    cb = Deliveries(conn, ch, b)
    assert ca.quiet() and cb.quiet(0.1), "global prefetch 3 exceeded"
    assert (len(ca.items), len(cb.items)) == (3, 0)
    ch.basic_ack(ca.items[-1][0].delivery_tag)
    assert wait_until(conn, lambda: len(ca.items) + len(cb.items) == 4, timeout=3)
    assert ca.quiet(0.2) and len(ca.items) + len(cb.items) == 4


def test_no_ack_consumers_are_served_round_robin(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "rr")
    one = Deliveries(conn, ch, q, auto_ack=True, consumer_tag="one")
    two = Deliveries(conn, ch, q, auto_ack=True, consumer_tag="two")
    put(ch, q, "0", "1", "2", "3")
    assert wait_until(conn, lambda: len(one.items) + len(two.items) == 4)
    assert one.bodies() == [b"0", b"2"]
    assert two.bodies() == [b"1", b"3"]
    assert [m.consumer_tag for m, _, _ in one.items] == ["one", "one"]


def test_nack_and_reject_requeue_to_the_original_position_marked_redelivered(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "order")
    put(ch, q, "m1", "m2", "m3", "m4", "m5")
    ch.basic_qos(prefetch_count=5)
    got = Deliveries(conn, ch, q)
    first = got.wait(5)[:5]
    assert [b for _, _, b in first] == [b"m1", b"m2", b"m3", b"m4", b"m5"]
    assert all(m.redelivered is False for m, _, _ in first)
    ch.basic_nack(first[1][0].delivery_tag, requeue=True)  # m2
    ch.basic_reject(first[3][0].delivery_tag, requeue=True)  # m4
    items = got.wait(7)
    again_m2, again_m4 = items[5], items[6]
    assert (again_m2[2], again_m2[0].redelivered) == (b"m2", True)
    assert (again_m4[2], again_m4[0].redelivered) == (b"m4", True)
    assert again_m2[0].delivery_tag > first[4][0].delivery_tag
    # Reject without requeue drops m4; ack multiple on m2's new tag settles
    # m1, m3, m5 and m2.
    ch.basic_reject(again_m4[0].delivery_tag, requeue=False)
    ch.basic_ack(again_m2[0].delivery_tag, multiple=True)
    assert got.quiet(0.2)
    ch.close()
    # Nothing was left unacked to come back when the channel closed.
    assert depth(conn.channel(), q) == 0


def test_requeued_message_goes_ahead_of_newer_ones(ch, names):
    q = declare(ch, names, "q")
    put(ch, q, "first")
    method, _, body = ch.basic_get(q)
    assert (body, method.redelivered) == (b"first", False)
    put(ch, q, "second")
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"first", True)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"second", False)


def test_reject_and_nack_without_requeue_drop_the_message(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "drop")
    put(ch, q, "rejected", "nacked", "kept")
    m1, _, _ = ch.basic_get(q)
    m2, _, _ = ch.basic_get(q)
    ch.basic_reject(m1.delivery_tag, requeue=False)
    ch.basic_nack(m2.delivery_tag, requeue=False)
    ch.close()
    ch = conn.channel()
    assert depth(ch, q, 1) == 1
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"kept", False)


def test_ack_and_nack_multiple(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "multi")
    put(ch, q, *[str(i) for i in range(6)])
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(6)]
    assert tags == [1, 2, 3, 4, 5, 6]
    ch.basic_ack(3, multiple=True)  # 0, 1, 2 acked
    ch.basic_nack(5, multiple=True, requeue=True)  # 3, 4 back
    # 5 is still unacked; the two requeued are ready again, in order.
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered, method.message_count) == (b"3", True, 1)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.redelivered, method.message_count) == (b"4", True, 0)
    # ack with multiple and tag 0 settles everything outstanding.
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert depth(conn.channel(), q) == 0


def test_unknown_or_repeated_delivery_tags_are_precondition_failures(conn, names):
    ch = conn.channel()
    ch.basic_ack(99)
    e = channel_error(ch)
    assert (e.reply_code, e.reply_text) == (
        406, "PRECONDITION_FAILED - unknown delivery tag 99")

    ch = conn.channel()
    q = declare(ch, names, "q")
    put(ch, q, "x")
    method, _, _ = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    ch.basic_ack(method.delivery_tag)
    e = channel_error(ch)
    assert (e.reply_code, e.reply_text) == (
        406, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}")

    ch = conn.channel()
    ch.basic_reject(7)
    e = channel_error(ch)
    assert (e.reply_code, e.reply_text) == (
        406, "PRECONDITION_FAILED - unknown delivery tag 7")
    # Channel errors only: the connection still works.
    assert conn.is_open
    assert conn.channel().is_open


def test_cancel_stops_deliveries_and_unacked_messages_return_on_channel_close(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "c")
    got = Deliveries(conn, ch, q, consumer_tag="tag")
    put(ch, q, "held")
    method, _, _ = got.wait(1)[0]
    assert method.redelivered is False
    assert ch.basic_cancel("tag") == []
    put(ch, q, "after-cancel")
    assert got.quiet(0.2)
    assert len(got.items) == 1
    ch.close()
    ch2 = conn.channel()
    method, _, body = ch2.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"held", True)
    method, _, body = ch2.basic_get(q, auto_ack=True)
    assert (body, method.redelivered) == (b"after-cancel", False)


def test_closing_a_connection_requeues_its_unacked_messages(connect, names):
    consumer_conn = connect()
    ch = consumer_conn.channel()
    q = declare(ch, names, "u")
    put(ch, q, "0", "1", "2")
    got = Deliveries(consumer_conn, ch, q)
    got.wait(3)
    observer = connect().channel()
    assert depth(observer, q) == 0
    consumer_conn.close()
    assert depth(observer, q, 3) == 3
    for i in range(3):
        method, _, body = observer.basic_get(q, auto_ack=True)
        assert (body, method.redelivered) == (str(i).encode(), True)


def test_recover_requeues_unacked_deliveries(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "r")
    put(ch, q, "x")
    got = Deliveries(conn, ch, q)
    first = got.wait(1)[0]
    assert first[0].redelivered is False
    ch.basic_recover(requeue=True)
    again = got.wait(2)[1]
    assert (again[2], again[0].redelivered) == (b"x", True)


def test_consumer_tags_and_exclusive_consumers(connect, broker, names):
    conn = connect()
    ch = conn.channel()
    # pika always picks a tag itself; ask the broker for one (on an empty
    # queue, so that pika never sees a delivery for a tag it does not know).
    empty = declare(ch, names, "empty")
    ok = []
    ch._impl._rpc(pika.spec.Basic.Consume(queue=empty, consumer_tag=""),
                  lambda frame: ok.append(frame.method), [pika.spec.Basic.ConsumeOk])
    assert wait_until(conn, lambda: ok, timeout=3)
    assert ok[0].consumer_tag.startswith("amq.ctag-"), ok[0].consumer_tag
    assert len(ok[0].consumer_tag) > len("amq.ctag-")

    q = declare(ch, names, "ex")
    tag = ch.basic_consume(q, lambda *a: None, exclusive=True)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    assert tag in ch.consumer_tags
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        other.basic_consume(q, lambda *a: None)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        403, f"ACCESS_REFUSED - queue '{q}' in vhost '{broker.vhost}' in exclusive use")
    # An exclusive consumer cannot join a queue that has consumers either.
    q2 = declare(ch, names, "shared")
    ch.basic_consume(q2, lambda *a: None)
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        other.basic_consume(q2, lambda *a: None, exclusive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        403, f"ACCESS_REFUSED - queue '{q2}' in vhost '{broker.vhost}' in exclusive use")
    # The same tag on two channels is fine.
    a, b = conn.channel(), conn.channel()
    assert a.basic_consume(q2, lambda *x: None, consumer_tag="same") == "same"
    assert b.basic_consume(q2, lambda *x: None, consumer_tag="same") == "same"


def test_mandatory_unroutable_message_is_returned_with_312(conn, names):
    ch = conn.channel()
    x = names.x("nobody-home")
    ch.exchange_declare(x, exchange_type="direct")
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish(x, "nobody", b"lost?",
                         pika.BasicProperties(message_id="m-1"), mandatory=True)
    (returned,) = ei.value.messages
    assert returned.method.NAME == "Basic.Return"
    assert (returned.method.reply_code, returned.method.reply_text) == (312, "NO_ROUTE")
    assert (returned.method.exchange, returned.method.routing_key) == (x, "nobody")
    assert returned.body == b"lost?"
    assert returned.properties.message_id == "m-1"
    # Without mandatory the same message is silently dropped (and confirmed).
    ch.basic_publish(x, "nobody", b"dropped")
    # A routable mandatory message is not returned.
    q = declare(ch, names, "home")
    ch.queue_bind(q, x, routing_key="somebody")
    ch.basic_publish(x, "somebody", b"delivered", mandatory=True)
    assert ch.basic_get(q, auto_ack=True)[2] == b"delivered"


def test_basic_return_without_confirms_reaches_the_return_callback(conn, names):
    ch = conn.channel()
    returns = []
    ch.add_on_return_callback(lambda c, method, props, body: returns.append((method, body)))
    ch.basic_publish("", names.q("absent"), b"bounce", mandatory=True)
    assert wait_until(conn, lambda: returns, timeout=3), "no basic.return"
    method, body = returns[0]
    assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"bounce")
    assert method.exchange == ""


def test_cc_and_bcc_add_routing_keys_and_bcc_is_stripped(ch, names):
    main, cc, bcc = declare(ch, names, "main"), declare(ch, names, "cc"), declare(ch, names, "bcc")
    headers = {"CC": [cc], "BCC": [bcc], "other": "kept"}
    ch.basic_publish("", main, b"hi", pika.BasicProperties(headers=headers))
    for q in (main, cc, bcc):
        method, props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"hi", f"nothing in {q}"
        assert method.routing_key == main
        assert props.headers.get("CC") == [cc], q
        assert "BCC" not in props.headers, q
        assert props.headers.get("other") == "kept", q


def test_user_id_must_match_the_authenticated_user(conn, broker, names):
    ch = conn.channel()
    q = declare(ch, names, "u")
    ch.basic_publish("", q, b"ok", pika.BasicProperties(user_id=broker.user))
    ch.basic_publish("", q, b"forged", pika.BasicProperties(user_id="mallory"))
    e = channel_error(ch)
    assert (e.reply_code, e.reply_text) == (
        406, f"PRECONDITION_FAILED - user_id property set to 'mallory' but "
             f"authenticated user was '{broker.user}'")
    ch = conn.channel()
    assert depth(ch, q, 1) == 1
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert (body, props.user_id) == (b"ok", broker.user)


def test_invalid_expiration_is_refused(conn, names):
    ch = conn.channel()
    q = declare(ch, names, "exp")
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="abc"))
    e = channel_error(ch)
    assert (e.reply_code, e.reply_text) == (
        406, "PRECONDITION_FAILED - invalid expiration 'abc': no_integer")


HEADERS = {
    # pika 1.3 cannot encode a float, so there is none here.
    "int": 42,
    "negative-int": -70000,
    "long": 2 ** 40,
    "negative-long": -(2 ** 40),
    "small-long": pika.compat.long(7),
    "true": True,
    "false": False,
    "str": "long string \u00e9\u4e2d",
    "empty-str": "",
    "bytes": b"\xff\x00\x7f",
    "list": [1, "a", True, [2, "nested"], {"in": "table"}, None],
    "empty-list": [],
    "nested": {"inner": 7, "deeper": {"s": "x", "list": [1, 2]}},
    "empty-table": {},
    "timestamp": datetime.datetime(2023, 11, 14, 22, 13, 20),
    "decimal": decimal.Decimal("123.45"),
    "negative-decimal": decimal.Decimal("-0.5"),
    "void": None,
    "zz-last-key": "order kept",
}


def as_pika_sees_it(table):
    """What pika itself decodes from what it encodes for `table`."""
    pieces = []
    pika.data.encode_table(pieces, table)
    decoded, _ = pika.data.decode_table(b"".join(pieces), 0)
    return decoded


def test_all_properties_and_many_header_types_round_trip(conn, broker, names):
    ch = conn.channel()
    q = declare(ch, names, "props")
    sent = pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=HEADERS,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="reply.here",
        expiration="60000",
        message_id="msg-1",
        timestamp=1700000001,
        type="type-x",
        user_id=broker.user,
        app_id="app-y",
        cluster_id="cluster-z",
    )
    ch.basic_publish("", q, b"body", sent)
    got = Deliveries(conn, ch, q, auto_ack=True)
    _, props, body = got.wait(1)[0]
    assert body == b"body"
    for attr in ("content_type", "content_encoding", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id",
                 "timestamp", "type", "user_id", "app_id", "cluster_id"):
        assert getattr(props, attr) == getattr(sent, attr), attr
    expected = as_pika_sees_it(HEADERS)
    assert props.headers == expected
    assert list(props.headers) == list(HEADERS), "header order changed"
    # Spot checks, with the Python types pika gives back.
    h = props.headers
    assert h["int"] == 42 and h["negative-int"] == -70000
    assert h["long"] == 2 ** 40 and h["negative-long"] == -(2 ** 40)
    assert h["true"] is True and h["false"] is False
    assert h["str"] == "long string \u00e9\u4e2d"
    assert h["bytes"] == b"\xff\x00\x7f" and isinstance(h["bytes"], bytes)
    assert h["list"] == [1, "a", True, [2, "nested"], {"in": "table"}, None]
    assert h["nested"] == {"inner": 7, "deeper": {"s": "x", "list": [1, 2]}}
    assert h["timestamp"] == datetime.datetime(2023, 11, 14, 22, 13, 20)
    assert h["decimal"] == decimal.Decimal("123.45")
    assert h["negative-decimal"] == decimal.Decimal("-0.5")
    assert h["void"] is None


def test_unset_properties_stay_unset(ch, names):
    q = declare(ch, names, "bare")
    ch.basic_publish("", q, b"plain")
    _, props, _ = ch.basic_get(q, auto_ack=True)
    for attr in ("content_type", "content_encoding", "headers", "delivery_mode",
                 "priority", "correlation_id", "reply_to", "expiration",
                 "message_id", "timestamp", "type", "user_id", "app_id",
                 "cluster_id"):
        assert getattr(props, attr) is None, attr


@pytest.mark.parametrize("size", [0, 1, 131064, 131065, 1 << 20, 5_000_000])
def test_bodies_arrive_intact(ch, names, size):
    """0 and 1 byte, exactly one frame's payload and one byte more (frame_max
    131072 less 8 bytes of framing), 1 MiB, and several MiB."""
    q = declare(ch, names, f"size{size}")
    body = (bytes(range(251)) * (size // 251 + 1))[:size]
    ch.basic_publish("", q, body)
    method, _, got = ch.basic_get(q, auto_ack=True)
    assert method is not None
    assert len(got) == size
    assert got == body
    # And to a consumer.
    ch.basic_publish("", q, body)
    for _, _, got in ch.consume(q, auto_ack=True, inactivity_timeout=5):
        assert got is not None, "no delivery"
        assert len(got) == size and got == body
        break
    ch.cancel()
