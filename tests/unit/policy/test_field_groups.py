"""`match.fields` with `not` (Talon's `!=`) and any-of / all-of groups; bad shapes are
refused at FILE:LINE:COL; the policy schema accepts what the loader accepts."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from enforcer.alert import Alert
from enforcer.errors import PolicyError
from enforcer.policy.loader import load_policies
from enforcer.policy.schema import policy_schema

POLICY = """- policy: p
  match:
    fields: {fields}
  actions: [kill: null]
"""


def alert(**fields: object) -> Alert:
    return Alert(rule="r", priority=4, output="x", time_ns=0,  # type: ignore[arg-type]
                 output_fields={k.replace("_", "."): v for k, v in fields.items()})


def load(tmp_path: Path, fields: str):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(fields=fields))
    jsonschema.validate(yaml.safe_load(path.read_text()), policy_schema())
    return load_policies([path]).policies[0].match


@pytest.mark.parametrize(("fields", "hits", "misses"), [
    ("{k8s.ns.name: {not: [kube-system, falco]}}",
     [{"k8s_ns_name": "prod"}, {}], [{"k8s_ns_name": "falco"}]),
    ("{k8s.ns.name: {in: [prod, dev], not: dev}}",
     [{"k8s_ns_name": "prod"}], [{"k8s_ns_name": "dev"}, {}]),
    ("[{k8s.ns.name: prod, proc.name: bash}, {container.id: host}]",
     [{"k8s_ns_name": "prod", "proc_name": "bash"}, {"container_id": "host"}],
     [{"k8s_ns_name": "prod", "proc_name": "sh"}]),
    ("{any_of: [{proc.name: sh}, {proc.name: {not: ['*sh']}}], k8s.ns.name: prod}",
     [{"proc_name": "sh", "k8s_ns_name": "prod"}, {"proc_name": "cat", "k8s_ns_name": "prod"}],
     [{"proc_name": "bash", "k8s_ns_name": "prod"}, {"proc_name": "sh"}]),
    ("{all_of: [{proc.name: 'b*'}, {proc.name: {not: bash}}]}",
     [{"proc_name": "busybox"}], [{"proc_name": "bash"}, {"proc_name": "sh"}]),
])
def test_not_and_groups_select_the_right_alerts(tmp_path: Path, fields: str,
                                                 hits: list[dict], misses: list[dict]) -> None:
    match = load(tmp_path, fields)
    assert [match.matches(alert(**f)) for f in hits] == [True] * len(hits)
    assert [match.matches(alert(**f)) for f in misses] == [False] * len(misses)


@pytest.mark.parametrize(("fields", "where", "message"), [
    ("{k8s.ns.name: {nt: x}}", "3:27", "takes `not`"),
    ("{any_of: {proc.name: sh}}", "3:22", "a non-empty list of mappings"),
    ("{any_of: [{proc.name: [[a]]}]}", "3:35", "fields.proc.name must be a value"),
    ("[]", "3:13", "non-empty list of mappings"),
])
def test_bad_field_conditions_are_located(tmp_path: Path, fields: str, where: str,
                                          message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(fields=fields))
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    text = "\n".join(str(d) for d in info.value.diagnostics)
    assert f"{path}:{where}:" in text and message in text, text
