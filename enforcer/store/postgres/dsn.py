"""Which store a `--store` value names, and the PostgreSQL DSN with its password."""

from __future__ import annotations

import re
from pathlib import Path

_SCHEMES = ("postgresql://", "postgres://")


class DsnError(ValueError):
    """A DSN or password file that cannot be used; the message says what to do."""


def is_postgres(store: str | Path | None) -> bool:
    """True when `store` is a PostgreSQL URL rather than an SQLite file path."""
    return isinstance(store, str) and store.startswith(_SCHEMES)


def with_password(dsn: str, password_file: str | Path | None) -> str:
    """`dsn` with the password read from `password_file` (a mounted Secret), if given.

    The password travels as a separate connection parameter, never spliced into the URL,
    so that any character in it is safe.
    """
    if not password_file:
        return dsn
    try:
        password = Path(password_file).read_text().strip()
    except OSError as exc:
        raise DsnError(f"cannot read the store password file {password_file}: "
                       f"{exc.strerror}; mount the Secret there or drop the option") from None
    if not password:
        raise DsnError(f"the store password file {password_file} is empty")
    return f"{dsn}{'&' if '?' in dsn else '?'}password={_quote(password)}"


def _quote(value: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(value, safe="")


def redacted(dsn: str) -> str:
    """The DSN for logs and messages: any password replaced by ***."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password=)[^&]*", r"\1***", dsn)
