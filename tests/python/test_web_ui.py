"""The web page on the management port (`/`), driven in headless Chromium
with Playwright: log in, see a queue the test filled with pika, publish,
get, purge and delete through the page, publish through an exchange's
page, a wrong password's error, and no console errors anywhere.

Warren only: RabbitMQ's UI is a different page. Needs Debian's chromium
(/usr/bin/chromium; scripts/test installs it) and `playwright` from PyPI,
never `playwright install` (it downloads a browser).

Set WARREN_UI_SCREENSHOTS to a folder to keep screenshots of the queues
list and of a queue's page.
"""

import os
import shutil
import time
import urllib.parse
import uuid

import pika
import pika.exceptions
import pytest
import requests

CHROMIUM = os.environ.get("WARREN_UI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("WARREN_UI_SCREENSHOTS")
TIMEOUT_MS = 5000

if os.environ.get("WARREN_TEST_RABBITMQ"):
    pytest.skip("Warren's own page; RabbitMQ's UI is a different one",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

if not shutil.which(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing (scripts/test installs Debian's chromium)")
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def seg(s):
    return urllib.parse.quote(s, safe="")


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def browser(broker):
    if not broker.is_warren:
        pytest.skip("Warren's own page")
    if not broker.admin_port:
        pytest.fail("the broker has no management (admin) port")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def base_url(broker):
    return f"http://{broker.host}:{broker.admin_port}"


@pytest.fixture
def page(browser):
    """A page in a fresh context (empty sessionStorage). Console errors
    and uncaught exceptions are collected; the test fails on any it did not
    expect (`page.expected_errors`: substrings allowed in console errors)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.console_errors = []
    pg.expected_errors = []
    pg.dialogs = []
    pg.confirm_answer = True  # what the "user" answers confirm() with
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.console_errors.append(f"uncaught: {e}"))

    def on_dialog(d):
        pg.dialogs.append(d.message)
        if pg.confirm_answer:
            d.accept()
        else:
            d.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    errors = [e for e in pg.console_errors
              if not any(allowed in e for allowed in pg.expected_errors)]
    context.close()
    assert not errors, f"console errors on the page: {errors}"


class Http:
    """The management API, to check what the page did."""

    def __init__(self, broker):
        self.s = requests.Session()
        self.s.auth = (broker.user, broker.password)
        self.base = f"http://{broker.host}:{broker.admin_port}/api"

    def get(self, path):
        return self.s.get(self.base + path, timeout=5)

    def put(self, path, json):
        return self.s.put(self.base + path, json=json, timeout=5)

    def peek(self, queue, count):
        """A queue's first `count` messages, put back."""
        r = self.s.post(f"{self.base}/queues/%2F/{seg(queue)}/get", timeout=5,
                        json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def http(broker):
    h = Http(broker)
    yield h
    h.s.close()


@pytest.fixture
def ui_queue(ch, names):
    """A queue with a name that needs escaping everywhere, holding
    messages the test publishes with `fill(n)`."""
    name = f"ui-<b>&\"'q-{uuid.uuid4().hex[:8]}"
    names.queues.append(name)
    ch.queue_declare(name)

    class Q:
        pass

    q = Q()
    q.name = name

    def fill(n):
        for i in range(n):
            ch.basic_publish("", name, f"msg-{i}".encode(),
                             pika.BasicProperties(content_type="text/plain", headers={"n": i}))
        # the publishes are async; a passive declare waits for them
        assert ch.queue_declare(name, passive=True).method.message_count == n

    q.fill = fill
    return q


def log_in(page, base_url, user="guest", password="guest", hash=""):
    page.goto(base_url + "/" + hash)
    page.fill("#login-username", user)
    page.fill("#login-password", password)
    page.click("#login-submit")


def logged_in(page, base_url, hash=""):
    log_in(page, base_url, hash=hash)
    page.wait_for_selector("#app", state="visible")
    assert page.text_content("#current-user") == "guest"


def depth(http, name):
    r = http.get(f"/queues/%2F/{seg(name)}")
    assert r.status_code == 200, r.text
    return r.json()["messages_ready"]


def wait_depth(http, name, n, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        d = depth(http, name)
        if d == n or time.monotonic() > deadline:
            assert d == n
            return
        time.sleep(0.05)


def open_queue(page, base_url, name, ready):
    page.goto(f"{base_url}/#/queues/%2F/{seg(name)}")
    sync_api.expect(page.locator("#q-ready")).to_have_text(str(ready))
    sync_api.expect(page.get_by_test_id("queue-name")).to_have_text(name)


def screenshot(page, file):
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SCREENSHOTS, file), full_page=True)


# -------------------------------------------------------------------- tests

def test_logs_in_and_shows_the_overview(page, base_url, conn):
    logged_in(page, base_url)
    sync_api.expect(page.locator("#node-info-product")).to_contain_text("Warren")
    assert page.text_content("#node-info-node")
    # this test's pika connection is counted and listed
    assert int(page.text_content("#object-totals-connections")) >= 1
    assert page.locator("#message-rates tr[data-stat=publish]").count() == 1
    assert page.locator("#listeners tbody tr", has_text="amqp").count() >= 1
    assert page.get_attribute("#tab-overview", "aria-current") == "page"
    page.click("#tab-connections")
    sync_api.expect(page.get_by_test_id("connection-row").first).to_be_visible()
    page.click("#tab-channels")
    sync_api.expect(page.locator("#channels-table")).to_be_visible()
    page.click("#tab-exchanges")
    sync_api.expect(page.locator("#exchanges-table tr[data-name='amq.direct']")).to_be_visible()
    sync_api.expect(page.locator("#exchanges-table tr[data-name='']")).to_contain_text("(AMQP default)")
    # credentials live in sessionStorage: a reload stays logged in
    page.reload()
    page.wait_for_selector("#exchanges-table")
    assert page.is_hidden("#login")


def test_queue_list_shows_ready_count(page, base_url, ui_queue):
    ui_queue.fill(3)
    logged_in(page, base_url, hash="#/queues")
    page.fill("#queue-filter", ui_queue.name[:12].upper())  # case-insensitive part
    row = page.locator("#queues-table tr[data-testid=queue-row]").filter(
        has=page.get_by_role("link", name=ui_queue.name, exact=True))
    sync_api.expect(row).to_have_count(1)
    sync_api.expect(row.locator("td[data-col=ready]")).to_have_text("3")
    sync_api.expect(row.locator("td[data-col=total]")).to_have_text("3")
    assert row.get_attribute("data-name") == ui_queue.name
    # the name is text, not markup
    assert page.locator("#queues-table b").count() == 0
    screenshot(page, "ui-queues.png")
    # a filter that matches nothing
    page.fill("#queue-filter", "no-such-queue-" + uuid.uuid4().hex)
    sync_api.expect(page.locator("#queues-table tbody")).to_contain_text("No queue matches")
    # following the link opens the queue's page
    page.fill("#queue-filter", ui_queue.name)
    row.get_by_role("link").click()
    sync_api.expect(page.locator("#q-ready")).to_have_text("3")


def test_publish_through_the_page_raises_the_count(page, base_url, http, ui_queue):
    ui_queue.fill(2)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 2)
    page.fill("#publish-payload", "from the <page> & co")
    page.select_option("#publish-delivery-mode", "2")
    page.fill("#publish-headers", '{"source": "ui"}')
    page.fill("#publish-properties", '{"content_type": "text/plain"}')
    page.click("#publish-submit")
    sync_api.expect(page.locator("#publish-result")).to_have_text("Message published.")
    wait_depth(http, ui_queue.name, 3)
    sync_api.expect(page.locator("#q-ready")).to_have_text("3")
    # the form keeps what was typed, for the next publish
    assert page.input_value("#publish-payload") == "from the <page> & co"
    # it is the message the form described
    got = http.peek(ui_queue.name, 3)
    last = got[-1]
    assert last["payload"] == "from the <page> & co"
    assert last["properties"]["delivery_mode"] == 2
    assert last["properties"]["headers"] == {"source": "ui"}
    assert last["properties"]["content_type"] == "text/plain"
    # bad JSON in a field is reported, nothing is sent
    page.fill("#publish-headers", "{not json")
    page.click("#publish-submit")
    sync_api.expect(page.locator("#publish-result")).to_contain_text("Headers is not valid JSON")
    assert depth(http, ui_queue.name) == 3


def test_get_shows_payload_and_properties(page, base_url, http, ui_queue):
    ui_queue.fill(2)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 2)
    # requeue: the message is shown and stays
    page.select_option("#get-ackmode", "ack_requeue_true")
    page.click("#get-submit")
    msg = page.get_by_test_id("message")
    sync_api.expect(msg).to_have_count(1)
    sync_api.expect(msg.get_by_test_id("message-payload")).to_have_text("msg-0")
    sync_api.expect(msg.get_by_test_id("message-properties")).to_contain_text("content_type: text/plain")
    sync_api.expect(msg.get_by_test_id("message-headers")).to_contain_text("n: 0")
    sync_api.expect(page.locator("#get-status")).to_have_text("1 message fetched.")
    assert depth(http, ui_queue.name) == 2
    screenshot(page, "ui-queue.png")
    # ack two: both shown, the queue is empty
    page.select_option("#get-ackmode", "ack_requeue_false")
    page.fill("#get-count", "2")
    page.click("#get-submit")
    sync_api.expect(msg).to_have_count(2)
    payloads = page.get_by_test_id("message-payload").all_text_contents()
    assert payloads == ["msg-0", "msg-1"]
    wait_depth(http, ui_queue.name, 0)
    sync_api.expect(page.locator("#q-ready")).to_have_text("0")
    page.click("#get-submit")
    sync_api.expect(page.locator("#get-status")).to_have_text("Queue is empty.")
    sync_api.expect(msg).to_have_count(0)


def test_purge_empties_the_queue(page, base_url, http, ui_queue):
    ui_queue.fill(4)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 4)
    page.click("#purge-button")
    sync_api.expect(page.locator("#purge-result")).to_have_text("Queue purged.")
    assert len(page.dialogs) == 1 and ui_queue.name in page.dialogs[0]
    wait_depth(http, ui_queue.name, 0)
    sync_api.expect(page.locator("#q-ready")).to_have_text("0")


def test_delete_removes_the_queue(page, base_url, http, ui_queue):
    ui_queue.fill(1)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 1)
    page.click("#delete-button")
    page.wait_for_url("**/#/queues")
    assert len(page.dialogs) == 1 and "Delete queue" in page.dialogs[0]
    sync_api.expect(page.get_by_test_id("flash")).to_contain_text("deleted")
    assert http.get(f"/queues/%2F/{seg(ui_queue.name)}").status_code == 404
    sync_api.expect(page.locator("#queues-table")).to_be_visible()
    sync_api.expect(page.locator("#queues-table tr[data-testid=queue-row]").filter(
        has=page.get_by_role("link", name=ui_queue.name, exact=True))).to_have_count(0)


