"""The CLI starts from this checkout and finds its bundled files."""

from __future__ import annotations

import subprocess

from enforcer import __version__, resources


def test_version_flag(enforcer_cmd, cli_env):
    out = subprocess.run(enforcer_cmd + ["--version"], capture_output=True, text=True,
                         env=cli_env, check=True)
    assert out.stdout.strip() == f"enforcer {__version__}"


def test_no_command_is_a_usage_error(enforcer_cmd, cli_env):
    out = subprocess.run(enforcer_cmd + ["no-such-command"], capture_output=True, text=True,
                         env=cli_env)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_bundled_rules_are_the_upstream_stable_file():
    bundled = resources.default_rules_dir() / "falco_rules.yaml"
    upstream = resources.policies_dir().parent / "tests/data/falco-rules/falco_rules.yaml"
    assert bundled.read_bytes() == upstream.read_bytes()
