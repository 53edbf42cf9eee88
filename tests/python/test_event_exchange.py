"""The event exchange (RabbitMQ's rabbitmq_event_exchange plugin, built in):
amq.rabbitmq.event in vhost "/" gets a message for every event, routed by
its type, with the event's properties as headers.

Against a RabbitMQ, enable the plugin first (rabbitmq-plugins enable
rabbitmq_event_exchange); the tests that rest on Warren's choices where
RabbitMQ prints Erlang terms are marked warren_only."""

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqp_support import start_warren, stop_warren, warren_only
from http_support import q, unique

EXCHANGE = "amq.rabbitmq.event"


class EventFeed:
    """A queue bound to the event exchange with a key pattern; `expect`
    reads until an event of a kind whose headers match arrives."""

    def __init__(self, params, pattern="#"):
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, EXCHANGE, pattern)
        self.seen = []

    def _read(self):
        while True:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                return
            self.seen.append((method.routing_key, props, body))

    def expect(self, kind, timeout=5, **match):
        """The first unread event `kind` whose headers include `match`."""
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            for i, (key, props, body) in enumerate(self.seen):
                headers = props.headers or {}
                if key == kind and all(headers.get(k) == v for k, v in match.items()):
                    del self.seen[: i + 1]
                    return props, body
            if time.monotonic() > deadline:
                kinds = [(k, (p.headers or {}).get("name")) for k, p, _ in self.seen]
                pytest.fail(f"no {kind} with {match}; saw {kinds}")
            self.conn.sleep(0.05)

    def kinds_about(self, field, value, settle=0.3):
        """The kinds of the events read so far (after `settle` s) whose
        `field` header is `value`, in order."""
        self.conn.sleep(settle)
        self._read()
        return [k for k, p, _ in self.seen if (p.headers or {}).get(field) == value]

    def close(self):
        if self.conn.is_open:
            self.conn.close()


@pytest.fixture
def feed(broker):
    f = EventFeed(broker.params())
    yield f
    f.close()


def test_the_exchange_is_an_internal_durable_topic_exchange(ch):
    ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True,
                        internal=True, passive=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish(EXCHANGE, "queue.created", b"forged")
        ch.queue_declare("", exclusive=True)
    assert e.value.reply_code == 403


def test_event_message_shape(feed, ch, names):
    name = names.q("shape")
    ch.queue_declare(name)
    props, body = feed.expect("queue.created", name=name)
    assert body == b""
    assert props.delivery_mode == 2
    assert props.content_type is None
    ms = props.headers["timestamp_in_ms"]
    assert isinstance(ms, int) and abs(ms / 1000 - time.time()) < 60
    assert props.timestamp == ms // 1000


def test_queue_created_and_deleted(feed, ch, names):
    name = names.q("lifecycle")
    ch.queue_declare(name, durable=True, arguments={"x-message-ttl": 60000})
    props, _ = feed.expect("queue.created", name=name)
    h = props.headers
    assert h["vhost"] == "/"
    assert h["durable"] is True and h["auto_delete"] is False
    assert h["exclusive"] is False
    assert h["owner_pid"] == ""
    assert h["user_who_performed_action"] == "guest"
    assert "type" not in h
    # Declaring it again, actively or passively, announces nothing.
    ch.queue_declare(name, durable=True, arguments={"x-message-ttl": 60000})
    ch.queue_declare(name, passive=True)
    assert feed.kinds_about("name", name).count("queue.created") == 0
    ch.queue_delete(name)
    props, _ = feed.expect("queue.deleted", name=name)
    assert props.headers["user_who_performed_action"] == "guest"


@warren_only
def test_queue_arguments_are_a_table(feed, ch, names):
    # RabbitMQ prints each argument as Erlang text in an array.
    name = names.q("args")
    ch.queue_declare(name, arguments={"x-message-ttl": 60000, "x-max-length": 10})
    props, _ = feed.expect("queue.created", name=name)
    assert props.headers["arguments"] == {"x-message-ttl": 60000, "x-max-length": 10}


