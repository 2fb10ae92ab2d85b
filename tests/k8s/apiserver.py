"""A small Kubernetes API server for tests: real paths, verbs, status codes and Status
bodies for the objects enforcer's actions touch (pods, nodes, NetworkPolicies, and the
core/v1 Events it records, checked as the API server validates them), with
server-side dryRun=All, merge/strategic-merge patches, and scripted faults (429 with
Retry-After, 503) to exercise retries. Driven through the real `kubernetes` client."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
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
    def __init__(self) -> None:
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

    def add_node(self, name: str) -> None:
        self.nodes[name] = {"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": name, "labels": {}, "resourceVersion": "1"},
                            "spec": {}}

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
                  "content_type": self.headers.get("Content-Type"), "time": time.monotonic()}
        with cluster.lock:
            cluster.requests.append(record)
            for index, (method, path, code, headers) in enumerate(cluster.faults):
                if method == self.command and path == parts.path:
                    del cluster.faults[index]
                    reason = {429: "TooManyRequests", 404: "NotFound", 409: "AlreadyExists",
                              403: "Forbidden"}.get(code, "ServiceUnavailable")
                    self._reply(code, status_body(code, reason, f"injected {code}"), headers)
                    return
            dry = query.get("dryRun") == ["All"]
            if "dryRun" in query and not dry:
                self._reply(400, status_body(400, "BadRequest", "invalid dryRun"))
                return
            code, reply = self._route(parts.path, body, dry)
        self._reply(code, reply)

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
                new = merge_patch(node, body)
                if not dry:
                    cluster.nodes[found.group(1)] = new
                return 200, new
        if (found := NETPOLS.match(path)) and method == "POST":
            name = body["metadata"]["name"]
            key = (found.group(1), name)
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
                new = merge_patch(cluster.netpols[key], body)
                if not dry:
                    cluster.netpols[key] = new
                return 200, new
        return 404, status_body(404, "NotFound", f"the server could not find {path}")

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle


class ApiServer:
    """Context manager: `with ApiServer() as api: api.url, api.cluster`."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
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
