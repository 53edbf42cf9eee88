"""/api/bindings in every form: exchange -> queue and exchange -> exchange,
lists by vhost, by source and destination, properties_key, the Location
header, and delete by properties key."""

from http_support import NOT_FOUND, assert_error, q, unique
from amqp_support import get_all

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])
FIELDS = {"source", "vhost", "destination", "destination_type", "routing_key",
          "arguments", "properties_key"}


def setup_eq(api, vhost="/", type="topic"):
    return api.create_exchange(vhost, type=type), api.create_queue(vhost)


def test_exchange_to_queue_binding_and_location(api):
    vhost = api.create_vhost()
    x, qn = setup_eq(api, vhost)
    r = api.post(f"/api/bindings/{q(vhost)}/e/{q(x)}/q/{q(qn)}",
                 {"routing_key": "a.b", "arguments": {}})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{q(qn)}/a.b"
    listed = api.json(f"/api/bindings/{q(vhost)}/e/{q(x)}/q/{q(qn)}")
    assert listed == [{"source": x, "vhost": vhost, "destination": qn,
                       "destination_type": "queue", "routing_key": "a.b",
                       "arguments": {}, "properties_key": "a.b"}]
    one = api.json(f"/api/bindings/{q(vhost)}/e/{q(x)}/q/{q(qn)}/a.b")
    assert one == listed[0]
    # Binding twice is fine and still one binding.
    assert api.post(f"/api/bindings/{q(vhost)}/e/{q(x)}/q/{q(qn)}",
                    {"routing_key": "a.b", "arguments": {}}).status_code == 201
    assert len(api.json(f"/api/bindings/{q(vhost)}/e/{q(x)}/q/{q(qn)}")) == 1


def test_properties_key_forms(api):
    x, qn = setup_eq(api)
    base = f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}"
    locations = {}
    for rk, args in [("", {}), ("#", {}), ("x.y", {"k": "v"}), ("a b/c", {})]:
        r = api.post(base, {"routing_key": rk, "arguments": args})
        assert r.status_code == 201, r.text
        locations[rk] = r.headers["location"]
    by_rk = {b["routing_key"]: b for b in api.json(base)}
    assert set(by_rk) == {"", "#", "x.y", "a b/c"}
    # "~" for an empty key without arguments; the key URL-quoted; "key~hash"
    # when there are arguments.
    assert by_rk[""]["properties_key"] == "~"
    assert by_rk["#"]["properties_key"] == "%23"
    assert by_rk["x.y"]["properties_key"].startswith("x.y~")
    assert len(by_rk["x.y"]["properties_key"]) > len("x.y~")
    assert by_rk["x.y"]["arguments"] == {"k": "v"}
    for rk, b in by_rk.items():
        assert set(b) == FIELDS
        # Location is "{destination}/{properties_key}", each quoted.
        assert locations[rk] == f"{q(qn)}/{q(b['properties_key'])}", rk
        # A client takes properties_key from the list and quotes it.
        got = api.json(f"{base}/{q(b['properties_key'])}")
        assert got["routing_key"] == rk
    for rk in ["", "#", "x.y", "a b/c"]:
        r = api.delete(f"{base}/{q(by_rk[rk]['properties_key'])}")
        assert r.status_code == 204, (rk, r.text)
    assert api.json(base) == []


def test_delete_binding_by_properties_key(api, ch):
    x, qn = setup_eq(api, type="direct")
    api.bind("/", x, qn, "k1")
    api.bind("/", x, qn, "k2")
    path = f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}/k1"
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.delete(path), 404, *NF)
    assert_error(api.get(path), 404, *NF)
    assert [b["routing_key"] for b in api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}")] == ["k2"]
    assert api.publish("/", x, "k1", "gone") == {"routed": False}
    assert api.publish("/", x, "k2", "kept") == {"routed": True}
    assert [b for (_, _, b) in get_all(ch, qn)] == [b"kept"]


