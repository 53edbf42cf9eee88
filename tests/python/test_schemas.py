"""Schemas enforced at the broker (issue 19): a registry shaped like
Confluent's under /api/schemas, subjects bound to exchanges by policy and to
queues by argument, invalid messages nacked under confirms and sent to the
invalid-message exchange with x-schema-error, Avro by x-schema-id.
Warren only."""

import json

import pika
import pytest
import requests

from amqp_support import warren_only
from http_support import q

pytestmark = warren_only

ORDER_V1 = {"type": "object",
            "properties": {"id": {"type": "integer"}, "item": {"type": "string"}},
            "required": ["id"]}


@pytest.fixture
def api(broker):
    base = f"http://{broker.host}:{broker.admin_port}/api"

    class Api:
        def put(self, path, body):
            return requests.put(base + path, json=body, auth=("guest", "guest"), timeout=10)

        def get(self, path):
            return requests.get(base + path, auth=("guest", "guest"), timeout=10)

        def delete(self, path):
            return requests.delete(base + path, auth=("guest", "guest"), timeout=10)
    return Api()


def register(api, subject, schema, kind="JSON", vhost="%2F"):
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return api.put(f"/schemas/{vhost}/{q(subject)}", {"schemaType": kind, "schema": text})


def publish(ch, exchange, key, body, content_type="application/json", headers=None):
    """True if confirmed, False if nacked."""
    try:
        ch.basic_publish(exchange, key, body,
                         pika.BasicProperties(content_type=content_type, headers=headers))
        return True
    except pika.exceptions.NackError:
        return False


def test_a_policy_bound_json_schema_nacks_invalid_messages_and_routes_them_aside(conn, names, api):
    subject = names.x("orders")
    r = register(api, subject, ORDER_V1)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": r.json()["id"], "version": 1}
    ch = conn.channel()
    ch.confirm_delivery()
    x, invalid = names.x("orders"), names.x("orders-invalid")
    ch.exchange_declare(x, "direct")
    ch.exchange_declare(invalid, "fanout")
    good, bad = names.q("good"), names.q("bad")
    ch.queue_declare(good)
    ch.queue_bind(good, x, "new")
    ch.queue_declare(bad)
    ch.queue_bind(bad, invalid, "")
    r = api.put(f"/policies/%2F/{q(names.x('schema-policy'))}", {
        "pattern": f"^{x}$", "apply-to": "exchanges",
        "definition": {"schema-subject": subject, "schema-invalid-exchange": invalid}})
    assert r.status_code in (201, 204), r.text
    assert publish(ch, x, "new", json.dumps({"id": 7, "item": "tea"}).encode())
    assert not publish(ch, x, "new", json.dumps({"id": "seven"}).encode())
    assert not publish(ch, x, "new", b"not json at all")
    assert not publish(ch, x, "new", b'{"id": 1}', content_type="text/plain")
    m, _, body = ch.basic_get(good, auto_ack=True)
    assert json.loads(body) == {"id": 7, "item": "tea"}
    assert ch.basic_get(good)[0] is None
    errors = []
    for _ in range(3):
        m, props, body = ch.basic_get(bad, auto_ack=True)
        assert m is not None
        errors.append(props.headers["x-schema-error"])
    assert "/id" in errors[0] and "integer" in errors[0], errors
    assert "not JSON" in errors[1]
    assert "text/plain" in errors[2]
    # The catalogue says where the subject is bound.
    [entry] = [s for s in api.get("/schemas").json() if s["subject"] == subject]
    assert entry["compatibility"] == "BACKWARD"
    assert {"type": "exchange", "name": x, "version": None} in entry["bound_to"]


def test_a_queue_argument_binds_a_subject_and_a_version(conn, names, api):
    subject = names.x("events")
    assert register(api, subject, ORDER_V1).status_code == 200
    ch = conn.channel()
    ch.confirm_delivery()
    queue = names.q("typed")
    ch.queue_declare(queue, arguments={"x-schema-subject": subject, "x-schema-version": 1})
    assert publish(ch, "", queue, b'{"id": 1}')
    assert not publish(ch, "", queue, b'{"item": "no id"}')
    assert ch.queue_declare(queue, passive=True).method.message_count == 1
    # A bad argument is refused at declare.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare(names.q("bad-arg"),
                                     arguments={"x-schema-subject": subject,
                                                "x-schema-version": 0})
    assert e.value.reply_code == 406
    [entry] = [s for s in api.get("/schemas/%2F").json() if s["subject"] == subject]
    assert {"type": "queue", "name": queue, "version": 1} in entry["bound_to"]


