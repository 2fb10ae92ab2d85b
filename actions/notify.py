"""notify — POST the alert (Falco's JSON shape) and the outcomes of the policy's earlier
actions to a webhook. It runs in dry-run too (marked `dry_run: true`): telling people what
would have been done is the point of a dry-run. Not for an alert received over falco-http
in dry-run, though: that may be anyone's text (the responder skips it).

RBAC: none.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from actions.base import DONE, Action, Outcome, Params, Plan, param
from actions.context import ActionContext
from enforcer.errors import PermanentActionError, TemporaryActionError


def _url(value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") \
            or not urlsplit(value).netloc:
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value


@dataclass(frozen=True)
class NotifyParams(Params):
    url: str = param(parse=_url, schema={"type": "string", "format": "uri"},
                     doc="webhook URL (http or https)")
    headers: dict[str, str] = param(None, doc="extra HTTP headers, e.g. Authorization")
    timeout: float = param(5.0, doc="seconds per attempt")


class Notify(Action):
    name = "notify"
    params_type = NotifyParams
    mutating = False
    acts_in_dry_run = True
    example = "- notify: {url: https://hooks.example.com/enforcer}"
    params: NotifyParams

    def plan(self, context: ActionContext) -> Plan:
        alert = context.alert
        body = {"alert": alert.falco_json() if hasattr(alert, "falco_json") else {},
                "policy": context.policy,
                "outcomes": dict(context.results)}
        return Plan(action=self.name, target={"url": self.params.url},
                    render={"method": "POST", "url": self.params.url, "body": body},
                    summary=f"POST the alert to {self.params.url}")

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        body = dict(plan.render["body"], dry_run=dry_run)
        data = json.dumps(body, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "enforcer"}
        headers.update(self.params.headers or {})
        request = urllib.request.Request(self.params.url, data=data, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.params.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise TemporaryActionError(f"webhook answered {exc.code}",
                                           delay=_retry_after(exc.headers)) from exc
            raise PermanentActionError(f"webhook answered {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TemporaryActionError(f"webhook unreachable: {exc}") from exc
        return Outcome(DONE, f"webhook answered {status}", {"status": status})


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


ACTION = Notify