def test_dismissed_confirm_keeps_the_queue(page, base_url, http, ui_queue):
    ui_queue.fill(1)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 1)
    page.confirm_answer = False
    page.click("#delete-button")
    page.click("#purge-button")
    assert len(page.dialogs) == 2
    page.wait_for_timeout(200)
    assert depth(http, ui_queue.name) == 1
    sync_api.expect(page.locator("#q-ready")).to_have_text("1")
    assert "#/queues/" in page.url


def test_publish_through_an_exchange(page, base_url, http, ch, ui_queue):
    ch.queue_bind(ui_queue.name, "amq.direct", routing_key=ui_queue.name)
    logged_in(page, base_url, hash="#/exchanges/%2F/amq.direct")
    sync_api.expect(page.locator("#exchange-details-type")).to_have_text("direct")
    sync_api.expect(page.locator("#exchange-bindings")).to_contain_text(ui_queue.name)
    page.fill("#publish-routing-key", ui_queue.name)
    page.fill("#publish-payload", "via amq.direct")
    page.click("#publish-submit")
    sync_api.expect(page.locator("#publish-result")).to_have_text("Message published.")
    wait_depth(http, ui_queue.name, 1)
    # a key nothing is bound with: published, not routed
    page.fill("#publish-routing-key", "nowhere-" + uuid.uuid4().hex)
    page.click("#publish-submit")
    sync_api.expect(page.locator("#publish-result")).to_have_text(
        "Message published, but not routed.")
    assert depth(http, ui_queue.name) == 1