def test_stream_queue_created_says_its_type(feed, ch, names):
    name = names.q("stream")
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    props, _ = feed.expect("queue.created", name=name)
    assert props.headers["type"] == "rabbit_stream_queue"
    assert "exclusive" not in props.headers


def test_an_exclusive_queue_goes_with_its_connection(feed, connect):
    conn = connect()
    ch = conn.channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    props, _ = feed.expect("queue.created", name=name)
    assert props.headers["exclusive"] is True
    owner = props.headers["owner_pid"]
    assert owner.startswith("<") and owner.endswith(">")
    conn.close()
    props, _ = feed.expect("queue.deleted", name=name)
    assert props.headers["user_who_performed_action"] == "rmq-internal"
    feed.expect("connection.closed", pid=owner)


def test_exchange_created_and_deleted(feed, ch, names):
    name = names.x("lifecycle")
    ch.exchange_declare(name, exchange_type="headers", durable=False, auto_delete=False)
    props, _ = feed.expect("exchange.created", name=name)
    h = props.headers
    assert (h["type"], h["durable"], h["auto_delete"], h["internal"]) == (
        "headers", False, False, False)
    assert h["vhost"] == "/" and h["policy"] == ""
    assert h["user_who_performed_action"] == "guest"
    ch.exchange_declare(name, exchange_type="headers", durable=False)
    assert feed.kinds_about("name", name).count("exchange.created") == 0
    ch.exchange_delete(name)
    props, _ = feed.expect("exchange.deleted", name=name)
    assert props.headers["vhost"] == "/"


def test_bindings_created_and_deleted(feed, ch, names):
    x, queue = names.x("bind"), names.q("bind")
    ch.exchange_declare(x, exchange_type="direct")
    ch.queue_declare(queue)
    ch.queue_bind(queue, x, "rk.one")
    props, _ = feed.expect("binding.created", destination_name=queue)
    h = props.headers
    assert (h["source_name"], h["source_kind"], h["destination_kind"], h["routing_key"]) == (
        x, "exchange", "queue", "rk.one")
    assert h["vhost"] == "/" and h["user_who_performed_action"] == "guest"
    ch.queue_unbind(queue, x, "rk.one")
    feed.expect("binding.deleted", destination_name=queue, routing_key="rk.one",
                user_who_performed_action="guest")
    # Deleting a bound queue takes its bindings with it: the broker's doing.
    ch.queue_bind(queue, x, "rk.two")
    feed.expect("binding.created", destination_name=queue, routing_key="rk.two")
    ch.queue_delete(queue)
    feed.expect("binding.deleted", destination_name=queue, routing_key="rk.two",
                user_who_performed_action="rmq-internal")
    feed.expect("queue.deleted", name=queue)


def test_exchange_to_exchange_binding(feed, ch, names):
    src, dst = names.x("e2e-src"), names.x("e2e-dst")
    ch.exchange_declare(src, exchange_type="fanout")
    ch.exchange_declare(dst, exchange_type="fanout")
    ch.exchange_bind(dst, src, "")
    props, _ = feed.expect("binding.created", destination_name=dst)
    assert props.headers["destination_kind"] == "exchange"
    ch.exchange_unbind(dst, src, "")
    feed.expect("binding.deleted", destination_name=dst)


