"""/api/queues: list, show, PUT (declare), DELETE (if-empty, if-unused),
DELETE .../contents (purge), POST .../get (ackmode, encoding, truncate); and
Warren's browse (GET .../messages) and move (POST .../move)."""

import base64
import re

import pika

from http_support import (NOT_FOUND, assert_error, q, skip_unless_warren, unique,
                          until)
from amqp_support import get_all

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")


def rate(obj, key):
    assert type(obj[key]) is int, (key, obj.get(key))
    assert type(obj[key + "_details"]["rate"]) is float, (key, obj.get(key + "_details"))


def test_put_creates_then_204_and_get_shows_declaration(api):
    vhost = api.create_vhost()
    name = unique("q")
    path = f"/api/queues/{q(vhost)}/{q(name)}"
    api.track(path)
    body = {"durable": True, "auto_delete": False,
            "arguments": {"x-max-length": 10, "x-message-ttl": 60000,
                          "x-overflow": "reject-publish"}}
    r = api.put(path, body)
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    r = api.put(path, body)
    assert r.status_code == 204 and r.text == "", (r.status_code, r.text)
    got = api.json(path)
    # rabbitmqadmin v2 requires these; Terraform reads them back.
    assert got["name"] == name and got["vhost"] == vhost
    assert got["durable"] is True and got["auto_delete"] is False and got["exclusive"] is False
    assert got["arguments"] == body["arguments"]
    assert type(got["arguments"]["x-max-length"]) is int
    assert got["type"] == "classic"
    assert got["node"] == api.node_name()
    assert name in [x["name"] for x in api.json(f"/api/queues/{q(vhost)}")]
    assert name in [x["name"] for x in api.json("/api/queues")]


def test_put_defaults_are_transient_and_not_auto_delete(api):
    name = api.create_queue("/")
    got = api.queue("/", name)
    assert (got["durable"], got["auto_delete"], got["exclusive"], got["arguments"]) == (
        False, False, False, {})


def test_put_inequivalent_is_400_with_the_amqp_text(api):
    name = api.create_queue("/", durable=True, arguments={"x-max-length": 10})
    path = f"/api/queues/%2F/{q(name)}"
    assert_error(api.put(path, {"durable": False}), 400, "bad_request",
                 f"inequivalent arg 'durable' for queue '{name}' in vhost '/': "
                 "received 'false' but current is 'true'")
    assert_error(api.put(path, {"durable": True, "arguments": {"x-max-length": 11}}), 400,
                 "bad_request",
                 f"inequivalent arg 'x-max-length' for queue '{name}' in vhost '/': "
                 "received '11' but current is '10'")


def test_put_errors(api):
    name = unique("q")
    api.track(f"/api/queues/%2F/{q(name)}")
    assert_error(api.put(f"/api/queues/%2F/{q(name)}", data="{not json"),
                 400, "bad_request", "not_json")
    assert_error(api.put(f"/api/queues/{q(unique('novh'))}/{q(name)}", {}),
                 404, "not_found", "vhost_not_found")
    assert_error(api.put(f"/api/queues/%2F/{q(name)}", {"arguments": {"x-max-length": "ten"}}),
                 400, "bad_request",
                 f"invalid arg 'x-max-length' for queue '{name}' in vhost '/': "
                 '"expected integer, got longstr"')
    # amq.* names are reserved: RabbitMQ answers 401 "Access refused."
    assert_error(api.put(f"/api/queues/%2F/amq.{q(name)}", {}),
                 401, "not_authorised", "Access refused.")
    assert api.get(f"/api/queues/%2F/{q(name)}").status_code == 404


def test_get_unknown_queue_or_vhost_is_404(api):
    assert_error(api.get(f"/api/queues/%2F/{q(unique('noq'))}"), 404, *NF)
    assert_error(api.get(f"/api/queues/{q(unique('novh'))}/x"), 404, *NF)


