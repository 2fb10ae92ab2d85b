"""Container metadata for containers that live for milliseconds: `podman run --rm` of a
single `cat /etc/shadow` can be gone before any lookup answers. The agent, with its default
settings, follows podman's event stream and sets aside the events that need a container
it does not know yet, so every alert still names the container, its image and its pod."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from enforcer.resources import default_rules_dir
from tests.system.agent_harness import LiveAgent
from tests.system.conftest import IMAGE, podman_run

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

RULE = "Read sensitive file untrusted"


@pytest.fixture(scope="module")
def agent(ebpf_ready: None, podman_ready: None) -> Iterator[LiveAgent]:
    live = LiveAgent([str(default_rules_dir())], container_lookup_timeout=None)
    yield live
    live.close()


def test_watcher_follows_the_runtime_event_stream(agent: LiveAgent) -> None:
    watcher = agent.agent.watcher
    assert watcher is not None and watcher.connected.wait(30), "podman's /events stream"


def test_every_short_lived_container_alert_carries_its_metadata(agent: LiveAgent) -> None:
    assert agent.agent.watcher is not None and agent.agent.watcher.connected.wait(30)
    for i in range(10):
        name = f"brief-{i}-{uuid.uuid4().hex[:6]}"
        marker = f"/nonexistent-{name}"  # in the command line, to find this run's alert
        res = podman_run("sh", "-c", f"cat /etc/shadow {marker}", name=name,
                         labels={"io.kubernetes.pod.name": f"pod-{i}",
                                 "io.kubernetes.pod.namespace": "shop"})
        assert res.returncode != 0 and "/etc/shadow" not in res.stderr, res.stderr
        a = agent.wait(RULE, lambda a, m=marker: m in (a.event.get("proc.cmdline") or ""))
        ev = a.event
        assert ev.get("container.id") not in (None, "host")
        registry = agent.agent.tracker.ctx.containers  # type: ignore[union-attr]
        assert ev.get("container.name") == name, (
            f"run {i}: {a.output}; lookups={registry.lookups} failures={registry.failures} "
            f"unknown={len(registry._unknown)}")
        assert ev.get("container.image") == IMAGE
        assert ev.get("container.image.repository") == "localhost/enforcer-busybox"
        assert ev.get("k8s.pod.name") == f"pod-{i}" and ev.get("k8s.ns.name") == "shop"
