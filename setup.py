"""Package layout that pyproject.toml cannot express: top-level bpf/ and policies/ ship inside
the wheel as enforcer._bpf and enforcer._policies."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["enforcer", "enforcer.*", "actions", "actions.*"])
    + ["enforcer._bpf", "enforcer._policies"],
    package_dir={"enforcer._bpf": "bpf", "enforcer._policies": "policies"},
)
