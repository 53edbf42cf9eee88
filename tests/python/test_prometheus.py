"""The Prometheus endpoint (no auth): /metrics with RabbitMQ's family names,
types and labels (every family of the RabbitMQ-Overview Grafana dashboard,
rabbitmq_identity_info), counters that move, /metrics/per-object with
per-queue labels and /metrics/detailed?family=... ."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from http_support import eventually, q, skip_unless_warren, unique

# Family (sample name) -> Prometheus type, as RabbitMQ 3.10.8 declares them.
# These are what the RabbitMQ-Overview dashboard (grafana.com 10991) queries.
DASHBOARD = {
    "rabbitmq_identity_info": "unknown",  # untyped
    "rabbitmq_build_info": "unknown",
    "rabbitmq_erlang_uptime_seconds": "gauge",
    "rabbitmq_queue_messages_ready": "gauge",
    "rabbitmq_queue_messages_unacked": "gauge",
    "rabbitmq_global_messages_received_total": "counter",
    "rabbitmq_global_messages_delivered_total": "counter",
    "rabbitmq_global_messages_routed_total": "counter",
    "rabbitmq_global_messages_confirmed_total": "counter",
    "rabbitmq_global_messages_received_confirm_total": "counter",
    "rabbitmq_global_messages_unroutable_dropped_total": "counter",
    "rabbitmq_global_messages_unroutable_returned_total": "counter",
    "rabbitmq_global_messages_delivered_consume_auto_ack_total": "counter",
    "rabbitmq_global_messages_delivered_consume_manual_ack_total": "counter",
    "rabbitmq_global_messages_delivered_get_auto_ack_total": "counter",
    "rabbitmq_global_messages_delivered_get_manual_ack_total": "counter",
    "rabbitmq_global_messages_get_empty_total": "counter",
    "rabbitmq_global_messages_redelivered_total": "counter",
    "rabbitmq_global_messages_acknowledged_total": "counter",
    "rabbitmq_global_publishers": "gauge",
    "rabbitmq_global_consumers": "gauge",
    "rabbitmq_connections": "gauge",
    "rabbitmq_channels": "gauge",
    "rabbitmq_queues": "gauge",
    "rabbitmq_connections_opened_total": "counter",
    "rabbitmq_connections_closed_total": "counter",
    "rabbitmq_channels_opened_total": "counter",
    "rabbitmq_channels_closed_total": "counter",
    "rabbitmq_queues_declared_total": "counter",
    "rabbitmq_queues_created_total": "counter",
    "rabbitmq_queues_deleted_total": "counter",
    "rabbitmq_resident_memory_limit_bytes": "gauge",
    "rabbitmq_process_resident_memory_bytes": "gauge",
    "rabbitmq_disk_space_available_bytes": "gauge",
    "rabbitmq_disk_space_available_limit_bytes": "gauge",
    "rabbitmq_process_max_fds": "gauge",
    "rabbitmq_process_open_fds": "gauge",
}
# Alert rules use these too.
ALERTS = {
    "rabbitmq_alarms_memory_used_watermark": "unknown",
    "rabbitmq_alarms_free_disk_space_watermark": "unknown",
    "rabbitmq_alarms_file_descriptor_limit": "unknown",
    "rabbitmq_consumers": "gauge",
}
PER_QUEUE = ["rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
             "rabbitmq_queue_messages", "rabbitmq_queue_consumers"]


class Scrape:
    """One parsed scrape: samples by sample name, and each sample name's type."""

    def __init__(self, text):
        self.samples = {}
        self.types = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((s.labels, s.value))
                self.types[s.name] = family.type

    def value(self, name, **labels):
        """The one sample of name whose labels include `labels`."""
        found = [v for (l, v) in self.samples.get(name, [])
                 if all(l.get(k) == v2 for k, v2 in labels.items())]
        assert len(found) == 1, (name, labels, self.samples.get(name))
        return found[0]

    def total(self, name, **labels):
        """Sum over the samples of name whose labels include `labels`."""
        return sum(v for (l, v) in self.samples.get(name, [])
                   if all(l.get(k) == v2 for k, v2 in labels.items()))