def test_queue_counts_and_stats(api):
    name = api.create_queue("/", durable=True)  # persistent counts need a durable queue
    for i in range(3):
        assert api.publish("/", "", name, f"msg-{i}",
                           {"delivery_mode": 2 if i == 0 else 1}) == {"routed": True}
    # RabbitMQ emits depths, consumers and message_stats separately: wait for all.
    got = api.queue_when("/", name, messages=3, messages_ready=3, messages_unacknowledged=0,
                         consumers=0, message_bytes=15)
    until(lambda: api.queue("/", name).get("message_stats", {}).get("publish") == 3,
          "message_stats.publish == 3")
    got = api.queue("/", name)
    for key in ["messages", "messages_ready", "messages_unacknowledged"]:
        rate(got, key)
    assert got["message_stats"]["publish"] == 3
    rate(got["message_stats"], "publish")
    assert got["consumers"] == 0
    assert got["message_bytes"] == 15
    assert got["message_bytes_ready"] == 15
    assert got["message_bytes_unacknowledged"] == 0
    assert got["messages_persistent"] == 1
    assert got["state"] == "running"
    # Absent things are null, not missing.
    for key in ["policy", "operator_policy", "exclusive_consumer_tag",
                "head_message_timestamp"]:
        assert key in got and got[key] is None, key
    assert got["effective_policy_definition"] == {}
    assert got["consumer_details"] == []
    assert type(got["memory"]) is int
    assert ISO.match(got["idle_since"]), got["idle_since"]


def test_unacked_and_consumers(api, conn):
    name = api.create_queue("/")
    for i in range(2):
        api.publish("/", "", name, f"m{i}")
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    tag = unique("ctag")
    ch.basic_consume(name, lambda *a: None, consumer_tag=tag)
    conn.process_data_events(0.2)
    api.queue_when("/", name, messages=2, messages_ready=1, messages_unacknowledged=1,
                   consumers=1)
    got = until(lambda: (lambda g: g if [c["consumer_tag"] for c in g["consumer_details"]]
                         == [tag] else None)(api.queue("/", name)), "consumer_details")
    d = got["consumer_details"][0]
    assert d["queue"] == {"name": name, "vhost": "/"}
    assert d["ack_required"] is True and d["prefetch_count"] == 1
    # DELETE ?if-unused=true refuses a queue with a consumer.
    assert_error(api.delete(f"/api/queues/%2F/{q(name)}?if-unused=true"), 400,
                 "bad_request", f"queue '{name}' in vhost '/' in use")
    assert api.get(f"/api/queues/%2F/{q(name)}").status_code == 200


def test_delete(api):
    name = api.create_queue("/")
    path = f"/api/queues/%2F/{q(name)}"
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)


def test_delete_if_empty(api, ch):
    name = api.create_queue("/")
    path = f"/api/queues/%2F/{q(name)}"
    api.publish("/", "", name, "x")
    assert_error(api.delete(path + "?if-empty=true"), 400, "bad_request",
                 f"queue '{name}' in vhost '/' not empty")
    assert ch.queue_declare(name, passive=True).method.message_count == 1
    assert api.delete(path + "?if-unused=true").status_code == 204  # no consumers
    assert api.get(path).status_code == 404
    name = api.create_queue("/")
    assert api.delete(f"/api/queues/%2F/{q(name)}?if-empty=true").status_code == 204
    assert api.get(f"/api/queues/%2F/{q(name)}").status_code == 404


def test_purge_contents(api, ch):
    name = api.create_queue("/")
    for i in range(4):
        api.publish("/", "", name, str(i))
    r = api.delete(f"/api/queues/%2F/{q(name)}/contents")
    assert r.status_code == 204, r.text
    assert ch.queue_declare(name, passive=True).method.message_count == 0
    assert api.get_messages("/", name, count=5) == []
    api.queue_when("/", name, messages=0)
    assert_error(api.delete(f"/api/queues/%2F/{q(unique('noq'))}/contents"), 404, *NF)


def test_list_default_vhost_only_and_in_named_vhost(api):
    vhost = api.create_vhost()
    in_vhost = api.create_queue(vhost)
    in_default = api.create_queue("/")
    names = [x["name"] for x in api.json(f"/api/queues/{q(vhost)}")]
    assert names == [in_vhost]
    default_names = [x["name"] for x in api.json("/api/queues/%2F")]
    assert in_default in default_names and in_vhost not in default_names
    every = {(x["vhost"], x["name"]) for x in api.json("/api/queues")}
    assert {(vhost, in_vhost), ("/", in_default)} <= every


def test_exclusive_queue_declared_over_amqp(api, conn):
    ch = conn.channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    got = api.json(f"/api/queues/%2F/{q(name)}")
    assert got["exclusive"] is True and got["durable"] is False


