"""A vhost-wide maximum message age (issue 19): one operator policy whose
`message-ttl` caps every queue and whose `max-age` (Warren's addition to
the operator keys) caps every stream. Warren only."""

import time

import pika
import requests

from amqp_support import warren_only
from http_support import q

pytestmark = warren_only


def test_one_operator_policy_caps_message_age_across_a_vhost(broker, conn, names):
    api = f"http://{broker.host}:{broker.admin_port}/api"
    auth = ("guest", "guest")
    vhost = names.x("retained")
    assert requests.put(f"{api}/vhosts/{q(vhost)}", auth=auth, timeout=10).status_code in (201, 204)
    requests.put(f"{api}/permissions/{q(vhost)}/guest", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"})
    r = requests.put(f"{api}/operator-policies/{q(vhost)}/max-age", auth=auth, timeout=10,
                     json={"pattern": ".*", "apply-to": "all",
                           "definition": {"message-ttl": 300, "max-age": "1h"}})
    assert r.status_code in (201, 204), r.text
    params = broker.params(virtual_host=vhost)
    c = pika.BlockingConnection(params)
    ch = c.channel()
    queue = names.q("aged")
    # The queue asks for a day; the vhost's cap wins.
    ch.queue_declare(queue, arguments={"x-message-ttl": 86_400_000})
    ch.basic_publish("", queue, b"old news")
    assert ch.queue_declare(queue, passive=True).method.message_count == 1
    time.sleep(0.6)
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    shown = requests.get(f"{api}/queues/{q(vhost)}/{q(queue)}", auth=auth, timeout=10).json()
    assert shown["operator_policy"] == "max-age"
    c.close()
    requests.delete(f"{api}/vhosts/{q(vhost)}", auth=auth, timeout=10)
