"""The chart's `config:` value becomes the agent's --config file: a ConfigMap the agent's own
loader accepts, mounted where ENFORCER_CONFIG points, rolled on change; and the pod's agent
reads it under the chart's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enforcer.cli.config_args import reparse_with_config
from enforcer.cli.main import build_parser
from enforcer.config.loader import load_config
from tests.unit.chart.chart_render import container, env_of, one, render
from tests.unit.chart.test_chart_agent_args import _env, _environ

CONFIG = {
    "extra_fields": {"environment": "production"},
    "outputs": {"webhooks": [{"url": "http://falcosidekick.falco.svc:2801/",
                              "min_priority": "warning"}]},
    "tracing": {"protocol": "grpc", "endpoint": "http://otel-collector:4317",
                "batch": {"max_queue_size": 4096}},
    "guards": {"breaker": {"workloads": 3, "cooloff": "1m"}},
    "http_addr": "127.0.0.1:1",  # the chart's --http-addr flag must win over this
}


def test_no_config_no_file(kube_tools: Any, tmp_path: Path) -> None:
    objects = render(kube_tools, tmp_path)
    assert "ENFORCER_CONFIG" not in env_of(objects)
    assert not [o for o in objects if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].endswith("-config")]


def test_the_config_value_is_the_agents_config_file(kube_tools: Any, tmp_path: Path) -> None:
    objects = render(kube_tools, tmp_path, {"config": CONFIG})
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"
             and o["metadata"]["name"] == "rel-enforcer-config"]
    rendered = tmp_path / "config.yaml"
    rendered.write_text(cm["data"]["config.yaml"])
    assert load_config(rendered) == CONFIG  # the agent's loader and schema accept it

    agent = container(objects)
    env = _env(agent)
    assert env["ENFORCER_CONFIG"] == "/etc/enforcer/config/config.yaml"
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/enforcer/config" and "subPath" not in mount
    pod = one(objects, "DaemonSet")["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "rel-enforcer-config"
    checksum = pod["metadata"]["annotations"]["checksum/config"]
    other = render(kube_tools, tmp_path, {"config": {**CONFIG, "guards": {
        "breaker": {"workloads": 4}}}})
    assert one(other, "DaemonSet")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"] != checksum

    # The pod's agent: the file wins over the chart's ENFORCER_* variables, its flags win
    # over the file.
    env["ENFORCER_CONFIG"] = str(rendered)
    argv = [a.replace("$(NODE_NAME)", env["NODE_NAME"]) for a in agent["args"]]
    with _environ(env):
        parser = build_parser()
        args = reparse_with_config(parser, argv, parser.parse_args(argv))
    assert env["ENFORCER_BREAKER_WORKLOADS"] == "5" and args.breaker_workloads == 3
    assert args.breaker_cooloff == "1m" and args.breaker_window == "10m"  # from the chart
    assert args.http_addr == "0.0.0.0:9376"
    assert args.webhooks == CONFIG["outputs"]["webhooks"]
    assert args.otlp_protocol == "grpc" and args.otlp_max_queue_size == 4096


@pytest.mark.parametrize("bad", [[], "text"])
def test_the_values_schema_wants_a_mapping(kube_tools: Any, tmp_path: Path, bad: Any) -> None:
    from tests.unit.chart.chart_render import HelmError

    with pytest.raises(HelmError, match="config"):
        render(kube_tools, tmp_path, {"config": bad})
