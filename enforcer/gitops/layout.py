"""Which files of a policy repository are rules, which are response policies, which are
test cases.

A directory holding a `rules/` or `policies/` subdirectory is a GitOps policy repository
(see docs/gitops): its rules are `rules/*.yaml`, its policies `policies/*.yaml`, its test
cases `tests/*.yaml`. Any other file, or file of another directory, is classified by its
content: a YAML list whose first item is a mapping with a `policy` key is a policy file,
anything else is a rule file (so plain Falco rule files keep behaving as before)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_DIRS = ("rules", "policies")
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Layout:
    """Rule and policy paths in load order, test case files, and the repositories found."""

    rules: list[Path] = field(default_factory=list)
    policies: list[Path] = field(default_factory=list)
    tests: list[Path] = field(default_factory=list)
    repositories: list[Path] = field(default_factory=list)

    @property
    def has_policies(self) -> bool:
        return bool(self.policies or self.repositories)


def is_repository(path: Path) -> bool:
    """A directory laid out as a policy repository (`rules/` or `policies/` inside)."""
    return path.is_dir() and any((path / d).is_dir() for d in REPO_DIRS)


def yaml_files(directory: Path) -> list[Path]:
    """*.yaml and *.yml files of a directory, sorted by name (the loaders' order). Hidden
    entries are skipped: a mounted ConfigMap keeps its real files under `..data/`."""
    return sorted(p for p in directory.iterdir()
                  if p.suffix in YAML_SUFFIXES and not p.name.startswith(".") and p.is_file())


def classify(paths: Iterable[str | Path]) -> Layout:
    """Sort the paths given on a command line into rules, policies and tests."""
    layout = Layout()
    for raw in paths:
        path = Path(raw)
        if is_repository(path):
            layout.repositories.append(path)
            for name, bucket in (("rules", layout.rules), ("policies", layout.policies),
                                 ("tests", layout.tests)):
                if (path / name).is_dir():
                    bucket.extend(yaml_files(path / name))
            continue
        files = yaml_files(path) if path.is_dir() else [path]
        for file in files:
            (layout.policies if is_policy_file(file) else layout.rules).append(file)
    return layout


def is_policy_file(path: Path) -> bool:
    """True when the file is a YAML list whose first item is a mapping with a `policy` key.

    Reads YAML events only to the end of that first item, so a large rule file costs
    nothing; a file that is not valid YAML is left to the rules loader, which reports where
    it breaks."""
    try:
        with open(path, encoding="utf-8") as handle:
            return _first_item_keys(yaml.parse(handle, Loader=yaml.SafeLoader)) & {"policy"} \
                == {"policy"}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


def _first_item_keys(events: Iterable[yaml.Event]) -> set[str]:
    depth = 0
    keys: set[str] = set()
    expect_key = True
    for event in events:
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if depth == 0 and isinstance(event, yaml.MappingStartEvent):
                return set()  # a mapping at the top: neither format
            if depth == 1 and isinstance(event, yaml.SequenceStartEvent):
                return set()
            if depth == 2:
                expect_key = True  # a nested value ends; the next scalar is a key
            depth += 1
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1
            if depth == 1:
                return keys  # end of the first item
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            if depth == 1:
                return set()  # the first item is a scalar
            if depth == 2:
                if expect_key and isinstance(event, yaml.ScalarEvent):
                    keys.add(event.value)
                expect_key = not expect_key
    return keys


def load_paths(layout: Layout, bundled_rules: bool = True) -> tuple[list[Path], list[Path]]:
    """(rule paths, policy paths) to load. The bundled rules come first for a repository
    (as the chart's `rules.bundled: true` does on the agent) and when no rule file is given,
    so that policies can name the rules the agent ships."""
    rules = list(layout.rules)
    if bundled_rules and (layout.repositories or not rules):
        from enforcer.resources import default_rules_dir
        rules.insert(0, default_rules_dir())
    return rules, list(layout.policies)
