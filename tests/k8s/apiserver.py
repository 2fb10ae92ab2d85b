"""A small Kubernetes API server for tests: real paths, verbs, status codes and Status
bodies for the objects enforcer's actions touch (pods, nodes, NetworkPolicies, and the
core/v1 Events it records, checked as the API server validates them), with
server-side dryRun=All, merge/strategic-merge patches, and scripted faults (429 with
Retry-After, 503) to exercise retries. Driven through the real `kubernetes` client.

Like the real server it answers 401 to a request without the bearer token it was given
(`ApiServer(token=...)`), and 422 with a Status naming the field to a body it would reject
(label keys and values, taints, NetworkPolicy specs). Every request is recorded with the
time it arrived and the code it got."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
NODE = re.compile(r"^/api/v1/nodes/([^/]+)$")
NETPOLS = re.compile(r"^/apis/networking.k8s.io/v1/namespaces/([^/]+)/networkpolicies$")
NETPOL = re.compile(r"^/apis/networking.k8s.io/v1/namespaces/([^/]+)/networkpolicies/([^/]+)$")
EVENTS = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def status_body(code: int, reason: str, message: str, kind: str = "", name: str = "") -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason,
            "details": {"name": name, "kind": kind}, "code": code}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeCluster:
    def __init__(self, token: str | None = None) -> None:
        self.token = token  # the bearer token every request must carry (None: any)
        self.pods: dict[tuple[str, str], dict] = {}
        self.nodes: dict[str, dict] = {}
        self.netpols: dict[tuple[str, str], dict] = {}
        self.events: list[dict] = []
        self.requests: list[dict[str, Any]] = []
        self.faults: list[tuple[str, str, int, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.version = 100

    def add_pod(self, namespace: str, name: str, node: str, labels: dict | None = None,
                ip: str = "10.0.0.5") -> None:
        self.pods[(namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                         "uid": f"uid-{namespace}-{name}", "resourceVersion": "1"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip}}

    def add_node(self, name: str, taints: list[dict[str, str]] | None = None) -> None:
        """A node, with the taints it already has (kept by a cordon's patch, or not)."""
        self.nodes[name] = {"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": name, "labels": {}, "resourceVersion": "1"},
                            "spec": {"taints": copy.deepcopy(taints)} if taints else {}}

    def fail_next(self, method: str, path: str, code: int, headers: dict | None = None,
                  ) -> None:
        """The next request with this method and path gets `code` (then normal service)."""
        self.faults.append((method, path, code, headers or {}))

    def mutations(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] in ("POST", "PATCH", "DELETE", "PUT")]


def event_problems(namespace: str, body: Any) -> str:
    """What the API server's validation of a core/v1 Event create would refuse ("" if
    nothing): the namespace of the event and of its object agree, a name, and — for an Event
    with eventTime set — reportingComponent, reportingInstance, action and reason, within
    their length limits."""
    if not isinstance(body, dict) or body.get("kind") not in (None, "Event"):
        return "not an Event"
    meta = body.get("metadata") or {}
    involved = body.get("involvedObject") or {}
    problems = []
    if not (meta.get("name") or meta.get("generateName")):
        problems.append("metadata.name: Required value")
    if meta.get("namespace") not in (None, namespace):
        problems.append("metadata.namespace: does not match the namespace of the request")
    if involved.get("namespace") != namespace:
        problems.append("involvedObject.namespace: does not match event.namespace")
    if not involved.get("kind") or not involved.get("name"):
        problems.append("involvedObject: kind and name required")
    if body.get("eventTime"):
        for key, limit in (("reportingComponent", 128), ("reportingInstance", 128),
                           ("action", 128), ("reason", 128)):
            if not body.get(key):
                problems.append(f"{key}: Required value")
            elif len(body[key]) > limit:
                problems.append(f"{key}: longer than {limit}")
    if len(body.get("message") or "") > 1024:
        problems.append("note: longer than 1024")
    if body.get("type") not in (None, "Normal", "Warning"):
        problems.append("type: Unsupported value")
    return "; ".join(problems)


# The API server's syntax for label keys (optional DNS-subdomain prefix / name) and values.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
PROTOCOLS = ("TCP", "UDP", "SCTP")


