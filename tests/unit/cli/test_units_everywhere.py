"""One size parser and one duration parser: `1M` (powers of 1000, as Kubernetes
quantities) and `1Mi` (powers of 1024) mean the same bytes on the command line, in an
ENFORCER_* variable, in the config file and in a policy file; so do durations."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from actions.snapshot import SnapshotParams
from enforcer.cli.config_args import reparse_with_config
from enforcer.cli.main import build_parser
from enforcer.units import parse_duration, parse_size


def agent_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    return reparse_with_config(parser, argv, parser.parse_args(argv))


@pytest.mark.parametrize(("text", "size"), [
    ("1M", 1_000_000), ("1m", 1_000_000), ("1MB", 1_000_000), ("1Mi", 1_048_576),
    ("1MiB", 1_048_576), ("100Mi", 100 * 2**20), ("1G", 10**9), ("2Gi", 2 * 2**30),
    ("512Ki", 512 * 1024), ("100kB", 100_000), ("65536", 65536), ("1.5Ki", 1536),
])
def test_one_size_means_the_same_in_flag_env_config_and_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, size: int) -> None:
    assert parse_size(text) == size
    assert agent_args(["--audit-max-bytes", text]).audit_max_bytes == size
    monkeypatch.setenv("ENFORCER_AUDIT_MAX_BYTES", text)
    assert agent_args([]).audit_max_bytes == size
    monkeypatch.delenv("ENFORCER_AUDIT_MAX_BYTES")
    config = tmp_path / "c.yaml"
    config.write_text(f"audit:\n  max_bytes: {text}\n")
    assert agent_args(["--config", str(config)]).audit_max_bytes == size
    assert SnapshotParams.from_mapping({"paths": ["/tmp"], "max_bytes": text}).max_bytes == size


@pytest.mark.parametrize("text", ["lots", "1X", "-1M", "0", "M"])
def test_a_bad_size_is_refused_on_the_command_line_with_the_units_said(
        text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        agent_args(["--audit-max-bytes", text])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--audit-max-bytes" in err and "size" in err


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("10s", 10.0), ("1m", 60.0), ("2h", 7200.0), ("1d", 86400.0), ("5", 5.0),
])
def test_one_duration_means_the_same_in_flag_env_and_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert agent_args(["--webhook-timeout", text]).webhook_timeout == seconds
    assert agent_args(["--reload-interval", text]).reload_interval == seconds
    monkeypatch.setenv("ENFORCER_WEBHOOK_TIMEOUT", text)
    assert agent_args([]).webhook_timeout == seconds
    config = tmp_path / "c.yaml"
    config.write_text(f"outputs:\n  webhooks:\n    - url: http://x/\n      timeout: {text}\n")
    assert parse_duration(agent_args(["--config", str(config)]).webhooks[0]["timeout"]) \
        == seconds


def test_zero_turns_reload_off_but_is_no_webhook_timeout(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_args(["--reload-interval", "0"]).reload_interval == 0
    with pytest.raises(SystemExit):
        agent_args(["--webhook-timeout", "0"])
    assert "positive" in capsys.readouterr().err