def test_an_exchange_argument_binds_a_subject_and_wins_over_a_policy(conn, names, api):
    strict, loose = names.x("strict"), names.x("loose")
    assert register(api, strict, ORDER_V1).status_code == 200
    assert register(api, loose, {"type": "object"}).status_code == 200
    ch = conn.channel()
    ch.confirm_delivery()
    x, invalid = names.x("typed-x"), names.x("typed-invalid")
    ch.exchange_declare(invalid, "fanout")
    ch.exchange_declare(x, "fanout", arguments={"x-schema-subject": strict,
                                                "x-schema-invalid-exchange": invalid})
    kept, aside = names.q("kept"), names.q("aside")
    ch.queue_declare(kept)
    ch.queue_bind(kept, x, "")
    ch.queue_declare(aside)
    ch.queue_bind(aside, invalid, "")
    # A policy naming another subject does not replace the argument.
    r = api.put(f"/policies/%2F/{q(names.x('loose-policy'))}", {
        "pattern": f"^{x}$", "apply-to": "exchanges", "definition": {"schema-subject": loose}})
    assert r.status_code in (201, 204), r.text
    assert publish(ch, x, "", b'{"id": 1}')
    assert not publish(ch, x, "", b'{"item": "no id"}')
    assert ch.queue_declare(kept, passive=True).method.message_count == 1
    m, props, _ = ch.basic_get(aside, auto_ack=True)
    assert m is not None and "id" in props.headers["x-schema-error"]
    [entry] = [s for s in api.get("/schemas/%2F").json() if s["subject"] == strict]
    assert {"type": "exchange", "name": x, "version": None} in entry["bound_to"]
    # A bad argument is refused at declare.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().exchange_declare(names.x("bad-x"), "fanout",
                                        arguments={"x-schema-subject": strict,
                                                   "x-schema-version": "one"})
    assert e.value.reply_code == 406


def test_a_breaking_version_is_refused_with_409_under_backward(names, api):
    subject = names.x("compat")
    assert register(api, subject, ORDER_V1).json()["version"] == 1
    # Registering the same schema again is idempotent.
    again = register(api, subject, ORDER_V1)
    assert again.status_code == 200 and again.json()["version"] == 1
    adds_optional = dict(ORDER_V1, properties=dict(ORDER_V1["properties"],
                                                   note={"type": "string"}))
    r = register(api, subject, adds_optional)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    breaking = dict(adds_optional, required=["id", "note"])
    r = register(api, subject, breaking)
    assert r.status_code == 409, r.text
    assert r.json()["error_code"] == 409
    assert "incompatible" in r.json()["message"] and "note" in r.json()["message"]
    assert api.get(f"/schemas/%2F/{q(subject)}").json() == [1, 2]
    latest = api.get(f"/schemas/%2F/{q(subject)}/versions/latest").json()
    assert latest["version"] == 2 and latest["schemaType"] == "JSON"
    assert api.get(f"/schemas/ids/{latest['id']}").json()["subject"] == subject
    # Not a schema: 422.
    r = register(api, subject, '{"type": 12}')
    assert r.status_code == 422 and r.json()["error_code"] == 42201
    # With NONE anything goes.
    r = api.put(f"/schemas/%2F/{q(subject)}/config", {"compatibility": "NONE"})
    assert r.status_code == 200 and r.json() == {"compatibility": "NONE"}
    assert register(api, subject, breaking).json()["version"] == 3
    assert api.delete(f"/schemas/%2F/{q(subject)}").json() == [1, 2, 3]
    assert api.get(f"/schemas/%2F/{q(subject)}").status_code == 404