def test_exchange_to_exchange(api, ch):
    src = api.create_exchange("/", type="topic")
    dst = api.create_exchange("/", type="fanout")
    qn = api.create_queue("/")
    api.bind("/", dst, qn)
    r = api.post(f"/api/bindings/%2F/e/{q(src)}/e/{q(dst)}",
                 {"routing_key": "#", "arguments": {}})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{q(dst)}/{q('%23')}"
    listed = api.json(f"/api/bindings/%2F/e/{q(src)}/e/{q(dst)}")
    assert listed == [{"source": src, "vhost": "/", "destination": dst,
                       "destination_type": "exchange", "routing_key": "#",
                       "arguments": {}, "properties_key": "%23"}]
    assert api.publish("/", src, "any.key", "via e2e") == {"routed": True}
    assert [b for (_, _, b) in get_all(ch, qn)] == [b"via e2e"]
    assert api.json(f"/api/exchanges/%2F/{q(src)}/bindings/source") == listed
    assert api.json(f"/api/exchanges/%2F/{q(dst)}/bindings/destination") == listed
    r = api.delete(f"/api/bindings/%2F/e/{q(src)}/e/{q(dst)}/{q('%23')}")
    assert r.status_code == 204, r.text
    assert api.json(f"/api/bindings/%2F/e/{q(src)}/e/{q(dst)}") == []
    assert api.publish("/", src, "any.key", "x") == {"routed": False}


def test_lists_by_vhost_source_destination_and_queue(api, ch):
    vhost = api.create_vhost()
    x, qn = setup_eq(api, vhost, type="direct")
    api.bind(vhost, x, qn, "r1")
    ours = {"source": x, "vhost": vhost, "destination": qn, "destination_type": "queue",
            "routing_key": "r1", "arguments": {}, "properties_key": "r1"}
    default = {"source": "", "vhost": vhost, "destination": qn,
               "destination_type": "queue", "routing_key": qn, "arguments": {},
               "properties_key": qn}
    in_vhost = api.json(f"/api/bindings/{q(vhost)}")
    # The default exchange's implicit binding is listed too (source "").
    assert sorted(in_vhost, key=lambda b: b["source"]) == [default, ours]
    assert ours in api.json("/api/bindings")
    assert api.json(f"/api/exchanges/{q(vhost)}/{q(x)}/bindings/source") == [ours]
    assert api.json(f"/api/exchanges/{q(vhost)}/{q(x)}/bindings/destination") == []
    assert sorted(api.json(f"/api/queues/{q(vhost)}/{q(qn)}/bindings"),
                  key=lambda b: b["source"]) == [default, ours]
    assert_error(api.get(f"/api/bindings/{q(unique('novh'))}"), 404, *NF)


def test_binding_made_over_amqp_is_listed(api, ch):
    x, qn = setup_eq(api, type="headers")
    ch.queue_bind(qn, x, routing_key="", arguments={"x-match": "all", "h": "v"})
    listed = api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}")
    assert len(listed) == 1
    assert listed[0]["arguments"] == {"x-match": "all", "h": "v"}
    assert listed[0]["routing_key"] == ""
    assert listed[0]["properties_key"].startswith("~")
    assert api.delete(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}/"
                      f"{q(listed[0]['properties_key'])}").status_code == 204
    assert api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}") == []


def test_binding_errors(api):
    x, qn = setup_eq(api)
    nox, noq = unique("nox"), unique("noq")
    assert_error(api.post(f"/api/bindings/%2F/e/{q(nox)}/q/{q(qn)}",
                          {"routing_key": "k", "arguments": {}}),
                 404, "not_found", f"no exchange '{nox}' in vhost '/'")
    assert_error(api.post(f"/api/bindings/%2F/e/{q(x)}/q/{q(noq)}",
                          {"routing_key": "k", "arguments": {}}),
                 404, "not_found", f"no queue '{noq}' in vhost '/'")
    assert_error(api.post(f"/api/bindings/%2F/e/{q(x)}/e/{q(nox)}",
                          {"routing_key": "k", "arguments": {}}),
                 404, "not_found", f"no exchange '{nox}' in vhost '/'")
    # The default exchange cannot be bound to.
    assert_error(api.post(f"/api/bindings/%2F/e/amq.default/q/{q(qn)}",
                          {"routing_key": "k", "arguments": {}}),
                 401, "not_authorised", "Access refused.")
    assert_error(api.get(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}/nope"), 404, *NF)
    assert_error(api.delete(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}/nope"), 404, *NF)
    assert api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}") == []
