"""Exchange declaration rules and routing for every exchange type, with the
RabbitMQ tutorials' examples."""

import pika
import pika.exceptions
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from amqp_support import channel_error, depth


def declare_queues(ch, names, *labels):
    qs = [names.q(label) for label in labels]
    for q in qs:
        ch.queue_declare(q)
    return qs


def publish(ch, exchange, key, body=b"m", headers=None):
    ch.basic_publish(exchange, key, body,
                     pika.BasicProperties(headers=headers) if headers else None)


def bodies(ch, q):
    out = []
    while True:
        method, _, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            return out
        out.append(body.decode())


def test_predeclared_exchanges_exist(ch):
    for name, kind in [("amq.direct", "direct"), ("amq.fanout", "fanout"),
                       ("amq.topic", "topic"), ("amq.headers", "headers"),
                       ("amq.match", "headers")]:
        ch.exchange_declare(name, exchange_type=kind, passive=True)
    # Redeclaring one actively with its own properties is fine too.
    ch.exchange_declare("amq.direct", exchange_type="direct", durable=True)


def test_amq_prefix_is_reserved(conn, broker, names):
    ch = conn.channel()
    name = "amq.mine-" + names.tag
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(name, exchange_type="direct")
    assert ei.value.reply_code == 403
    assert ei.value.reply_text == (
        f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")

    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_delete("amq.direct")
    assert ei.value.reply_code == 403
    assert ei.value.reply_text == (
        f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost "
        f"'{broker.vhost}' not allowed")
    # amq.direct is still there.
    conn.channel().exchange_declare("amq.direct", passive=True)


def test_declare_passive_and_inequivalent_redeclaration(conn, broker, names):
    x = names.x()
    ch = conn.channel()
    ch.exchange_declare(x, exchange_type="direct")
    ch.exchange_declare(x, exchange_type="direct")  # same again: fine
    ch.exchange_declare(x, passive=True)
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(x, exchange_type="fanout")
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost "
        f"'{broker.vhost}': received 'fanout' but current is 'direct'")

    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(x, exchange_type="direct", durable=True)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost "
        f"'{broker.vhost}': received 'true' but current is 'false'")

    # Both were channel errors: the connection is fine.
    ch = conn.channel()
    missing = names.x("missing")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(missing, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no exchange '{missing}' in vhost '{broker.vhost}'")
    assert conn.is_open


def test_unknown_exchange_type_is_a_connection_error(connect, names):
    c = connect()
    bystander = connect()
    with pytest.raises(ConnectionClosedByBroker) as ei:
        c.channel().exchange_declare(names.x(), exchange_type="foo")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        503, "COMMAND_INVALID - invalid exchange type 'foo'")
    assert c.is_closed
    assert bystander.channel().is_open


def test_default_exchange_routes_by_queue_name_and_is_off_limits(conn, broker, names):
    ch = conn.channel()
    (q,) = declare_queues(ch, names, "named")
    publish(ch, "", q, b"to the queue")
    publish(ch, "", names.q("nonexistent"), b"dropped")
    assert depth(ch, q, 1) == 1
    assert bodies(ch, q) == ["to the queue"]

    forbidden = "ACCESS_REFUSED - operation not permitted on the default exchange"
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_bind(q, "", routing_key="k")
    assert (ei.value.reply_code, ei.value.reply_text) == (403, forbidden)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_delete("")
    assert (ei.value.reply_code, ei.value.reply_text) == (403, forbidden)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare("", exchange_type="direct")
    assert (ei.value.reply_code, ei.value.reply_text) == (403, forbidden)


