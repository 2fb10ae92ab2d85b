"""Hot reload: rules and policies replaced the way a ConfigMap update does, while the
reloader runs; the new set takes effect without restart, a broken one is refused and
reported with its file and line, and the last good set stays active."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from enforcer.audit.memory import MemoryAudit
from enforcer.audit.record import ACTION, RELOAD
from enforcer.gitops.bundle import BundleError
from enforcer.priority import Priority
from enforcer.reload import RELOAD_FAILED_RULE, CurrentEngine, Reloader
from enforcer.respond.responder import Responder
from tests.unit.reload.configmap import ConfigMapDir

RULES = """\
- rule: Shadow read
  desc: a process read /etc/shadow
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: shadow read by %proc.name (pid=%proc.pid)
  priority: WARNING
  tags: [filesystem]
"""

EVENT = {"evt.type": "openat", "evt.dir": "<", "fd.name": "/etc/shadow", "proc.name": "cat",
         "proc.pid": 4242}


def policy(url: str, rule: str = "Shadow read") -> str:
    return (f"- policy: answer-shadow\n  match: {{rules: [{rule}]}}\n  actions:\n"
            f"    - notify: {{url: '{url}'}}\n  dry_run: true\n")


class Webhook:
    """A real HTTP server that records the paths POSTed to it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.got = threading.Condition()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.got:  # recorded before answering: the caller then sees it
                    hook.paths.append(self.path)
                    hook.got.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def mounted(tmp_path: Path):
    rules = ConfigMapDir(tmp_path / "rules")
    policies = ConfigMapDir(tmp_path / "policies")
    rules.write({"local_rules.yaml": RULES})
    return rules, policies


class Agent:
    """What the live agent does per event: read the current set once, evaluate, submit."""

    def __init__(self, reloader: Reloader, responder: Responder):
        self.reloader = reloader
        self.responder = responder

    def handle(self, event: dict) -> list[str]:
        active = self.reloader.current
        alerts = active.engine.evaluate(event)
        for alert in alerts:
            self.responder.submit(alert)
        self.responder.drain()
        return [a.rule for a in alerts]


def build(mounted, audit, **kw):
    rules, policies = mounted
    swapped = threading.Event()
    critical: list = []
    loaded: list[bool] = []
    reloader = Reloader([rules.path], [policies.path], audit=audit, interval=0.05,
                        on_critical=critical.append, on_loaded=loaded.append,
                        hostname="node-1", **kw)
    responder = Responder(reloader.current.policies, audit, dry_run=True,
                          policy_digest=reloader.digest)

    def on_swap(new, old):
        responder.use_policies(new.policies, new.short_digest)
        swapped.set()

    reloader.on_swap = on_swap
    return reloader, responder, swapped, critical, loaded


def test_configmap_update_takes_effect_without_restart(mounted, webhook):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    audit = MemoryAudit()
    reloader, responder, swapped, critical, loaded = build(mounted, audit)
    agent = Agent(reloader, responder.start())
    reloader.start()
    try:
        first = reloader.digest
        assert agent.handle(EVENT) == ["Shadow read"]
        assert webhook.paths == ["/v1"]

        policies.write({"contain.yaml": policy(webhook.url + "/v2")})
        assert swapped.wait(30), "the reloader did not pick up the ConfigMap update"
        assert reloader.digest != first
        assert agent.handle(EVENT) == ["Shadow read"]
        assert webhook.paths == ["/v1", "/v2"]
    finally:
        reloader.stop()
        responder.stop()
    done = [r for r in audit.records if r.kind == ACTION]
    assert [(r.target["url"].rsplit("/", 1)[-1], r.policy_digest) for r in done] == [
        ("v1", first), ("v2", reloader.digest)]
    applied = [r for r in audit.records if r.kind == RELOAD]
    assert [(r.outcome, r.policy_digest, r.detail["previous_digest"]) for r in applied] == [
        ("applied", reloader.digest, first)]
    assert loaded == [True] and critical == []


def test_broken_update_keeps_the_last_good_set_and_is_reported(mounted, webhook):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    audit = MemoryAudit()
    reloader, responder, swapped, critical, loaded = build(mounted, audit)
    agent = Agent(reloader, responder.start())
    reloader.start()
    try:
        good = reloader.digest
        with_critical = threading.Event()
        reloader.on_critical = lambda alert: (critical.append(alert), with_critical.set())
        # a policy pointing at a rule that is not loaded: refused at its line and column
        policies.write({"contain.yaml": policy(webhook.url + "/v2", rule="Shadow reads"),
                        "other.yaml": "- policy: x\n  match: {rules: [Shadow read]}\n"
                                      "  actions: [{notify: {url: 'http://h/'}}]\n"})
        assert with_critical.wait(30), "the broken update was not reported"
        assert reloader.digest == good and not swapped.is_set()
        assert agent.handle(EVENT) == ["Shadow read"]
        assert webhook.paths == ["/v1"]  # the old policy still answers
    finally:
        reloader.stop()
        responder.stop()
    alert = critical[0]
    assert alert.rule == RELOAD_FAILED_RULE and alert.priority == Priority.CRITICAL
    assert alert.output_fields["reload.file"] == str(policies.path / "contain.yaml")
    assert (alert.output_fields["reload.line"], alert.output_fields["reload.column"]) == (2, 19)
    assert "no rule named 'Shadow reads' is loaded" in alert.output
    assert f"still enforcing the last good set (digest {good})" in alert.output
    failed = [r for r in audit.records if r.kind == RELOAD]
    assert len(failed) == 1 and failed[0].outcome == "failed"
    assert failed[0].policy_digest == good
    assert (failed[0].detail["file"], failed[0].detail["line"]) == (
        str(policies.path / "contain.yaml"), 2)
    assert loaded == [False]


