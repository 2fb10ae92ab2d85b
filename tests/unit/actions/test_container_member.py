"""Finding a live process of a container by its cgroups (quarantine after an in-kernel
kill): only the outermost container id of the cgroup path counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.container_member import in_container, outermost_container_id

A = "a" * 64
B = "b" * 64


@pytest.mark.parametrize("text, expected", [
    (f"0::/libpod_parent/libpod-{A}\n", A),
    (f"12:memory:/docker/{A}\n0::/system.slice/docker-{A}.scope\n", A),
    (f"0::/kubepods/besteffort/pod1/cri-containerd-{A}.scope\n", A),
    # a workload that made a cgroup named after another container below its own
    (f"0::/libpod_parent/libpod-{A}/libpod-{B}\n", A),
    ("0::/process_api/0123abcd\n", None),
    ("0::/user.slice\n", None),
    # hierarchies that disagree prove nothing
    (f"4:cpu:/docker/{A}\n0::/docker/{B}\n", None),
    # 65 hex digits is no container id
    (f"0::/x-{A}f\n", None),
])
def test_outermost_container_id(text: str, expected: str | None) -> None:
    assert outermost_container_id(text) == expected


def test_in_container_reads_the_process_cgroups(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(f"0::/libpod_parent/libpod-{A}\n")
    assert in_container(7, A, str(tmp_path))
    assert not in_container(7, B, str(tmp_path))
    assert not in_container(8, A, str(tmp_path))  # gone