def label_problems(labels: Any, where: str = "metadata.labels") -> list[str]:
    """What the API server's label validation refuses in `labels` (a None value, in a
    merge patch, removes the label and is fine)."""
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"{where}: Invalid value: must be a map"]
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (not _LABEL_NAME.match(name) or len(name) > 63
                or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))):
            problems.append(f"{where}: Invalid value: {key!r}: name part must consist of "
                            "alphanumeric characters, '-', '_' or '.' (at most 63)")
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 63 or (
                value and not _LABEL_NAME.match(value)):
            problems.append(f"{where}: Invalid value: {value!r}: a valid label must be an "
                            "empty string or consist of alphanumeric characters, '-', '_' "
                            "or '.' (at most 63)")
    return problems


def taint_problems(taints: Any) -> list[str]:
    if taints is None:
        return []
    if not isinstance(taints, list):
        return ["spec.taints: Invalid value: must be a list"]
    problems = []
    for i, taint in enumerate(taints):
        if not isinstance(taint, dict):
            problems.append(f"spec.taints[{i}]: Invalid value: must be an object")
            continue
        problems += label_problems({taint.get("key") or "": taint.get("value") or ""},
                                   f"spec.taints[{i}]")
        if taint.get("effect") not in TAINT_EFFECTS:
            problems.append(f"spec.taints[{i}].effect: Unsupported value: "
                            f"{taint.get('effect')!r}")
    return problems


def _cidr_problems(block: Any, where: str) -> list[str]:
    try:
        net = ipaddress.ip_network(block.get("cidr"), strict=False)
    except (AttributeError, TypeError, ValueError):
        return [f"{where}.cidr: Invalid value: not a CIDR"]
    problems = []
    for j, other in enumerate(block.get("except") or []):
        try:
            inside = ipaddress.ip_network(other, strict=False)
        except (TypeError, ValueError):
            problems.append(f"{where}.except[{j}]: Invalid value: not a CIDR")
            continue
        if inside.version != net.version or not inside.subnet_of(net):  # type: ignore[arg-type]
            problems.append(f"{where}.except[{j}]: Invalid value: must be within {net}")
    return problems


def netpol_problems(body: Any) -> list[str]:
    """What the API server's NetworkPolicy validation refuses in a create or merge patch."""
    if not isinstance(body, dict):
        return ["body: Invalid value: must be an object"]
    problems = label_problems((body.get("metadata") or {}).get("labels"))
    spec = body.get("spec")
    if spec is None:
        return problems
    if not isinstance(spec, dict) or not isinstance(spec.get("podSelector"), dict):
        return problems + ["spec.podSelector: Required value"]
    problems += label_problems(spec["podSelector"].get("matchLabels"),
                               "spec.podSelector.matchLabels")
    for kind in spec.get("policyTypes") or []:
        if kind not in ("Ingress", "Egress"):
            problems.append(f"spec.policyTypes: Unsupported value: {kind!r}")
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            where = f"spec.{direction}[{i}]"
            for j, port in enumerate(rule.get("ports") or []):
                if port.get("protocol", "TCP") not in PROTOCOLS:
                    problems.append(f"{where}.ports[{j}].protocol: Unsupported value: "
                                    f"{port.get('protocol')!r}")
                number = port.get("port")
                if isinstance(number, int) and not 1 <= number <= 65535:
                    problems.append(f"{where}.ports[{j}].port: Invalid value: {number}: "
                                    "must be between 1 and 65535, inclusive")
            for j, peer in enumerate(rule.get(peers) or []):
                if "ipBlock" in peer:
                    problems += _cidr_problems(peer["ipBlock"], f"{where}.{peers}[{j}].ipBlock")
    return problems


