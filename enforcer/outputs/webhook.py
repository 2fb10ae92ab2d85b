"""HTTP webhook output: POSTs each alert as Falco's JSON, as Falco's http_output does.

The body is `Alert.falco_json()` (plus `trace_id` when there is one), shaped by Falco's
`json_include_*` settings (enforcer.outputs.formats), with
`Content-Type: application/json`, so Falcosidekick's `POST /`, Falco Talon and anything else
that reads Falco's http_output accept it. Transient failures (connection refused or reset,
timeouts, 429 and 5xx) are retried with capped exponential backoff, honouring Retry-After;
other 4xx answers are permanent and not retried. This runs on the dispatcher's worker
thread for this output, so however long it takes, detection does not wait.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from enforcer import __version__
from enforcer.alert import Alert
from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE, AlertShape, json_bytes


class WebhookError(Exception):
    """The alert could not be delivered; `temporary` says whether retrying could help."""

    def __init__(self, message: str, temporary: bool, retry_after: float | None = None):
        super().__init__(message)
        self.temporary = temporary
        self.retry_after = retry_after


def parse_header(text: str) -> tuple[str, str]:
    """`"Authorization: Bearer x"` -> ("Authorization", "Bearer x"). Raises ValueError."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise ValueError(f"header {text!r} is not 'Name: value'; write e.g. "
                         "--webhook-header 'Authorization: Bearer TOKEN'")
    if any(c in value for c in "\r\n"):
        raise ValueError(f"header {name!r} has a line break in its value")
    return name, value.strip()


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 5.0          # seconds, per attempt (connect and read)
    max_retries: int = 3          # attempts after the first
    backoff: float = 0.5          # first delay; doubles per retry
    max_backoff: float = 10.0     # cap on any single delay, Retry-After included
    ca_file: str | None = None    # extra CA bundle for https

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL {self.url!r} must be http:// or https:// with a "
                             "host, e.g. http://falcosidekick:2801/")
        if self.timeout <= 0:
            raise ValueError("webhook timeout must be positive")
        if self.max_retries < 0:
            raise ValueError("webhook retries cannot be negative")


class WebhookOutput:
    """Delivers alerts to one URL. `emit` blocks until delivered or given up (raises)."""

    def __init__(self, config: WebhookConfig, name: str = "webhook",
                 sleep: Callable[[float], None] = time.sleep,
                 shape: AlertShape = FALCO_DEFAULT_SHAPE):
        self.config = config
        self.shape = shape
        self.name = name
        self._sleep = sleep
        self._context = None
        if urlsplit(config.url).scheme == "https":
            self._context = ssl.create_default_context(cafile=config.ca_file)
        self.attempts = 0  # total HTTP attempts, for the curious (and tests)

    def body(self, alert: Alert) -> bytes:
        return json_bytes(alert, self.shape)

    def emit(self, alert: Alert) -> None:
        self.post(self.body(alert))

    def post(self, body: bytes) -> None:
        """POST `body`, retrying transient failures; raises WebhookError when giving up."""
        delay = self.config.backoff
        for attempt in range(self.config.max_retries + 1):
            try:
                self._post_once(body)
                return
            except WebhookError as exc:
                if not exc.temporary or attempt == self.config.max_retries:
                    tries = attempt + 1
                    raise WebhookError(f"{exc} (gave up after {tries} attempt"
                                       f"{'s' if tries > 1 else ''})", exc.temporary) from exc
                wait = exc.retry_after if exc.retry_after is not None else delay
                self._sleep(min(max(wait, 0.0), self.config.max_backoff))
                delay = min(delay * 2, self.config.max_backoff)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json",
                   "User-Agent": f"enforcer/{__version__}"}
        headers.update(self.config.headers)
        return headers

    def _post_once(self, body: bytes) -> None:
        self.attempts += 1
        request = urllib.request.Request(self.config.url, data=body, method="POST",
                                         headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout,
                                        context=self._context) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            code = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            temporary = code == 429 or code >= 500
            raise WebhookError(f"{self.config.url} answered {code} {exc.reason}",
                               temporary, retry_after) from None
        except TimeoutError as exc:
            raise WebhookError(f"{self.config.url} did not answer within "
                               f"{self.config.timeout:g}s", True) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise WebhookError(f"{self.config.url}: TLS verification failed ({reason}); "
                                   "give the CA with --webhook-ca-file", False) from exc
            raise WebhookError(f"{self.config.url} unreachable: {reason}", True) from exc
        except (ConnectionError, OSError) as exc:
            raise WebhookError(f"{self.config.url} connection failed: {exc}", True) from exc


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def header_dict(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated `Name: value` strings into a dict."""
    return dict(parse_header(item) for item in items)
