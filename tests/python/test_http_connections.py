"""/api/connections (list, show, DELETE = force-close with 320),
/api/channels and /api/consumers, with real pika connections."""

import time

import pika
import pika.exceptions
import pytest

from http_support import NOT_FOUND, assert_error, eventually, q, skip_unless_warren, unique

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])


def find_connection(api, label, path="/api/connections"):
    """The listed connection whose client-provided connection_name is label."""
    def find():
        mine = [c for c in api.json(path)
                if c["client_properties"].get("connection_name") == label]
        assert len(mine) == 1, mine
        return mine[0]
    return eventually(find)


def test_connection_fields(api, connect):
    label = unique("conn")
    before_ms = int(time.time() * 1000)
    conn = connect(client_properties={"connection_name": label})
    local_port = conn._impl._transport._sock.getsockname()[1]
    c = find_connection(api, label)
    assert c["name"] == f"127.0.0.1:{local_port} -> 127.0.0.1:{api.broker.amqp_port}"
    assert c["user_provided_name"] == label
    assert (c["peer_host"], c["peer_port"]) == ("127.0.0.1", local_port)
    assert (c["host"], c["port"]) == ("127.0.0.1", api.broker.amqp_port)
    assert c["protocol"] == "AMQP 0-9-1"
    assert (c["user"], c["vhost"], c["node"]) == (api.user, "/", api.node_name())
    assert c["auth_mechanism"] == "PLAIN"
    assert c["state"] == "running" and c["type"] == "network" and c["ssl"] is False
    assert type(c["connected_at"]) is int
    assert before_ms - 5000 <= c["connected_at"] <= time.time() * 1000 + 5000
    assert c["client_properties"]["product"] == "Pika Python Client Library"
    assert c["client_properties"]["capabilities"]["publisher_confirms"] is True
    for key in ["channels", "frame_max", "channel_max", "timeout"]:
        assert type(c[key]) is int, key
    for key in ["recv_oct", "send_oct"]:
        assert type(c[key]) is int and type(c[key + "_details"]["rate"]) is float
    for key in ["ssl_protocol", "ssl_cipher", "peer_cert_subject"]:
        assert key in c and c[key] is None, key
    one = api.json(f"/api/connections/{q(c['name'])}")
    assert one["name"] == c["name"] and one["client_properties"]["connection_name"] == label
    assert c["name"] in [x["name"] for x in api.json("/api/vhosts/%2F/connections")]


def test_connection_in_other_vhost_listed_there(api, connect):
    vhost = api.create_vhost()
    label = unique("conn")
    connect(virtual_host=vhost, client_properties={"connection_name": label})
    c = find_connection(api, label, f"/api/vhosts/{q(vhost)}/connections")
    assert c["vhost"] == vhost


def test_force_close_with_reason(api, connect):
    label = unique("conn")
    conn = connect(client_properties={"connection_name": label})
    name = find_connection(api, label)["name"]
    r = api.delete(f"/api/connections/{q(name)}", headers={"X-Reason": "closed by test"})
    assert r.status_code == 204 and r.text == ""
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.process_data_events(0.1)
    assert (e.value.reply_code, e.value.reply_text) == (320, "CONNECTION_FORCED - closed by test")

    def gone():
        assert api.get(f"/api/connections/{q(name)}").status_code == 404
    eventually(gone)


def test_force_close_default_reason(api, connect):
    label = unique("conn")
    conn = connect(client_properties={"connection_name": label})
    name = find_connection(api, label)["name"]
    assert api.delete(f"/api/connections/{q(name)}").status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.process_data_events(0.1)
    assert (e.value.reply_code, e.value.reply_text) == (
        320, "CONNECTION_FORCED - Closed via management plugin")


def test_unknown_connection_is_404(api):
    assert_error(api.get(f"/api/connections/{q('127.0.0.1:1 -> 127.0.0.1:2')}"), 404, *NF)
    assert_error(api.delete(f"/api/connections/{q(unique('nope'))}"), 404, *NF)


# ------------------------------------------------------------------ channels