def test_connection_and_channel_created_and_closed(feed, broker):
    params = broker.params(client_properties={"connection_name": "events-worker"})
    conn = pika.BlockingConnection(params)
    props, _ = feed.expect("connection.created", user_provided_name="events-worker")
    h = props.headers
    pid = h["pid"]
    assert h["user"] == "guest" and h["vhost"] == "/"
    assert h["type"] == "network" and h["protocol"] == "{0,9,1}"
    assert h["auth_mechanism"] == "PLAIN" and h["ssl"] is False
    assert h["name"].endswith(f":{broker.amqp_port}") and " -> " in h["name"]
    assert isinstance(h["peer_port"], int) and h["port"] == broker.amqp_port
    assert isinstance(h["connected_at"], int) and h["frame_max"] > 0
    assert h["user_who_performed_action"] == "guest"
    ch = conn.channel()
    props, _ = feed.expect("channel.created", connection=pid)
    c = props.headers
    assert c["number"] == ch.channel_number
    assert c["name"] == f"{h['name']} ({ch.channel_number})"
    assert (c["user"], c["vhost"]) == ("guest", "/")
    ch.close()
    feed.expect("channel.closed", pid=c["pid"], user_who_performed_action="guest")
    conn.close()
    props, _ = feed.expect("connection.closed", pid=pid)
    assert props.headers["name"] == h["name"]
    assert props.headers["user_provided_name"] == "events-worker"
    assert "user_who_performed_action" not in props.headers


def test_consumers_created_and_deleted(feed, ch, names):
    name = names.q("consumed")
    ch.queue_declare(name)
    ch.basic_qos(prefetch_count=7)
    tag = ch.basic_consume(name, lambda *a: None, consumer_tag="events-ctag",
                           arguments={"x-priority": 3})
    props, _ = feed.expect("consumer.created", consumer_tag=tag)
    h = props.headers
    assert (h["queue"], h["vhost"], h["ack_required"], h["exclusive"]) == (
        name, "/", True, False)
    assert h["prefetch_count"] == 7
    assert h["channel"].startswith("<")
    assert h["user_who_performed_action"] == "guest"
    ch.basic_cancel(tag)
    props, _ = feed.expect("consumer.deleted", consumer_tag=tag)
    assert props.headers["queue"] == name and props.headers["channel"] == h["channel"]


def test_an_auto_delete_queue_goes_after_its_last_consumer(feed, ch, names):
    name = names.q("auto")
    ch.queue_declare(name, auto_delete=True)
    tag = ch.basic_consume(name, lambda *a: None)
    feed.expect("consumer.created", consumer_tag=tag)
    ch.basic_cancel(tag)
    feed.expect("consumer.deleted", consumer_tag=tag)
    props, _ = feed.expect("queue.deleted", name=name)
    assert props.headers["user_who_performed_action"] == "rmq-internal"


def test_consumers_of_a_closed_channel_are_deleted(feed, connect, names):
    conn = connect()
    ch = conn.channel()
    name = names.q("closing")
    ch.queue_declare(name)
    tag = ch.basic_consume(name, lambda *a: None)
    feed.expect("consumer.created", consumer_tag=tag)
    conn.close()
    feed.expect("consumer.deleted", consumer_tag=tag, queue=name)


def test_authentication_success_and_failure(feed, broker):
    conn = pika.BlockingConnection(broker.params())
    props, _ = feed.expect("user.authentication.success", name="guest")
    h = props.headers
    assert h["auth_mechanism"] == "PLAIN" and h["connection_type"] == "network"
    assert " -> " in h["connection_name"] and h["ssl"] is False
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(broker.params(
            credentials=pika.PlainCredentials("events-nobody", "wrong")))
    props, _ = feed.expect("user.authentication.failure", name="events-nobody")
    assert "error" in props.headers


@warren_only
def test_authentication_failure_says_why_in_text(feed, broker):
    # RabbitMQ sends the reason as a list of character codes.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(broker.params(
            credentials=pika.PlainCredentials("events-nobody2", "wrong")))
    props, _ = feed.expect("user.authentication.failure", name="events-nobody2")
    assert props.headers["error"] == "user 'events-nobody2' - invalid credentials"