def scrape(broker, path="/metrics", **params):
    r = requests.get(f"http://{broker.host}:{broker.metrics_port}{path}", params=params,
                     timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    return Scrape(r.text)


def test_metrics_needs_no_auth_and_parses(broker):
    s = scrape(broker)
    assert len(s.samples) > 40


@pytest.mark.parametrize("name", sorted(DASHBOARD) + sorted(ALERTS))
def test_dashboard_family_present_with_type(broker, name):
    s = scrape(broker)
    assert name in s.samples, f"{name} missing"
    want = {**DASHBOARD, **ALERTS}[name]
    if want == "unknown":
        # RabbitMQ declares these untyped; a gauge queries the same in PromQL.
        assert s.types[name] in ("unknown", "gauge"), s.types[name]
    else:
        assert s.types[name] == want


def test_identity_and_build_info(api, broker):
    o = api.json("/api/overview")
    s = scrape(broker)
    [(labels, value)] = s.samples["rabbitmq_identity_info"]
    assert value == 1
    assert labels["rabbitmq_node"] == o["node"]
    assert labels["rabbitmq_cluster"] == o["cluster_name"]
    assert labels["rabbitmq_cluster_permanent_id"]
    [(labels, value)] = s.samples["rabbitmq_build_info"]
    assert value == 1
    assert labels["rabbitmq_version"] == o["rabbitmq_version"]
    assert {"erlang_version", "prometheus_plugin_version",
            "prometheus_client_version"} <= set(labels)


def test_labels_of_global_families(broker):
    s = scrape(broker)
    for name in ["rabbitmq_global_messages_received_total",
                 "rabbitmq_global_messages_routed_total", "rabbitmq_global_publishers"]:
        assert "amqp091" in [l.get("protocol") for (l, _) in s.samples[name]], name
    for name in ["rabbitmq_global_messages_delivered_total",
                 "rabbitmq_global_messages_acknowledged_total"]:
        for (l, _) in s.samples[name]:
            assert set(l) == {"protocol", "queue_type"}, (name, l)


def test_queue_families_are_aggregated_on_metrics(broker, api):
    api.create_queue("/")
    s = scrape(broker)
    for name in PER_QUEUE:
        assert [l for (l, _) in s.samples[name]] == [{}], name


def test_counters_move(broker, api, connect):
    before = scrape(broker)
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    name = api.create_queue("/")
    for i in range(3):
        ch.basic_publish("", name, b"x")
    ch.basic_publish("", unique("nowhere"), b"y")
    for _ in range(2):
        ch.basic_get(name, auto_ack=False)
    assert ch.basic_get(name, auto_ack=True)[0] is not None
    ch.basic_get(name, auto_ack=True)  # empty
    assert api.delete(f"/api/queues/%2F/{q(name)}").status_code == 204

    def moved():
        after = scrape(broker)
        grew = {}
        for metric, labels, n in [
                ("rabbitmq_global_messages_received_total", {"protocol": "amqp091"}, 4),
                ("rabbitmq_global_messages_routed_total", {"protocol": "amqp091"}, 3),
                ("rabbitmq_global_messages_confirmed_total", {"protocol": "amqp091"}, 4),
                ("rabbitmq_global_messages_received_confirm_total", {"protocol": "amqp091"}, 4),
                ("rabbitmq_global_messages_unroutable_dropped_total", {"protocol": "amqp091"}, 1),
                ("rabbitmq_global_messages_delivered_get_manual_ack_total", {}, 2),
                ("rabbitmq_global_messages_delivered_get_auto_ack_total", {}, 1),
                ("rabbitmq_global_messages_get_empty_total", {}, 1),
                ("rabbitmq_global_messages_delivered_total", {}, 3),
                ("rabbitmq_queues_declared_total", {}, 1),
                ("rabbitmq_queues_created_total", {}, 1),
                ("rabbitmq_queues_deleted_total", {}, 1),
                ("rabbitmq_connections_opened_total", {}, 1),
                ("rabbitmq_channels_opened_total", {}, 1)]:
            delta = after.total(metric, **labels) - before.total(metric, **labels)
            grew[metric] = delta
            assert delta >= n, (metric, delta, n)
        return grew
    eventually(moved)


def test_gauges_follow_connections(broker, connect):
    label = unique("conn")
    conn = connect(client_properties={"connection_name": label})
    conn.channel()
    conn.channel()

    def counted():
        s = scrape(broker)
        assert s.value("rabbitmq_connections") >= 1
        assert s.value("rabbitmq_channels") >= 2
    eventually(counted)


def test_per_object_queue_labels(broker, api, connect):
    vhost = api.create_vhost()
    name = api.create_queue(vhost)
    other = api.create_queue(vhost)
    for i in range(3):
        api.publish(vhost, "", name, f"m{i}")
    ch = connect(virtual_host=vhost).channel()
    assert ch.basic_get(name, auto_ack=False)[0] is not None
    ch.basic_consume(other, lambda *a: None)

    def labelled():
        s = scrape(broker, "/metrics/per-object")
        assert s.value("rabbitmq_queue_messages_ready", vhost=vhost, queue=name) == 2
        assert s.value("rabbitmq_queue_messages_unacked", vhost=vhost, queue=name) == 1
        assert s.value("rabbitmq_queue_messages", vhost=vhost, queue=name) == 3
        assert s.value("rabbitmq_queue_consumers", vhost=vhost, queue=name) == 0
        assert s.value("rabbitmq_queue_consumers", vhost=vhost, queue=other) == 1
        assert s.value("rabbitmq_queue_messages", vhost=vhost, queue=other) == 0
        for metric in PER_QUEUE:
            for (labels, _) in s.samples[metric]:
                assert set(labels) == {"vhost", "queue"}, (metric, labels)
        # The identity join works on every endpoint.
        assert len(s.samples["rabbitmq_identity_info"]) == 1
    eventually(labelled)


def test_detailed_queue_coarse_metrics(broker, api):
    vhost = api.create_vhost()
    name = api.create_queue(vhost)
    for i in range(2):
        api.publish(vhost, "", name, f"m{i}")

    def detailed():
        s = scrape(broker, "/metrics/detailed", family="queue_coarse_metrics")
        for metric, want in [("rabbitmq_detailed_queue_messages_ready", 2),
                             ("rabbitmq_detailed_queue_messages_unacked", 0),
                             ("rabbitmq_detailed_queue_messages", 2)]:
            assert s.value(metric, vhost=vhost, queue=name) == want, metric
        # Only the families asked for (identity/build info aside).
        assert "rabbitmq_detailed_queue_consumers" not in s.samples
        assert "rabbitmq_queue_messages_ready" not in s.samples
        assert "rabbitmq_identity_info" in s.samples
    eventually(detailed)
    s = scrape(broker, "/metrics/detailed",
               family=["queue_coarse_metrics", "queue_consumer_count"], vhost=vhost)
    assert s.value("rabbitmq_detailed_queue_consumers", vhost=vhost, queue=name) == 0
    vhosts = {l["vhost"] for (l, _) in s.samples["rabbitmq_detailed_queue_messages"]}
    assert vhosts == {vhost}


@skip_unless_warren  # RabbitMQ 4.x has it; 3.10.8 does not
def test_message_size_histogram_counts_what_was_published(broker, api, connect):
    before = scrape(broker)
    ch = connect().channel()
    ch.confirm_delivery()
    name = api.create_queue("/")
    for size in [10, 500, 20_000]:
        ch.basic_publish("", name, b"m" * size)
    after = scrape(broker)
    assert after.types["rabbitmq_message_size_bytes_bucket"] == "histogram"

    def grew(sample, **labels):
        return (after.total(sample, protocol="amqp091", **labels)
                - before.total(sample, protocol="amqp091", **labels))
    assert grew("rabbitmq_message_size_bytes_count") == 3
    assert grew("rabbitmq_message_size_bytes_sum") == 20_510
    assert grew("rabbitmq_message_size_bytes_bucket", le="100") == 1
    assert grew("rabbitmq_message_size_bytes_bucket", le="1000") == 2
    assert grew("rabbitmq_message_size_bytes_bucket", le="100000") == 3
    assert grew("rabbitmq_message_size_bytes_bucket", le="+Inf") == 3


@skip_unless_warren
def test_a_slow_consumers_ack_lag_moves(broker, api, connect):
    """A consumer holding deliveries without acking: its unacked count and
    the time since its last ack grow, in /metrics/per-object, the detailed
    endpoint and the management API; an ack brings the time back down."""
    queue = unique("slow")
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue)
    for i in range(5):
        ch.basic_publish("", queue, f"m{i}".encode())
    ch.basic_qos(prefetch_count=3)
    held = []
    ch.basic_consume(queue, lambda c, m, p, b: held.append(m.delivery_tag),
                     consumer_tag="slow-one")
    conn.sleep(0.5)
    assert len(held) == 3
    labels = {"queue": queue, "consumer_tag": "slow-one"}

    s = scrape(broker, "/metrics/per-object")
    assert s.value("rabbitmq_consumer_unacked_messages", **labels) == 3
    # Never acked yet: no sample for the time since.
    assert not [l for l, _ in s.samples.get("rabbitmq_consumer_seconds_since_last_ack", [])
                if l.get("queue") == queue]

    ch.basic_ack(held[0])
    conn.sleep(1.2)  # the fourth arrives; then nothing is acked
    s = scrape(broker, "/metrics/detailed", family="consumer_ack_metrics")
    assert s.value("rabbitmq_detailed_consumer_unacked_messages", **labels) == 3
    since = s.value("rabbitmq_detailed_consumer_seconds_since_last_ack", **labels)
    assert 1.0 <= since < 30, since

    [c] = [c for c in api.json("/api/consumers/%2F") if c["queue"]["name"] == queue]
    assert c["messages_unacknowledged"] == 3
    assert c["ms_since_last_ack"] >= 1000
    assert " -> " in c["channel_details"]["name"]

    ch.basic_ack(0, multiple=True)
    conn.sleep(0.2)
    s = scrape(broker, "/metrics/per-object")
    assert s.value("rabbitmq_consumer_seconds_since_last_ack", **labels) < 1.0
    ch.queue_delete(queue)


