"""The Kubernetes Container Runtime Interface (CRI, runtime.v1 over gRPC on a unix socket)
of containerd and cri-o: container and pod sandbox status, with a hard timeout per call.

Answers are returned as plain dicts (protobuf's JSON mapping with the .proto field names:
`image_ref`, `pod_sandbox_id`; 64-bit integers as strings; enums by name; fields at their
default value absent), so nothing above this adapter sees protobuf or gRPC.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory

from enforcer.adapters.cri_descriptor import SERIALIZED
from enforcer.adapters.cri_sockets import candidates, find_socket

__all__ = ["CriClient", "CriConnector", "CriError", "CriUnimplemented", "find_socket",
           "message"]

SERVICE = "runtime.v1.RuntimeService"

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(SERIALIZED)


def message(name: str) -> Any:
    """The message class `runtime.v1.<name>`, built from our descriptor."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"runtime.v1.{name}"))


class CriError(OSError):
    """The runtime could not be asked, or answered with an error."""


class CriUnimplemented(CriError):
    """Whatever serves this socket does not implement the CRI (e.g. the containerd under
    docker, whose CRI plugin is disabled)."""


def to_dict(msg: Any) -> dict[str, Any]:
    """A message as protobuf's JSON mapping, with the .proto field names."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


class CriClient:
    """One gRPC channel to one runtime's CRI socket; safe to share between threads."""

    def __init__(self, socket_path: str, timeout: float = 0.5):
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            # CRI answers are small; containerd's verbose `info` (the whole OCI spec) is the
            # largest, a few tens of KiB
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
        self._calls: dict[str, Any] = {}
        self._lock = threading.Lock()

    unimplemented = False  # set when the socket answers UNIMPLEMENTED: not a CRI server

    def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        with self._lock:
            call = self._calls.get(method)
            if call is None:
                desc = POOL.FindServiceByName(SERVICE).FindMethodByName(method)
                reply = message_factory.GetMessageClass(desc.output_type)
                call = self._channel.unary_unary(
                    f"/{SERVICE}/{method}", request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=reply.FromString)
                self._calls[method] = call
        try:
            return call(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.NOT_FOUND:
                raise _NotFound(detail) from None
            kind = CriError
            if code == grpc.StatusCode.UNIMPLEMENTED:
                kind, self.unimplemented = CriUnimplemented, True
            raise kind(f"CRI {method} on {self.socket_path}: "
                       f"{code.name if code else 'error'}: {detail}") from None

    def version(self, timeout: float | None = None) -> dict[str, Any]:
        """Version: runtime_name ("containerd", "cri-o"), runtime_version, ..."""
        return to_dict(self._call("Version", message("VersionRequest")(version="v1"), timeout))

    def container_status(self, container_id: str, timeout: float | None = None
                         ) -> dict[str, Any] | None:
        """ContainerStatus(verbose=true): {"status": {...}, "info": {key: JSON text}}, or
        None when the runtime has no such container."""
        req = message("ContainerStatusRequest")(container_id=container_id, verbose=True)
        try:
            return to_dict(self._call("ContainerStatus", req, timeout))
        except _NotFound:
            return None

    def pod_sandbox_status(self, sandbox_id: str, timeout: float | None = None
                           ) -> dict[str, Any] | None:
        """PodSandboxStatus: {"status": {...}}, or None when there is no such sandbox."""
        req = message("PodSandboxStatusRequest")(pod_sandbox_id=sandbox_id)
        try:
            return to_dict(self._call("PodSandboxStatus", req, timeout))
        except _NotFound:
            return None

    def list_containers(self, sandbox_id: str | None = None, timeout: float | None = None
                        ) -> list[dict[str, Any]]:
        """ListContainers, of one sandbox or all."""
        req = message("ListContainersRequest")()
        if sandbox_id:
            req.filter.pod_sandbox_id = sandbox_id
        return to_dict(self._call("ListContainers", req, timeout)).get("containers", [])

    def close(self) -> None:
        self._channel.close()


class _NotFound(Exception):
    pass


class CriConnector:
    """The CRI client to use now: the socket is looked for at each use (the runtime may
    start, or its socket appear, after the agent), one client is kept per socket, and a socket
    found not to serve the CRI is passed over from then on."""

    def __init__(self, explicit: str | None = None, timeout: float = 0.5):
        self.explicit = explicit
        self.timeout = timeout
        self._clients: dict[str, CriClient] = {}
        self._lock = threading.Lock()

    def client(self) -> CriClient | None:
        """A client for the first CRI socket present, or None when there is none."""
        for path in candidates(self.explicit):
            if not os.path.exists(path):
                continue
            with self._lock:
                client = self._clients.get(path)
                if client is None:
                    client = self._clients[path] = CriClient(path, self.timeout)
            if not client.unimplemented:
                return client
        return None

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
