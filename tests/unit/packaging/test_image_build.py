"""The container image recipe, checked offline.

No container engine can build the image here (no docker; podman would need the base image from
a registry), so this tests what can be tested without one:
- the Containerfile: stages, Debian packages (looked up in this Debian 12 machine's apt lists),
  the build context it copies, the entrypoint and the bundled-rules path the chart relies on;
- its build and install steps, run for real on this host: `pip wheel` of exactly the files the
  Containerfile copies, then an install into a fresh `--system-site-packages` venv of Debian's
  python3 from those wheels alone, as the runtime stage does. The installed agent must find its
  BPF sources and policies inside site-packages, not in a checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, require

CONTAINERFILE = REPO / "Containerfile"
DEBIAN_PYTHON = Path("/usr/bin/python3")
# The directory charts/enforcer passes as `--rules` for the bundled rules.
CHART_BUNDLED_RULES = "/usr/share/enforcer/rules"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_containerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and build stages (instruction keyword, argument text)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Containerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        keyword = keyword.upper()
        rest = " ".join(rest.split())
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)),
                          words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line, split on `&&` and `;` outside quotes."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def apt_installed(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for run in stage.args("RUN"):
        for words in shell_commands(run):
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def venv_install(stage: Stage) -> str:
    (run,) = [run for run in stage.args("RUN") if "python3 -m venv" in run]
    return run


@pytest.fixture(scope="module")
def recipe() -> tuple[dict[str, str], list[Stage]]:
    return parse_containerfile(CONTAINERFILE.read_text())


def test_two_stages_from_debian_bookworm(recipe):
    global_args, stages = recipe
    assert len(stages) == 2
    assert stages[0].name == "build"
    for stage in stages:
        debian = r"(docker\.io/library/)?debian:bookworm(-slim)?"
        assert re.fullmatch(debian, stage.base), stage.base


def test_runtime_installs_bcc_from_debian(recipe):
    _, (build, runtime) = recipe
    assert {"python3", "python3-bpfcc", "bpfcc-tools", "libbpfcc", "kmod",
            "python3-venv"} <= apt_installed(runtime)
    assert "python3-bpfcc" not in apt_installed(build)  # the build stage needs no bcc
    for run in build.args("RUN") + runtime.args("RUN"):
        if "apt-get install" in run:
            assert "--no-install-recommends" in run
            assert "rm -rf /var/lib/apt/lists/*" in run


def test_debian_packages_exist_in_bookworm(recipe):
    """Every package the image installs is known to this Debian 12 (bookworm) machine's apt."""
    require(shutil.which("apt-cache") is not None and Path("/etc/debian_version").is_file(),
            "apt-cache of a Debian machine is not available", "run on Debian 12")
    require(Path("/etc/debian_version").read_text().startswith("12."),
            "this machine is not Debian 12 (bookworm)", "run on Debian 12")
    def known(package: str) -> bool:
        out = subprocess.run(["apt-cache", "show", "--no-all-versions", package],
                             capture_output=True, text=True)
        return out.returncode == 0 and bool(out.stdout.strip())

    # no package lists at all is the machine's state; a package they lack is the recipe's bug
    require(known("python3"), "apt has no package lists",
            "apt-get update (scripts/setup.sh runs apt-get install)")
    _, stages = recipe
    unknown = [p for p in sorted(set().union(*(apt_installed(s) for s in stages)))
               if not known(p)]
    assert not unknown, f"packages Debian 12 does not have: {unknown}"


def test_wheel_is_built_then_installed_into_a_system_site_packages_venv(recipe):
    _, (build, runtime) = recipe
    # with the postgresql extra: psycopg for --store postgresql://… (imported only then)
    assert any(re.search(r"pip wheel --wheel-dir /wheels '\.\[postgresql\]'$", run)
               for run in build.args("RUN"))
    assert "--from=build /wheels /tmp/wheels" in runtime.args("COPY")
    install = venv_install(runtime)
    assert "python3 -m venv --system-site-packages /opt/enforcer" in install
    assert ("pip install --no-cache-dir --no-index --find-links /tmp/wheels "
            "'enforcer[postgresql]'") in install
    assert 'python -c "import bcc"' in install


def test_entrypoint_is_the_venv_console_script(recipe):
    _, (_, runtime) = recipe
    (entrypoint,) = runtime.args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/enforcer/bin/enforcer"]
    assert "9376" in runtime.args("EXPOSE")


def test_bundled_rules_are_linked_where_the_chart_expects_them(recipe):
    _, (_, runtime) = recipe
    install = venv_install(runtime)
    assert re.search(r"bundled=\$\(.*policies_dir\(\).*\)", install)
    assert 'ln -s "$bundled" /usr/share/enforcer' in install
    assert CHART_BUNDLED_RULES == "/usr/share/enforcer/rules"
    assert f"test -f {CHART_BUNDLED_RULES}/falco_rules.yaml" in install
    daemonset = (REPO / "charts/enforcer/templates/daemonset.yaml").read_text()
    assert CHART_BUNDLED_RULES in daemonset


