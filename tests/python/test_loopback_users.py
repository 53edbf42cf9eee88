"""`loopback_users`: guest may log in only over loopback.

Telling a loopback peer from another needs a second, non-loopback address
on the machine. The test makes one where it harms nothing: in a network
namespace of its own (`unshare -n`, root only), it puts 192.0.2.10 (a
documentation address) on that namespace's loopback interface and runs the
broker and a pika client inside, so the client reaches the broker from
192.0.2.10 — a real non-loopback peer address — and from 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from amqp_support import RABBITMQ_URL

ADDRESS = "192.0.2.10"

CLIENT = textwrap.dedent("""
    import json, sys, time
    import pika, pika.exceptions
    def attempt(host):
        p = pika.ConnectionParameters(host=host, port=5672, connection_attempts=1,
                                      socket_timeout=5,
                                      credentials=pika.PlainCredentials("guest", "guest"))
        try:
            pika.BlockingConnection(p).close()
            return "ok"
        except pika.exceptions.ProbableAuthenticationError as e:
            return "refused: " + str(e)
        except Exception as e:
            return "error: " + repr(e)
    deadline = time.monotonic() + 10
    while attempt("127.0.0.1").startswith("error") and time.monotonic() < deadline:
        time.sleep(0.1)
    print(json.dumps({"remote": attempt(sys.argv[1]), "local": attempt("127.0.0.1")}))
""")


def run_in_namespace(tmp_path, env_line):
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    log = tmp_path / "warren.log"
    script = f"""
        set -e
        ip link set lo up
        ip addr add {ADDRESS}/32 dev lo
        {env_line} "$WARREN_BIN" --ephemeral --amqp-port 5672 --admin-port 0 \\
            --metrics-port 0 > "{log}" 2>&1 &
        broker=$!
        "{sys.executable}" "{client}" {ADDRESS}
        kill -TERM $broker
        wait $broker
    """
    out = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, NO_COLOR="1"))
    assert out.returncode == 0, out.stderr + log.read_text()
    return json.loads(out.stdout.strip().splitlines()[-1]), log.read_text()


def can_unshare():
    if RABBITMQ_URL or os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


needs_netns = pytest.mark.skipif(
    not can_unshare(), reason="needs root and `unshare -n` for a non-loopback address")


@needs_netns
def test_guest_is_refused_from_a_non_loopback_address(tmp_path):
    result, log = run_in_namespace(tmp_path, "")
    assert result["local"] == "ok", result
    assert result["remote"].startswith("refused"), result
    assert "403" in result["remote"] and "Login was refused" in result["remote"], result
    assert "PLAIN login refused: user 'guest' can only connect via localhost" in log, log


@needs_netns
def test_an_empty_loopback_users_lets_guest_in_from_anywhere(tmp_path):
    result, _ = run_in_namespace(tmp_path, "WARREN_AUTH__LOOPBACK_USERS='[]'")
    assert result == {"remote": "ok", "local": "ok"}, result
