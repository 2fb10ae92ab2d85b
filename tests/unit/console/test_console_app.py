"""The console's pages through WSGI: escaping, access, read-only, bad input."""

from __future__ import annotations

import http.client
import re
import urllib.request

import pytest

from enforcer.console.app import ConsoleApp
from enforcer.health import Readiness
from enforcer.http_server import HttpServer
from enforcer.metrics import Metrics


def rows(html):
    return re.findall(r'<tr class="detection" data-id="(\d+)">', html)


def test_list_shows_newest_first(app, wsgi_call):
    page = wsgi_call(app, "/")
    assert page.status == 200
    assert rows(page.text) == ["8", "7", "6", "5", "4", "3", "2", "1"]


@pytest.mark.parametrize("query, expected", [
    ("rule=Read+sensitive+file+untrusted", ["3", "2"]),
    ("outcome=failed", ["5"]),
    ("outcome=dry-run", ["5", "2"]),
    ("priority=critical", ["5"]),
    ("namespace=dev&node=node-b", ["7", "3"]),
    ("container=c0ffee333333", ["3"]),  # container.name, else container.id
    ("policy=contain-shell&outcome=guard", ["4"]),
    ("q=shadow", ["3", "2"]),
    ("since=2026-11-23T10:03&until=2026-11-23T10:05", ["4", "3"]),
])
def test_filters(app, query, expected, wsgi_call):
    assert rows(wsgi_call(app, "/?" + query).text) == expected


def test_where_names_the_container_beside_pod_and_node(app, wsgi_call):
    page = wsgi_call(app, "/?container=c0ffee333333").text
    assert re.search(r'<td class="where">dev/api-3<br><span class="container">c0ffee333333'
                     r'</span><br><span class="node">node-b</span></td>', page)
    assert 'name="container"' in page
    assert "c0ffee333333" in wsgi_call(app, "/detection/3").text


def test_script_in_alert_fields_is_text(app, wsgi_call):
    page = wsgi_call(app, "/detection/6")
    assert page.status == 200
    assert "<script>" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    listing = wsgi_call(app, "/")
    assert "<script>" not in listing.text
    assert "cmdline=&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in listing.text
    # And no script may run even if one slipped through.
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "script-src" not in page.headers["Content-Security-Policy"]


def test_detail_shows_actions_and_trace(app, wsgi_call):
    page = wsgi_call(app, "/detection/1").text
    assert f"{0xa1:032x}" in page
    assert re.findall(r'<tr class="action" data-action="(\w+)">', page) == ["snapshot", "kill"]
    assert "3.25 ms" in page and "pid=4242 start_ticks=1795428060" in page
    assert "&#34;syscall&#34;: &#34;pidfd_send_signal&#34;" in page  # the exact operation
    assert "containerd-shim" in page  # the process tree


def test_unknown_detection_and_page_are_404(app, wsgi_call):
    assert wsgi_call(app, "/detection/999").status == 404
    assert wsgi_call(app, "/admin").status == 404


@pytest.mark.parametrize("query, message", [
    ("since=yesterday", "since: &#39;yesterday&#39; is not a time"),
    ("priority=loud", "priority: Invalid priority"),
    ("last=forever", "last: &#39;forever&#39; is not a duration"),
    ("before=abc", "before: &#39;abc&#39; is not a page cursor"),
])
def test_bad_parameters_are_400_with_a_reason(app, query, message, wsgi_call):
    page = wsgi_call(app, "/?" + query)
    assert page.status == 400
    assert message in page.text


def test_read_only(app, wsgi_call):
    page = wsgi_call(app, "/", method="POST")
    assert page.status == 405 and page.headers["Allow"] == "GET, HEAD"


def test_static_assets_ship_in_the_package(app, wsgi_call):
    css = wsgi_call(app, "/static/console.css")
    assert css.status == 200 and css.headers["Content-Type"] == "text/css"
    assert wsgi_call(app, "/static/../app.py").status == 404


def test_dry_run_and_stats_pages(app, wsgi_call):
    dry = wsgi_call(app, "/dry-run").text
    assert re.findall(r'data-policy="([\w-]+)"', dry) == ["isolate-dropper", "kill-readers"]
    assert "&#34;syscall&#34;: &#34;pidfd_send_signal&#34;" in dry
    assert "/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies" in dry
    for by in ("rule", "priority", "outcome"):
        stats = wsgi_call(app, f"/stats?by={by}")
        assert stats.status == 200 and "<svg" in stats.text and "<rect" in stats.text
    assert wsgi_call(app, "/stats?by=colour").status == 400


def test_missing_store_is_503(tmp_path, wsgi_call):
    page = wsgi_call(ConsoleApp(tmp_path / "none.db"), "/")
    assert page.status == 503 and "no audit store here" in page.text


def test_damaged_store_is_503_not_a_traceback(tmp_path, wsgi_call, store):
    damaged = tmp_path / "damaged.db"
    data = bytearray(store.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # all but the header page scribbled over
    damaged.write_bytes(bytes(data))
    page = wsgi_call(ConsoleApp(damaged), "/")
    assert page.status == 503
    assert "enforcer audit import" in page.text


def test_token_required_when_configured(store, wsgi_call):
    app = ConsoleApp(store, token="s3cret")
    assert wsgi_call(app, "/").status == 401
    assert wsgi_call(app, "/", headers={"Authorization": "Bearer wrong"}).status == 401
    assert wsgi_call(app, "/?token=wrong").status == 401
    assert wsgi_call(app, "/", headers={"Authorization": "Bearer s3cret"}).status == 200
    swap = wsgi_call(app, "/?token=s3cret&outcome=failed", script_name="/ui")
    assert swap.status == 303 and swap.headers["Location"] == "/ui/?outcome=failed"
    cookie = swap.set_cookies[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    jar = cookie.split(";")[0]
    assert wsgi_call(app, "/", headers={"Cookie": jar}).status == 200


def test_mounted_under_ui_in_the_agents_http_server(store, wsgi_call):
    app = ConsoleApp(store)
    server = HttpServer("127.0.0.1:0", Metrics(), Readiness(), ui=app).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/ui/?outcome=failed") as resp:
            html = resp.read().decode()
        assert rows(html) == ["5"]
        assert 'href="/ui/static/console.css"' in html
        assert 'href="/ui/detection/5"' in html
        with urllib.request.urlopen(base + "/ui/static/console.css") as resp:
            assert resp.headers["Content-Type"] == "text/css"
        with urllib.request.urlopen(base + "/healthz") as resp:
            assert resp.read() == b"ok\n"
        # Several requests on one kept-alive connection, console and agent pages mixed.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for path in ("/ui/", "/healthz", "/ui/detection/1", "/ui/nope"):
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == (404 if path == "/ui/nope" else 200), path
            assert len(body) == int(resp.headers["Content-Length"])
        conn.close()
    finally:
        server.stop()