# ----------------------------------------------------------------- POST get

PROPS = {"content_type": "text/plain", "delivery_mode": 2, "message_id": "m-1",
         "correlation_id": "c-1", "reply_to": "r", "priority": 3,
         "timestamp": 1700000000, "expiration": "60000", "type": "t", "app_id": "a",
         "headers": {"h-int": 1, "h-str": "x", "h-bool": True}}


def test_get_requeue_keeps_messages_and_shows_every_field(api):
    name = api.create_queue("/")
    api.publish("/", "", name, "hello", PROPS)
    api.publish("/", "", name, "second")
    items = api.get_messages("/", name, count=5, ackmode="ack_requeue_true")
    assert len(items) == 2
    first = items[0]
    assert first == {"payload_bytes": 5, "redelivered": False, "exchange": "",
                     "routing_key": name, "message_count": 1, "properties": PROPS,
                     "payload": "hello", "payload_encoding": "string"}
    assert items[1]["payload"] == "second" and items[1]["message_count"] == 0
    # Empty properties: RabbitMQ 3.10 sends [] (an empty Erlang proplist).
    assert items[1]["properties"] in ({}, [])
    again = api.get_messages("/", name, count=1, ackmode="ack_requeue_true")
    assert again[0]["payload"] == "hello" and again[0]["redelivered"] is True
    assert again[0]["message_count"] == 1


def test_get_ack_removes_and_reject_modes(api, ch):
    name = api.create_queue("/")
    for i in range(4):
        api.publish("/", "", name, f"m{i}")
    got = api.get_messages("/", name, count=1, ackmode="ack_requeue_false")
    assert [m["payload"] for m in got] == ["m0"]
    got = api.get_messages("/", name, count=1, ackmode="reject_requeue_false")
    assert [m["payload"] for m in got] == ["m1"]
    got = api.get_messages("/", name, count=1, ackmode="reject_requeue_true")
    assert [(m["payload"], m["message_count"]) for m in got] == [("m2", 1)]
    left = get_all(ch, name)
    assert [b for (_, _, b) in left] == [b"m2", b"m3"]
    assert [m.redelivered for (m, _, _) in left] == [True, False]


def test_get_encodings_and_truncate(api):
    name = api.create_queue("/")
    raw = b"\x00\x01\x02\xff"
    api.publish("/", "", name, base64.b64encode(raw).decode(), payload_encoding="base64")
    api.publish("/", "", name, "text body")
    auto = api.get_messages("/", name, count=2, encoding="auto")
    # Not valid UTF-8 -> base64 under "auto"; text stays a string.
    assert (auto[0]["payload"], auto[0]["payload_encoding"], auto[0]["payload_bytes"]) == (
        "AAEC/w==", "base64", 4)
    assert (auto[1]["payload"], auto[1]["payload_encoding"]) == ("text body", "string")
    b64 = api.get_messages("/", name, count=2, encoding="base64")
    assert [(m["payload"], m["payload_encoding"]) for m in b64] == [
        ("AAEC/w==", "base64"), (base64.b64encode(b"text body").decode(), "base64")]
    cut = api.get_messages("/", name, count=2, encoding="auto", truncate=4)
    assert cut[1]["payload"] == "text" and cut[1]["payload_bytes"] == 9


