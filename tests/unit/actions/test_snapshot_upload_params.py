"""The snapshot's `upload` block is checked when policies load: a bad URL, endpoint or a
credential in the policy text is an error located at FILE:LINE:COL, and the published schema
agrees with the loader."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from actions.base import ParamError
from actions.snapshot import SnapshotParams
from actions.snapshot_upload import UploadParams, key_component, object_key, slug
from enforcer.policy.schema import policy_schema

POLICY = """\
- policy: evidence
  match: {{rules: [Read sensitive file untrusted]}}
  actions:
    - snapshot:
        paths: [/tmp]
        upload:
          {line}
"""


@pytest.mark.parametrize(("upload", "words"), [
    ({"url": "https://evidence/x"}, "expected s3://BUCKET"),
    ({"url": "s3://Evidence_Bucket"}, "not a valid bucket name"),
    ({"url": "s3://ev"}, "not a valid bucket name"),
    ({"url": "s3://evidence/a/../b"}, "'..'"),
    ({"url": "s3://evidence/a//b"}, "prefix segment ''"),
    ({"url": "s3://evidence?x=1"}, "expected s3://BUCKET"),
    ({"url": "s3://evidence", "endpoint": "minio.local:9000"}, "http(s) URL"),
    ({"url": "s3://evidence", "endpoint": "https://k:s@minio.local"}, "credentials never"),
    ({"url": "s3://evidence", "endpoint": "https://minio.local/bucket"}, "scheme://host"),
    ({"url": "s3://evidence", "endpoint": "https://minio.local:99999"}, "bad port"),
    ({"url": "s3://evidence", "region": "EU West"}, "region name"),
    ({"url": "s3://evidence", "secret_access_key": "x"}, "credentials never go in a policy"),
    ({"url": "s3://evidence", "credentials_file": "secret/creds"}, "absolute path"),
    ({"url": "s3://evidence", "checksum": "crc64"}, "checksum must be one of"),
    ({"url": "s3://evidence", "timeout": 0}, "more than 0"),
    ({"url": "s3://evidence", "bucket": "x"}, "unknown parameter 'bucket'"),
    ({}, "missing required parameter 'url'"),
])
def test_bad_upload_blocks_are_rejected(upload: dict, words: str) -> None:
    with pytest.raises(ParamError, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        SnapshotParams.from_mapping({"upload": upload})


def test_a_good_upload_block() -> None:
    params = SnapshotParams.from_mapping({"upload": {
        "url": "s3://evidence.example/prod/enforcer/", "endpoint": "https://minio.local:9000/",
        "region": "eu-west-1", "credentials_file": "/etc/enforcer/s3/credentials",
        "profile": "evidence", "checksum": "md5", "timeout": 3}})
    upload = params.upload
    assert isinstance(upload, UploadParams)
    assert (upload.bucket, upload.prefix) == ("evidence.example", "prod/enforcer")
    assert upload.endpoint == "https://minio.local:9000"
    assert SnapshotParams.from_mapping({}).upload is None


@pytest.mark.parametrize(("line", "lineno", "words"), [
    ("{url: 's3://Bad_Bucket/x'}", 7, "snapshot: upload.url: 'Bad_Bucket' is not a valid"),
    ("{url: s3://evidence, endpoint: 'ftp://minio'}", 7, "snapshot: upload.endpoint:"),
    ("{url: s3://evidence, secret_access_key: abc}", 7, "credentials never go in a policy"),
])
def test_enforcer_validate_locates_a_bad_upload(tmp_path: Path, enforcer_cmd: list[str],
                                                cli_env: dict[str, str], line: str, lineno: int,
                                                words: str) -> None:
    path = tmp_path / "evidence.yaml"
    text = POLICY.format(line=line)
    path.write_text(text)
    done = subprocess.run(enforcer_cmd + ["validate", str(path)], capture_output=True,
                          text=True, env=cli_env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert re.search(rf"^{re.escape(str(path))}:{lineno}:\d+: ", out, re.M), out
    assert words in out, out
    assert "Traceback" not in out
    # and the published schema rejects it too (except what only code can check)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), policy_schema())


def test_the_schema_accepts_the_actions_example() -> None:
    from actions.snapshot import Snapshot
    policy = [{"policy": "p", "match": {"rules": ["r"]},
               "actions": yaml.safe_load(Snapshot.example)}]
    jsonschema.validate(policy, policy_schema())


def test_keys_are_built_from_plain_components_only() -> None:
    upload = UploadParams.from_mapping({"url": "s3://evidence/cases"})
    key = object_key(upload, node="node-1", container="0123456789ab", rule="Drop & execute!",
                     when=0, pid=42, start_ticks=7)
    assert key == "cases/node-1/0123456789ab/1970/01/01/19700101T000000Z-drop-execute-42-7.tar.gz"
    for hostile in ("..", "../../etc", "a/b", "x\n", ".hidden", "a" * 300, "ü"):
        assert "/" not in key_component(hostile, "host") and \
            key_component(hostile, "host").startswith("x-")
    assert key_component(None, "host") == "host"
    assert slug("   ") == "rule"
