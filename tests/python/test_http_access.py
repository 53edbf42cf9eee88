"""Vhosts, users (password or password_hash + hashing_algorithm),
permissions, topic permissions, vhost limits and user limits."""

import pika
import pika.exceptions
import pytest

from http_support import (NOT_FOUND, assert_error, q, rabbit_sha256, rabbit_sha512,
                          unique)

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])
SHA256 = "rabbit_password_hashing_sha256"


# -------------------------------------------------------------------- vhosts

def test_vhost_put_get_list_delete(api):
    name = unique("vh")
    path = f"/api/vhosts/{q(name)}"
    api.track(path)
    r = api.put(path, {"description": "for tests", "tags": "a,b", "tracing": False})
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    got = api.json(path)
    assert (got["name"], got["description"], got["tags"], got["tracing"]) == (
        name, "for tests", ["a", "b"], False)
    r = api.put(path, {"description": "changed", "tags": ["c"]})
    assert r.status_code == 204, r.text
    got = api.json(path)
    assert (got["description"], got["tags"]) == ("changed", ["c"])
    assert name in [v["name"] for v in api.json("/api/vhosts")]
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)
    assert name not in [v["name"] for v in api.json("/api/vhosts")]


def test_vhost_creator_gets_full_permissions(api, connect):
    vhost = api.create_vhost()
    assert api.json(f"/api/permissions/{q(vhost)}/{q(api.user)}") == {
        "user": api.user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
    conn = connect(virtual_host=vhost)
    conn.channel().queue_declare(unique("q"), exclusive=True)


def test_deleting_a_vhost_deletes_its_contents(api):
    vhost = api.create_vhost()
    name = api.create_queue(vhost)
    x = api.create_exchange(vhost)
    assert api.delete(f"/api/vhosts/{q(vhost)}").status_code == 204
    assert api.get(f"/api/queues/{q(vhost)}/{q(name)}").status_code == 404
    assert api.get(f"/api/exchanges/{q(vhost)}/{q(x)}").status_code == 404
    assert vhost not in [p["vhost"] for p in api.json("/api/permissions")]
    # Re-created, it is empty.
    api.create_vhost(vhost)
    assert api.json(f"/api/queues/{q(vhost)}") == []


def test_default_vhost_exists(api):
    got = api.json("/api/vhosts/%2F")
    assert got["name"] == "/"
    assert "/" in [v["name"] for v in api.json("/api/vhosts")]


# --------------------------------------------------------------------- users

def test_user_put_get_delete(api):
    name = unique("user")
    path = f"/api/users/{q(name)}"
    api.track(path)
    r = api.put(path, {"password": "s3cret", "tags": "management,policymaker"})
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    got = api.json(path)
    assert got["name"] == name
    assert got["tags"] == ["management", "policymaker"]
    assert got["hashing_algorithm"] == SHA256
    assert isinstance(got["password_hash"], str) and len(got["password_hash"]) == 48
    assert got["limits"] == {}
    assert api.as_user(name, "s3cret").json("/api/whoami")["name"] == name
    r = api.put(path, {"password": "s3cret", "tags": ""})
    assert r.status_code == 204, r.text
    assert api.json(path)["tags"] == []
    assert name in [u["name"] for u in api.json("/api/users")]
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)


@pytest.mark.parametrize("algorithm,hasher", [
    ("rabbit_password_hashing_sha256", rabbit_sha256),
    ("rabbit_password_hashing_sha512", rabbit_sha512)])
def test_user_with_password_hash(api, algorithm, hasher, connect):
    hashed = hasher("hashed-pw")
    name = api.create_user(password_hash=hashed, hashing_algorithm=algorithm,
                           tags="management")
    got = api.json(f"/api/users/{q(name)}")
    assert (got["password_hash"], got["hashing_algorithm"]) == (hashed, algorithm)
    assert api.as_user(name, "hashed-pw").whoami() == {
        "name": name, "tags": ["management"]}
    assert_error(api.as_user(name, "wrong").get("/api/whoami"), 401,
                 "not_authorized", "Login failed")
    # The same hash works over AMQP.
    api.set_permissions("/", name)
    connect(credentials=pika.PlainCredentials(name, "hashed-pw")).close()


