"""The snapshot's optional upload to S3-compatible storage: its parameters, checked when
policies load, and the object key, built only from validated structured fields so that no
event value can steer where evidence lands.

Credentials are deliberately not parameters: a policy lives in Git. The agent uses botocore's
chain (AWS_* environment, IRSA, instance metadata) or `credentials_file`, a shared-credentials
file such as a mounted Kubernetes Secret.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from actions.base import ParamError, Params, param

# S3 bucket names (the portable subset: lowercase, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# One key segment: S3's "safe characters", no '.'/'..' (checked apart).
_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()-]{1,255}$")
# An event-supplied component (node, container id): plain names only.
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SECRETS = ("access_key", "access_key_id", "secret_key", "secret_access_key", "session_token",
            "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password",
            "token", "credentials")


def _s3_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected s3://BUCKET[/PREFIX], got {value!r}")
    parts = urlsplit(value)
    if parts.scheme != "s3" or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"expected s3://BUCKET[/PREFIX], got {value!r}")
    if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise ValueError(f"{parts.netloc!r} is not a valid bucket name (3-63 lowercase "
                         "letters, digits, dots and hyphens)")
    for segment in parts.path.strip("/").split("/") if parts.path.strip("/") else []:
        if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            raise ValueError(f"prefix segment {segment!r} in {value!r} is not allowed "
                             "(letters, digits and !_.*'()- only; no empty, '.' or '..')")
    return value


def _endpoint(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL such as https://minio.local:9000, "
                         f"got {value!r}")
    if parts.username or parts.password:
        raise ValueError("credentials never go in a policy: remove them from the endpoint "
                         "and use the environment, IRSA or credentials_file")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"the endpoint is scheme://host[:port] only, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    return value.rstrip("/")


def _region(value: Any) -> str:
    if not isinstance(value, str) or not _REGION.fullmatch(value):
        raise ValueError(f"expected a region name such as eu-west-1, got {value!r}")
    return value


def _abs_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"expected an absolute path without '..', got {value!r}")
    return value


def _checksum(value: Any) -> str:
    if value not in ("sha256", "md5", "none"):
        raise ValueError(f"checksum must be one of sha256, md5, none; got {value!r}")
    return value


@dataclass(frozen=True)
class UploadParams(Params):
    url: str = param(parse=_s3_url,
                     schema={"type": "string", "pattern": r"^s3://[a-z0-9][a-z0-9.-]{1,61}"
                                                          r"[a-z0-9](/.*)?$"},
                     doc="s3://BUCKET[/PREFIX] the archive and its manifest go to")
    endpoint: str | None = param(None, parse=_endpoint,
                                 schema={"type": "string", "pattern": "^https?://"},
                                 doc="S3-compatible endpoint, e.g. https://minio.local:9000 "
                                     "(default: AWS)")
    region: str | None = param(None, parse=_region, schema={"type": "string"},
                               doc="region (default: the environment's, or us-east-1)")
    credentials_file: str | None = param(None, parse=_abs_path, schema={"type": "string"},
                                         doc="AWS shared-credentials file (a mounted Secret); "
                                             "default: environment, IRSA, instance role")
    profile: str | None = param(None, doc="profile in credentials_file")
    checksum: str = param("sha256", parse=_checksum,
                          schema={"enum": ["sha256", "md5", "none"]},
                          doc="integrity check the server verifies on PUT")
    timeout: float = param(5.0, doc="seconds to connect and per read, per attempt (the "
                                   "upload runs in the background: a kill after the "
                                   "snapshot does not wait for it)")

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ParamError("timeout", "timeout: must be more than 0 seconds")

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        return urlsplit(self.url).path.strip("/")


def parse_upload(value: Any) -> UploadParams:
    """The `upload:` block of a snapshot; secrets in it are refused with the reason."""
    if isinstance(value, dict):
        for key in value:
            if str(key).lower() in _SECRETS:
                raise ParamError(str(key), f"{key}: credentials never go in a policy (it "
                                           "lives in Git); use the agent's environment, IRSA, "
                                           "or credentials_file", unknown_key=True)
    params = UploadParams.from_mapping(value)
    assert isinstance(params, UploadParams)
    return params


def key_component(value: Any, fallback: str) -> str:
    """An event- or host-supplied name as one key segment: as is when it is a plain name,
    otherwise a digest of it, so that '..', '/' or control characters can never reach a key."""
    if value in (None, ""):
        return fallback
    text = str(value)
    if _COMPONENT.fullmatch(text) and ".." not in text:
        return text
    return "x-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def slug(text: str, limit: int = 64) -> str:
    """A rule name as a key segment: lowercase words joined by '-'."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "rule"


def object_key(upload: UploadParams, *, node: str | None, container: str | None, rule: str,
               when: float, pid: int, start_ticks: int) -> str:
    """`PREFIX/NODE/CONTAINER/YYYY/MM/DD/STAMP-RULE-PID-START.tar.gz`."""
    stamp = time.gmtime(when)
    segments = [upload.prefix] if upload.prefix else []
    segments += [key_component(node, "unknown-node"), key_component(container, "host"),
                 time.strftime("%Y/%m/%d", stamp),
                 f"{time.strftime('%Y%m%dT%H%M%SZ', stamp)}-{slug(rule)}-{pid}-{start_ticks}"
                 ".tar.gz"]
    return "/".join(segments)


def manifest_key(archive_key: str) -> str:
    return archive_key.removesuffix(".tar.gz") + ".manifest.json"
