"""Failed syscalls the probes drop (enforcer.kernel.results_filter) never hold a match: for the
bundled rules and each upstream file, generated processes (names, parents, users, command
lines taken from the rules' own literals) make failed calls of every dropped syscall, with
paths from the rules' literals, and the engine matches none of those the probe would drop.
The control: a rule about failed opens keeps them, and its events do match."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcer.kernel.results_filter import MAX_ERRNO, failures_dropped
from enforcer.resources import default_rules_dir
from enforcer.rules import nodes
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode as decode_record
from enforcer.sources.decode import pack
from enforcer.sources.probe import LPM_DATA
from enforcer.state.containers import ContainerRegistry
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.tracker import Tracker
from tests.conftest import UPSTREAM_RULES

RULESETS = {
    "bundled": [str(default_rules_dir())],
    "stable": [str(UPSTREAM_RULES / "falco_rules.yaml")],
    "incubating": [str(UPSTREAM_RULES / "falco-incubating_rules.yaml")],
    "sandbox": [str(UPSTREAM_RULES / "falco-sandbox_rules.yaml")],
    "all three": [str(UPSTREAM_RULES / f) for f in (
        "falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml")],
}
EVENTS_PER_SYSCALL = 400


def literals(engine: Engine) -> tuple[list[str], list[str]]:
    """(path-like, name-like) literal values of the enabled rules' conditions."""
    paths, names = set(), set()
    for rule in engine.rules:
        for node in nodes.walk(rule.expr):
            if not isinstance(node, nodes.Check):
                continue
            items = ([node.right] if isinstance(node.right, nodes.Value) else
                     list(node.right.items) if isinstance(node.right, nodes.ValueList)
                     else [])
            for v in items:
                (paths if v.text.startswith("/") else names).add(v.text)
    return sorted(paths), sorted(names)


def kernel_drops_open(path: str) -> bool:
    """What the probe checks before dropping a failed open (bpf/events.c via probe.py)."""
    return path.startswith("/") and len(path.encode()) + 1 <= LPM_DATA and ".." not in path


def paths_from(rng: random.Random, literal_paths: list[str]) -> Iterator[str]:
    tails = ["", "x", "id_rsa", ".ssh/authorized_keys", "shadow", "a/b/c", ".bashrc"]
    while True:
        base = rng.choice(literal_paths) if literal_paths else "/etc/shadow"
        base = base.replace("*", rng.choice(["", "x", "root"]))
        yield rng.choice([base, base.rstrip("/") + "/" + rng.choice(tails),
                          "/" + rng.choice(tails)])


class World:
    """A fake /proc and a tracker: processes made by fork+exec records, like the probes'."""

    def __init__(self, root: Path):
        root.mkdir()
        (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
        self.tracker = Tracker(StateContext(table=ProcessTable(str(root)),
                                            containers=ContainerRegistry(None),
                                            proc_root=str(root), hostname="h"))
        self.next_pid = 1000

    def spawn(self, rng: random.Random, names: list[str]) -> int:
        """A chain of up to three execs (grandparent, parent, process) with names from
        the rules; the pid of the last."""
        parent = 1
        for _ in range(rng.randint(1, 3)):
            pid = self.next_pid
            self.next_pid += 1
            self.tracker.apply(decode_record(pack(code=sc.EV_FORK, tgid=parent,
                                                  ints=(pid, parent))))
            name = rng.choice(names) if names and rng.random() < 0.8 else "worker"
            name = name[:15] or "x"
            args = tuple(rng.choice(names or ["-c"]) for _ in range(rng.randint(0, 3)))
            self.tracker.apply(decode_record(pack(
                code=sc.CODES["execve"], tgid=pid, comm=name, path1=f"/usr/bin/{name}",
                argv=(name, *args), uid=rng.choice([0, 1000]))))
            parent = pid
        return parent

    def failed_call(self, rng: random.Random, s: sc.Syscall, pid: int, path: str) -> object:
        ints = tuple(rng.choice([-100, 0, 1, 3, 0o1101, 0o2, 0o100, 0o644])
                     for _ in s.ints)
        rec = pack(code=sc.CODES[s.name], tgid=pid, ret=-rng.randint(1, MAX_ERRNO),
                   ints=ints, comm=self.tracker.table.get(pid).comm,  # type: ignore[union-attr]
                   path1=path if s.s1 else "", path2=path if s.s2 else "",
                   uid=rng.choice([0, 1000]))
        return self.tracker.apply(decode_record(rec))


@pytest.mark.parametrize("name", sorted(RULESETS))
def test_dropped_failures_never_match(name: str, tmp_path: Path) -> None:
    engine = Engine(load_rules(RULESETS[name]))
    dropped = failures_dropped(engine.rules)
    literal_paths, names = literals(engine)
    rng = random.Random(f"kernel-results-{name}")
    world = World(tmp_path / "proc")
    paths = paths_from(rng, literal_paths)
    checked = 0
    for syscall in dropped:
        s = sc.BY_NAME[syscall]
        for _ in range(EVENTS_PER_SYSCALL):
            path = next(paths)
            if s.family == "open" and not kernel_drops_open(path):
                continue
            event = world.failed_call(rng, s, world.spawn(rng, names), path)
            assert event is not None
            hits = [r.name for r in engine.matching_rules(event)]
            assert hits == [], f"{syscall} failed with {event.get('evt.res')} on {path!r}"
            checked += 1
    assert checked > 0


def test_the_stable_rules_drop_failed_opens() -> None:
    """The flood of the issue: failed opens below a watched prefix never cross."""
    engine = Engine(load_rules(RULESETS["bundled"]))
    assert {"open", "openat", "openat2"} <= set(failures_dropped(engine.rules))


CONTROL = """
- rule: Failed open of a marker
  desc: a rule about failed opens
  condition: evt.type = openat and evt.res = ENOENT and fd.name startswith /etc/marker
  output: failed open (file=%fd.name)
  priority: WARNING
"""


def test_a_rule_about_failures_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(CONTROL)
    engine = Engine(load_rules([str(tmp_path / "rules.yaml")]))
    dropped = failures_dropped(engine.rules)
    assert "openat" not in dropped and "open" in dropped
    world = World(tmp_path / "proc")
    rng = random.Random(1)
    pid = world.spawn(rng, ["cat"])
    event = world.tracker.apply(decode_record(pack(
        code=sc.CODES["openat"], tgid=pid, ret=-2, ints=(-100, 0, 0), comm="cat",
        path1="/etc/marker")))
    assert [r.name for r in engine.matching_rules(event)] == ["Failed open of a marker"]


def test_a_traversal_rule_keeps_only_failed_opens_with_dotdot(tmp_path: Path) -> None:
    """Falco's traversal rule wants failed opens whose raw path has `../`: the probe keeps
    those (and only those) for it."""
    engine = Engine(load_rules(RULESETS["stable"]))
    assert "Directory traversal monitored file read" in {r.name for r in engine.rules}
    assert {"openat"} <= set(failures_dropped(engine.rules))
    assert not kernel_drops_open("/etc/../etc/shadow")