def test_user_with_empty_password_hash_cannot_log_in(api):
    name = api.create_user(password_hash="", tags="management")
    assert api.json(f"/api/users/{q(name)}")["password_hash"] == ""
    assert_error(api.as_user(name, "").get("/api/whoami"), 401, "not_authorized",
                 "Login failed")


def test_user_errors(api):
    name = unique("user")
    api.track(f"/api/users/{q(name)}")
    assert_error(api.put(f"/api/users/{q(name)}", {"password_hash": "!!not base64",
                                                    "tags": ""}), 400, "bad_request")
    assert_error(api.put(f"/api/users/{q(name)}", data="{"), 400, "bad_request", "not_json")
    assert api.get(f"/api/users/{q(name)}").status_code == 404
    assert_error(api.get(f"/api/users/{q(unique('nobody'))}/permissions"), 404, *NF)


def test_users_without_permissions(api):
    lonely = api.create_user(tags="")
    busy = api.create_user(tags="")
    api.set_permissions("/", busy)
    names = [u["name"] for u in api.json("/api/users/without-permissions")]
    assert lonely in names and busy not in names


# --------------------------------------------------------------- permissions

def test_permissions_put_get_list_delete(api):
    vhost = api.create_vhost()
    user = api.create_user()
    path = f"/api/permissions/{q(vhost)}/{q(user)}"
    body = {"configure": "^cfg-", "write": ".*", "read": ""}
    r = api.put(path, body)
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    assert api.put(path, body).status_code == 204
    want = dict(body, user=user, vhost=vhost)
    assert api.json(path) == want
    assert want in api.json("/api/permissions")
    assert api.json(f"/api/users/{q(user)}/permissions") == [want]
    assert want in api.json(f"/api/vhosts/{q(vhost)}/permissions")
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)
    assert api.json(f"/api/users/{q(user)}/permissions") == []


def test_permissions_errors(api):
    vhost = api.create_vhost()
    user = api.create_user()
    full = {"configure": ".*", "write": ".*", "read": ".*"}
    assert_error(api.put(f"/api/permissions/{q(vhost)}/{q(unique('nobody'))}", full),
                 400, "bad_request", "vhost_or_user_not_found")
    assert_error(api.put(f"/api/permissions/{q(unique('novh'))}/{q(user)}", full),
                 400, "bad_request", "vhost_or_user_not_found")
    r = assert_error(api.put(f"/api/permissions/{q(vhost)}/{q(user)}",
                             {"configure": ".*", "write": ".*"}), 400, "bad_request")
    assert "read" in str(r["reason"])
    assert_error(api.put(f"/api/permissions/{q(vhost)}/{q(user)}",
                         {"configure": "(", "write": ".*", "read": ".*"}), 400, "bad_request")
    assert api.get(f"/api/permissions/{q(vhost)}/{q(user)}").status_code == 404