def zigzag(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_avro_messages_are_checked_by_the_schema_id_they_name(conn, names, api):
    subject = names.x("avro")
    schema = {"type": "record", "name": "Reading",
              "fields": [{"name": "sensor", "type": "string"},
                         {"name": "value", "type": "long"}]}
    r = register(api, subject, schema, kind="AVRO")
    assert r.status_code == 200, r.text
    schema_id = r.json()["id"]
    ch = conn.channel()
    ch.confirm_delivery()
    queue = names.q("readings")
    ch.queue_declare(queue, arguments={"x-schema-subject": subject})
    datum = zigzag(len(b"t1")) + b"t1" + zigzag(-42)
    headers = {"x-schema-id": schema_id}
    assert publish(ch, "", queue, datum, content_type="avro/binary", headers=headers)
    assert not publish(ch, "", queue, b"\xff\xff\xff", content_type="avro/binary", headers=headers)
    assert not publish(ch, "", queue, datum, content_type="avro/binary")
    assert not publish(ch, "", queue, datum, content_type="avro/binary",
                       headers={"x-schema-id": schema_id + 1000})
    assert ch.queue_declare(queue, passive=True).method.message_count == 1


def test_refusals_are_counted_and_announced(broker, conn, names, api):
    subject = names.x("counted")
    assert register(api, subject, ORDER_V1).status_code == 200
    ch = conn.channel()
    events = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(events, "amq.rabbitmq.event", "schema.#")
    pub = conn.channel()
    pub.confirm_delivery()
    queue = names.q("counted")
    pub.queue_declare(queue, arguments={"x-schema-subject": subject})
    assert not publish(pub, "", queue, b'{"id": "x"}')
    text = requests.get(f"http://{broker.host}:{broker.metrics_port}/metrics", timeout=10).text
    assert f'rabbitmq_schema_messages_refused_total{{vhost="/",subject="{subject}"}} 1' in text
    m, props, _ = ch.basic_get(events, auto_ack=True)
    assert m.routing_key == "schema.validation.failed"
    assert props.headers["subject"] == subject and props.headers["queue"] == queue


def test_schemas_are_definitions(names, api):
    subject = names.x("exported")
    assert register(api, subject, ORDER_V1).status_code == 200
    exported = api.get("/definitions").json()
    [p] = [p for p in exported["parameters"]
           if p["component"] == "schema-subject" and p["name"] == subject]
    assert p["value"]["versions"][0]["schemaType"] == "JSON"
    # Importing a subject with a broken schema is refused whole.
    broken = {"parameters": [{"component": "schema-subject", "vhost": "/", "name": names.x("broken"),
                              "value": {"versions": [{"version": 1, "id": 999, "schemaType": "JSON",
                                                      "schema": "{"}]}}]}
    r = requests.post(api.get("/overview").url.replace("/overview", "/definitions"),
                      json=broken, auth=("guest", "guest"), timeout=10)
    assert r.status_code == 400, r.text


def test_protobuf_messages_are_checked_by_the_schema_id_they_name(conn, names, api):
    subject = names.x("proto")
    proto = ('syntax = "proto3";\n'
             'message Reading { string sensor = 1; int64 value = 2; }\n')
    r = register(api, subject, proto, kind="PROTOBUF")
    assert r.status_code == 200, r.text
    schema_id = r.json()["id"]
    # A field number changing its type breaks compatibility.
    r = register(api, subject, proto.replace("string sensor", "int64 sensor"), kind="PROTOBUF")
    assert r.status_code == 409, r.text
    ch = conn.channel()
    ch.confirm_delivery()
    queue = names.q("proto-readings")
    ch.queue_declare(queue, arguments={"x-schema-subject": subject})
    # sensor = "t1" (field 1, length-delimited), value = 5 (field 2, varint).
    good = bytes([0x0A, 2]) + b"t1" + bytes([0x10, 5])
    headers = {"x-schema-id": schema_id}
    assert publish(ch, "", queue, good, content_type="application/x-protobuf", headers=headers)
    assert not publish(ch, "", queue, bytes([0x08, 1]), content_type="application/x-protobuf",
                       headers=headers)
    assert ch.queue_declare(queue, passive=True).method.message_count == 1
