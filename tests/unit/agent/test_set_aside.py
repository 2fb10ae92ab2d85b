"""The agent's event loop never waits for container metadata: an event that needs a
container the runtime has not described yet is set aside and judged again once the
metadata is in (or the hold is over), with the process as it was at the event."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

from enforcer.agent import Agent
from enforcer.alert import Alert
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.containers import ContainerRegistry
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.tracker import Tracker

CID = "127a8590207428f1c575b1d4646d8239c264dc1afc2272c463f3f5f5cf152076"
DOC = {"Name": "/web-1-app", "Config": {"Image": "shop/web:1.2",
                                        "Labels": {"io.kubernetes.pod.name": "web-1"}}}
RULES = """
- rule: Shadow read in web
  desc: the condition needs the container's name
  condition: evt.type=openat and fd.name=/etc/shadow and container.name=web-1-app
  output: shadow read (pod=%k8s.pod.name proc=%proc.name)
  priority: WARNING
- rule: Passwd read anywhere
  desc: only the output needs the container
  condition: evt.type=openat and fd.name=/etc/passwd
  output: passwd read (container=%container.name proc=%proc.name)
  priority: NOTICE
"""


def _state(tmp_path: Path, inspect: Any, hold: float, cgroup: str | None = None) -> Tracker:
    """A tracker over a fake /proc holding one `sh` (pid 200) in the given cgroup (by
    default a podman container's, CID)."""
    root = tmp_path / "proc"
    d = root / "200"
    d.mkdir(parents=True)
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    (d / "stat").write_text("200 (sh) S 1 200 200 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0")
    (d / "cmdline").write_bytes(b"sh\0")
    (d / "status").write_text("Name:\tsh\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    (d / "cgroup").write_text(cgroup if cgroup is not None
                              else f"0::/libpod_parent/libpod-{CID}\n")
    (d / "cwd").symlink_to("/")
    table = ProcessTable(str(root))
    table.seed()
    return Tracker(StateContext(table=table, containers=ContainerRegistry(inspect, hold=hold),
                                proc_root=str(root), hostname="h"))


def _agent(tmp_path: Path, inspect: Any, hold: float) -> tuple[Agent, list[Alert]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    engine = Engine(load_rules([str(rules)]), hostname="h")
    alerts: list[Alert] = []
    agent = Agent(engine, on_alert=alerts.append, stderr=io.StringIO(),
                  container_lookup_timeout=hold)
    agent.tracker = _state(tmp_path, inspect, hold)
    return agent, alerts


def _records() -> list[dict[str, Any]]:
    return [decode(pack(code=sc.EV_FORK, tgid=200, ints=(201, 200))),
            decode(pack(code=sc.CODES["execve"], tgid=201, comm="cat", path1="/bin/cat",
                        argv=("cat", "/etc/shadow"))),
            decode(pack(code=sc.CODES["openat"], tgid=201, comm="cat", ret=3,
                        ints=(-100, 0, 0), path1="/etc/shadow")),
            decode(pack(code=sc.CODES["openat"], tgid=201, comm="cat", ret=4,
                        ints=(-100, 0, 0), path1="/etc/passwd")),
            # the same process execs something else: the set-aside events keep "cat"
            decode(pack(code=sc.CODES["execve"], tgid=201, comm="sleep", path1="/bin/sleep",
                        argv=("sleep", "1")))]


def test_events_wait_for_the_metadata_without_holding_the_loop(tmp_path: Path) -> None:
    gate, answered = threading.Event(), threading.Event()

    def inspect(full_id: str) -> dict[str, Any]:
        gate.wait(10)  # a loop that waited for this would get it back only after 10 s
        answered.set()
        return DOC

    agent, alerts = _agent(tmp_path, inspect, hold=30.0)
    agent._handle(_records())
    # the loop went on while the runtime had not answered: nothing waited for inspect
    assert not answered.is_set()
    assert alerts == [] and len(agent._aside) == 2
    agent._take_back()
    assert alerts == []  # still not described, hold not over
    gate.set()
    deadline = time.monotonic() + 10
    while agent._aside and time.monotonic() < deadline:
        agent._take_back()
        time.sleep(0.01)
    assert [a.rule for a in alerts] == ["Shadow read in web", "Passwd read anywhere"]
    assert alerts[0].output == "shadow read (pod=web-1 proc=cat)"
    assert alerts[1].output == "passwd read (container=web-1-app proc=cat)"
    assert alerts[0].event.get("k8s.pod.name") == "web-1"


def test_after_the_hold_events_are_judged_with_what_is_known(tmp_path: Path) -> None:
    def inspect(full_id: str) -> dict[str, Any]:
        raise OSError("runtime down")

    agent, alerts = _agent(tmp_path, inspect, hold=0.2)
    agent._handle(_records())
    assert alerts == [] and len(agent._aside) == 2
    deadline = time.monotonic() + 10  # the hold is over after 0.2 s: wait for it
    while agent._aside and time.monotonic() < deadline:
        agent._take_back()
        time.sleep(0.01)
    assert agent._aside == []
    # without the name, the first rule cannot match; the second fires without it
    assert [a.rule for a in alerts] == ["Passwd read anywhere"]
    assert alerts[0].output == "passwd read (container=<NA> proc=cat)"
