"""Policies, operator policies, runtime parameters
(/api/parameters/{component}/{vhost}/{name}) and global parameters."""

import pytest

from http_support import NOT_FOUND, assert_error, q, unique

NF = (NOT_FOUND["error"], NOT_FOUND["reason"])


@pytest.mark.parametrize("kind", ["policies", "operator-policies"])
def test_policy_put_get_list_delete(api, kind):
    vhost = api.create_vhost()
    name = unique("pol")
    path = f"/api/{kind}/{q(vhost)}/{q(name)}"
    api.track(path)
    body = {"pattern": "^http-", "definition": {"max-length": 5, "message-ttl": 1000},
            "priority": 3, "apply-to": "queues"}
    r = api.put(path, body)
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    body["definition"] = {"max-length": 6}
    assert api.put(path, body).status_code == 204
    want = dict(body, vhost=vhost, name=name)
    got = api.json(path)
    assert got == want
    assert type(got["priority"]) is int and type(got["definition"]["max-length"]) is int
    assert api.json(f"/api/{kind}/{q(vhost)}") == [want]
    assert want in api.json(f"/api/{kind}")
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)
    assert api.json(f"/api/{kind}/{q(vhost)}") == []


def test_policy_defaults(api):
    vhost = api.create_vhost()
    name = api.create_policy(vhost, pattern="x", definition={"max-length": 1})
    assert api.json(f"/api/policies/{q(vhost)}/{q(name)}") == {
        "vhost": vhost, "name": name, "pattern": "x", "apply-to": "all",
        "definition": {"max-length": 1}, "priority": 0}


def test_policy_applies_to_matching_queue(api, connect):
    vhost = api.create_vhost()
    prefix = unique("capped")
    pol = api.create_policy(vhost, pattern=f"^{prefix}", definition={"max-length": 2},
                            **{"apply-to": "queues"})
    capped = api.create_queue(vhost, prefix + "-q")
    free = api.create_queue(vhost)
    for i in range(5):
        api.publish(vhost, "", capped, f"m{i}")
        api.publish(vhost, "", free, f"m{i}")
    ch = connect(virtual_host=vhost).channel()
    assert ch.queue_declare(capped, passive=True).method.message_count == 2
    assert ch.queue_declare(free, passive=True).method.message_count == 5
    got = api.queue_when(vhost, capped, policy=pol)
    assert got["effective_policy_definition"] == {"max-length": 2}
    assert got["operator_policy"] is None
    assert api.queue_when(vhost, free, messages=5)["policy"] is None
    # The oldest messages were dropped.
    assert [m["payload"] for m in api.get_messages(vhost, capped, count=5)] == ["m3", "m4"]


def test_a_pcre_look_ahead_pattern_works_as_in_rabbitmq(api, connect):
    # RabbitMQ's classic "everything but amq.*" policy pattern needs a
    # look-ahead, which RabbitMQ's regular expressions (PCRE) have.
    vhost = api.create_vhost()
    prefix = unique("la")
    pol = api.create_policy(vhost, pattern=f"^(?!{prefix}-skip){prefix}",
                            definition={"max-length": 1}, **{"apply-to": "queues"})
    capped = api.create_queue(vhost, prefix + "-q")
    skipped = api.create_queue(vhost, prefix + "-skip")
    for i in range(3):
        api.publish(vhost, "", capped, f"m{i}")
        api.publish(vhost, "", skipped, f"m{i}")
    ch = connect(virtual_host=vhost).channel()
    assert ch.queue_declare(capped, passive=True).method.message_count == 1
    assert ch.queue_declare(skipped, passive=True).method.message_count == 3
    assert api.queue_when(vhost, capped, policy=pol)["policy"] == pol


def test_operator_policy_applies_to_matching_queue(api, connect):
    vhost = api.create_vhost()
    prefix = unique("op")
    pol = api.create_policy(vhost, kind="operator-policies", pattern=f"^{prefix}",
                            definition={"max-length": 1}, **{"apply-to": "queues"})
    name = api.create_queue(vhost, prefix + "-q")
    for i in range(3):
        api.publish(vhost, "", name, f"m{i}")
    ch = connect(virtual_host=vhost).channel()
    assert ch.queue_declare(name, passive=True).method.message_count == 1
    got = api.queue_when(vhost, name, operator_policy=pol)
    assert got["policy"] is None
    assert got["effective_policy_definition"] == {"max-length": 1}


