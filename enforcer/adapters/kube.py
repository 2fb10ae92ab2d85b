"""The Kubernetes adapter: the official `kubernetes` client behind a few idempotent calls.

Errors become enforcer errors: 429, 5xx and connection problems are TemporaryActionError
(with the server's Retry-After as `delay`), 404 on what should be gone and 409 on create are
handled as success, everything else is PermanentActionError. The client's own urllib3
retries are off: the responder retries, with bounds, through tenacity. In dry-run every
mutating call carries `dryRun=All`, so the API server runs admission and validation but
persists nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from enforcer.adapters.kube_errors import Conflict, NotFound
from enforcer.errors import PermanentActionError, TemporaryActionError

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"


class KubeAdapter:
    def __init__(self, api_client: client.ApiClient, timeout: tuple[float, float] = (3, 10)):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.timeout = timeout

    @classmethod
    def for_host(cls, host: str, token: str | None = None) -> KubeAdapter:
        """A client for an explicit API server URL (tests, or a proxy)."""
        configuration = client.Configuration()
        configuration.host = host
        configuration.retries = 0
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return cls(client.ApiClient(configuration))

    @classmethod
    def from_environment(cls) -> KubeAdapter:
        """In-cluster service account when running in a pod, else KUBECONFIG/~/.kube/config."""
        configuration = client.Configuration()
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise PermanentActionError(
                f"no Kubernetes credentials: {exc}; run in a pod with a service account or "
                "set KUBECONFIG") from exc
        configuration.retries = 0
        return cls(client.ApiClient(configuration))

    # -- calls -----------------------------------------------------------------------------

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The pod as a dict (camelCase keys, as the API writes them). Raises NotFound."""
        return self._call(lambda: self.core.read_namespaced_pod(
            name, namespace, _request_timeout=self.timeout), f"pod {namespace}/{name}")

    def delete_pod(self, namespace: str, name: str, grace_period: int | None,
                   dry_run: bool) -> dict[str, Any]:
        return self._call(lambda: self.core.delete_namespaced_pod(
            name, namespace, grace_period_seconds=grace_period, dry_run=_dry(dry_run),
            _request_timeout=self.timeout), f"pod {namespace}/{name}")

    def patch_pod(self, namespace: str, name: str, patch: dict[str, Any],
                  dry_run: bool) -> dict[str, Any]:
        return self._call(lambda: self.core.patch_namespaced_pod(
            name, namespace, patch, dry_run=_dry(dry_run), _content_type=MERGE_PATCH,
            _request_timeout=self.timeout), f"pod {namespace}/{name}")

    def get_node(self, name: str) -> dict[str, Any]:
        return self._call(lambda: self.core.read_node(name, _request_timeout=self.timeout),
                          f"node {name}")

    def patch_node(self, name: str, patch: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        return self._call(lambda: self.core.patch_node(
            name, patch, dry_run=_dry(dry_run), _content_type=MERGE_PATCH,
            _request_timeout=self.timeout), f"node {name}")

    def apply_network_policy(self, namespace: str, body: dict[str, Any],
                             dry_run: bool) -> str:
        """Create the NetworkPolicy, or patch it to `body` when it exists. Returns
        "created" or "patched"."""
        name = body["metadata"]["name"]
        what = f"networkpolicy {namespace}/{name}"
        try:
            self._call(lambda: self.networking.create_namespaced_network_policy(
                namespace, body, dry_run=_dry(dry_run), _request_timeout=self.timeout), what)
            return "created"
        except Conflict:
            self._call(lambda: self.networking.patch_namespaced_network_policy(
                name, namespace, body, dry_run=_dry(dry_run), _content_type=MERGE_PATCH,
                _request_timeout=self.timeout), what)
            return "patched"

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a core/v1 Event in `namespace` (never dry-run: it records what happened,
        including a dry run)."""
        return self._call(lambda: self.core.create_namespaced_event(
            namespace, body, _request_timeout=self.timeout), f"event in {namespace}")

    # -- errors ----------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], what: str) -> dict[str, Any]:
        try:
            result = fn()
        except ApiException as exc:
            raise _translate(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryActionError(f"Kubernetes API unreachable for {what}: {exc}") from exc
        if result is None:
            return {}
        if hasattr(result, "to_dict"):
            return self.api_client.sanitize_for_serialization(result)
        return result if isinstance(result, dict) else {}


def _dry(dry_run: bool) -> str | None:
    return "All" if dry_run else None


def _translate(exc: ApiException, what: str) -> Exception:
    status = exc.status or 0
    message = f"Kubernetes API answered {status} {exc.reason or ''} for {what}".strip()
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 429 or status >= 500:
        return TemporaryActionError(message, delay=_retry_after(exc.headers))
    if status in (401, 403):
        return PermanentActionError(message + ": the agent's service account lacks the RBAC "
                                              "this action needs (see `enforcer actions show`)")
    return PermanentActionError(message)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
