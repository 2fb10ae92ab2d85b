"""The DaemonSet's command line and environment, as helm renders them, are what the agent's
real argument parser accepts and understands: no flag the agent lacks, no variable it
ignores."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enforcer.cli.main import build_parser
from tests.conftest import REPO
from tests.unit.chart.chart_render import container, render

NODE = "node-7"
SECRET = "from-a-secret"
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "acting-with-inline-rules-and-policies": {
        "dryRun": False,
        "rules": {"inline": {"extra.yaml": "- list: extra_binaries\n  items: [nc]\n"}},
        "policies": {"inline": {"contain.yaml": "- policy: p\n  match: {rules: [x]}\n"
                                                "  actions: [{kill: {}}]\n"}},
    },
    "console-otel-and-extra-args": {
        "ui": {"enabled": True, "tokenSecret": "ui-token"},
        "otel": {"endpoint": "http://otel-collector:4317", "headersSecret": "otel-headers"},
        "policies": {"existingConfigMap": "gitops-policies"},
        "extraArgs": ["--webhook", "http://falcosidekick:2801/", "--extra-field",
                      "environment=production", "--min-priority", "warning"],
    },
}


def _env(agent: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would give it (downward API and secrets
    filled in, $(VAR) references expanded in order)."""
    env: dict[str, str] = {}
    for item in agent.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)),
                           str(item["value"]))
        elif "fieldRef" in item.get("valueFrom", {}):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            value = {"spec.nodeName": NODE, "metadata.namespace": "security",
                     "metadata.name": "rel-enforcer-abcde"}[path]
        else:
            value = SECRET
        env[item["name"]] = value
    return env


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith(("ENFORCER_", "OTEL_"))
                     or n in ("NODE_NAME", "POD_NAME", "POD_NAMESPACE")]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        yield


def parse_like_the_pod(agent: dict[str, Any]) -> argparse.Namespace:
    env = _env(agent)
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in agent["args"]]
    with _environ(env):
        parser = build_parser()  # defaults read the environment when the parser is built
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                return parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the agent's parser refuses the chart's args {argv}:\n{err.getvalue()}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_agent_parses_the_daemonsets_args(kube_tools: Any, tmp_path: Path,
                                               variant: str) -> None:
    values = VARIANTS[variant]
    agent = container(render(kube_tools, tmp_path, values))
    args = parse_like_the_pod(agent)
    env = _env(agent)
    assert args.command is None  # the live agent, no subcommand
    assert args.dry_run is values.get("dryRun", True)
    assert args.node_name == NODE
    assert args.http_addr == "0.0.0.0:9376"
    assert args.source == "ebpf"
    assert args.host_proc == "/host/proc"
    assert args.store == env["ENFORCER_STORE"]
    assert args.audit_log == env["ENFORCER_AUDIT_LOG"]
    assert args.ui is bool(values.get("ui", {}).get("enabled"))
    if "policies" in values:
        assert args.policies == ["/etc/enforcer/policies"]
    if "rules" in values:
        assert args.rules == ["/usr/share/enforcer/rules", "/etc/enforcer/rules"]
    if "extraArgs" in values:
        assert args.webhook_url == "http://falcosidekick:2801/"
        assert args.extra_field == ["environment=production"]
        assert args.min_priority.name == "WARNING"  # Falco's `priority`: rules below it off

    # What the agent derives from that environment must hold too.
    from enforcer.cli.agent_wiring import enabled_actions  # noqa: PLC0415
    from enforcer.http_server import parse_addr  # noqa: PLC0415

    with _environ(env):
        allowed = enabled_actions(args)
    assert allowed == set(env["ENFORCER_ENABLED_ACTIONS"].split(","))
    assert parse_addr(args.http_addr) == ("0.0.0.0", 9376)


def test_every_variable_the_chart_sets_is_read_by_the_agent(kube_tools: Any,
                                                            tmp_path: Path) -> None:
    values = VARIANTS["console-otel-and-extra-args"]
    names = set(_env(container(render(kube_tools, tmp_path, values))))
    source = "\n".join(p.read_text() for p in (REPO / "enforcer").rglob("*.py"))
    # OTEL_* are read by the OpenTelemetry SDK; POD_* feed OTEL_RESOURCE_ATTRIBUTES.
    ours = {n for n in names if not n.startswith("OTEL_") and n not in ("POD_NAME",
                                                                         "POD_NAMESPACE")}
    unread = sorted(n for n in ours if f'"{n}"' not in source)
    assert not unread, f"the chart sets variables the agent never reads: {unread}"
