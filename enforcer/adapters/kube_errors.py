"""Kubernetes outcomes that actions handle as success, importable without the client."""

from __future__ import annotations

from enforcer.errors import PermanentActionError


class NotFound(PermanentActionError):
    """The object does not exist (404)."""


class Conflict(PermanentActionError):
    """The object already exists (409)."""
