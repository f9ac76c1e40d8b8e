"""A local S3 API (moto's server mode) for the object-store repository tests, and small helpers over it."""

from __future__ import annotations

import contextlib
import logging
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET = "s3cr3t-must-never-be-logged"


@dataclass(frozen=True)
class S3:
    """A running local S3 endpoint, its environment (dummy credentials), a client and one fresh bucket."""

    endpoint: str
    env: dict[str, str]
    client: Any
    bucket: str

    def url(self, prefix: str = "models") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def put_tree(self, local: Path, prefix: str = "models", manifests: bool = True) -> list[str]:
        """Upload every file under ``local`` to ``prefix``; manifests last, or not at all."""
        files = sorted(p for p in local.rglob("*") if p.is_file())
        ordered = [p for p in files if p.name != "modelport.json"]
        ordered += [p for p in files if p.name == "modelport.json"] if manifests else []
        keys = []
        for path in ordered:
            keys.append(f"{prefix}/{path.relative_to(local).as_posix()}")
            self.client.put_object(Bucket=self.bucket, Key=keys[-1], Body=path.read_bytes())
        return keys

    def delete_prefix(self, prefix: str) -> None:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        for item in listed:
            self.client.delete_object(Bucket=self.bucket, Key=item["Key"])

    def delete_bucket(self) -> None:
        self.delete_prefix("")
        self.client.delete_bucket(Bucket=self.bucket)


@contextlib.contextmanager
def local_s3() -> Iterator[S3]:
    """moto's S3 on 127.0.0.1 and a free port (port 0), torn down and reset after the block."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    bucket = "models-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    try:
        yield S3(endpoint, env, client, bucket)
    finally:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
