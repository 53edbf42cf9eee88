"""/api/exchanges: list (the default exchange is "" there), show
(amq.default in paths), PUT, DELETE (if-unused), publish."""

import base64

from http_support import NOT_FOUND, assert_error, eventually, q, unique
from amqp_support import get_all

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])
BUILTIN = {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout",
           "amq.topic": "topic", "amq.headers": "headers", "amq.match": "headers"}


def test_list_has_default_exchange_as_empty_name(api):
    vhost = api.create_vhost()
    listed = {x["name"]: x for x in api.json(f"/api/exchanges/{q(vhost)}")}
    for name, kind in BUILTIN.items():
        assert listed[name]["type"] == kind, name
        assert listed[name]["durable"] is True
        assert listed[name]["vhost"] == vhost
    assert "amq.default" not in listed
    for x in listed.values():
        assert set(x) >= {"name", "vhost", "type", "durable", "auto_delete", "internal",
                          "arguments"}
    assert {(x["vhost"], x["name"]) for x in api.json("/api/exchanges")} >= {
        (vhost, ""), (vhost, "amq.topic")}


def test_default_exchange_is_amq_default_in_paths(api):
    got = api.json("/api/exchanges/%2F/amq.default")
    assert (got["name"], got["type"], got["durable"], got["vhost"]) == ("", "direct", True, "/")


def test_put_get_delete(api):
    vhost = api.create_vhost()
    name = unique("x")
    path = f"/api/exchanges/{q(vhost)}/{q(name)}"
    api.track(path)
    body = {"type": "topic", "durable": True, "auto_delete": False, "internal": False,
            "arguments": {"alternate-exchange": "amq.fanout"}}
    r = api.put(path, body)
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    assert api.put(path, body).status_code == 204
    got = api.json(path)
    assert {k: got[k] for k in ["name", "vhost", "type", "durable", "auto_delete",
                                "internal", "arguments"]} == dict(body, name=name, vhost=vhost)
    assert name in [x["name"] for x in api.json(f"/api/exchanges/{q(vhost)}")]
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)


def test_internal_and_auto_delete_flags(api):
    name = api.create_exchange("/", type="fanout", internal=True, auto_delete=True,
                               durable=False)
    got = api.json(f"/api/exchanges/%2F/{q(name)}")
    assert (got["internal"], got["auto_delete"], got["durable"]) == (True, True, False)


def test_put_errors(api):
    name = api.create_exchange("/", type="topic")
    path = f"/api/exchanges/%2F/{q(name)}"
    assert_error(api.put(path, {"type": "direct"}), 400, "bad_request",
                 f"inequivalent arg 'type' for exchange '{name}' in vhost '/': "
                 "received 'direct' but current is 'topic'")
    other = unique("x")
    api.track(f"/api/exchanges/%2F/{q(other)}")
    assert_error(api.put(f"/api/exchanges/%2F/{q(other)}", {"type": "no-such-type"}), 400,
                 "bad_request", "unknown exchange type 'no-such-type'")
    assert_error(api.put(f"/api/exchanges/%2F/{q(other)}", data="{"), 400,
                 "bad_request", "not_json")
    assert_error(api.put(f"/api/exchanges/{q(unique('novh'))}/{q(other)}", {"type": "direct"}),
                 404, "not_found", "vhost_not_found")
    # amq.* is reserved, the built-ins cannot be deleted: 401 "Access refused."
    assert_error(api.put(f"/api/exchanges/%2F/amq.{q(other)}", {"type": "direct"}), 401,
                 "not_authorised", "Access refused.")
    assert_error(api.delete("/api/exchanges/%2F/amq.direct"), 401, "not_authorised",
                 "Access refused.")
    assert api.get(f"/api/exchanges/%2F/{q(other)}").status_code == 404
    assert api.json("/api/exchanges/%2F/amq.direct")["type"] == "direct"


def test_delete_if_unused(api):
    x = api.create_exchange("/", type="direct")
    qn = api.create_queue("/")
    api.bind("/", x, qn, "k")
    path = f"/api/exchanges/%2F/{q(x)}"
    assert_error(api.delete(path + "?if-unused=true"), 400, "bad_request",
                 f"exchange '{x}' in vhost '/' in use")
    assert api.get(path).status_code == 200
    assert api.delete(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}/k").status_code == 204
    assert api.delete(path + "?if-unused=true").status_code == 204
    assert api.get(path).status_code == 404


# ------------------------------------------------------------------- publish

def test_publish_via_default_exchange_routed_and_unroutable(api, ch):
    name = api.create_queue("/")
    assert api.publish("/", "", name, "to the queue") == {"routed": True}
    assert api.publish("/", "", unique("nobody"), "lost") == {"routed": False}
    assert [b for (_, _, b) in get_all(ch, name)] == [b"to the queue"]


def test_publish_to_named_exchange_and_base64(api, ch):
    x = api.create_exchange("/", type="topic")
    qn = api.create_queue("/")
    api.bind("/", x, qn, "a.*")
    raw = bytes(range(256))
    assert api.publish("/", x, "a.b", base64.b64encode(raw).decode(),
                       payload_encoding="base64") == {"routed": True}
    assert api.publish("/", x, "b.a", "no") == {"routed": False}
    method, props, body = ch.basic_get(qn, auto_ack=True)
    assert body == raw
    assert (method.exchange, method.routing_key, method.redelivered) == (x, "a.b", False)
    assert ch.basic_get(qn, auto_ack=True)[0] is None


def test_publish_headers_and_properties(api, ch):
    name = api.create_queue("/")
    api.publish("/", "", name, "h", {"headers": {"k": "v", "n": 7}, "content_type": "app/x",
                                     "delivery_mode": 2, "priority": 1})
    _, props, body = ch.basic_get(name, auto_ack=True)
    assert body == b"h"
    assert props.headers == {"k": "v", "n": 7}
    assert (props.content_type, props.delivery_mode, props.priority) == ("app/x", 2, 1)


def test_publish_errors(api):
    name = api.create_queue("/")
    path = "/api/exchanges/%2F/amq.default/publish"
    assert_error(api.post(path, {"routing_key": name, "payload": "x", "properties": {},
                                 "payload_encoding": "rot13"}), 400, "bad_request")
    nox = unique("nox")
    assert_error(api.post(f"/api/exchanges/%2F/{q(nox)}/publish",
                          {"routing_key": "k", "payload": "x", "payload_encoding": "string",
                           "properties": {}}),
                 400, "bad_request", f"404 NOT_FOUND - no exchange '{nox}' in vhost '/'")
    assert api.get_messages("/", name, count=5) == []


def test_exchange_message_stats(api):
    x = api.create_exchange("/", type="fanout")
    qn = api.create_queue("/")
    api.bind("/", x, qn)
    for _ in range(2):
        api.publish("/", x, "", "s")

    def counted():
        got = api.json(f"/api/exchanges/%2F/{q(x)}")
        stats = got["message_stats"]
        assert (stats["publish_in"], stats["publish_out"]) == (2, 2)
        return stats
    stats = eventually(counted)
    for key in ["publish_in", "publish_out"]:
        assert type(stats[key + "_details"]["rate"]) is float


def test_exchange_visible_after_amqp_declare(api, ch):
    name = unique("x")
    api.track(f"/api/exchanges/%2F/{q(name)}")
    ch.exchange_declare(name, exchange_type="headers", durable=True,
                        arguments={"alternate-exchange": "amq.fanout"})
    got = api.json(f"/api/exchanges/%2F/{q(name)}")
    assert (got["type"], got["durable"], got["arguments"]) == (
        "headers", True, {"alternate-exchange": "amq.fanout"})
