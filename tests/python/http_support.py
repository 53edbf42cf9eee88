"""What the HTTP API tests share: a small client for the management API
(RabbitMQ's paths, HTTP Basic auth), helpers that create objects and
remember to delete them, and `eventually` for values RabbitMQ only reports
after its statistics interval (collect_statistics_interval, 5 s).

The same tests run against Warren (WARREN_BIN) and against a running
RabbitMQ (WARREN_TEST_RABBITMQ); see conftest.py. Against RabbitMQ the
broker is long-lived and shared, so every object has a unique name and is
deleted after the test, and no test assumes it is alone on the broker
(global counters are compared as "grew by at least", never "equals").
"""

import base64
import hashlib
import os
import time
import urllib.parse
import uuid

import pytest
import requests

# Values that lag on RabbitMQ (queue depths in /api/queues, message_stats,
# consumers, channel prefetch, per-queue Prometheus families) are polled for
# this long: RabbitMQ emits stats every 5 s, and a short-lived channel's
# (an HTTP publish) can take two intervals. Warren answers at once, so a
# short ceiling keeps a failing run quick.
STATS_TIMEOUT = 20.0 if os.environ.get("WARREN_TEST_RABBITMQ") else 3.0

REALM = 'Basic realm="RabbitMQ Management"'

# The 404 body RabbitMQ gives for an unknown route, vhost or object.
NOT_FOUND = {"error": "Object Not Found", "reason": "Not Found"}

skip_unless_warren = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_RABBITMQ")),
    reason="RabbitMQ 4.x / Warren behaviour that RabbitMQ 3.10.8 does not have")


def q(s):
    """One URL path segment: vhost "/" is %2F, a name may hold '/', ' ', '#'."""
    return urllib.parse.quote(s, safe="")


def unique(label="x"):
    return f"http-{label}-{uuid.uuid4().hex[:10]}"


def eventually(fn, timeout=STATS_TIMEOUT, interval=0.1):
    """Call fn() until it returns without raising AssertionError (or
    KeyError/TypeError, for fields RabbitMQ has not emitted yet); return its
    result. After `timeout` the last error is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, KeyError, TypeError, IndexError):
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def until(predicate, what="condition", timeout=STATS_TIMEOUT):
    """eventually() for a predicate: poll until it returns something true."""
    def check():
        value = predicate()
        assert value, f"{what} not reached"
        return value
    return eventually(check, timeout)


def assert_error(r, status, error, reason=None):
    """r is a JSON error body {"error", "reason"} with this status."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == error, body
    if reason is not None:
        assert body["reason"] == reason, body
    return body


def rabbit_sha256(password, salt=None):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt4 ++
    sha256(salt4 ++ password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def rabbit_sha512(password, salt=None):
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha512(salt + password.encode()).digest()).decode()


