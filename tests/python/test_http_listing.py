"""Listing parameters on list routes: page, page_size (max 500), name +
use_regex, sort, sort_reverse, columns, disable_stats; RabbitMQ's paged
envelope. Each test lists a vhost of its own so counts are exact."""

import pytest

from http_support import assert_error, eventually, q, unique

ENVELOPE = {"filtered_count", "item_count", "items", "page", "page_count", "page_size",
            "total_count"}
FRUIT = ["apple", "banana", "cherry", "date", "elder-berry"]


@pytest.fixture
def fruit(api):
    """A vhost holding the five queues in FRUIT."""
    vhost = api.create_vhost()
    for name in FRUIT:
        api.create_queue(vhost, name)
    return vhost


def page(api, path, **params):
    r = api.get(path, params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body, dict) and set(body) == ENVELOPE, body
    return body


def test_paged_envelope(api, fruit):
    path = f"/api/queues/{q(fruit)}"
    p1 = page(api, path, page=1, page_size=2, sort="name")
    assert {k: v for k, v in p1.items() if k != "items"} == {
        "filtered_count": 5, "item_count": 2, "page": 1, "page_count": 3, "page_size": 2,
        "total_count": 5}
    assert [x["name"] for x in p1["items"]] == ["apple", "banana"]
    p3 = page(api, path, page=3, page_size=2, sort="name")
    assert [x["name"] for x in p3["items"]] == ["elder-berry"]
    assert (p3["item_count"], p3["page"], p3["page_count"]) == (1, 3, 3)
    # Default page size is 100.
    assert page(api, path, page=1)["page_size"] == 100
    # Items keep the list shape.
    for x in p1["items"]:
        assert {"name", "vhost", "durable", "auto_delete", "exclusive", "arguments"} <= set(x)


def test_page_size_limit_and_bad_pages(api, fruit):
    path = f"/api/queues/{q(fruit)}"
    assert page(api, path, page=1, page_size=500)["item_count"] == 5
    assert_error(api.get(path, params={"page": 1, "page_size": 501}), 400,
                 "invalid_pagination_parameters",
                 "Invalid pagination parameters: page number 1, page size 501")
    assert_error(api.get(path, params={"page": 0, "page_size": 10}), 400,
                 "invalid_pagination_parameters",
                 "Invalid pagination parameters: page number 0, page size 10")
    assert_error(api.get(path, params={"page": 1, "page_size": 0}), 400,
                 "invalid_pagination_parameters",
                 "Invalid pagination parameters: page number 1, page size 0")
    assert_error(api.get("/api/queues", params={"page": 1, "page_size": 501}), 400,
                 "invalid_pagination_parameters",
                 "Invalid pagination parameters: page number 1, page size 501")
    assert_error(api.get(path, params={"page": 10, "page_size": 2}), 400,
                 "page_out_of_range", "Page out of range, page: 10 page size: 2, len: 5")
    assert_error(api.get(path, params={"page": "first"}), 400, "bad_request")


def test_name_filter_is_case_insensitive_substring(api, fruit):
    path = f"/api/queues/{q(fruit)}"
    p = page(api, path, page=1, name="ERR", sort="name")
    assert [x["name"] for x in p["items"]] == ["cherry", "elder-berry"]
    assert (p["filtered_count"], p["total_count"], p["item_count"]) == (2, 5, 2)
    p = page(api, path, page=1, name="nothing-like-this")
    assert (p["filtered_count"], p["item_count"], p["items"], p["page_count"]) == (0, 0, [], 0)


def test_name_filter_with_regex(api, fruit):
    path = f"/api/queues/{q(fruit)}"
    p = page(api, path, page=1, name="^[a-c]", use_regex="true", sort="name")
    assert [x["name"] for x in p["items"]] == ["apple", "banana", "cherry"]
    p = page(api, path, page=1, name="an|ch", use_regex="true", sort="name")
    assert [x["name"] for x in p["items"]] == ["banana", "cherry"]
    # Without use_regex the same text is a literal substring.
    assert page(api, path, page=1, name="^[a-c]")["filtered_count"] == 0
    assert api.get(path, params={"page": 1, "name": "(", "use_regex": "true"}).status_code == 400


def test_keda_style_query_still_returns_the_envelope(api, fruit):
    # KEDA: ?page=1&use_regex=true&pagination=false&name=<re>&page_size=100
    p = page(api, f"/api/queues/{q(fruit)}", page=1, use_regex="true", pagination="false",
             name="^date$", page_size=100)
    assert [x["name"] for x in p["items"]] == ["date"]


