"""The console as a WSGI application: read-only pages over the audit store.

Every page is rendered on the server from Jinja2 templates with autoescaping on for every
template, so event text (rule output, fields, commands) is always shown as text, never run
as HTML. The pages carry no script at all, and the Content-Security-Policy forbids any.
"""

from __future__ import annotations

import json
import mimetypes
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2

from enforcer import __version__
from enforcer.console import access
from enforcer.console.chart import stacked_bars
from enforcer.console.proctree import process_chain
from enforcer.priority import Priority
from enforcer.store import query
from enforcer.store.mapping import OUTCOME_CLASSES
from enforcer.store.postgres.dsn import is_postgres
from enforcer.store.rollup import MINUTE_NS
from enforcer.store.schema import StoreError, connect

_SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
     "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
]

_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
_FILTER_NAMES = ("since", "until", "last", "rule", "priority", "namespace", "pod", "container",
                 "node", "policy", "action", "outcome", "q")


CHOICES_TTL_S = 30.0  # how long a PostgreSQL store's filter choices are reused


class BadRequest(ValueError):
    """A query parameter the console cannot use; the message says which and why."""


def format_ns(ns: int | None) -> str:
    """UTC time with milliseconds, for tables."""
    if ns is None:
        return ""
    secs, rest = divmod(int(ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp}.{rest // 1_000_000:03d}"


def parse_time(text: str, name: str) -> int:
    """A form time (`2026-11-23T16:05`, any RFC 3339, or epoch seconds) as ns, UTC."""
    text = text.strip()
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: {text!r} is not a time; use YYYY-MM-DDTHH:MM (UTC)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1_000_000_000)


def _cursor(text: str | None, name: str) -> tuple[int, int] | None:
    if not text:
        return None
    stamp, _, ident = text.partition(".")
    if not (stamp.isdigit() and ident.isdigit()):
        raise BadRequest(f"{name}: {text!r} is not a page cursor")
    return int(stamp), int(ident)


class ConsoleApp:
    """WSGI app serving the console for the store at `store_path`.

    `token`: when set, every request must carry it (Bearer header or the console's cookie,
    which `?token=` sets once). `now` is injectable so relative ranges are testable.
    """

    def __init__(self, store_path: str | Path, *, token: str | None = None,
                 now: Callable[[], float] = time.time):
        # The store is an SQLite file, or a postgresql:// URL for every node's records.
        self._pool: Any = None
        self._choices_cache: tuple[float, dict[str, list[str]]] | None = None
        self._q: Any = query
        self._db_errors: tuple[type[BaseException], ...] = (sqlite3.DatabaseError,)
        if is_postgres(store_path):
            import psycopg  # noqa: PLC0415 - only for a PostgreSQL store

            from enforcer.store.postgres import query as pg_query  # noqa: PLC0415
            from enforcer.store.postgres.dsn import redacted  # noqa: PLC0415
            from enforcer.store.postgres.migrations import SchemaError  # noqa: PLC0415

            self._pool = pg_query.ReadPool(str(store_path))
            self._q = pg_query
            self._db_errors = (psycopg.Error, SchemaError)
            self.store_path: Any = redacted(str(store_path))
        else:
            self.store_path = Path(store_path)
        self.token = token or None
        self.now = now
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("enforcer.console", "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ns"] = format_ns
        self.env.filters["prio"] = _priority_name
        self.env.filters["pretty"] = _pretty
        self.env.filters["compact"] = _compact
        self.env.filters["json_pretty"] = _json_pretty
        self.env.globals["version"] = __version__
        self.env.globals["outcome_classes"] = OUTCOME_CLASSES

    # -- WSGI ---------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        params = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if method not in ("GET", "HEAD"):
            return self._respond(start_response, "405 Method Not Allowed",
                                 b"read-only console: GET only\n", "text/plain",
                                 [("Allow", "GET, HEAD")])
        if self.token:
            given = params.pop("token", None)
            if given is not None and access.token_ok(self.token, given):
                # Trade the URL token for a cookie, so it leaves the address bar and logs.
                rest = urlencode(params)
                location = f"{root}{path}" + (f"?{rest}" if rest else "")
                return self._respond(start_response, "303 See Other", b"", "text/plain",
                                     [("Location", location),
                                      access.cookie_header(self.token, root or "/")])
            if not access.token_ok(self.token, access.presented_token(environ)):
                return self._respond(
                    start_response, "401 Unauthorized",
                    b"this console needs its token: send 'Authorization: Bearer TOKEN' or "
                    b"open it once with ?token=TOKEN\n", "text/plain",
                    [("WWW-Authenticate", 'Bearer realm="enforcer"')])
        if path.startswith("/static/"):
            return self._static(start_response, path[len("/static/"):])
        try:
            status, body = self._page(path, params, root)
        except BadRequest as exc:
            status, body = "400 Bad Request", self._render(
                "error.html", root, title="Bad request", message=str(exc), params={})
        except StoreError as exc:
            status, body = "503 Service Unavailable", self._render(
                "error.html", root, title="No audit store", message=str(exc), params={})
        except self._db_errors as exc:
            advice = ("check that the database is up and `enforcer store migrate` was run"
                      if self._pool is not None else
                      "if it is damaged, rebuild it with `enforcer audit import`")
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            status, body = "503 Service Unavailable", self._render(
                "error.html", root, title="Audit store unreadable", params={},
                message=f"{self.store_path}: {first}; {advice}")
        if method == "HEAD":
            body = b""
        return self._respond(start_response, status, body, "text/html; charset=utf-8")

    def _respond(self, start_response: Callable[..., Any], status: str, body: bytes,
                 content_type: str, extra: list[tuple[str, str]] | None = None
                 ) -> list[bytes]:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   *_SECURITY_HEADERS, *(extra or [])]
        start_response(status, headers)
        return [body]

    def _static(self, start_response: Callable[..., Any], name: str) -> list[bytes]:
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.(css|svg|png|ico)", name):
            return self._respond(start_response, "404 Not Found", b"not found\n", "text/plain")
        resource = resources.files("enforcer.console").joinpath("static", name)
        if not resource.is_file():
            return self._respond(start_response, "404 Not Found", b"not found\n", "text/plain")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self._respond(start_response, "200 OK", resource.read_bytes(), kind)

    # -- pages ----------------------------------------------------------------------------

    def _page(self, path: str, params: dict[str, str], root: str) -> tuple[str, bytes]:
        if path in ("/", ""):
            return "200 OK", self._list(params, root)
        match = re.fullmatch(r"/detection/(\d+)", path)
        if match:
            return self._detail(int(match.group(1)), root)
        if path == "/dry-run":
            return "200 OK", self._dry_run(params, root)
        if path == "/stats":
            return "200 OK", self._stats(params, root)
        return "404 Not Found", self._render("error.html", root, title="Not found",
                                             message=f"no page at {path}", params={})

    def _connect(self) -> Any:
        if self._pool is not None:
            return self._pool.get()
        return connect(self.store_path, readonly=True)

    def _release(self, conn: Any) -> None:
        if self._pool is not None:
            self._pool.put(conn)
        else:
            conn.close()

    def _filters(self, params: dict[str, str]) -> query.Filters:
        since = until = None
        last = params.get("last", "").strip()
        if last:
            match = _RELATIVE.match(last)
            if not match:
                raise BadRequest(f"last: {last!r} is not a duration like 15m, 1h or 7d")
            until = int(self.now() * 1_000_000_000)
            since = until - int(match.group(1)) * _UNIT_S[match.group(2)] * 1_000_000_000
        if params.get("since", "").strip():
            since = parse_time(params["since"], "since")
        if params.get("until", "").strip():
            until = parse_time(params["until"], "until")
        priority = None
        if params.get("priority", "").strip():
            try:
                priority = int(Priority.parse(params["priority"]))
            except ValueError as exc:
                raise BadRequest(f"priority: {exc}") from None
        text = {k: (params.get(k) or "").strip() or None
                for k in ("rule", "namespace", "pod", "container", "node", "policy", "action",
                          "outcome", "q")}
        return query.Filters(since_ns=since, until_ns=until, priority=priority,
                             rule=text["rule"], namespace=text["namespace"], pod=text["pod"],
                             container=text["container"], node=text["node"],
                             policy=text["policy"], action=text["action"],
                             outcome=text["outcome"], text=text["q"])

    def _choices(self, conn: Any) -> dict[str, list[str]]:
        if self._pool is not None and self._choices_cache is not None and \
                time.monotonic() < self._choices_cache[0]:
            # Over a cluster's store the choices cost more than the page they go with: a
            # new node or rule shows in the form within CHOICES_TTL_S.
            return self._choices_cache[1]
        choices = {name: self._q.distinct_values(conn, name)
                   for name in ("rule", "namespace", "node", "policy", "action")}
        self._choices_cache = (time.monotonic() + CHOICES_TTL_S, choices)
        return choices

    def _list(self, params: dict[str, str], root: str) -> bytes:
        filters = self._filters(params)
        before = _cursor(params.get("before"), "before")
        after = _cursor(params.get("after"), "after")
        conn = self._connect()
        try:
            page = self._q.list_detections(conn, filters, before=before, after=after)
            choices = self._choices(conn)
        finally:
            self._release(conn)
        kept = {k: params[k] for k in _FILTER_NAMES if params.get(k)}
        older = newer = None
        if page.older:
            older = urlencode({**kept, "before": f"{page.older[0]}.{page.older[1]}"})
        if page.newer:
            newer = urlencode({**kept, "after": f"{page.newer[0]}.{page.newer[1]}"})
        return self._render("list.html", root, title="Detections", page=page, params=kept,
                            choices=choices, older=older, newer=newer,
                            priorities=[p.display for p in Priority])

    def _detail(self, det_id: int, root: str) -> tuple[str, bytes]:
        conn = self._connect()
        try:
            det = self._q.get_detection(conn, det_id)
        finally:
            self._release(conn)
        if det is None:
            return "404 Not Found", self._render("error.html", root, title="Not found",
                                                 message=f"no detection {det_id}", params={})
        trace_ids = sorted({t for t in [det["trace_id"]] +
                            [r["trace_id"] for r in det["responses"]] if t})
        return "200 OK", self._render(
            "detail.html", root, title=f"Detection {det_id}", det=det, params={},
            chain=process_chain(det["output_fields"]), trace_ids=trace_ids,
            decisions=[r for r in det["responses"] if r["kind"] != "action"],
            actions=[r for r in det["responses"] if r["kind"] == "action"])

    def _dry_run(self, params: dict[str, str], root: str) -> bytes:
        filters = self._filters(params)
        conn = self._connect()
        try:
            summary = self._q.dry_run_summary(conn, filters)
            policies: dict[str, dict[str, Any]] = {}
            for row in summary:
                entry = policies.setdefault(row["policy"], {"rows": [], "examples": [],
                                                            "per_node": "node" in row})
                entry["rows"].append(row)
            for name, entry in policies.items():
                entry["examples"] = self._q.dry_run_examples(conn, name, filters)
            choices = self._choices(conn)
        finally:
            self._release(conn)
        kept = {k: params[k] for k in ("since", "until", "last", "policy", "node")
                if params.get(k)}
        return self._render("dryrun.html", root, title="Would have done", policies=policies,
                            params=kept, choices=choices)

    def _stats(self, params: dict[str, str], root: str) -> bytes:
        by = params.get("by", "rule")
        if by not in ("rule", "priority", "outcome"):
            raise BadRequest(f"by: {by!r}; choose rule, priority or outcome")
        filters = self._filters(params)
        conn = self._connect()
        try:
            bounds = self._q.time_bounds(conn)
            chart = None
            since = until = None
            if bounds is not None:
                until = filters.until_ns if filters.until_ns is not None else bounds[1] + 1
                since = (filters.since_ns if filters.since_ns is not None
                         else max(bounds[0], until - 86400 * 1_000_000_000))
                since -= since % MINUTE_NS  # the counters are per minute
                if since >= until:
                    raise BadRequest("since must be before until")
                bucket = query.bucket_size_ns(until - since)
                # Bars of whole clock buckets (an hourly bar starts on the hour): the cluster
                # store then reads its hourly or daily counters, not every minute's.
                since -= since % min(bucket, 86400 * 1_000_000_000)
                counts = self._q.counts_over_time(conn, by, since, until, bucket)
                if by == "priority":
                    counts = [(b, _priority_name(int(v)) if v else "", n)
                              for b, v, n in counts]
                chart = stacked_bars(counts, since, until, bucket)
        finally:
            self._release(conn)
        kept = {k: params[k] for k in ("since", "until", "last") if params.get(k)}
        return self._render("stats.html", root, title="Counts over time", chart=chart, by=by,
                            params=kept, since=since, until=until)

    def _render(self, template: str, root: str, **context: Any) -> bytes:
        page = self.env.get_template(template)
        return page.render(root=root, **context).encode("utf-8")


def _priority_name(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        return Priority(int(value)).display
    except ValueError:
        return str(value)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _decoded(value: Any) -> Any:
    """JSON text decoded; other values, and text that is not JSON, as they are."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _compact(value: Any) -> str:
    """A target (an object, or JSON text) as `key=value` pairs; other values as text."""
    if value is None or value == "":
        return ""
    value = _decoded(value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _json_pretty(value: Any) -> str:
    """A value (or JSON text) indented for reading."""
    if value is None or value == "":
        return ""
    return _pretty(_decoded(value))
