"""A directory updated the way the kubelet updates a mounted ConfigMap (its AtomicWriter):

    policies/
      ..2026_11_23_16_20_30.000000001/   the real files of one version
      ..data -> ..2026_11_23_16_20_30.000000001
      contain.yaml -> ..data/contain.yaml

An update writes a new timestamped directory, points a temporary symlink at it, renames
that over `..data` (the atomic step), then adds/removes the user-visible symlinks and
deletes the old version."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

_SEQ = itertools.count(1)


class ConfigMapDir:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def write(self, files: dict[str, str]) -> None:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{next(_SEQ):09d}"
        version = self.path / stamp
        version.mkdir()
        for name, text in files.items():
            (version / name).write_text(text)
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.path / "..data_tmp"
        os.symlink(stamp, tmp)
        os.rename(tmp, data)
        for name in files:
            link = self.path / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        for entry in self.path.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") \
                    and entry.name not in files:
                entry.unlink()
        if old:
            shutil.rmtree(self.path / old)
