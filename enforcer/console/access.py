"""Who may read the console: anyone on loopback; elsewhere only with the token."""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from typing import Any

COOKIE = "enforcer_ui_token"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve the console off loopback without a token (ValueError says so)."""
    if not token and not is_loopback(host):
        raise ValueError(f"refusing to serve the console on {host}, which is not loopback, "
                         "without a token: give one (--token-file FILE or ENFORCER_UI_TOKEN)")


def presented_token(environ: dict[str, Any]) -> str | None:
    """The token a request carries: `Authorization: Bearer`, then the console's cookie."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = SimpleCookie()
    try:
        cookie.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # a malformed Cookie header is just no token
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel else None


def token_ok(expected: str, presented: str | None) -> bool:
    """Constant-time comparison; no token presented is never OK."""
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def cookie_header(token: str, path: str) -> tuple[str, str]:
    """Set-Cookie that keeps the token for this browser session, never readable by scripts."""
    cookie = SimpleCookie()
    cookie[COOKIE] = token
    morsel = cookie[COOKIE]
    morsel["path"] = path or "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    return ("Set-Cookie", morsel.OutputString())
