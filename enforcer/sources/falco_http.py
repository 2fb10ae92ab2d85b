"""The falco-http input: take alerts from a Falco that already runs, and answer them.

Falco's `http_output` (with `json_output: true`) and Falcosidekick's webhook output POST one
alert per request, as JSON: `{"output", "priority", "rule", "time", "output_fields",
"source", "tags", "hostname"}` (Falcosidekick adds a `uuid`). Each body becomes an
`enforcer.alert.Alert` whose event is the alert's `output_fields` (Falco field names, null
meaning missing), and goes to the same policies and responder as a detection of our own.

Anyone who can POST here can make the agent act, so unless every action is dry-run the
input refuses to start without authentication: a shared token (`Authorization: Bearer
TOKEN`, which Falcosidekick's webhook output sends with its custom headers) or mutual TLS
(client certificates signed by a CA we are given, which Falco's http_output sends with
`mtls: true`). Answers:
200 accepted, 400 not a Falco alert, 401 bad or missing token, 403 a client certificate
not in the allow-list or an alert for another node (its `hostname`), 404 wrong path, 405
wrong method, 411 no Content-Length, 413 body too large, 429 too many requests from one
address, 503 the responder refused it. Every answer is counted by status code.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from enforcer.alert import Alert
from enforcer.http_server import parse_addr
from enforcer.priority import Priority
from enforcer.web.limits import Limits
from enforcer.web.router import respond_json
from enforcer.web.server import PEERCERT, WsgiServer

log = logging.getLogger(__name__)

DEFAULT_ADDR = "0.0.0.0:2803"  # Falco Talon's port: users repoint an existing http_output
DEFAULT_MAX_BODY = 1 << 20     # Falco alerts are a few KiB; 1 MiB leaves room for big fields
# Falco posts one alert per request, with no rate limit of its own: a noisy rule on a busy
# node stays well under this, a flood from one address does not.
DEFAULT_CLIENT_RATE = 200.0
RATE_BURST_SECONDS = 5.0
MAX_TRACKED_CLIENTS = 1024  # rate buckets kept (least recently seen forgotten first)
SOURCE_NAME = "falco-http"

# Falco prefixes `output` with the time (`HH:MM:SS.nnnnnnnnn` or, with time_format_iso_8601,
# an ISO stamp) and the priority word; Alert.output holds the rule's text alone.
_PREFIX = re.compile(
    r"^(?:\d{2}:\d{2}:\d{2}\.\d{9}|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{4}"
    r"|[+-]\d{2}:\d{2})?): (?:Emergency|Alert|Critical|Error|Warning|Notice|Informational|"
    r"Info|Debug) ", re.IGNORECASE)
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?"
                      r"(Z|[+-]\d{2}:\d{2})$")


class AlertPayloadError(ValueError):
    """The body is not a Falco alert; the message says which part is wrong."""


class IntakeConfigError(Exception):
    """The input cannot start as configured; the message says what to change."""


def parse_falco_time(text: str) -> int:
    """Falco's RFC 3339 `time` (nanosecond precision) -> nanoseconds since the epoch."""
    match = _RFC3339.match(text.strip())
    if not match:
        raise AlertPayloadError(f"'time' {text!r} is not an RFC 3339 timestamp like "
                                "2024-03-25T19:09:52.621653995Z")
    stamp, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    try:
        seconds = int(datetime.fromisoformat(stamp + zone).timestamp())
    except ValueError as exc:
        raise AlertPayloadError(f"'time' {text!r}: {exc}") from None
    nanos = int((fraction or "0").ljust(9, "0"))
    return seconds * 1_000_000_000 + nanos


def alert_from_falco_json(doc: Any) -> Alert:
    """Build an Alert from a decoded Falco alert. Raises AlertPayloadError."""
    if not isinstance(doc, dict):
        raise AlertPayloadError("expected a JSON object (one Falco alert per request)")
    rule = doc.get("rule")
    if not isinstance(rule, str) or not rule:
        raise AlertPayloadError("'rule' is missing or not a string; is this a Falco alert "
                                "with json_output enabled?")
    raw_priority = doc.get("priority")
    if not isinstance(raw_priority, str):
        raise AlertPayloadError("'priority' is missing or not a string")
    try:
        priority = Priority.parse(raw_priority)
    except ValueError as exc:
        raise AlertPayloadError(str(exc)) from None
    fields = doc.get("output_fields", {})
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise AlertPayloadError("'output_fields' must be an object of field name -> value")
    tags = doc.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise AlertPayloadError("'tags' must be a list of strings")
    output = doc.get("output", "")
    if not isinstance(output, str):
        raise AlertPayloadError("'output' must be a string")
    source = doc.get("source") or "syscall"
    hostname = doc.get("hostname") or ""
    if not isinstance(source, str) or not isinstance(hostname, str):
        raise AlertPayloadError("'source' and 'hostname' must be strings")

    if isinstance(doc.get("time"), str):
        time_ns = parse_falco_time(doc["time"])
    elif isinstance(fields.get("evt.time"), int):
        time_ns = fields["evt.time"]
    else:
        time_ns = time.time_ns()

    return Alert(
        rule=rule,
        priority=priority,
        output=_PREFIX.sub("", output, count=1).rstrip("\n"),
        output_fields=fields,
        time_ns=time_ns,
        source=source,
        tags=tuple(tags),
        hostname=hostname,
        # The event the policies read: Falco's own field names and values, as sent. Falco
        # writes null for a field it could not resolve, which dict.get makes "missing".
        event=dict(fields),
    )


