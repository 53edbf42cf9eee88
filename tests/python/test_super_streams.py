"""Super streams (partitioned streams) and consumer groups over AMQP 0-9-1:
Warren's own (issue 13), so every test is warren_only.

An exchange of type `x-super-stream` declared with `x-partitions: N` makes
N streams `<name>-0..N-1` bound with keys "0".."N-1" and
`x-stream-partition-order`. A routing key equal to a binding key goes to
that partition; any other key to partition murmur3_32(key, seed 104729)
mod N — checked here against the independent `mmh3` implementation.
Consumers naming the same `x-stream-consumer-group` on a partition take
turns: one is active per partition, the partition index mod the members
picks it, and a member that leaves has its partitions taken over from the
group's tracked offset.
"""

import mmh3
import pika
import pytest
import requests
from pika.exceptions import ChannelClosedByBroker

from amqp_support import wait_until, warren_only
from http_support import eventually
from http_support import q as segment
from stream_support import Reader, msgs, publish

pytestmark = warren_only

SEED = 104729


def super_stream(ch, name, partitions, **args):
    ch.exchange_declare(name, exchange_type="x-super-stream", durable=True,
                        arguments=dict({"x-partitions": partitions}, **args))
    return [f"{name}-{i}" for i in range(partitions)]


def expected_partition(key, n):
    return mmh3.hash(key, SEED, signed=False) % n


def publish_keys(conn, exchange, keys):
    ch = conn.channel()
    ch.confirm_delivery()
    for k in keys:
        ch.basic_publish(exchange, k, k.encode())
    ch.close()


def cleanup(names, exchange, partitions):
    names.exchanges.append(exchange)
    names.queues.extend(partitions)


def test_declare_makes_partitions_and_bindings(conn, api, broker, names):
    x = f"pika-orders-{names.tag}"
    parts = super_stream(conn.channel(), x, 3, **{"x-max-age": "1h"})
    cleanup(names, x, parts)
    ch = conn.channel()
    for p in parts:
        ch.queue_declare(p, passive=True)
    vhost = segment(broker.vhost)
    for p in parts:
        q = api.json(f"/api/queues/{vhost}/{p}")
        assert q["type"] == "stream" and q["durable"]
        assert q["arguments"] == {"x-queue-type": "stream", "x-max-age": "1h"}
    bindings = api.json(f"/api/exchanges/{vhost}/{x}/bindings/source")
    got = sorted((b["destination"], b["routing_key"], b["arguments"]) for b in bindings)
    assert got == [(f"{x}-{i}", str(i), {"x-stream-partition-order": i}) for i in range(3)]
    assert api.json(f"/api/exchanges/{vhost}/{x}")["type"] == "x-super-stream"
    # Declaring it again is equivalent and changes nothing.
    super_stream(conn.channel(), x, 3, **{"x-max-age": "1h"})


def test_routing_hashes_keys_like_the_stream_clients(conn, names):
    x = f"pika-hash-{names.tag}"
    parts = super_stream(conn.channel(), x, 4)
    cleanup(names, x, parts)
    keys = [f"customer-{i}" for i in range(200)]
    publish_keys(conn, x, keys)
    for i, p in enumerate(parts):
        want = [k.encode() for k in keys if expected_partition(k, 4) == i]
        assert want, "200 keys should reach every partition"
        Reader(conn, p, "first", prefetch=500).exactly(want)


def test_a_binding_key_routes_to_its_partition(conn, names):
    x = f"pika-keys-{names.tag}"
    parts = super_stream(conn.channel(), x, 3)
    cleanup(names, x, parts)
    publish_keys(conn, x, ["2", "0", "2"])
    Reader(conn, parts[0], "first").exactly([b"0"])
    Reader(conn, parts[1], "first").exactly([])
    Reader(conn, parts[2], "first").exactly([b"2", b"2"])


@pytest.mark.parametrize("value", [0, -1, 5000, "three"])
def test_bad_partition_counts_are_refused(conn, names, value):
    x = f"pika-bad-{names.tag}"
    names.exchanges.append(x)
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().exchange_declare(x, exchange_type="x-super-stream", durable=True,
                                        arguments={"x-partitions": value})
    assert ei.value.reply_code == 406
    assert "x-partitions" in ei.value.reply_text
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().exchange_declare(x, passive=True)
    assert ei.value.reply_code == 404


def test_a_partition_name_taken_by_a_classic_queue_refuses_all(conn, names):
    x = f"pika-taken-{names.tag}"
    names.exchanges.append(x)
    names.queues.append(f"{x}-1")
    conn.channel().queue_declare(f"{x}-1", durable=True)
    with pytest.raises(ChannelClosedByBroker) as ei:
        super_stream(conn.channel(), x, 2)
    assert ei.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker):
        ch.exchange_declare(x, passive=True)
    with pytest.raises(ChannelClosedByBroker):
        conn.channel().queue_declare(f"{x}-0", passive=True)


def test_partitions_need_queue_permissions(connect, api, broker, names):
    user = api.create_user(tags="")
    # May configure exchanges named pika-*, but no queue.
    api.set_permissions(broker.vhost, user, configure="^pika-[a-z]+-[0-9a-f]+$",
                        write=".*", read=".*")
    conn = connect(credentials=pika.PlainCredentials(user, "pw"))
    x = f"pika-perm-{names.tag}"
    names.exchanges.append(x)
    with pytest.raises(ChannelClosedByBroker) as ei:
        super_stream(conn.channel(), x, 2)
    assert ei.value.reply_code == 403
    assert f"queue '{x}-0'" in ei.value.reply_text