def test_permissions_are_enforced_over_amqp(api, connect):
    vhost = api.create_vhost()
    user = api.create_user(password="pw")
    api.set_permissions(vhost, user, configure="^mine-", write=".*", read=".*")
    conn = connect(virtual_host=vhost, credentials=pika.PlainCredentials(user, "pw"))
    ch = conn.channel()
    ch.queue_declare("mine-" + unique("q"), exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("theirs-" + unique("q"), exclusive=True)
    assert e.value.reply_code == 403


# ---------------------------------------------------------- topic permissions

def test_topic_permissions(api):
    vhost = api.create_vhost()
    user = api.create_user()
    path = f"/api/topic-permissions/{q(vhost)}/{q(user)}"
    r = api.put(path, {"exchange": "amq.topic", "write": "^a", "read": ".*"})
    assert r.status_code == 201, r.text
    r = api.put(path, {"exchange": "amq.topic", "write": "^b", "read": ".*"})
    assert r.status_code == 204, r.text
    want = {"user": user, "vhost": vhost, "exchange": "amq.topic", "write": "^b",
            "read": ".*"}
    assert api.json(path) == [want]
    assert want in api.json("/api/topic-permissions")
    assert api.json(f"/api/users/{q(user)}/topic-permissions") == [want]
    assert api.json(f"/api/vhosts/{q(vhost)}/topic-permissions") == [want]
    r = assert_error(api.put(path, {"write": ".*", "read": ".*"}), 400, "bad_request")
    assert "exchange" in str(r["reason"])
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)


# -------------------------------------------------------------------- limits

def test_vhost_limits(api):
    vhost = api.create_vhost()
    base = f"/api/vhost-limits/{q(vhost)}"
    # 204 even when the limit is new (RabbitMQ 3.10.8).
    assert api.put(f"{base}/max-connections", {"value": 10}).status_code == 204
    assert api.put(f"{base}/max-queues", {"value": 5}).status_code == 204
    assert api.json(base) == [{"vhost": vhost,
                               "value": {"max-connections": 10, "max-queues": 5}}]
    assert {"vhost": vhost, "value": {"max-connections": 10, "max-queues": 5}} in \
        api.json("/api/vhost-limits")
    assert_error(api.put(f"{base}/max-bogus", {"value": 5}), 400, "bad_request")
    assert_error(api.put(f"{base}/max-queues", {"value": "many"}), 400, "bad_request")
    r = assert_error(api.put(f"{base}/max-queues", {}), 400, "bad_request")
    assert "value" in str(r["reason"])
    assert api.delete(f"{base}/max-connections").status_code == 204
    assert api.json(base) == [{"vhost": vhost, "value": {"max-queues": 5}}]
    assert_error(api.get(f"/api/vhost-limits/{q(unique('novh'))}"), 404, *NF)


def test_vhost_max_queues_is_enforced(api):
    vhost = api.create_vhost()
    assert api.put(f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 1}).status_code == 204
    api.create_queue(vhost)
    second = unique("q")
    assert_error(api.put(f"/api/queues/{q(vhost)}/{q(second)}", {}), 400, "bad_request",
                 f"cannot declare queue '{second}': queue limit in vhost '{vhost}' (1) "
                 "is reached")


def test_user_limits(api):
    user = api.create_user()
    base = f"/api/user-limits/{q(user)}"
    assert api.put(f"{base}/max-connections", {"value": 3}).status_code == 204
    assert api.put(f"{base}/max-channels", {"value": 4}).status_code == 204
    want = {"user": user, "value": {"max-connections": 3, "max-channels": 4}}
    assert api.json(base) == [want]
    assert want in api.json("/api/user-limits")
    assert api.json(f"/api/users/{q(user)}")["limits"] == {"max-connections": 3,
                                                          "max-channels": 4}
    assert_error(api.put(f"{base}/max-bogus", {"value": 4}), 400, "bad_request")
    assert api.delete(f"{base}/max-channels").status_code == 204
    assert api.json(base) == [{"user": user, "value": {"max-connections": 3}}]
    assert_error(api.get(f"/api/user-limits/{q(unique('nobody'))}"), 404, *NF)
    assert_error(api.put(f"/api/user-limits/{q(unique('nobody'))}/max-channels",
                         {"value": 1}), 400, "bad_request")


def test_user_max_connections_is_enforced(api, connect):
    user = api.create_user(password="pw")
    api.set_permissions("/", user)
    assert api.put(f"/api/user-limits/{q(user)}/max-connections",
                   {"value": 1}).status_code == 204
    creds = pika.PlainCredentials(user, "pw")
    connect(credentials=creds)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(credentials=creds)
