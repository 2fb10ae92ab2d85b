"""The CRI adapter against a real gRPC server on a unix socket (the server side built from the
same descriptors): answers become dicts, NOT_FOUND is None, UNIMPLEMENTED marks a socket that
is no CRI server, errors and timeouts are OSError. Only enforcer/adapters imports gRPC and
protobuf; the committed descriptors match their .proto files."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from enforcer.adapters import cri, cri_sockets
from tests.conftest import REPO, require

CID = "e4114c89f977b97848d8879b1acc37c509f612e084bff6458de4ef5d44e2ecea"
Handler = Callable[[Any, grpc.ServicerContext], Any]


class FakeRuntime:
    """A CRI server whose methods the test sets; each unset method is UNIMPLEMENTED."""

    def __init__(self, path: str):
        self.handlers: dict[str, Handler] = {}
        self.requests: list[tuple[str, Any]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([self])
        self.server.add_insecure_port(f"unix://{path}")
        self.server.start()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method.rsplit("/", 1)[-1]
        if method not in self.handlers:
            return None
        desc = cri.POOL.FindServiceByName(cri.SERVICE).FindMethodByName(method)
        request_class = cri.message_factory.GetMessageClass(desc.input_type)

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            self.requests.append((method, request))
            return self.handlers[method](request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_class.FromString,
            response_serializer=lambda m: m.SerializeToString())


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[FakeRuntime, str]]:
    path = str(tmp_path / "cri.sock")
    server = FakeRuntime(path)
    yield server, path
    server.server.stop(None)


def test_container_status_is_asked_verbose_and_answered_as_a_dict(
        runtime: tuple[FakeRuntime, str]) -> None:
    server, path = runtime

    def status(request: Any, context: grpc.ServicerContext) -> Any:
        answer = cri.message("ContainerStatusResponse")()
        answer.status.id = request.container_id
        answer.status.metadata.name = "app"
        answer.status.created_at = 1795459713815727685
        answer.status.labels["io.kubernetes.pod.name"] = "web-1"
        answer.status.mounts.add(host_path="/srv", container_path="/data", readonly=True)
        answer.info["info"] = '{"sandboxID": "abc", "pid": 42}'
        return answer

    server.handlers["ContainerStatus"] = status
    client = cri.CriClient(path, timeout=5)
    got = client.container_status(CID)
    assert server.requests[0][1].verbose is True
    assert got == {"status": {"id": CID, "metadata": {"name": "app"},
                              "created_at": "1795459713815727685",
                              "labels": {"io.kubernetes.pod.name": "web-1"},
                              "mounts": [{"host_path": "/srv", "container_path": "/data",
                                          "readonly": True}]},
                   "info": {"info": '{"sandboxID": "abc", "pid": 42}'}}
    client.close()


def test_not_found_is_none(runtime: tuple[FakeRuntime, str]) -> None:
    server, path = runtime

    def missing(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, f"container {request.container_id} not found")

    server.handlers["ContainerStatus"] = missing
    server.handlers["PodSandboxStatus"] = lambda r, c: c.abort(grpc.StatusCode.NOT_FOUND, "no")
    client = cri.CriClient(path, timeout=5)
    assert client.container_status(CID) is None
    assert client.pod_sandbox_status(CID) is None
    client.close()


def test_errors_and_timeouts_are_oserror(runtime: tuple[FakeRuntime, str]) -> None:
    server, path = runtime
    release = threading.Event()

    def slow(request: Any, context: grpc.ServicerContext) -> Any:
        release.wait(5)
        return cri.message("ContainerStatusResponse")()

    server.handlers["ContainerStatus"] = slow
    server.handlers["PodSandboxStatus"] = lambda r, c: c.abort(grpc.StatusCode.INTERNAL, "boom")
    client = cri.CriClient(path, timeout=0.2)
    with pytest.raises(cri.CriError, match="DEADLINE_EXCEEDED"):
        client.container_status(CID)
    release.set()
    with pytest.raises(OSError, match="INTERNAL: boom"):
        client.pod_sandbox_status("abc")
    client.close()


def test_a_socket_without_the_cri_is_passed_over(runtime: tuple[FakeRuntime, str],
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    server, path = runtime  # serves nothing: every CRI method is UNIMPLEMENTED
    monkeypatch.setattr(cri_sockets, "DEFAULT_SOCKETS", ())
    monkeypatch.delenv("ENFORCER_CRI_SOCKET", raising=False)
    connector = cri.CriConnector(path, timeout=5)
    client = connector.client()
    assert client is not None
    with pytest.raises(cri.CriUnimplemented):
        client.container_status(CID)
    assert connector.client() is None
    assert cri.CriConnector(str(tmp_path / "absent.sock")).client() is None
    connector.close()


def test_version_and_list(runtime: tuple[FakeRuntime, str]) -> None:
    server, path = runtime
    server.handlers["Version"] = lambda r, c: cri.message("VersionResponse")(
        runtime_name="containerd", runtime_version="1.6.20~ds1", runtime_api_version="v1")

    def listing(request: Any, context: grpc.ServicerContext) -> Any:
        answer = cri.message("ListContainersResponse")()
        answer.containers.add(id=CID, pod_sandbox_id=request.filter.pod_sandbox_id)
        return answer

    server.handlers["ListContainers"] = listing
    client = cri.CriClient(path, timeout=5)
    assert client.version()["runtime_name"] == "containerd"
    assert client.list_containers("abc") == [{"id": CID, "pod_sandbox_id": "abc"}]
    client.close()


def test_find_socket_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cri_sockets, "DEFAULT_SOCKETS", ())
    first, second = tmp_path / "a.sock", tmp_path / "b.sock"
    second.touch()
    monkeypatch.setenv("ENFORCER_CRI_SOCKET", f"unix://{second}")
    assert cri.find_socket(f"{first}:{second}") == str(second)
    first.touch()
    assert cri.find_socket(f"{first}") == str(first)
    assert cri.find_socket() == str(second)  # from the environment


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_only_adapters_import_grpc_or_protobuf() -> None:
    bad = [str(p.relative_to(REPO)) for p in sorted((REPO / "enforcer").rglob("*.py"))
           if "adapters" not in p.parts and {"grpc", "google"} & _imports(p)]
    assert not bad, f"{bad} import gRPC/protobuf; go through enforcer.adapters"


def test_committed_descriptors_match_their_proto_files() -> None:
    require(importlib.util.find_spec("grpc_tools") is not None, "grpcio-tools",
            "pip install -e '.[test]'")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_cri_descriptors.py"),
                           "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