def group_reader(conn, q, group, offset="first", prefetch=100, ack=True):
    return Reader(conn, q, offset, prefetch=prefetch, ack=ack,
                  arguments={"x-stream-consumer-group": group})


def test_a_group_shares_partitions_and_takes_over(connect, api, broker, names):
    x = f"pika-group-{names.tag}"
    first = connect()
    parts = super_stream(first.channel(), x, 3)
    cleanup(names, x, parts)
    conns = [first, connect(), connect()]
    # Every member subscribes to every partition, in the same order.
    readers = [[group_reader(c, p, "billing") for p in parts] for c in conns]
    keys = [f"k{i}" for i in range(60)]
    publish_keys(first, x, keys)

    def everything(rs):
        return [b for r in rs for b in r.bodies()]

    def all_delivered():
        for c in conns:
            c.process_data_events(time_limit=0.05)
        return sorted(b for rs in readers for b in everything(rs)) == sorted(
            k.encode() for k in keys)
    assert wait_until(first, all_delivered, 10), [everything(rs) for rs in readers]
    # Each partition went to exactly one member, and each member has one.
    for i, p in enumerate(parts):
        takers = [m for m, rs in enumerate(readers) if rs[i].items]
        assert len(takers) == 1, (p, takers)
    owners = sorted(m for i in range(3) for m, rs in enumerate(readers) if rs[i].items)
    assert owners == [0, 1, 2]
    # The management API marks one active consumer per partition.
    vhost = segment(broker.vhost)
    for p in parts:
        details = api.json(f"/api/queues/{vhost}/{p}")["consumer_details"]
        assert sorted(d["active"] for d in details) == [False, False, True]

    # The member that owns partition 0 leaves: another takes it over and
    # gets what is published to it from then on.
    owner0 = next(m for m, rs in enumerate(readers) if rs[0].items)
    conns[owner0].close()
    survivors = [m for m in range(3) if m != owner0]
    later = [k for k in (f"late{i}" for i in range(200)) if expected_partition(k, 3) == 0][:10]
    publish_keys(conns[survivors[0]], x, later)

    def taken_over():
        for m in survivors:
            conns[m].process_data_events(time_limit=0.05)
        got = [b for m in survivors for b in readers[m][0].bodies()]
        return all(k.encode() in got for k in later)
    assert wait_until(conns[survivors[0]], taken_over, 10)
    # It resumed where the group had acknowledged: nothing the old owner
    # acked comes again.
    for m in survivors:
        conns[m].process_data_events(time_limit=0.2)
    got = [readers[m][0].bodies() for m in survivors]
    assert sorted(got, key=len) == [[], [k.encode() for k in later]]


def test_a_new_member_resumes_where_the_group_acked(conn, names):
    q = names.q("grp")
    conn.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
    publish(conn, q, msgs(10))
    a = group_reader(conn, q, "g", prefetch=1, ack=False)
    a.wait(1)
    # Ack one at a time: five acknowledged, the sixth delivered, not acked.
    for _ in range(5):
        method = a.items[-1][0]
        a.ch.basic_ack(method.delivery_tag)
        n = len(a.items)
        a.wait(n + 1)
    assert a.bodies() == msgs(6)
    a.cancel()
    # A member joining later (asking for "next") starts at the first offset
    # not acknowledged: m5, delivered before but never acked.
    b = group_reader(conn, q, "g", offset="next")
    b.exactly(msgs(5, 5))
    assert b.offsets() == list(range(5, 10))
    # Another group starts where it asks.
    Reader(conn, q, "first", arguments={"x-stream-consumer-group": "other"}).exactly(msgs(10))


def test_stream_metrics_in_management_and_prometheus(conn, api, broker, names):
    q = names.q("metrics")
    conn.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
    publish(conn, q, msgs(8))
    r = Reader(conn, q, "first", prefetch=3, ack=False, tag="lagging")
    r.wait(3)
    vhost = segment(broker.vhost)

    def shown():
        body = api.json(f"/api/queues/{vhost}/{q}")
        assert (body["first_offset"], body["last_offset"], body["committed_offset"]) == (0, 7, 8)
        assert body["segments"] >= 1 and body["stream_bytes"] > 0
        (c,) = body["consumer_details"]
        assert (c["consumer_tag"], c["offset"], c["offset_lag"]) == ("lagging", 3, 5)
        return body
    eventually(shown)

    text = requests.get(f"http://{broker.host}:{broker.metrics_port}/metrics/per-object",
                        timeout=10).text
    lines = [line for line in text.splitlines() if f'queue="{q}"' in line]

    def value(family, extra=""):
        found = [line for line in lines
                 if line.startswith(f"rabbitmq_{family}{{") and extra in line]
        assert len(found) == 1, (family, found)
        return float(found[0].rsplit(" ", 1)[1])
    assert value("stream_first_offset") == 0
    assert value("stream_committed_offset") == 8
    assert value("stream_messages") == 8
    assert value("stream_segments") >= 1
    assert value("stream_consumer_max_offset_lag") == 5
    assert value("stream_consumer_offset", 'consumer_tag="lagging"') == 3
    assert value("stream_consumer_offset_lag", 'consumer_tag="lagging"') == 5
