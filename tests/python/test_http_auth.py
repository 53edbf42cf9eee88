"""Management API authentication and tag-based access (RabbitMQ 3.10.8
captures): HTTP Basic against the broker's users; 401 bodies; what each of
the tags none / management / policymaker / monitoring / administrator may
see and do."""

import pika
import pytest
import requests

from http_support import REALM, assert_error, eventually, q, unique

# Spelling as RabbitMQ sends it: "not_authorized" for a failed login, but
# "not_authorised" (British) for a refused tag, vhost or object.
LOGIN_FAILED = ("not_authorized", "Login failed")
NOT_MANAGEMENT = ("not_authorised", "Not management user")
NOT_ADMIN = ("not_authorised", "Not administrator user")
NOT_MONITOR = ("not_authorised", "Not monitor user")
NO_VHOST_ACCESS = ("not_authorised", "User not authorised to access virtual host")
NO_OBJECT_ACCESS = ("not_authorised", "User not authorised to access object")


def assert_401(r, error_reason):
    assert_error(r, 401, *error_reason)
    # Only a failed login carries the Basic challenge; a refused tag,
    # vhost or object does not (RabbitMQ 3.10.8).
    if error_reason == LOGIN_FAILED:
        assert r.headers.get("www-authenticate") == REALM


@pytest.mark.parametrize("path", ["/api/overview", "/api/queues", "/api/whoami",
                                  "/api/definitions", "/api/health/checks/alarms",
                                  "/api/vhosts/%2F"])
def test_no_credentials_is_401_with_basic_challenge(api, path):
    r = api.get(path, auth=None)
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate") == REALM


def test_wrong_password_and_unknown_user_fail_login(api):
    assert_401(api.get("/api/overview", auth=(api.user, "not-the-password")), LOGIN_FAILED)
    assert_401(api.get("/api/overview", auth=(unique("nobody"), "x")), LOGIN_FAILED)
    # Also on a route that names an object.
    assert_401(api.get("/api/queues/%2F/anything", auth=(api.user, "wrong")), LOGIN_FAILED)


def test_user_without_tags_is_not_a_management_user(api):
    user = api.create_user(password="pw", tags="")
    api.set_permissions("/", user)
    me = api.as_user(user, "pw")
    for path in ["/api/overview", "/api/whoami", "/api/queues", "/api/vhosts",
                 "/api/health/checks/alarms", "/api/extensions"]:
        assert_401(me.get(path), NOT_MANAGEMENT)
    # The same user may still use AMQP: tags only govern HTTP.
    conn = pika.BlockingConnection(api.broker.params(
        credentials=pika.PlainCredentials(user, "pw")))
    conn.close()


def test_password_change_and_user_deletion_take_effect(api):
    user = api.create_user(password="old", tags="management")
    assert api.as_user(user, "old").get("/api/whoami").status_code == 200
    r = api.put(f"/api/users/{q(user)}", {"password": "new", "tags": "management"})
    assert r.status_code == 204, r.text
    assert_401(api.as_user(user, "old").get("/api/whoami"), LOGIN_FAILED)
    assert api.as_user(user, "new").whoami() == {"name": user, "tags": ["management"]}
    assert api.delete(f"/api/users/{q(user)}").status_code == 204
    assert_401(api.as_user(user, "new").get("/api/whoami"), LOGIN_FAILED)


def test_whoami_lists_tags(api):
    user = api.create_user(password="pw", tags="management,policymaker")
    assert api.as_user(user, "pw").whoami() == {
        "name": user, "tags": ["management", "policymaker"]}
    assert api.whoami() == {"name": api.user, "tags": ["administrator"]}


def test_management_user_sees_only_its_vhosts(api):
    mine = api.create_vhost()
    other = api.create_vhost()
    user = api.create_user(password="pw", tags="management")
    api.set_permissions(mine, user)
    q_mine = api.create_queue(mine)
    q_other = api.create_queue(other)
    q_default = api.create_queue("/")
    me = api.as_user(user, "pw")

    assert [v["name"] for v in me.json("/api/vhosts")] == [mine]
    assert [x["name"] for x in me.json("/api/queues")] == [q_mine]
    assert [x["name"] for x in me.json(f"/api/queues/{q(mine)}")] == [q_mine]
    assert me.json(f"/api/queues/{q(mine)}/{q(q_mine)}")["name"] == q_mine
    exchanges = me.json("/api/exchanges")
    assert exchanges and {x["vhost"] for x in exchanges} == {mine}

    for path in [f"/api/queues/{q(other)}", f"/api/queues/%2F/{q(q_default)}",
                 f"/api/exchanges/{q(other)}", f"/api/queues/{q(other)}/{q(q_other)}"]:
        assert_401(me.get(path), NO_VHOST_ACCESS)

    # The whole vhost record, users, permissions and definitions are for
    # administrators; nodes for monitoring.
    for path in ["/api/users", f"/api/users/{q(user)}", "/api/permissions",
                 f"/api/vhosts/{q(mine)}", f"/api/vhosts/{q(mine)}/permissions",
                 "/api/definitions", f"/api/definitions/{q(mine)}"]:
        assert_401(me.get(path), NOT_ADMIN)
    assert_401(me.get("/api/nodes"), NOT_MONITOR)

    # What a management user may do in its vhost, and may not elsewhere.
    assert me.put(f"/api/queues/{q(mine)}/{q(unique('q'))}", {}).status_code == 201
    assert_401(me.put(f"/api/queues/%2F/{q(unique('q'))}", {}), NO_VHOST_ACCESS)
    assert_401(me.put(f"/api/vhosts/{q(unique('vh'))}", {}), NOT_ADMIN)
    assert_401(me.put(f"/api/users/{q(unique('u'))}", {"password": "x", "tags": ""}), NOT_ADMIN)
    assert_401(me.put(f"/api/policies/{q(mine)}/{q(unique('p'))}",
                      {"pattern": "x", "definition": {"max-length": 1}}), NO_OBJECT_ACCESS)
    assert api.delete(f"/api/vhosts/{q(mine)}").status_code == 204


