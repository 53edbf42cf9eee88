"""OpenTelemetry: a message carrying W3C trace context gets the broker's
spans in its trace (receive, enqueue, deliver, ack/nack/reject,
dead-letter, expiry), exported over OTLP/HTTP to a receiver started here;
its traceparent reaches the consumer unchanged. Warren only (no RabbitMQ
emits broker-side spans)."""

import os
import time
import uuid

import pika
import pytest

from amqp_support import start_warren, stop_warren, warren_only
from otlp_receiver import OtlpReceiver, dumps

pytestmark = warren_only

RECEIVE, CONSUMER, PRODUCER, SERVER, INTERNAL = 5, 5, 4, 2, 1


def traceparent():
    """A fresh sampled context: (trace id, parent span id, header)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


def otel_env(receiver, **more):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_SERVICE_NAME": "warren-under-test"}
    env.update(more)
    return env


@pytest.fixture(scope="module")
def traced(receiver, tmp_path_factory):
    data = tmp_path_factory.mktemp("otel-data")
    broker = start_warren(otel_env(receiver), store_args=("--data-dir", str(data)))
    yield broker
    stop_warren(broker)


@pytest.fixture
def channel(traced):
    conn = pika.BlockingConnection(traced.params())
    yield conn.channel()
    conn.close()


def by_name(spans):
    found = {}
    for s in spans:
        found.setdefault(s.name, s)
    return found


def test_a_traced_message_gets_the_brokers_spans_in_its_trace(receiver, channel):
    q = f"otel-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(q, durable=True)
    channel.confirm_delivery()
    trace_id, parent, header = traceparent()
    headers = {"traceparent": header, "tracestate": "vendor=opaque"}
    channel.basic_publish("", q, b"traced", pika.BasicProperties(
        delivery_mode=2, headers=headers, message_id="m-1"))
    time.sleep(0.02)  # measurable time in the queue
    method, props, body = channel.basic_get(q)
    assert body == b"traced"
    # The consumer gets the producer's context, unchanged.
    assert props.headers == headers
    channel.basic_ack(method.delivery_tag)
    spans = receiver.wait_for(trace_id, [
        "receive amq.default", f"enqueue {q}", f"get {q}", f"ack {q}"])
    named = by_name(spans)
    for s in spans:
        assert s.attributes["messaging.system"] == "rabbitmq", dumps(spans)
        assert s.resource["service.name"] == "warren-under-test"

    receive = named["receive amq.default"]
    assert receive.kind == CONSUMER
    assert receive.parent_span_id == parent
    assert receive.attributes["messaging.operation.type"] == "receive"
    assert receive.attributes["messaging.destination.name"] == "amq.default"
    assert receive.attributes["messaging.rabbitmq.destination.routing_key"] == q
    assert receive.attributes["messaging.message.body.size"] == 6
    assert receive.attributes["warren.routed_queues"] == [q]
    assert receive.attributes["warren.unroutable"] is False

    enqueue = named[f"enqueue {q}"]
    assert enqueue.parent_span_id == receive.span_id
    assert enqueue.attributes["messaging.destination.name"] == q
    assert enqueue.attributes["warren.persisted"] is True
    assert enqueue.attributes["warren.confirmed"] is True
    # It ends at the confirm, after the group commit.
    assert enqueue.end_ns >= receive.end_ns

    get = named[f"get {q}"]
    assert get.kind == PRODUCER
    assert get.parent_span_id == parent
    assert get.attributes["messaging.operation.name"] == "get"
    assert get.attributes["messaging.rabbitmq.message.delivery_tag"] == method.delivery_tag
    assert get.attributes["warren.queue.wait_ms"] >= 15
    assert get.attributes["warren.redelivered"] is False

    ack = named[f"ack {q}"]
    assert ack.kind == SERVER
    assert ack.attributes["messaging.operation.type"] == "settle"
    assert ack.attributes["messaging.rabbitmq.message.delivery_tag"] == method.delivery_tag
    channel.queue_delete(q)


def test_a_consumer_delivery_nack_and_reject_are_recorded(receiver, channel):
    q = f"otel-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(q, exclusive=True)
    trace_id, _, header = traceparent()
    channel.basic_publish("", q, b"x", pika.BasicProperties(headers={"traceparent": header}))
    got = []
    channel.basic_consume(q, lambda ch, m, p, b: got.append((m, p)), consumer_tag="ctag-1")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        channel.connection.process_data_events(0.05)
    method, props = got.pop()
    assert props.headers["traceparent"] == header
    channel.basic_reject(method.delivery_tag, requeue=True)
    while not got and time.monotonic() < deadline:
        channel.connection.process_data_events(0.05)
    method, _ = got.pop()
    channel.basic_nack(method.delivery_tag, requeue=False)
    spans = receiver.wait_for(trace_id, [f"deliver {q}", f"reject {q}", f"nack {q}"])
    delivers = [s for s in spans if s.name == f"deliver {q}"]
    assert len(delivers) == 2, dumps(spans)
    assert {d.attributes["warren.redelivered"] for d in delivers} == {False, True}
    assert all(d.attributes["warren.consumer_tag"] == "ctag-1" for d in delivers)
    named = by_name(spans)
    assert named[f"reject {q}"].attributes["warren.requeue"] is True
    assert named[f"nack {q}"].attributes["warren.requeue"] is False
    assert named[f"nack {q}"].attributes["messaging.operation.name"] == "nack"


def test_dead_lettering_and_expiry_are_recorded_and_the_trace_goes_on(receiver, channel):
    tag = uuid.uuid4().hex[:8]
    dlx, dlq, q = f"otel-dlx-{tag}", f"otel-dlq-{tag}", f"otel-ttl-{tag}"
    channel.exchange_declare(dlx, "fanout", auto_delete=True)
    channel.queue_declare(dlq, exclusive=True)
    channel.queue_bind(dlq, dlx)
    channel.queue_declare(q, exclusive=True, arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": dlx})
    trace_id, _, header = traceparent()
    channel.basic_publish("", q, b"late", pika.BasicProperties(headers={"traceparent": header}))
    deadline = time.monotonic() + 5
    body = None
    while body is None and time.monotonic() < deadline:
        _, props, body = channel.basic_get(dlq, auto_ack=True)
        time.sleep(0.02)
    assert body == b"late"
    assert props.headers["traceparent"] == header
    spans = receiver.wait_for(trace_id, [f"expire {q}", f"dead-letter {q}", f"get {dlq}"])
    named = by_name(spans)
    dead = named[f"dead-letter {q}"]
    assert dead.attributes["warren.dead_letter.reason"] == "expired"
    assert dead.attributes["warren.dead_letter.exchange"] == dlx
    assert named[f"expire {q}"].attributes["messaging.destination.name"] == q


def test_an_unroutable_message_says_so(receiver, channel):
    x = f"otel-x-{uuid.uuid4().hex[:8]}"
    channel.exchange_declare(x, "direct", auto_delete=True)
    trace_id, _, header = traceparent()
    channel.basic_publish(x, "nowhere", b"x", pika.BasicProperties(headers={"traceparent": header}))
    receive = receiver.wait_for(trace_id, [f"receive {x}"])[0]
    assert receive.attributes["warren.unroutable"] is True
    assert receive.attributes["warren.routed_queues"] == []


def test_messages_without_or_with_unsampled_context_are_not_traced(receiver, channel):
    q = f"otel-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(q, exclusive=True)
    unsampled_trace, _, header = traceparent()
    unsampled = header[:-2] + "00"
    channel.basic_publish("", q, b"a", pika.BasicProperties(headers={"traceparent": unsampled}))
    channel.basic_publish("", q, b"b")
    _, props_a, _ = channel.basic_get(q, auto_ack=True)
    _, props_b, _ = channel.basic_get(q, auto_ack=True)
    assert props_a.headers == {"traceparent": unsampled}
    assert props_b.headers is None  # nothing added by the broker
    # A later traced message's spans arrive; the unsampled trace has none.
    trace_id, _, header = traceparent()
    channel.basic_publish("", q, b"c", pika.BasicProperties(headers={"traceparent": header}))
    receiver.wait_for(trace_id, ["receive amq.default"])
    assert receiver.in_trace(unsampled_trace) == []
    names_for_q = [s for s in receiver.spans
                   if s.attributes.get("messaging.destination.name") == q
                   or s.attributes.get("messaging.rabbitmq.destination.routing_key") == q]
    assert all(s.trace_id == trace_id for s in names_for_q), dumps(names_for_q)


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_context_less_messages_start_traces_when_sampled(receiver, protocol):
    broker = start_warren(otel_env(
        receiver, OTEL_TRACES_SAMPLER="parentbased_always_on",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol))
    try:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"fresh", pika.BasicProperties(headers={"app": "x"}))
        method, props, _ = ch.basic_get(q)
        ch.basic_ack(method.delivery_tag)
        # The broker started the trace; its traceparent names the receive span.
        assert props.headers["app"] == "x"
        version, trace_id, span_id, flags = props.headers["traceparent"].split("-")
        assert (version, flags) == ("00", "01")
        spans = receiver.wait_for(trace_id, [
            "receive amq.default", f"enqueue {q}", f"get {q}", f"ack {q}"])
        receive = by_name(spans)["receive amq.default"]
        assert receive.span_id == span_id
        assert receive.parent_span_id == ""
        conn.close()
    finally:
        stop_warren(broker)
    wanted = "json" if protocol == "http/json" else "protobuf"
    assert any(path == "/v1/traces" and wanted in ctype for path, ctype in receiver.requests)


def test_an_unsupported_protocol_is_refused_at_startup(receiver):
    with pytest.raises(BaseException) as failed:
        start_warren(otel_env(receiver, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"))
    assert "OTLP protocol 'grpc' is not supported" in str(failed.value)
