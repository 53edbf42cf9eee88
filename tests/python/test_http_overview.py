"""/api/overview, /api/nodes, /api/extensions, /api/whoami, /api/cluster-name,
health checks and aliveness-test; unknown routes and wrong methods."""

import re

import pytest

from http_support import (NOT_FOUND, assert_error, eventually, q, skip_unless_warren,
                          unique)

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])
VERSION = re.compile(r"^\d+\.\d+\.\d+")


def details(obj, key):
    """obj[key] is an int counter with an {"rate": float} sibling."""
    assert type(obj[key]) is int, (key, obj[key])
    assert type(obj[key + "_details"]["rate"]) is float, (key, obj[key + "_details"])


def test_overview_identity_fields(api):
    o = api.json("/api/overview")
    # Tools key on these (rabbitmqadmin v2 deserializes them; Terraform
    # parses rabbitmq_version to gate topic permissions).
    for key in ["rabbitmq_version", "management_version", "product_version"]:
        assert VERSION.match(o[key]), (key, o[key])
    for key in ["cluster_name", "node", "erlang_version", "erlang_full_version",
                "product_name", "rates_mode"]:
        assert isinstance(o[key], str) and o[key], (key, o.get(key))
    assert type(o["statistics_db_event_queue"]) is int
    assert type(o["disable_stats"]) is bool
    assert type(o["enable_queue_totals"]) is bool
    names = {x["name"] for x in o["exchange_types"]}
    assert {"direct", "fanout", "topic", "headers"} <= names
    for x in o["exchange_types"]:
        assert isinstance(x["description"], str) and x["enabled"] is True
    assert api.json("/api/cluster-name") == {"name": o["cluster_name"]}


def test_overview_listeners_name_the_real_ports(api):
    o = api.json("/api/overview")
    listeners = o["listeners"]
    for item in listeners:
        assert item["node"] == o["node"]
        assert type(item["port"]) is int
        assert isinstance(item["ip_address"], str)
        assert isinstance(item["protocol"], str)
    ports = {(x["protocol"], x["port"]) for x in listeners}
    assert ("amqp", api.broker.amqp_port) in ports
    assert ("http", api.broker.admin_port) in ports
    assert ("http/prometheus", api.broker.metrics_port) in ports


def test_overview_totals_and_message_stats_count_what_we_did(api):
    before = api.json("/api/overview")
    pub_before = before.get("message_stats", {}).get("publish", 0)
    vhost = api.create_vhost()
    queues = [api.create_queue(vhost) for _ in range(3)]
    for name in queues[:2]:
        assert api.publish(vhost, "", name, "hello") == {"routed": True}

    def grown():
        o = api.json("/api/overview")
        assert o["object_totals"]["queues"] >= 3
        assert o["queue_totals"]["messages"] >= 2
        assert o["queue_totals"]["messages_ready"] >= 2
        assert o["message_stats"]["publish"] >= pub_before + 2
        return o
    o = eventually(grown)

    for key in ["connections", "channels", "consumers", "exchanges", "queues"]:
        assert type(o["object_totals"][key]) is int, key
    for key in ["messages", "messages_ready", "messages_unacknowledged"]:
        details(o["queue_totals"], key)
    for key in ["publish", "deliver_get", "ack", "redeliver", "get", "get_no_ack",
                "deliver", "deliver_no_ack", "confirm", "return_unroutable",
                "drop_unroutable"]:
        details(o["message_stats"], key)
    for key in ["connection_created", "connection_closed", "channel_created",
                "channel_closed", "queue_declared", "queue_created", "queue_deleted"]:
        details(o["churn_rates"], key)
    assert o["churn_rates"]["queue_created"] >= 3

    # The vhost's own totals are exact: nothing else uses it.
    def vhost_counts():
        v = api.json(f"/api/vhosts/{q(vhost)}")
        assert (v["messages"], v["messages_ready"], v["messages_unacknowledged"]) == (2, 2, 0)
        assert v["message_stats"]["publish"] == 2
        return v
    v = eventually(vhost_counts)
    for key in ["messages", "messages_ready", "messages_unacknowledged"]:
        details(v, key)
    details(v["message_stats"], "publish")


def test_whoami(api):
    body = api.json("/api/whoami")
    assert {"name": body["name"], "tags": body["tags"]} == {"name": api.user,
                                                          "tags": ["administrator"]}
    # RabbitMQ 3.13+/4.x add is_internal_user; 3.10 has nothing else.
    assert set(body) <= {"name", "tags", "is_internal_user"}
    assert body.get("is_internal_user", True) is True


def test_extensions_is_a_list(api):
    ext = api.json("/api/extensions")
    assert isinstance(ext, list)
    assert all(isinstance(e, dict) for e in ext)