def test_api_refusal_shows_its_reason(page, base_url):
    """A refused declaration shows the API's reason and keeps the session."""
    logged_in(page, base_url, hash="#/queues")
    page.expected_errors.append("status of 4")  # the refused request itself
    page.click("#add-queue summary")
    page.fill("#add-queue-name", "amq.ui-" + uuid.uuid4().hex[:8])
    page.click("#add-queue-submit")
    result = page.locator("#add-queue-result")
    sync_api.expect(result).to_have_attribute("role", "alert")
    assert result.text_content().strip()
    assert page.is_visible("#app")


def test_add_queue_form(page, base_url, http, names):
    name = names.q("ui-add")
    logged_in(page, base_url, hash="#/queues")
    page.click("#add-queue summary")
    page.fill("#add-queue-name", name)
    page.select_option("#add-queue-durable", "false")
    page.fill("#add-queue-arguments", '{"x-max-length": 10}')
    page.click("#add-queue-submit")
    sync_api.expect(page.locator("#add-queue-result")).to_contain_text("declared")
    q = http.get(f"/queues/%2F/{seg(name)}").json()
    assert q["durable"] is False and q["arguments"] == {"x-max-length": 10}
    sync_api.expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()


def test_wrong_password_shows_the_error(page, base_url):
    page.expected_errors.append("status of 401")  # the refused login request
    log_in(page, base_url, password="not-" + uuid.uuid4().hex)
    err = page.get_by_test_id("login-error")
    sync_api.expect(err).to_be_visible()
    sync_api.expect(err).to_have_text("Login failed")
    assert page.is_hidden("#app")
    assert page.evaluate("sessionStorage.getItem('warren.auth')") is None
    # then the right one works
    page.fill("#login-password", "guest")
    page.click("#login-submit")
    page.wait_for_selector("#app", state="visible")
    assert page.is_hidden("#login-error")