def parse_falco_alert(body: bytes) -> Alert:
    """Decode one request body into an Alert. Raises AlertPayloadError."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise AlertPayloadError("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise AlertPayloadError(f"body is not JSON ({exc.msg} at line {exc.lineno} column "
                                f"{exc.colno}); set json_output: true in falco.yaml") from None
    return alert_from_falco_json(doc)


@dataclass(frozen=True)
class FalcoHttpConfig:
    addr: str = DEFAULT_ADDR
    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    path: str = "/"
    read_timeout: float = 10.0  # seconds a client may take to send its request
    tls_cert: str | None = None   # serve HTTPS with this certificate chain (PEM)
    tls_key: str | None = None    # and this key (PEM; default: in tls_cert)
    client_ca: str | None = None  # require client certificates signed by this CA (mTLS)
    # With mTLS, only certificates naming one of these (subject CN or a SAN) may post;
    # empty: any certificate the CA signed.
    client_names: tuple[str, ...] = ()
    # Alerts must name this node in `hostname` (Falco's FALCO_HOSTNAME, which its chart sets
    # to the node name); "" means this machine's hostname.
    node_name: str = ""
    # Requests per second per client address (burst: 5 s worth); 0 turns the limit off.
    client_rate: float = DEFAULT_CLIENT_RATE

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, or None for plain HTTP. Raises IntakeConfigError."""
        if not self.tls_cert:
            if self.client_ca:
                raise IntakeConfigError("client certificates (mTLS) need TLS: give the "
                                        "server certificate too (--falco-http-tls-cert)")
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
            if self.client_ca:
                context.load_verify_locations(self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise IntakeConfigError(f"falco-http TLS files could not be loaded: {exc}") from None
        return context


def check_intake_auth(config: FalcoHttpConfig, acting: bool) -> None:
    """Refuse to start an unauthenticated intake that can trigger real actions.

    `acting` is True when any loaded policy would act (neither --dry-run nor every policy
    dry_run). Raises IntakeConfigError with what to do.
    """
    if config.token is not None and not config.token.strip():
        raise IntakeConfigError("the falco-http token is empty; give a real secret or none")
    if config.client_ca and not config.tls_cert:
        raise IntakeConfigError("client certificates (mTLS) need TLS: give the server "
                                "certificate too (--falco-http-tls-cert)")
    if config.client_names and not config.client_ca:
        raise IntakeConfigError("--falco-http-client-name checks client certificates: give "
                                "the CA that signs them too (--falco-http-client-ca)")
    if acting and not (config.token or config.client_ca):
        raise IntakeConfigError(
            "refusing to start --source falco-http without authentication: policies are "
            "not all dry-run, so anyone who can reach this port could make the agent kill "
            "processes or delete pods by posting a fake alert. Either set a shared token "
            "(--falco-http-token-file FILE or ENFORCER_FALCO_HTTP_TOKEN) that the sender "
            "puts in 'Authorization: Bearer TOKEN' (Falcosidekick: webhook.customHeaders), "
            "or require client certificates (--falco-http-tls-cert, --falco-http-tls-key, "
            "--falco-http-client-ca; Falco: http_output.mtls), or run with --dry-run.")


class IntakeMetrics(Protocol):
    def intake_request(self, code: int | str) -> None: ...


class IntakeApp:
    """The intake as a WSGI application: checks path, method, authentication and body, then
    hands the alert to `source.on_alert`. Every answer is counted by code."""

    def __init__(self, source: FalcoHttpSource):
        self.source = source

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        code, message, headers = self._handle(environ)
        # Counted before answering, so a client that saw the answer sees the count.
        self.source.count(code)
        return respond_json(start_response, code, {"code": code, "message": message},
                            headers)

    def _handle(self, environ: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
        config = self.source.config
        client = environ.get("REMOTE_ADDR", "")
        if not self.source.rate.allow(client):
            # Before anything else, so that a flood (or token guessing) costs the least.
            return 429, f"more than {config.client_rate:g} requests per second from " \
                f"{client}; slow down", {"Retry-After": "1"}
        path = environ.get("PATH_INFO", "")
        if path != config.path:
            return 404, f"no alert intake at {path}; POST to {config.path}", {}
        if environ["REQUEST_METHOD"] != "POST":
            return (405, f"{environ['REQUEST_METHOD']} not allowed; POST one Falco alert "
                    "as JSON", {"Allow": "POST"})
        if config.token and not _authorized(environ, config.token):
            return 401, "missing or wrong bearer token", {
                "WWW-Authenticate": 'Bearer realm="enforcer"'}
        if config.client_names:
            names = certificate_names(environ.get(PEERCERT) or {})
            if not names & set(config.client_names):
                return 403, (f"client certificate {sorted(names) or '(none)'} is not among "
                             "the allowed --falco-http-client-name"), {}
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() \
                or not environ.get("CONTENT_LENGTH"):
            return 411, "send the alert with a valid Content-Length", {"Connection": "close"}
        try:
            alert = parse_falco_alert(environ["wsgi.input"].read())
        except AlertPayloadError as exc:
            return 400, f"not a Falco alert: {exc}", {}
        node = self.source.node_name
        if alert.hostname != node:
            # Only this node's Falco speaks for this node: an alert about another node (a
            # shared Falcosidekick, or a forged one) must not make this agent act.
            return 403, (f"alert is for host {alert.hostname!r}, this agent answers for "
                         f"node {node!r}"), {}
        try:
            self.source.on_alert(alert)
        except Exception as exc:  # noqa: BLE001 - the sender gets a 503, the agent goes on
            log.warning("falco-http: the responder did not take the alert for rule %r: %s",
                        alert.rule, exc)
            return 503, "alert not taken; retry later", {}
        return 200, "accepted", {}


def certificate_names(cert: dict[str, Any]) -> set[str]:
    """The names a client certificate (getpeercert() form) carries: subject CNs and SANs."""
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn
             if key == "commonName"}
    names |= {value for kind, value in cert.get("subjectAltName", ())
              if kind in ("DNS", "IP Address", "URI", "email")}
    return names


class ClientRate:
    """Token buckets per client address, `rate` per second with `RATE_BURST_SECONDS` of
    burst; at most MAX_TRACKED_CLIENTS buckets (the least recently seen go first)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1.0, rate * RATE_BURST_SECONDS)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        """Take one token from `client`'s bucket; False when it is empty."""
        if self.rate <= 0:
            return True
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
            return allowed


def _authorized(environ: dict[str, Any], token: str) -> bool:
    scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


class FalcoHttpSource:
    """Listens for Falco alerts and hands each to `on_alert` (which must not block long:
    give it the responder's non-blocking submit)."""

    def __init__(self, config: FalcoHttpConfig, on_alert: Callable[[Alert], object],
                 metrics: IntakeMetrics | None = None):
        self.config = config
        self.on_alert = on_alert
        self._metrics = metrics
        self._lock = threading.Lock()
        self.responses: Counter[int | str] = Counter()  # by status code (or tls_refused)
        self.rate = ClientRate(config.client_rate)
        self.node_name = config.node_name or socket.gethostname()
        host, port = parse_addr(config.addr)
        limits = Limits(request_timeout=config.read_timeout, max_body=config.max_body)
        self._server = WsgiServer(IntakeApp(self), host, port, limits,
                                  ssl_context=config.ssl_context(), name="falco-http",
                                  on_reject=self.count)

    @property
    def port(self) -> int:
        return int(self._server.port)

    @property
    def auth_description(self) -> str:
        kinds = []
        if self.config.token:
            kinds.append("bearer token")
        if self.config.client_ca:
            kinds.append("client certificate")
        return " + ".join(kinds) or "none"

    def count(self, code: int | str) -> None:
        with self._lock:
            self.responses[code] += 1
        if self._metrics is not None:
            self._metrics.intake_request(code)

    def start(self) -> FalcoHttpSource:
        self._server.start()
        log.info("falco-http: listening on %s (auth: %s)", self.config.addr,
                 self.auth_description)
        return self

    def stop(self) -> None:
        self._server.stop()


def start_falco_http(config: FalcoHttpConfig, on_alert: Callable[[Alert], object], *,
                     acting: bool, metrics: IntakeMetrics | None = None) -> FalcoHttpSource:
    """Check authentication against `acting`, bind, and start serving in the background.

    Raises IntakeConfigError (refusal to run unauthenticated while acting; the CLI exits 2
    with its message) or OSError (address in use, permission; the CLI exits 3).
    """
    check_intake_auth(config, acting)
    return FalcoHttpSource(config, on_alert, metrics).start()