@skip_unless_warren
def test_queue_health_the_oldest_message_ages_and_delivery_latency_is_counted(
        broker, api, connect):
    """Messages left ready: the queue's oldest-message age grows, in
    /metrics/per-object, the detailed endpoint and the management API; once
    they are consumed it is gone, and their wait is in the latency
    histogram (a slow queue's messages fall in the slow buckets)."""
    queue = unique("health")
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue)
    for i in range(3):
        ch.basic_publish("", queue, f"m{i}".encode())
    conn.sleep(1.2)
    labels = {"queue": queue}
    s = scrape(broker, "/metrics/per-object")
    age = s.value("rabbitmq_queue_oldest_ready_message_age_seconds", **labels)
    assert 1.0 <= age < 30, age
    info = api.json(f"/api/queues/%2F/{queue}")
    assert info["oldest_ready_message_age_ms"] >= 1000
    assert info["delivery_latency"]["count"] == 0

    for _ in range(3):
        method, _, _ = ch.basic_get(queue)
        ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", queue, b"quick")
    ch.basic_get(queue, auto_ack=True)

    s = scrape(broker, "/metrics/detailed", family="queue_health_metrics")
    assert not [l for l, _ in s.samples.get(
        "rabbitmq_detailed_queue_oldest_ready_message_age_seconds", [])
        if l.get("queue") == queue]
    bucket = lambda le: s.value(  # noqa: E731
        "rabbitmq_detailed_queue_delivery_latency_seconds_bucket", queue=queue, le=le)
    assert bucket("0.5") == 1  # the quick one
    assert bucket("5.0") == 4  # the three that waited over a second
    assert s.value("rabbitmq_detailed_queue_delivery_latency_seconds_count", queue=queue) == 4
    assert s.value("rabbitmq_detailed_queue_delivery_latency_seconds_sum", queue=queue) >= 3.0

    info = api.json(f"/api/queues/%2F/{queue}")
    assert info["oldest_ready_message_age_ms"] is None
    latency = info["delivery_latency"]
    assert latency["count"] == 4
    assert latency["buckets_ms"]["500"] == 1
    assert latency["buckets_ms"]["+Inf"] == 4
    assert latency["p99_ms_at_most"] == 5000
    # The broker-wide histogram on /metrics sums every queue's.
    total = scrape(broker).value("rabbitmq_queue_delivery_latency_seconds_count")
    assert total >= 4
    ch.queue_delete(queue)
