"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW…) through boto3: one PUT per object,
with botocore's own retries switched off so that the responder's bounded retries are the only
ones, and botocore's errors turned into our Temporary/PermanentActionError.

Credentials never come from a policy: botocore's chain (environment, IRSA web identity,
instance metadata) or, when given, a shared-credentials file such as a mounted Secret.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from enforcer.errors import PermanentActionError, TemporaryActionError

# S3 error codes that say "try again later", whatever the HTTP status.
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                              "Throttling", "ThrottlingException", "RequestTimeTooSkewed"})


@dataclass(frozen=True)
class Stored:
    """One object as the server acknowledged it."""

    bucket: str
    key: str
    etag: str
    bytes: int
    checksum_sha256: str | None = None
    version_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ObjectStore:
    """A client for one endpoint. Built lazily: a policy that never fires opens nothing."""

    def __init__(self, endpoint: str | None = None, region: str | None = None,
                 credentials_file: str | None = None, profile: str | None = None,
                 timeout: float = 5.0, checksum: str = "sha256"):
        self.endpoint = endpoint
        self.region = region
        self.credentials_file = credentials_file
        self.profile = profile
        self.timeout = timeout
        self.checksum = checksum
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            core = botocore.session.Session()
            if self.credentials_file:
                core.set_config_variable("credentials_file", self.credentials_file)
            if self.profile:
                core.set_config_variable("profile", self.profile)
            config = Config(
                connect_timeout=self.timeout, read_timeout=self.timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
                # With our own SHA-256 (or MD5, or none) botocore adds no CRC trailer, which
                # some S3-compatible servers reject.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path" if self.endpoint else "auto"})
            try:
                session = boto3.Session(botocore_session=core, region_name=self.region)
                self._client = session.client("s3", endpoint_url=self.endpoint, config=config)
            except ProfileNotFound as exc:
                raise PermanentActionError(
                    f"S3 credentials: {exc}; check `profile` and `credentials_file`") from exc
            except BotoCoreError as exc:
                raise PermanentActionError(f"S3 client for {self.endpoint or 'AWS'}: "
                                           f"{exc}") from exc
        return self._client

    def put(self, bucket: str, key: str, body: bytes | Path, sha256_hex: str,
            content_type: str, metadata: dict[str, str] | None = None) -> Stored:
        """PUT one object. `sha256_hex` is the local digest: with `checksum: sha256` the server
        verifies the bytes it received against it (where it supports checksums)."""
        data = body.read_bytes() if isinstance(body, Path) else body
        args: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data,
                                "ContentType": content_type, "Metadata": metadata or {}}
        if self.checksum == "sha256":
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        elif self.checksum == "md5":
            args["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        where = f"s3://{bucket}/{key} at {self.endpoint or 'AWS'}"
        try:
            answer = self.client().put_object(**args)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise PermanentActionError(
                f"no S3 credentials for {where}: {exc}; set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, IRSA, or the upload's credentials_file") from exc
        except ClientError as exc:
            raise _client_error(exc, where) from exc
        except (ConnectionError, HTTPClientError) as exc:
            raise TemporaryActionError(f"cannot reach {where}: {exc}") from exc
        except BotoCoreError as exc:
            raise PermanentActionError(f"upload to {where} failed: {exc}") from exc
        return Stored(bucket=bucket, key=key, etag=str(answer.get("ETag", "")).strip('"'),
                      bytes=len(data), checksum_sha256=answer.get("ChecksumSHA256"),
                      version_id=answer.get("VersionId"))


def _client_error(exc: ClientError, where: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = f"{where} answered {status or '?'} {code}: {error.get('Message', '')}".rstrip(": ")
    if status == 429 or status >= 500 or code in _TRANSIENT_CODES:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return TemporaryActionError(message, delay=_seconds(headers.get("retry-after")))
    return PermanentActionError(message)


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
