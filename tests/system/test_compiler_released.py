"""The live eBPF agent compiles its probes in a short-lived child: the agent process never
maps LLVM, clang or libbcc (60 MB resident before anything is compiled, another 120 MB
after), the child is gone once the agent is ready, and the programs it loaded, attached
in the child, are the agent's: a read of /etc/shadow is still detected."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import REPO
from tests.system.conftest import require_ebpf

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

RULE = "Read sensitive file untrusted"
COMPILER_LIBRARIES = ("libLLVM", "libclang", "libbcc")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    require_ebpf()
    work = tmp_path_factory.mktemp("compiler-released")
    audit = work / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENFORCER_"))}
    env.update(PYTHONPATH=str(REPO), PYTHONPROFILEIMPORTTIME="1")
    argv = [sys.executable, "-m", "enforcer", "--dry-run", "--http-addr", "127.0.0.1:0",
            "--audit-log", str(audit), "--state-dir", str(work / "state"),
            "--snapshot-dir", str(work / "snapshots"), "--reload-interval", "0"]
    agent = AgentProcess(argv, env, work, audit)
    try:
        yield agent
    finally:
        code = agent.stop()
        assert code == 0, agent.stderr[-3000:]


def test_the_agent_never_maps_the_compiler(agent: AgentProcess) -> None:
    maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
    assert [lib for lib in COMPILER_LIBRARIES if lib in maps] == []
    imports = [line for line in agent.stderr.splitlines() if line.startswith("import time:")]
    assert imports, "the agent's import trace is missing"
    assert not [line for line in imports if line.rstrip().endswith(("| bcc", "| bcc.libbcc"))]


def test_the_compiling_child_is_gone(agent: AgentProcess) -> None:
    children = set()
    for task in Path(f"/proc/{agent.proc.pid}/task").iterdir():
        children |= set((task / "children").read_text().split())
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children
                if Path(f"/proc/{pid}").exists()]
    assert not [c for c in commands if b"bcc_loader" in c]


def test_programs_loaded_by_the_child_still_detect(agent: AgentProcess) -> None:
    marker = f"/tmp/enforcer-compiler-released-{uuid.uuid4().hex[:10]}"
    subprocess.run(["sh", "-c", f"cat /etc/shadow {marker} >/dev/null 2>&1; true"],
                   check=False)
    alert = agent.wait(f"the alert for {marker}", lambda: [
        a for a in agent.alerts()
        if a["rule"] == RULE and marker in (a["output_fields"].get("proc.cmdline") or "")])
    assert alert