def invalid(kind: str, name: str, problems: list[str]) -> tuple[int, dict]:
    """The API server's 422: a Status naming the object and what is wrong with it."""
    body = status_body(422, "Invalid", f'{kind} "{name}" is invalid: {"; ".join(problems)}',
                       kind, name)
    body["details"]["causes"] = [{"reason": "FieldValueInvalid", "message": p}
                                 for p in problems]
    return 422, body


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeCluster
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        cluster = self.cluster
        record = {"method": self.command, "path": parts.path, "query": query, "body": body,
                  "content_type": self.headers.get("Content-Type"), "time": time.monotonic(),
                  "authorization": self.headers.get("Authorization")}
        with cluster.lock:
            cluster.requests.append(record)
            code, reply, headers = self._answer(parts.path, query, body)
            record["code"] = code
        self._reply(code, reply, headers)

    def _answer(self, path: str, query: dict[str, list[str]],
                body: Any) -> tuple[int, dict, dict[str, str]]:
        cluster = self.cluster
        if cluster.token and self.headers.get("Authorization") != f"Bearer {cluster.token}":
            return 401, status_body(401, "Unauthorized", "Unauthorized"), {}
        for index, (method, fault_path, code, headers) in enumerate(cluster.faults):
            if method == self.command and fault_path == path:
                del cluster.faults[index]
                reason = {429: "TooManyRequests", 404: "NotFound", 409: "AlreadyExists",
                          403: "Forbidden"}.get(code, "ServiceUnavailable")
                return code, status_body(code, reason, f"injected {code}"), headers
        dry = query.get("dryRun") == ["All"]
        if "dryRun" in query and not dry:
            return 400, status_body(400, "BadRequest", "invalid dryRun"), {}
        code, reply = self._route(path, body, dry)
        return code, reply, {}

    def _route(self, path: str, body: Any, dry: bool) -> tuple[int, dict]:
        cluster = self.cluster
        method = self.command
        if method == "PATCH" and self.headers.get("Content-Type") not in MERGE_TYPES:
            return 415, status_body(415, "UnsupportedMediaType",
                                    f"unsupported patch type {self.headers.get('Content-Type')}")
        if found := POD.match(path):
            key = (found.group(1), found.group(2))
            pod = cluster.pods.get(key)
            if pod is None:
                return 404, status_body(404, "NotFound", f'pods "{key[1]}" not found', "pods",
                                        key[1])
            if method == "GET":
                return 200, pod
            if method == "DELETE":
                if not dry:
                    del cluster.pods[key]
                return 200, pod
            if method == "PATCH":
                problems = label_problems(((body or {}).get("metadata") or {}).get("labels"))
                if problems:
                    return invalid("Pod", key[1], problems)
                new = merge_patch(pod, body)
                if not dry:
                    cluster.pods[key] = new
                return 200, new
        if found := NODE.match(path):
            node = cluster.nodes.get(found.group(1))
            if node is None:
                return 404, status_body(404, "NotFound", "node not found", "nodes",
                                        found.group(1))
            if method == "GET":
                return 200, node
            if method == "PATCH":
                problems = (label_problems(((body or {}).get("metadata") or {}).get("labels"))
                            + taint_problems(((body or {}).get("spec") or {}).get("taints")))
                if problems:
                    return invalid("Node", found.group(1), problems)
                new = merge_patch(node, body)
                if not dry:
                    cluster.nodes[found.group(1)] = new
                return 200, new
        if (found := NETPOLS.match(path)) and method == "POST":
            name = body["metadata"]["name"]
            key = (found.group(1), name)
            problems = netpol_problems(body)
            if problems:
                return invalid("NetworkPolicy", name, problems)
            if key in cluster.netpols:
                return 409, status_body(409, "AlreadyExists",
                                        f'networkpolicies.networking.k8s.io "{name}" already '
                                        "exists", "networkpolicies", name)
            if not dry:
                cluster.netpols[key] = body
            return 201, body
        if (found := EVENTS.match(path)) and method == "POST":
            problems = event_problems(found.group(1), body)
            if problems:
                return 422, status_body(422, "Invalid", f"Event is invalid: {problems}",
                                        "events", (body.get("metadata") or {}).get("name", ""))
            if not dry:
                cluster.events.append(body)
            cluster.version += 1
            created = merge_patch(body, {"metadata": {
                "uid": f"uid-event-{cluster.version}", "resourceVersion": str(cluster.version),
                "creationTimestamp": body.get("firstTimestamp")}})
            return 201, created
        if found := NETPOL.match(path):
            key = (found.group(1), found.group(2))
            if key not in cluster.netpols:
                return 404, status_body(404, "NotFound", "networkpolicy not found",
                                        "networkpolicies", key[1])
            if method == "GET":
                return 200, cluster.netpols[key]
            if method == "PATCH":
                problems = netpol_problems(body)
                if problems:
                    return invalid("NetworkPolicy", key[1], problems)
                new = merge_patch(cluster.netpols[key], body)
                if not dry:
                    cluster.netpols[key] = new
                return 200, new
        return 404, status_body(404, "NotFound", f"the server could not find {path}")

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle


class ApiServer:
    """Context manager: `with ApiServer() as api: api.url, api.cluster`. With a `token`,
    every request must carry it as `Authorization: Bearer TOKEN` (else 401)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.cluster = FakeCluster(token)
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hang:
    """An address that hangs: it accepts connections and reads requests, and never answers
    until closed (then every connection it holds is reset)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            self.connected.set()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress
        except OSError:
            pass
        self.listener.close()
        for conn in self.held:
            conn.close()
        self._thread.join(5)


@contextmanager
def hanging() -> Iterator[Hang]:
    """A Hang for the duration of the block."""
    hang = Hang()
    try:
        yield hang
    finally:
        hang.close()