def test_stale_credentials_return_to_the_form(page, base_url):
    """A 401 while logged in (say the password changed) shows the API's
    reason on the login form."""
    logged_in(page, base_url)
    page.expected_errors.append("status of 401")
    page.evaluate("""sessionStorage.setItem('warren.auth', JSON.stringify(
        {username: 'guest', authorization: 'Basic ' + btoa('guest:changed')}))""")
    page.reload()
    err = page.get_by_test_id("login-error")
    sync_api.expect(err).to_have_text("Login failed")
    assert page.is_hidden("#app")
    assert page.evaluate("sessionStorage.getItem('warren.auth')") is None


def test_logout_returns_to_the_form(page, base_url):
    logged_in(page, base_url)
    page.click("#logout")
    sync_api.expect(page.locator("#login")).to_be_visible()
    assert page.is_hidden("#app")
    assert page.evaluate("sessionStorage.getItem('warren.auth')") is None
    page.reload()
    sync_api.expect(page.locator("#login")).to_be_visible()


def test_refresh_keeps_form_input(page, base_url, ch, ui_queue):
    """The visible view refreshes every 5 s without touching the forms."""
    ui_queue.fill(1)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 1)
    page.fill("#publish-payload", "half-typed")
    page.fill("#get-count", "7")
    page.focus("#publish-payload")
    ch.basic_publish("", ui_queue.name, b"another")
    sync_api.expect(page.locator("#q-ready")).to_have_text("2", timeout=8000)
    assert page.input_value("#publish-payload") == "half-typed"
    assert page.input_value("#get-count") == "7"
    assert page.evaluate("document.activeElement.id") == "publish-payload"


