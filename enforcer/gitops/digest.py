"""The policy digest: one short name for the exact set of rule and policy files an agent
decides with, so that every audit record and trace can be traced back to a commit.

sha256 over, for each file in load order, its kind (rules/policies), its base name and its
bytes. Directory names are left out on purpose: the same repository checked out in CI
(`docs/gitops/example/policies/contain.yaml`) and mounted in a pod
(`/etc/enforcer/policies/contain.yaml`) has the same digest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

SHORT = 12


def digest_files(files: Iterable[tuple[str, Path]]) -> str:
    """Hex sha256 of the (kind, path) files' names and contents. Raises OSError when one
    cannot be read."""
    h = hashlib.sha256()
    for kind, path in files:
        data = Path(path).read_bytes()
        h.update(f"{kind}\0{Path(path).name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def short(digest: str) -> str:
    """The form shown in audit records, traces and `enforcer validate`: 12 hex digits."""
    return digest[:SHORT]