def test_reported_once_then_recovers_when_fixed(mounted, webhook):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    audit = MemoryAudit()
    reloader, responder, swapped, critical, loaded = build(mounted, audit)
    good = reloader.digest
    policies.write({"contain.yaml": "- policy: broken\n  match: {rules: [Shadow read]\n"})
    assert reloader.check() == "failed"
    assert reloader.check() == "unchanged"  # not reported again every second
    assert len(critical) == 1 and reloader.digest == good
    assert critical[0].output_fields["reload.line"] >= 2
    assert "invalid YAML" in critical[0].output
    policies.write({"contain.yaml": policy(webhook.url + "/v3")})
    assert reloader.check() == "swapped"
    assert reloader.last_error is None and swapped.is_set() and loaded == [False, True]


def test_rules_update_swaps_the_engine_and_a_broken_rule_keeps_the_old(mounted, webhook):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    audit = MemoryAudit()
    reloader, _responder, _swapped, critical, _loaded = build(mounted, audit)
    before = reloader.current
    rules.write({"local_rules.yaml": RULES.replace("fd.name = /etc/shadow",
                                                   "fd.name in (/etc/shadow, /etc/gshadow)")})
    assert reloader.check() == "swapped"
    gshadow = dict(EVENT, **{"fd.name": "/etc/gshadow"})
    assert [a.rule for a in reloader.current.engine.evaluate(gshadow)] == ["Shadow read"]
    assert before.engine.evaluate(gshadow) == []  # the old engine object is untouched
    rules.write({"local_rules.yaml": RULES.replace("fd.name = /etc/shadow",
                                                   "fd.name = /etc/shadow and")})
    current = reloader.current
    assert reloader.check() == "failed"
    assert reloader.current is current
    assert critical[-1].output_fields["reload.file"] == str(rules.path / "local_rules.yaml")
    assert critical[-1].output_fields["reload.line"] == 3


def test_touched_files_do_not_swap(mounted, webhook, tmp_path):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    reloader, *_ = build(mounted, MemoryAudit())
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})  # same content, new dir
    assert reloader.check() == "same"
    assert reloader.check() == "unchanged"


def test_disabled_action_is_refused_on_reload(mounted, webhook):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    reloader, _responder, _swapped, critical, _loaded = build(
        mounted, MemoryAudit(), enabled_actions={"notify", "kill"})
    policies.write({"contain.yaml": policy(webhook.url + "/v1").replace(
        "    - notify:", "    - cordon: {}\n    - notify:")})
    assert reloader.check() == "failed"
    assert "action 'cordon' is disabled in this deployment" in critical[0].output


def test_initial_set_must_load(mounted):
    rules, policies = mounted
    policies.write({"contain.yaml": "- policy: p\n  match: {rules: [Nope]}\n"
                                    "  actions: [kill]\n"})
    with pytest.raises(BundleError) as info:
        Reloader([rules.path], [policies.path])
    assert "no rule named 'Nope'" in str(info.value)


def test_current_engine_follows_the_swap(mounted, webhook):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    reloader, *_ = build(mounted, MemoryAudit())
    engine = CurrentEngine(reloader)
    gshadow = dict(EVENT, **{"fd.name": "/etc/gshadow"})
    assert engine.evaluate(gshadow) == []
    rules.write({"local_rules.yaml": RULES.replace("fd.name = /etc/shadow",
                                                   "fd.name in (/etc/shadow, /etc/gshadow)")})
    assert reloader.check() == "swapped"
    assert [a.rule for a in engine.evaluate(gshadow)] == ["Shadow read"]
    assert engine.event_types() == reloader.current.engine.event_types()


def test_a_loader_crash_is_reported_once_like_a_refused_update(mounted, webhook, monkeypatch):
    rules, policies = mounted
    policies.write({"contain.yaml": policy(webhook.url + "/v1")})
    reloader, _responder, _swapped, critical, _loaded = build(mounted, MemoryAudit())
    good = reloader.digest

    def crash():
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(reloader, "_load", crash)
    policies.write({"contain.yaml": policy(webhook.url + "/v2")})
    assert reloader.check() == "failed"
    assert reloader.check() == "unchanged"
    assert reloader.digest == good and len(critical) == 1
    assert "internal error while loading: ZeroDivisionError('bug')" in critical[0].output