def test_pause_browse_and_move_from_the_page(page, base_url, http, ch, names, ui_queue):
    ui_queue.fill(3)
    other = names.q("moved-here")
    ch.queue_declare(other)
    logged_in(page, base_url)
    open_queue(page, base_url, ui_queue.name, 3)

    page.click("#pause-button")
    sync_api.expect(page.locator("#pause-result")).to_have_text("Deliveries paused.")
    assert http.get(f"/queues/%2F/{seg(ui_queue.name)}").json()["state"] == "paused"
    sync_api.expect(page.locator("#pause-button")).to_have_text("Resume deliveries")

    page.fill("#browse-count", "2")
    page.click("#browse-button")
    rows = page.locator("#browse-table tr[data-testid=browsed-row]")
    sync_api.expect(rows).to_have_count(2)
    sync_api.expect(rows.first).to_contain_text("msg-0")
    wait_depth(http, ui_queue.name, 3)  # browsing took nothing

    page.fill("#move-to", other)
    page.fill("#move-count", "2")
    page.click("#move-button")
    sync_api.expect(page.locator("#move-result")).to_have_text("Moved 2 messages.")
    wait_depth(http, other, 2)
    wait_depth(http, ui_queue.name, 1)

    page.click("#pause-button")
    sync_api.expect(page.locator("#pause-result")).to_have_text("Deliveries resumed.")
    assert http.get(f"/queues/%2F/{seg(ui_queue.name)}").json()["state"] == "running"


def test_the_schema_catalogue_lists_subjects_and_where_they_are_bound(page, base_url, http, ch, names):
    subject = names.x("catalogued")
    r = http.put(f"/schemas/%2F/{seg(subject)}",
                 json={"schemaType": "JSON", "schema": '{"type": "object"}'})
    assert r.status_code == 200, r.text
    queue = names.q("typed")
    ch.queue_declare(queue, arguments={"x-schema-subject": subject})
    logged_in(page, base_url, hash="#/schemas")
    row = page.locator(f"#schemas-table tr[data-name='{subject}']")
    sync_api.expect(row).to_contain_text("JSON")
    sync_api.expect(row.locator("td[data-col=versions]")).to_have_text("1")
    sync_api.expect(row.get_by_test_id("schema-binding")).to_contain_text(queue)
    row.get_by_role("link", name=queue).click()
    sync_api.expect(page.get_by_test_id("queue-name")).to_have_text(queue)


def test_the_links_page_shows_a_shovel_moving_messages(page, base_url, http, broker, ch, names):
    src, dst, shovel = names.q("shovel-src"), names.q("shovel-dst"), names.x("ui-shovel")
    ch.queue_declare(src, durable=True)
    for i in range(3):
        ch.basic_publish("", src, f"m{i}".encode())
    uri = f"amqp://{broker.user}:{broker.password}@{broker.host}:{broker.amqp_port}/%2F"
    r = http.put(f"/parameters/shovel/%2F/{seg(shovel)}", json={"value": {
        "src-uri": uri, "src-queue": src, "dest-uri": uri, "dest-queue": dst}})
    assert r.status_code in (201, 204), r.text
    try:
        logged_in(page, base_url, hash="#/links")
        row = page.locator(f"#shovels-table tr[data-name='{shovel}']")
        sync_api.expect(row.locator("td[data-col=state]")).to_have_text("running")
        sync_api.expect(row).to_contain_text(f"queue {src}")
        sync_api.expect(row).to_contain_text(f"queue {dst}")
        sync_api.expect(row.locator("td[data-col=forwarded]")).to_have_text("3")
        assert "guest@" not in row.inner_text()
        sync_api.expect(page.locator("#federation-table tbody")).to_contain_text("No federation links")
    finally:
        http.s.delete(f"{http.base}/parameters/shovel/%2F/{seg(shovel)}", timeout=5)