def test_management_user_configure_permission_is_enforced(api):
    vhost = api.create_vhost()
    user = api.create_user(password="pw", tags="management")
    api.set_permissions(vhost, user, configure="^ok-")
    me = api.as_user(user, "pw")
    name = "ok-" + unique("q")
    assert me.put(f"/api/queues/{q(vhost)}/{q(name)}", {}).status_code == 201
    assert_error(me.put(f"/api/queues/{q(vhost)}/{q(unique('q'))}", {}),
                 401, "not_authorised", "Access refused.")
    assert me.delete(f"/api/queues/{q(vhost)}/{q(name)}").status_code == 204


def test_management_user_sees_only_its_own_connections(api, connect):
    vhost = api.create_vhost()
    user = api.create_user(password="pw", tags="management")
    api.set_permissions(vhost, user)
    me = api.as_user(user, "pw")
    theirs = unique("conn")
    own = unique("conn")
    connect(client_properties={"connection_name": theirs})
    connect(virtual_host=vhost, credentials=pika.PlainCredentials(user, "pw"),
            client_properties={"connection_name": own})

    def names(a):
        return {c["client_properties"].get("connection_name")
                for c in a.json("/api/connections")}

    def both_listed_for_admin():
        assert {theirs, own} <= names(api)

    def own_listed():
        seen = names(me)
        assert own in seen
        return seen

    eventually(both_listed_for_admin)
    assert theirs not in eventually(own_listed)


def test_policymaker_manages_policies_and_parameters_in_its_vhosts(api):
    vhost = api.create_vhost()
    user = api.create_user(password="pw", tags="policymaker")
    api.set_permissions(vhost, user)
    me = api.as_user(user, "pw")
    pol = unique("pol")
    api.track(f"/api/policies/{q(vhost)}/{q(pol)}")
    r = me.put(f"/api/policies/{q(vhost)}/{q(pol)}",
               {"pattern": "^x", "definition": {"max-length": 1}})
    assert r.status_code == 201, r.text
    assert [p["name"] for p in me.json(f"/api/policies/{q(vhost)}")] == [pol]
    up = unique("up")
    api.track(f"/api/parameters/federation-upstream/{q(vhost)}/{q(up)}")
    r = me.put(f"/api/parameters/federation-upstream/{q(vhost)}/{q(up)}",
               {"value": {"uri": "amqp://localhost"}})
    assert r.status_code == 201, r.text
    # Not in a vhost it has no permissions on, and not operator policies.
    assert_401(me.put(f"/api/policies/%2F/{q(unique('p'))}",
                      {"pattern": "x", "definition": {"max-length": 1}}), NO_OBJECT_ACCESS)
    assert_401(me.put(f"/api/operator-policies/{q(vhost)}/{q(unique('p'))}",
                      {"pattern": "x", "definition": {"max-length": 1}}), NOT_ADMIN)
    assert_401(me.get("/api/nodes"), NOT_MONITOR)
    assert me.delete(f"/api/policies/{q(vhost)}/{q(pol)}").status_code == 204


def test_monitoring_user_sees_nodes_and_all_connections_but_not_users(api, connect):
    user = api.create_user(password="pw", tags="monitoring")
    me = api.as_user(user, "pw")
    vhost = api.create_vhost()
    nodes = me.json("/api/nodes")
    assert [n["name"] for n in nodes] == [api.node_name()]
    # All vhosts, although it has no permissions anywhere.
    assert {"/", vhost} <= {v["name"] for v in me.json("/api/vhosts")}
    name = unique("conn")
    connect(client_properties={"connection_name": name}).channel()

    def listed():
        conns = me.json("/api/connections")
        mine = [c for c in conns if c["client_properties"].get("connection_name") == name]
        assert len(mine) == 1
        assert mine[0]["user"] == api.user
        return mine[0]["name"]
    conn_name = eventually(listed)

    def channel_listed():
        chans = me.json("/api/channels")
        assert conn_name in [c["connection_details"]["name"] for c in chans]
    eventually(channel_listed)
    for path in ["/api/users", "/api/permissions", "/api/definitions",
                 f"/api/users/{q(user)}"]:
        assert_401(me.get(path), NOT_ADMIN)


def test_administrator_sees_users_and_definitions(api):
    user = api.create_user(password="pw", tags="administrator")
    me = api.as_user(user, "pw")
    assert user in [u["name"] for u in me.json("/api/users")]
    assert user in [u["name"] for u in me.json("/api/definitions")["users"]]
    assert me.json(f"/api/users/{q(user)}")["tags"] == ["administrator"]


def test_tags_accepted_as_a_list(api):
    user = api.create_user(password="pw", tags=["monitoring", "policymaker"])
    assert api.json(f"/api/users/{q(user)}")["tags"] == ["monitoring", "policymaker"]
    assert api.as_user(user, "pw").get("/api/nodes").status_code == 200


def test_malformed_or_foreign_authorization_is_refused(api):
    # RabbitMQ (cowboy) answers a Basic header that is not base64 with 400.
    r = requests.get(api.base + "/api/overview",
                     headers={"Authorization": "Basic !!!notbase64"}, timeout=10)
    assert r.status_code in (400, 401), r.status_code
    # Another scheme is a failed login.
    r = requests.get(api.base + "/api/overview",
                     headers={"Authorization": "Bearer abc"}, timeout=10)
    assert_401(r, LOGIN_FAILED)