def test_channels(api, connect):
    label = unique("conn")
    conn = connect(client_properties={"connection_name": label})
    ch1 = conn.channel()
    ch1.basic_qos(prefetch_count=7)
    ch2 = conn.channel()
    ch2.confirm_delivery()
    name = find_connection(api, label)["name"]
    qn = api.create_queue("/")
    ch1.basic_consume(qn, lambda *a: None, consumer_tag=unique("t"))

    def listed():
        chans = [c for c in api.json("/api/channels")
                 if c["connection_details"]["name"] == name]
        chans.sort(key=lambda c: c["number"])
        assert [c["number"] for c in chans] == [1, 2]
        assert (chans[0]["prefetch_count"], chans[0]["consumer_count"],
                chans[0]["confirm"]) == (7, 1, False)
        assert (chans[1]["prefetch_count"], chans[1]["consumer_count"],
                chans[1]["confirm"]) == (0, 0, True)
        return chans
    chans = eventually(listed)
    for i, c in enumerate(chans, start=1):
        assert c["name"] == f"{name} ({i})"
        assert c["connection_details"]["peer_host"] == "127.0.0.1"
        assert type(c["connection_details"]["peer_port"]) is int
        assert (c["vhost"], c["user"], c["state"], c["node"]) == (
            "/", api.user, "running", api.node_name())
        for key in ["messages_unacknowledged", "messages_unconfirmed",
                    "messages_uncommitted", "acks_uncommitted", "global_prefetch_count"]:
            assert type(c[key]) is int and c[key] == 0, key
        assert c["transactional"] is False
    one = api.json(f"/api/channels/{q(chans[0]['name'])}")
    assert one["number"] == 1 and one["connection_details"]["name"] == name
    via_conn = api.json(f"/api/connections/{q(name)}/channels")
    assert sorted(c["number"] for c in via_conn) == [1, 2]
    assert {c["name"] for c in api.json("/api/vhosts/%2F/channels")} >= {
        f"{name} (1)", f"{name} (2)"}
    assert_error(api.get(f"/api/channels/{q(name + ' (9)')}"), 404, *NF)


def test_channel_unacked_count(api, connect):
    label = unique("conn")
    conn = connect(client_properties={"connection_name": label})
    ch = conn.channel()
    qn = api.create_queue("/")
    for i in range(3):
        api.publish("/", "", qn, str(i))
    for _ in range(2):
        assert ch.basic_get(qn, auto_ack=False)[0] is not None
    name = find_connection(api, label)["name"]

    def counted():
        c = api.json(f"/api/channels/{q(name + ' (1)')}")
        assert c["messages_unacknowledged"] == 2
        assert c["message_stats"]["get"] == 2
        return c
    c = eventually(counted)
    assert type(c["message_stats"]["get_details"]["rate"]) is float


# ----------------------------------------------------------------- consumers

def consumer_fixture(api, connect, vhost="/"):
    label = unique("conn")
    conn = connect(virtual_host=vhost, client_properties={"connection_name": label})
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    qn = api.create_queue(vhost)
    tag = unique("ctag")
    ch.basic_consume(qn, lambda *a: None, consumer_tag=tag, arguments={"x-priority": 3})
    return label, qn, tag


def test_consumers(api, connect):
    label, qn, tag = consumer_fixture(api, connect)
    conn_name = find_connection(api, label)["name"]

    def listed(path):
        mine = [c for c in api.json(path) if c["consumer_tag"] == tag]
        assert len(mine) == 1
        return mine[0]
    c = eventually(lambda: listed("/api/consumers"))
    assert eventually(lambda: listed("/api/consumers/%2F"))["queue"] == {"name": qn, "vhost": "/"}
    assert c["queue"] == {"name": qn, "vhost": "/"}
    assert (c["ack_required"], c["exclusive"], c["prefetch_count"], c["active"]) == (
        True, False, 7, True)
    assert c["arguments"] == {"x-priority": 3}
    assert c["activity_status"] == "up"
    d = c["channel_details"]
    assert (d["connection_name"], d["name"], d["number"], d["user"]) == (
        conn_name, f"{conn_name} (1)", 1, api.user)
    assert d["peer_host"] == "127.0.0.1" and type(d["peer_port"]) is int
    assert_error(api.get(f"/api/consumers/{q(unique('novh'))}"), 404, *NF)


def test_consumers_by_vhost(api, connect):
    vhost = api.create_vhost()
    label, qn, tag = consumer_fixture(api, connect, vhost)

    def listed():
        tags = [c["consumer_tag"] for c in api.json(f"/api/consumers/{q(vhost)}")]
        assert tags == [tag]
    eventually(listed)
    assert tag not in [c["consumer_tag"] for c in api.json("/api/consumers/%2F")]


@skip_unless_warren
def test_consumer_timeout_field_4x(api, connect):
    # rabbitmqadmin v2 requires consumer_timeout on consumers (RabbitMQ 4.x).
    label, qn, tag = consumer_fixture(api, connect)
    c = [c for c in api.json("/api/consumers") if c["consumer_tag"] == tag][0]
    assert type(c["consumer_timeout"]) is int