class Api:
    """The management API of one broker, as one user.

    get/put/post/delete take a path under the base URL (already quoted,
    use q() for segments) and return the requests.Response. Objects made
    through the create_* helpers are deleted (as guest) by cleanup()."""

    def __init__(self, broker, user=None, password=None, cleanup_list=None):
        self.broker = broker
        self.base = f"http://{broker.host}:{broker.admin_port}"
        self.user = user if user is not None else broker.user
        self.password = password if password is not None else broker.password
        self.session = requests.Session()
        self.session.auth = (self.user, self.password)
        # One TCP connection per request: a kept-alive connection that the
        # server closes between two requests (cowboy closes after 100
        # requests or when idle) would fail a POST that cannot be retried.
        self.session.headers["Connection"] = "close"
        # [path] to DELETE afterwards, shared with the users made by as_user().
        self._cleanup = cleanup_list if cleanup_list is not None else []

    # ------------------------------------------------------------ raw verbs

    def request(self, method, path, auth="default", **kw):
        kw.setdefault("timeout", 10)
        if auth == "default":
            return self.session.request(method, self.base + path, **kw)
        headers = dict(kw.pop("headers", None) or {}, Connection="close")
        return requests.request(method, self.base + path, auth=auth, headers=headers, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw):
        if body is not None:
            kw["json"] = body
        return self.request("PUT", path, **kw)

    def post(self, path, body=None, **kw):
        if body is not None:
            kw["json"] = body
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def json(self, path, **kw):
        """GET path, asserting 200; the decoded body."""
        r = self.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def as_user(self, user, password):
        """The same API as another user (cleanup stays with this one)."""
        return Api(self.broker, user, password, self._cleanup)

    # ---------------------------------------------------------- bookkeeping

    def track(self, path):
        """DELETE path after the test (404 is fine)."""
        if path not in self._cleanup:
            self._cleanup.append(path)

    def cleanup(self):
        admin = requests.Session()
        admin.auth = (self.broker.user, self.broker.password)
        # Newest first: bindings before queues, vhosts last.
        for path in reversed(self._cleanup):
            try:
                admin.delete(self.base + path, timeout=10)
            except requests.RequestException:
                pass
        self._cleanup.clear()

    # -------------------------------------------------------------- helpers

    def create_vhost(self, name=None, **body):
        name = name or unique("vh")
        self.track(f"/api/vhosts/{q(name)}")
        r = self.put(f"/api/vhosts/{q(name)}", body)
        assert r.status_code == 201, (r.status_code, r.text)
        return name

    def create_user(self, name=None, password="pw", tags="", **body):
        name = name or unique("user")
        self.track(f"/api/users/{q(name)}")
        body = dict(body, tags=tags)
        if "password_hash" not in body:
            body["password"] = password
        r = self.put(f"/api/users/{q(name)}", body)
        assert r.status_code == 201, (r.status_code, r.text)
        return name

    def set_permissions(self, vhost, user, configure=".*", write=".*", read=".*"):
        r = self.put(f"/api/permissions/{q(vhost)}/{q(user)}",
                     {"configure": configure, "write": write, "read": read})
        assert r.status_code in (201, 204), (r.status_code, r.text)

    def create_queue(self, vhost="/", name=None, **body):
        name = name or unique("q")
        self.track(f"/api/queues/{q(vhost)}/{q(name)}")
        r = self.put(f"/api/queues/{q(vhost)}/{q(name)}", body)
        assert r.status_code == 201, (r.status_code, r.text)
        return name

    def create_exchange(self, vhost="/", name=None, type="direct", **body):
        name = name or unique("x")
        self.track(f"/api/exchanges/{q(vhost)}/{q(name)}")
        r = self.put(f"/api/exchanges/{q(vhost)}/{q(name)}", dict(body, type=type))
        assert r.status_code == 201, (r.status_code, r.text)
        return name

    def bind(self, vhost, source, dest, routing_key="", arguments=None, dest_type="q"):
        r = self.post(f"/api/bindings/{q(vhost)}/e/{q(source)}/{dest_type}/{q(dest)}",
                      {"routing_key": routing_key, "arguments": arguments or {}})
        assert r.status_code == 201, (r.status_code, r.text)
        return r

    def create_policy(self, vhost, name=None, kind="policies", **body):
        name = name or unique("pol")
        self.track(f"/api/{kind}/{q(vhost)}/{q(name)}")
        r = self.put(f"/api/{kind}/{q(vhost)}/{q(name)}", body)
        assert r.status_code == 201, (r.status_code, r.text)
        return name

    def publish(self, vhost, exchange, routing_key, payload, properties=None,
                payload_encoding="string"):
        """POST .../publish; returns the decoded {"routed": bool}."""
        x = exchange or "amq.default"
        r = self.post(f"/api/exchanges/{q(vhost)}/{q(x)}/publish",
                      {"routing_key": routing_key, "payload": payload,
                       "payload_encoding": payload_encoding,
                       "properties": properties or {}})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def get_messages(self, vhost, queue, count=1, ackmode="ack_requeue_true",
                     encoding="auto", **extra):
        r = self.post(f"/api/queues/{q(vhost)}/{q(queue)}/get",
                      dict(extra, count=count, ackmode=ackmode, encoding=encoding))
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def queue(self, vhost, name):
        return self.json(f"/api/queues/{q(vhost)}/{q(name)}")

    def queue_when(self, vhost, name, **expected):
        """The queue's JSON once every `expected` field has that value
        (RabbitMQ reports depths and consumers up to 5 s late)."""
        def check():
            body = self.queue(vhost, name)
            for k, v in expected.items():
                assert body.get(k) == v, (k, body.get(k), v)
            return body
        return eventually(check)

    def whoami(self):
        """GET /api/whoami trimmed to name and tags (RabbitMQ 3.13+ adds
        is_internal_user)."""
        body = self.json("/api/whoami")
        return {"name": body["name"], "tags": body["tags"]}

    def node_name(self):
        return self.json("/api/overview")["node"]