def test_sort_and_sort_reverse(api, fruit):
    path = f"/api/queues/{q(fruit)}"
    assert [x["name"] for x in api.json(path + "?sort=name")] == FRUIT
    assert [x["name"] for x in api.json(path + "?sort=name&sort_reverse=true")] == FRUIT[::-1]
    p = page(api, path, page=1, page_size=2, sort="name", sort_reverse="true")
    assert [x["name"] for x in p["items"]] == ["elder-berry", "date"]


def test_sort_by_nested_field_and_numbers(api):
    vhost = api.create_vhost()
    for name, cap in [("a", 30), ("b", 10), ("c", 20)]:
        api.create_queue(vhost, name, arguments={"x-max-length": cap})
    got = api.json(f"/api/queues/{q(vhost)}?sort=arguments.x-max-length")
    assert [x["name"] for x in got] == ["b", "c", "a"]
    for name, n in [("a", 2), ("b", 3), ("c", 1)]:
        for i in range(n):
            api.publish(vhost, "", name, "x")

    def by_messages():
        got = api.json(f"/api/queues/{q(vhost)}?sort=messages&sort_reverse=true")
        assert [(x["name"], x["messages"]) for x in got] == [("b", 3), ("a", 2), ("c", 1)]
    eventually(by_messages)


def test_columns(api, fruit):
    path = f"/api/queues/{q(fruit)}"
    got = api.json(path + "?columns=name,vhost&sort=name")
    assert got == [{"name": n, "vhost": fruit} for n in FRUIT]
    p = page(api, path, page=1, name="apple", columns="name,arguments.x-nothing,durable")
    assert p["items"] == [{"name": "apple", "arguments": {}, "durable": False}]


def test_columns_nested(api):
    vhost = api.create_vhost()
    api.create_queue(vhost, "counted")
    api.publish(vhost, "", "counted", "x")

    def nested():
        got = api.json(f"/api/queues/{q(vhost)}?columns=name,message_stats.publish")
        # Only the named sub-field: no publish_details, no other counters.
        assert got == [{"name": "counted", "message_stats": {"publish": 1}}]
    eventually(nested)


def test_columns_with_counts(api, fruit):
    for _ in range(2):
        api.publish(fruit, "", "banana", "b")

    def counted():
        got = api.json(f"/api/queues/{q(fruit)}?columns=name,messages&sort=name")
        assert got == [{"name": n, "messages": 2 if n == "banana" else 0} for n in FRUIT]
    eventually(counted)


def test_disable_stats(api, fruit):
    api.publish(fruit, "", "cherry", "c")
    api.queue_when(fruit, "cherry", messages=1)  # let RabbitMQ's stats catch up
    p = page(api, f"/api/queues/{q(fruit)}", page=1, name="cherry", disable_stats="true")
    item = p["items"][0]
    assert item["name"] == "cherry" and item["vhost"] == fruit
    assert {"name", "vhost", "type", "durable", "auto_delete", "exclusive",
            "arguments", "node", "state"} <= set(item)
    assert "message_stats" not in item and "messages_details" not in item

    def totals():
        p = page(api, f"/api/queues/{q(fruit)}", page=1, name="cherry", disable_stats="true",
                 enable_queue_totals="true")
        item = p["items"][0]
        assert (item["messages"], item["messages_ready"],
                item["messages_unacknowledged"]) == (1, 1, 0)
        assert "message_stats" not in item
    eventually(totals)


def test_paging_on_other_list_routes(api, fruit, connect):
    tag = unique("pg")
    for i in range(3):
        api.create_exchange(fruit, f"{tag}-{i}")
    p = page(api, f"/api/exchanges/{q(fruit)}", page=1, page_size=2, name=tag, sort="name")
    assert [x["name"] for x in p["items"]] == [f"{tag}-0", f"{tag}-1"]
    assert (p["filtered_count"], p["page_count"]) == (3, 2)
    assert p["total_count"] >= 3 + 6  # and the built-in exchanges
    p = page(api, "/api/vhosts", page=1, name=fruit)
    assert [v["name"] for v in p["items"]] == [fruit]
    assert p["total_count"] >= 2
    p = page(api, "/api/queues", page=1, name="^(apple|banana)$", use_regex="true")
    assert {(x["vhost"], x["name"]) for x in p["items"]} >= {(fruit, "apple"), (fruit, "banana")}
    conn = connect(virtual_host=fruit)
    conn.channel()
    port = conn._impl._transport._sock.getsockname()[1]

    def conns():
        p = page(api, "/api/connections", page=1, name=f":{port} -> ")
        assert p["filtered_count"] == 1 and p["items"][0]["vhost"] == fruit
        return p["items"][0]["name"]
    name = eventually(conns)

    def chans():
        p = page(api, "/api/channels", page=1, page_size=1, name=name)
        assert p["filtered_count"] == 1 and p["items"][0]["name"] == f"{name} (1)"
    eventually(chans)
