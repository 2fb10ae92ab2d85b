"""Alert outputs: webhook, program, extra fields, minimum priority, non-blocking dispatch."""

from __future__ import annotations

import json
import sys
import threading

import pytest

from enforcer.metrics import Metrics
from enforcer.outputs.dispatcher import Dispatcher, OutputSpec, as_output
from enforcer.outputs.extra_fields import parse_extra_fields, with_extra_fields
from enforcer.outputs.program import ProgramConfig, ProgramError, ProgramOutput, parse_argv
from enforcer.outputs.webhook import (
    WebhookConfig,
    WebhookError,
    WebhookOutput,
    parse_header,
)
from enforcer.priority import Priority

FALCO_KEYS = {"hostname", "output", "output_fields", "priority", "rule", "source", "tags",
              "time"}


def test_webhook_posts_falco_json_with_auth_header(http_recorder, alert_factory):
    alert = alert_factory()
    out = WebhookOutput(WebhookConfig(http_recorder.url,
                                      headers={"Authorization": "Bearer s3cret"}))
    out.emit(alert)
    assert len(http_recorder.bodies) == 1
    doc = json.loads(http_recorder.bodies[0])
    assert set(doc) == FALCO_KEYS
    assert doc == alert.falco_json()
    assert doc["priority"] == "Notice"
    assert doc["output"].endswith("A shell was spawned in a container with an attached terminal")
    headers = {k.lower(): v for k, v in http_recorder.headers[0].items()}
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer s3cret"


def test_webhook_retries_503_then_delivers(http_recorder, alert_factory):
    http_recorder.codes = [503, 503]
    slept: list[float] = []
    out = WebhookOutput(WebhookConfig(http_recorder.url, max_retries=3, backoff=0.25),
                        sleep=slept.append)
    out.emit(alert_factory())
    assert len(http_recorder.bodies) == 3  # two 503s, then the 200
    assert http_recorder.bodies[0] == http_recorder.bodies[2]
    assert slept == [0.25, 0.5]  # exponential backoff between attempts


def test_webhook_gives_up_after_bounded_retries_and_not_on_4xx(http_recorder, alert_factory):
    http_recorder.codes = [500] * 10
    out = WebhookOutput(WebhookConfig(http_recorder.url, max_retries=2), sleep=lambda s: None)
    with pytest.raises(WebhookError, match="gave up after 3 attempts"):
        out.emit(alert_factory())
    assert len(http_recorder.bodies) == 3

    http_recorder.codes = [400]
    out = WebhookOutput(WebhookConfig(http_recorder.url, max_retries=5), sleep=lambda s: None)
    with pytest.raises(WebhookError, match="400") as info:
        out.emit(alert_factory())
    assert not info.value.temporary
    assert len(http_recorder.bodies) == 4  # one more attempt only


def test_webhook_times_out_on_a_hanging_server(http_recorder, alert_factory):
    http_recorder.hang.set()
    out = WebhookOutput(WebhookConfig(http_recorder.url, timeout=0.3, max_retries=1),
                        sleep=lambda s: None)
    with pytest.raises(WebhookError, match="did not answer|timed out"):
        out.emit(alert_factory())
    assert len(http_recorder.bodies) == 2


def test_webhook_refused_connection_is_temporary(alert_factory):
    out = WebhookOutput(WebhookConfig("http://127.0.0.1:9/", max_retries=0))
    with pytest.raises(WebhookError, match="unreachable") as info:
        out.emit(alert_factory())
    assert info.value.temporary


@pytest.mark.parametrize("bad", ["ftp://x/", "not a url", "http://"])
def test_webhook_rejects_bad_urls(bad):
    with pytest.raises(ValueError, match="http:// or https://"):
        WebhookConfig(bad)


@pytest.mark.parametrize(("text", "ok"), [
    ("Authorization: Bearer x", ("Authorization", "Bearer x")),
    ("X-Api-Key:abc", ("X-Api-Key", "abc")),
    ("no colon", None), (": empty name", None), ("Bad Name: x", None),
])
def test_parse_header(text, ok):
    if ok is None:
        with pytest.raises(ValueError):
            parse_header(text)
    else:
        assert parse_header(text) == ok


def test_dispatcher_never_blocks_when_webhook_hangs(http_recorder, alert_factory):
    """A hung webhook fills its queue; dispatch keeps returning, drops are counted, and
    the other output still gets every alert."""
    http_recorder.hang.set()
    metrics = Metrics()
    fast: list[str] = []
    webhook = WebhookOutput(WebhookConfig(http_recorder.url, timeout=60, max_retries=0))
    dispatcher = Dispatcher([OutputSpec(webhook, queue_size=5),
                             OutputSpec(as_output("memory", lambda a: fast.append(a.rule)))],
                            metrics=metrics).start()
    dispatcher.dispatch(alert_factory(rule="first"))
    http_recorder.wait(lambda r: r.hanging == 1)  # the worker is now stuck in the POST
    for i in range(100):
        dispatcher.dispatch(alert_factory(rule=f"r{i}"))
    stats = dispatcher.stats()
    assert stats["webhook"].dropped == 100 - 5
    assert metrics.registry.get_sample_value("enforcer_output_drops_total",
                                             {"output": "webhook"}) == 95
    # detection went on while the server still holds the first request
    assert http_recorder.hanging == 1 and not http_recorder.release.is_set()
    http_recorder.release.set()
    http_recorder.hang.clear()
    left = dispatcher.close(timeout=30)
    assert left == {}
    assert len(fast) == 101
    assert len(http_recorder.bodies) == 1 + 5