def test_users_and_permissions_from_the_http_api(feed, api):
    user = api.create_user(unique("events-user"), tags="management")
    feed.expect("user.created", name=user, user_who_performed_action="guest")
    props, _ = feed.expect("user.tags.set", name=user)
    assert props.headers["tags"] == ["management"]
    api.set_permissions("/", user, configure="^ev.*", write=".*", read="")
    props, _ = feed.expect("permission.created", user=user)
    h = props.headers
    assert (h["vhost"], h["configure"], h["write"], h["read"]) == ("/", "^ev.*", ".*", "")
    assert api.delete(f"/api/permissions/%2F/{q(user)}").status_code == 204
    feed.expect("permission.deleted", user=user, vhost="/")
    api.put(f"/api/users/{q(user)}", {"password": "other", "tags": ""})
    feed.expect("user.password.changed", name=user)
    assert api.delete(f"/api/users/{q(user)}").status_code == 204
    feed.expect("user.deleted", name=user, user_who_performed_action="guest")


def test_policies_set_and_cleared(feed, api):
    name = unique("events-policy")
    api.create_policy("/", name=name, pattern="^events-nothing$", definition={"max-length": 100},
                      priority=1, **{"apply-to": "queues"})
    props, _ = feed.expect("policy.set", name=name)
    h = props.headers
    assert (h["vhost"], h["pattern"], h["apply-to"], h["priority"]) == (
        "/", "^events-nothing$", "queues", 1)
    assert h["definition"] == {"max-length": 100}
    assert api.delete(f"/api/policies/%2F/{q(name)}").status_code == 204
    feed.expect("policy.cleared", name=name, vhost="/")


def test_vhosts_created_and_deleted_and_their_events_come_to_slash(feed, api, broker):
    vhost = api.create_vhost(unique("events-vhost"), description="event test")
    props, _ = feed.expect("vhost.created", name=vhost)
    assert props.headers["description"] == "event test"
    assert props.headers["user_who_performed_action"] == "guest"
    # What happens in another vhost is announced in "/" all the same.
    conn = pika.BlockingConnection(broker.params(virtual_host=vhost))
    ch = conn.channel()
    ch.queue_declare("events-elsewhere")
    feed.expect("queue.created", name="events-elsewhere", vhost=vhost)
    conn.close()
    assert api.delete(f"/api/vhosts/{q(vhost)}").status_code == 204
    feed.expect("queue.deleted", name="events-elsewhere", vhost=vhost)
    feed.expect("vhost.deleted", name=vhost)


def test_a_topic_pattern_selects_events(broker, ch, names):
    only_queues = EventFeed(broker.params(), pattern="queue.*")
    try:
        x, queue = names.x("selected"), names.q("selected")
        ch.exchange_declare(x)
        ch.queue_declare(queue)
        only_queues.expect("queue.created", name=queue)
        assert all(k.startswith("queue.") for k in only_queues.kinds_about("vhost", "/"))
    finally:
        only_queues.close()


@warren_only
def test_alarms_set_and_cleared():
    broker = start_warren({"WARREN_MEMORY_HIGH_WATERMARK": "256KiB"})
    try:
        feed = EventFeed(broker.params(), pattern="alarm.*")
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        ch.queue_declare("hoard")
        for _ in range(512):
            ch.basic_publish("", "hoard", b"x" * 1024)
        props, _ = feed.expect("alarm.set", source="memory", timeout=10)
        assert props.headers["node"].startswith("warren@")
        feed.ch.queue_purge("hoard")
        feed.expect("alarm.cleared", source="memory", timeout=10)
        feed.close()
        if conn.is_open:
            conn.close()
    finally:
        stop_warren(broker)


@warren_only
def test_the_event_exchange_can_be_switched_off():
    broker = start_warren({"WARREN_EVENT_EXCHANGE__ENABLED": "false"})
    try:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.exchange_declare(EXCHANGE, exchange_type="topic", passive=True)
        assert e.value.reply_code == 404
        conn.close()
    finally:
        stop_warren(broker)
