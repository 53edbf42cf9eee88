"""pytest plugin: skip, with the reason, the tests of a client's own suite
that cannot run against a broker on this machine. Loaded by
scripts/client-suites with `-p skips`; every skip shows in the report (-rs)
and in the suite's summary, none is dropped silently.

Each entry: (suite, a substring of the test's node id, the reason).
"""

import os

import pytest

NO_TLS_CERTS = (
    "needs an AMQPS listener on 5671 serving the suite's own certificates "
    "(t/certs/), which the sdist does not ship"
)
OUTSIDE = "connects to tls-v1-2.badssl.com, a host on the internet, not to the broker"

SKIPS = [
    ("py-amqp", "test_rmq.py::test_connect[tls]", NO_TLS_CERTS),
    ("py-amqp", "test_rmq.py::test_tls_connect_fails", NO_TLS_CERTS),
    ("py-amqp", "[tls-", NO_TLS_CERTS),
    ("py-amqp", "[tls]", NO_TLS_CERTS),
    ("py-amqp", "test_rmq.py::test_tls_default_certs", OUTSIDE),
    ("py-amqp", "test_rmq.py::test_tls_no_default_certs_fails", OUTSIDE),
]


def pytest_collection_modifyitems(config, items):
    suite = os.environ.get("CLIENT_SUITE", "")
    for item in items:
        for name, fragment, reason in SKIPS:
            if name == suite and fragment in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=reason))
                break