def test_policy_validation_errors(api):
    vhost = api.create_vhost()
    name = unique("pol")
    path = f"/api/policies/{q(vhost)}/{q(name)}"
    api.track(path)
    for body in [{"pattern": "x", "definition": {"no-such-key": 5}},
                 {"pattern": "x", "definition": {"max-length": "five"}},
                 {"pattern": "x", "definition": {}},
                 {"pattern": "(", "definition": {"max-length": 1}},
                 {"pattern": "x", "definition": {"max-length": 1}, "apply-to": "bogus"},
                 {"pattern": "x", "definition": {"max-length": 1}, "priority": "high"}]:
        r = assert_error(api.put(path, body), 400, "bad_request")
        assert r["reason"].startswith("Validation failed"), (body, r)
    for missing in ["pattern", "definition"]:
        body = {"pattern": "x", "definition": {"max-length": 1}}
        del body[missing]
        r = assert_error(api.put(path, body), 400, "bad_request")
        assert missing in str(r["reason"])
    assert_error(api.put(f"/api/policies/{q(unique('novh'))}/{q(name)}",
                         {"pattern": "x", "definition": {"max-length": 1}}),
                 404, "not_found", "vhost_not_found")
    assert api.get(path).status_code == 404
    # Operator policies accept only a few keys.
    opath = f"/api/operator-policies/{q(vhost)}/{q(name)}"
    api.track(opath)
    r = assert_error(api.put(opath, {"pattern": "x", "definition": {"ha-mode": "all"}}),
                     400, "bad_request")
    assert r["reason"].startswith("Validation failed")


# ----------------------------------------------------------------- parameters

def test_federation_upstream_parameter(api):
    vhost = api.create_vhost()
    name = unique("up")
    path = f"/api/parameters/federation-upstream/{q(vhost)}/{q(name)}"
    api.track(path)
    r = api.put(path, {"value": {"uri": "amqp://localhost", "expires": 3600000}})
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    # The body may repeat vhost/component/name, as rabbitmqadmin sends it.
    r = api.put(path, {"vhost": vhost, "component": "federation-upstream", "name": name,
                       "value": {"uri": "amqp://other", "prefetch-count": 10}})
    assert r.status_code == 204, r.text
    want = {"value": {"uri": "amqp://other", "prefetch-count": 10}, "vhost": vhost,
            "component": "federation-upstream", "name": name}
    assert api.json(path) == want
    assert api.json(f"/api/parameters/federation-upstream/{q(vhost)}") == [want]
    assert want in api.json("/api/parameters/federation-upstream")
    assert want in api.json("/api/parameters")
    r = api.delete(path)
    assert r.status_code == 204 and r.text == ""
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)


def test_parameter_errors(api):
    vhost = api.create_vhost()
    name = unique("up")
    path = f"/api/parameters/federation-upstream/{q(vhost)}/{q(name)}"
    api.track(path)
    r = assert_error(api.put(path, {"value": {"expires": 1}}), 400, "bad_request")
    assert r["reason"].startswith("Validation failed") and "uri" in r["reason"]
    r = assert_error(api.put(path, {}), 400, "bad_request")
    assert "value" in str(r["reason"])
    bogus = f"/api/parameters/no-such-component/{q(vhost)}/{q(name)}"
    api.track(bogus)
    assert_error(api.put(bogus, {"value": {"uri": "amqp://"}}), 400, "bad_request",
                 "Validation failed\n\ncomponent no-such-component not found\n")
    assert_error(api.put(f"/api/parameters/federation-upstream/{q(unique('novh'))}/x",
                         {"value": {"uri": "amqp://"}}), 404, "not_found", "vhost_not_found")
    assert_error(api.get(path), 404, *NF)


def test_vhost_limits_show_as_a_parameter(api):
    vhost = api.create_vhost()
    assert api.put(f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 7}).status_code == 204
    assert {"value": {"max-queues": 7}, "vhost": vhost, "component": "vhost-limits",
            "name": "limits"} in api.json("/api/parameters")


def test_global_parameters(api):
    name = unique("global")
    path = f"/api/global-parameters/{q(name)}"
    api.track(path)
    r = api.put(path, {"value": {"a": [1, 2], "b": "c", "d": {"e": True}}})
    assert r.status_code == 201 and r.text == "", (r.status_code, r.text)
    assert api.json(path) == {"name": name, "value": {"a": [1, 2], "b": "c", "d": {"e": True}}}
    r = api.put(path, {"name": name, "value": 7})
    assert r.status_code == 204, r.text
    assert api.json(path) == {"name": name, "value": 7}
    assert {"name": name, "value": 7} in api.json("/api/global-parameters")
    r = assert_error(api.put(path, {}), 400, "bad_request")
    assert "value" in str(r["reason"])
    assert api.delete(path).status_code == 204
    assert_error(api.get(path), 404, *NF)
    assert_error(api.delete(path), 404, *NF)