def test_nodes(api):
    node = api.node_name()
    nodes = api.json("/api/nodes")
    assert [n["name"] for n in nodes] == [node]
    n = nodes[0]
    assert n["running"] is True
    assert n["type"] == "disc"
    for key in ["uptime", "mem_used", "mem_limit", "disk_free", "disk_free_limit",
                "fd_used", "fd_total", "proc_used", "proc_total", "sockets_used",
                "sockets_total", "processors", "run_queue"]:
        assert type(n[key]) is int, (key, n.get(key))
    assert n["mem_limit"] > 0 and n["disk_free"] > 0 and n["processors"] >= 1
    for key in ["mem_alarm", "disk_free_alarm"]:
        assert n[key] is False, key
    for key in ["mem_used", "fd_used", "disk_free"]:
        details(n, key)
    assert isinstance(n["os_pid"], str) and n["os_pid"].isdigit()  # a string in RabbitMQ
    assert isinstance(n["rates_mode"], str)
    assert isinstance(n["enabled_plugins"], list)
    assert isinstance(n["applications"], list)
    assert isinstance(n["partitions"], list) and n["partitions"] == []
    one = api.json(f"/api/nodes/{q(node)}")
    assert one["name"] == node and one["running"] is True
    memory = api.json(f"/api/nodes/{q(node)}/memory")
    assert isinstance(memory["memory"], dict) and "total" in memory["memory"]


@skip_unless_warren
def test_nodes_being_drained_4x(api):
    # rabbitmqadmin v2 requires `being_drained` (RabbitMQ 4.x field).
    n = api.json("/api/nodes")[0]
    assert n["being_drained"] is False


# ------------------------------------------------------------- health checks

def test_health_checks_pass(api):
    assert api.json("/api/health/checks/alarms") == {"status": "ok"}
    assert api.json("/api/health/checks/local-alarms") == {"status": "ok"}
    assert api.json("/api/health/checks/virtual-hosts") == {"status": "ok"}
    port = api.broker.amqp_port
    assert api.json(f"/api/health/checks/port-listener/{port}") == {"status": "ok", "port": port}
    assert api.json("/api/health/checks/protocol-listener/amqp") == {
        "status": "ok", "protocol": "amqp"}
    # amqp091 / amqp0.9.1 are aliases of amqp.
    assert api.json("/api/health/checks/protocol-listener/amqp091") == {
        "status": "ok", "protocol": "amqp"}


def test_health_checks_fail_with_503(api):
    r = api.get("/api/health/checks/port-listener/1")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "failed"
    assert body["reason"] == "No active listener"
    assert body["missing"] == 1
    assert api.broker.amqp_port in body["ports"]
    r = api.get("/api/health/checks/protocol-listener/nosuch-proto")
    assert r.status_code == 503, r.text
    body = r.json()
    assert (body["status"], body["reason"], body["missing"]) == (
        "failed", "No active listener", "nosuch-proto")
    assert "amqp" in body["protocols"]


def test_health_checks_need_auth(api):
    r = api.get("/api/health/checks/alarms", auth=None)
    assert r.status_code == 401


@skip_unless_warren
@pytest.mark.parametrize("check", ["is-in-service", "ready-to-serve-clients"])
def test_unauthenticated_readiness_checks_4x(api, check):
    # RabbitMQ 4.x: no auth (the Kubernetes operator's probes send none).
    r = api.get(f"/api/health/checks/{check}", auth=None)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


@skip_unless_warren
def test_version_route_4x(api):
    r = api.get("/api/version", auth=None)
    assert r.status_code == 200, r.text
    assert r.json() == api.json("/api/overview")["rabbitmq_version"]


def test_aliveness_test(api):
    existed = any(x["name"] == "aliveness-test" for x in api.json("/api/queues/%2F"))
    try:
        assert api.json("/api/aliveness-test/%2F") == {"status": "ok"}
        vhost = api.create_vhost()
        assert api.json(f"/api/aliveness-test/{q(vhost)}") == {"status": "ok"}
    finally:
        if not existed:  # RabbitMQ 3.x leaves a queue named aliveness-test
            api.delete("/api/queues/%2F/aliveness-test")
    assert_error(api.get(f"/api/aliveness-test/{q(unique('novh'))}"), 404, *NF)


# ------------------------------------------------------- routing and methods

@pytest.mark.parametrize("path", ["/api/nosuch", "/api/queues//",
                                  f"/api/queues/{unique('novh')}",
                                  f"/api/exchanges/{unique('novh')}",
                                  "/api/queues/%2F/" + unique("noq")])
def test_unknown_route_or_object_is_404(api, path):
    assert_error(api.get(path), 404, *NF)


@pytest.mark.parametrize("method,path", [("POST", "/api/overview"),
                                         ("DELETE", "/api/overview"),
                                         ("PUT", "/api/whoami"),
                                         ("DELETE", "/api/health/checks/alarms")])
def test_wrong_method_is_405(api, method, path):
    r = api.request(method, path)
    assert r.status_code == 405, (r.status_code, r.text)


def test_default_vhost_may_be_lowercase_or_trailing_slash(api):
    name = api.create_queue("/")
    assert api.json(f"/api/queues/%2f/{q(name)}")["name"] == name
    assert name in [x["name"] for x in api.json("/api/queues/")]


@skip_unless_warren
def test_openapi_document(api):
    doc = api.json("/api/openapi.json")
    assert str(doc["openapi"]).startswith("3.")
    paths = doc["paths"]
    assert isinstance(paths, dict)
    assert "/api/overview" in paths
    assert any(p.startswith("/api/queues/{") for p in paths), sorted(paths)
    assert any(p.startswith("/api/definitions") for p in paths)
    assert "get" in paths["/api/overview"]