def test_min_priority_filter_per_output(alert_factory):
    seen: dict[str, list[str]] = {"all": [], "critical": []}
    dispatcher = Dispatcher([
        OutputSpec(as_output("all", lambda a: seen["all"].append(a.rule))),
        OutputSpec(as_output("critical", lambda a: seen["critical"].append(a.rule)),
                   min_priority=Priority.CRITICAL),
    ]).start()
    for p in (Priority.DEBUG, Priority.NOTICE, Priority.CRITICAL, Priority.EMERGENCY):
        dispatcher.dispatch(alert_factory(rule=p.display, priority=p))
    dispatcher.close()
    assert seen["all"] == ["Debug", "Notice", "Critical", "Emergency"]
    assert seen["critical"] == ["Critical", "Emergency"]
    assert dispatcher.stats()["critical"].filtered == 2


def test_extra_fields_reach_every_output(http_recorder, alert_factory):
    fields = parse_extra_fields(["environment=production", "cluster=eu-1", "empty="])
    assert fields == {"environment": "production", "cluster": "eu-1", "empty": ""}
    dispatcher = Dispatcher([OutputSpec(WebhookOutput(WebhookConfig(http_recorder.url)))],
                            extra_fields=fields).start()
    dispatcher.dispatch(alert_factory())
    dispatcher.close()
    doc = json.loads(http_recorder.bodies[0])
    assert doc["output_fields"]["environment"] == "production"
    assert doc["output_fields"]["proc.name"] == "bash"


def test_extra_fields_never_mask_event_fields(alert_factory):
    alert = alert_factory()
    merged = with_extra_fields(alert, {"proc.name": "innocent", "team": "sec"})
    assert merged.output_fields["proc.name"] == "bash"
    assert merged.output_fields["team"] == "sec"
    assert "team" not in alert.output_fields  # the original alert is untouched


@pytest.mark.parametrize("bad", ["noequals", "=value", "bad key=x", "1abc=x"])
def test_extra_fields_reject_bad_items(bad):
    with pytest.raises(ValueError, match="extra field"):
        parse_extra_fields([bad])


def _collector_argv(tmp_path) -> tuple[str, ...]:
    """A program that appends its stdin to a file (no shell involved)."""
    script = tmp_path / "collect.py"
    script.write_text("import sys\n"
                      "data = sys.stdin.buffer.read()\n"
                      "open(sys.argv[1], 'ab').write(data)\n")
    return (sys.executable, str(script), str(tmp_path / "got.jsonl"))


def test_program_output_pipes_json_to_stdin_without_a_shell(tmp_path, alert_factory):
    argv = _collector_argv(tmp_path)
    out = ProgramOutput(ProgramConfig(argv))
    # Shell metacharacters in event fields stay data: they never reach a command line.
    alert = alert_factory(**{"proc.cmdline": "sh -c 'touch /tmp/pwned; $(reboot)'"})
    out.emit(alert)
    out.emit(alert_factory(rule="second"))
    lines = (tmp_path / "got.jsonl").read_text().splitlines()
    assert [json.loads(line)["rule"] for line in lines] == ["Terminal shell in container",
                                                            "second"]
    assert json.loads(lines[0])["output_fields"]["proc.cmdline"].startswith("sh -c 'touch")


def test_program_output_keep_alive_reuses_one_process(tmp_path, alert_factory):
    out = ProgramOutput(ProgramConfig(_collector_argv(tmp_path), keep_alive=True))
    for i in range(3):
        out.emit(alert_factory(rule=f"r{i}"))
    out.close()
    lines = (tmp_path / "got.jsonl").read_text().splitlines()
    assert [json.loads(line)["rule"] for line in lines] == ["r0", "r1", "r2"]


def test_program_output_reports_failure(alert_factory):
    out = ProgramOutput(ProgramConfig((sys.executable, "-c",
                                       "import sys; sys.stderr.write('nope'); sys.exit(3)")))
    with pytest.raises(ProgramError, match="exited with 3: nope"):
        out.emit(alert_factory())


@pytest.mark.parametrize(("text", "argv"), [
    ('["logger", "-t", "enforcer alerts"]', ("logger", "-t", "enforcer alerts")),
    ("logger -t 'enforcer alerts'", ("logger", "-t", "enforcer alerts")),
    ("jq -c $HOME", ("jq", "-c", "$HOME")),  # no expansion: words only
])
def test_parse_argv(text, argv):
    assert parse_argv(text) == argv


@pytest.mark.parametrize("bad", ["", "[]", "[1, 2]", '["unterminated', "a 'b"])
def test_parse_argv_rejects(bad):
    with pytest.raises(ValueError):
        parse_argv(bad)


def test_program_config_requires_an_existing_command():
    with pytest.raises(ValueError, match="not found"):
        ProgramConfig(("/nonexistent/enforcer-hook",))


def test_dispatch_is_safe_from_many_threads(alert_factory):
    got: list[str] = []
    dispatcher = Dispatcher([OutputSpec(as_output("m", lambda a: got.append(a.rule)),
                                        queue_size=10_000)]).start()

    def burst(n: int) -> None:
        for i in range(250):
            dispatcher.dispatch(alert_factory(rule=f"{n}-{i}"))

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dispatcher.close()
    assert len(got) == 1000 and dispatcher.stats()["m"].delivered == 1000


def test_webhook_over_https_trusts_only_the_given_ca(pki, alert_factory):
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        WebhookOutput(WebhookConfig(url, ca_file=str(pki / "ca.pem"))).emit(alert_factory())
        assert json.loads(got[0])["rule"] == "Terminal shell in container"
        untrusting = WebhookOutput(WebhookConfig(url, max_retries=5), sleep=lambda s: None)
        with pytest.raises(WebhookError, match="TLS verification failed") as info:
            untrusting.emit(alert_factory())
        assert not info.value.temporary and untrusting.attempts == 1  # not retried
    finally:
        server.shutdown()
        server.server_close()