def build_context(stage: Stage) -> list[str]:
    """Repository paths the build stage copies in (COPY without --from)."""
    sources: list[str] = []
    for copy in stage.args("COPY"):
        words = copy.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    return sources


def test_build_context_copies_what_setup_py_packages(recipe):
    _, (build, _) = recipe
    context = build_context(build)
    assert set(context) == {"pyproject.toml", "setup.py", "README.md", "enforcer", "actions",
                            "bpf", "policies"}
    ignored = {line.strip() for line in (REPO / ".containerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & set(context)


def _bpf_sources() -> list[Path]:
    return sorted(p for p in (REPO / "bpf").rglob("*") if p.suffix in (".c", ".h"))


def _shipped_files(root: str) -> set[str]:
    base = REPO / root
    return {str(p.relative_to(base)) for p in base.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def built_wheels(recipe, tmp_path_factory) -> Path:
    """`pip wheel` of exactly the build context the Containerfile copies, as its build stage."""
    _, (build, _) = recipe
    work = tmp_path_factory.mktemp("image-build")
    src = work / "src"
    src.mkdir()
    for name in build_context(build):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    wheels = work / "wheels"
    # Without build isolation: setuptools and wheel come from the test venv, so the build
    # itself needs no index; dependencies come from pip's cache or the index.
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation",
                          "--disable-pip-version-check", "-q", "--wheel-dir", str(wheels),
                          str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return wheels


def _enforcer_wheel(wheels: Path) -> Path:
    (wheel,) = wheels.glob("enforcer-*.whl")
    return wheel


def test_wheel_ships_bpf_sources_and_policies(built_wheels):
    names = set(zipfile.ZipFile(_enforcer_wheel(built_wheels)).namelist())
    # Every BPF source of the checkout (none until the eBPF source lands: then this bites).
    bpf = {f"enforcer/_bpf/{p.relative_to(REPO / 'bpf')}" for p in _bpf_sources()}
    assert bpf <= names, f"missing from the wheel: {sorted(bpf - names)}"
    policies = {f"enforcer/_policies/{rel}" for rel in _shipped_files("policies")}
    assert "enforcer/_policies/rules/falco_rules.yaml" in policies
    assert policies <= names, f"missing from the wheel: {sorted(policies - names)}"


def test_wheel_ships_every_file_of_the_packages(built_wheels):
    """Grammars, templates and static assets under enforcer/ and actions/ need package-data."""
    names = set(zipfile.ZipFile(_enforcer_wheel(built_wheels)).namelist())
    for package in ("enforcer", "actions"):
        files = {f"{package}/{rel}" for rel in _shipped_files(package)}
        assert files <= names, f"missing from the wheel (package-data?): {sorted(files - names)}"


@pytest.fixture(scope="module")
def installed_venv(built_wheels, tmp_path_factory) -> Path:
    """The runtime stage's install: a --system-site-packages venv fed only the built wheels."""
    require(DEBIAN_PYTHON.is_file(), "Debian's /usr/bin/python3 is missing",
            "apt-get install python3")
    venv = tmp_path_factory.mktemp("runtime") / "opt-enforcer"
    subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, capture_output=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "--disable-pip-version-check", "-q", "--no-index",
         "--find-links", str(built_wheels), "enforcer"],
        capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_installed_agent_runs_with_debian_bcc(installed_venv, tmp_path):
    venv = installed_venv
    env = clean_env()
    version = subprocess.run([str(venv / "bin/enforcer"), "--version"], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("enforcer ")
    # Debian's own python3 importing bcc is the prerequisite; the venv failing to is a bug
    host = subprocess.run([str(DEBIAN_PYTHON), "-c", "import bcc"], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    require(host.returncode == 0, "Debian's python3-bpfcc is not installed",
            "apt-get install python3-bpfcc")
    bcc = subprocess.run([str(venv / "bin/python"), "-c", "import bcc"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert bcc.returncode == 0, bcc.stderr


def test_installed_agent_finds_its_bundled_files_in_site_packages(installed_venv, tmp_path):
    venv = installed_venv
    env = clean_env()
    probe = ("import json; from enforcer import resources as r; print(json.dumps({"
             "'bpf': str(r.bpf_dir()), 'rules': str(r.default_rules_dir())}))")
    out = subprocess.run([str(venv / "bin/python"), "-c", probe], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    paths = {k: Path(v) for k, v in json.loads(out.stdout).items()}
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert paths["bpf"] == site / "enforcer/_bpf"
    assert paths["rules"] == site / "enforcer/_policies/rules"
    assert (paths["rules"] / "falco_rules.yaml").is_file()
    if _bpf_sources():
        assert {p.name for p in _bpf_sources()} <= {p.name for p in paths["bpf"].iterdir()}