def test_get_errors(api):
    name = api.create_queue("/")
    path = f"/api/queues/%2F/{q(name)}/get"
    assert_error(api.post(path, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "utf9"}),
                 400, "bad_request", "Unsupported encoding. Please use auto or base64.")
    for missing in ["count", "ackmode", "encoding"]:
        body = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}
        del body[missing]
        r = assert_error(api.post(path, body), 400, "bad_request")
        assert missing in str(r["reason"])
    noq = unique("noq")
    assert_error(api.post(f"/api/queues/%2F/{q(noq)}/get",
                          {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
                 404, "not_found", f"NOT_FOUND - no queue '{noq}' in vhost '/'")
    assert api.get_messages("/", name, count=3) == []


# ------------------------------------------------- Warren: browse and move

@skip_unless_warren
def test_browse_is_non_destructive(api, ch):
    name = api.create_queue("/")
    for i in range(3):
        api.publish("/", "", name, f"b{i}", {"headers": {"i": i}, "message_id": f"id{i}"})
    r = api.get(f"/api/queues/%2F/{q(name)}/messages?count=2")
    assert r.status_code == 200, r.text
    items = r.json()
    assert [m["payload"] for m in items] == ["b0", "b1"]
    assert items[0]["properties"]["headers"] == {"i": 0}
    assert items[0]["properties"]["message_id"] == "id0"
    assert all(m["redelivered"] is False for m in items)
    assert set(items[0]) >= {"payload_bytes", "redelivered", "exchange", "routing_key",
                             "message_count", "properties", "payload", "payload_encoding"}
    # Browsing twice shows the same; nothing was taken, flagged or reordered.
    assert [m["payload"] for m in api.json(
        f"/api/queues/%2F/{q(name)}/messages?count=10")] == ["b0", "b1", "b2"]
    left = get_all(ch, name)
    assert [b for (_, _, b) in left] == [b"b0", b"b1", b"b2"]
    assert [m.redelivered for (m, _, _) in left] == [False, False, False]
    assert_error(api.get(f"/api/queues/%2F/{q(unique('noq'))}/messages?count=1"), 404, *NF)


@skip_unless_warren
def test_move_messages_between_queues(api, ch):
    src = api.create_queue("/")
    dst = api.create_queue("/")
    for i in range(3):
        api.publish("/", "", src, f"v{i}", {"headers": {"n": i}, "content_type": "text/x",
                                             "delivery_mode": 2})
    r = api.post(f"/api/queues/%2F/{q(src)}/move", {"destination": dst, "count": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"moved": 2}
    moved = get_all(ch, dst)
    assert [b for (_, _, b) in moved] == [b"v0", b"v1"]
    assert [p.headers for (_, p, _) in moved] == [{"n": 0}, {"n": 1}]
    assert all(p.content_type == "text/x" and p.delivery_mode == 2 for (_, p, _) in moved)
    # Without count: everything that is left.
    r = api.post(f"/api/queues/%2F/{q(src)}/move", {"destination": dst})
    assert r.json() == {"moved": 1}
    assert ch.queue_declare(src, passive=True).method.message_count == 0
    assert [b for (_, _, b) in get_all(ch, dst)] == [b"v2"]
    r = api.post(f"/api/queues/%2F/{q(src)}/move", {"destination": unique("noq")})
    assert r.status_code in (400, 404), r.text
    assert set(r.json()) == {"error", "reason"}


@skip_unless_warren
def test_a_moved_message_starts_its_ttl_in_the_destination(api, ch):
    """A dead letter older than the destination's TTL is moved, not expired
    on arrival: it arrives now, as a republished message would."""
    import time
    src = api.create_queue("/")
    dst = unique("ttl-dst")
    ch.queue_declare(dst, arguments={"x-message-ttl": 500})
    api.track(f"/api/queues/%2F/{q(dst)}")
    api.publish("/", "", src, "old")
    time.sleep(0.7)
    r = api.post(f"/api/queues/%2F/{q(src)}/move", {"destination": dst})
    assert r.json() == {"moved": 1}
    assert [b for (_, _, b) in get_all(ch, dst)] == [b"old"]


def test_queue_in_vhost_with_slash_in_its_name(api, connect):
    vhost = api.create_vhost(unique("a/b c"))
    name = api.create_queue(vhost, unique("q/with slash"))
    assert api.queue(vhost, name)["vhost"] == vhost
    api.publish(vhost, "", name, "x")
    conn = connect(virtual_host=vhost)
    assert conn.channel().queue_declare(name, passive=True).method.message_count == 1
    assert api.delete(f"/api/queues/{q(vhost)}/{q(name)}").status_code == 204


def test_publish_properties_reach_amqp_consumer(api, ch):
    name = api.create_queue("/")
    api.publish("/", "", name, "p", PROPS)
    method, props, body = ch.basic_get(name, auto_ack=True)
    assert body == b"p"
    assert isinstance(props, pika.BasicProperties)
    assert (props.content_type, props.delivery_mode, props.message_id, props.correlation_id,
            props.reply_to, props.priority, props.timestamp, props.expiration, props.type,
            props.app_id) == ("text/plain", 2, "m-1", "c-1", "r", 3, 1700000000, "60000",
                              "t", "a")
    assert props.headers == {"h-int": 1, "h-str": "x", "h-bool": True}