def test_direct_routing_tutorial_four(ch, names):
    """Tutorial 4: errors go to the disk logger, everything to the console."""
    x = names.x("direct_logs")
    ch.exchange_declare(x, exchange_type="direct")
    disk, console, nobody = declare_queues(ch, names, "disk", "console", "nobody")
    ch.queue_bind(disk, x, routing_key="error")
    for severity in ["info", "warning", "error"]:
        ch.queue_bind(console, x, routing_key=severity)
    for severity in ["info", "warning", "error", "debug", "error"]:
        publish(ch, x, severity, f"{severity} message".encode())
    assert bodies(ch, disk) == ["error message", "error message"]
    assert bodies(ch, console) == ["info message", "warning message",
                                   "error message", "error message"]
    assert bodies(ch, nobody) == []


def test_fanout_routing_tutorial_three(ch, names):
    """Tutorial 3: every bound queue gets every log, whatever the key."""
    x = names.x("logs")
    ch.exchange_declare(x, exchange_type="fanout")
    a, b = declare_queues(ch, names, "a", "b")
    ch.queue_bind(a, x)
    ch.queue_bind(b, x, routing_key="ignored")
    publish(ch, x, "", b"one")
    publish(ch, x, "whatever", b"two")
    assert bodies(ch, a) == ["one", "two"]
    assert bodies(ch, b) == ["one", "two"]


def test_topic_routing_tutorial_five(ch, names):
    x = names.x("topic_logs")
    ch.exchange_declare(x, exchange_type="topic")
    q1, q2, q3 = declare_queues(ch, names, "t1", "t2", "t3")
    ch.queue_bind(q1, x, routing_key="*.orange.*")
    ch.queue_bind(q2, x, routing_key="*.*.rabbit")
    ch.queue_bind(q2, x, routing_key="lazy.#")
    ch.queue_bind(q3, x, routing_key="#")
    keys = [
        "quick.orange.rabbit",  # q1, q2 (once), q3
        "lazy.orange.elephant",  # q1, q2, q3
        "quick.orange.fox",  # q1, q3
        "lazy.brown.fox",  # q2, q3
        "lazy.pink.rabbit",  # q2 (matches twice, delivered once), q3
        "quick.brown.fox",  # q3
        "orange",  # q3
        "quick.orange.male.rabbit",  # q3
        "lazy.orange.male.rabbit",  # q2, q3
        "lazy",  # q2 ("#" matches zero words), q3
        "",  # q3
    ]
    for key in keys:
        publish(ch, x, key, key.encode())
    assert bodies(ch, q1) == ["quick.orange.rabbit", "lazy.orange.elephant",
                              "quick.orange.fox"]
    assert bodies(ch, q2) == ["quick.orange.rabbit", "lazy.orange.elephant",
                              "lazy.brown.fox", "lazy.pink.rabbit",
                              "lazy.orange.male.rabbit", "lazy"]
    assert bodies(ch, q3) == keys


def test_headers_exchange_matching_modes(conn, names):
    ch = conn.channel()
    x = names.x("headers")
    ch.exchange_declare(x, exchange_type="headers")
    all_q, any_q, allx_q = declare_queues(ch, names, "all", "any", "allx")
    ch.queue_bind(all_q, x, arguments={"format": "pdf", "type": "report"})
    ch.queue_bind(any_q, x, arguments={"x-match": "any", "format": "pdf",
                                       "type": "log"})
    ch.queue_bind(allx_q, x, arguments={"x-match": "all-with-x",
                                        "x-tenant": "acme"})
    publish(ch, x, "", b"pdf report", {"format": "pdf", "type": "report"})
    publish(ch, x, "", b"pdf", {"format": "pdf"})
    publish(ch, x, "", b"acme", {"x-tenant": "acme"})
    publish(ch, x, "", b"log", {"type": "log", "format": "zip"})
    publish(ch, x, "", b"nothing")
    assert bodies(ch, all_q) == ["pdf report"]
    assert bodies(ch, any_q) == ["pdf report", "pdf", "log"]
    assert bodies(ch, allx_q) == ["acme"]

    (bad,) = declare_queues(ch, names, "bad")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_bind(bad, x, arguments={"x-match": "some"})
    assert ei.value.reply_code == 406
    assert "x-match" in ei.value.reply_text, ei.value.reply_text


def test_exchange_to_exchange_bindings_and_unbind(ch, names):
    src, dst = names.x("src"), names.x("dst")
    ch.exchange_declare(src, exchange_type="topic")
    ch.exchange_declare(dst, exchange_type="fanout")
    (q,) = declare_queues(ch, names, "q")
    ch.queue_bind(q, dst)
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    # A cycle must not loop forever nor duplicate the message.
    ch.exchange_bind(destination=src, source=dst, routing_key="#")
    publish(ch, src, "a.b", b"routed")
    publish(ch, src, "b.b", b"not routed")
    assert bodies(ch, q) == ["routed"]
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    publish(ch, src, "a.b", b"after unbind")
    assert bodies(ch, q) == []


def test_alternate_exchange_receives_unroutable_messages(ch, names):
    ae, main = names.x("ae"), names.x("main")
    ch.exchange_declare(ae, exchange_type="fanout")
    ch.exchange_declare(main, exchange_type="direct",
                        arguments={"alternate-exchange": ae})
    routed, unrouted = declare_queues(ch, names, "routed", "unrouted")
    ch.queue_bind(routed, main, routing_key="k")
    ch.queue_bind(unrouted, ae)
    publish(ch, main, "k", b"for k")
    publish(ch, main, "other", b"for nobody")
    assert bodies(ch, routed) == ["for k"]
    assert bodies(ch, unrouted) == ["for nobody"]


def test_internal_exchange_refuses_direct_publishes(conn, broker, names):
    ch = conn.channel()
    inner, outer = names.x("inner"), names.x("outer")
    ch.exchange_declare(inner, exchange_type="fanout", internal=True)
    ch.exchange_declare(outer, exchange_type="fanout")
    ch.exchange_bind(destination=inner, source=outer)
    (q,) = declare_queues(ch, names, "q")
    ch.queue_bind(q, inner)
    # Through another exchange an internal exchange routes as usual...
    publish(ch, outer, "", b"via outer")
    assert bodies(ch, q) == ["via outer"]
    # ...but a client may not publish to it.
    publish(ch, inner, "", b"direct")
    e = channel_error(ch)
    assert (e.reply_code, e.reply_text) == (
        403, f"ACCESS_REFUSED - cannot publish to internal exchange '{inner}' "
             f"in vhost '{broker.vhost}'")
    assert depth(conn.channel(), q, 0) == 0


def test_delete_if_unused(conn, broker, names):
    ch = conn.channel()
    busy = names.x("busy")
    ch.exchange_declare(busy, exchange_type="direct")
    (q,) = declare_queues(ch, names, "q")
    ch.queue_bind(q, busy, routing_key="k")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_delete(busy, if_unused=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - exchange '{busy}' in vhost '{broker.vhost}' in use")
    ch = conn.channel()
    ch.exchange_declare(busy, passive=True)
    ch.queue_unbind(q, busy, routing_key="k")
    ch.exchange_delete(busy, if_unused=True)
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(busy, passive=True)
    assert ei.value.reply_code == 404


def test_auto_delete_exchange_goes_with_its_last_binding(conn, names):
    ch = conn.channel()
    x = names.x("ephemeral")
    ch.exchange_declare(x, exchange_type="direct", auto_delete=True)
    q1, q2 = declare_queues(ch, names, "q1", "q2")
    ch.queue_bind(q1, x, routing_key="k")
    ch.queue_bind(q2, x, routing_key="k")
    ch.queue_unbind(q1, x, routing_key="k")
    ch.exchange_declare(x, passive=True)  # one binding left
    ch.queue_unbind(q2, x, routing_key="k")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(x, passive=True)
    assert ei.value.reply_code == 404


def test_deleting_a_missing_exchange_succeeds(ch, names):
    ch.exchange_delete(names.x("never-existed"))
    assert ch.is_open
